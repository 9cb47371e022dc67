// pipellm_grpc_load: a load generator for pipellm-coordinator's gRPC API.
//
// For each concurrency level C: C client threads send streaming Generate requests back to back
// (different prompts, seeded, ignore_eos so every request makes --max-tokens tokens) until
// --requests requests have completed. Reports requests/s, generated tokens/s, time to first
// token and inter-token latency percentiles (p50/p90/p99, measured at the client), as a table on
// stdout, JSON (--json) and CSV (--csv; bench/plot_grpc_load.sh turns it into a PNG).
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "proto/pipellm.grpc.pb.h"

namespace {

namespace v1 = pipellm::v1;
using Clock = std::chrono::steady_clock;

struct LoadOptions {
  std::string addr = "127.0.0.1:50051";
  std::vector<int> levels = {1, 2, 4, 8, 16};
  int requests = 0;  // per level; 0: 4 x concurrency (at least 8)
  int max_tokens = 64;
  float temperature = 0.0f;
  int deadline_s = 300;
  std::string json_out, csv_out;
};

// What one request saw.
struct Sample {
  bool ok = false;
  std::string error;
  double ttft_ms = 0.0;
  std::vector<double> itl_ms;  // gaps between consecutive tokens
  int tokens = 0;
};

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

const char* kPrompts[] = {"Once upon a time",         "The quick brown fox jumps over", "In the beginning was",
                          "Here is a list of numbers", "The capital of France is",       "def fibonacci(n):",
                          "Dear diary, today",         "The weather tomorrow will be"};

Sample run_one(v1::PipeLLM::Stub& stub, const LoadOptions& o, int index) {
  v1::GenerateRequest req;
  req.set_text(kPrompts[static_cast<size_t>(index) % (sizeof(kPrompts) / sizeof(kPrompts[0]))]);
  req.set_max_tokens(o.max_tokens);
  req.set_ignore_eos(true);
  req.mutable_sampling()->set_temperature(o.temperature);
  req.mutable_sampling()->set_seed(static_cast<uint64_t>(1000 + index));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(o.deadline_s));
  Sample s;
  const auto t0 = Clock::now();
  auto last = t0;
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse m;
  while (reader->Read(&m)) {
    if (!m.has_chunk()) continue;
    const auto now = Clock::now();
    for (int k = 0; k < m.chunk().token_ids_size(); ++k) {
      if (s.tokens == 0) {
        s.ttft_ms = ms(now - t0);
      } else {
        s.itl_ms.push_back(k == 0 ? ms(now - last) : 0.0);
      }
      ++s.tokens;
    }
    last = now;
  }
  const grpc::Status st = reader->Finish();
  s.ok = st.ok();
  if (!s.ok) s.error = std::to_string(static_cast<int>(st.error_code())) + ": " + st.error_message();
  return s;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::max(0.0, std::min(1.0, p / 100.0) * static_cast<double>(v.size()) - 1e-9));
  return v[std::min(rank, v.size() - 1)];
}

struct LevelResult {
  int concurrency = 0, requests = 0, errors = 0;
  long long tokens = 0;
  double seconds = 0.0;
  std::vector<double> ttft, itl;
  std::string first_error;
};

LevelResult run_level(v1::PipeLLM::Stub& stub, const LoadOptions& o, int concurrency) {
  const int total = o.requests > 0 ? o.requests : std::max(8, 4 * concurrency);
  std::atomic<int> next{0};
  std::mutex mu;
  LevelResult r;
  r.concurrency = concurrency;
  const auto t0 = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < concurrency; ++c) {
    clients.emplace_back([&] {
      for (int i = next++; i < total; i = next++) {
        Sample s = run_one(stub, o, i);
        std::lock_guard<std::mutex> lock(mu);
        ++r.requests;
        if (!s.ok) {
          ++r.errors;
          if (r.first_error.empty()) r.first_error = s.error;
          continue;
        }
        r.tokens += s.tokens;
        r.ttft.push_back(s.ttft_ms);
        r.itl.insert(r.itl.end(), s.itl_ms.begin(), s.itl_ms.end());
      }
    });
  }
  for (auto& t : clients) t.join();
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return r;
}

nlohmann::json to_json(const LevelResult& r) {
  auto pct = [](const std::vector<double>& v) {
    return nlohmann::json{{"p50", percentile(v, 50)}, {"p90", percentile(v, 90)}, {"p99", percentile(v, 99)}};
  };
  const int ok = r.requests - r.errors;
  return {{"concurrency", r.concurrency},
          {"requests", r.requests},
          {"errors", r.errors},
          {"seconds", r.seconds},
          {"requests_per_s", ok / r.seconds},
          {"tokens_per_s", static_cast<double>(r.tokens) / r.seconds},
          {"ttft_ms", pct(r.ttft)},
          {"itl_ms", pct(r.itl)}};
}

