// The device memory report (engine/cuda/device_memory.h) against independent figures: weights
// against the tensors' bytes in the file, the KV cache and recurrent state against the config's
// formula, the stage total against cudaMemGetInfo, the scratch against the estimate auto-fit plans
// with; and auto-fit (engine/cuda/stage_fit.h) on a device whose free memory is made short by
// holding the rest.
#include <gtest/gtest.h>

#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/cuda/stage_fit.h"
#include "engine/gguf/gguf_file.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/cli_run.h"
#include "tests/unit/model_test_util.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

struct Model {
  std::unique_ptr<GgufFile> file;
  ModelConfig c;
  ModelWeights w;
};

Model load(const std::string& path) {
  Model m;
  m.file = GgufFile::open(path);
  m.c = ModelConfig::from_gguf(*m.file);
  m.w = ModelWeights::load(*m.file, m.c, LayerRange::all(m.c), true, true);
  return m;
}

std::string default_model() { return std::string(PIPELLM_SOURCE_DIR) + "/models/default.gguf"; }

cuda::CudaStageOptions options() {
  cuda::CudaStageOptions o;
  o.n_ctx = 512;
  o.n_slots = 2;
  o.max_batch_tokens = 64;
  return o;
}

uint64_t used_bytes() {
  size_t free_bytes = 0, total = 0;
  PIPELLM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  return total - free_bytes;
}

uint64_t free_bytes() {
  size_t f = 0, total = 0;
  PIPELLM_CUDA_CHECK(cudaMemGetInfo(&f, &total));
  return f;
}

int sm_count() {
  int n = 0;
  PIPELLM_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, 0));
  return n;
}

// The bytes the file's tensors take on the device: matrices as stored, 1-D tensors as f32, each
// tensor once (a tied head is the embedding). Streamed layers' matrices and host-read embeddings
// are left out.
uint64_t tensor_bytes(const ModelWeights& w, const std::vector<bool>& streamed, bool embeddings_in_host) {
  std::set<const TensorView*> seen;
  uint64_t total = 0;
  const auto add = [&](const TensorView* t, bool matrix) {
    if (t == nullptr || !seen.insert(t).second) return;
    total += matrix ? t->nbytes : static_cast<uint64_t>(t->n_elements()) * sizeof(float);
  };
  for (size_t i = 0; i < w.layers.size(); ++i) {
    for (LayerTensor r : all_layer_tensors()) {
      if (!is_matrix(r)) add(w.layers[i][r], false);
      else if (streamed.empty() || !streamed[i]) add(w.layers[i][r], true);
    }
  }
  if (!embeddings_in_host) add(w.token_embd, true);
  add(w.output, true);
  add(w.output_norm, false);
  add(w.rope_freqs, false);
  add(w.per_layer_token_embd, true);
  add(w.per_layer_model_proj, true);
  add(w.per_layer_proj_norm, false);
  return total;
}

class DeviceMemoryReport : public ::testing::TestWithParam<std::string> {};

