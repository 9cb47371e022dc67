#include "engine/cpu/cpu_model.h"

namespace pipellm {

std::unique_ptr<CpuModel> CpuModel::open(const std::string& path, const CpuModelOptions& opt) {
  std::unique_ptr<CpuModel> m(new CpuModel());
  m->file_ = GgufFile::open(path);
  m->config_ = ModelConfig::from_gguf(*m->file_);
  m->pool_ = std::make_unique<ThreadPool>(opt.n_threads);
  m->stage_ = std::make_unique<CpuStage>(*m->file_, m->config_, LayerRange::all(m->config_), true, true, opt.stage,
                                         *m->pool_);
  return m;
}

}  // namespace pipellm
