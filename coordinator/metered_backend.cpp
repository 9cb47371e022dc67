#include "coordinator/metered_backend.h"

namespace pipellm::coord {

void MeteredBackend::start(BackendListener* listener) {
  listener_ = listener;
  inner_.start(this);
}

void MeteredBackend::submit(const link::SubmitRequest& r) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    timing_[r.id] = Timing{clock::now(), {}, false};
  }
  inner_.submit(r);
}

void MeteredBackend::on_down(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    timing_.clear();
  }
  listener_->on_down(reason);
}

void MeteredBackend::on_token(const link::TokenMsg& tm) {
  const uint64_t id = tm.id;
  {
    const auto now = clock::now();
    std::lock_guard<std::mutex> lock(mu_);
    auto it = timing_.find(id);
    if (it != timing_.end()) {
      Timing& t = it->second;
      const auto since = t.any ? t.last : t.dispatched;
      const double s = std::chrono::duration<double>(now - since).count();
      if (t.any) {
        metrics_.observe_inter_token_latency(s);
      } else {
        metrics_.observe_time_to_first_token(s);
      }
      t.any = true;
      t.last = now;
    }
  }
  metrics_.add_generated_tokens(1);
  listener_->on_token(tm);
}

void MeteredBackend::on_finished(const link::FinishedMsg& m) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    timing_.erase(m.id);
  }
  if (m.prompt_tokens > 0) metrics_.add_prompt_tokens(static_cast<uint64_t>(m.prompt_tokens));
  if (m.cached_tokens > 0) metrics_.add_cached_prompt_tokens(static_cast<uint64_t>(m.cached_tokens));
  listener_->on_finished(m);
}

void MeteredBackend::on_request_error(uint64_t id, const std::string& message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    timing_.erase(id);
  }
  listener_->on_request_error(id, message);
}

}  // namespace pipellm::coord
