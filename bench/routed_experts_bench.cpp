// The CPU side of experts kept in host memory (engine/cpu/routed_experts.h, engine/cuda/
// host_experts.h): one MoE layer's routed experts of a real shape (default Qwen3-30B-A3B: 2048 x
// 768, 128 experts, 8 per token) in one quantized type, random routing, as a decode step (1
// token) or a batch, cycling through --layers such layers (default 6: 2 GB for Q4_K, more than
// any L3 cache, as a real model's 48 layers are). Reports time per layer, the expert bytes read
// per second, and the same thread pool's plain read bandwidth over 1 GiB: the napkin floor.
//   pipellm_routed_experts_bench [--type Q4_K] [--threads N] [--tokens T] [--embd E] [--ff F]
//                                [--experts X] [--used K] [--layers L] [--reps R]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/cpu/routed_experts.h"
#include "engine/util/huge_page_buffer.h"
#include "kernels/cpu/quantize.h"

using namespace pipellm;

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// A stack [n_in, rows, X] of random weights in `type`, in huge pages: the same expert quantized
// once and copied X times (quantizing a whole 30B layer would dominate the run).
struct Stack {
  HugePageBuffer mem;
  TensorView view;
  Stack(TensorType type, int64_t n_in, int64_t rows, int64_t X, std::mt19937& rng) {
    const size_t rb = tensor_row_bytes(type, n_in), expert = rb * static_cast<size_t>(rows);
    mem = HugePageBuffer(expert * static_cast<size_t>(X));
    std::normal_distribution<float> d(0.0f, 0.05f);
    std::vector<float> row(static_cast<size_t>(n_in));
    for (int64_t r = 0; r < rows; ++r) {
      for (float& x : row) x = d(rng);
      quantize_row(type, row.data(), mem.get() + static_cast<size_t>(r) * rb, n_in);
    }
    for (int64_t e = 1; e < X; ++e) std::memcpy(mem.get() + static_cast<size_t>(e) * expert, mem.get(), expert);
    view.name = "stack";
    view.type = type;
    view.n_dims = 3;
    view.ne[0] = n_in;
    view.ne[1] = rows;
    view.ne[2] = X;
    view.nbytes = expert * static_cast<size_t>(X);
    view.data = mem.get();
  }
};

