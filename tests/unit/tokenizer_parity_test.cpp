// Parity with llama.cpp: every line of the fixture corpora (ids from llama_tokenize, text from
// llama_detokenize) must be reproduced exactly.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {
using test::testdata;

struct Case {
  std::string text;
  bool add_special = false, parse_special = false;
  std::vector<int32_t> ids;
  std::string detok;
};

// Lines are split on '\n' only: the strings hold U+2028 and other separators.
std::vector<Case> load_corpus(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string all = ss.str();
  std::vector<Case> cases;
  size_t start = 0;
  while (start < all.size()) {
    size_t end = all.find('\n', start);
    if (end == std::string::npos) end = all.size();
    if (end > start) {
      const auto j = nlohmann::json::parse(all.begin() + static_cast<std::ptrdiff_t>(start),
                                           all.begin() + static_cast<std::ptrdiff_t>(end));
      cases.push_back({j.at("text").get<std::string>(), j.at("add_special").get<bool>(),
                       j.at("parse_special").get<bool>(), j.at("ids").get<std::vector<int32_t>>(),
                       j.at("detok").get<std::string>()});
    }
    start = end + 1;
  }
  return cases;
}

std::string show_ids(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s + "]";
}

void check_corpus(const std::string& vocab_file, const std::string& corpus) {
  const auto t0 = std::chrono::steady_clock::now();
  auto f = GgufFile::open(testdata(vocab_file));
  auto tok = Tokenizer::from_gguf(*f);
  const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const auto cases = load_corpus(testdata(corpus));
  ASSERT_GT(cases.size(), 1000u) << corpus;
  size_t ids_ok = 0, detok_ok = 0, shown = 0;
  for (const auto& c : cases) {
    const auto ids = tok->encode(c.text, c.add_special, c.parse_special);
    const std::string detok = tok->decode(c.ids);
    ids_ok += ids == c.ids;
    detok_ok += detok == c.detok;
    if ((ids != c.ids || detok != c.detok) && shown++ < 5) {
      ADD_FAILURE() << corpus << ": text " << nlohmann::json(c.text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                    << " add_special=" << c.add_special << " parse_special=" << c.parse_special
                    << "\n  expected ids " << show_ids(c.ids) << "\n  got      ids " << show_ids(ids)
                    << "\n  expected detok " << nlohmann::json(c.detok).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                    << "\n  got      detok " << nlohmann::json(detok).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
  }
  std::printf("[ parity ] %s: ids %zu/%zu, detok %zu/%zu (vocabulary loaded in %.0f ms)\n", corpus.c_str(), ids_ok,
              cases.size(), detok_ok, cases.size(), load_ms);
  EXPECT_EQ(ids_ok, cases.size()) << corpus;
  EXPECT_EQ(detok_ok, cases.size()) << corpus;
}

TEST(TokenizerParity, Llama3) { check_corpus("vocab/vocab-llama3.gguf", "tokenizer/llama3.jsonl"); }
TEST(TokenizerParity, Qwen3) { check_corpus("vocab/vocab-qwen3.gguf", "tokenizer/qwen3.jsonl"); }
TEST(TokenizerParity, Llama2) { check_corpus("vocab/vocab-llama2.gguf", "tokenizer/llama2.jsonl"); }
TEST(TokenizerParity, TinySpm) { check_corpus("models/tiny-llama-F32.gguf", "tokenizer/tiny-spm.jsonl"); }
// SentencePiece without the space prefix, 6406 user-defined pieces matched in raw text and
// shown verbatim, byte fallback.
TEST(TokenizerParity, Gemma3) { check_corpus("vocab/vocab-gemma3.gguf", "tokenizer/gemma3.jsonl"); }
// Byte-level BPE with the gpt-4o (o200k) pre-tokenizer and 446189 merges.
TEST(TokenizerParity, GptOss) { check_corpus("vocab/vocab-gptoss.gguf", "tokenizer/gptoss.jsonl"); }

}  // namespace
}  // namespace pipellm
