// Abuse limits of the plain-HTTP front door (enforced by HttpGate): header size and count,
// header and body deadlines, connection caps. One struct from the flags to the gate.
#pragma once
#include <cstddef>

namespace pipellm::coord {

struct HttpLimits {
  size_t max_header_bytes = 64 << 10;     // request line + headers; larger: 431
  int max_headers = 256;                  // header lines; more: 431
  int header_timeout_ms = 10000;          // the whole header block must arrive within this
  int read_timeout_ms = 30000;            // the whole body must arrive within this
  int max_connections = 4096;             // open connections overall; more: 503
  int max_connections_per_client = 512;   // open connections per client address (a proxy or a
                                          // load generator is one address); more: 503
  // Admission beyond the workers: a complete request waits for a free worker at most this long,
  // and at most this many wait; beyond either it gets 429 with Retry-After (counted in
  // /metrics) instead of waiting invisibly.
  int queue_timeout_ms = 1000;
  int max_waiting = 256;
  // GET /health, /metrics and /v1/models are served by these workers of their own, so they
  // answer while every generation worker is busy.
  int control_workers = 2;
};

}  // namespace pipellm::coord
