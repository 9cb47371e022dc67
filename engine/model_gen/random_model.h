// Writes a GGUF model of a real shape with random weights (benchmarks without downloads): the
// family's metadata (engine/model_gen/shape_metadata.h) and every tensor its recipe lists, typed
// as llama-quantize would (engine/model_gen/model_plan.h).
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "engine/gguf/gguf_file.h"
#include "engine/model_gen/model_plan.h"
#include "engine/model_gen/model_shape.h"
#include "engine/model_gen/quant_mix.h"

namespace pipellm {

class ThreadPool;

struct RandomModelOptions {
  ModelShape shape;
  FileType file_type;
  const GgufFile* vocab = nullptr;  // copy tokenizer.* from here; else a synthetic SentencePiece vocab
  uint64_t seed = 1;
  // The output head's rows are zero for every token whose text is not printable ASCII (spaces as
  // the vocabulary's space marks), so the random model emits only such text: servers that check
  // their output is valid UTF-8 (llama-server) accept it. Needs a separate output matrix.
  bool text_head = false;
  // Called after each tensor: (tensors done, tensors total, bytes done, bytes total).
  std::function<void(size_t, size_t, uint64_t, uint64_t)> progress;
};

// The vocabulary size the file will have (the --vocab file's, or the shape's).
int effective_vocab_size(const RandomModelOptions& opt);
// A token text of printable ASCII (0x21..0x7E) and the byte-level / SentencePiece space marks
// (U+0120, U+2581) only: what text_head keeps.
bool is_plain_text_token(const std::string& text);
void write_random_model(const RandomModelOptions& opt, const std::string& path, ThreadPool& pool);

}  // namespace pipellm
