#include "coordinator/metrics.h"

#include <cmath>
#include <cstdio>
#include <tuple>

namespace pipellm::coord {

namespace {

std::string fmt(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

std::vector<double> latency_bounds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

}  // namespace

std::string prom_label(const std::string& v) {
  std::string s;
  for (char c : v) {
    if (c == '\\') s += "\\\\";
    else if (c == '"') s += "\\\"";
    else if (c == '\n') s += "\\n";
    else s += c;
  }
  return s;
}

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), buckets_(bounds_.size(), 0) {}

void Histogram::observe(double v) {
  if (!std::isfinite(v)) return;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (v <= bounds_[i]) {
      ++buckets_[i];
      break;
    }
  }
  sum_ += v;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name) const {
  // `name` may carry labels: "x{door=\"http\"}" -> x_bucket{door="http",le=..}.
  std::string base = name, labels;
  const size_t brace = name.find('{');
  if (brace != std::string::npos) {
    base = name.substr(0, brace);
    labels = name.substr(brace + 1, name.size() - brace - 2) + ",";
  }
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += buckets_[i];
    out += base + "_bucket{" + labels + "le=\"" + fmt(bounds_[i]) + "\"} " + std::to_string(cum) + "\n";
  }
  out += base + "_bucket{" + labels + "le=\"+Inf\"} " + std::to_string(count_) + "\n";
  const std::string suffix = labels.empty() ? "" : "{" + labels.substr(0, labels.size() - 1) + "}";
  out += base + "_sum" + suffix + " " + fmt(sum_) + "\n";
  out += base + "_count" + suffix + " " + std::to_string(count_) + "\n";
}

Metrics::Metrics() : ttft_(latency_bounds()), itl_(latency_bounds()) {}

void Metrics::count_request(const std::string& front_door, const std::string& route, const std::string& status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[std::make_tuple(front_door, route, status)];
}

void Metrics::count_refusal(const std::string& front_door, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  ++refusals_[{front_door, reason}];
}

void Metrics::add_prompt_tokens(uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  prompt_tokens_ += n;
}

void Metrics::add_cached_prompt_tokens(uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  cached_prompt_tokens_ += n;
}

void Metrics::add_generated_tokens(uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  generated_tokens_ += n;
}

void Metrics::observe_time_to_first_token(double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  ttft_.observe(seconds);
}

void Metrics::observe_inter_token_latency(double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  itl_.observe(seconds);
}

void Metrics::observe_request_duration(const std::string& front_door, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = duration_.find(front_door);
  if (it == duration_.end()) it = duration_.emplace(front_door, Histogram(latency_bounds())).first;
  it->second.observe(seconds);
}

StageStats stage_stats_of(const link::StageStatsMsg& m) {
  StageStats s;
  s.stage = m.rank;
  s.device = m.device;
  const double steps = static_cast<double>(m.steps);
  s.step_seconds_avg = m.steps > 0 ? m.step_seconds / steps : 0.0;
  s.transfer_seconds_avg = m.steps > 0 ? m.transfer_seconds / steps : 0.0;
  s.gpu_memory_bytes = m.gpu_bytes > 0 ? static_cast<double>(m.gpu_bytes) : -1.0;
  return s;
}

std::vector<StageStats> stage_stats_of(const std::vector<link::StageStatsMsg>& all) {
  std::vector<StageStats> out;
  out.reserve(all.size());
  for (const auto& m : all) out.push_back(stage_stats_of(m));
  return out;
}

void Metrics::set_stage_stats(std::vector<StageStats> stages) {
  std::lock_guard<std::mutex> lock(mu_);
  stages_ = std::move(stages);
}

