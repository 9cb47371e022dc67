// The CUDA engine on every fixture model: logits against llama.cpp's references (the CPU
// engine's bounds), greedy continuation through GPU decode (CUDA graphs), graph replay equal to
// eager execution bit for bit, and CUDA vs CPU engine greedy tokens.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

#include "engine/cpu/cpu_model.h"
#include "engine/cuda/cuda_model.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/model_test_util.h"

namespace pipellm {
namespace {

bool is_float_model(const std::string& name) {
  return name.find("F32") != std::string::npos || name.find("F16") != std::string::npos;
}

std::unique_ptr<cuda::CudaModel> open_cuda(const std::string& name, bool graphs, int n_slots = 1, bool pdl = true) {
  cuda::CudaStageOptions opt;
  opt.pdl = pdl;
  opt.n_ctx = 256;
  opt.n_slots = n_slots;
  opt.max_batch_tokens = 64;
  opt.use_graphs = graphs;
  return cuda::CudaModel::open(test::model_path(name), opt);
}

class CudaFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaFixture, LogitsAndGreedyMatchLlamaCpp) {
  PIPELLM_REQUIRE_GPU();
  const std::string name = GetParam();
  auto model = open_cuda(name, true);
  const int V = model->config().n_vocab;
  const auto tokens = test::read_ids(test::testdata("ref/" + name + ".tokens"));
  const auto ref = test::read_f32(test::testdata("ref/" + name + ".logits.f32"));
  ASSERT_EQ(ref.size(), tokens.size() * static_cast<size_t>(V));

  // The 48 tokens in one batch (tensor-core path), all logits.
  std::vector<float> logits;
  model->stage().forward(Batch::sequence(tokens, 0, 0, true), logits);
  ASSERT_EQ(logits.size(), ref.size());
  const double bound = is_float_model(name) ? 0.01 : 0.05;
  double worst = 0.0;
  int considered = 0, agreed = 0;
  for (size_t p = 0; p < tokens.size(); ++p) {
    const float* a = logits.data() + p * V;
    const float* r = ref.data() + p * V;
    const double e = test::rel_rms(a, r, V);
    worst = std::max(worst, e);
    EXPECT_LT(e, bound) << name << " position " << p;
    if (test::top_gap(r, V) > 0.1) {
      ++considered;
      agreed += test::argmax(a, V) == test::argmax(r, V) ? 1 : 0;
    }
  }
  EXPECT_GE(agreed, 0.95 * considered) << name;

  // Re-run the prompt in chunks of 5 tokens (the mat-vec) and of 20 (the tensor-core product on
  // the quantized blocks where the stage uses it, else mat-vec launches of up to 16 rows).
  std::vector<float> small;
  double worst_mv = 0.0;
  for (const size_t chunk : {size_t{5}, size_t{20}}) {
    for (size_t c0 = 0; c0 < tokens.size(); c0 += chunk) {
      const size_t c1 = std::min(tokens.size(), c0 + chunk);
      std::vector<int32_t> part(tokens.begin() + c0, tokens.begin() + c1);
      model->stage().forward(Batch::sequence(part, static_cast<int32_t>(c0), 0, true), small);
      for (size_t p = c0; p < c1; ++p) {
        const double e = test::rel_rms(small.data() + (p - c0) * V, ref.data() + p * V, V);
        worst_mv = std::max(worst_mv, e);
        EXPECT_LT(e, bound) << name << " mat-vec path (chunks of " << chunk << "), position " << p;
      }
    }
  }

