// Test helper: a pipellm-coordinator child process on a free port, and gRPC stubs for it.
#pragma once
#include <grpcpp/grpcpp.h>

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "coordinator/child_process.h"
#include "proto/health.grpc.pb.h"
#include "proto/pipellm.grpc.pb.h"

namespace pipellm::test {

inline std::string testdata(const std::string& rel) { return std::string(PIPELLM_TESTDATA) + "/" + rel; }
inline std::string model_path(const std::string& name) { return testdata("models/" + name + ".gguf"); }

// Process helpers of the multi-rank and fault tests.
bool have_mpirun();
// The pid a process wrote to `path`, waiting up to timeout_ms for it; 0 when none came.
pid_t read_pid(const std::string& path, int timeout_ms);
// Whether `pid` still runs (a zombie waiting for its parent to reap it does not).
bool running(pid_t pid);

// A fresh temporary directory, removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

class CoordinatorProcess {
 public:
  // Starts `pipellm-coordinator --listen 127.0.0.1:0 --port-file ... <args>` (with `env`
  // entries "K=V" added to its environment, and so to the stages it launches) and waits for the
  // port (not for SERVING).
  explicit CoordinatorProcess(const std::vector<std::string>& args, const std::vector<std::string>& env = {});
  ~CoordinatorProcess();

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  pipellm::v1::PipeLLM::Stub& stub() { return *stub_; }
  // grpc.health.v1 status of "" (SERVING, NOT_SERVING, or "error: ...").
  std::string health();
  bool wait_health(const std::string& want, int timeout_ms);
  coord::ChildProcess& process() { return *child_; }
  std::string log() const;  // the coordinator's output so far

 private:
  TempDir dir_;
  std::unique_ptr<coord::ChildProcess> child_;
  int port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pipellm::v1::PipeLLM::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// Runs pipellm-coordinator with exactly `args` (plus `env` entries) until it exits, for refusals
// at startup; it is killed after `timeout_ms` (status "still running"). Its status and output.
struct Exited {
  std::string status;  // "exit status 1", "killed by signal ...", "still running"
  std::string log;
};
Exited run_coordinator_to_exit(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                               int timeout_ms = 30000);
// A refusal at startup: the coordinator exited non-zero, saying `words`, before launching stages.
void expect_refused(const Exited& r, const std::string& words);

// One Generate call, read to the end.
struct StreamResult {
  grpc::Status status;
  std::vector<int32_t> ids;
  std::string text;
  bool has_final = false;
  pipellm::v1::Final final;
};
StreamResult generate(pipellm::v1::PipeLLM::Stub& stub, const pipellm::v1::GenerateRequest& req, int deadline_ms = 60000);

}  // namespace pipellm::test
