// The generation loop on a scripted stage, and the stop-string filter.
#include <gtest/gtest.h>

#include "base/error.h"
#include "engine/model/host_stage.h"
#include "engine/runtime/generator.h"
#include "engine/runtime/stop_strings.h"

namespace pipellm {
namespace {

// A fake whole model whose next token is always (last input token + 1) % vocab.
class CountingStage : public HostStage {
 public:
  explicit CountingStage(int n_ctx) : n_ctx_(n_ctx) {
    cfg_.n_vocab = 10;
    cfg_.n_embd = 4;
  }
  const ModelConfig& config() const override { return cfg_; }
  LayerRange range() const override { return {0, 0}; }
  bool is_first() const override { return true; }
  bool is_last() const override { return true; }
  int n_ctx() const override { return n_ctx_; }
  int n_slots() const override { return 1; }
  void forward(const Batch& b, std::vector<float>& out) override {
    ++calls;
    positions.insert(positions.end(), b.pos.begin(), b.pos.end());
    out.assign(static_cast<size_t>(b.n_outputs()) * 10, 0.0f);
    size_t row = 0;
    for (int i = 0; i < b.n_tokens(); ++i) {
      if (!b.logits[static_cast<size_t>(i)]) continue;
      out[row * 10 + static_cast<size_t>((b.tokens[static_cast<size_t>(i)] + 1) % 10)] = 5.0f;
      ++row;
    }
  }
  int calls = 0;
  std::vector<int32_t> positions;

 private:
  ModelConfig cfg_;
  int n_ctx_;
};

GenerationRequest greedy_request(std::vector<int32_t> prompt, int max_tokens) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0.0f;
  return r;
}

TextHooks letters() {
  TextHooks h;
  h.piece = [](int32_t t) { return std::string(1, static_cast<char>('a' + t)); };
  return h;
}

TEST(Generate, MaxTokensAndChunkedPrefill) {
  CountingStage m(64);
  GenerationRequest r = greedy_request({1, 2, 3, 4, 5}, 4);
  r.prefill_chunk = 2;
  const auto res = generate(m, r, letters());
  EXPECT_EQ(res.tokens, (std::vector<int32_t>{6, 7, 8, 9}));
  EXPECT_EQ(res.text, "ghij");
  EXPECT_EQ(res.reason, StopReason::MaxTokens);
  EXPECT_EQ(m.calls, 3 + 3);  // 3 prefill chunks, 3 decode steps (the last token is not decoded)
  EXPECT_EQ(m.positions, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST(Generate, StopsAtEndOfGeneration) {
  CountingStage m(64);
  TextHooks h = letters();
  h.is_eog = [](int32_t t) { return t == 8; };
  const auto res = generate(m, greedy_request({5}, 10), h);
  EXPECT_EQ(res.tokens, (std::vector<int32_t>{6, 7}));
  EXPECT_EQ(res.reason, StopReason::EndOfGeneration);
}

TEST(Generate, StopStringIsNotEmitted) {
  CountingStage m(64);
  GenerationRequest r = greedy_request({0}, 10);
  r.stop_strings = {"def", "zz"};
  std::string streamed;
  const auto res = generate(m, r, letters(), [&](int32_t, const std::string& s) {
    streamed += s;
    return true;
  });
  EXPECT_EQ(res.text, "bc");
  EXPECT_EQ(streamed, "bc");
  EXPECT_EQ(res.reason, StopReason::StopString);
  EXPECT_EQ(res.tokens, (std::vector<int32_t>{1, 2, 3, 4, 5}));
}

TEST(Generate, ContextFullAndCancel) {
  CountingStage m(4);
  const auto res = generate(m, greedy_request({0, 1}, 10), letters());
  EXPECT_EQ(res.reason, StopReason::ContextFull);
  EXPECT_EQ(res.tokens.size(), 3u);  // positions 2 and 3 decoded, a third token sampled from pos 3
  CountingStage m2(64);
  int n = 0;
  const auto res2 = generate(m2, greedy_request({0}, 10), letters(), [&](int32_t, const std::string&) {
    return ++n < 2;
  });
  EXPECT_EQ(res2.reason, StopReason::Cancelled);
  EXPECT_EQ(res2.tokens.size(), 2u);
  CountingStage m3(4);
  EXPECT_THROW(generate(m3, greedy_request({0, 1, 2, 3}, 1), letters()), InvalidArgument);
  EXPECT_THROW(generate(m3, greedy_request({}, 1), letters()), InvalidArgument);
}

TEST(StopStringFilter, HoldsBackPossibleStarts) {
  StopStringFilter f({"</s>", "STOP"});
  EXPECT_EQ(f.push("hello <"), "hello ");
  EXPECT_EQ(f.push("/"), "");
  EXPECT_EQ(f.push("x"), "</x");
  EXPECT_EQ(f.push(" ST"), " ");
  EXPECT_EQ(f.push("OP and more"), "");
  EXPECT_TRUE(f.stopped());
  EXPECT_EQ(f.push("later"), "");
  StopStringFilter g({"ab"});
  EXPECT_EQ(g.push("xa"), "x");
  EXPECT_EQ(g.flush(), "a");
  StopStringFilter none({});
  EXPECT_EQ(none.push("abc"), "abc");
}

}  // namespace
}  // namespace pipellm