std::vector<int> parse_levels(const std::string& s) {
  std::vector<int> v;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    const int c = std::stoi(item);
    if (c < 1 || c > 4096) throw std::invalid_argument("--concurrency: " + item + " is not in [1, 4096]");
    v.push_back(c);
  }
  if (v.empty()) throw std::invalid_argument("--concurrency: empty list");
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  LoadOptions o;
  std::string levels = "1,2,4,8,16";
  CLI::App app{"pipellm_grpc_load: load generator for pipellm-coordinator (gRPC)"};
  app.add_option("--addr", o.addr, "coordinator gRPC address");
  app.add_option("--concurrency", levels, "comma-separated concurrency levels");
  app.add_option("--requests", o.requests, "requests per level (default: 4 x concurrency, at least 8)");
  app.add_option("--max-tokens", o.max_tokens, "tokens per request")->check(CLI::Range(1, 1 << 20));
  app.add_option("--temp", o.temperature, "sampling temperature (0: greedy)");
  app.add_option("--deadline", o.deadline_s, "seconds per request");
  app.add_option("--json", o.json_out, "write the results as JSON");
  app.add_option("--csv", o.csv_out, "write one CSV row per level");
  CLI11_PARSE(app, argc, argv);
  try {
    o.levels = parse_levels(levels);
    auto channel = grpc::CreateChannel(o.addr, grpc::InsecureChannelCredentials());
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      throw std::runtime_error("cannot connect to " + o.addr);
    }
    auto stub = v1::PipeLLM::NewStub(channel);
    v1::ModelInfo info;
    {
      grpc::ClientContext ctx;
      const auto st = stub->GetModelInfo(&ctx, v1::ModelInfoRequest{}, &info);
      if (!st.ok()) throw std::runtime_error("GetModelInfo at " + o.addr + ": " + st.error_message());
    }
    run_one(*stub, o, 0);  // warm-up
    std::printf("model %s, %d stage(s) %s, %d sequences; %d tokens per request\n", info.model_name().c_str(),
                info.n_stages(), info.plan().c_str(), info.max_sequences(), o.max_tokens);
    std::printf("%5s %5s %4s %8s %9s | %8s %8s %8s | %7s %7s %7s\n", "conc", "reqs", "err", "req/s", "tok/s",
                "ttft p50", "p90", "p99", "itl p50", "p90", "p99");
    nlohmann::json out{{"addr", o.addr},           {"model", info.model_name()}, {"n_stages", info.n_stages()},
                       {"plan", info.plan()},      {"max_sequences", info.max_sequences()},
                       {"max_tokens", o.max_tokens}, {"temperature", o.temperature}, {"levels", nlohmann::json::array()}};
    std::string csv =
        "concurrency,requests,errors,seconds,requests_per_s,tokens_per_s,ttft_p50_ms,ttft_p90_ms,ttft_p99_ms,itl_p50_ms,"
        "itl_p90_ms,itl_p99_ms\n";
    int errors = 0;
    for (int c : o.levels) {
      const LevelResult r = run_level(*stub, o, c);
      const nlohmann::json j = to_json(r);
      out["levels"].push_back(j);
      errors += r.errors;
      std::printf("%5d %5d %4d %8.2f %9.1f | %8.2f %8.2f %8.2f | %7.3f %7.3f %7.3f\n", c, r.requests, r.errors,
                  j["requests_per_s"].get<double>(), j["tokens_per_s"].get<double>(), j["ttft_ms"]["p50"].get<double>(),
                  j["ttft_ms"]["p90"].get<double>(), j["ttft_ms"]["p99"].get<double>(), j["itl_ms"]["p50"].get<double>(),
                  j["itl_ms"]["p90"].get<double>(), j["itl_ms"]["p99"].get<double>());
      if (!r.first_error.empty()) std::printf("      first error: %s\n", r.first_error.c_str());
      char row[512];
      std::snprintf(row, sizeof row, "%d,%d,%d,%.4f,%.3f,%.2f,%.3f,%.3f,%.3f,%.4f,%.4f,%.4f\n", c, r.requests, r.errors,
                    r.seconds, j["requests_per_s"].get<double>(), j["tokens_per_s"].get<double>(),
                    j["ttft_ms"]["p50"].get<double>(), j["ttft_ms"]["p90"].get<double>(), j["ttft_ms"]["p99"].get<double>(),
                    j["itl_ms"]["p50"].get<double>(), j["itl_ms"]["p90"].get<double>(), j["itl_ms"]["p99"].get<double>());
      csv += row;
      std::fflush(stdout);
    }
    if (!o.json_out.empty()) {
      std::ofstream f(o.json_out);
      f << out.dump(2) << "\n";
      if (!f) throw std::runtime_error("cannot write " + o.json_out);
    }
    if (!o.csv_out.empty()) {
      std::ofstream f(o.csv_out);
      f << csv;
      if (!f) throw std::runtime_error("cannot write " + o.csv_out);
    }
    return errors == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pipellm_grpc_load: error: %s\n", e.what());
    return 1;
  }
}
