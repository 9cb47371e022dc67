// Test helper: a pipellm-coordinator child with both front doors on free loopback ports.
#pragma once
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "coordinator/child_process.h"
#include "proto/pipellm.grpc.pb.h"

namespace pipellm::test {

inline std::string model_path(const std::string& name) {
  return std::string(PIPELLM_TESTDATA) + "/models/" + name + ".gguf";
}

class ServingProcess {
 public:
  // `--listen 127.0.0.1:0 --http-listen 127.0.0.1:0` plus `args`; waits for both ports and
  // for /health to say ok (over HTTPS when `args` has --tls-cert), or with `serving` false only
  // for the HTTP door to answer /health at all (a server without stages yet).
  explicit ServingProcess(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                          bool serving = true);
  ~ServingProcess();

  int http_port() const { return http_port_; }
  pid_t pid() const { return child_->pid(); }
  std::string grpc_address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  std::unique_ptr<httplib::Client> http() const;  // a new client (one per thread)
  pipellm::v1::PipeLLM::Stub& stub() { return *stub_; }
  std::string dir() const { return dir_; }
  std::string log() const;

 private:
  std::string dir_;
  std::unique_ptr<coord::ChildProcess> child_;
  int grpc_port_ = 0, http_port_ = 0;
  bool https_ = false;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pipellm::v1::PipeLLM::Stub> stub_;
};

// POST a JSON body; the parsed reply (discarded JSON when it is not JSON), its status in
// `status`. No response at all is a test failure (and an empty json).
nlohmann::json post_json(httplib::Client& c, const std::string& path, const nlohmann::json& body, int* status = nullptr,
                         const httplib::Headers& h = {});

// A text GenerateRequest with temperature, seed, max_tokens and ignore_eos.
pipellm::v1::GenerateRequest grpc_request(const std::string& prompt, float temp, uint64_t seed, int max_tokens);
// The streamed text of one Generate call (a 60 s deadline; `key` as a bearer token); its final
// status in `st`.
std::string grpc_text(pipellm::v1::PipeLLM::Stub& stub, const pipellm::v1::GenerateRequest& req,
                      grpc::Status* st = nullptr, const std::string& key = "");

// A Server-Sent Events body split into its `data:` payloads (in order).
std::vector<std::string> sse_payloads(const std::string& body);

}  // namespace pipellm::test
