// A fixed pool of worker threads that run one job at a time, split into `n` parts.
// The calling thread takes part 0, so a pool of size 1 has no worker threads at all.
// Workers spin briefly before sleeping: a decode step issues hundreds of small jobs.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pipellm {

class ThreadPool {
 public:
  // n_threads <= 0: one per hardware thread.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(ith, nth) for ith in [0, nth) on nth = size() threads and waits for all.
  // The first exception thrown by a part is rethrown here after every part has finished.
  void run(const std::function<void(int ith, int nth)>& fn);

  // Splits [0, n) into contiguous chunks, one per thread: fn(begin, end).
  void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn);

  static int default_threads();
  // `threads`, or (0) one per hardware thread but one: for pools beside a thread that keeps
  // driving other work (a CUDA stream's host functions beside the thread launching the steps).
  static int threads_beside_one(int threads) { return threads > 0 ? threads : std::max(1, default_threads() - 1); }

 private:
  void worker(int ith);
  void run_part(int ith);

  int n_threads_ = 1;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_cv_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
};

}  // namespace pipellm
