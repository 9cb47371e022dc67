#include "kernels/cpu/moe_route.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "base/error.h"

namespace pipellm {

const char* moe_routing_name(MoeRouting r) {
  switch (r) {
    case MoeRouting::SoftmaxTopK: return "softmax_topk";
    case MoeRouting::TopKSoftmax: return "topk_softmax";
  }
  return "?";
}

void moe_route(MoeRouting r, const float* logits, int n_expert, int k, int32_t* ids, float* weights) {
  if (k < 1 || k > n_expert) {
    throw InvalidArgument("moe_route: " + std::to_string(k) + " experts used of " + std::to_string(n_expert));
  }
  std::vector<int32_t> order(static_cast<size_t>(n_expert));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  // Softmax is monotonic: the top k of the probabilities are the top k of the logits.
  const float top = logits[order[0]];
  double chosen = 0.0;
  for (int j = 0; j < k; ++j) chosen += std::exp(static_cast<double>(logits[order[static_cast<size_t>(j)]]) - top);
  double denom = chosen;
  switch (r) {
    case MoeRouting::SoftmaxTopK: {
      // p_j / sum_k p = exp(l_j) / sum_k exp(l): the full softmax's normaliser cancels, except
      // for llama.cpp's clamp of the renormalising sum (only bites when the k experts carry
      // almost no probability).
      double all = 0.0;
      for (int e = 0; e < n_expert; ++e) all += std::exp(static_cast<double>(logits[e]) - top);
      denom = std::max(chosen / all, 6.103515625e-5) * all;
      break;
    }
    case MoeRouting::TopKSoftmax:
      break;
    default:
      throw Error("moe_route: unknown routing " + std::to_string(static_cast<int>(r)));
  }
  for (int j = 0; j < k; ++j) {
    const int32_t e = order[static_cast<size_t>(j)];
    ids[j] = e;
    weights[j] = static_cast<float>(std::exp(static_cast<double>(logits[e]) - top) / denom);
  }
}

}  // namespace pipellm
