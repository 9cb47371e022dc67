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
  // Called after each tensor: (tensors done, tensors total, bytes done, bytes total).
  std::function<void(size_t, size_t, uint64_t, uint64_t)> progress;
};

// The vocabulary size the file will have (the --vocab file's, or the shape's).
int effective_vocab_size(const RandomModelOptions& opt);
void write_random_model(const RandomModelOptions& opt, const std::string& path, ThreadPool& pool);

}  // namespace pipellm
