// Tokenizer behaviour beyond the fixture corpora: random input never crashes, valid UTF-8
// round-trips on the byte-level vocabularies, the streaming decoder agrees with decode(),
// the PCRE2 pre-tokenizer agrees with the hand-written splitters, and bad files are rejected.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "engine/gguf/gguf_file.h"
#include "engine/gguf/gguf_writer.h"
#include "engine/tokenizer/pretokenizer.h"
#include "engine/tokenizer/pretokenizer_patterns.h"
#include "engine/tokenizer/streaming_decoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/unicode_text.h"
#include "engine/util/error.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

using test::testdata;

std::unique_ptr<Tokenizer> load(const std::string& rel) {
  auto f = GgufFile::open(testdata(rel));
  return Tokenizer::from_gguf(*f);
}

std::vector<std::string> corpus_texts(const std::string& rel) {
  std::ifstream in(testdata(rel), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string all = ss.str();
  std::vector<std::string> out;
  for (size_t s = 0; s < all.size();) {
    size_t e = all.find('\n', s);
    if (e == std::string::npos) e = all.size();
    if (e > s) {
      auto j = nlohmann::json::parse(all.substr(s, e - s));
      if (!j["add_special"].get<bool>() && !j["parse_special"].get<bool>()) out.push_back(j["text"].get<std::string>());
    }
    s = e + 1;
  }
  return out;
}

// Random valid UTF-8 mixing ASCII (spaces, digits, apostrophes, newlines) and other scripts.
std::string random_utf8(std::mt19937& rng, size_t n_cpts) {
  static const uint32_t kRanges[][2] = {{0x20, 0x7E}, {0x09, 0x0D}, {0xA0, 0x24F}, {0x370, 0x4FF},
                                        {0x900, 0x97F}, {0xE00, 0xE7F}, {0x2000, 0x206F}, {0x3040, 0x30FF},
                                        {0x4E00, 0x4FFF}, {0xAC00, 0xAD00}, {0x1F300, 0x1F6FF}, {0x0, 0x10FFFF}};
  std::uniform_int_distribution<int> pick_range(0, 11), pick_ascii(0, 3);
  std::string s;
  for (size_t i = 0; i < n_cpts; ++i) {
    const int r = pick_ascii(rng) ? 0 : pick_range(rng);
    uint32_t c = std::uniform_int_distribution<uint32_t>(kRanges[r][0], kRanges[r][1])(rng);
    if (c >= 0xD800 && c <= 0xDFFF) c = 'x';
    tok::append_utf8(s, c);
  }
  return s;
}

TEST(TokenizerFuzz, RandomBytesNeverCrash) {
  const char* files[] = {"vocab/vocab-llama3.gguf", "vocab/vocab-qwen3.gguf", "vocab/vocab-llama2.gguf",
                         "models/tiny-llama-F32.gguf"};
  std::mt19937 rng(7);
  for (const char* file : files) {
    auto tok = load(file);
    for (int iter = 0; iter < 300; ++iter) {
      std::string s(std::uniform_int_distribution<size_t>(0, 64)(rng), '\0');
      for (char& c : s) c = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng));
      if (iter % 3 == 0) s += "<|eot_id|><s></s><|im_end|>";
      for (int mode = 0; mode < 4; ++mode) {
        const auto ids = tok->encode(s, mode & 1, mode & 2);
        for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok->n_vocab()) << file;
        (void)tok->decode(ids);
      }
    }
    // Arbitrary ids (out of range included) decode without crashing.
    std::vector<int32_t> ids;
    for (int i = 0; i < 200; ++i) ids.push_back(std::uniform_int_distribution<int32_t>(-5, tok->n_vocab() + 5)(rng));
    (void)tok->decode(ids);
  }
}

TEST(TokenizerFuzz, ValidUtf8RoundTripsOnByteLevelVocabularies) {
  std::mt19937 rng(11);
  for (const char* file : {"vocab/vocab-llama3.gguf", "vocab/vocab-qwen3.gguf"}) {
    auto tok = load(file);
    for (int iter = 0; iter < 500; ++iter) {
      const std::string text = random_utf8(rng, std::uniform_int_distribution<size_t>(0, 80)(rng));
      const auto ids = tok->encode(text, false, false);
      std::string pieces;
      for (int32_t id : ids) pieces += tok->render_piece(id);
      ASSERT_EQ(pieces, text) << file;
      // decode() applies the vocabulary's space clean-up (Llama 3: " ," -> ","), nothing else.
      ASSERT_EQ(tok->decode(ids), tok->cleans_spaces() ? tok->clean_spaces(text) : text) << file;
    }
    // Special-token text is plain text unless parse_special is set.
    const std::string s = "a<|im_end|>b<|eot_id|>";
    EXPECT_EQ(tok->decode(tok->encode(s, false, false)), s) << file;
  }
}

