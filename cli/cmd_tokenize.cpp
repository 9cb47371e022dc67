// `pipellm tokenize`: text -> token ids with a GGUF file's tokenizer (llama.cpp parity).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/error.h"
#include "cli/commands.h"
#include "engine/gguf/gguf_file.h"
#include "engine/tokenizer/tokenizer.h"
#include "flags/llama_flags.h"

namespace pipellm::cli {
namespace {

std::string json_dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string read_all(std::istream& in) {
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

int run_jsonl(const Tokenizer& tok, const std::string& path) {
  std::string all;
  if (path == "-") {
    all = read_all(std::cin);
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("cannot open " + path);
    all = read_all(in);
  }
  // Split on '\n' only: strings may hold U+2028 and other line separators.
  size_t line_no = 0;
  for (size_t start = 0; start < all.size(); ++line_no) {
    size_t end = all.find('\n', start);
    if (end == std::string::npos) end = all.size();
    const std::string line = all.substr(start, end - start);
    start = end + 1;
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(path + ":" + std::to_string(line_no + 1) + ": not JSON: " + e.what());
    }
    // A bare string, or an object with "text" (so fixture files can be fed back in).
    if (j.is_object() && j.contains("text")) j = j["text"];
    if (!j.is_string()) throw Error(path + ":" + std::to_string(line_no + 1) + ": expected a JSON string");
    const std::string text = j.get<std::string>();
    for (int add = 0; add < 2; ++add) {
      for (int parse = 0; parse < 2; ++parse) {
        const auto ids = tok.encode(text, add != 0, parse != 0);
        nlohmann::json out = {{"text", text}, {"add_special", add != 0}, {"parse_special", parse != 0},
                              {"ids", ids}, {"detok", tok.decode(ids)}};
        std::printf("%s\n", json_dump(out).c_str());
      }
    }
  }
  return 0;
}

}  // namespace

int cmd_tokenize(int argc, char** argv) {
  std::string model, jsonl, text;
  bool ids_only = false, add_special = true, parse_special = false, from_stdin = false;
  CLI::App app{"pipellm tokenize: text -> token ids with a GGUF file's tokenizer (llama.cpp's ids). Prints one line "
               "per token: id and piece (as JSON).",
               "pipellm tokenize"};
  app.add_option("-m,--model", model, "GGUF file whose tokenizer.ggml.* metadata to use (a vocab-only file works)")
      ->type_name("FILE")
      ->required();
  auto* text_opt = app.add_option("TEXT", text, "the text, or - to read it from stdin")->type_name("");
  // llama-tokenize's ways to give the text: -p, -f, --stdin.
  auto* prompt = app.add_option("-p,--prompt", text, "the text (instead of TEXT)");
  auto* file = app.add_option_function<std::string>(
                       "-f,--file",
                       [&text](const std::string& path) {
                         std::ifstream in(path, std::ios::binary);
                         if (!in) throw CLI::ValidationError("--file", "cannot read '" + path + "'");
                         text = read_all(in);
                       },
                       "read the text from a file")
                   ->type_name("FILE");
  auto* stdin_flag = app.add_flag("--stdin", from_stdin, "read the text from stdin (as TEXT -)");
  auto* jsonl_opt = app.add_option("--jsonl", jsonl,
                                   "one JSON string per line (IN, or - for stdin); writes for each string and each "
                                   "(add_special, parse_special) in (0,0),(0,1),(1,0),(1,1) one JSON object with "
                                   "text, add_special, parse_special, ids and detok (the fixture files' format)")
                        ->type_name("IN");
  app.add_flag("--ids", ids_only, "print only the ids, as a JSON array");
  app.add_flag_callback("--no-bos", [&add_special] { add_special = false; }, "do not add BOS/EOS (add_special = false)");
  app.add_flag("--special", parse_special, "parse special tokens written in the text (parse_special = true)");
  if (auto code = flags::parse(app, argc, argv)) return *code;
  int n_sources = 0;
  for (const CLI::Option* o : {text_opt, prompt, file, stdin_flag, jsonl_opt}) n_sources += o->count() > 0 ? 1 : 0;
  if (n_sources != 1) {
    std::fputs("pipellm tokenize: error: give exactly one of TEXT (- for stdin), -p TEXT, -f FILE, --stdin and --jsonl "
               "IN\nRun with --help for more information.\n",
               stderr);
    return 2;
  }
  auto f = GgufFile::open(model);
  auto tok = Tokenizer::from_gguf(*f);
  if (!jsonl.empty()) return run_jsonl(*tok, jsonl);

  if (from_stdin || (text_opt->count() > 0 && text == "-")) text = read_all(std::cin);
  const auto ids = tok->encode(text, add_special, parse_special);
  if (ids_only) {
    std::printf("%s\n", json_dump(nlohmann::json(ids)).c_str());
    return 0;
  }
  for (int32_t id : ids) std::printf("%6d %s\n", id, json_dump(nlohmann::json(tok->token_to_piece(id))).c_str());
  return 0;
}

}  // namespace pipellm::cli
