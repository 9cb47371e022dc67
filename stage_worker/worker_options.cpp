#include "stage_worker/worker_options.h"

#include <cstdio>
#include <cstdlib>

#include "base/error.h"

namespace pipellm {

void print_worker_usage() {
  std::fprintf(stdout,
               "usage: mpirun -np N pipellm-stage --config X.yaml [options]\n"
               "  --config FILE        stage config (configs/*.yaml); N must equal its number of stages\n"
               "  --model FILE         override the config's model\n"
               "  --prompt TEXT        generate from a text prompt (head tokenizes, streams text)\n"
               "  --tokens \"1 2 3\"     generate from token ids\n"
               "  --requests FILE      JSON lines, one request each: {\"prompt\": \"..\"} or {\"tokens\": [..]},\n"
               "                       optional max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, seed\n"
               "  -n N                 tokens to generate per request (default 32)\n"
               "  --temp T --top-k K --top-p P --min-p M --repeat-penalty R --seed S   sampling (default greedy)\n"
               "  --ignore-eos         do not stop at end-of-generation tokens\n"
               "  --json FILE          write the results (token ids, finish reason, stats) as JSON\n"
               "  --logits             include each generated token's logits in --json\n"
               "  --coordinator ADDR   serve requests from pipellm-coordinator at host:port (the default\n"
               "                       when the config has `coordinator:` and no prompt is given)\n"
               "  --threads N          CPU threads per rank (overrides the config)\n"
               "  --plan               print the partition plan and exit\n"
               "  --quiet              no plan or statistics on stderr\n"
               "  --fault-rank R --fault-step S --fault-kind throw|kill   (tests) make rank R fail\n"
               "  --pid-file PATH      (tests) rank r writes its pid to PATH.rank<r>\n"
               "  --debug-step-delay-ms N   (tests) the head sleeps N ms per step\n");
}

namespace {

int to_int(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || x < -1000000000L || x > 1000000000L) {
    throw InvalidArgument(flag + ": expected an integer, got '" + v + "'");
  }
  return static_cast<int>(x);
}

float to_float(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const float x = std::strtof(v.c_str(), &end);
  if (v.empty() || *end != '\0') throw InvalidArgument(flag + ": expected a number, got '" + v + "'");
  return x;
}

}  // namespace

WorkerOptions parse_worker_options(int argc, char** argv, bool& help) {
  WorkerOptions o;
  help = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw InvalidArgument(a + ": missing value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") help = true;
    else if (a == "--config") o.config = value();
    else if (a == "--model" || a == "-m") o.model = value();
    else if (a == "--prompt" || a == "-p") { o.prompt = value(); o.have_prompt = true; }
    else if (a == "--tokens") o.tokens = value();
    else if (a == "--requests") o.requests = value();
    else if (a == "-n" || a == "--max-tokens") o.max_tokens = to_int(a, value());
    else if (a == "--temp") o.sampling.temperature = to_float(a, value());
    else if (a == "--top-k") o.sampling.top_k = to_int(a, value());
    else if (a == "--top-p") o.sampling.top_p = to_float(a, value());
    else if (a == "--min-p") o.sampling.min_p = to_float(a, value());
    else if (a == "--repeat-penalty") o.sampling.repeat_penalty = to_float(a, value());
    else if (a == "--seed") o.sampling.seed = static_cast<uint64_t>(to_int(a, value()));
    else if (a == "--ignore-eos") o.ignore_eos = true;
    else if (a == "--json") o.json_out = value();
    else if (a == "--logits") o.logits = true;
    else if (a == "--threads") o.threads = to_int(a, value());
    else if (a == "--coordinator") {
      o.coordinator = value();
      if (o.coordinator.empty()) throw InvalidArgument("--coordinator: empty address");
    }
    else if (a == "--pid-file") o.pid_file = value();
    else if (a == "--debug-step-delay-ms") o.step_delay_ms = to_int(a, value());
    else if (a == "--plan") o.plan_only = true;
    else if (a == "--quiet") o.quiet = true;
    else if (a == "--fault-rank") o.fault_rank = to_int(a, value());
    else if (a == "--fault-step") o.fault.at_step = to_int(a, value());
    else if (a == "--fault-kind") {
      const std::string k = value();
      if (k == "throw") o.fault.kind = FaultInjection::Kind::Throw;
      else if (k == "kill") o.fault.kind = FaultInjection::Kind::Kill;
      else throw InvalidArgument("--fault-kind: expected throw or kill, got '" + k + "'");
    } else {
      throw InvalidArgument("unknown option '" + a + "' (see --help)");
    }
  }
  if (help) return o;
  if (o.config.empty()) throw InvalidArgument("--config is required");
  if (o.max_tokens < 1) throw InvalidArgument("-n: must be at least 1");
  if (o.fault_rank >= 0 && o.fault.kind == FaultInjection::Kind::None) o.fault.kind = FaultInjection::Kind::Throw;
  const int inputs = (o.have_prompt ? 1 : 0) + (o.tokens.empty() ? 0 : 1) + (o.requests.empty() ? 0 : 1);
  if (inputs > 1) throw InvalidArgument("give one of --prompt, --tokens, --requests");
  if (inputs > 0 && !o.coordinator.empty()) throw InvalidArgument("--coordinator serves requests: drop --prompt, --tokens, --requests");
  if (o.step_delay_ms < 0) throw InvalidArgument("--debug-step-delay-ms: must be >= 0");
  return o;
}

}  // namespace pipellm
