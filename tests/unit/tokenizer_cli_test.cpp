// `pipellm tokenize`: exit codes, and --jsonl output identical to the fixture lines.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

struct Result {
  int code;
  std::string out;
};

Result run(const std::string& args) {
  const std::string cmd = std::string(PIPELLM_CLI_PATH) + " tokenize " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(TokenizerCli, ExitCodes) {
  const std::string vocab = test::testdata("vocab/vocab-llama3.gguf");
  EXPECT_EQ(run("--bogus").code, 2);
  EXPECT_EQ(run("-m " + vocab).code, 2);  // no text
  EXPECT_EQ(run("-m /no/such/file.gguf hello").code, 1);
  const Result r = run("-m " + vocab + " --ids 'Hello world'");
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "[128000,9906,1917]\n");
  EXPECT_EQ(run("-m " + vocab + " --ids --no-bos --special '<|eot_id|>'").out, "[128009]\n");
}

TEST(TokenizerCli, JsonlReproducesTheFixtureLines) {
  // Feed the fixture's first 40 texts back as JSON strings; output must equal its lines.
  const std::string fixture = test::testdata("tokenizer/qwen3.jsonl");
  std::ifstream in(fixture, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string all = ss.str();
  std::string expected, input;
  size_t start = 0;
  for (int line = 0; line < 160 && start < all.size(); ++line) {
    const size_t end = all.find('\n', start);
    const std::string l = all.substr(start, end - start);
    expected += l + "\n";
    if (line % 4 == 0) input += l + "\n";  // objects with "text" are accepted as input
    start = end + 1;
  }
  const std::string path = ::testing::TempDir() + "/tok_cli_in.jsonl";
  std::ofstream(path, std::ios::binary) << input;
  const Result r = run("-m " + test::testdata("vocab/vocab-qwen3.gguf") + " --jsonl " + path);
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, expected);
}

}  // namespace
}  // namespace pipellm
