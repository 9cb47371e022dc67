// MXFP4 on the GPU against the CPU reference (kernels/cpu, itself checked against llama.cpp's
// values in tests/unit/dequantize_test): the device layout, the f32/f16 dequantizers and the
// embedding lookup bit for bit, the mat-vec (dp4a on 8-bit activations) against float64 products,
// the gpt-oss fixture's expert stacks repacked one expert at a time, and the CUDA type switches
// refusing, by name, a type they lack. The layout and refusal tests need no GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/gguf/gguf_file.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/matvec_quant.h"
#include "kernels/cuda/mmq.h"
#include "kernels/cuda/weight_layout.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

constexpr TensorType kMx = TensorType::MXFP4;
constexpr size_t kBlockBytes = 17;

// Random MXFP4 blocks: every code, scale bytes uniform in [e_lo, e_hi].
std::vector<uint8_t> mxfp4_blocks(int64_t n_blocks, int e_lo, int e_hi) {
  std::vector<uint8_t> b(static_cast<size_t>(n_blocks) * kBlockBytes);
  for (auto& x : b) x = static_cast<uint8_t>(test::rng()());
  for (size_t i = 0; i < b.size(); i += kBlockBytes) {
    b[i] = static_cast<uint8_t>(e_lo + static_cast<int>(test::rng()() % static_cast<uint64_t>(e_hi - e_lo + 1)));
  }
  return b;
}

template <class F>
void expect_error_naming(F&& f, const std::string& what, const char* call) {
  try {
    f();
    ADD_FAILURE() << call << ": expected an Error naming " << what;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << call << ": " << e.what();
  }
}

// [nb][16] codes, then [nb] scale bytes (weight_layout.h).
TEST(Mxfp4Cuda, LayoutIsRepacked) {
  EXPECT_TRUE(cuda::cuda_supports(kMx));
  EXPECT_TRUE(cuda::is_repacked(kMx));
  EXPECT_TRUE(cuda::matvec_uses_q8(kMx));
  std::vector<uint8_t> src(3 * kBlockBytes), dst(src.size());
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i);
  cuda::repack_for_device(kMx, src.data(), 3, dst.data());
  for (size_t b = 0; b < 3; ++b) {
    EXPECT_EQ(dst[48 + b], src[b * kBlockBytes]) << "scale of block " << b;
    for (size_t j = 0; j < 16; ++j) EXPECT_EQ(dst[16 * b + j], src[b * kBlockBytes + 1 + j]) << "block " << b;
  }
  // The int8 tensor-core kernel takes MXFP4 rows of whole 32-element blocks (gpt-oss: 2880).
  EXPECT_TRUE(cuda::mmq_supports(cuda::DeviceMatrix{kMx, 2880, 2, nullptr}));
  EXPECT_FALSE(cuda::mmq_supports(cuda::DeviceMatrix{kMx, 48, 2, nullptr}));
}

// A type the kernels lack fails with its name, before anything is launched (no GPU needed).
TEST(Mxfp4Cuda, TypeSwitchesRefuseUnknownTypesByName) {
  const TensorType t = TensorType::IQ2_XXS;
  EXPECT_FALSE(cuda::cuda_supports(t));
  std::vector<uint8_t> blocks(2 * tensor_type_info(t).block_bytes), out(blocks.size());
  expect_error_naming([&] { cuda::repack_for_device(t, blocks.data(), 2, out.data()); }, "IQ2_XXS", "repack");
  cuda::DeviceMatrix m{t, 256, 2, nullptr};
  expect_error_naming([&] { cuda::dequantize_f16(m, nullptr, nullptr); }, "IQ2_XXS", "dequantize_f16");
  expect_error_naming([&] { cuda::embed_rows(m, nullptr, 1, nullptr, cuda::Launch{}); }, "IQ2_XXS", "embed_rows");
  cuda::MatvecArgs a;
  a.w = m;
  expect_error_naming([&] { cuda::matvec(a, cuda::Launch{}); }, "IQ2_XXS", "matvec");
  cuda::MmqArgs q;
  q.w = m;
  q.n_rows = 1;
  expect_error_naming([&] { cuda::mmq(q, cuda::Launch{}); }, "IQ2_XXS", "mmq");
}

