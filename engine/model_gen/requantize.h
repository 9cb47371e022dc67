// Converts a GGUF model to another file type (llama-quantize's job): metadata copied, every
// tensor re-encoded with the type llama-quantize would choose (engine/model_gen/quant_mix.h).
#pragma once
#include <string>

#include "engine/gguf/gguf_file.h"
#include "engine/model_gen/quant_mix.h"

namespace pipellm {

class ThreadPool;

// Throws InvalidArgument when a tensor would need a type PipeLLM cannot encode, FormatError for
// a model without block_count.
void requantize_model(const GgufFile& in, const FileType& ft, const std::string& out_path, ThreadPool& pool);

}  // namespace pipellm
