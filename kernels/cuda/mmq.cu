#include "kernels/cuda/mmq.h"

#include <string>

#include "base/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/mmq_tile.cuh"

namespace pipellm::cuda {
namespace {

using mmq_detail::has_f16_kernel;
using mmq_detail::kK;
using mmq_detail::kTileRows;
using mmq_detail::launch_f16;
using mmq_detail::launch_int8;
using mmq_detail::Params;

constexpr int kMaxCluster = 8;             // blocks a K split spreads over
constexpr int kMaxGroupedExperts = 4096;   // moe_group_pairs' shared-memory counters

// Groups the pairs by expert into tiles of up to `cols` pairs (one block: counting sort in shared
// memory; the order of pairs within an expert does not matter, each column is computed alone).
__global__ void __launch_bounds__(1024) moe_group_kernel(const int32_t* ids, int n_pairs, int n_expert, int cols,
                                                         int max_tiles, int32_t* order, int4* tiles,
                                                         int32_t* n_tiles) {
  extern __shared__ int grp[];  // count[n_expert], then start[n_expert]
  int* count = grp;
  int* start = grp + n_expert;
  grid_dependency_wait();
  for (int e = threadIdx.x; e < n_expert; e += blockDim.x) count[e] = 0;
  __syncthreads();
  for (int q = threadIdx.x; q < n_pairs; q += blockDim.x) {
    const int e = ids[q];
    if (e >= 0 && e < n_expert) atomicAdd(&count[e], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int at = 0, nt = 0;
    for (int e = 0; e < n_expert; ++e) {
      start[e] = at;
      for (int c0 = 0; c0 < count[e] && nt < max_tiles; c0 += cols) {
        tiles[nt++] = make_int4(e, at + c0, min(cols, count[e] - c0), 0);
      }
      at += count[e];
    }
    *n_tiles = nt;
  }
  __syncthreads();
  for (int q = threadIdx.x; q < n_pairs; q += blockDim.x) {
    const int e = ids[q];
    if (e >= 0 && e < n_expert) order[atomicAdd(&start[e], 1)] = q;
  }
}

// The current device's SM count, and whether it has thread-block clusters (sm_90+).
struct DeviceShape {
  int sms = 0;
  bool clusters = false;
};
DeviceShape device_shape() {
  int dev = 0, cc = 0;
  DeviceShape d;
  PIPELLM_CUDA_CHECK(cudaGetDevice(&dev));
  PIPELLM_CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev));
  PIPELLM_CUDA_CHECK(cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, dev));
  d.clusters = cc >= 9;
  return d;
}

}  // namespace

bool mmq_supports(const DeviceMatrix& w) {
  if (w.n_out <= 0 || w.n_in <= 0) return false;
  switch (w.type) {
    case TensorType::Q4_0:
    case TensorType::Q8_0:
    case TensorType::MXFP4: return w.n_in % 32 == 0;
    case TensorType::Q4_K:
    case TensorType::Q5_K: return w.n_in % kK == 0;
    case TensorType::Q6_K: return w.n_in % kK == 0 && (w.n_out * (w.n_in / kK)) % 2 == 0;
    default: return false;
  }
}

namespace {

void check_supported(const DeviceMatrix& w) {
  if (!mmq_supports(w)) {
    throw Error(std::string("mmq: unsupported weight ") + tensor_type_name(w.type) + " [" + std::to_string(w.n_in) +
                ", " + std::to_string(w.n_out) +
                "] (Q4_0, Q8_0, MXFP4 with n_in a multiple of 32; Q4_K, Q5_K, Q6_K with n_in a multiple of 256, "
                "Q6_K with an even block count)");
  }
}

Params params_of(const DeviceMatrix& w, const int8_t* xq, const float2* xds, float* y, int64_t y_stride) {
  Params p{};
  p.w = w.data;
  p.nb = w.n_in / tensor_type_info(w.type).block_size;
  p.NB = w.blocks();
  p.n_in = w.n_in;
  p.n_out = w.n_out;
  p.xq = xq;
  p.xds = xds;
  p.y = y;
  p.ys = y_stride;
  return p;
}

// Kernel layouts exist for these tunings only.
void check_tuning(const MmqTuning& tu) {
  if ((tu.stages != 0 && tu.stages != 2) || tu.blocks_per_sm < 1 || tu.blocks_per_sm > 16 ||
      (tu.f16_k_parts != 0 && tu.f16_k_parts != 2 && tu.f16_k_parts != 4)) {
    throw Error("mmq: tuning of " + std::to_string(tu.stages) + " stages, " + std::to_string(tu.blocks_per_sm) +
                " blocks per SM and " + std::to_string(tu.f16_k_parts) +
                " f16 K parts (stages 0 or 2, blocks 1..16, K parts 0, 2 or 4)");
  }
}

// The fewest column tiles of 8 (1, 2, 4 or 8) that hold `cols` columns.
int column_tiles(int cols) {
  int nt = 1;
  while (nt < 8 && 8 * nt < cols) nt *= 2;
  return nt;
}

}  // namespace

