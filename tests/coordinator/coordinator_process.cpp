#include "tests/coordinator/coordinator_process.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace pipellm::test {

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "pipellm-coord-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

CoordinatorProcess::CoordinatorProcess(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  const std::string port_file = dir_.file("port");
  // The coordinator's output goes to a log file (read back in failure messages).
  std::vector<std::string> argv = {PIPELLM_COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--port-file", port_file};
  argv.insert(argv.end(), args.begin(), args.end());
  child_ = std::make_unique<coord::ChildProcess>(argv, env, dir_.file("log"));
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < until) {
    std::ifstream in(port_file);
    if (in >> port_ && port_ > 0) break;
    if (auto why = child_->exited()) throw std::runtime_error("coordinator exited: " + *why + "\n" + log());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (port_ <= 0) throw std::runtime_error("coordinator did not report its port\n" + log());
  channel_ = grpc::CreateChannel(address(), grpc::InsecureChannelCredentials());
  stub_ = pipellm::v1::PipeLLM::NewStub(channel_);
  health_ = grpc::health::v1::Health::NewStub(channel_);
}

CoordinatorProcess::~CoordinatorProcess() { child_->terminate(std::chrono::seconds(15)); }

std::string CoordinatorProcess::log() const {
  std::ifstream in(dir_.file("log"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string CoordinatorProcess::health() {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse res;
  const auto st = health_->Check(&ctx, req, &res);
  if (!st.ok()) return "error: " + st.error_message();
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(res.status());
}

bool CoordinatorProcess::wait_health(const std::string& want, int timeout_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    if (health() == want) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

Exited run_coordinator_to_exit(const std::vector<std::string>& args, const std::vector<std::string>& env, int timeout_ms) {
  TempDir dir;
  std::vector<std::string> argv = {PIPELLM_COORDINATOR_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  coord::ChildProcess child(argv, env, dir.file("log"));
  Exited r;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    if (auto why = child.exited()) {
      r.status = *why;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (r.status.empty()) {
    r.status = "still running";
    child.terminate(std::chrono::seconds(5));
  }
  std::ifstream in(dir.file("log"));
  std::stringstream ss;
  ss << in.rdbuf();
  r.log = ss.str();
  return r;
}

StreamResult generate(pipellm::v1::PipeLLM::Stub& stub, const pipellm::v1::GenerateRequest& req, int deadline_ms) {
  StreamResult r;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
  auto reader = stub.Generate(&ctx, req);
  pipellm::v1::GenerateResponse m;
  while (reader->Read(&m)) {
    if (m.has_chunk()) {
      r.text += m.chunk().text();
      r.ids.insert(r.ids.end(), m.chunk().token_ids().begin(), m.chunk().token_ids().end());
    } else if (m.has_final()) {
      r.has_final = true;
      r.final = m.final();
    }
  }
  r.status = reader->Finish();
  return r;
}

bool have_mpirun() { return std::system("command -v mpirun >/dev/null 2>&1") == 0; }

pid_t read_pid(const std::string& path, int timeout_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    std::ifstream in(path);
    pid_t p = 0;
    if (in >> p && p > 0) return p;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return 0;
}

bool running(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return false;
  const size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z' && stat[close + 2] != 'X';
}

void expect_refused(const Exited& r, const std::string& words) {
  EXPECT_NE(r.status, "still running") << r.log;
  EXPECT_NE(r.status, "exit status 0") << r.log;
  EXPECT_NE(r.log.find(words), std::string::npos) << "expected: " << words << "\n" << r.log;
  EXPECT_EQ(r.log.find("backend: launching"), std::string::npos) << "the stages were launched anyway\n" << r.log;
}

}  // namespace pipellm::test