// Element for element equal to the CPU's floats (f32) and to their f16 rounding, in the 8-wide and
// the one-element kernel (an output offset by one float is not 16-byte aligned); scales from 2
// (the smallest whose values are normal floats) to 254 (values past f16's range become inf in
// both). Scale bytes 0 and 1 make subnormal scales, read as 0 under the kernels' flush-to-zero.
TEST(Mxfp4Cuda, DequantizeMatchesCpuBitForBit) {
  PIPELLM_REQUIRE_GPU();
  for (const int64_t n_in : {int64_t{512}, int64_t{96}}) {
    const int64_t n_out = 7, nb = n_out * n_in / 32;
    const auto blocks = mxfp4_blocks(nb, 2, 254);
    auto m = test::upload_matrix(kMx, n_in, n_out, blocks);
    const auto ref = test::cpu_dequant(kMx, blocks, n_in, n_out);
    for (const size_t offset : {size_t{0}, size_t{1}}) {
      cuda::DeviceBuffer<float> out(ref.size() + 1);
      cuda::DeviceBuffer<__half> out16(ref.size() + 1);
      test::poison(out);
      test::poison(out16);
      cuda::dequantize_f32(m.m, out.get() + offset, nullptr);
      cuda::dequantize_f16(m.m, out16.get() + offset, nullptr);
      const auto got = test::to_host(out, out.size());
      const auto got16 = test::to_host(out16, out16.size());
      for (size_t i = 0; i < ref.size(); ++i) {
        ASSERT_EQ(got[i + offset], ref[i]) << "n_in " << n_in << " offset " << offset << " element " << i;
        const float h = __half2float(got16[i + offset]), want = __half2float(__float2half_rn(ref[i]));
        ASSERT_TRUE(h == want || (std::isnan(h) && std::isnan(want)))
            << "f16 element " << i << ": " << h << " vs " << want;
      }
    }
    // Embedding rows, an id out of range giving zeros.
    const std::vector<int32_t> ids = {3, 0, 6, 3, 7, -1};
    auto d_ids = test::to_device(ids);
    cuda::DeviceBuffer<float> emb(ids.size() * static_cast<size_t>(n_in));
    test::poison(emb);
    cuda::embed_rows(m.m, d_ids.get(), static_cast<int>(ids.size()), emb.get(), cuda::Launch{});
    const auto e = test::to_host(emb, emb.size());
    for (size_t k = 0; k < ids.size(); ++k) {
      for (int64_t c = 0; c < n_in; ++c) {
        const float want = ids[k] >= 0 && ids[k] < n_out ? ref[static_cast<size_t>(ids[k] * n_in + c)] : 0.0f;
        ASSERT_EQ(e[k * static_cast<size_t>(n_in) + static_cast<size_t>(c)], want)
            << "id " << ids[k] << " column " << c;
      }
    }
  }
  // Subnormal scales: the CPU's value or 0 (flush to zero), never anything else.
  const auto tiny = mxfp4_blocks(8, 0, 1);
  auto m = test::upload_matrix(kMx, 64, 4, tiny);
  const auto ref = test::cpu_dequant(kMx, tiny, 64, 4);
  cuda::DeviceBuffer<float> out(ref.size());
  cuda::dequantize_f32(m.m, out.get(), nullptr);
  const auto got = test::to_host(out, out.size());
  for (size_t i = 0; i < ref.size(); ++i) ASSERT_TRUE(got[i] == ref[i] || got[i] == 0.0f) << "element " << i;
}