TEST_P(DeviceMemoryReport, MatchesTensorsAndKvFormula) {
  PIPELLM_REQUIRE_GPU();
  const Model m = load(test::model_path(GetParam()));
  const cuda::CudaStageOptions o = options();
  PIPELLM_CUDA_CHECK(cudaSetDevice(0));
  PIPELLM_CUDA_CHECK(cudaDeviceSynchronize());
  const uint64_t before = used_bytes();
  cuda::CudaStage st(m.c, m.w, true, true, o);
  const uint64_t grown = used_bytes() - before;
  const cuda::DeviceMemoryReport r = st.memory_report();

  EXPECT_EQ(r.weight_bytes, tensor_bytes(m.w, {}, false));
  EXPECT_EQ(r.f16_bytes, 0u);
  EXPECT_EQ(r.ring_bytes, 0u);
  EXPECT_EQ(r.layers_streamed, 0);
  // KV: per layer and slot, rows (all positions, a window's ring, none for recurrent or shared
  // layers) of K and V in f16; DeltaNet layers a fixed state per slot instead.
  uint64_t kv = 0, recurrent = 0;
  for (int il = 0; il < m.c.n_layer; ++il) {
    const uint64_t rows = static_cast<uint64_t>(m.c.kv_rows(il, o.n_ctx, st.max_step_tokens()));
    kv += static_cast<uint64_t>(o.n_slots) * rows * static_cast<uint64_t>(m.c.k_dim(il) + m.c.v_dim(il)) * 2;
    recurrent += static_cast<uint64_t>(o.n_slots) * static_cast<uint64_t>(m.c.state_floats(il)) * sizeof(float);
  }
  EXPECT_EQ(r.kv_bytes, kv);
  EXPECT_EQ(r.recurrent_bytes, recurrent);
  EXPECT_EQ(r.cublas_bytes, 32 * kMiB);
  // Auto-fit plans with the estimate: it must be what the constructor allocates.
  EXPECT_EQ(cuda::estimate_scratch_bytes(m.c, m.w, true, o, sm_count()), r.scratch_bytes());
  EXPECT_EQ(r.graphs, 0u);
  EXPECT_EQ(r.graph_bytes, 0u);
  // The device grew by at least what the report names (slack: the driver may hand out small
  // blocks from pages an earlier test freed).
  EXPECT_GE(grown + 8 * kMiB, r.total()) << "grown " << grown << ", report " << r.total();
  EXPECT_GT(r.device_total, 0u);
  EXPECT_GE(r.device_total - r.device_free, r.total());
  const std::string text = r.format();
  EXPECT_EQ(text.rfind("cuda:0 memory (layers [0, " + std::to_string(m.c.n_layer) + ") +embeddings +output):", 0), 0u)
      << text;
  std::printf("[ %s ] device grew %llu bytes, report total %llu\n%s\n", GetParam().c_str(),
              static_cast<unsigned long long>(grown), static_cast<unsigned long long>(r.total()), text.c_str());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DeviceMemoryReport,
                         ::testing::Values("tiny-llama-Q4_K_M", "tiny-tied-Q8_0", "tiny-gemma3-Q4_K_M",
                                           "tiny-qwen3moe-Q4_K_M", "tiny-qwen35-Q4_K_M"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

TEST(DeviceMemoryReport, StreamedStageCountsResidentWeightsAndRing) {
  PIPELLM_REQUIRE_GPU();
  const Model m = load(default_model());
  cuda::CudaStageOptions o = options();
  o.streaming.min_streamed_layers = 3;
  cuda::CudaStage st(m.c, m.w, true, true, o);
  ASSERT_NE(st.streamed(), nullptr);
  const VramPlan& p = st.streamed()->plan();
  const cuda::DeviceMemoryReport r = st.memory_report();
  EXPECT_EQ(r.layers_streamed, 3);
  EXPECT_EQ(r.layers, m.c.n_layer);
  EXPECT_EQ(r.weight_bytes, tensor_bytes(m.w, p.streamed, p.embeddings_in_host));
  EXPECT_EQ(r.ring_slots, p.slots);
  EXPECT_EQ(r.ring_bytes, p.ring_bytes);
  EXPECT_EQ(r.host_pinned_bytes, st.streamed()->host_bytes());
  EXPECT_NE(r.format().find("3 of 6 layers streamed"), std::string::npos) << r.format();
}

TEST(DeviceMemoryReport, GraphsAreCountedAsCaptured) {
  PIPELLM_REQUIRE_GPU();
  const Model m = load(default_model());
  cuda::CudaStage st(m.c, m.w, true, true, options());
  const uint64_t before = st.memory_report().total();
  test::decode_step(st, {5, 9}, {0, 0}, {0, 1});  // batch bucket 2, context 512: one graph
  test::decode_step(st, {6, 10}, {1, 1}, {0, 1});  // same bucket: replayed
  cuda::DeviceMemoryReport r = st.memory_report();
  EXPECT_EQ(r.graphs, 1u);
  EXPECT_EQ(r.total(), before + r.graph_bytes);
  std::printf("one decode graph (2 rows): %llu bytes\n", static_cast<unsigned long long>(r.graph_bytes));
  st.set_pdl(false);  // drops the graphs
  r = st.memory_report();
  EXPECT_EQ(r.graphs, 0u);
  EXPECT_EQ(r.graph_bytes, 0u);
}

TEST(AutoFit, FitsWholeOnAnIdleDevice) {
  PIPELLM_REQUIRE_GPU();
  const Model m = load(default_model());
  cuda::CudaStageOptions o = options();
  const VramFit f = cuda::fit_stage_options(m.c, m.w, o, true, {});
  EXPECT_EQ(f.mode, VramFitMode::Resident);
  EXPECT_EQ(o.streaming.vram_budget, 0u);
  EXPECT_EQ(o.streaming.min_streamed_layers, 0);
  EXPECT_EQ(f.message, "");

  std::vector<std::string> logged;
  cuda::StageFitOptions fit;
  fit.log = [&](const std::string& s) { logged.push_back(s); };
  const auto st = cuda::open_fitted_stage(m.c, m.w, true, true, options(), fit);
  ASSERT_EQ(logged.size(), 1u);  // the memory block only: nothing to decide
  EXPECT_EQ(logged[0].rfind("cuda:0 memory (layers [0, 6) +embeddings +output):", 0), 0u) << logged[0];
  EXPECT_EQ(st->streamed(), nullptr);

  fit.gpu_layers = 4;  // -ngl 4: taken as is
  logged.clear();
  const auto ngl = cuda::open_fitted_stage(m.c, m.w, true, true, options(), fit);
  ASSERT_NE(ngl->streamed(), nullptr);
  EXPECT_EQ(ngl->memory_report().layers_streamed, 2);
}

// Holds all but `leave` bytes of the device's free memory (as near as the allocator allows).
class Hog {
 public:
  void leave(uint64_t bytes) {
    buf_.resize(0);
    const uint64_t f = free_bytes();
    ASSERT_GT(f, bytes);
    buf_.resize(f - bytes);
  }

 private:
  cuda::DeviceBuffer<uint8_t> buf_;
};

TEST(AutoFit, StreamsWhenFreeMemoryIsShort) {
  PIPELLM_REQUIRE_GPU();
  const Model m = load(default_model());
  std::vector<float> ref, got;
  const std::vector<int32_t> prompt = {1, 17, 300, 42, 7, 99, 1000, 5};
  {
    cuda::CudaStage st(m.c, m.w, true, true, options());
    st.forward(Batch::sequence(prompt, 0, 0, true), ref);
  }
  cuda::CudaStageOptions probe = options();
  const VramFit whole = cuda::fit_stage_options(m.c, m.w, probe, true, {});
  ASSERT_EQ(whole.mode, VramFitMode::Resident);
  const uint64_t scratch = whole.needed_bytes - whole.plan.device_bytes;
  const uint64_t minimum = whole.plan.minimum_budget + scratch;
  ASSERT_LT(minimum, whole.needed_bytes);
  // Leave the margin (512 MiB while under 25 GiB are free) and halfway between the least the
  // stage can hold and all of it; corrected for where the allocator rounded.
  const uint64_t target = 512 * kMiB + (minimum + whole.needed_bytes) / 2;
  Hog hog;
  VramFit f;
  cuda::CudaStageOptions o;
  uint64_t leave = target;
  for (int attempt = 0; attempt < 8; ++attempt) {
    hog.leave(leave);
    o = options();
    try {
      f = cuda::fit_stage_options(m.c, m.w, o, true, {});
    } catch (const InvalidArgument&) {
      f.mode = VramFitMode::UserChoice;  // too little left: leave more
    }
    if (f.mode == VramFitMode::AutoStreamed) break;
    // Where the allocator rounded the hold: move by what the free memory missed the target.
    const int64_t missed = static_cast<int64_t>(target) - static_cast<int64_t>(free_bytes());
    leave = static_cast<uint64_t>(static_cast<int64_t>(leave) + missed);
  }
  ASSERT_EQ(f.mode, VramFitMode::AutoStreamed) << "could not leave between " << minimum << " and "
                                               << whole.needed_bytes << " bytes usable";
  EXPECT_GT(f.plan.n_streamed(), 0);
  EXPECT_EQ(o.streaming.vram_budget, f.budget);
  EXPECT_LE(f.needed_bytes, f.usable_bytes);
  EXPECT_EQ(f.message.rfind("auto-fit: " + std::to_string(f.plan.n_resident()) + " of 6 layers resident, ", 0), 0u)
      << f.message;
  std::printf("%s\n", f.message.c_str());

  cuda::CudaStage st(m.c, m.w, true, true, o);
  EXPECT_EQ(st.memory_report().layers_streamed, f.plan.n_streamed());
  EXPECT_LE(st.memory_report().total(), f.needed_bytes);
  st.forward(Batch::sequence(prompt, 0, 0, true), got);
  ASSERT_EQ(got.size(), ref.size());
  EXPECT_LT(test::rel_rms(got.data(), ref.data(), ref.size()), 1e-5);
}

TEST(AutoFit, NothingFitsNamesTheSizes) {
  PIPELLM_REQUIRE_GPU();
  const Model m = load(default_model());
  cuda::CudaStageOptions probe = options();
  const VramFit whole = cuda::fit_stage_options(m.c, m.w, probe, true, {});
  const uint64_t minimum = whole.plan.minimum_budget + (whole.needed_bytes - whole.plan.device_bytes);
  Hog hog;
  hog.leave(512 * kMiB + minimum / 2);
  cuda::CudaStageOptions o = options();
  try {
    cuda::fit_stage_options(m.c, m.w, o, true, {});
    FAIL() << "expected an error";
  } catch (const InvalidArgument& e) {
    const std::string s = e.what();
    EXPECT_NE(s.find("CUDA stage does not fit on the device: even with every layer streamed it needs "), std::string::npos)
        << s;
    EXPECT_NE(s.find("reduce the context (-c)"), std::string::npos) << s;
  }
}

TEST(AutoFit, GenerateReportsTheStagesMemory) {
  PIPELLM_REQUIRE_GPU();
  const std::string base = "generate -m " + default_model() + " --device cuda -p 'Once upon' -n 4 --temp 0 --ctx 256";
  test::RunResult r = test::run_cli(base);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("cuda:0 memory (layers [0, 6) +embeddings +output):\n  weights "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("\n  KV cache "), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("auto-fit"), std::string::npos) << r.err;  // it fits: nothing to decide
  r = test::run_cli(base + " -ngl 4");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("2 of 6 layers streamed"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pipellm
