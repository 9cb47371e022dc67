#include "coordinator/inprocess_launcher.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <mutex>
#include <thread>

namespace pipellm::coord {

namespace {

class HeadThread : public HeadProcess {
 public:
  HeadThread(CpuModel& model, const std::string& name, const link::HeadLoopOptions& loop, const std::string& address) {
    thread_ = std::thread([this, &model, name, loop, address] {
      std::string why = "the head thread returned";
      try {
        auto hello = link::hello_for(model.stage(), name, 1, "in-process:[0," + std::to_string(model.config().n_layer) + ")");
        auto head = link::HeadLink::connect(address, hello, 10000);
        link::HeadLoop(model.stage(), *head, loop).run(&stop_);
        why = "the head thread finished (shutdown)";
      } catch (const std::exception& e) {
        why = std::string("the head thread ended: ") + e.what();
      }
      std::lock_guard<std::mutex> lock(mu_);
      exit_ = why;
    });
  }
  ~HeadThread() override { terminate(std::chrono::milliseconds(0)); }

  std::optional<std::string> exited() override {
    std::lock_guard<std::mutex> lock(mu_);
    return exit_;
  }
  void terminate(std::chrono::milliseconds) override {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::optional<std::string> exit_;
  std::thread thread_;
};

std::string stem(const std::string& path) {
  const auto slash = path.find_last_of('/');
  std::string s = slash == std::string::npos ? path : path.substr(slash + 1);
  const auto dot = s.rfind(".gguf");
  return dot == std::string::npos ? s : s.substr(0, dot);
}

}  // namespace

InProcessLauncher::InProcessLauncher(const std::string& model_path, const CpuModelOptions& opt,
                                     const link::HeadLoopOptions& loop)
    : model_name_(stem(model_path)), model_(CpuModel::open(model_path, opt)), loop_(loop) {}

InProcessLauncher::~InProcessLauncher() = default;

std::unique_ptr<HeadProcess> InProcessLauncher::launch(const std::string& coordinator_address) {
  return std::make_unique<HeadThread>(*model_, model_name_, loop_, coordinator_address);
}

}  // namespace pipellm::coord
