#include "kernels/cuda/mmq.h"

#include <string>

#include "base/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dequant_device.cuh"

namespace pipellm::cuda {
namespace {

constexpr int kTileRows = 64;   // weight rows (outputs) per block: 4 warps x 16
constexpr int kTileCols = 64;   // activation rows per block: 8 mma tiles of 8
constexpr int kK = 256;         // elements of K per step
constexpr int kPad = 16;        // keeps the 32-bit fragment loads of a warp on distinct banks
constexpr int kThreads = 128;
constexpr int kGroups = kK / 16;  // scale groups of 16 values per step

struct Params {
  const uint8_t* w;
  int64_t nb;  // blocks per weight row
  int64_t NB;  // blocks of the whole matrix (the repacked layouts index their arrays by it)
  int64_t n_in, n_out;
  int T;
  const int8_t* xq;
  const float2* xds;
  float* y;
  int64_t ys;
  bool add;
};

struct Tile {
  int8_t w[kTileRows][kK + kPad];
  int8_t x[kTileCols][kK + kPad];
  float wsc[kTileRows][kGroups];   // weight scale per 16 values
  float wmin[kTileRows][kK / 32];  // Q4_K: dmin * m per 32 values (else 0)
  float2 xd[kTileCols][kK / 32];   // activation {d, d * sum(q)} per 32 values
};

__device__ __forceinline__ uint4 ld16(const uint8_t* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }

__device__ __forceinline__ void put16(int8_t* dst, const uint4& v) { *reinterpret_cast<uint4*>(dst) = v; }

// Decodes weight rows [row0, row0 + 64) x elements [k0, k0 + 256) into the tile. Rows past the
// matrix repeat its last row (computed, never stored).
template <TensorType TT>
__device__ void load_weights(const Params& p, int64_t row0, int64_t k0, Tile& s);

template <>
__device__ void load_weights<TensorType::Q8_0>(const Params& p, int64_t row0, int64_t k0, Tile& s) {
  // 64 rows x 8 blocks of 32: 4 (row, block) pairs per thread.
  for (int i = threadIdx.x; i < kTileRows * 8; i += kThreads) {
    const int r = i >> 3, b = i & 7;
    const int64_t row = min(row0 + r, p.n_out - 1);
    const int64_t bi = row * p.nb + k0 / 32 + b;
    put16(&s.w[r][32 * b], ld16(p.w + bi * 32));
    put16(&s.w[r][32 * b + 16], ld16(p.w + bi * 32 + 16));
    const float d = f16_bits(ld_u16(p.w + p.NB * 32 + bi * 2));
    s.wsc[r][2 * b] = d;
    s.wsc[r][2 * b + 1] = d;
    s.wmin[r][b] = 0.0f;
  }
}

template <>
__device__ void load_weights<TensorType::Q4_0>(const Params& p, int64_t row0, int64_t k0, Tile& s) {
  for (int i = threadIdx.x; i < kTileRows * 8; i += kThreads) {
    const int r = i >> 3, b = i & 7;
    const int64_t row = min(row0 + r, p.n_out - 1);
    const int64_t bi = row * p.nb + k0 / 32 + b;
    const uint4 q = ld16(p.w + bi * 16);
    const uint32_t v[4] = {q.x, q.y, q.z, q.w};
    // Element j < 16: low nibble of byte j; j >= 16: high nibble of byte j - 16; value q - 8.
    uint32_t lo[4], hi[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      lo[k] = __vsub4(v[k] & 0x0F0F0F0Fu, 0x08080808u);
      hi[k] = __vsub4((v[k] >> 4) & 0x0F0F0F0Fu, 0x08080808u);
    }
    put16(&s.w[r][32 * b], make_uint4(lo[0], lo[1], lo[2], lo[3]));
    put16(&s.w[r][32 * b + 16], make_uint4(hi[0], hi[1], hi[2], hi[3]));
    const float d = f16_bits(ld_u16(p.w + p.NB * 16 + bi * 2));
    s.wsc[r][2 * b] = d;
    s.wsc[r][2 * b + 1] = d;
    s.wmin[r][b] = 0.0f;
  }
}

// Q4_K (GGUF blocks of 144 bytes: d, dmin, 12 bytes of 6-bit scales and mins, 128 bytes of
// quants): two threads per row, each one half (two 64-value groups: low nibbles of 32 bytes are
// the group's first 32 values with sub-block scale 2g, high nibbles the next 32 with 2g + 1).
template <>
__device__ void load_weights<TensorType::Q4_K>(const Params& p, int64_t row0, int64_t k0, Tile& s) {
  const int r = threadIdx.x >> 1, h = threadIdx.x & 1;
  const int64_t row = min(row0 + r, p.n_out - 1);
  const uint8_t* blk = p.w + (row * p.nb + k0 / 256) * 144;
  const float d = f16_bits(ld_u16(blk)), dmin = f16_bits(ld_u16(blk + 2));
  const uint8_t* sc = blk + 4;
  for (int g = 2 * h; g < 2 * h + 2; ++g) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {  // 16-byte chunks of the group's 32 bytes
      const uint4 q = ld16(blk + 16 + 32 * g + 16 * c);
      put16(&s.w[r][64 * g + 16 * c], make_uint4(q.x & 0x0F0F0F0Fu, q.y & 0x0F0F0F0Fu, q.z & 0x0F0F0F0Fu,
                                                 q.w & 0x0F0F0F0Fu));
      put16(&s.w[r][64 * g + 32 + 16 * c], make_uint4((q.x >> 4) & 0x0F0F0F0Fu, (q.y >> 4) & 0x0F0F0F0Fu,
                                                      (q.z >> 4) & 0x0F0F0F0Fu, (q.w >> 4) & 0x0F0F0F0Fu));
    }
#pragma unroll
    for (int j = 2 * g; j < 2 * g + 2; ++j) {  // sub-blocks of 32
      int scv, mv;
      if (j < 4) {
        scv = sc[j] & 63;
        mv = sc[j + 4] & 63;
      } else {
        scv = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
        mv = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
      }
      s.wsc[r][2 * j] = d * static_cast<float>(scv);
      s.wsc[r][2 * j + 1] = d * static_cast<float>(scv);
      s.wmin[r][j] = dmin * static_cast<float>(mv);
    }
  }
}

// Q6_K (repacked: ql [NB][128], qh [NB][64], scales [NB][16] int8, d [NB] f16): two threads per
// row, each a half n of 128 values; value 128n + 32qq + l is (4 bits of ql[64n + l + 32(qq & 1)],
// low for qq < 2, high else) | (2 bits of qh[32n + l] at 2qq) << 4, minus 32; scale index e / 16.
template <>
__device__ void load_weights<TensorType::Q6_K>(const Params& p, int64_t row0, int64_t k0, Tile& s) {
  const int r = threadIdx.x >> 1, n = threadIdx.x & 1;
  const int64_t row = min(row0 + r, p.n_out - 1);
  const int64_t bi = row * p.nb + k0 / 256;
  const uint8_t* ql = p.w + bi * 128 + 64 * n;
  const uint8_t* qh = p.w + p.NB * 128 + bi * 64 + 32 * n;
  const int8_t* scales = reinterpret_cast<const int8_t*>(p.w + p.NB * 192 + bi * 16);
  const float d = f16_bits(ld_u16(p.w + p.NB * 208 + bi * 2));
#pragma unroll
  for (int c = 0; c < 2; ++c) {  // l in [16c, 16c + 16)
    const uint4 a4 = ld16(ql + 16 * c), b4 = ld16(ql + 32 + 16 * c), h4 = ld16(qh + 16 * c);
    const uint32_t a[4] = {a4.x, a4.y, a4.z, a4.w}, b[4] = {b4.x, b4.y, b4.z, b4.w}, hh[4] = {h4.x, h4.y, h4.z, h4.w};
    uint32_t q[4][4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t h0 = (hh[k] & 0x03030303u) << 4, h1 = (hh[k] & 0x0C0C0C0Cu) << 2, h2 = hh[k] & 0x30303030u,
                     h3 = (hh[k] & 0xC0C0C0C0u) >> 2;
      q[0][k] = __vsub4((a[k] & 0x0F0F0F0Fu) | h0, 0x20202020u);
      q[1][k] = __vsub4((b[k] & 0x0F0F0F0Fu) | h1, 0x20202020u);
      q[2][k] = __vsub4(((a[k] >> 4) & 0x0F0F0F0Fu) | h2, 0x20202020u);
      q[3][k] = __vsub4(((b[k] >> 4) & 0x0F0F0F0Fu) | h3, 0x20202020u);
    }
#pragma unroll
    for (int qq = 0; qq < 4; ++qq) put16(&s.w[r][128 * n + 32 * qq + 16 * c], make_uint4(q[qq][0], q[qq][1], q[qq][2], q[qq][3]));
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) s.wsc[r][8 * n + j] = d * static_cast<float>(scales[8 * n + j]);
  if (n == 0) {
#pragma unroll
    for (int j = 0; j < kK / 32; ++j) s.wmin[r][j] = 0.0f;
  }
}

// Activation rows [col0, col0 + 64) x [k0, k0 + 256); rows past n_rows are zeros.
__device__ void load_activations(const Params& p, int col0, int64_t k0, Tile& s) {
  for (int i = threadIdx.x; i < kTileCols * (kK / 16); i += kThreads) {
    const int c = i / (kK / 16), j = i % (kK / 16);
    const int t = col0 + c;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (t < p.T) v = *reinterpret_cast<const uint4*>(p.xq + static_cast<int64_t>(t) * p.n_in + k0 + 16 * j);
    put16(&s.x[c][16 * j], v);
  }
  for (int i = threadIdx.x; i < kTileCols * (kK / 32); i += kThreads) {
    const int c = i / (kK / 32), j = i % (kK / 32);
    const int t = col0 + c;
    s.xd[c][j] = t < p.T ? p.xds[static_cast<int64_t>(t) * (p.n_in / 32) + k0 / 32 + j] : make_float2(0.0f, 0.0f);
  }
}

__device__ __forceinline__ void mma_s8(int (&c)[4], int a0, int a1, int b0) {
  c[0] = c[1] = c[2] = c[3] = 0;
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(b0));
}