TEST(TokenizerStreaming, ConcatenationEqualsDecode) {
  std::mt19937 rng(3);
  for (const char* file : {"vocab/vocab-llama3.gguf", "vocab/vocab-qwen3.gguf", "vocab/vocab-llama2.gguf"}) {
    auto tok = load(file);
    auto texts = corpus_texts(std::string("tokenizer/") +
                              (std::string(file).find("llama3") != std::string::npos ? "llama3"
                               : std::string(file).find("qwen3") != std::string::npos ? "qwen3" : "llama2") +
                              ".jsonl");
    texts.push_back("It 's a test , isn 't it ? Yes ' no ' maybe .");
    StreamingDecoder dec(*tok);
    for (const auto& text : texts) {
      const auto ids = tok->encode(text, true, true);
      std::string streamed;
      for (int32_t id : ids) {
        const std::string part = dec.push(id);
        ASSERT_EQ(tok::complete_utf8_prefix(part), part.size()) << file << ": incomplete UTF-8 emitted";
        streamed += part;
      }
      streamed += dec.flush();
      ASSERT_EQ(streamed, tok->decode(ids)) << file << ": " << text;
    }
    // Random ids (byte tokens split multi-byte characters on the SentencePiece vocabulary).
    for (int iter = 0; iter < 50; ++iter) {
      std::vector<int32_t> ids;
      for (int i = 0; i < 40; ++i) ids.push_back(std::uniform_int_distribution<int32_t>(0, tok->n_vocab() - 1)(rng));
      std::string streamed;
      for (int32_t id : ids) streamed += dec.push(id);
      streamed += dec.flush();
      ASSERT_EQ(streamed, tok->decode(ids)) << file;
    }
  }
}

TEST(TokenizerPreTokenizer, Pcre2PathMatchesHandWrittenSplitters) {
  auto texts = corpus_texts("tokenizer/qwen3.jsonl");
  std::mt19937 rng(5);
  for (int i = 0; i < 300; ++i) texts.push_back(random_utf8(rng, 60));
  for (const char* pre : {"llama-bpe", "qwen2", "gpt-2"}) {
    const auto cfg = tok::find_pretokenizer_config(pre);
    ASSERT_TRUE(cfg.has_value());
    const tok::PreTokenizer custom(cfg->regexes, true), pcre(cfg->regexes, false);
    for (const auto& t : texts) {
      const auto cpts = tok::decode_utf8_lenient(t);
      ASSERT_EQ(custom.split(cpts), pcre.split(cpts)) << pre << ": " << t;
    }
  }
}

TEST(TokenizerPreTokenizer, EveryListedPreTokenizerCompilesAndSplits) {
  const std::string text = "Hello, World! It's 12345 apples; naïve café 日本語 ٣٤ x\n\n  y\t";
  const auto cpts = tok::decode_utf8_lenient(text);
  for (const char* pre : {"default", "llama-bpe", "qwen2", "gpt-2", "deepseek-llm", "deepseek-v3",
                          "deepseek-coder", "tekken", "command-r", "olmo", "smollm", "gpt-4o", "phi-2",
                          "starcoder", "falcon", "chameleon", "viking", "poro-chat", "seed-coder"}) {
    const auto cfg = tok::find_pretokenizer_config(pre);
    ASSERT_TRUE(cfg.has_value()) << pre;
    const tok::PreTokenizer p(cfg->regexes);
    size_t total = 0;
    for (size_t n : p.split(cpts)) total += n;
    EXPECT_EQ(total, cpts.size()) << pre << ": the pieces must cover the text";
  }
}

// A vocabulary file with one metadata value replaced (or removed when value is empty).
std::vector<uint8_t> vocab_with(const std::string& key, const std::string& value) {
  auto f = GgufFile::open(testdata("vocab/vocab-llama3.gguf"));
  GgufWriter w;
  for (const auto& [k, v] : f->metadata()) {
    if (k == key) {
      if (!value.empty()) w.set_string(k, value);
    } else {
      w.set_value(k, v);
    }
  }
  return w.write_to_memory();
}

TEST(TokenizerErrors, UnknownPreTokenizerIsNamed) {
  const auto bytes = vocab_with("tokenizer.ggml.pre", "made-up-pre");
  auto f = GgufFile::parse(bytes.data(), bytes.size(), "made-up.gguf");
  try {
    Tokenizer::from_gguf(*f);
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("'made-up-pre'"), std::string::npos) << e.what();
  }
}

TEST(TokenizerErrors, MissingKeysAreNamed) {
  for (const char* key : {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.model"}) {
    const auto bytes = vocab_with(key, "");
    auto f = GgufFile::parse(bytes.data(), bytes.size(), "missing.gguf");
    try {
      Tokenizer::from_gguf(*f);
      FAIL() << "expected FormatError for " << key;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  }
}

TEST(TokenizerApi, SpecialIdsAndFlags) {
  auto l3 = load("vocab/vocab-llama3.gguf");
  EXPECT_EQ(l3->n_vocab(), 128256);
  EXPECT_EQ(l3->bos_id(), 128000);
  EXPECT_TRUE(l3->add_bos());
  EXPECT_TRUE(l3->is_eog(l3->encode("<|eot_id|>", false, true).at(0)));
  EXPECT_TRUE(l3->is_eog(l3->eos_id()));
  EXPECT_FALSE(l3->is_eog(l3->bos_id()));
  EXPECT_EQ(l3->token_to_piece(128000), "<|begin_of_text|>");
  EXPECT_EQ(l3->decode({128000}), "");
  auto l2 = load("vocab/vocab-llama2.gguf");
  EXPECT_EQ(l2->bos_id(), 1);
  EXPECT_EQ(l2->eos_id(), 2);
  EXPECT_TRUE(l2->is_eog(2));
  EXPECT_EQ(l2->token_to_piece(l2->encode("\n", false, false).back()), "\n");
}

}  // namespace
}  // namespace pipellm
