// Tokenizer behaviour beyond the fixture corpora: random input never crashes, valid UTF-8
// round-trips on the byte-level vocabularies, the streaming decoder agrees with decode(),
// the PCRE2 pre-tokenizer agrees with the hand-written splitters, chunked SentencePiece merging
// agrees with whole-text merging, Gemma 3's and gpt-oss's special tokens follow llama.cpp's rules
// (the corpora hold none of them), large vocabularies load quickly, and bad files are rejected.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "base/error.h"
#include "engine/gguf/gguf_file.h"
#include "engine/gguf/gguf_writer.h"
#include "engine/tokenizer/pretokenizer.h"
#include "engine/tokenizer/pretokenizer_patterns.h"
#include "engine/tokenizer/spm_model.h"
#include "engine/tokenizer/streaming_decoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/unicode_text.h"
#include "engine/tokenizer/vocab.h"
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
                         "models/tiny-llama-F32.gguf", "vocab/vocab-gemma3.gguf", "vocab/vocab-gptoss.gguf"};
  std::mt19937 rng(7);
  for (const char* file : files) {
    auto tok = load(file);
    for (int iter = 0; iter < 300; ++iter) {
      std::string s(std::uniform_int_distribution<size_t>(0, 64)(rng), '\0');
      for (char& c : s) c = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng));
      if (iter % 3 == 0) s += "<|eot_id|><s></s><|im_end|><start_of_turn><|start|><|return|>";
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
  for (const char* file : {"vocab/vocab-llama3.gguf", "vocab/vocab-qwen3.gguf", "vocab/vocab-gptoss.gguf"}) {
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
  const std::pair<const char*, const char*> files[] = {{"vocab/vocab-llama3.gguf", "tokenizer/llama3.jsonl"},
                                                       {"vocab/vocab-qwen3.gguf", "tokenizer/qwen3.jsonl"},
                                                       {"vocab/vocab-llama2.gguf", "tokenizer/llama2.jsonl"},
                                                       {"vocab/vocab-gemma3.gguf", "tokenizer/gemma3.jsonl"},
                                                       {"vocab/vocab-gptoss.gguf", "tokenizer/gptoss.jsonl"}};
  for (const auto& [file, corpus] : files) {
    auto tok = load(file);
    auto texts = corpus_texts(corpus);
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

// The SentencePiece merges run per chunk (cut before a U+2581 no piece can join with what
// precedes it); that must give the same ids as merging the whole text at once. Gemma 3 has a
// piece (">▁</") that joins across a space; invalid UTF-8 can hide a U+2581 inside a symbol.
TEST(TokenizerSpm, ChunkedMergingMatchesWholeText) {
  const std::pair<const char*, const char*> files[] = {{"vocab/vocab-llama2.gguf", "tokenizer/llama2.jsonl"},
                                                       {"models/tiny-llama-F32.gguf", "tokenizer/tiny-spm.jsonl"},
                                                       {"vocab/vocab-gemma3.gguf", "tokenizer/gemma3.jsonl"}};
  std::mt19937 rng(13);
  for (const auto& [file, corpus] : files) {
    auto f = GgufFile::open(testdata(file));
    const auto vocab = tok::load_vocab(*f);
    const tok::SpmModel chunked(*vocab, true), whole(*vocab, false);
    auto texts = corpus_texts(corpus);
    for (int i = 0; i < 200; ++i) texts.push_back(random_utf8(rng, 60));
    for (int i = 0; i < 200; ++i) {
      std::string s(std::uniform_int_distribution<size_t>(0, 40)(rng), '\0');
      for (char& c : s) c = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng));
      texts.push_back(s + " x\xE2 y\xF0\x9F z");
    }
    texts.push_back("<a> </a> <b>  </b> >  </ > </");
    for (const auto& t : texts) {
      std::string escaped;
      for (char c : t) escaped += c == ' ' ? std::string("\xE2\x96\x81") : std::string(1, c);
      std::vector<int32_t> a, b;
      chunked.encode(escaped, a);
      whole.encode(escaped, b);
      ASSERT_EQ(a, b) << file << ": " << nlohmann::json(t).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
  }
}

std::vector<int32_t> join(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// Gemma 3 (llama.cpp's rules, see src/llama-vocab.cpp): its turn markers are control tokens,
// parsed only with parse_special and decoded as ""; the user-defined pieces (HTML tags,
// <unusedN>, runs of spaces) are matched in raw text and decoded verbatim.
TEST(TokenizerSpecial, Gemma3) {
  auto f = GgufFile::open(testdata("vocab/vocab-gemma3.gguf"));
  const auto vocab = tok::load_vocab(*f);
  auto tok = Tokenizer::from_gguf(*f);
  const int32_t start = vocab->find("<start_of_turn>"), end = vocab->find("<end_of_turn>");
  ASSERT_GE(start, 0);
  ASSERT_GE(end, 0);
  EXPECT_EQ(tok->bos_id(), vocab->find("<bos>"));
  EXPECT_EQ(tok->eos_id(), end);
  EXPECT_TRUE(tok->add_bos());
  EXPECT_TRUE(tok->is_eog(end));
  EXPECT_FALSE(tok->is_eog(start));

  auto enc = [&](const std::string& s) { return tok->encode(s, false, false); };
  const std::string turn = "<start_of_turn>user\nHi there<end_of_turn>\n";
  EXPECT_EQ(tok->encode(turn, false, true), join({{start}, enc("user\nHi there"), {end}, enc("\n")}));
  const auto plain = enc(turn);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), start), 0);
  EXPECT_EQ(tok->decode(plain), turn);
  EXPECT_EQ(tok->decode({start, end}), "");
  EXPECT_EQ(tok->token_to_piece(start), "<start_of_turn>");
  EXPECT_EQ(tok->encode(turn, true, true).front(), tok->bos_id());

  const int32_t div = vocab->find("<div>"), div_end = vocab->find("</div>"), unused = vocab->find("<unused12>");
  ASSERT_GE(div, 0);
  ASSERT_GE(div_end, 0);
  ASSERT_GE(unused, 0);
  for (bool parse_special : {false, true}) {
    EXPECT_EQ(tok->encode("x<div><unused12></div>y", false, parse_special),
              join({enc("x"), {div, unused, div_end}, enc("y")}));
  }
  const int32_t two_spaces = vocab->find("\xE2\x96\x81\xE2\x96\x81");
  ASSERT_GE(two_spaces, 0);
  EXPECT_EQ(tok->decode({two_spaces}), "\xE2\x96\x81\xE2\x96\x81");  // not "  " (fixtures README)
}

