#include "engine/cuda/cuda_model.h"

namespace pipellm::cuda {

std::unique_ptr<CudaModel> CudaModel::open(const std::string& path, const CudaStageOptions& opt) {
  std::unique_ptr<CudaModel> m(new CudaModel());
  m->file_ = GgufFile::open(path);
  m->config_ = ModelConfig::from_gguf(*m->file_);
  m->weights_ = ModelWeights::load(*m->file_, m->config_, LayerRange::all(m->config_), true, true);
  m->stage_ = std::make_unique<CudaStage>(m->config_, m->weights_, true, true, opt);
  return m;
}

}  // namespace pipellm::cuda
