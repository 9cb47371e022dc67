// CudaWeights (engine/cuda/cuda_weights.h) from fixture models holds exactly what the old
// upload produced: every matrix the host repack (repack_for_device) of the file's bytes, expert
// stacks one expert at a time, 1-D tensors as f32, resident f16 copies the dequantization of
// those bytes; the tied output shares the embedding. Prints one line of upload rate (no timing
// is asserted: the fixtures are tiny).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/cuda/cuda_stage.h"
#include "engine/cuda/cuda_weights.h"
#include "engine/gguf/gguf_file.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cuda/embedding.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

// The old path's bytes of t as n_expert matrices, each repacked on its own.
std::vector<uint8_t> host_layout(const TensorView& t, int64_t n_expert) {
  std::vector<uint8_t> out(t.nbytes);
  const size_t expert_bytes = t.nbytes / static_cast<uint64_t>(n_expert);
  const int64_t nb = t.n_rows() / n_expert * (t.ne[0] / tensor_type_info(t.type).block_size);
  for (int64_t e = 0; e < n_expert; ++e) {
    cuda::repack_for_device(t.type, t.data + e * expert_bytes, nb, out.data() + e * expert_bytes);
  }
  return out;
}

std::vector<uint8_t> read_back(const uint8_t* dev, size_t n) {
  std::vector<uint8_t> v(n);
  PIPELLM_CUDA_CHECK(cudaDeviceSynchronize());
  PIPELLM_CUDA_CHECK(cudaMemcpy(v.data(), dev, n, cudaMemcpyDeviceToHost));
  return v;
}

void expect_matrix(const TensorView* t, const cuda::CudaMatrix& m, int64_t n_expert, bool want_f16) {
  if (t == nullptr) {
    EXPECT_FALSE(m.present());
    return;
  }
  SCOPED_TRACE(t->name + " (" + tensor_type_name(t->type) + ")");
  ASSERT_TRUE(m.present());
  ASSERT_EQ(m.m.type, t->type);
  ASSERT_EQ(m.m.n_in, t->ne[0]);
  ASSERT_EQ(m.m.n_out * n_expert, t->n_rows());
  ASSERT_EQ(m.expert_bytes, t->nbytes / static_cast<uint64_t>(n_expert));
  const auto layout = host_layout(*t, n_expert);
  ASSERT_EQ(read_back(m.m.data, t->nbytes), layout);
  ASSERT_EQ(m.f16.empty(), !(want_f16 && n_expert == 1));
  if (m.f16.empty()) return;
  // The old path's f16 copy: dequantize_f16 of the host-repacked bytes.
  auto dev = test::to_device(layout);
  cuda::DeviceMatrix ref = m.m;
  ref.data = dev.get();
  cuda::DeviceBuffer<__half> f16(m.f16.size());
  cuda::dequantize_f16(ref, f16.get(), nullptr);
  ASSERT_EQ(read_back(reinterpret_cast<const uint8_t*>(m.f16.get()), m.f16.bytes()),
            read_back(reinterpret_cast<const uint8_t*>(f16.get()), f16.bytes()));
}

void expect_vector(const TensorView* t, const cuda::DeviceBuffer<float>& v) {
  if (t == nullptr) {
    EXPECT_TRUE(v.empty());
    return;
  }
  SCOPED_TRACE(t->name);
  std::vector<float> ref(static_cast<size_t>(t->n_elements()));
  dequantize_row(t->type, t->data, ref.data(), t->n_elements());
  ASSERT_EQ(v.size(), ref.size());
  ASSERT_EQ(test::to_host(v, v.size()), ref);
}

void expect_weights(const ModelConfig& c, const ModelWeights& w, const cuda::CudaWeights& cw, bool f16) {
  ASSERT_EQ(cw.layers.size(), w.layers.size());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerSpec& spec = c.layer(w.range.first + static_cast<int>(i));
    for (LayerTensor r : all_layer_tensors()) {
      if (is_matrix(r)) {
        expect_matrix(w.layers[i][r], cw.layers[i][r], is_expert_stack(r) ? spec.n_expert : 1, f16);
      } else {
        expect_vector(w.layers[i][r], cw.layers[i].vecs[static_cast<size_t>(r)]);
      }
    }
  }
  expect_matrix(w.token_embd, cw.token_embd, 1, false);
  if (w.output != nullptr && w.output == w.token_embd && !f16) {
    EXPECT_EQ(cw.output.m.data, cw.token_embd.m.data);  // tied: shared storage
    EXPECT_TRUE(cw.output.storage.empty());
  } else {
    expect_matrix(w.output, cw.output, 1, f16);
  }
  expect_vector(w.output_norm, cw.output_norm);
  expect_matrix(w.per_layer_token_embd, cw.per_layer_token_embd, 1, false);
  expect_matrix(w.per_layer_model_proj, cw.per_layer_model_proj, 1, f16);
  expect_vector(w.per_layer_proj_norm, cw.per_layer_proj_norm);
  expect_vector(w.rope_freqs, cw.rope_freqs);
}