template <TensorType TT>
__global__ void __launch_bounds__(kThreads) mmq_kernel(Params p) {
  __shared__ __align__(16) Tile s;
  grid_dependency_wait();
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTileRows;
  const int col0 = blockIdx.y * kTileCols;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, tig = lane & 3;  // mma fragment coordinates
  const int ra = 16 * warp + g, rb = ra + 8;  // this thread's two tile rows
  float acc[kTileCols / 8][4] = {};
  for (int64_t k0 = 0; k0 < p.n_in; k0 += kK) {
    __syncthreads();  // the previous step's tile has been read
    load_weights<TT>(p, row0, k0, s);
    load_activations(p, col0, k0, s);
    __syncthreads();
#pragma unroll 4
    for (int ks = 0; ks < kGroups; ++ks) {
      const int a0 = *reinterpret_cast<const int*>(&s.w[ra][16 * ks + 4 * tig]);
      const int a1 = *reinterpret_cast<const int*>(&s.w[rb][16 * ks + 4 * tig]);
      const float swa = s.wsc[ra][ks], swb = s.wsc[rb][ks];
      const bool min_term = TT == TensorType::Q4_K && (ks & 1) == 0;
      const float mna = min_term ? s.wmin[ra][ks >> 1] : 0.0f, mnb = min_term ? s.wmin[rb][ks >> 1] : 0.0f;
#pragma unroll
      for (int nt = 0; nt < kTileCols / 8; ++nt) {
        const int b0 = *reinterpret_cast<const int*>(&s.x[8 * nt + g][16 * ks + 4 * tig]);
        int c[4];
        mma_s8(c, a0, a1, b0);
        const float2 xa = s.xd[8 * nt + 2 * tig][ks >> 1], xb = s.xd[8 * nt + 2 * tig + 1][ks >> 1];
        acc[nt][0] += swa * xa.x * static_cast<float>(c[0]);
        acc[nt][1] += swa * xb.x * static_cast<float>(c[1]);
        acc[nt][2] += swb * xa.x * static_cast<float>(c[2]);
        acc[nt][3] += swb * xb.x * static_cast<float>(c[3]);
        if (min_term) {
          acc[nt][0] -= mna * xa.y;
          acc[nt][1] -= mna * xb.y;
          acc[nt][2] -= mnb * xa.y;
          acc[nt][3] -= mnb * xb.y;
        }
      }
    }
  }
  // c0/c1: row g, columns 2 tig and 2 tig + 1; c2/c3: row g + 8.
#pragma unroll
  for (int nt = 0; nt < kTileCols / 8; ++nt) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t r = row0 + (i < 2 ? ra : rb);
      const int t = col0 + 8 * nt + 2 * tig + (i & 1);
      if (r >= p.n_out || t >= p.T) continue;
      float* o = p.y + static_cast<int64_t>(t) * p.ys + r;
      *o = p.add ? *o + acc[nt][i] : acc[nt][i];
    }
  }
}

}  // namespace

