// The CUDA engine benchmark (pp512, tg128 with and without graphs/PDL, tg128 at depth 4096,
// batched 64x decode; mean +- sd; bytes/token, GB/s and fraction of the copy bandwidth measured
// in the same run), shared by pipellm_cuda_bench and `pipellm bench --device cuda`.
// argv as pipellm_cuda_bench takes it (argv[0] is ignored); returns the exit status.
#pragma once

namespace pipellm {

int cuda_bench_main(int argc, char** argv);

}  // namespace pipellm
