// `pipellm-stage`: one rank of the pipeline (mpirun -np N pipellm-stage --config X.yaml).
#include <cstdio>
#include <string>

#include "base/error.h"
#include "base/version.h"
#include "stage_worker/mpi_env.h"
#include "stage_worker/stage_runtime.h"
#include "stage_worker/worker_options.h"

int main(int argc, char** argv) {
  using namespace pipellm;
  try {
    MpiSession session(&argc, &argv);
    for (int i = 1; i < argc; ++i) {
      if (std::string(argv[i]) == "--version") {
        if (session.rank() == 0) std::printf("pipellm-stage %s\n", pipellm_version());
        return 0;
      }
    }
    WorkerOptions o;
    try {
      bool help = false;
      o = parse_worker_options(argc, argv, help);
      if (help) {
        if (session.rank() == 0) print_worker_usage();
        return 0;
      }
    } catch (const InvalidArgument& e) {
      // Every rank parses the same command line, so every rank stops here alike.
      if (session.rank() == 0) std::fprintf(stderr, "pipellm-stage: error: %s\n", e.what());
      return 2;
    }
    return run_stage_worker(session, o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pipellm-stage: error: %s\n", e.what());
    return 1;
  }
}
