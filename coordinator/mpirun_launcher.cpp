#include "coordinator/mpirun_launcher.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include "coordinator/child_process.h"
#include "engine/link/coordinator_link.h"

namespace pipellm::coord {

std::vector<std::string> mpirun_argv(const MpirunOptions& opt, const std::string& coordinator_address) {
  std::vector<std::string> a = {opt.mpirun};
  if (opt.allow_root && ::geteuid() == 0) {
    a.push_back("--allow-run-as-root");
    a.push_back("--oversubscribe");
  }
  a.insert(a.end(), {"-np", std::to_string(opt.n_ranks), "-x", link::kLinkSecretEnv});
  a.insert(a.end(), opt.mpirun_args.begin(), opt.mpirun_args.end());
  a.insert(a.end(), {opt.stage_binary, "--config", opt.config_path, "--coordinator", coordinator_address});
  a.insert(a.end(), opt.stage_args.begin(), opt.stage_args.end());
  return a;
}

namespace {

class ChildHead : public HeadProcess {
 public:
  ChildHead(const std::vector<std::string>& argv, const std::string& secret)
      : child_(argv, {std::string(link::kLinkSecretEnv) + "=" + secret}) {}
  std::optional<std::string> exited() override { return child_.exited(); }
  void terminate(std::chrono::milliseconds grace) override { child_.terminate(grace); }

 private:
  ChildProcess child_;
};

class Attached : public HeadProcess {
 public:
  std::optional<std::string> exited() override { return std::nullopt; }
  void terminate(std::chrono::milliseconds) override {}
};

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : " ") + x;
  return s;
}

}  // namespace

std::unique_ptr<HeadProcess> MpirunLauncher::launch(const std::string& coordinator_address, const std::string& secret) {
  const auto argv = mpirun_argv(opt_, coordinator_address);
  spdlog::info("backend: launching: {} (the link secret in ${})", join(argv), link::kLinkSecretEnv);
  return std::make_unique<ChildHead>(argv, secret);
}

std::string MpirunLauncher::describe() const {
  return "mpirun -np " + std::to_string(opt_.n_ranks) + " " + opt_.stage_binary + " --config " + opt_.config_path;
}

std::unique_ptr<HeadProcess> AttachLauncher::launch(const std::string& coordinator_address, const std::string&) {
  spdlog::info("backend: waiting for stages started by hand to connect to {}", coordinator_address);
  return std::make_unique<Attached>();
}

}  // namespace pipellm::coord
