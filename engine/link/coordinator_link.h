// The coordinator's end of the link: listens, accepts the head stage (rank 0), sends it
// requests and receives its tokens. One head at a time: a connection becomes the head only by
// saying Hello with the current launch's secret within the handshake deadline; every other
// connection is dropped and reported (see accept_head). send() may be called from any thread;
// receive() from one; accept_head() and refuse_newcomers() from that same one.
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/link/connection.h"
#include "engine/link/messages.h"

namespace pipellm::link {

// Per-launch secrets. The coordinator makes a fresh one for every launch of the stages
// (new_link_secret) and hands it to the head: in-process directly, to a child process in the
// environment variable kLinkSecretEnv (never on the command line); the head puts it in its Hello.
constexpr const char* kLinkSecretEnv = "PIPELLM_LINK_SECRET";
// 32 hex characters (128 bits) from the kernel's random source. Throws Error if there is none.
std::string new_link_secret();
// $PIPELLM_LINK_SECRET, or "" when unset.
std::string link_secret_from_env();

class CoordinatorLink {
 public:
  // listen: "host:port" (port 0: any free port). handshake: how long a new connection has to
  // say its Hello. Throws LinkError/InvalidArgument.
  explicit CoordinatorLink(const std::string& listen = "127.0.0.1:0",
                           std::chrono::milliseconds handshake = std::chrono::milliseconds(10000));

  uint16_t port() const { return listener_.port(); }
  std::string address() const { return listener_.host() + ":" + std::to_string(port()); }

  // Where refused connections are reported, one line each naming the peer and why (default:
  // nowhere). Set before the first accept_head.
  void on_refused(std::function<void(const std::string&)> report) { on_refused_ = std::move(report); }

  // Waits up to timeout_ms for a connection whose Hello carries `secret` (not empty); it
  // becomes the head (replacing the previous one) and its Hello is returned. Meanwhile every
  // connection that sends something else first, a malformed frame, a Hello with another (or no)
  // secret, or nothing within the handshake deadline is dropped; so is any other connection
  // still waiting when the head is accepted. A connection that says nothing never delays the
  // head: connections waiting for their Hello carry over to the next call until their deadline.
  std::optional<HelloMsg> accept_head(const std::string& secret, int timeout_ms);
  // Drops every connection waiting to be accepted (a head is already connected).
  void refuse_newcomers();
  bool connected() const;

  // Throws LinkClosed when no head is connected or it went away.
  void send(const CoordinatorMessage& m);
  // The next message, or nullopt after timeout_ms. Throws LinkClosed (head gone) or
  // LinkError (malformed frame: the connection is dropped before throwing).
  std::optional<HeadMessage> receive(int timeout_ms);

  // Drops the current head connection (wakes a blocked receive()).
  void disconnect();

 private:
  struct Pending {
    std::shared_ptr<FrameConnection> conn;
    std::string peer;
    std::chrono::steady_clock::time_point since;
  };
  std::shared_ptr<FrameConnection> current() const;
  void take_new_connections(int timeout_ms);
  // The pending connection's Hello when it is the head; nullopt while it has said nothing yet.
  // Throws LinkError with the reason to refuse it.
  std::optional<HelloMsg> check_pending(Pending& p, const std::string& secret);
  void refuse(Pending& p, const std::string& why);

  TcpListener listener_;
  std::chrono::milliseconds handshake_;
  std::function<void(const std::string&)> on_refused_;
  std::vector<Pending> pending_;  // accepted, Hello not yet received
  mutable std::mutex mu_;
  std::shared_ptr<FrameConnection> conn_;
};

// The head stage's end: connects to the coordinator, says Hello, polls for requests without
// blocking the scheduler loop, and sends tokens back.
class HeadLink {
 public:
  // Connects (retrying until timeout_ms) and sends `hello` (with the launch's secret in
  // hello.secret). Throws LinkError.
  static std::unique_ptr<HeadLink> connect(const std::string& address, const HelloMsg& hello, int timeout_ms = 10000);

  void send(const HeadMessage& m);  // throws LinkClosed when the coordinator is gone
  // Every message that has arrived (waiting up to timeout_ms for the first one; 0: don't wait).
  // Throws LinkClosed when the coordinator went away, LinkError on a malformed frame.
  std::vector<CoordinatorMessage> poll(int timeout_ms = 0);

  void shutdown() { conn_->shutdown(); }

 private:
  explicit HeadLink(Fd fd) : conn_(std::make_unique<FrameConnection>(std::move(fd))) {}
  std::unique_ptr<FrameConnection> conn_;
};

}  // namespace pipellm::link
