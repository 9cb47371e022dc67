// The messages of the coordinator <-> head-stage link (see link.md in this folder).
//
// coordinator -> head: SubmitRequest, CancelRequest, ShutdownRequest
// head -> coordinator: HelloMsg, TokenMsg, FinishedMsg, ErrorMsg, StageStatsMsg, ProgressMsg
//
// The stages see token ids only; tokenization and stop strings stay in the coordinator.
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <variant>
#include <vector>

#include "engine/runtime/sampling_spec.h"

namespace pipellm::link {

// 2: the sampling chain; 3: Hello.secret; 4: Progress; 5: grammar; 6: top_logprobs; 7: cache_prompt
constexpr uint32_t kProtocolVersion = 7;

// The same settings the pipeline's step headers carry (engine/runtime/sampling_spec.h).
using SamplingParams = SamplingSpec;

struct SubmitRequest {
  uint64_t id = 0;
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int32_t max_tokens = 0;
  std::vector<int32_t> stop_ids;  // generation ends (reason Stop) at one of these; it is not sent
};

struct CancelRequest {
  uint64_t id = 0;
};

struct ShutdownRequest {};

struct HelloMsg {
  uint32_t protocol_version = kProtocolVersion;
  std::string model_name;
  std::string arch;
  int32_t n_vocab = 0;
  int32_t n_layer = 0;
  int32_t n_embd = 0;
  int32_t n_ctx = 0;          // positions per sequence
  int32_t max_sequences = 0;  // sequences in flight at once
  int32_t n_stages = 1;
  std::string plan;  // human-readable layer partition, e.g. "rank0:[0,4) rank1:[4,8)"
  // The launch's secret (PIPELLM_LINK_SECRET), proving the coordinator launched this head; the
  // coordinator drops a connection whose Hello does not carry the current launch's secret.
  std::string secret;
};

struct TokenMsg {
  uint64_t id = 0;
  int32_t token = 0;
  // The token's natural-log probability when the request asked for it (SamplingSpec::logprobs),
  // else NaN.
  float logprob = std::numeric_limits<float>::quiet_NaN();
  // The request's SamplingSpec::top_logprobs most likely tokens of the same distribution, most
  // likely first (empty when not asked).
  std::vector<TokenLogprob> top_logprobs{};
};

enum class FinishReason : uint8_t { Stop = 0, Length = 1, Cancelled = 2, Error = 3 };
const char* finish_reason_name(FinishReason r);

struct FinishedMsg {
  uint64_t id = 0;
  FinishReason reason = FinishReason::Stop;
  int32_t prompt_tokens = 0;
  int32_t generated_tokens = 0;
  int32_t cached_tokens = 0;  // of the prompt tokens, those the slot's cache held (prompt caching)
};

struct ErrorMsg {
  int64_t id = -1;  // -1: the head itself (not one request)
  std::string message;
};

// One pipeline stage's running totals since it started, for /metrics. The head sends one per
// stage (rank) a few times a second at most, while the figures change.
struct StageStatsMsg {
  int32_t rank = 0;
  std::string device;             // "cpu", "cuda:0"
  int64_t steps = 0;              // micro-steps computed
  double step_seconds = 0.0;      // compute time of those steps
  double transfer_seconds = 0.0;  // time sending and receiving activations
  uint64_t gpu_bytes = 0;         // GPU memory in use; 0 for a CPU stage
};

// The head's heartbeat and the pipeline's progress. The head sends one every 250 ms from a
// thread of its own, so a head busy in a long step still sends it and a stopped head process
// does not; the coordinator judges from it (and from its absence) whether the stages hang
// (coordinator/stage_watchdog.h). All times are as the head measured them when it sent this.
struct ProgressMsg {
  int64_t steps_issued = 0;      // steps the head has sent down the pipeline
  int64_t steps_done = 0;        // steps whose result came back
  double waiting_seconds = 0.0;  // steps are in flight and none came back for this long (0: none in flight)
  double busy_seconds = 0.0;     // the head's loop has been inside one step of its own for this long
  double step_seconds = 0.0;     // the longest step round trip of late (0: none measured yet)
  std::string suspect;           // which rank holds the pipeline up, when the head can tell ("" else)
};

using CoordinatorMessage = std::variant<SubmitRequest, CancelRequest, ShutdownRequest>;
using HeadMessage = std::variant<HelloMsg, TokenMsg, FinishedMsg, ErrorMsg, StageStatsMsg, ProgressMsg>;

}  // namespace pipellm::link
