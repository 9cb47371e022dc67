#include "engine/pipeline/inproc_transport.h"

#include <algorithm>
#include <cstring>

#include "base/error.h"

namespace pipellm {

InprocHub::InprocHub(int n_ranks) : n_(n_ranks), queues_(static_cast<size_t>(n_ranks) * static_cast<size_t>(n_ranks)) {
  if (n_ranks < 1) throw InvalidArgument("inproc transport: need at least one rank");
}

void InprocHub::push(int from, int to, std::vector<uint8_t> bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queues_[static_cast<size_t>(from * n_ + to)].items.push_back(std::move(bytes));
  }
  cv_.notify_all();
}

std::vector<uint8_t> InprocHub::pop(int from, int to) {
  std::unique_lock<std::mutex> lock(mu_);
  Queue& q = queues_[static_cast<size_t>(from * n_ + to)];
  cv_.wait(lock, [&] { return aborted_ || !q.items.empty(); });
  if (aborted_) throw Error("pipeline aborted: " + abort_what_);
  std::vector<uint8_t> b = std::move(q.items.front());
  q.items.pop_front();
  return b;
}

bool InprocHub::wait_nonempty(int from, int to, std::chrono::microseconds wait) {
  std::unique_lock<std::mutex> lock(mu_);
  const Queue& q = queues_[static_cast<size_t>(from * n_ + to)];
  const auto limit = std::min(wait, std::chrono::microseconds(std::chrono::hours(24)));
  cv_.wait_for(lock, limit, [&] { return aborted_ || !q.items.empty(); });
  if (aborted_) throw Error("pipeline aborted: " + abort_what_);
  return !q.items.empty();
}

void InprocHub::abort(int rank, const std::string& what) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!aborted_) {
      aborted_ = true;
      abort_what_ = "rank " + std::to_string(rank) + " failed: " + what;
    }
  }
  cv_.notify_all();
}

bool InprocHub::aborted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return aborted_;
}

void InprocTransport::check_peer(int peer) const {
  if (peer < 0 || peer >= hub_.size() || peer == rank_) {
    throw InvalidArgument("inproc transport: rank " + std::to_string(rank_) + " cannot talk to rank " + std::to_string(peer));
  }
}

void InprocTransport::send_message(int peer, std::vector<uint8_t> bytes) {
  check_peer(peer);
  hub_.push(rank_, peer, std::move(bytes));
}

std::vector<uint8_t> InprocTransport::recv_message(int peer) {
  check_peer(peer);
  return hub_.pop(peer, rank_);
}

bool InprocTransport::poll_message(int peer, std::chrono::microseconds wait) {
  check_peer(peer);
  return hub_.wait_nonempty(peer, rank_, wait);
}

void InprocTransport::send_activations(int peer, const ActivationRows& rows, size_t count) {
  const float* data = rows.data;
  check_peer(peer);
  if (rows.space != MemorySpace::Host) throw InvalidArgument("inproc transport: activations must be in host memory");
  std::vector<uint8_t> b(count * sizeof(float));
  if (count != 0) std::memcpy(b.data(), data, b.size());
  hub_.push(rank_, peer, std::move(b));
}

void InprocTransport::recv_activations(int peer, const ActivationRows& rows, size_t count) {
  float* data = rows.data;
  check_peer(peer);
  if (rows.space != MemorySpace::Host) throw InvalidArgument("inproc transport: activations must be in host memory");
  const std::vector<uint8_t> b = hub_.pop(peer, rank_);
  if (b.size() != count * sizeof(float)) {
    throw Error("inproc transport: rank " + std::to_string(rank_) + " expected " + std::to_string(count) +
                " activations from rank " + std::to_string(peer) + ", got " + std::to_string(b.size() / sizeof(float)));
  }
  if (count != 0) std::memcpy(data, b.data(), b.size());
}

void InprocTransport::abort(const std::string& what) { hub_.abort(rank_, what); }

}  // namespace pipellm
