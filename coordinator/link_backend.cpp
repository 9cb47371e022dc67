#include "coordinator/link_backend.h"

#include <spdlog/spdlog.h>

namespace pipellm::coord {

const char* backend_state_name(BackendState s) {
  switch (s) {
    case BackendState::Starting: return "starting";
    case BackendState::Serving: return "serving";
    case BackendState::Down: return "down";
    case BackendState::Stopped: return "stopped";
  }
  return "?";
}

LinkBackend::LinkBackend(std::unique_ptr<HeadLauncher> launcher, const LinkBackendOptions& opt)
    : launcher_(std::move(launcher)), opt_(opt), link_(opt.listen, opt.handshake) {
  link_.on_refused([](const std::string& why) { spdlog::warn("backend: {}", why); });
}

LinkBackend::~LinkBackend() { stop(); }

std::string LinkBackend::describe() const { return launcher_->describe() + " (link " + link_.address() + ")"; }

void LinkBackend::start(BackendListener* listener) {
  listener_ = listener;
  watcher_ = std::thread([this] { watch(); });
  writer_ = std::thread([this] { write(); });
}

void LinkBackend::enqueue(link::CoordinatorMessage m) {
  {
    std::lock_guard<std::mutex> lock(out_mu_);
    outbox_.push_back(std::move(m));
  }
  out_cv_.notify_one();
}

void LinkBackend::submit(const link::SubmitRequest& r) { enqueue(r); }
void LinkBackend::cancel(uint64_t id) { enqueue(link::CancelRequest{id}); }

void LinkBackend::write() {
  for (;;) {
    link::CoordinatorMessage m;
    {
      std::unique_lock<std::mutex> lock(out_mu_);
      out_cv_.wait(lock, [&] { return !outbox_.empty() || stopping_.load(); });
      if (outbox_.empty()) return;
      m = std::move(outbox_.front());
      outbox_.pop_front();
    }
    try {
      link_.send(m);
    } catch (const link::LinkError& e) {
      // The watcher reports the head going down; requests sent meanwhile are failed there.
      spdlog::debug("link: dropped a message for the head: {}", e.what());
    }
  }
}

bool LinkBackend::sleep_unless_stopping(std::chrono::milliseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
    if (stopping_.load()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return !stopping_.load();
}

void LinkBackend::watch() {
  bool first = true;
  while (!stopping_.load()) {
    if (!first) {
      if (!opt_.restart_on_failure || restarts_.load() >= opt_.max_restarts) {
        if (opt_.restart_on_failure) spdlog::error("backend: {} restarts, giving up", restarts_.load());
        break;  // stay down
      }
      if (!sleep_unless_stopping(opt_.restart_delay)) break;
      restarts_.fetch_add(1);
      spdlog::warn("backend: restarting the head (restart {})", restarts_.load());
    }
    first = false;
    state_ = BackendState::Starting;
    try {
      secret_ = opt_.secret.empty() ? link::new_link_secret() : opt_.secret;
      head_ = launcher_->launch(link_.address(), secret_);
    } catch (const std::exception& e) {
      go_down(std::string("cannot launch the stages: ") + e.what());
      continue;
    }
    if (!wait_for_hello()) continue;
    serve_connected();
  }
  if (head_) {
    // After Shutdown the head exits by itself; signals only if it does not.
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2000);
    while (!head_->exited() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    head_->terminate(opt_.stop_grace);
  }
}

bool LinkBackend::wait_for_hello() {
  const auto deadline = std::chrono::steady_clock::now() + opt_.startup_timeout;
  while (!stopping_.load()) {
    if (std::chrono::steady_clock::now() > deadline) {
      go_down("the head stage did not connect within " + std::to_string(opt_.startup_timeout.count()) + " ms");
      return false;
    }
    if (auto why = head_ ? head_->exited() : std::nullopt) {
      go_down("the stages exited before connecting: " + *why);
      return false;
    }
    try {
      const auto h = link_.accept_head(secret_, 100);
      if (h) {
        spdlog::info("backend: head connected: model {} ({}), n_ctx {}, {} sequences, {} stage(s) {}", h->model_name,
                     h->arch, h->n_ctx, h->max_sequences, h->n_stages, h->plan);
        {
          // Anything queued while the head was away belongs to requests already failed.
          std::lock_guard<std::mutex> lock(out_mu_);
          outbox_.clear();
        }
        n_stages_ = h->n_stages;
        stage_stats_.clear();  // a new head: its stages report afresh
        publish_stage_stats();
        state_ = BackendState::Serving;
        listener_->on_up(*h);
        return true;
      }
    } catch (const link::LinkError& e) {
      spdlog::warn("backend: head connection failed during startup: {}", e.what());
    }
  }
  return false;
}

void LinkBackend::serve_connected() {
  using clock = std::chrono::steady_clock;
  auto next_refusal = clock::now();
  StageWatchdog watchdog(opt_.hang, n_stages_, clock::now());
  while (!stopping_.load()) {
    try {
      if (clock::now() >= next_refusal) {
        link_.refuse_newcomers();  // one head per launch
        next_refusal = clock::now() + std::chrono::milliseconds(100);
      }
      // Checked after every message too: a flood of frames must not hide a stalled pipeline.
      if (auto why = watchdog.hung(clock::now())) {
        link_.disconnect();
        go_down("the stages hang: " + *why, /*expect_exit=*/false);
        return;
      }
      auto m = link_.receive(100);
      if (!m) {
        if (auto why = head_ ? head_->exited() : std::nullopt) {
          link_.disconnect();
          go_down("the stages exited: " + *why);
          return;
        }
        continue;
      }
      if (const auto* p = std::get_if<link::ProgressMsg>(&*m)) {
        watchdog.progress(*p, clock::now());
        continue;
      }
      watchdog.heard(clock::now());
      if (const auto* t = std::get_if<link::TokenMsg>(&*m)) {
        listener_->on_token(*t);
      } else if (const auto* f = std::get_if<link::FinishedMsg>(&*m)) {
        listener_->on_finished(*f);
      } else if (const auto* e = std::get_if<link::ErrorMsg>(&*m)) {
        if (e->id < 0) {
          spdlog::error("backend: head reported: {}", e->message);
        } else {
          listener_->on_request_error(static_cast<uint64_t>(e->id), e->message);
        }
      } else if (const auto* s = std::get_if<link::StageStatsMsg>(&*m)) {
        stage_stats_[s->rank] = *s;
        publish_stage_stats();
      } else {
        spdlog::warn("backend: unexpected second Hello from the head; ignored");
      }
    } catch (const link::LinkError& e) {
      if (stopping_.load()) return;
      go_down("lost the head stage (" + std::string(e.what()) + ")");
      return;
    }
  }
}

void LinkBackend::publish_stage_stats() {
  if (!opt_.on_stage_stats) return;
  std::vector<link::StageStatsMsg> all;
  all.reserve(stage_stats_.size());
  for (const auto& [rank, s] : stage_stats_) all.push_back(s);
  opt_.on_stage_stats(all);
}

std::string LinkBackend::head_exit_reason(std::chrono::milliseconds wait) {
  if (!head_) return "";
  const auto until = std::chrono::steady_clock::now() + wait;
  for (;;) {
    if (auto why = head_->exited()) return ": " + *why;
    if (std::chrono::steady_clock::now() >= until) return "";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void LinkBackend::go_down(const std::string& reason, bool expect_exit) {
  spdlog::error("backend: down: {}", reason);
  state_ = BackendState::Down;
  listener_->on_down(reason);  // open streams end now, not after the process is reaped
  if (head_) {
    // mpirun needs a moment to notice a dead rank and exit; its status goes to the log.
    const std::string why = head_exit_reason(std::chrono::milliseconds(expect_exit ? 3000 : 0));
    if (!why.empty()) spdlog::error("backend: the stages exited{}", why);
    head_->terminate(std::chrono::milliseconds(1000));
    if (why.empty()) {
      if (auto st = head_->exited()) spdlog::error("backend: the stages were stopped: {}", *st);
    }
    head_.reset();
  }
}

void LinkBackend::stop() {
  if (stopping_.exchange(true)) return;
  if (state_.load() == BackendState::Serving) {
    try {
      link_.send(link::ShutdownRequest{});
    } catch (const link::LinkError&) {
    }
  }
  out_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  if (watcher_.joinable()) watcher_.join();  // terminates the head with the grace period
  link_.disconnect();
  state_ = BackendState::Stopped;
}

}  // namespace pipellm::coord
