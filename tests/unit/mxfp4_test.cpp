// MXFP4 (ggml type 39) on the CPU. References written here, independent of the kernels:
//   - the format: OCP E2M1 values (sign, magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6) times the E8M0
//     scale 2^(e - 127), computed with ldexp in double;
//   - the quantizer: blocks whose scale and codes are worked out by hand below, and values that
//     MXFP4 represents exactly (the gpt-oss fixture's experts) coming back unchanged;
//   - the dot products and matmul: float64 sums over the dequantized weights.
// The fixture tensors themselves are checked against llama.cpp's values in dequantize_test.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "engine/model_gen/quant_mix.h"
#include "engine/model_gen/requantize.h"
#include "engine/util/thread_pool.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/quantize.h"
#include "kernels/cpu/quantize_activations.h"
#include "kernels/cpu/vec_dot.h"
#include "kernels/cpu/vec_dot_q8.h"
#include "tests/unit/matmul_test_util.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

constexpr size_t kBlockBytes = 17;

// The OCP definition of code q under scale byte e.
double ocp_value(int q, int e) {
  static const double kE2M1[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};
  const double mag = std::ldexp(kE2M1[q & 7], e - 127);
  return (q & 8) ? -mag : mag;
}

// One block: scale byte e, element j < 16 in the low nibble of byte j, j >= 16 in the high one.
std::vector<uint8_t> make_block(int e, const int (&codes)[32]) {
  std::vector<uint8_t> b(kBlockBytes);
  b[0] = static_cast<uint8_t>(e);
  for (int j = 0; j < 16; ++j) b[1 + j] = static_cast<uint8_t>(codes[j] | (codes[j + 16] << 4));
  return b;
}

std::vector<float> dequantize(const std::vector<uint8_t>& bytes, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  dequantize_row(TensorType::MXFP4, bytes.data(), y.data(), n);
  return y;
}

std::vector<uint8_t> quantize(const std::vector<float>& x) {
  const auto n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> q(tensor_row_bytes(TensorType::MXFP4, n));
  EXPECT_EQ(quantize_row(TensorType::MXFP4, x.data(), q.data(), n), q.size());
  return q;
}

// Random MXFP4 rows: every code, scales 2^-18 .. 2^2 (weights of ordinary magnitude).
std::vector<uint8_t> random_rows(int64_t n, int64_t rows, std::mt19937& rng) {
  std::vector<uint8_t> w(tensor_row_bytes(TensorType::MXFP4, n) * static_cast<size_t>(rows));
  for (auto& b : w) b = static_cast<uint8_t>(rng());
  for (size_t i = 0; i < w.size(); i += kBlockBytes) w[i] = static_cast<uint8_t>(110 + rng() % 21);
  return w;
}

std::vector<float> gaussian(int64_t n, std::mt19937& rng, float sigma = 1.0f) {
  std::normal_distribution<float> g(0.0f, sigma);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = g(rng);
  return x;
}

TEST(Mxfp4Format, Geometry) {
  const auto& info = tensor_type_info(TensorType::MXFP4);
  EXPECT_STREQ(info.name, "MXFP4");
  EXPECT_EQ(info.block_size, 32);
  EXPECT_EQ(info.block_bytes, kBlockBytes);
  EXPECT_TRUE(info.can_dequantize);
  EXPECT_EQ(tensor_type_info(39u)->name, std::string("MXFP4"));
  EXPECT_EQ(tensor_type_from_name("mxfp4"), TensorType::MXFP4);
  EXPECT_EQ(tensor_row_bytes(TensorType::MXFP4, 2880), 90u * kBlockBytes);  // gpt-oss's width
  EXPECT_TRUE(can_quantize(TensorType::MXFP4));
}

// Every code under scales from the subnormal ones (e = 0, 1) to the largest (e = 255, where
// 6 * 2^128 overflows to inf in float as in double).
TEST(Mxfp4Format, DecodesTheOcpDefinition) {
  int codes[32];
  for (int j = 0; j < 32; ++j) codes[j] = j < 16 ? j : 31 - j;  // all 16 codes, in both nibbles
  for (int e : {0, 1, 2, 3, 100, 126, 127, 128, 129, 200, 253, 254, 255}) {
    const auto y = dequantize(make_block(e, codes), 32);
    for (int j = 0; j < 32; ++j) {
      const auto want = static_cast<float>(ocp_value(codes[j], e));
      EXPECT_EQ(y[static_cast<size_t>(j)], want) << "e " << e << " element " << j << " code " << codes[j];
      if (codes[j] == 8) {
        EXPECT_FALSE(std::signbit(y[static_cast<size_t>(j)])) << "-0 decodes to +0 (e " << e << ")";
      }
    }
  }
}

