// Tokenizer built from a GGUF file's tokenizer.ggml.* metadata, with llama.cpp parity:
// encode == llama_tokenize, decode == llama_detokenize(remove_special=false, unparse_special=false).
// Supports tokenizer.ggml.model "llama" (SentencePiece BPE with byte fallback) and "gpt2"
// (byte-level BPE with the pre-tokenizer named by tokenizer.ggml.pre).
// The object copies what it needs, so it outlives the GgufFile; all methods are const and
// safe to call from several threads at once.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pipellm {

class GgufFile;
namespace tok {
struct Vocab;
}

class Tokenizer {
 public:
  // FormatError naming the key (missing/bad tokenizer.ggml.*) or the unknown pre-tokenizer.
  static std::unique_ptr<Tokenizer> from_gguf(const GgufFile& f);
  ~Tokenizer();

  // add_special: BOS/EOS as the vocabulary asks (tokenizer.ggml.add_bos_token / add_eos_token).
  // parse_special: control tokens written in the text (e.g. "<|eot_id|>") become their ids.
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  // One token's text as llama_token_to_piece(special=true) renders it (control tokens shown).
  // Out-of-range ids give "".
  std::string token_to_piece(int32_t id) const;

  int32_t n_vocab() const;
  int32_t bos_id() const;  // -1 if none
  int32_t eos_id() const;  // -1 if none
  bool is_eog(int32_t id) const;  // EOS, EOT, EOM and other end-of-generation tokens
  bool add_bos() const;
  // Fill-in-the-middle tokens (tokenizer.ggml.fim_*_token_id, else found by their usual texts as
  // llama.cpp does: "<|fim_prefix|>", "<fim_prefix>", "<PRE>", ...); -1 where the vocabulary has none.
  struct FimTokens {
    int32_t pre = -1, suf = -1, mid = -1, pad = -1, rep = -1, sep = -1;
  };
  FimTokens fim_tokens() const;
  std::optional<std::string> chat_template() const;  // tokenizer.chat_template

  // For the streaming decoder: the piece decode() would emit for `id` (control tokens are ""),
  // with `strip_leading_space` applied the way decode() does for the first token.
  const std::string& render_piece(int32_t id) const;
  bool strips_first_space() const;  // decode() drops one leading space of the first piece
  bool cleans_spaces() const;       // decode() applies the " ," " ." " 's" clean-up
  // The clean-up decode() applies to the joined pieces (exposed for the streaming decoder).
  std::string clean_spaces(std::string text) const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pipellm
