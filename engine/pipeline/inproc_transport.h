// In-process transport: the ranks of a pipeline are threads of one process (tests, and
// `pipellm` runs that split a model into stages without MPI). One InprocHub links N ranks;
// each rank uses its own InprocTransport. abort() from any rank wakes every blocked receive on
// the others with an Error naming the failed rank.
#pragma once
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "engine/pipeline/transport.h"

namespace pipellm {

class InprocHub {
 public:
  explicit InprocHub(int n_ranks);
  int size() const { return n_; }

  void push(int from, int to, std::vector<uint8_t> bytes);
  std::vector<uint8_t> pop(int from, int to);  // blocks; throws after abort
  bool wait_nonempty(int from, int to, std::chrono::microseconds wait);  // throws after abort
  void abort(int rank, const std::string& what);
  bool aborted() const;

 private:
  struct Queue {
    std::deque<std::vector<uint8_t>> items;
  };
  int n_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Queue> queues_;  // [from * n + to]
  bool aborted_ = false;
  std::string abort_what_;
};

class InprocTransport : public Transport {
 public:
  InprocTransport(InprocHub& hub, int rank) : hub_(hub), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return hub_.size(); }
  const char* name() const override { return "inproc"; }
  void send_message(int peer, std::vector<uint8_t> bytes) override;
  std::vector<uint8_t> recv_message(int peer) override;
  bool poll_message(int peer, std::chrono::microseconds wait) override;
  void send_activations(int peer, const ActivationRows& rows, size_t count) override;
  void recv_activations(int peer, const ActivationRows& rows, size_t count) override;
  void flush() override {}
  void abort(const std::string& what) override;

 private:
  void check_peer(int peer) const;
  InprocHub& hub_;
  int rank_;
};

}  // namespace pipellm
