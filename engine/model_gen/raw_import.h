// Writes a GGUF model from raw weights exported by a training framework (tools/
// train_default_model.py): a JSON manifest (hyperparameters, tokenizer settings, and for each
// tensor its GGUF name, dtype, shape and byte range), one weights file, and the HF tokenizer.json.
//
// Manifest tensors: {"name", "dtype": "f32" | "f16" | "q8_0", "shape": [rows, cols] in
// row-major (PyTorch) order, "offset", "nbytes"}. GGUF's ne is the reversed shape, so a
// PyTorch Linear weight [out, in] is stored as it is.
#pragma once
#include <string>

#include "base/tensor_type.h"

namespace pipellm {

class ThreadPool;

struct RawImportOptions {
  std::string manifest;
  std::string weights;
  std::string tokenizer;                        // HF tokenizer.json (byte-level BPE)
  TensorType matrix_type = TensorType::Q8_0;    // 2-D tensors: F32, F16 or Q8_0; 1-D stay F32
};

// Throws FormatError / InvalidArgument naming the file and the field.
void import_raw_model(const RawImportOptions& opt, const std::string& out_path, ThreadPool& pool);

}  // namespace pipellm
