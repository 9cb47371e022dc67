#include "engine/pipeline/inproc_pipeline.h"

#include <exception>
#include <mutex>
#include <thread>

#include "base/error.h"
#include "engine/pipeline/inproc_transport.h"

namespace pipellm {

namespace {

// The first failure wins: later ranks only see "pipeline aborted" because of it.
class FirstError {
 public:
  void record(int rank, const std::exception& e) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!what_.empty()) return;
    what_ = "rank " + std::to_string(rank) + ": " + e.what();
  }
  void rethrow() const {
    if (!what_.empty()) throw Error(what_);
  }

 private:
  std::mutex mu_;
  std::string what_;
};

}  // namespace

HeadStats run_inproc_pipeline(const std::vector<Stage*>& stages, Scheduler& scheduler,
                              const StageRunner::TokenSink& sink, const InprocOptions& opt) {
  const int n = static_cast<int>(stages.size());
  if (n < 1) throw InvalidArgument("inproc pipeline: no stages");
  InprocHub hub(n);
  FirstError first;
  std::vector<std::thread> threads;
  for (int r = 1; r < n; ++r) {
    threads.emplace_back([&, r] {
      InprocTransport t(hub, r);
      try {
        StageRunner runner(*stages[static_cast<size_t>(r)], t);
        if (r == opt.fault_rank) runner.set_fault(opt.fault);
        if (r == n - 1) runner.set_grammar_vocabulary(opt.grammar_vocab);
        runner.run_follower();
      } catch (const std::exception& e) {
        first.record(r, e);
        t.abort(e.what());
      }
    });
  }
  HeadStats stats;
  {
    InprocTransport t(hub, 0);
    try {
      StageRunner runner(*stages[0], t);
      if (opt.fault_rank == 0) runner.set_fault(opt.fault);
      if (n == 1) runner.set_grammar_vocabulary(opt.grammar_vocab);
      stats = opt.serve ? runner.serve_head(scheduler, sink, opt.serve, std::chrono::milliseconds(20))
                        : runner.run_head(scheduler, sink, opt.return_logits);
    } catch (const std::exception& e) {
      first.record(0, e);
      t.abort(e.what());
    }
  }
  for (auto& th : threads) th.join();
  first.rethrow();
  return stats;
}

}  // namespace pipellm
