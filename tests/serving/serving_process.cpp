#include "tests/serving/serving_process.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace pipellm::test {

namespace {
int read_port(const std::string& path) {
  std::ifstream in(path);
  int p = 0;
  return (in >> p) ? p : 0;
}
}  // namespace

ServingProcess::ServingProcess(const std::vector<std::string>& args, const std::vector<std::string>& env, bool serving) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "pipellm-http-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  std::vector<std::string> argv = {PIPELLM_COORDINATOR_BIN, "--listen",         "127.0.0.1:0",
                                   "--port-file",           dir_ + "/grpc.port", "--http-listen",
                                   "127.0.0.1:0",           "--http-port-file",  dir_ + "/http.port"};
  argv.insert(argv.end(), args.begin(), args.end());
  https_ = std::find(args.begin(), args.end(), "--tls-cert") != args.end();
  child_ = std::make_unique<coord::ChildProcess>(argv, env, dir_ + "/log");
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  bool ok = false;
  while (std::chrono::steady_clock::now() < until) {
    if (auto why = child_->exited()) throw std::runtime_error("coordinator exited: " + *why + "\n" + log());
    grpc_port_ = read_port(dir_ + "/grpc.port");
    http_port_ = read_port(dir_ + "/http.port");
    if (grpc_port_ > 0 && http_port_ > 0) {
      auto c = http();
      auto r = c->Get("/health");
      if (r && (r->status == 200 || !serving)) {
        ok = true;
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!ok) throw std::runtime_error("coordinator did not start serving\n" + log());
  channel_ = grpc::CreateChannel(grpc_address(), grpc::InsecureChannelCredentials());
  stub_ = pipellm::v1::PipeLLM::NewStub(channel_);
}

ServingProcess::~ServingProcess() {
  if (child_) child_->terminate(std::chrono::seconds(15));
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::unique_ptr<httplib::Client> ServingProcess::http() const {
  auto c = std::make_unique<httplib::Client>((https_ ? "https://127.0.0.1:" : "http://127.0.0.1:") +
                                              std::to_string(http_port_));
  c->enable_server_certificate_verification(false);  // the tests' certificates are self-signed
  c->set_read_timeout(120, 0);
  c->set_connection_timeout(5, 0);
  return c;
}

std::string ServingProcess::log() const {
  std::ifstream in(dir_ + "/log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

pipellm::v1::GenerateRequest grpc_request(const std::string& prompt, float temp, uint64_t seed, int max_tokens) {
  pipellm::v1::GenerateRequest r;
  r.set_text(prompt);
  r.mutable_sampling()->set_temperature(temp);
  r.mutable_sampling()->set_seed(seed);
  r.set_max_tokens(max_tokens);
  r.set_ignore_eos(true);
  return r;
}

std::string grpc_text(pipellm::v1::PipeLLM::Stub& stub, const pipellm::v1::GenerateRequest& req, grpc::Status* st,
                      const std::string& key) {
  grpc::ClientContext ctx;
  if (!key.empty()) ctx.AddMetadata("authorization", "Bearer " + key);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub.Generate(&ctx, req);
  pipellm::v1::GenerateResponse m;
  std::string text;
  while (reader->Read(&m)) {
    if (m.has_chunk()) text += m.chunk().text();
  }
  const grpc::Status s = reader->Finish();
  if (st) *st = s;
  return text;
}

std::vector<std::string> sse_payloads(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) {
      out.push_back("<unterminated event>");
      break;
    }
    const std::string ev = body.substr(pos, end - pos);
    if (ev.rfind("data: ", 0) == 0) {
      out.push_back(ev.substr(6));
    } else {
      out.push_back("<not a data event: " + ev + ">");
    }
    pos = end + 2;
  }
  return out;
}

nlohmann::json post_json(httplib::Client& c, const std::string& path, const nlohmann::json& body, int* status,
                         const httplib::Headers& h) {
  auto r = c.Post(path.c_str(), h, body.dump(), "application/json");
  if (!r) {
    ADD_FAILURE() << path << ": no response (" << httplib::to_string(r.error()) << ")";
    return {};
  }
  if (status) *status = r->status;
  return nlohmann::json::parse(r->body, nullptr, false);
}

}  // namespace pipellm::test
