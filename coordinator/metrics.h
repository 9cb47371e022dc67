// Serving metrics in the Prometheus text exposition format (GET /metrics). One Metrics object
// per coordinator, shared by the front doors (requests by route and status) and by the
// MeteredBackend (tokens, time to first token, inter-token latency). Queue depth and active
// sequences are read from the scheduler when the page is rendered. Per-stage step time,
// transfer time and GPU memory appear once a backend reports them (set_stage_stats).
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/request_scheduler.h"
#include "engine/link/messages.h"

namespace pipellm::coord {

// A cumulative histogram with fixed upper bounds (seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  // Appends `name_bucket{le=..}`, `name_sum`, `name_count` lines.
  void render(std::string& out, const std::string& name) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> buckets_;  // per bound (not cumulative); +Inf is count_
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

struct StageStats {
  int stage = 0;
  std::string device;              // "cpu", "cuda:0"
  double step_seconds_avg = 0;     // mean compute time of a step
  double transfer_seconds_avg = 0; // mean activation send/recv time of a step
  double gpu_memory_bytes = -1;    // <0: not reported
};

// A stage's running totals from the head (link StageStats) as per-step means; GPU memory is
// left out (-1) for a stage that reports none.
StageStats stage_stats_of(const link::StageStatsMsg& m);
std::vector<StageStats> stage_stats_of(const std::vector<link::StageStatsMsg>& all);

class Metrics {
 public:
  Metrics();

  // One finished request on a front door: `front_door` "http"/"grpc", `route` a fixed name
  // ("/v1/completions", "Generate"), `status` "200"/"OK"...
  void count_request(const std::string& front_door, const std::string& route, const std::string& status);
  // A refusal by name ("queue_full", "invalid_api_key", "too_many_streams", ...).
  void count_refusal(const std::string& front_door, const std::string& reason);
  void add_prompt_tokens(uint64_t n);
  void add_cached_prompt_tokens(uint64_t n);
  void add_generated_tokens(uint64_t n);
  void observe_time_to_first_token(double seconds);
  void observe_inter_token_latency(double seconds);
  void observe_request_duration(const std::string& front_door, double seconds);
  void set_stage_stats(std::vector<StageStats> stages);

  // The whole page; `sched` for queue depth and sequences in flight, `serving` for up/down.
  std::string render(const SchedulerStats& sched, bool serving) const;

 private:
  mutable std::mutex mu_;
  std::map<std::tuple<std::string, std::string, std::string>, uint64_t> requests_;
  std::map<std::pair<std::string, std::string>, uint64_t> refusals_;
  uint64_t prompt_tokens_ = 0, cached_prompt_tokens_ = 0, generated_tokens_ = 0;
  Histogram ttft_, itl_;
  std::map<std::string, Histogram> duration_;
  std::vector<StageStats> stages_;
};

// Escapes a Prometheus label value (backslash, double quote, newline).
std::string prom_label(const std::string& v);

}  // namespace pipellm::coord