// gpt-oss (llama.cpp's rules): <|start|>, <|channel|>, <|message|>, <|constrain|> and, since the
// vocabulary has <|return|> and <|call|>, <|end|> are user-defined: always parsed, always shown,
// and <|end|> does not end generation. <|return|> and <|call|> stay control tokens.
TEST(TokenizerSpecial, GptOss) {
  auto f = GgufFile::open(testdata("vocab/vocab-gptoss.gguf"));
  const auto vocab = tok::load_vocab(*f);
  auto tok = Tokenizer::from_gguf(*f);
  const int32_t start = vocab->find("<|start|>"), message = vocab->find("<|message|>"), end = vocab->find("<|end|>"),
                channel = vocab->find("<|channel|>"), ret = vocab->find("<|return|>"), call = vocab->find("<|call|>");
  for (int32_t id : {start, message, end, channel, ret, call}) ASSERT_GE(id, 0);
  EXPECT_EQ(tok->eos_id(), ret);
  EXPECT_FALSE(tok->add_bos());
  EXPECT_TRUE(tok->encode("", true, true).empty());
  EXPECT_TRUE(tok->is_eog(ret));
  EXPECT_TRUE(tok->is_eog(call));
  EXPECT_FALSE(tok->is_eog(end));

  auto enc = [&](const std::string& s) { return tok->encode(s, false, false); };
  const std::string turn = "<|start|>assistant<|channel|>final<|message|>Hi there<|end|>";
  const auto expected = join({{start}, enc("assistant"), {channel}, enc("final"), {message}, enc("Hi there"), {end}});
  EXPECT_EQ(tok->encode(turn, false, false), expected);
  EXPECT_EQ(tok->encode(turn, false, true), expected);
  EXPECT_EQ(tok->decode(expected), turn);

  EXPECT_EQ(tok->encode("ok<|return|>", false, true), join({enc("ok"), {ret}}));
  const auto plain = enc("ok<|return|>");
  EXPECT_EQ(std::count(plain.begin(), plain.end(), ret), 0);
  EXPECT_EQ(tok->decode(plain), "ok<|return|>");
  EXPECT_EQ(tok->decode({ret, call}), "");
  EXPECT_EQ(tok->token_to_piece(ret), "<|return|>");
}

// 262k pieces, 200k tokens with 446k merges: setup must stay linear (a quadratic step would take
// minutes). The bound is loose on purpose; the parity test prints the actual times.
TEST(TokenizerApi, LargeVocabulariesLoadQuickly) {
  for (const char* file : {"vocab/vocab-gemma3.gguf", "vocab/vocab-gptoss.gguf"}) {
    const auto t0 = std::chrono::steady_clock::now();
    auto tok = load(file);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ load   ] %s: %d tokens in %.0f ms\n", file, tok->n_vocab(), ms);
    EXPECT_LT(ms, 10000.0) << file;
  }
}

}  // namespace
}  // namespace pipellm
