// The tensor-core product on quantized blocks (kernels/cuda/mmq*.cu) against float64 products of
// the CPU's dequantized weights (kernels/cpu/dequantize) with the activations the kernel was
// given (its 8-bit blocks read back and decoded), for every type it takes, activation row counts
// around each of its column tiles (8, 16, 32, 64) and beyond, output counts that leave partial
// tiles, one K step (no split) and 16 (K split over a cluster), store and accumulate; repeated
// products are bit-identical; the same rows through the mat-vec (8 at a time) agree with it.
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "kernels/cuda/matvec_quant.h"
#include "kernels/cuda/mmq.h"
#include "tests/gpu/gpu_test_util.h"

namespace pipellm {
namespace {

class MmqPerType : public ::testing::TestWithParam<TensorType> {};

// y[b][r] = sum_i w[r][i] x[b][i] in float64: the reference of the dense products below.
std::vector<double> float64_product(const std::vector<float>& w, const std::vector<float>& x, int rows, int64_t n_in,
                                    int64_t n_out) {
  std::vector<double> y(static_cast<size_t>(rows * n_out));
  for (int b = 0; b < rows; ++b) {
    for (int64_t r = 0; r < n_out; ++r) {
      double sum = 0;
      for (int64_t i = 0; i < n_in; ++i) {
        sum += static_cast<double>(w[static_cast<size_t>(r * n_in + i)]) * x[static_cast<size_t>(b * n_in + i)];
      }
      y[static_cast<size_t>(b * n_out + r)] = sum;
    }
  }
  return y;
}

// x rounded to f16 in place, and those f16 values (the f16 variant's activations).
std::vector<__half> round_to_f16(std::vector<float>& x) {
  std::vector<__half> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    h[i] = __float2half(x[i]);
    x[i] = __half2float(h[i]);
  }
  return h;
}

// A product of w with the activation rows act (8-bit blocks; an f16 copy where the test gives one).
cuda::MmqArgs args_of(const cuda::DeviceMatrix& w, int rows, const test::DeviceActivations& act, bool add) {
  cuda::MmqArgs a;
  a.w = w;
  a.n_rows = rows;
  a.xq = act.xq.get();
  a.xds = act.xds.get();
  a.add = add;
  return a;
}

// Runs the product `a` describes into fresh outputs (poisoned, or random values it adds to, which
// are subtracted again) and returns them; a stored product runs twice and must repeat its bits
// (the cluster's partial sums add in a fixed order).
std::vector<float> run_product(cuda::MmqArgs a, int64_t n_out, const std::string& what) {
  const auto y0 = test::random_floats(static_cast<size_t>(a.n_rows * n_out));
  auto d_y = test::to_device(y0);
  if (!a.add) test::poison(d_y);
  a.y = d_y.get();
  a.y_stride = n_out;
  cuda::mmq(a, nullptr);
  auto got = test::to_host(d_y, d_y.size());
  if (a.add) {
    for (size_t k = 0; k < got.size(); ++k) got[k] -= y0[k];
  } else {
    cuda::mmq(a, nullptr);
    EXPECT_EQ(test::to_host(d_y, d_y.size()), got) << what << ": not bit-stable";
  }
  return got;
}

TEST_P(MmqPerType, MatchesFloat64) {
  PIPELLM_REQUIRE_GPU();
  const TensorType t = GetParam();
  // Formats of 32-value blocks also with rows that end inside a 256-wide K step: 2880 (gpt-oss:
  // 90 blocks, scales not 16-byte aligned) and 96 (less than one step).
  std::vector<int64_t> widths = {256, 4096};
  if (tensor_type_info(t).block_size == 32) widths.insert(widths.end(), {2880, 96});
  for (const int64_t n_in : widths) {
    const int64_t n_out = 100;  // one full 64-row tile and a partial one
    const auto blocks = test::random_blocks(t, n_out * n_in / tensor_type_info(t).block_size);
    auto m = test::upload_matrix(t, n_in, n_out, blocks);
    ASSERT_TRUE(cuda::mmq_supports(m.m)) << tensor_type_name(t);
    const auto w = test::cpu_dequant(t, blocks, n_in, n_out);
    for (const int rows : {1, 9, 16, 24, 33, 64, 100}) {
      const auto x = test::random_floats(static_cast<size_t>(rows * n_in));
      auto act = test::device_activations(x, rows, n_in);
      const std::vector<double> ref = float64_product(w, act.decoded, rows, n_in, n_out);
      // The default layout and the benchmark's ablations.
      for (const cuda::MmqTuning tu : {cuda::MmqTuning{}, cuda::MmqTuning{0, 2, false}, cuda::MmqTuning{2, 4, false},
                                       cuda::MmqTuning{0, 2, true}})
      for (const bool add : {false, true}) {
        cuda::MmqArgs a = args_of(m.m, rows, act, add);
        a.tuning = tu;
        const auto got = run_product(a, n_out, std::string(tensor_type_name(t)) + " rows " + std::to_string(rows));
        const double e = test::rel_err(got, ref);
        EXPECT_LT(e, add ? 1e-4 : 1e-5) << tensor_type_name(t) << " n_in " << n_in << " rows " << rows << " add " << add
                                        << " stages " << tu.stages << " shared scales " << tu.shared_scales << "; got[0] " << got[0] << " ref[0] " << ref[0];
      }
      // The mat-vec on the same 8-bit activations, eight rows per launch.
      cuda::DeviceBuffer<float> ym(static_cast<size_t>(rows * n_out));
      for (int c0 = 0; c0 < rows; c0 += 8) {
        cuda::MatvecArgs mv;
        mv.w = m.m;
        mv.n_rows = std::min(8, rows - c0);
        mv.x = act.x.get() + c0 * n_in;
        mv.xq = act.xq.get() + c0 * n_in;
        mv.xds = act.xds.get() + c0 * (n_in / 32);
        mv.y = ym.get() + c0 * n_out;
        mv.y_stride = n_out;
        cuda::matvec(mv, nullptr);
      }
      EXPECT_LT(test::rel_err(test::to_host(ym, ym.size()), ref), 1e-5) << "mat-vec, " << tensor_type_name(t);
    }
  }
}

// The f16 variant (MmqTuning::f16) against float64 on the same f16 activations. Its one further
// rounding is of each decoded weight to f16 (2^-11 relative, and of a K-quant's scale and minimum
// before the weight is formed), independent from weight to weight: the RMS error relative to the
// outputs stays near 2^-11 (5e-4); 2e-3 is the bound. A decoding slip (a swapped pair, a wrong
// scale) is O(1). MXFP4 has no f16 variant: the int8 kernel takes it with the same arguments.
TEST_P(MmqPerType, F16VariantMatchesFloat64) {
  PIPELLM_REQUIRE_GPU();
  const TensorType t = GetParam();
  std::vector<int64_t> widths = {256, 4096};
  if (tensor_type_info(t).block_size == 32) widths.push_back(2880);
  for (const int64_t n_in : widths) {
    const int64_t n_out = 100;
    const auto blocks = test::random_blocks(t, n_out * n_in / tensor_type_info(t).block_size);
    auto m = test::upload_matrix(t, n_in, n_out, blocks);
    const auto w = test::cpu_dequant(t, blocks, n_in, n_out);
    for (const int rows : {9, 16, 33, 64, 100}) {
      std::vector<float> x = test::random_floats(static_cast<size_t>(rows * n_in));
      auto d_xh = test::to_device(round_to_f16(x));
      auto act = test::device_activations(x, rows, n_in);  // the int8 rows, for MXFP4
      const std::vector<double> ref =
          float64_product(w, t == TensorType::MXFP4 ? act.decoded : x, rows, n_in, n_out);
      for (const int k_parts : {2, 4})  // warps per block: 2 x k_parts
      for (const bool add : {false, true}) {
        cuda::MmqArgs a = args_of(m.m, rows, act, add);
        a.xh = d_xh.get();
        a.tuning.f16 = true;
        a.tuning.f16_k_parts = k_parts;
        const auto got = run_product(a, n_out, std::string(tensor_type_name(t)) + " rows " + std::to_string(rows));
        const double e = test::rel_err(got, ref);
        EXPECT_LT(e, t == TensorType::MXFP4 ? 1e-4 : 2e-3)
            << tensor_type_name(t) << " n_in " << n_in << " rows " << rows << " add " << add << " K parts " << k_parts;
        if (!add && rows == 64 && k_parts == 2) {
          std::printf("[ mmq f16 ] %s n_in %lld: rel err %.2e\n", tensor_type_name(t), static_cast<long long>(n_in), e);
        }
      }
    }
  }
}

// Three matrices of one type over the same activations in one launch (q, k, v), ragged row
// counts: each output against float64; a launch mixing types or n_in is refused.
TEST_P(MmqPerType, SeveralMatricesInOneLaunch) {
  PIPELLM_REQUIRE_GPU();
  const TensorType t = GetParam();
  const int64_t n_in = 512;
  const int64_t n_outs[3] = {100, 36, 64};
  std::vector<test::UploadedMatrix> ms;
  std::vector<std::vector<float>> ws;
  for (const int64_t n_out : n_outs) {
    const auto blocks = test::random_blocks(t, n_out * n_in / tensor_type_info(t).block_size);
    ms.push_back(test::upload_matrix(t, n_in, n_out, blocks));
    ws.push_back(test::cpu_dequant(t, blocks, n_in, n_out));
  }
  for (const int rows : {16, 40}) {
    const auto x = test::random_floats(static_cast<size_t>(rows * n_in));
    auto act = test::device_activations(x, rows, n_in);
    std::vector<cuda::DeviceBuffer<float>> ys;
    for (const int64_t n_out : n_outs) ys.emplace_back(static_cast<size_t>(rows * n_out));
    cuda::MmqArgs a;
    a.w = ms[0].m;
    a.n_rows = rows;
    a.xq = act.xq.get();
    a.xds = act.xds.get();
    a.y = ys[0].get();
    a.y_stride = n_outs[0];
    for (int i = 1; i < 3; ++i) a.extra[a.n_extra++] = {ms[static_cast<size_t>(i)].m, ys[static_cast<size_t>(i)].get(), n_outs[i]};
    for (auto& y : ys) test::poison(y);
    cuda::mmq(a, nullptr);
    for (int i = 0; i < 3; ++i) {
      const std::vector<double> ref = float64_product(ws[static_cast<size_t>(i)], act.decoded, rows, n_in, n_outs[i]);
      const auto got = test::to_host(ys[static_cast<size_t>(i)], ys[static_cast<size_t>(i)].size());
      EXPECT_LT(test::rel_err(got, ref), 1e-5) << tensor_type_name(t) << " matrix " << i << " rows " << rows;
    }
  }
  // One type and one n_in per launch.
  cuda::MmqArgs bad;
  bad.w = ms[0].m;
  bad.n_rows = 16;
  bad.extra[bad.n_extra++] = {cuda::DeviceMatrix{t == TensorType::Q8_0 ? TensorType::Q4_0 : TensorType::Q8_0, n_in, 64, nullptr}, nullptr, 64};
  EXPECT_THROW(cuda::mmq(bad, nullptr), Error);
}

INSTANTIATE_TEST_SUITE_P(Types, MmqPerType,
                         ::testing::Values(TensorType::Q4_0, TensorType::Q8_0, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K,
                                           TensorType::MXFP4),
                         [](const ::testing::TestParamInfo<TensorType>& i) { return tensor_type_name(i.param); });

// Expert products grouped by expert (moe_group_pairs + mmq_experts) against float64: a stack of
// experts (each repacked alone, as the loader does), pairs with a skewed choice (one expert
// takes many, one none, ragged tiles), gate-like (a token's row serves its k pairs) and
// down-like (a row per pair) activations; repeated products are bit-identical. The f16 variant
// (f16 rows given with MmqTuning::f16) against float64 on the same f16 rows, with MmqPerType's f16 bound.
class MmqExpertsPerType : public ::testing::TestWithParam<TensorType> {};

TEST_P(MmqExpertsPerType, MatchesFloat64) {
  PIPELLM_REQUIRE_GPU();
  const TensorType t = GetParam();
  const int X = 6, k = 3, T = 40, P = T * k;
  // gpt-oss's width (a partial last K step) for the formats of 32-value blocks.
  const int64_t n_in = tensor_type_info(t).block_size == 32 ? 2880 : 512, n_out = 96;
  const test::ExpertStack st = test::make_stack(t, X, n_in, n_out);
  std::vector<std::vector<float>> w(X);
  for (int e = 0; e < X; ++e) {
    const auto first = st.gguf.begin() + static_cast<std::ptrdiff_t>(e * st.expert_bytes);
    w[e] = test::cpu_dequant(t, std::vector<uint8_t>(first, first + static_cast<std::ptrdiff_t>(st.expert_bytes)), n_in,
                             n_out);
  }
  const size_t expert_bytes = st.expert_bytes;
  std::vector<int32_t> ids(P);
  for (int p = 0; p < P; ++p) ids[p] = p % 2 == 0 ? 0 : 1 + static_cast<int>(test::uniform(0.0f, 3.999f));  // 5: none
  auto d_ids = test::to_device(ids);
  const cuda::DeviceMatrix m = st.m;
  ASSERT_TRUE(cuda::mmq_supports_experts(m, expert_bytes));
  cuda::MmqTuning int8;  // mmq_experts takes the f16 kernel where it is given f16 rows and f16 is on
  int8.f16 = false;
  for (const int x_group : {k, 1}) {
    const int rows = P / x_group;
    std::vector<float> x = test::random_floats(static_cast<size_t>(rows * n_in));
    auto d_xh = test::to_device(round_to_f16(x));
    auto act = test::device_activations(x, rows, n_in);
    // y[p][r] = sum_i W_e[r][i] rows[p / x_group][i], e = pair p's expert, in float64.
    const auto reference = [&](const std::vector<float>& in) {
      std::vector<double> ref(static_cast<size_t>(P * n_out));
      for (int p = 0; p < P; ++p) {
        const std::vector<float>& we = w[static_cast<size_t>(ids[p])];
        for (int64_t r = 0; r < n_out; ++r) {
          double sum = 0;
          for (int64_t i = 0; i < n_in; ++i) {
            sum += static_cast<double>(we[r * n_in + i]) * in[static_cast<size_t>((p / x_group) * n_in + i)];
          }
          ref[static_cast<size_t>(p * n_out + r)] = sum;
        }
      }
      return ref;
    };
    const std::vector<double> ref_q8 = reference(act.decoded), ref_f16 = reference(x);
    for (const int cols : {8, 64})
    for (const cuda::MmqTuning tu : {int8, cuda::MmqTuning{0, 2, false, true, false}, cuda::MmqTuning{}}) {  // int8, its old layout, f16
      cuda::MoeTiles tiles;
      tiles.cols = cols;
      tiles.max_tiles = cuda::moe_max_tiles(P, X, cols);
      cuda::DeviceBuffer<int32_t> order(P), n_tiles(1);
      cuda::DeviceBuffer<int4> tile_buf(static_cast<size_t>(tiles.max_tiles));
      tiles.order = order.get();
      tiles.tiles = tile_buf.get();
      tiles.n_tiles = n_tiles.get();
      cuda::moe_group_pairs(d_ids.get(), P, X, tiles, nullptr);
      cuda::DeviceBuffer<float> y(static_cast<size_t>(P * n_out));
      test::poison(y);
      cuda::MmqExpertArgs a;
      a.w = m;
      a.expert_bytes = expert_bytes;
      a.tiles = tiles;
      a.n_pairs = P;
      a.xq = act.xq.get();
      a.xds = act.xds.get();
      a.xh = d_xh.get();  // read by the f16 variant only
      a.x_group = x_group;
      a.y = y.get();
      a.y_stride = n_out;
      a.tuning = tu;
      cuda::mmq_experts(a, nullptr);
      const auto got = test::to_host(y, y.size());
      cuda::mmq_experts(a, nullptr);
      EXPECT_EQ(test::to_host(y, y.size()), got) << "not bit-stable";
      const bool on_f16 = tu.f16 && t != TensorType::MXFP4;  // MXFP4: the int8 kernel
      EXPECT_LT(test::rel_err(got, on_f16 ? ref_f16 : ref_q8), on_f16 ? 2e-3 : 1e-5)
          << tensor_type_name(t) << " x_group " << x_group << " cols " << cols << " stages " << tu.stages << " f16 "
          << on_f16;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, MmqExpertsPerType,
                         ::testing::Values(TensorType::Q4_0, TensorType::Q8_0, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K,
                                           TensorType::MXFP4),
                         [](const ::testing::TestParamInfo<TensorType>& i) { return tensor_type_name(i.param); });

TEST(Mmq, RefusesWhatItHasNoKernelFor) {
  cuda::DeviceMatrix m{TensorType::Q3_K, 4096, 64, nullptr};
  EXPECT_FALSE(cuda::mmq_supports(m));
  m = {TensorType::Q6_K, 256, 3, nullptr};  // an odd block count (Q6_K's scale word would pass the end)
  EXPECT_FALSE(cuda::mmq_supports(m));
  m = {TensorType::Q8_0, 4096 + 32, 64, nullptr};  // 32-value blocks: any whole number of blocks
  EXPECT_TRUE(cuda::mmq_supports(m));
  m = {TensorType::Q4_0, 0, 64, nullptr};
  EXPECT_FALSE(cuda::mmq_supports(m));
  m = {TensorType::Q3_K, 4096, 64, nullptr};
  cuda::MmqArgs a;
  a.w = m;
  a.n_rows = 1;
  EXPECT_THROW(cuda::mmq(a, nullptr), Error);
  a.w = {TensorType::Q8_0, 4096, 64, nullptr};  // supported, but a layout the kernel has no variant for
  a.tuning.stages = 3;
  EXPECT_THROW(cuda::mmq(a, nullptr), Error);
  a.tuning = {0, 0};
  EXPECT_THROW(cuda::mmq(a, nullptr), Error);
  a.tuning = {};
  a.tuning.f16_k_parts = 3;
  EXPECT_THROW(cuda::mmq(a, nullptr), Error);
  cuda::MmqExpertArgs e;  // the grouped products check the same tuning
  e.w = a.w;
  e.expert_bytes = 4096 / 32 * 34 * 64;
  e.n_pairs = 1;
  e.tuning = a.tuning;
  EXPECT_THROW(cuda::mmq_experts(e, nullptr), Error);
}

}  // namespace
}  // namespace pipellm
