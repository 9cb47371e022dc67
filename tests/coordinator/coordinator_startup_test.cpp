// What pipellm-coordinator refuses at startup, with exit status 1 and a message naming the
// problem, before it launches anything (issue 21 items 6, 7, 10 and 11's flags):
// - a gRPC (or HTTP) port another process listens on: no second server sharing the port;
// - a --server-config with a typo, a malformed value or a key twice; a key source without keys;
// - configs the planner rejects (more stages than layers, layers past the end, --np not the
//   stage count, cuda:99, an architecture the engine does not run) and KV caches beyond memory;
// - out-of-range numeric flags.
#include <gtest/gtest.h>

#include <fstream>

#include "tests/coordinator/coordinator_process.h"

namespace pipellm::test {
namespace {

const std::string kModel = model_path("tiny-llama-Q8_0");  // 2 layers

TEST(Startup, ABusyGrpcPortIsAClearErrorNotASharedPort) {
  CoordinatorProcess first({"--model", kModel, "--http-listen", "off"});
  const Exited r = run_coordinator_to_exit({"--model", kModel, "--listen", first.address(), "--http-listen", "off"});
  EXPECT_EQ(r.status, "exit status 1") << r.log;
  EXPECT_NE(r.log.find("grpc: cannot listen on " + first.address() + ": Address already in use"), std::string::npos)
      << r.log;
  EXPECT_TRUE(first.wait_health("SERVING", 30000)) << first.log();
}

TEST(Startup, ABusyHttpPortIsAClearError) {
  CoordinatorProcess first({"--model", kModel, "--http-listen", "127.0.0.1:0"});
  // The first one's gRPC port is busy for HTTP too.
  const Exited r = run_coordinator_to_exit({"--model", kModel, "--listen", "off", "--http-listen", first.address()});
  EXPECT_EQ(r.status, "exit status 1") << r.log;
  EXPECT_NE(r.log.find("http: cannot listen on " + first.address() + ": Address already in use"), std::string::npos)
      << r.log;
}

TEST(Startup, ServerConfigFailsClosed) {
  TempDir dir;
  const std::string keys = dir.file("keys");
  std::ofstream(keys) << "sk-test\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"api_keys_file = \"" + keys + "\"\n", ":1: unknown setting 'api_keys_file' (did you mean 'api-keys-file'?)"},
      {"api-keys-files = \"" + keys + "\"\n", ":1: unknown setting 'api-keys-files' (did you mean 'api-keys-file'?)"},
      {"api-keys-file = \"" + keys + "\n", "the string opened with \" is not closed"},
      {"api-keys-file = " + keys + "\n", "is not a TOML value"},
      {"api-keys-file = \"" + keys + "\"\napi-keys-file = \"/x\"\n", ":2: 'api-keys-file' is set twice"},
  };
  for (const auto& [text, words] : cases) {
    const std::string cfg = dir.file("server.toml");
    std::ofstream(cfg) << text;
    const Exited r = run_coordinator_to_exit({"--model", kModel, "--server-config", cfg, "--listen", "127.0.0.1:0"});
    expect_refused(r, words);
  }
}

TEST(Startup, AKeySourceWithoutKeysIsFatal) {
  for (const char* env : {"PIPELLM_API_KEYS=, ,", "PIPELLM_API_KEYS="}) {
    const Exited r = run_coordinator_to_exit({"--model", kModel, "--listen", "127.0.0.1:0"}, {env});
    EXPECT_EQ(r.status, "exit status 1") << env << "\n" << r.log;
    EXPECT_NE(r.log.find("$PIPELLM_API_KEYS is set but holds no key"), std::string::npos) << r.log;
  }
  TempDir dir;
  const std::string toml = dir.file("server.toml");
  std::ofstream(toml) << "api-keys-file = \"\"\n";
  const Exited r = run_coordinator_to_exit({"--model", kModel, "--server-config", toml, "--listen", "127.0.0.1:0"});
  expect_refused(r, "--api-keys-file: empty path");
}

// A copy of the model whose general.architecture names an architecture the engine lacks.
std::string unknown_arch_model(const TempDir& dir) {
  std::ifstream in(kModel, std::ios::binary);
  std::string b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t key = b.find("general.architecture");
  const size_t value = key + std::string("general.architecture").size() + 4 + 8;  // type, length
  b[value + 4] = 'x';                                                             // "llama" -> "llamx"
  const std::string path = dir.file("llamx.gguf");
  std::ofstream(path, std::ios::binary) << b;
  return path;
}

