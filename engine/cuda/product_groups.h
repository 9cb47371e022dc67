// How products of one input split into launches (CudaStage::fused_products): runs of neighbours
// of one type and width that do not accumulate, at most kMaxSharedProducts a launch (the mat-vec's
// segments, mmq's extra matrices), where the kernel for that batch size takes several. Host code.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/tensor_type.h"

namespace pipellm::cuda {

struct ProductKey {
  TensorType type;
  int64_t n_in;
  bool add;  // accumulates into its output (a launch of several stores)
};

constexpr size_t kMaxSharedProducts = 3;

// The end of the launch that starts at outs[i]: outs[i, end) share it (end > i). can_share: the
// kernel for this batch size and outs[i]'s type takes several matrices.
inline size_t shared_launch_end(const std::vector<ProductKey>& outs, size_t i, bool can_share) {
  size_t j = i + 1;
  if (!can_share || outs[i].add) return j;
  while (j < outs.size() && j - i < kMaxSharedProducts && !outs[j].add && outs[j].type == outs[i].type &&
         outs[j].n_in == outs[i].n_in) {
    ++j;
  }
  return j;
}

}  // namespace pipellm::cuda
