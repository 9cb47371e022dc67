// The head as rank 0 of an MPI job: `mpirun -np N -x PIPELLM_LINK_SECRET pipellm-stage --config
// X.yaml --coordinator ADDR`, started from an argument vector (no shell: no config value can
// inject a command); the launch's secret goes in the environment, not on the command line.
// AttachLauncher starts nothing: stages started by hand connect to the coordinator's address
// (with the secret the coordinator was given, LinkBackendOptions::secret).
#pragma once
#include <string>
#include <vector>

#include "coordinator/head_launcher.h"

namespace pipellm::coord {

struct MpirunOptions {
  std::string mpirun = "mpirun";
  int n_ranks = 1;
  std::string stage_binary = "pipellm-stage";
  std::string config_path;
  std::vector<std::string> mpirun_args;  // extra arguments before the program
  std::vector<std::string> stage_args;   // extra arguments after --config
  bool allow_root = true;                // adds --allow-run-as-root --oversubscribe when uid 0
};

// The argument vector (exposed for tests).
std::vector<std::string> mpirun_argv(const MpirunOptions& opt, const std::string& coordinator_address);

class MpirunLauncher : public HeadLauncher {
 public:
  explicit MpirunLauncher(MpirunOptions opt) : opt_(std::move(opt)) {}
  std::unique_ptr<HeadProcess> launch(const std::string& coordinator_address, const std::string& secret) override;
  std::string describe() const override;

 private:
  MpirunOptions opt_;
};

class AttachLauncher : public HeadLauncher {
 public:
  std::unique_ptr<HeadProcess> launch(const std::string& coordinator_address, const std::string& secret) override;
  std::string describe() const override { return "attached stages"; }
};

}  // namespace pipellm::coord