bool mmq_supports(const DeviceMatrix& w) {
  const bool type_ok = w.type == TensorType::Q4_0 || w.type == TensorType::Q8_0 || w.type == TensorType::Q4_K ||
                       w.type == TensorType::Q6_K;
  return type_ok && w.n_in % kK == 0 && w.n_out > 0;
}

void mmq(const MmqArgs& a, const Launch& s) {
  if (!mmq_supports(a.w)) {
    throw Error(std::string("mmq: unsupported weight ") + tensor_type_name(a.w.type) + " [" + std::to_string(a.w.n_in) +
                ", " + std::to_string(a.w.n_out) + "] (Q4_0, Q8_0, Q4_K, Q6_K with n_in a multiple of 256)");
  }
  if (a.n_rows <= 0) return;
  Params p{};
  p.w = a.w.data;
  p.nb = a.w.n_in / tensor_type_info(a.w.type).block_size;
  p.NB = a.w.blocks();
  p.n_in = a.w.n_in;
  p.n_out = a.w.n_out;
  p.T = a.n_rows;
  p.xq = a.xq;
  p.xds = a.xds;
  p.y = a.y;
  p.ys = a.y_stride;
  p.add = a.add;
  const dim3 grid(static_cast<unsigned>((a.w.n_out + kTileRows - 1) / kTileRows),
                  static_cast<unsigned>((a.n_rows + kTileCols - 1) / kTileCols));
  switch (a.w.type) {
    case TensorType::Q8_0: launch_kernel(s, mmq_kernel<TensorType::Q8_0>, grid, dim3(kThreads), p); break;
    case TensorType::Q4_0: launch_kernel(s, mmq_kernel<TensorType::Q4_0>, grid, dim3(kThreads), p); break;
    case TensorType::Q4_K: launch_kernel(s, mmq_kernel<TensorType::Q4_K>, grid, dim3(kThreads), p); break;
    case TensorType::Q6_K: launch_kernel(s, mmq_kernel<TensorType::Q6_K>, grid, dim3(kThreads), p); break;
    default: throw Error("mmq: no kernel for " + std::string(tensor_type_name(a.w.type)));
  }
  PIPELLM_CUDA_LAUNCH_CHECK("mmq");
}

}  // namespace pipellm::cuda
