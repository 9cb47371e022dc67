// Byte-level BPE merges: each word (already pre-tokenized and byte-encoded) is merged pair by
// pair, lowest merge rank first (leftmost on ties), as llama.cpp does.
// Every string that occurs in a merge gets a symbol id (token ids first, then extra ids for
// merge strings that are not tokens), so merging works on integer pairs in one hash table.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/tokenizer/vocab.h"

namespace pipellm::tok {

// Reusable buffers for encode_word (one per encode call, so the model itself stays const).
struct BpeScratch {
  struct Sym {
    int32_t id;  // symbol id, or -1 - byte for a byte whose encoding is not a symbol
    int32_t prev, next;
  };
  struct Pair {
    int32_t rank, left, right, left_id, right_id;
  };
  std::vector<Sym> syms;
  std::vector<Pair> heap;
  // Words already merged during this encode call (short words repeat a lot in real text).
  std::unordered_map<std::string, std::vector<int32_t>> word_cache;
};

class BpeModel {
 public:
  explicit BpeModel(const Vocab& vocab);

  // Appends the tokens of one raw word: `raw` is the word's UTF-8 bytes, `encoded` its
  // byte-level encoding (one printable character per byte).
  void encode_word(std::string_view raw, std::string_view encoded, std::vector<int32_t>& out,
                   BpeScratch& scratch) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t result;  // symbol id of the merged string
  };
  int32_t symbol_of(std::string_view s);  // creates extra symbols at build time
  const Merge* find_merge(int32_t a, int32_t b) const;
  void insert_merge(int32_t a, int32_t b, Merge m);
  void emit_symbol(int32_t sym, std::vector<int32_t>& out) const;
  void push_pair(BpeScratch& s, int32_t left, int32_t right) const;

  const Vocab& vocab_;
  std::vector<std::string> extra_text_;                // text of symbols >= n_tokens
  std::unordered_map<std::string, int32_t> extra_ids_;  // only used while building
  int32_t byte_symbol_[256];                            // symbol of each byte's encoding, -1 if none
  std::string byte_text_[256];                          // each byte's encoding

  // Open-addressing table keyed by the symbol pair.
  std::vector<uint64_t> keys_;
  std::vector<Merge> values_;
  uint64_t mask_ = 0;
};

}  // namespace pipellm::tok
