// The architectures of fixtures-arch (gemma3, phi3, qwen3moe, llama MoE, gpt-oss with MXFP4
// experts) on the CPU engine: llama.cpp's logits and greedy ids within each file's bounds
// (tests/arch_fixture_check.h); prefill equals token-by-token decode; a batch of two sequences
// equals each alone; what each recipe reads from the file.
#include <gtest/gtest.h>

#include "base/error.h"
#include "engine/cpu/cpu_model.h"
#include "tests/arch_fixture_check.h"

namespace pipellm {
namespace {

std::unique_ptr<CpuModel> open_model(const std::string& name, int n_slots = 1, int max_batch = 512) {
  CpuModelOptions opt;
  opt.n_threads = 2;
  opt.stage.n_ctx = 128;
  opt.stage.n_slots = n_slots;
  opt.stage.max_batch_tokens = max_batch;
  return CpuModel::open(test::model_path(name), opt);
}

std::string param_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string s = info.param;
  for (char& ch : s)
    if (ch == '-') ch = '_';
  return s;
}

class ArchFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(ArchFixture, MatchesLlamaCppWithinTheFileBounds) {
  auto model = open_model(GetParam());
  std::vector<float> out;
  test::check_arch_fixture(
      GetParam(), model->config().n_vocab, [&](const Batch& b, std::vector<float>& o) { model->stage().forward(b, o); },
      [&](int32_t tok, int32_t pos) {
        model->stage().forward(Batch::sequence({tok}, pos, 0), out);
        return static_cast<int32_t>(test::argmax(out.data(), out.size()));
      });
}

TEST_P(ArchFixture, PrefillEqualsDecodeAndBatchedEqualsAlone) {
  const std::string name = GetParam();
  const auto tokens = test::read_ids(test::fixture_ref(name, ".tokens"));
  const std::vector<int32_t> a(tokens.begin(), tokens.begin() + 24), b(tokens.begin() + 24, tokens.end());
  auto model = open_model(name, 2);
  const size_t V = static_cast<size_t>(model->config().n_vocab);

  std::vector<float> prefill, one;
  model->stage().forward(Batch::sequence(a, 0, 0, true), prefill);
  for (size_t p = 0; p < a.size(); ++p) {
    model->stage().forward(Batch::sequence({a[p]}, static_cast<int32_t>(p), 1), one);
    EXPECT_LT(test::rel_rms(one.data(), prefill.data() + p * V, V), 1e-3) << name << " position " << p;
  }

  // Slot 0 continues with b while slot 1 starts b alone: one batch of both.
  Batch both = Batch::sequence(b, static_cast<int32_t>(a.size()), 0, true);
  const Batch alone = Batch::sequence(b, 0, 1, true);
  both.tokens.insert(both.tokens.end(), alone.tokens.begin(), alone.tokens.end());
  both.pos.insert(both.pos.end(), alone.pos.begin(), alone.pos.end());
  both.slot.insert(both.slot.end(), alone.slot.begin(), alone.slot.end());
  both.logits.insert(both.logits.end(), alone.logits.begin(), alone.logits.end());
  std::vector<float> batched, ref_a, ref_b;
  model->stage().forward(both, batched);
  auto fresh = open_model(name, 2);
  fresh->stage().forward(Batch::sequence(tokens, 0, 0, true), ref_a);
  fresh->stage().forward(Batch::sequence(b, 0, 1, true), ref_b);
  for (size_t i = 0; i < b.size(); ++i) {
    EXPECT_LT(test::rel_rms(batched.data() + i * V, ref_a.data() + (a.size() + i) * V, V), 1e-3) << name << " row " << i;
    EXPECT_LT(test::rel_rms(batched.data() + (b.size() + i) * V, ref_b.data() + i * V, V), 1e-3)
        << name << " row " << b.size() + i;
  }
}

// Sliding-window layers keep a ring of window + step - 1 rows: with steps of 8 tokens the
// windows of gemma3 (16) and gpt-oss (16) live in rings of 23 rows, the global layers keep all
// 128; the logits of the 48-token prompt (6 chunks) equal the unchunked run's.
TEST(SlidingWindowCache, RingsHoldOnlyTheWindowAndGiveTheSameLogits) {
  for (const std::string name : {"tiny-gemma3-Q4_K_M", "tiny-gptoss-MXFP4_MOE"}) {
    const auto tokens = test::read_ids(test::fixture_ref(name, ".tokens"));
    auto full = open_model(name), ring = open_model(name, 1, 8);
    const ModelConfig& c = ring->config();
    size_t expect_bytes = 0, full_bytes = 0;
    for (int il = 0; il < c.n_layer; ++il) {
      EXPECT_EQ(ring->stage().cache().rows(il), c.layer(il).window > 0 ? 23 : 128) << name << " layer " << il;
      EXPECT_EQ(full->stage().cache().rows(il), 128);
      expect_bytes += static_cast<size_t>(ring->stage().cache().rows(il)) * 2 * 2 * static_cast<size_t>(c.k_dim());
      full_bytes += 128u * 2 * 2 * static_cast<size_t>(c.k_dim());
    }
    EXPECT_EQ(ring->stage().cache().bytes(), expect_bytes);
    EXPECT_LT(ring->stage().cache().bytes(), full_bytes);
    std::vector<float> a, b;
    full->stage().forward(Batch::sequence(tokens, 0, 0, true), a);
    ring->stage().forward(Batch::sequence(tokens, 0, 0, true), b);
    ASSERT_EQ(a.size(), b.size());
    const size_t V = static_cast<size_t>(c.n_vocab);
    for (size_t p = 0; p < tokens.size(); ++p) {
      EXPECT_LT(test::rel_rms(b.data() + p * V, a.data() + p * V, V), 1e-4) << name << " position " << p;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Arch, ArchFixture, ::testing::ValuesIn(test::arch_fixture_models()), param_name);

ModelConfig config_of(const std::string& name) {
  auto f = GgufFile::open(test::model_path(name));
  return ModelConfig::from_gguf(*f);
}

// What each recipe reads, against the fixtures README's description of the files.
TEST(ArchRecipe, Gemma3SlidingPatternRopeAndNorms) {
  const ModelConfig c = config_of("tiny-gemma3-Q4_K_M");
  EXPECT_EQ(c.arch, Arch::Gemma3);
  ASSERT_EQ(c.n_layer, 6);
  for (int il = 0; il < 5; ++il) {
    EXPECT_EQ(c.layer(il).window, 16) << il;
    EXPECT_FLOAT_EQ(c.layer(il).rope.base, 10000.0f);
    EXPECT_FLOAT_EQ(c.layer(il).rope.freq_scale, 1.0f);
  }
  EXPECT_EQ(c.layer(5).window, 0);
  EXPECT_FLOAT_EQ(c.layer(5).rope.base, 1e6f);
  EXPECT_FLOAT_EQ(c.layer(5).rope.freq_scale, 1.0f / 8.0f);
  EXPECT_FLOAT_EQ(c.embd_scale, 16.0f);
  EXPECT_EQ(c.layer(0).act, GatedAct::GeluTanh);
  EXPECT_TRUE(c.layer(0).post_attn_norm && c.layer(0).post_ffn_norm && c.layer(0).qk_norm);
  EXPECT_TRUE(c.tied_output);
}

TEST(ArchRecipe, GptOssYarnSinksAndRouting) {
  const ModelConfig c = config_of("tiny-gptoss-MXFP4_MOE");
  EXPECT_EQ(c.arch, Arch::GptOss);
  EXPECT_EQ(c.layer(0).window, 16);
  EXPECT_EQ(c.layer(1).window, 0);
  const LayerSpec& l = c.layer(1);
  EXPECT_FLOAT_EQ(l.rope.ext_factor, 1.0f);
  EXPECT_FLOAT_EQ(l.rope.freq_scale, 1.0f / 32.0f);
  EXPECT_EQ(l.rope.n_ctx_orig, 4096);
  EXPECT_TRUE(l.sinks && l.qkv_bias && l.o_bias && l.router_bias && l.expert_bias);
  EXPECT_EQ(l.routing, MoeRouting::TopKSoftmax);
  EXPECT_EQ(l.act, GatedAct::SwigluOai);
  EXPECT_EQ(l.n_expert, 8);
  EXPECT_EQ(l.n_expert_used, 4);
  EXPECT_EQ(l.n_ff, 256);
}

TEST(ArchRecipe, MoeWidthsAndFusedPhi3) {
  const ModelConfig q = config_of("tiny-qwen3moe-Q4_K_M");
  EXPECT_EQ(q.layer(0).n_ff, 256);  // expert_feed_forward_length, not feed_forward_length (768)
  EXPECT_EQ(q.layer(0).routing, MoeRouting::SoftmaxTopK);
  const ModelConfig m = config_of("tiny-llamamoe-Q4_K_M");
  EXPECT_EQ(m.arch, Arch::Llama);
  EXPECT_EQ(m.layer(0).ffn, FfnKind::Moe);
  EXPECT_EQ(m.layer(0).n_expert_used, 2);
  EXPECT_EQ(m.layer(0).n_ff, 256);
  const ModelConfig p = config_of("tiny-phi3-Q4_K_M");
  EXPECT_TRUE(p.layer(0).qkv_fused && p.layer(0).gate_up_fused);
  EXPECT_EQ(p.layer(0).window, 0);  // Phi-3's sliding_window is ignored, as llama.cpp does
}

TEST(ArchRecipe, MoeBytesPerTokenCountOnlyTheUsedExperts) {
  auto f = GgufFile::open(test::model_path("tiny-qwen3moe-Q4_K_M"));
  const ModelConfig c = ModelConfig::from_gguf(*f);
  const ModelWeights w = ModelWeights::load(*f, c, {0, 1}, false, false);
  uint64_t expect = 0;
  for (const auto& t : f->tensors()) {
    if (t.name.rfind("blk.0.", 0) != 0) continue;
    const bool experts = t.name.find("_exps") != std::string::npos;
    expect += experts ? t.nbytes / 8 * 4 : t.nbytes;
  }
  EXPECT_EQ(w.bytes_per_token(c), expect);
}

}  // namespace
}  // namespace pipellm
