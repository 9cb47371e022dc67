// llama-server's /infill prompt layout (coordinator/http_infill.h) on the real Qwen3 vocabulary,
// whose FIM tokens llama.cpp finds by their texts: <|fim_prefix|> 151659, <|fim_middle|> 151660,
// <|fim_suffix|> 151661, <|repo_name|> 151663, <|file_sep|> 151664 (ids as llama-tokenize gives
// them, see the tokenizer fixture). The expected layouts are built by hand from llama-server's
// rule; the text pieces through the tokenizer (itself checked against llama.cpp's ids).
#include "coordinator/http_infill.h"

#include <gtest/gtest.h>

#include "coordinator/http_openai.h"
#include "engine/gguf/gguf_file.h"

namespace pipellm::coord {
namespace {

using nlohmann::json;
using Ids = std::vector<int32_t>;

const Tokenizer& qwen3() {
  static const std::unique_ptr<Tokenizer> tok =
      Tokenizer::from_gguf(*GgufFile::open(std::string(PIPELLM_TESTDATA) + "/vocab/vocab-qwen3.gguf"));
  return *tok;
}

Ids enc(const std::string& s) { return qwen3().encode(s, false, false); }

Ids cat(std::initializer_list<Ids> parts) {
  Ids out;
  for (const Ids& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

constexpr int32_t kPre = 151659, kMid = 151660, kSuf = 151661, kRep = 151663, kSep = 151664;

TEST(Infill, FimTokensFoundByText) {
  const Tokenizer::FimTokens f = qwen3().fim_tokens();
  EXPECT_EQ(f.pre, kPre);
  EXPECT_EQ(f.suf, kSuf);
  EXPECT_EQ(f.mid, kMid);
  EXPECT_EQ(f.rep, kRep);
  EXPECT_EQ(f.sep, kSep);
}

TEST(Infill, RepositoryLayoutAsLlamaServer) {
  const json body = {{"input_prefix", "def add(a, b):\n    "},
                     {"input_suffix", "\n\nprint(add(1, 2))\n"},
                     {"input_extra", {{{"filename", "util.py"}, {"text", "X = 1\n"}}, {{"text", "Y = 2\n"}}}},
                     {"prompt", "return"}};
  const Ids want = cat({{kRep}, enc("myproject\n"), {kSep}, enc("util.py\n"), enc("X = 1\n"), {kSep}, enc("tmp\n"),
                        enc("Y = 2\n"), {kSep}, enc("filename\n"), {kPre}, enc("def add(a, b):\n    "), enc("return"),
                        {kSuf}, enc("\n\nprint(add(1, 2))\n"), {kMid}});
  EXPECT_EQ(infill_prompt(qwen3(), body, 64, 8192), want);
}

TEST(Infill, SuffixFirstWithSpmInfill) {
  const json body = {{"input_prefix", "a = "}, {"input_suffix", "\nb = a"}};
  const Ids want = cat({{kRep}, enc("myproject\n"), {kSep}, enc("filename\n"), {kSuf}, enc("\nb = a"), {kPre}, enc("a = "),
                        {kMid}});
  EXPECT_EQ(infill_prompt(qwen3(), body, 16, 8192, /*spm=*/true), want);
}

TEST(Infill, LongInputsAreCutAsLlamaServerDoes) {
  // Token ids as input (the "mixed" form): the prefix keeps its last 1536 (3/4 of 2048), the
  // suffix its first 512 - 2 - 3 (the prompt's 3 tokens), the extra context its last
  // n_ctx - 2048 - 2 n_predict tokens (here 100).
  Ids prefix(2000), suffix(700), prompt = {7, 8, 9};
  for (int i = 0; i < 2000; ++i) prefix[static_cast<size_t>(i)] = 1000 + i;
  for (int i = 0; i < 700; ++i) suffix[static_cast<size_t>(i)] = 5000 + i;
  std::string text;
  for (int i = 0; i < 200; ++i) text += " w" + std::to_string(i);
  const json body = {{"input_prefix", prefix}, {"input_suffix", suffix}, {"prompt", prompt},
                     {"input_extra", {{{"filename", "f"}, {"text", text}}}}};
  const Ids got = infill_prompt(qwen3(), body, 10, 2048 + 20 + 100);
  const Ids extra = cat({{kRep}, enc("myproject\n"), {kSep}, enc("f\n"), enc(text), {kSep}, enc("filename\n")});
  ASSERT_GE(extra.size(), 100u);
  const Ids want = cat({Ids(extra.end() - 100, extra.end()), {kPre}, Ids(prefix.end() - 1536, prefix.end()), prompt,
                        {kSuf}, Ids(suffix.begin(), suffix.begin() + 507), {kMid}});
  EXPECT_EQ(got, want);
  // No room in the context: no extra context at all.
  EXPECT_EQ(infill_prompt(qwen3(), body, 10, 1024).front(), kPre);
}

TEST(Infill, BadFieldsAndModelsWithoutFimTokensAreRefusedByName) {
  const auto param_of = [](const json& body) {
    try {
      infill_prompt(qwen3(), body, 16, 4096);
    } catch (const HttpError& e) {
      return e.error().param + " " + e.error().code;
    }
    return std::string("accepted");
  };
  EXPECT_EQ(param_of({{"input_prefix", 3}}), "input_prefix invalid_parameter");
  EXPECT_EQ(param_of({{"input_suffix", {1, -4}}}), "input_suffix invalid_parameter");
  EXPECT_EQ(param_of({{"input_suffix", {1, 999999999}}}), "input_suffix invalid_parameter");
  EXPECT_EQ(param_of({{"input_extra", "x"}}), "input_extra invalid_parameter");
  EXPECT_EQ(param_of({{"input_extra", {{{"text", 5}}}}}), "input_extra invalid_parameter");
  EXPECT_EQ(param_of({{"prompt", {{"nested"}}}}), "prompt invalid_parameter");
  EXPECT_EQ(param_of({{"input_prefix", "x"}}), "accepted");
  const auto llama3 = Tokenizer::from_gguf(*GgufFile::open(std::string(PIPELLM_TESTDATA) + "/vocab/vocab-llama3.gguf"));
  try {
    infill_prompt(*llama3, {{"input_prefix", "x"}}, 16, 4096);
    ADD_FAILURE() << "a vocabulary without FIM tokens was accepted";
  } catch (const HttpError& e) {
    EXPECT_EQ(e.error().code, "not_supported");
  }
}

}  // namespace
}  // namespace pipellm::coord