int usage() {
  std::fprintf(stderr,
               "usage: pipellm_routed_experts_bench [--type Q4_K] [--threads N] [--tokens T] [--embd E] [--ff F]\n"
               "                                    [--experts X] [--used K] [--layers L] [--reps R]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string type_name = "Q4_K";
  int threads = 0, T = 1, reps = 24, n_layers = 6;
  int64_t E = 2048, F = 768, X = 128, K = 8;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage();
    const std::string v = argv[++i];
    if (a == "--type") type_name = v;
    else if (a == "--threads") threads = std::stoi(v);
    else if (a == "--tokens") T = std::stoi(v);
    else if (a == "--embd") E = std::stoll(v);
    else if (a == "--ff") F = std::stoll(v);
    else if (a == "--experts") X = std::stoll(v);
    else if (a == "--used") K = std::stoll(v);
    else if (a == "--reps") reps = std::stoi(v);
    else if (a == "--layers") n_layers = std::stoi(v);
    else return usage();
  }
  const auto type = tensor_type_from_name(type_name);
  if (!type || !can_quantize(*type)) throw InvalidArgument("--type: '" + type_name + "' cannot be quantized here");
  if (T < 1 || K < 1 || K > X || reps < 1 || n_layers < 1) return usage();
  std::mt19937 rng(1);
  struct Layer {
    Stack gate, up, down;
    ExpertStacks s;
  };
  std::vector<std::unique_ptr<Layer>> layers;
  for (int l = 0; l < n_layers; ++l) {
    auto ly = std::unique_ptr<Layer>(new Layer{Stack(*type, E, F, X, rng), Stack(*type, E, F, X, rng),
                                               Stack(*type, F, E, X, rng), ExpertStacks{}});
    ly->s.gate = &ly->gate.view;
    ly->s.up = &ly->up.view;
    ly->s.down = &ly->down.view;
    ly->s.n_embd = E;
    ly->s.n_ff = F;
    ly->s.n_expert = X;
    layers.push_back(std::move(ly));
  }
  const uint64_t expert_bytes = (layers[0]->gate.view.nbytes + layers[0]->up.view.nbytes + layers[0]->down.view.nbytes) /
                                static_cast<uint64_t>(X);
  ThreadPool pool(threads);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> in(static_cast<size_t>(T * E)), out(in.size()), w(static_cast<size_t>(T * K), 1.0f / K);
  for (float& x : in) x = d(rng);
  std::vector<int32_t> ids(static_cast<size_t>(T * K));
  RoutedExperts experts;
  double best = 1e30, total = 0;
  uint64_t bytes_best = 0;
  for (int r = 0; r < reps; ++r) {
    // Each token's K distinct experts at random; the bytes read are those of the distinct experts.
    std::vector<char> used(static_cast<size_t>(X), 0);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t k = 0; k < K; ++k) {
        int32_t e;
        bool dup;
        do {
          e = static_cast<int32_t>(rng() % static_cast<uint32_t>(X));
          dup = false;
          for (int64_t j = 0; j < k; ++j) dup = dup || ids[static_cast<size_t>(t * K + j)] == e;
        } while (dup);
        ids[static_cast<size_t>(t * K + k)] = e;
        used[static_cast<size_t>(e)] = 1;
      }
    }
    uint64_t bytes = 0;
    for (int64_t e = 0; e < X; ++e) bytes += used[static_cast<size_t>(e)] ? expert_bytes : 0;
    const auto t0 = Clock::now();
    experts.run(layers[static_cast<size_t>(r % n_layers)]->s, in.data(), ids.data(), w.data(), T, K, out.data(), pool, 1);
    const double sec = seconds(t0);
    total += sec;
    if (sec < best) {
      best = sec;
      bytes_best = bytes;
    }
  }
  // The napkin floor: the same threads summing 1 GiB.
  HugePageBuffer big(size_t{1} << 30);
  std::memset(big.get(), 1, big.bytes());
  double read_best = 1e30;
  for (int r = 0; r < 3; ++r) {
    std::vector<uint64_t> sums(static_cast<size_t>(pool.size()));
    const auto t0 = Clock::now();
    pool.run([&](int ith, int nth) {
      const size_t per = big.bytes() / static_cast<size_t>(nth) / 64 * 64;
      const auto* p = reinterpret_cast<const uint64_t*>(big.get() + per * static_cast<size_t>(ith));
      uint64_t acc = 0;
      for (size_t i = 0; i < per / 8; ++i) acc += p[i];
      sums[static_cast<size_t>(ith)] = acc;
    });
    read_best = std::min(read_best, seconds(t0));
  }
  const double read_gbs = static_cast<double>(big.bytes()) / read_best / 1e9;
  const double gbs = static_cast<double>(bytes_best) / best / 1e9;
  std::printf("routed experts %s, %lld x %lld, %lld experts, %lld per token, %d tokens, %d threads, %d layers (%.2f GB)\n",
              type_name.c_str(), static_cast<long long>(E), static_cast<long long>(F), static_cast<long long>(X),
              static_cast<long long>(K), T, pool.size(), n_layers, expert_bytes * X * n_layers / 1e9);
  std::printf("best %.3f ms (mean %.3f ms over %d), %.2f MB of experts: %.1f GB/s; plain read %.1f GB/s (%.0f%%)\n",
              best * 1e3, total / reps * 1e3, reps, bytes_best / 1e6, gbs, read_gbs, 100.0 * gbs / read_gbs);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "pipellm_routed_experts_bench: %s\n", e.what());
  return 1;
}