TEST(Startup, ConfigsThePlannerRejectsAreRefusedBeforeLaunch) {
  TempDir dir;
  const auto config = [&](const std::string& name, const std::string& model, const std::string& rest) {
    const std::string path = dir.file(name);
    std::ofstream(path) << "model: " << model << "\n" << rest;
    return path;
  };
  const std::string three = config("three.yaml", kModel, "stages:\n  - device: cpu\n  - device: cpu\n  - device: cpu\n");
  expect_refused(run_coordinator_to_exit({"--config", three, "--listen", "127.0.0.1:0"}), "three.yaml: plan:");
  const std::string past = config("past.yaml", kModel,
                                  "stages:\n  - device: cpu\n    layers: [0, 1]\n  - device: cpu\n    layers: [1, 5]\n");
  expect_refused(run_coordinator_to_exit({"--config", past, "--listen", "127.0.0.1:0"}), "past.yaml: plan:");
  const std::string one = config("one.yaml", kModel, "stages:\n  - device: cpu\n");
  expect_refused(run_coordinator_to_exit({"--config", one, "--np", "2", "--listen", "127.0.0.1:0"}),
                 "one.yaml: stages: the config has 1 stage(s) but --np asks for 2 ranks");
  const std::string gpu = config("gpu.yaml", kModel, "stages:\n  - device: cuda:99\n");
  expect_refused(run_coordinator_to_exit({"--config", gpu, "--listen", "127.0.0.1:0"}),
                 "gpu.yaml:3: stage 0 (cuda:99): this machine has");
  const std::string arch = config("arch.yaml", unknown_arch_model(dir), "stages:\n  - device: cpu\n");
  expect_refused(run_coordinator_to_exit({"--config", arch, "--listen", "127.0.0.1:0"}),
                 "unsupported architecture 'llamx'");
  const std::string huge = config("huge.yaml", kModel,
                                  "context_length: 16000000\nmax_sequences: 60000\nstages:\n  - device: cpu\n");
  expect_refused(run_coordinator_to_exit({"--config", huge, "--listen", "127.0.0.1:0"}), "for its KV cache");
  // Issue 20: --config X --model Y served X's weights with Y's tokenizer.
  expect_refused(run_coordinator_to_exit({"--config", one, "--model", model_path("tiny-qwen3-Q8_0"), "--listen",
                                          "127.0.0.1:0"}),
                 "is not the model of --config");
  expect_refused(run_coordinator_to_exit({"--model", kModel, "--ctx", "16000000", "--slots", "65536", "--listen",
                                          "127.0.0.1:0"}),
                 "--ctx 16000000 x --slots 65536: the KV cache needs");
  // -np shares -c among the sequences (llama-server's meaning): 2 positions over 4 is none each.
  expect_refused(run_coordinator_to_exit({"--model", kModel, "-c", "2", "-np", "4", "--listen", "127.0.0.1:0"}),
                 "a context of 2 tokens shared by -np 4 sequences leaves none for each");
}

TEST(Startup, NumericFlagsAreRangeChecked) {
  for (const std::vector<std::string>& flag : std::vector<std::vector<std::string>>{{"--default-max-tokens", "-5"},
                                                                                 {"--max-queue", "-1"},
                                                                                 {"--ctx", "-1"},
                                                                                 {"--max-streams-per-key", "-2"},
                                                                                 {"--shutdown-grace", "-1"},
                                                                                 {"--stage-hang-ms", "0"}}) {
    std::vector<std::string> args = {"--model", kModel, "--listen", "127.0.0.1:0"};
    args.insert(args.end(), flag.begin(), flag.end());
    const Exited r = run_coordinator_to_exit(args);
    EXPECT_NE(r.status, "exit status 0") << flag[0] << "\n" << r.log;
    EXPECT_NE(r.status, "still running") << flag[0] << "\n" << r.log;
    EXPECT_NE(r.log.find(flag[0]), std::string::npos) << r.log;
    EXPECT_NE(r.log.find("not in range"), std::string::npos) << r.log;
  }
}

}  // namespace
}  // namespace pipellm::test
