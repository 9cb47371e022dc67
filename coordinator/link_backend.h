// A Backend whose head stage speaks the link protocol (engine/link): it listens on a
// CoordinatorLink, has its HeadLauncher start the head with a fresh secret, waits for the Hello
// carrying that secret (any other connection is dropped and logged), then relays messages.
// A watcher thread reads the link and watches the head: when the link drops, the head exits or
// the stages hang (no heartbeat, or no step back within the deadline: StageWatchdog), the
// listener hears on_down(reason); with restart_on_failure the head is launched again (a hung
// job is killed first).
// A writer thread sends queued messages so no caller ever blocks on the socket.
// The head's StageStats go to `on_stage_stats` (all stages heard from since the last Hello, in
// rank order), which the coordinator points at Metrics::set_stage_stats.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "coordinator/backend.h"
#include "coordinator/head_launcher.h"
#include "coordinator/stage_watchdog.h"
#include "engine/link/coordinator_link.h"

namespace pipellm::coord {

struct LinkBackendOptions {
  std::string listen = "127.0.0.1:0";  // where the head connects
  // The secret the head must say in its Hello. Empty: a fresh one for every launch (the
  // launcher hands it over); set for stages started by hand (attach), which know it beforehand.
  std::string secret;
  std::chrono::milliseconds handshake{10000};  // connect -> Hello, else the connection is dropped
  bool restart_on_failure = false;
  int max_restarts = 10;                              // then stay down
  std::chrono::milliseconds startup_timeout{120000};  // launch -> Hello
  std::chrono::milliseconds restart_delay{500};
  std::chrono::milliseconds stop_grace{5000};  // Shutdown -> SIGTERM -> SIGKILL
  HangPolicy hang;  // when a silent or stalled head counts as hung (stage_watchdog.h)
  // Called on the watcher thread with every stage's latest totals (empty after a restart).
  std::function<void(const std::vector<link::StageStatsMsg>&)> on_stage_stats;
};

class LinkBackend : public Backend {
 public:
  LinkBackend(std::unique_ptr<HeadLauncher> launcher, const LinkBackendOptions& opt);
  ~LinkBackend() override;

  void start(BackendListener* listener) override;
  void submit(const link::SubmitRequest& r) override;
  void cancel(uint64_t id) override;
  void stop() override;
  BackendState state() const override { return state_.load(); }
  std::string describe() const override;
  std::string link_address() const { return link_.address(); }
  int restarts() const { return restarts_.load(); }

 private:
  void watch();
  void write();
  void enqueue(link::CoordinatorMessage m);
  bool wait_for_hello();
  void serve_connected();
  // `expect_exit`: the stages are dying by themselves (give them a moment to say why); false for
  // a hang, where nothing will exit until killed.
  void go_down(const std::string& reason, bool expect_exit = true);
  std::string head_exit_reason(std::chrono::milliseconds wait);
  bool sleep_unless_stopping(std::chrono::milliseconds d);
  void publish_stage_stats();

  std::unique_ptr<HeadLauncher> launcher_;
  LinkBackendOptions opt_;
  link::CoordinatorLink link_;
  BackendListener* listener_ = nullptr;
  std::unique_ptr<HeadProcess> head_;  // watcher thread only
  std::string secret_;                 // this launch's; watcher thread only
  int n_stages_ = 1;                   // the connected head's pipeline; watcher thread only
  std::map<int32_t, link::StageStatsMsg> stage_stats_;  // by rank; watcher thread only
  std::atomic<BackendState> state_{BackendState::Starting};
  std::atomic<bool> stopping_{false};
  std::atomic<int> restarts_{0};

  std::mutex out_mu_;
  std::condition_variable out_cv_;
  std::deque<link::CoordinatorMessage> outbox_;

  std::thread watcher_;
  std::thread writer_;
};

}  // namespace pipellm::coord