// amax = 5.1: floor(log2 5.1) = 2, e = 2 - 2 + 127 = 127, element values k * 0.5 for the doubled
// table k in {0, 1, 2, 3, 4, 6, 8, 12}: the grid 0, 0.5, 1, 1.5, 2, 3, 4, 6 (and negatives).
// Each element's code by hand; "tie" marks an element halfway between two values, where the
// lower code (scanned first) wins: +0 over -0 and the smaller magnitude over the larger.
TEST(Mxfp4Quantize, HandComputedBlock) {
  struct Elem {
    float x;
    int code;
  };
  const Elem elems[32] = {
      {0.3f, 1},    {-1.7f, 11},  {5.0f, 6} /* tie 4|6 */, {0.25f, 0} /* tie 0|0.5 */,
      {-0.25f, 0} /* tie 0|-0.5 */, {-5.0f, 14} /* tie -4|-6 */, {2.4f, 4}, {2.6f, 5},
      {-3.5f, 13} /* tie -3|-4 */, {1.25f, 2} /* tie 1|1.5 */, {0.75f, 1} /* tie .5|1 */, {-0.0f, 0},
      {0.1f, 0},    {-0.9f, 10},  {5.1f, 7},   {3.2f, 5},
      {1.0f, 2},    {-1.0f, 10},  {1.5f, 3},   {-1.5f, 11},
      {2.0f, 4},    {-2.0f, 12},  {3.0f, 5},   {-3.0f, 13},
      {4.0f, 6},    {-4.0f, 14},  {0.5f, 1},   {-0.5f, 9},
      {0.2f, 0},    {-4.6f, 14},  {4.6f, 6},   {0.0f, 0},
  };
  std::vector<float> x(32);
  int codes[32];
  for (int j = 0; j < 32; ++j) {
    x[static_cast<size_t>(j)] = elems[j].x;
    codes[j] = elems[j].code;
  }
  EXPECT_EQ(quantize(x), make_block(127, codes));
}

// The scale is floor(log2f(max|x|)) - 2 + 127 with llama.cpp's log2f: for a maximum one ulp
// below 16, log2f returns exactly 4 (the true value, 4 - 8.6e-8, is nearer 4 than the float
// below), so e = 129, not the 128 of the exponent bits; one ulp below 4 it does not round up.
TEST(Mxfp4Quantize, ScaleFollowsLlamaCppLog2f) {
  struct Case {
    float amax;
    int e;
  };
  const float below16 = std::nextafter(16.0f, 0.0f), below4 = std::nextafter(4.0f, 0.0f);
  for (const Case& c : {Case{4.0f, 127}, Case{below4, 126}, Case{16.0f, 129}, Case{below16, 129}, Case{6.0f, 127},
                        Case{1.0f, 125}, Case{0.02f, 119} /* log2 = -5.64 */, Case{1e30f, 224} /* log2 = 99.66 */,
                        Case{std::ldexp(1.0f, -125), 0}, Case{std::ldexp(1.0f, -124), 1}}) {
    std::vector<float> x(32, 0.0f);
    x[7] = -c.amax;
    x[20] = c.amax / 3;
    EXPECT_EQ(quantize(x)[0], c.e) << "amax " << c.amax;
  }
  // Below 2^-125 llama.cpp's conversion to uint8_t is undefined; here the scale saturates at 0.
  std::vector<float> tiny(32, 1e-39f);
  EXPECT_EQ(quantize(tiny)[0], 0);
  // All zeros: e = 0 and every code 0. A NaN never becomes the maximum and takes code 0.
  std::vector<float> z(32, 0.0f);
  EXPECT_EQ(quantize(z), std::vector<uint8_t>(kBlockBytes, 0));
  z[3] = std::numeric_limits<float>::quiet_NaN();
  z[4] = 3.0f;
  const auto q = quantize(z);
  EXPECT_EQ(q[0], 126);  // from the 3 alone
  EXPECT_EQ(q[1 + 3] & 0xF, 0);
  EXPECT_EQ(dequantize(q, 32)[4], 3.0f);
}

