// Embeddings (engine/runtime/embedding.h, CpuStage::forward_hidden) checked against independent
// references: the final-norm hidden state h of a position, times the dequantized output matrix
// (output.weight, or token_embd.weight when tied) in float64, reproduces llama.cpp's logits for
// that position (within the logits tests' bound); mean pooling is the float64 mean of the
// per-position states, cls and last their first and last rows; the norms are what llama.cpp's
// embd_normalize says.
#include <gtest/gtest.h>

#include <cmath>

#include "base/error.h"
#include "engine/runtime/embedding.h"
#include "kernels/cpu/dequantize.h"
#include "tests/unit/model_test_util.h"

namespace pipellm {
namespace {

// logits[v] = sum_i W[v][i] h[i] in float64, W read from the file by name.
std::vector<float> logits_of(const GgufFile& f, const float* h, int64_t E) {
  const TensorView* w = f.find_tensor("output.weight");
  if (w == nullptr) w = f.find_tensor("token_embd.weight");  // tied
  EXPECT_NE(w, nullptr);
  EXPECT_EQ(w->ne[0], E);
  std::vector<float> row(static_cast<size_t>(E));
  std::vector<float> out(static_cast<size_t>(w->ne[1]));
  for (int64_t v = 0; v < w->ne[1]; ++v) {
    dequantize_row(w->type, w->row(v), row.data(), E);
    double s = 0.0;
    for (int64_t i = 0; i < E; ++i) s += static_cast<double>(row[static_cast<size_t>(i)]) * h[i];
    out[static_cast<size_t>(v)] = static_cast<float>(s);
  }
  return out;
}

class HiddenStateLogits : public ::testing::TestWithParam<std::string> {};

TEST_P(HiddenStateLogits, TimesTheOutputMatrixGivesLlamaCppLogits) {
  const std::string name = GetParam();
  CpuModelOptions opt;
  opt.n_threads = 2;
  opt.stage.n_ctx = 128;
  auto model = CpuModel::open(test::model_path(name), opt);
  const int V = model->config().n_vocab, E = model->config().n_embd;
  const auto tokens = test::read_ids(test::fixture_ref(name, ".tokens"));
  const auto ref = test::read_f32(test::fixture_ref(name, ".logits.f32"));
  ASSERT_EQ(ref.size(), tokens.size() * static_cast<size_t>(V));

  std::vector<float> h;
  model->stage().forward_hidden(Batch::sequence(tokens, 0, 0, /*all_logits=*/true), h);
  ASSERT_EQ(h.size(), tokens.size() * static_cast<size_t>(E));
  const double bound = name.find("F16") != std::string::npos || name.find("F32") != std::string::npos ? 0.01 : 0.05;
  // The last position (the one an embedding with last pooling uses), the first and one between.
  for (size_t p : {tokens.size() - 1, size_t{0}, tokens.size() / 2}) {
    const std::vector<float> l = logits_of(model->file(), h.data() + p * static_cast<size_t>(E), E);
    const double e = test::rel_rms(l.data(), ref.data() + p * static_cast<size_t>(V), static_cast<size_t>(V));
    EXPECT_LT(e, bound) << name << " position " << p;
  }
  // Only the flagged rows come back, in order: the last one alone equals the last row above.
  std::vector<float> last;
  model->stage().forward_hidden(Batch::sequence(tokens, 0, 0), last);
  ASSERT_EQ(last.size(), static_cast<size_t>(E));
  EXPECT_LT(test::rel_rms(last.data(), h.data() + (tokens.size() - 1) * static_cast<size_t>(E), static_cast<size_t>(E)), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HiddenStateLogits,
                         ::testing::Values("tiny-llama-F16", "tiny-llama-F32", "tiny-tied-Q8_0", "tiny-qwen3-Q8_0"),
                         [](const auto& i) {
                           std::string s = i.param;
                           for (char& c : s) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return s;
                         });

std::vector<int32_t> fixture_tokens() { return test::read_ids(test::fixture_ref("tiny-llama-F16", ".tokens")); }

std::unique_ptr<Embedder> open_embedder(std::optional<Pooling> p, int max_batch = 512) {
  EmbedderOptions o;
  o.n_ctx = 64;
  o.n_threads = 2;
  o.max_batch_tokens = max_batch;
  o.pooling = p;
  return Embedder::open(test::model_path("tiny-llama-F16"), o);
}

TEST(Embedder, PoolsAsLlamaCppDoes) {
  const auto tokens = fixture_tokens();
  const int n = static_cast<int>(tokens.size());
  auto none = open_embedder(std::nullopt);
  EXPECT_EQ(none->pooling(), Pooling::None);  // a generative model: no pooling_type key
  const int E = none->n_embd();
  const std::vector<float> h = none->hidden_states(tokens);
  ASSERT_EQ(h.size(), static_cast<size_t>(n) * E);
  const auto rows = none->embed(tokens);
  ASSERT_EQ(rows.size(), tokens.size());
  for (int t = 0; t < n; ++t) {
    EXPECT_EQ(rows[static_cast<size_t>(t)], std::vector<float>(h.begin() + t * E, h.begin() + (t + 1) * E)) << t;
  }

  auto mean = open_embedder(Pooling::Mean);
  const auto m = mean->embed(tokens);
  ASSERT_EQ(m.size(), 1u);
  ASSERT_EQ(m[0].size(), static_cast<size_t>(E));
  double err = 0.0, scale = 0.0;
  for (int i = 0; i < E; ++i) {
    double s = 0.0;
    for (int t = 0; t < n; ++t) s += h[static_cast<size_t>(t * E + i)];
    s /= n;
    err = std::max(err, std::fabs(s - m[0][static_cast<size_t>(i)]));
    scale = std::max(scale, std::fabs(s));
  }
  EXPECT_LT(err, 1e-6 * scale) << "mean pooling vs the float64 mean";

  EXPECT_EQ(open_embedder(Pooling::Cls)->embed(tokens)[0], std::vector<float>(h.begin(), h.begin() + E));
  EXPECT_EQ(open_embedder(Pooling::Last)->embed(tokens)[0], std::vector<float>(h.end() - E, h.end()));

  // Identical inputs, identical vectors; a second call does not see the first (position 0 again).
  EXPECT_EQ(mean->embed(tokens), m);
  // Chunked through the KV cache (8 tokens a step) gives the same states.
  auto chunked = open_embedder(std::nullopt, 8);
  const std::vector<float> hc = chunked->hidden_states(tokens);
  EXPECT_LT(test::rel_rms(hc.data(), h.data(), h.size()), 1e-5);
}

TEST(Embedder, RefusesWhatItCannotEmbed) {
  auto e = open_embedder(Pooling::Mean);
  EXPECT_THROW(e->embed({}), InvalidArgument);
  EXPECT_THROW(e->embed(std::vector<int32_t>(65, 1)), InvalidArgument);  // n_ctx is 64
  EXPECT_THROW(e->embed({e->n_vocab()}), InvalidArgument);
  EXPECT_THROW(open_embedder(Pooling::Rank), InvalidArgument);
  EXPECT_THROW(parse_pooling("avg"), InvalidArgument);
  EXPECT_EQ(parse_pooling("cls"), Pooling::Cls);
  EXPECT_STREQ(pooling_name(Pooling::Last), "last");
}

TEST(Embedder, NormalizesAsEmbdNormalize) {
  const std::vector<float> v0 = {3.0f, -4.0f, 0.0f, 12.0f};
  auto norm = [&](int k) {
    std::vector<float> v = v0;
    normalize_embedding(v.data(), static_cast<int64_t>(v.size()), k);
    return v;
  };
  const auto l2 = norm(2);
  double s = 0.0;
  for (float x : l2) s += static_cast<double>(x) * x;
  EXPECT_NEAR(std::sqrt(s), 1.0, 1e-6);
  EXPECT_NEAR(l2[3], 12.0 / 13.0, 1e-6);
  EXPECT_EQ(norm(-1), v0);
  EXPECT_NEAR(norm(1)[1], -4.0 / 19.0, 1e-6);
  EXPECT_NEAR(norm(0)[3], 32760.0, 1e-2);
  EXPECT_NEAR(norm(0)[0], 32760.0 * 3.0 / 12.0, 1e-2);
  const double p3 = std::cbrt(27.0 + 64.0 + 1728.0);
  EXPECT_NEAR(norm(3)[1], -4.0 / p3, 1e-6);
  std::vector<float> zero(4, 0.0f);
  normalize_embedding(zero.data(), 4, 2);
  EXPECT_EQ(zero, std::vector<float>(4, 0.0f));

  // An embedding after L2: norm 1.
  auto e = open_embedder(Pooling::Mean);
  std::vector<float> v = e->embed(fixture_tokens())[0];
  normalize_embedding(v.data(), static_cast<int64_t>(v.size()), 2);
  s = 0.0;
  for (float x : v) s += static_cast<double>(x) * x;
  EXPECT_NEAR(std::sqrt(s), 1.0, 1e-6);
}

}  // namespace
}  // namespace pipellm
