// Kernel launches with optional programmatic dependent launch (PDL, sm_90+): a kernel launched
// with `pdl` may be scheduled while the previous kernel of the stream is still finishing; every
// kernel of kernels/cuda begins with grid_dependency_wait(), which blocks until the previous
// grid has completed and its memory is visible (a no-op without PDL). This hides the launch
// latency between the many small kernels of a decode step (also inside CUDA graphs).
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "kernels/cuda/cuda_check.h"

namespace pipellm::cuda {

struct Launch {
  Launch(cudaStream_t s = nullptr, bool p = false) : stream(s), pdl(p) {}  // NOLINT: implicit from a stream
  cudaStream_t stream;
  bool pdl;
};

#if defined(__CUDACC__)
// Waits for the preceding grid (PDL), then lets the next grid start launching its blocks.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Shape of a launch beyond grid and block: dynamic shared memory, and the blocks along z that
// form one thread-block cluster (1: no cluster).
struct LaunchShape {
  dim3 grid;
  dim3 block;
  size_t smem = 0;
  unsigned cluster_z = 1;
};

template <class... KArgs, class... Args>
void launch_kernel(const Launch& l, void (*kernel)(KArgs...), const LaunchShape& shape, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = shape.grid;
  cfg.blockDim = shape.block;
  cfg.dynamicSmemBytes = shape.smem;
  cfg.stream = l.stream;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (l.pdl) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  if (shape.cluster_z > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = 1;
    attr[n].val.clusterDim.y = 1;
    attr[n].val.clusterDim.z = shape.cluster_z;
    ++n;
  }
  cfg.attrs = n > 0 ? attr : nullptr;
  cfg.numAttrs = n;
  PIPELLM_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

template <class... KArgs, class... Args>
void launch_kernel(const Launch& l, void (*kernel)(KArgs...), dim3 grid, dim3 block, Args&&... args) {
  launch_kernel(l, kernel, LaunchShape{grid, block}, std::forward<Args>(args)...);
}
#endif

}  // namespace pipellm::cuda
