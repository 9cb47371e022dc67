// A Backend decorator that feeds Metrics: it sits between the RequestScheduler and the real
// backend, timing each request from its dispatch to the stages (first token, gaps between
// tokens) and counting prompt and generated tokens. Both front doors are measured alike
// because both go through the one scheduler.
#pragma once
#include <chrono>
#include <mutex>
#include <unordered_map>

#include "coordinator/backend.h"
#include "coordinator/metrics.h"

namespace pipellm::coord {

class MeteredBackend : public Backend, public BackendListener {
 public:
  MeteredBackend(Backend& inner, Metrics& metrics) : inner_(inner), metrics_(metrics) {}

  // Backend
  void start(BackendListener* listener) override;
  void submit(const link::SubmitRequest& r) override;
  void cancel(uint64_t id) override { inner_.cancel(id); }
  void stop() override { inner_.stop(); }
  BackendState state() const override { return inner_.state(); }
  std::string describe() const override { return inner_.describe(); }

  // BackendListener
  void on_up(const link::HelloMsg& hello) override { listener_->on_up(hello); }
  void on_down(const std::string& reason) override;
  void on_token(const link::TokenMsg& t) override;
  void on_finished(const link::FinishedMsg& m) override;
  void on_request_error(uint64_t id, const std::string& message) override;

 private:
  using clock = std::chrono::steady_clock;
  struct Timing {
    clock::time_point dispatched, last;
    bool any = false;
  };
  Backend& inner_;
  Metrics& metrics_;
  BackendListener* listener_ = nullptr;
  std::mutex mu_;
  std::unordered_map<uint64_t, Timing> timing_;
};

}  // namespace pipellm::coord
