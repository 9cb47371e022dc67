// Reads a Hugging Face `tokenizer.json` of a byte-level BPE (the GPT-2 scheme: ByteLevel
// pre-tokenizer with its regex, no normaliser, no byte fallback) and turns it into GGUF
// `tokenizer.ggml.*` metadata (model "gpt2"), as llama.cpp's converter would.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pipellm {

class GgufWriter;

struct HfBpeVocab {
  std::vector<std::string> tokens;  // by id, in the byte-level alphabet (' ' is "Ġ")
  std::vector<int32_t> types;       // llama_token_type: 1 normal, 3 control, 4 user-defined
  std::vector<std::string> merges;  // "left right", in rank order
};

// Throws FormatError naming the file and what is unsupported (a normaliser, another model or
// pre-tokenizer, a prefix space, byte fallback, holes in the ids, ...).
HfBpeVocab read_hf_byte_level_bpe(const std::string& path);

struct GgufTokenizerSettings {
  std::string pre = "gpt-2";  // tokenizer.ggml.pre: llama.cpp's name of the GPT-2 pre-tokenizer
  int32_t bos = -1;
  int32_t eos = -1;
  bool add_bos = false;
};

// Sets tokenizer.ggml.{model,pre,tokens,token_type,merges,bos/eos_token_id,add_bos/eos_token}.
void set_gguf_tokenizer(GgufWriter& w, const HfBpeVocab& v, const GgufTokenizerSettings& s);

}  // namespace pipellm