// Values MXFP4 represents exactly come back exactly: a block whose largest code has magnitude
// k * 2^(e0 - 128) gets e = e0 - 3 + floor(log2 k), and every value of the block is on that
// scale's grid. Where k is 8 or 12 the scale is e0 itself and the bytes repeat too (code 8, -0,
// becomes 0). Checked on every MXFP4 tensor of the gpt-oss fixture.
TEST(Mxfp4Quantize, ExactOnRepresentableValues) {
  auto f = GgufFile::open(test::model_path("tiny-gptoss-MXFP4_MOE"));
  int tensors = 0;
  int64_t same_bytes = 0;
  for (const TensorView& t : f->tensors()) {
    if (t.type != TensorType::MXFP4) continue;
    ++tensors;
    const int64_t n = t.ne[0];
    for (int64_t r = 0; r < t.n_rows(); ++r) {
      const std::vector<uint8_t> orig(t.row(r), t.row(r) + t.row_bytes());
      const auto x = dequantize(orig, n);
      const auto q = quantize(x);
      ASSERT_EQ(dequantize(q, n), x) << t.name << " row " << r;
      for (size_t b = 0; b < orig.size(); b += kBlockBytes) {
        int kmax = 0;
        for (size_t j = 1; j < kBlockBytes; ++j) kmax = std::max({kmax, orig[b + j] & 7, orig[b + j] >> 4 & 7});
        if (kmax < 6) continue;  // codes 6, 7: magnitudes 8, 12
        for (size_t j = 0; j < kBlockBytes; ++j) {
          uint8_t want = orig[b + j];
          if (j > 0 && (want & 0xF) == 8) want &= 0xF0;
          if (j > 0 && (want >> 4) == 8) want &= 0x0F;
          ASSERT_EQ(q[b + j], want) << t.name << " row " << r << " block byte " << b + j;
        }
        ++same_bytes;
      }
    }
  }
  EXPECT_EQ(tensors, 6);
  EXPECT_GT(same_bytes, 1000);
}

// Blocks are independent: an outlier changes its own block's bytes and no other's.
TEST(Mxfp4Quantize, OutlierStaysInItsBlock) {
  std::mt19937 rng(3);
  auto x = gaussian(1024, rng);
  const auto base = quantize(x);
  for (float outlier : {1e4f, -3e6f, 1e30f}) {
    x[500] = outlier;
    const auto q = quantize(x);
    const size_t own = 500 / 32 * kBlockBytes;
    EXPECT_TRUE(std::equal(q.begin(), q.begin() + static_cast<long>(own), base.begin())) << outlier;
    EXPECT_TRUE(std::equal(q.begin() + static_cast<long>(own + kBlockBytes), q.end(),
                           base.begin() + static_cast<long>(own + kBlockBytes)))
        << outlier;
    const auto y = dequantize(q, 1024);
    // The largest element lies in [8, 16) steps of the scale: at worst 4 steps above the top value 12.
    EXPECT_NEAR(y[500], outlier, 0.25 * std::fabs(outlier));
    for (float v : y) ASSERT_TRUE(std::isfinite(v)) << outlier;
  }
}

struct Float64Dot {
  double dot = 0;      // of the dequantized row with x
  double abs_dot = 0;  // sum |w_i x_i|: what float rounding errors are relative to
};

Float64Dot reference(const uint8_t* row, int64_t n, const float* x) {
  std::vector<float> w(static_cast<size_t>(n));
  dequantize_row(TensorType::MXFP4, row, w.data(), n);
  Float64Dot r;
  for (int64_t i = 0; i < n; ++i) {
    r.dot += static_cast<double>(w[static_cast<size_t>(i)]) * x[i];
    r.abs_dot += std::fabs(static_cast<double>(w[static_cast<size_t>(i)]) * x[i]);
  }
  return r;
}

