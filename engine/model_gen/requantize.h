// Converts a GGUF model to another file type (llama-quantize's job): metadata copied, every
// tensor re-encoded with the type llama-quantize would choose (engine/model_gen/quant_mix.h).
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "engine/gguf/gguf_file.h"
#include "engine/model_gen/quant_mix.h"

namespace pipellm {

class ThreadPool;

// One tensor written (reported in file order, once each, as the output is written).
struct RequantizeProgress {
  int index = 0;  // 1-based
  int count = 0;  // tensors in the model
  const std::string* name = nullptr;
  TensorType from = TensorType::F32;
  TensorType to = TensorType::F32;
  bool converted = false;        // re-encoded (false: copied as it was, from == to)
  uint64_t in_bytes_done = 0;    // source tensor bytes up to and including this one
  uint64_t in_bytes_total = 0;
};

struct RequantizeOptions {
  // Re-encoding a tensor that is already quantized (anything but F32/F16/BF16) rounds the
  // weights a second time, so it is refused unless asked for (llama-quantize's
  // --allow-requantize). Tensors that keep their type are copied either way.
  bool allow_requantize = false;
  std::function<void(const RequantizeProgress&)> on_tensor;
};

struct RequantizeSummary {
  int n_tensors = 0;
  int n_converted = 0;
  uint64_t in_bytes = 0;   // tensor data, source
  uint64_t out_bytes = 0;  // tensor data, written
};

// Every tensor is checked before anything is written. Throws InvalidArgument when a tensor would
// need a type PipeLLM cannot encode or decode, or is quantized and options.allow_requantize is
// off (the message names the tensor and its type); FormatError for a model without block_count.
RequantizeSummary requantize_model(const GgufFile& in, const FileType& ft, const std::string& out_path,
                                   ThreadPool& pool, const RequantizeOptions& options = {});

}  // namespace pipellm