std::string Metrics::render(const SchedulerStats& sched, bool serving) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  header(out, "pipellm_up", "gauge", "1 while the model stages are serving");
  out += "pipellm_up " + std::string(serving ? "1" : "0") + "\n";

  header(out, "pipellm_requests_total", "counter", "Finished front-door requests by route and status");
  for (const auto& [k, n] : requests_) {
    out += "pipellm_requests_total{front_door=\"" + prom_label(std::get<0>(k)) + "\",route=\"" +
           prom_label(std::get<1>(k)) + "\",status=\"" + prom_label(std::get<2>(k)) + "\"} " + std::to_string(n) + "\n";
  }
  header(out, "pipellm_refusals_total", "counter", "Refused requests by front door and reason");
  for (const auto& [k, n] : refusals_) {
    out += "pipellm_refusals_total{front_door=\"" + prom_label(k.first) + "\",reason=\"" + prom_label(k.second) +
           "\"} " + std::to_string(n) + "\n";
  }
  header(out, "pipellm_queue_depth", "gauge", "Requests waiting for a sequence slot");
  out += "pipellm_queue_depth " + std::to_string(sched.queued) + "\n";
  header(out, "pipellm_active_sequences", "gauge", "Sequences being generated by the stages");
  out += "pipellm_active_sequences " + std::to_string(sched.in_flight) + "\n";
  header(out, "pipellm_scheduler_submitted_total", "counter", "Requests accepted by the scheduler");
  out += "pipellm_scheduler_submitted_total " + std::to_string(sched.submitted) + "\n";
  header(out, "pipellm_scheduler_rejected_total", "counter", "Requests refused by the scheduler");
  out += "pipellm_scheduler_rejected_total " + std::to_string(sched.rejected) + "\n";
  header(out, "pipellm_prompt_tokens_total", "counter", "Prompt tokens processed by the stages");
  out += "pipellm_prompt_tokens_total " + std::to_string(prompt_tokens_) + "\n";
  header(out, "pipellm_prompt_tokens_cached_total", "counter",
         "Prompt tokens a slot's cache held, not processed again (included in pipellm_prompt_tokens_total)");
  out += "pipellm_prompt_tokens_cached_total " + std::to_string(cached_prompt_tokens_) + "\n";
  header(out, "pipellm_generated_tokens_total", "counter", "Tokens generated by the stages");
  out += "pipellm_generated_tokens_total " + std::to_string(generated_tokens_) + "\n";

  header(out, "pipellm_time_to_first_token_seconds", "histogram",
         "From a request reaching the stages to its first generated token");
  ttft_.render(out, "pipellm_time_to_first_token_seconds");
  header(out, "pipellm_inter_token_latency_seconds", "histogram", "Between consecutive tokens of one sequence");
  itl_.render(out, "pipellm_inter_token_latency_seconds");
  header(out, "pipellm_request_duration_seconds", "histogram", "Front-door generation requests, arrival to end");
  for (const auto& [door, h] : duration_) {
    h.render(out, "pipellm_request_duration_seconds{front_door=\"" + prom_label(door) + "\"}");
  }

  if (!stages_.empty()) {
    header(out, "pipellm_stage_step_seconds", "gauge", "Mean compute time of a pipeline step, per stage");
    for (const auto& s : stages_) {
      out += "pipellm_stage_step_seconds{stage=\"" + std::to_string(s.stage) + "\",device=\"" + prom_label(s.device) +
             "\"} " + fmt(s.step_seconds_avg) + "\n";
    }
    header(out, "pipellm_stage_transfer_seconds", "gauge", "Mean activation transfer time of a step, per stage");
    for (const auto& s : stages_) {
      out += "pipellm_stage_transfer_seconds{stage=\"" + std::to_string(s.stage) + "\",device=\"" +
             prom_label(s.device) + "\"} " + fmt(s.transfer_seconds_avg) + "\n";
    }
    header(out, "pipellm_stage_gpu_memory_bytes", "gauge", "GPU memory used, per stage");
    for (const auto& s : stages_) {
      if (s.gpu_memory_bytes < 0) continue;
      out += "pipellm_stage_gpu_memory_bytes{stage=\"" + std::to_string(s.stage) + "\",device=\"" +
             prom_label(s.device) + "\"} " + fmt(s.gpu_memory_bytes) + "\n";
    }
  }
  return out;
}

}  // namespace pipellm::coord
