// The head's request loop for a whole-model Stage in one process: takes requests from a
// HeadLink and runs them with continuous batching (decode tokens of running sequences and
// prompt chunks of new ones share a batch), sampling with engine/runtime's Sampler, and sends
// tokens back. Used by the coordinator's in-process backend and by pipellm-link-head
// (`pipellm-stage --coordinator` serves through StageRunner::serve_head + SchedulerBridge).
// Requests get the same tokens as engine/runtime's generate() for the same prompt and
// sampling parameters.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "engine/link/coordinator_link.h"
#include "engine/model/stage.h"

namespace pipellm::link {

struct HeadLoopOptions {
  int max_batch_tokens = 512;  // tokens per forward call
  int prefill_chunk = 256;     // prompt tokens of one sequence per forward call
  int idle_poll_ms = 100;      // link poll timeout while nothing runs
  int debug_step_delay_ms = 0; // tests: sleep this long per step (long streams to cancel or kill)
  int stats_interval_ms = 250; // StageStats at most this often (while they change)
  std::string device = "cpu";  // the stage's device, as StageStats names it
};

// The Hello a whole-model stage sends: model sizes, n_ctx, its KV slots.
HelloMsg hello_for(const Stage& model, const std::string& model_name, int n_stages, const std::string& plan);

class HeadLoop {
 public:
  // `model` must be first and last; its n_slots() sequences run at once.
  HeadLoop(Stage& model, HeadLink& link, const HeadLoopOptions& opt);
  ~HeadLoop();

  // Serves until a Shutdown message or `stop` becomes true (open requests end Cancelled).
  // Throws LinkClosed when the coordinator goes away. A failing forward pass ends the
  // affected requests with Error messages; the loop goes on.
  void run(const std::atomic<bool>* stop = nullptr);

 private:
  struct Seq;
  void handle(const CoordinatorMessage& m, bool& shutdown);
  void submit(const SubmitRequest& r);
  void cancel(uint64_t id);
  void admit();
  void step();
  void finish(Seq& s, FinishReason reason);
  void fail_all(const std::string& why);
  void report_stats();

  Stage& model_;
  HeadLink& link_;
  HeadLoopOptions opt_;
  std::vector<std::unique_ptr<Seq>> slots_;  // index = KV slot; null when free
  std::deque<std::unique_ptr<Seq>> waiting_;
  std::vector<float> logits_;
  StageStatsMsg stats_;  // rank 0, the only stage; transfer time stays 0
  int64_t stats_steps_sent_ = 0;
  std::chrono::steady_clock::time_point stats_sent_{};
};

}  // namespace pipellm::link
