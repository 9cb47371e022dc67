// Command-line options of `pipellm-stage` (every rank parses the same command line).
#pragma once
#include <string>
#include <vector>

#include "engine/pipeline/stage_runner.h"

namespace pipellm {

struct WorkerOptions {
  std::string config;
  std::string model;       // overrides the config's model
  std::string prompt;      // --prompt: text (the head tokenizes)
  bool have_prompt = false;
  std::string tokens;      // --tokens "1 2 3": token ids
  std::string requests;    // --requests FILE: JSON lines {"prompt"|"tokens", "max_tokens", sampling keys}
  int max_tokens = 32;     // -n
  SamplingSpec sampling;   // --temp, --top-k, --top-p, --min-p, --repeat-penalty, --seed
  bool ignore_eos = false;
  std::string json_out;    // --json FILE: per-request results (and logits with --logits)
  bool logits = false;
  int threads = -1;        // overrides the config's threads
  bool plan_only = false;  // print the plan and exit
  bool quiet = false;      // no plan / stats on stderr
  std::string coordinator; // --coordinator host:port: serve requests from pipellm-coordinator
  std::string pid_file;    // tests: each rank writes its pid to PID_FILE.rank<r>
  int step_delay_ms = 0;   // tests: the head sleeps this long per step
  int fault_rank = -1;     // tests: --fault-rank R --fault-step S --fault-kind throw|kill
  FaultInjection fault;
};

// Throws InvalidArgument naming the flag. Sets `help` for -h/--help. With no --prompt,
// --tokens, --requests or --coordinator the config's `coordinator:` must say where to serve
// (checked once the config is read).
WorkerOptions parse_worker_options(int argc, char** argv, bool& help);
void print_worker_usage();

}  // namespace pipellm