void mmq(const MmqArgs& a, const Launch& s) {
  check_supported(a.w);
  if (a.n_extra < 0 || a.n_extra > kMmqMaxExtra) {
    throw Error("mmq: " + std::to_string(a.n_extra) + " extra matrices (0.." + std::to_string(kMmqMaxExtra) + ")");
  }
  if (a.n_rows <= 0) return;
  Params p = params_of(a.w, a.xq, a.xds, a.y, a.y_stride);
  p.T = a.n_rows;
  p.add = a.add;
  // Column tiles: the fewest of 8, 16, 32, 64 rows that hold the batch; 64 per block beyond.
  const int nt = column_tiles(a.n_rows);
  const int chunks = (a.n_rows + 8 * nt - 1) / (8 * nt);
  int64_t tiles = 0;
  p.n_seg = 1 + a.n_extra;
  for (int i = 0; i < p.n_seg; ++i) {
    const MmqSegment sg = i == 0 ? MmqSegment{a.w, a.y, a.y_stride} : a.extra[i - 1];
    if (i > 0) {
      check_supported(sg.w);
      if (sg.w.type != a.w.type || sg.w.n_in != a.w.n_in) {
        throw Error(std::string("mmq: an extra matrix of ") + tensor_type_name(sg.w.type) + " [" +
                    std::to_string(sg.w.n_in) + ", ...] beside " + tensor_type_name(a.w.type) + " [" +
                    std::to_string(a.w.n_in) + ", ...] (one launch needs one type and one n_in)");
      }
    }
    p.seg[i] = {sg.w.data, sg.w.blocks(), sg.w.n_out, sg.y, sg.y_stride, tiles};
    tiles += (sg.w.n_out + kTileRows - 1) / kTileRows;
  }
  if (tiles > 0x7fffffff || chunks > 65535) throw Error("mmq: product too large for one launch");
  const MmqTuning& tu = a.tuning;
  check_tuning(tu);
  // Split K over a cluster until about blocks_per_sm blocks per SM exist, keeping >= 2 K steps per block.
  const DeviceShape dev = device_shape();
  const int64_t n_k = (a.w.n_in + kK - 1) / kK, want = tu.blocks_per_sm * static_cast<int64_t>(dev.sms);
  int split = 1;
  while (dev.clusters && split < kMaxCluster && tiles * chunks * split < want && n_k >= 2 * split) split *= 2;
  if (tu.f16 && a.xh != nullptr && has_f16_kernel(a.w.type)) {
    p.xh = a.xh;
    launch_f16(a.w.type, false, p, nt, tu, tiles, chunks, split, s);
    return;
  }
  launch_int8(a.w.type, false, p, nt, tu, tiles, chunks, split, s);
}

int moe_tile_cols(int n_pairs, int n_expert) { return 8 * column_tiles((n_pairs + n_expert - 1) / n_expert); }

int moe_max_tiles(int n_pairs, int n_expert, int cols) { return (n_pairs + cols - 1) / cols + n_expert; }

void moe_group_pairs(const int32_t* ids, int n_pairs, int n_expert, const MoeTiles& t, const Launch& s) {
  if (n_expert < 1 || n_expert > kMaxGroupedExperts)
    throw Error("moe_group_pairs: " + std::to_string(n_expert) + " experts (1.." +
                std::to_string(kMaxGroupedExperts) + " supported)");
  if (t.max_tiles < moe_max_tiles(n_pairs, n_expert, t.cols))
    throw Error("moe_group_pairs: room for " + std::to_string(t.max_tiles) + " tiles, " +
                std::to_string(moe_max_tiles(n_pairs, n_expert, t.cols)) + " may be needed");
  LaunchShape shape;
  shape.grid = dim3(1);
  shape.block = dim3(1024);
  shape.smem = 2 * static_cast<size_t>(n_expert) * sizeof(int);
  launch_kernel(s, moe_group_kernel, shape, ids, n_pairs, n_expert, t.cols, t.max_tiles, t.order, t.tiles,
                t.n_tiles);
  PIPELLM_CUDA_LAUNCH_CHECK("moe_group_pairs");
}

bool mmq_supports_experts(const DeviceMatrix& w, size_t expert_bytes) {
  return mmq_supports(w) && expert_bytes % 16 == 0;  // each expert's blocks 16-byte aligned (asynchronous copies)
}

void mmq_experts(const MmqExpertArgs& a, const Launch& s) {
  if (!mmq_supports_experts(a.w, a.expert_bytes)) {
    check_supported(a.w);
    throw Error("mmq_experts: experts of " + std::to_string(a.expert_bytes) + " bytes are not 16-byte aligned");
  }
  if (a.n_pairs <= 0) return;
  Params p = params_of(a.w, a.xq, a.xds, a.y, a.y_stride);
  p.tiles = a.tiles.tiles;
  p.n_tiles = a.tiles.n_tiles;
  p.order = a.tiles.order;
  p.expert_bytes = static_cast<int64_t>(a.expert_bytes);
  p.x_group = a.x_group;
  const int64_t tiles = (a.w.n_out + kTileRows - 1) / kTileRows;
  const MmqTuning& tu = a.tuning;
  check_tuning(tu);
  if (tu.f16 && a.xh != nullptr && has_f16_kernel(a.w.type)) {
    p.xh = a.xh;
    launch_f16(a.w.type, true, p, a.tiles.cols / 8, tu, tiles, a.tiles.max_tiles, 1, s);
    return;
  }
  launch_int8(a.w.type, true, p, a.tiles.cols / 8, tu, tiles, a.tiles.max_tiles, 1, s);
}

}  // namespace pipellm::cuda
