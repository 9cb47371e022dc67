// A whole model on the CPU in one process: the mapped file, its config, a thread pool and one
// stage covering every layer. What `pipellm generate/eval/bench` and the tests use.
#pragma once
#include <memory>
#include <string>

#include "engine/cpu/cpu_stage.h"
#include "engine/gguf/gguf_file.h"

namespace pipellm {

struct CpuModelOptions {
  CpuStageOptions stage;
  int n_threads = 0;  // 0: one per hardware thread
};

class CpuModel {
 public:
  // Throws Error / FormatError naming the file.
  static std::unique_ptr<CpuModel> open(const std::string& path, const CpuModelOptions& opt);

  const GgufFile& file() const { return *file_; }
  const ModelConfig& config() const { return config_; }
  CpuStage& stage() { return *stage_; }
  ThreadPool& pool() { return *pool_; }

 private:
  CpuModel() = default;
  std::unique_ptr<GgufFile> file_;
  ModelConfig config_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<CpuStage> stage_;
};

}  // namespace pipellm
