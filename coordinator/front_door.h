// What every front door (gRPC, HTTP) shares: the scheduler, the tokenizer side, the request
// limits, the API keys, the per-key stream cap and the metrics. Owned by coordinator_main;
// the front doors hold references and must be stopped before these are destroyed.
#pragma once
#include "coordinator/access_control.h"
#include "coordinator/metrics.h"
#include "coordinator/request_builder.h"
#include "coordinator/request_scheduler.h"
#include "engine/runtime/embedding.h"

namespace pipellm::coord {

struct FrontDoorContext {
  RequestScheduler& sched;
  const ModelText& text;
  RequestLimits limits;
  const ApiKeys& keys;
  StreamLimiter& streams;
  Metrics& metrics;
  // --embeddings: the side path that computes them (engine/runtime/embedding.h); nullptr: the
  // embedding routes answer 501 saying how to turn them on.
  Embedder* embedder = nullptr;
};

}  // namespace pipellm::coord