// The mat-vec against float64 products of the CPU's weights with the activations it was given
// (its 8-bit blocks read back and decoded): only the kernel's float rounding remains. Store, Add
// (residual) and SwiGLU; 1..16 activation rows; and the product as the middle of three segments
// of one launch has the same bits.
TEST(Mxfp4Cuda, MatvecMatchesFloat64) {
  PIPELLM_REQUIRE_GPU();
  for (const int64_t n_in : {int64_t{256}, int64_t{2880}, int64_t{14336}}) {
    const int64_t n_out = 37, nb = n_out * n_in / 32;
    const auto b1 = mxfp4_blocks(nb, 115, 125), b2 = mxfp4_blocks(nb, 115, 125);
    auto m1 = test::upload_matrix(kMx, n_in, n_out, b1), m2 = test::upload_matrix(kMx, n_in, n_out, b2);
    const auto w1 = test::cpu_dequant(kMx, b1, n_in, n_out), w2 = test::cpu_dequant(kMx, b2, n_in, n_out);
    for (const int rows : {1, 3, 8, 13, 16}) {
      for (const auto mode : {cuda::MatvecMode::Store, cuda::MatvecMode::Add, cuda::MatvecMode::Gated}) {
        const auto x = test::random_floats(static_cast<size_t>(rows * n_in));
        const auto y0 = test::random_floats(static_cast<size_t>(rows * n_out));
        auto act = test::device_activations(x, rows, n_in);
        auto d_y = test::to_device(y0);
        if (mode != cuda::MatvecMode::Add) test::poison(d_y);
        cuda::MatvecArgs a;
        a.w = m1.m;
        a.w2 = m2.m;
        a.mode = mode;
        a.n_rows = rows;
        a.x = act.x.get();
        a.xq = act.xq.get();
        a.xds = act.xds.get();
        a.y = d_y.get();
        a.y_stride = n_out;
        cuda::matvec(a, cuda::Launch{});
        const auto got = test::to_host(d_y, d_y.size());
        std::vector<double> ref(got.size());
        std::vector<float> part(got.size());
        double gate_max = 0;  // SiLU(g) turns an error e*|g| in g into a relative error ~ e*|g|
        for (int b = 0; b < rows; ++b) {
          for (int64_t r = 0; r < n_out; ++r) {
            double s1 = 0, s2 = 0;
            for (int64_t i = 0; i < n_in; ++i) {
              const double xv = act.decoded[static_cast<size_t>(b * n_in + i)];
              s1 += static_cast<double>(w1[static_cast<size_t>(r * n_in + i)]) * xv;
              s2 += static_cast<double>(w2[static_cast<size_t>(r * n_in + i)]) * xv;
            }
            const size_t k = static_cast<size_t>(b * n_out + r);
            ref[k] = s1;
            if (mode == cuda::MatvecMode::Gated) {
              const float g = static_cast<float>(s1);  // SiLU in float, as the kernel (see kernels_test)
              gate_max = std::max(gate_max, std::fabs(s1));
              ref[k] = static_cast<double>(g / (1.0f + std::exp(-g))) * s2;
            }
            part[k] = mode == cuda::MatvecMode::Add ? got[k] - y0[k] : got[k];
          }
        }
        EXPECT_LT(test::rel_err(part, ref), 1e-5 * (1.0 + gate_max))
            << "n_in " << n_in << " rows " << rows << " mode " << static_cast<int>(mode) << "; got[0] " << part[0]
            << " ref[0] " << ref[0];
        if (mode == cuda::MatvecMode::Store) {
          cuda::DeviceBuffer<float> ya(got.size()), yb(got.size()), yc(got.size());
          test::poison(ya);
          test::poison(yb);
          test::poison(yc);
          cuda::MatvecArgs f = a;
          f.w = m2.m;
          f.y = ya.get();
          f.extra[0] = {m1.m, yb.get(), n_out};
          f.extra[1] = {m2.m, yc.get(), n_out};
          f.n_extra = 2;
          cuda::matvec(f, cuda::Launch{});
          const auto fb = test::to_host(yb, yb.size());
          ASSERT_EQ(0, std::memcmp(fb.data(), got.data(), got.size() * sizeof(float))) << "rows " << rows;
          const auto fa = test::to_host(ya, ya.size()), fc = test::to_host(yc, yc.size());
          ASSERT_EQ(0, std::memcmp(fa.data(), fc.data(), fa.size() * sizeof(float))) << "rows " << rows;
        }
      }
    }
  }
}

// A gpt-oss expert stack [n_in, n_out, n_expert] uploaded as the engine does (each expert's
// blocks repacked on their own): every expert's matrix dequantizes to the CPU's floats and
// multiplies like its rows.
TEST(Mxfp4Cuda, FixtureExpertStack) {
  PIPELLM_REQUIRE_GPU();
  auto f = GgufFile::open(test::model_path("tiny-gptoss-MXFP4_MOE"));
  const TensorView& t = f->tensor("blk.0.ffn_down_exps.weight");
  ASSERT_EQ(t.type, kMx);
  const int64_t n_in = t.ne[0], n_out = t.ne[1], experts = t.ne[2];
  const size_t expert_bytes = static_cast<size_t>(n_out) * t.row_bytes();
  std::vector<uint8_t> host(t.nbytes);
  for (int64_t e = 0; e < experts; ++e) {
    cuda::repack_for_device(kMx, t.data + e * expert_bytes, n_out * n_in / 32, host.data() + e * expert_bytes);
  }
  auto dev = test::to_device(host);
  const auto x = test::random_floats(static_cast<size_t>(n_in));
  auto act = test::device_activations(x, 1, n_in);
  for (int64_t e = 0; e < experts; ++e) {
    const cuda::DeviceMatrix m{kMx, n_in, n_out, dev.get() + e * expert_bytes};
    const std::vector<uint8_t> blocks(t.data + e * expert_bytes, t.data + (e + 1) * expert_bytes);
    const auto ref = test::cpu_dequant(kMx, blocks, n_in, n_out);
    cuda::DeviceBuffer<float> out(ref.size());
    test::poison(out);
    cuda::dequantize_f32(m, out.get(), nullptr);
    ASSERT_EQ(test::to_host(out, out.size()), ref) << "expert " << e;

    cuda::DeviceBuffer<float> y(static_cast<size_t>(n_out));
    test::poison(y);
    cuda::MatvecArgs a;
    a.w = m;
    a.x = act.x.get();
    a.xq = act.xq.get();
    a.xds = act.xds.get();
    a.y = y.get();
    a.y_stride = n_out;
    cuda::matvec(a, cuda::Launch{});
    const auto got = test::to_host(y, y.size());
    std::vector<double> want(got.size());
    for (int64_t r = 0; r < n_out; ++r) {
      for (int64_t i = 0; i < n_in; ++i) {
        want[static_cast<size_t>(r)] +=
            static_cast<double>(ref[static_cast<size_t>(r * n_in + i)]) * act.decoded[static_cast<size_t>(i)];
      }
    }
    EXPECT_LT(test::rel_err(got, want), 1e-5) << "expert " << e;
  }
}

}  // namespace
}  // namespace pipellm
