// A whole model from a GGUF file on one GPU: the file, its config and one CudaStage holding all
// layers, the embeddings and the output head (the CUDA twin of engine/cpu/cpu_model.h).
#pragma once
#include <memory>
#include <string>

#include "engine/cuda/cuda_stage.h"
#include "engine/gguf/gguf_file.h"

namespace pipellm::cuda {

class CudaModel {
 public:
  // Throws Error / FormatError naming the file.
  static std::unique_ptr<CudaModel> open(const std::string& path, const CudaStageOptions& opt);

  const GgufFile& file() const { return *file_; }
  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  CudaStage& stage() { return *stage_; }

 private:
  CudaModel() = default;
  std::unique_ptr<GgufFile> file_;
  ModelConfig config_;
  ModelWeights weights_;
  std::unique_ptr<CudaStage> stage_;
};

}  // namespace pipellm::cuda