TEST(Mxfp4VecDot, FloatKernelsMatchFloat64) {
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  for (VecDotIsa isa : {VecDotIsa::Scalar, VecDotIsa::Avx2}) {
    if (!vec_dot_isa_available(isa)) continue;
    const VecDotFn f = vec_dot_kernel(TensorType::MXFP4, isa);
    ASSERT_NE(f, nullptr) << (isa == VecDotIsa::Avx2 ? "avx2" : "scalar");
    for (int64_t n : {32, 256, 2880, 4096}) {
      const auto row = random_rows(n, 1, rng);
      const auto x = gaussian(n, rng);
      const Float64Dot ref = reference(row.data(), n, x.data());
      EXPECT_LE(std::fabs(f(row.data(), x.data(), n) - ref.dot), 1e-5 * ref.abs_dot)
          << (isa == VecDotIsa::Avx2 ? "avx2" : "scalar") << " n " << n << " seed " << seed;
    }
  }
}

// The integer kernels multiply the 8-bit activations (act_quant_for(MXFP4) = 32-blocks): exact
// integer sums per block, so only the float rounding of the block totals separates them from a
// float64 dot with the rounded activations.
TEST(Mxfp4VecDot, IntegerKernelsMatchFloat64) {
  ASSERT_EQ(act_quant_for(TensorType::MXFP4), ActQuant::Q8x32);
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  const int64_t n = 2880;
  const size_t xb = act_quant_bytes(ActQuant::Q8x32, n);
  const auto row = random_rows(n, 1, rng);
  std::vector<uint8_t> xq(xb * 5);
  std::vector<std::vector<float>> rounded;
  for (int v = 0; v < 5; ++v) {
    const auto x = gaussian(n, rng, v % 2 ? 1.0f : 30.0f);
    quantize_activations(ActQuant::Q8x32, x.data(), n, xq.data() + v * xb);
    std::vector<float> r(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) r[static_cast<size_t>(i)] = act_quant_value(ActQuant::Q8x32, xq.data() + v * xb, i);
    rounded.push_back(r);
  }
  for (VecDotIsa isa : {VecDotIsa::Scalar, VecDotIsa::Avx2}) {
    if (!vec_dot_isa_available(isa)) continue;
    const VecDotQ8Kernels k = vec_dot_q8_kernels(TensorType::MXFP4, isa);
    ASSERT_NE(k.one, nullptr);
    std::vector<float> out(5);
    k.tokens(row.data(), xq.data(), xb, 5, n, out.data());
    for (int v = 0; v < 5; ++v) {
      const Float64Dot ref = reference(row.data(), n, rounded[static_cast<size_t>(v)].data());
      const float one = k.one(row.data(), xq.data() + v * xb, n);
      EXPECT_LE(std::fabs(one - ref.dot), 1e-5 * ref.abs_dot) << "vector " << v << " seed " << seed;
      EXPECT_EQ(out[static_cast<size_t>(v)], one) << "several vectors in one pass, vector " << v;
    }
  }
}

// Every weight at +-12 (the largest code) against activations at +-127: the AVX2 kernel's int16
// pair sums (at most 2 * 12 * 127) must not saturate.
TEST(Mxfp4VecDot, ExtremeCodesDoNotSaturate) {
  const int64_t n = 512;
  std::mt19937 rng(5);
  for (uint8_t byte : {uint8_t{0x77}, uint8_t{0xFF}, uint8_t{0x7F}}) {
    std::vector<uint8_t> row(tensor_row_bytes(TensorType::MXFP4, n), byte);
    for (size_t i = 0; i < row.size(); i += kBlockBytes) row[i] = 120;
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = (rng() & 1) ? 1.0f : -1.0f;
    std::vector<uint8_t> xq(act_quant_bytes(ActQuant::Q8x32, n));
    quantize_activations(ActQuant::Q8x32, x.data(), n, xq.data());
    for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(i)] = act_quant_value(ActQuant::Q8x32, xq.data(), i);
    const Float64Dot ref = reference(row.data(), n, x.data());
    for (VecDotIsa isa : {VecDotIsa::Scalar, VecDotIsa::Avx2}) {
      const VecDotQ8Fn f = vec_dot_q8_kernel(TensorType::MXFP4, isa);
      if (f == nullptr) continue;
      EXPECT_LE(std::fabs(f(row.data(), xq.data(), n) - ref.dot), 1e-6 * ref.abs_dot) << int{byte};
    }
  }
}