  // Greedy continuation through step() (GPU sampling, CUDA graphs).
  const auto greedy = test::read_greedy(test::testdata("ref/" + name + ".greedy"));
  int32_t cur = test::argmax(logits.data() + (tokens.size() - 1) * V, V);
  int32_t pos = static_cast<int32_t>(tokens.size());
  const int32_t slot = 0;
  size_t matched = 0;
  for (size_t step = 0; step < greedy.ids.size(); ++step) {
    if (greedy.gaps[step] < 0.1) break;
    ASSERT_EQ(cur, greedy.ids[step]) << name << ": greedy step " << step;
    ++matched;
    cur = test::decode_step(model->stage(), {cur}, {pos}, {slot})[0];
    ++pos;
  }
  std::printf("[ %s ] worst rel RMS %.4f (mat-vec path %.4f), argmax %d/%d, greedy %zu steps\n", name.c_str(), worst,
              worst_mv, agreed, considered, matched);
}

INSTANTIATE_TEST_SUITE_P(AllFixtures, CudaFixture, ::testing::ValuesIn(test::fixture_models()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

// Decodes `steps` tokens for 3 sequences from short prompts; returns every step's logits.
std::vector<float> run_decode(cuda::CudaModel& m, int steps, std::vector<int32_t>& ids_out) {
  const int n = 3;
  std::vector<float> all, step_logits, tmp;
  std::vector<int32_t> cur(n), pos(n), slot(n);
  for (int s = 0; s < n; ++s) {
    std::vector<int32_t> prompt = {1, 100 + s, 200 + 7 * s, 300 + s};
    prompt.resize(4 + s);  // different lengths
    for (size_t i = 4; i < prompt.size(); ++i) prompt[i] = 50 + static_cast<int32_t>(i);
    m.stage().forward(Batch::sequence(prompt, 0, s), tmp);
    cur[s] = test::argmax(tmp.data(), m.config().n_vocab);
    pos[s] = static_cast<int32_t>(prompt.size());
    slot[s] = s;
  }
  for (int it = 0; it < steps; ++it) {
    const std::vector<int32_t> next = test::decode_step(m.stage(), cur, pos, slot);
    m.stage().last_logits(n, step_logits);
    all.insert(all.end(), step_logits.begin(), step_logits.end());
    ids_out.insert(ids_out.end(), next.begin(), next.end());
    cur = next;
    for (auto& p : pos) ++p;
  }
  return all;
}

TEST(CudaEngine, GraphReplayEqualsEagerBitForBit) {
  PIPELLM_REQUIRE_GPU();
  for (const std::string name : {"tiny-llama-Q4_K_M", "tiny-qwen3-Q8_0", "tiny-llama-F16"}) {
    // Graphs with programmatic dependent launch against plain eager launches.
    auto g = open_cuda(name, true, 4, true), e = open_cuda(name, false, 4, false);
    std::vector<int32_t> ig, ie;
    const auto lg = run_decode(*g, 20, ig);
    const auto le = run_decode(*e, 20, ie);
    EXPECT_GT(g->stage().graphs_captured(), 0u);
    EXPECT_EQ(e->stage().graphs_captured(), 0u);
    ASSERT_EQ(lg.size(), le.size());
    EXPECT_EQ(0, std::memcmp(lg.data(), le.data(), lg.size() * sizeof(float))) << name;
    EXPECT_EQ(ig, ie) << name;
  }
}

// All logits of a long chunk: the last stage holds a decode bucket of logits rows (at least 64),
// so forward() projects 144 rows in groups of 64; each row must be its own (within the product
// paths' rounding of a stage whose buffer holds them all at once: 256 slots).
TEST(CudaEngine, AllLogitsOfALongChunkComeInGroups) {
  PIPELLM_REQUIRE_GPU();
  const std::string name = "tiny-llama-Q4_K_M";
  cuda::CudaStageOptions opt;
  opt.n_ctx = 256;
  opt.max_batch_tokens = 256;
  opt.n_slots = 1;
  auto grouped = cuda::CudaModel::open(test::model_path(name), opt);
  opt.n_slots = 256;
  auto whole = cuda::CudaModel::open(test::model_path(name), opt);
  const int V = grouped->config().n_vocab;
  std::vector<int32_t> tokens = test::read_ids(test::testdata("ref/" + name + ".tokens"));
  while (tokens.size() < 144) tokens.insert(tokens.end(), tokens.begin(), tokens.begin() + 16);
  tokens.resize(144);
  std::vector<float> a, b;
  grouped->stage().forward(Batch::sequence(tokens, 0, 0, true), a);
  whole->stage().forward(Batch::sequence(tokens, 0, 0, true), b);
  ASSERT_EQ(a.size(), tokens.size() * static_cast<size_t>(V));
  ASSERT_EQ(b.size(), a.size());
  for (size_t p = 0; p < tokens.size(); ++p) {
    EXPECT_LT(test::rel_rms(a.data() + p * V, b.data() + p * V, V), 0.02) << "position " << p;
  }
}

TEST(CudaEngine, GreedyTokensMatchCpuEngine) {
  PIPELLM_REQUIRE_GPU();
  for (const std::string name : {"tiny-llama-Q4_K_M", "tiny-llama-Q8_0", "tiny-qwen2-Q4_K_M", "tiny-qwen3-Q4_K_M",
                                 "tiny-tied-Q8_0", "tiny-llama-F32"}) {
    CpuModelOptions copt;
    copt.n_threads = 4;
    copt.stage.n_ctx = 256;
    auto cpu = CpuModel::open(test::model_path(name), copt);
    auto gpu = open_cuda(name, true);
    const int V = cpu->config().n_vocab;
    const auto tokens = test::read_ids(test::testdata("ref/" + name + ".tokens"));
    std::vector<float> lc, lg;
    cpu->stage().forward(Batch::sequence(tokens, 0, 0), lc);
    gpu->stage().forward(Batch::sequence(tokens, 0, 0), lg);
    // Teacher-forced: both engines consume the CPU's greedy token; the GPU's sampled token must
    // equal the CPU's argmax wherever the CPU's top-1/top-2 gap exceeds 0.1.
    int32_t pos = static_cast<int32_t>(tokens.size());
    int32_t tg = test::argmax(lg.data(), V);
    int considered = 0, agreed = 0;
    for (int step = 0; step < 32; ++step) {
      const int32_t tc = test::argmax(lc.data(), V);
      if (test::top_gap(lc.data(), V) > 0.1) {
        ++considered;
        agreed += tg == tc ? 1 : 0;
      }
      const int32_t slot = 0;
      tg = test::decode_step(gpu->stage(), {tc}, {pos}, {slot})[0];
      cpu->stage().forward(Batch::sequence({tc}, pos, 0), lc);
      ++pos;
    }
    std::printf("[ %s ] CUDA greedy token == CPU argmax at %d/%d steps with gap > 0.1\n", name.c_str(), agreed,
                considered);
    EXPECT_GT(considered, 0) << name;
    EXPECT_GE(agreed, 0.95 * considered) << name;
  }
}

}  // namespace
}  // namespace pipellm
