// Issue 21 item 7: --server-config fails closed. Typos of a key, malformed values, a key set
// twice and sections are errors naming the file, the line and the key (with a suggestion for
// a near miss), through the real CLI11 parse as pipellm-coordinator runs it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "coordinator/serving_options.h"
#include "coordinator/strict_config.h"

namespace pipellm::coord {
namespace {

const std::vector<std::string> kKeys = {"api-keys-file", "http-listen", "max-streams-per-key", "stage-arg", "allow-remote"};

std::string problem(const std::string& text) {
  try {
    check_server_config(text, kKeys, "serve.toml");
  } catch (const CLI::ConversionError& e) {
    return e.what();
  }
  return "";
}

TEST(StrictConfig, GoodFilesPass) {
  EXPECT_EQ(problem("# keys\napi-keys-file = \"/etc/keys\"  # comment\n\nmax-streams-per-key = 4\n"
                    "allow-remote = true\nstage-arg = [\"--a\", 'b \"c\"', ]\nhttp-listen = '127.0.0.1:0'\n"),
            "");
}

TEST(StrictConfig, TyposAndMalformedValuesAreNamed) {
  EXPECT_NE(problem("api_keys_file = \"k\"\n").find("serve.toml:1: unknown setting 'api_keys_file' (did you mean 'api-keys-file'?)"),
            std::string::npos);
  EXPECT_NE(problem("\napi-key-file = \"k\"\n").find("serve.toml:2: unknown setting 'api-key-file' (did you mean 'api-keys-file'?)"),
            std::string::npos);
  EXPECT_NE(problem("apikeys = \"k\"\n").find("unknown setting 'apikeys'"), std::string::npos);
  EXPECT_NE(problem("api-keys-file = \"/etc/keys\n").find("api-keys-file: the string opened with \" is not closed"),
            std::string::npos);
  EXPECT_NE(problem("api-keys-file = /etc/keys\n").find("'/etc/keys' is not a TOML value"), std::string::npos);
  EXPECT_NE(problem("max-streams-per-key = 4 5\n").find("unexpected text after the value: '5'"), std::string::npos);
  EXPECT_NE(problem("api-keys-file =\n").find("api-keys-file: no value"), std::string::npos);
  EXPECT_NE(problem("stage-arg = [\"a\" \"b\"]\n").find("separated by ','"), std::string::npos);
  EXPECT_NE(problem("stage-arg = [\"a\"\n").find("not closed"), std::string::npos);
  EXPECT_NE(problem("api-keys-file = \"a\"\napi-keys-file = \"b\"\n").find("serve.toml:2: 'api-keys-file' is set twice"),
            std::string::npos);
  EXPECT_NE(problem("[server]\napi-keys-file = \"a\"\n").find("sections"), std::string::npos);
  EXPECT_NE(problem("just words\n").find("expected 'key = value'"), std::string::npos);
}

// Through CLI11 as the coordinator parses: the error stops the parse.
TEST(StrictConfig, TheParseFailsOnATypo) {
  const std::string path = "/tmp/pipellm_server_config_" + std::to_string(::getpid()) + ".toml";
  std::ofstream(path) << "api_keys_file = \"/etc/keys\"\n";
  CLI::App app;
  ServingOptions o;
  add_serving_options(app, o);
  const std::string arg0 = "test", flag = "--server-config";
  std::vector<char*> argv = {const_cast<char*>(arg0.c_str()), const_cast<char*>(flag.c_str()), const_cast<char*>(path.c_str())};
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
    ADD_FAILURE() << "a config with a typo parsed";
  } catch (const CLI::ParseError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":1: unknown setting 'api_keys_file' (did you mean 'api-keys-file'?)"),
              std::string::npos)
        << e.what();
  }
  std::ofstream(path) << "api-keys-file = \"/etc/keys\"\nmax-streams-per-key = 3\n";
  CLI::App ok;
  ServingOptions o2;
  add_serving_options(ok, o2);
  ok.parse(static_cast<int>(argv.size()), argv.data());
  EXPECT_EQ(o2.api_keys_file, "/etc/keys");
  EXPECT_EQ(o2.max_streams_per_key, 3);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace pipellm::coord
