// The HTTP front door's own connection handling (plain or TLS, http_tls.h) in front of cpp-httplib's request
// processing. cpp-httplib 0.11 (a shared library in Debian) reads headers with no count or size
// bound and gives each connection a worker thread from accept on, so one slow or huge header
// block holds a thread (slowloris) and memory. The gate instead accepts on its own socket, and one
// event-loop thread reads every connection's header block without a worker: bounded in bytes and
// lines (431), within a deadline (closed), connections capped per client address and overall
// (503 at once). Only a complete header block goes to a worker thread, which hands the buffered
// bytes and the socket to cpp-httplib's routing; the body is read with an idle and a total
// deadline. Between keep-alive requests the connection goes back to the event loop.
// Admission: a request that finds no free worker waits at most `queue_timeout_ms` (and at most
// `max_waiting` wait), else it gets 429 with Retry-After -- counted, never an invisible wait.
// GET /health, /metrics and /v1/models go to control workers of their own, so they answer while
// every generation worker streams.
#pragma once
#include <httplib.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "coordinator/http_limits.h"

namespace pipellm::coord {

class TlsContext;

struct HttpGateLimits : HttpLimits {
  int workers = 64;                    // requests processed at once (besides the control workers)
  int write_timeout_ms = 30000;        // a blocked write fails after this
  int keep_alive_max_requests = 100;
};

// What /metrics shows of the gate.
struct HttpGateStats {
  int workers = 0;              // generation workers
  int busy = 0;                 // of them in a request now
  int waiting = 0;              // complete requests waiting for one
  int connections = 0;          // open connections
  uint64_t busy_refusals = 0;   // 429s: no worker in time, or too many waiting
};

class HttpGate {
 public:
  // `server` holds the routes; `tls` (null: plain HTTP, else it must outlive the gate) makes the
  // gate speak HTTPS, under the same limits (the handshake within the header deadline; a
  // connection over a cap is closed without an answer); `on_refused` is told the status (431 / 503 / 408 / 429) and the
  // request path ("" when unknown) of each request refused by the gate itself. Binds host:port
  // (0: any free port); throws Error.
  HttpGate(httplib::Server& server, const std::string& host, int port, HttpGateLimits limits, const TlsContext* tls,
           std::function<void(int status, const std::string& path)> on_refused);
  ~HttpGate();  // stop()
  HttpGate(const HttpGate&) = delete;
  HttpGate& operator=(const HttpGate&) = delete;

  int port() const;
  HttpGateStats stats() const;
  // Closes the listening socket and idle connections, waits for requests in progress.
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace pipellm::coord
