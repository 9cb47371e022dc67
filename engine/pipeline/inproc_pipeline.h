// A whole pipeline inside one process: stage i runs as rank i on its own thread (the head on
// the calling thread), linked by the in-process transport. The same StageRunner code as the
// MPI worker, so tests can compare N stages with one without mpirun.
#pragma once
#include <vector>

#include "engine/pipeline/stage_runner.h"

namespace pipellm {

struct InprocOptions {
  bool return_logits = false;
  int fault_rank = -1;  // tests: this rank gets `fault`
  FaultInjection fault;
  // When set, the head serves (StageRunner::serve_head with this poll) instead of running
  // until the scheduler is idle.
  StageRunner::PollFn serve;
  // The tail's vocabulary for requests with a grammar (StageRunner::set_grammar_vocabulary).
  std::shared_ptr<const grammar::TokenVocabulary> grammar_vocab;
};

// stages[i] is rank i (first: embeddings, last: output head). Throws the first rank's error as
// Error("rank R: ...") after every thread has stopped.
HeadStats run_inproc_pipeline(const std::vector<Stage*>& stages, Scheduler& scheduler,
                              const StageRunner::TokenSink& sink, const InprocOptions& opt = {});

}  // namespace pipellm
