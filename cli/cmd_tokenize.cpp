// `pipellm tokenize`: text -> token ids with a GGUF file's tokenizer (llama.cpp parity).
#include <cstdio>
#include <cstring>
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

namespace pipellm::cli {
namespace {

constexpr const char* kUsage =
    "usage: pipellm tokenize -m FILE [--ids] [--no-bos] [--special] TEXT|-\n"
    "       pipellm tokenize -m FILE --jsonl IN.jsonl|-\n"
    "  -m FILE        GGUF file whose tokenizer.ggml.* metadata to use (a vocab-only file works)\n"
    "  --ids          print only the ids, as a JSON array\n"
    "  --no-bos       do not add BOS/EOS (add_special = false)\n"
    "  --special      parse special tokens written in the text (parse_special = true)\n"
    "  TEXT|-         the text, or - to read it from stdin\n"
    "  --jsonl IN     one JSON string per line; writes for each string and each (add_special,\n"
    "                 parse_special) in (0,0),(0,1),(1,0),(1,1) one JSON object with text,\n"
    "                 add_special, parse_special, ids and detok (the fixture files' format)\n";

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
  bool ids_only = false, add_special = true, parse_special = false, have_text = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if ((a == "-m" || a == "--model") && i + 1 < argc) {
      model = argv[++i];
    } else if (a == "--jsonl" && i + 1 < argc) {
      jsonl = argv[++i];
    } else if (a == "--ids") {
      ids_only = true;
    } else if (a == "--no-bos") {
      add_special = false;
    } else if (a == "--special") {
      parse_special = true;
    } else if ((a.empty() || a[0] != '-' || a == "-") && !have_text) {
      text = a;
      have_text = true;
    } else {
      std::fprintf(stderr, "pipellm tokenize: bad argument '%s'\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (model.empty() || (jsonl.empty() == !have_text)) {
    std::fprintf(stderr, "pipellm tokenize: need -m FILE and either TEXT|- or --jsonl IN\n%s", kUsage);
    return 2;
  }
  auto f = GgufFile::open(model);
  auto tok = Tokenizer::from_gguf(*f);
  if (!jsonl.empty()) return run_jsonl(*tok, jsonl);

  if (text == "-") text = read_all(std::cin);
  const auto ids = tok->encode(text, add_special, parse_special);
  if (ids_only) {
    std::printf("%s\n", json_dump(nlohmann::json(ids)).c_str());
    return 0;
  }
  for (int32_t id : ids) std::printf("%6d %s\n", id, json_dump(nlohmann::json(tok->token_to_piece(id))).c_str());
  return 0;
}

}  // namespace pipellm::cli
