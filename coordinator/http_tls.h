// TLS for the HTTP gate (http_gate.h): the server's certificate and key, and one non-blocking
// session per connection. The gate terminates TLS itself, so every limit it enforces on plain
// HTTP (header size and deadline, connection caps, admission) holds over HTTPS too; the
// handshake runs under the header deadline. OpenSSL stays out of this header.
#pragma once
#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <string>

namespace pipellm::coord {

class TlsContext {
 public:
  // Loads a PEM certificate chain and private key; throws Error naming the file and OpenSSL's
  // reason (or saying the build has no OpenSSL).
  TlsContext(const std::string& cert_file, const std::string& key_file);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  struct Impl;
  Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// The server side of one connection's TLS session on a non-blocking socket it does not own.
// Results follow recv/send: >0 bytes, 0 peer closed, -1 with errno EAGAIN (wait for `want()`
// on the socket and call again) or EIO (a TLS failure; close the connection).
class TlsSession {
 public:
  TlsSession(const TlsContext& ctx, int fd);
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // Advances the handshake: 1 done, -1 with errno as above.
  int handshake();
  bool handshake_done() const { return done_; }
  ssize_t read(char* buf, size_t n);
  ssize_t write(const char* buf, size_t n);
  // Decrypted bytes already buffered (readable without the socket becoming readable).
  size_t pending() const;
  // The poll events the last EAGAIN waits for (POLLIN or POLLOUT).
  short want() const { return want_; }
  // Best effort, non-blocking: tells the peer this side is done.
  void close_notify();

  struct Impl;

 private:
  ssize_t result(int r);
  std::unique_ptr<Impl> impl_;
  bool done_ = false;
  short want_;
};

}  // namespace pipellm::coord
