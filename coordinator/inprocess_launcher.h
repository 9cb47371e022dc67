// The head as a thread of the coordinator: the CPU engine (CpuModel, every layer) serving the
// link with engine/link's HeadLoop. For tests and single-stage serving without MPI.
#pragma once
#include <memory>
#include <string>

#include "coordinator/head_launcher.h"
#include "engine/cpu/cpu_model.h"
#include "engine/link/head_loop.h"

namespace pipellm::coord {

class InProcessLauncher : public HeadLauncher {
 public:
  // Opens the model now (throws Error naming the file).
  InProcessLauncher(const std::string& model_path, const CpuModelOptions& opt, const link::HeadLoopOptions& loop);
  ~InProcessLauncher() override;
  std::unique_ptr<HeadProcess> launch(const std::string& coordinator_address) override;
  std::string describe() const override { return "in-process CPU engine"; }

 private:
  std::string model_name_;
  std::unique_ptr<CpuModel> model_;
  link::HeadLoopOptions loop_;
};

}  // namespace pipellm::coord