class CudaWeightsUpload : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaWeightsUpload, HoldsTheHostRepackOfTheFile) {
  PIPELLM_REQUIRE_GPU();
  auto f = GgufFile::open(test::model_path(GetParam()));
  const ModelConfig c = ModelConfig::from_gguf(*f);
  const ModelWeights w = ModelWeights::load(*f, c, LayerRange::all(c), true, true);
  cuda::Stream s;
  // The default staging, then tiny chunks (tensors straddle chunks, chunks hold many tensors),
  // with and without resident f16 copies.
  cuda::StagedUploadOptions tiny;
  tiny.chunk_bytes = 64 * 1024 + 7;
  tiny.buffers = 3;
  for (const auto& [opt, f16] : {std::pair{cuda::StagedUploadOptions{}, false}, std::pair{tiny, false},
                                 std::pair{tiny, true}}) {
    SCOPED_TRACE("chunk " + std::to_string(opt.chunk_bytes) + (f16 ? ", resident f16" : ""));
    const cuda::CudaWeights cw(c, w, f16, s.get(), opt);
    expect_weights(c, w, cw, f16);
    if (opt.chunk_bytes == cuda::StagedUploadOptions{}.chunk_bytes && !f16) {
      std::printf("[ upload   ] %s: %.1f MB in %.1f ms, %.2f GB/s\n", GetParam().c_str(), cw.upload_bytes / 1e6,
                  cw.upload_seconds * 1e3, cw.upload_bytes / 1e9 / cw.upload_seconds);
    }
  }
}

// Q4_0 and Q6_K (llama Q4_0 / Q4_K_M), Q8_0, tied outputs, MXFP4 and Q4_K expert stacks,
// gemma4's per-layer inputs.
INSTANTIATE_TEST_SUITE_P(Fixtures, CudaWeightsUpload,
                         ::testing::Values("tiny-llama-Q4_0", "tiny-llama-Q4_K_M", "tiny-llama-Q8_0", "tiny-tied-Q8_0",
                                           "tiny-tied-Q4_K_M", "tiny-gptoss-MXFP4_MOE", "tiny-qwen3moe-Q4_K_M",
                                           "tiny-gemma4-Q4_K_M"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n) {
                             if (ch == '-') ch = '_';
                           }
                           return n;
                         });

}  // namespace
}  // namespace pipellm

namespace pipellm {
namespace {

// Which stages take the tensor-core products for 9..64 rows (host code: runs without a GPU):
// the files' tensor types decide. The MoE files keep their routers F32 (llama-quantize never
// quantizes ffn_gate_inp) and every other matrix in mmq's types; the F32 llama file has none.
TEST(StageUsesMmq, RoutersDoNotKeepMoeFilesOffMmq) {
  const auto uses = [](const std::string& name, int mmq_max_rows) {
    auto f = GgufFile::open(test::model_path(name));
    const ModelConfig c = ModelConfig::from_gguf(*f);
    const ModelWeights w = ModelWeights::load(*f, c, LayerRange::all(c), true, true);
    cuda::CudaStageOptions opt;
    opt.mmq_max_rows = mmq_max_rows;
    return cuda::stage_uses_mmq(w, true, opt);
  };
  for (const std::string name : {"tiny-qwen3moe-Q4_K_M", "tiny-llamamoe-Q4_K_M"}) {
    SCOPED_TRACE(name);
    auto f = GgufFile::open(test::model_path(name));
    const TensorView* router = f->find_tensor("blk.0.ffn_gate_inp.weight");
    ASSERT_NE(router, nullptr);
    EXPECT_EQ(router->type, TensorType::F32);
    EXPECT_TRUE(uses(name, 64));
    EXPECT_FALSE(uses(name, 0));  // mmq off by option
  }
  EXPECT_TRUE(uses("tiny-llama-Q4_K_M", 64));
  EXPECT_FALSE(uses("tiny-llama-F32", 64));  // F32 matrices: no mmq kernel
}

// Rows per dequantized slice (host code: runs without a GPU), hand-computed: gemma4-31b's gate
// (n_in 5376, n_out 21504) through the 64 MiB buffer (2^25 halves) holds 6241 rows, cut to 6144
// (48 tiles of 128); a matrix that fits stays whole; below one tile the rows are kept as they are.
TEST(DequantSlices, WholeTilesWhereAMatrixIsCut) {
  const int64_t buf = int64_t{1} << 25;
  EXPECT_EQ(cuda::CudaStage::dequant_slice_rows(buf, 5376, 21504), 6144);
  EXPECT_EQ(cuda::CudaStage::dequant_slice_rows(buf, 4096, 14336), 8192);
  EXPECT_EQ(cuda::CudaStage::dequant_slice_rows(buf, 4096, 1000), 1000);   // fits: one product
  EXPECT_EQ(cuda::CudaStage::dequant_slice_rows(buf, 5376, 6000), 6000);   // fits, not a tile multiple
  EXPECT_EQ(cuda::CudaStage::dequant_slice_rows(1000 * 300, 1000, 4096), 256);  // 300 rows: 2 tiles + 44
  EXPECT_EQ(cuda::CudaStage::dequant_slice_rows(1000 * 100, 1000, 4096), 100);  // under a tile: as it is
  EXPECT_EQ(cuda::CudaStage::dequant_slice_rows(999, 1000, 4096), 0);           // no row fits
}

}  // namespace
}  // namespace pipellm
