// pipellm_cuda_bench: see bench/cuda_bench.h and the comment at the top of cuda_bench.cpp.
#include <cstdio>
#include <exception>

#include "bench/cuda_bench.h"

int main(int argc, char** argv) {
  try {
    return pipellm::cuda_bench_main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pipellm_cuda_bench: error: %s\n", e.what());
    return 1;
  }
}