// matmul on every expert of a gpt-oss expert stack (3-D: [n_in, n_out, n_expert], each expert a
// matrix of n_out rows) against float64 products with the float activations: few tokens take
// the integer kernels on three 8-bit parts (float accuracy), many take the float tiles.
TEST(Mxfp4Matmul, ExpertsMatchFloat64) {
  auto f = GgufFile::open(test::model_path("tiny-gptoss-MXFP4_MOE"));
  const TensorView& t = f->tensor("blk.1.ffn_gate_exps.weight");
  ASSERT_EQ(t.type, TensorType::MXFP4);
  ASSERT_EQ(t.n_dims, 3);
  const int64_t n = t.ne[0], rows = t.ne[1], experts = t.ne[2];
  std::mt19937 rng(11);
  for (int64_t e = 0; e < experts; ++e) {
    const uint8_t* w = t.data + static_cast<size_t>(e * rows) * t.row_bytes();
    for (int64_t T : {1, 3, 4, 9}) {
      const auto x = gaussian(T * n, rng);
      for (int nth : {1, 3}) {
        const std::vector<float> y = test::run_matmul(TensorType::MXFP4, w, t.row_bytes(), rows, n, x, T, 3, nth);
        for (int64_t tok = 0; tok < T; ++tok) {
          for (int64_t r = 0; r < rows; ++r) {
            const Float64Dot ref = reference(w + static_cast<size_t>(r) * t.row_bytes(), n, x.data() + tok * n);
            ASSERT_LE(std::fabs(y[static_cast<size_t>(tok * rows + r)] - ref.dot), 1e-5 * ref.abs_dot)
                << "expert " << e << " tokens " << T << " threads " << nth << " token " << tok << " row " << r;
          }
        }
      }
    }
  }
}

// llama-quantize's MXFP4_MOE mix (general.file_type 38): expert stacks (3-D, more than one
// expert) in MXFP4, every other matrix (the output head included) in Q8_0, vectors in F32.
TEST(Mxfp4FileType, ExpertsGetMxfp4) {
  const auto ft = file_type_from_name("mxfp4_moe");
  ASSERT_TRUE(ft.has_value());
  EXPECT_EQ(ft->gguf_id, 38u);
  const auto type = [&](const char* name, std::vector<int64_t> ne) {
    return choose_tensor_type(name, ne, 2, *ft, true);
  };
  EXPECT_EQ(type("blk.0.ffn_up_exps.weight", {2880, 2880, 32}), TensorType::MXFP4);
  EXPECT_EQ(type("blk.0.ffn_up_exps.weight", {2880, 2880, 1}), TensorType::Q8_0);
  EXPECT_EQ(type("blk.0.attn_q.weight", {2880, 4096}), TensorType::Q8_0);
  EXPECT_EQ(type("output.weight", {2880, 201088}), TensorType::Q8_0);
  EXPECT_EQ(type("token_embd.weight", {2880, 201088}), TensorType::Q8_0);
  EXPECT_EQ(type("blk.0.attn_norm.weight", {2880}), TensorType::F32);
}

// `pipellm quantize IN OUT MXFP4_MOE` on the gpt-oss fixture: the expert stacks are re-encoded
// (dequantized, quantized again) into MXFP4 and, their values being representable, decode to the
// same floats as the original.
TEST(Mxfp4FileType, RequantizeKeepsExpertValues) {
  auto in = GgufFile::open(test::model_path("tiny-gptoss-MXFP4_MOE"));
  const std::string path = ::testing::TempDir() + "/pipellm_mxfp4_requantize_test.gguf";
  ThreadPool pool(2);
  requantize_model(*in, *file_type_from_name("MXFP4_MOE"), path, pool);
  auto out = GgufFile::open(path);
  int stacks = 0;
  for (const TensorView& t : in->tensors()) {
    if (t.type != TensorType::MXFP4) continue;
    const TensorView& u = out->tensor(t.name);
    ASSERT_EQ(u.type, TensorType::MXFP4) << t.name;
    ASSERT_EQ(u.nbytes, t.nbytes) << t.name;
    for (int64_t r = 0; r < t.n_rows(); ++r) {
      std::vector<float> a(static_cast<size_t>(t.ne[0])), b(a.size());
      dequantize_row(TensorType::MXFP4, t.row(r), a.data(), t.ne[0]);
      dequantize_row(TensorType::MXFP4, u.row(r), b.data(), t.ne[0]);
      ASSERT_EQ(a, b) << t.name << " row " << r;
    }
    ++stacks;
  }
  EXPECT_EQ(stacks, 6);
  EXPECT_EQ(out->tensor("blk.0.attn_q.weight").type, TensorType::Q8_0);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace pipellm
