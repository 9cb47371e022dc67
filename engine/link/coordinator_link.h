// The coordinator's end of the link: listens, accepts the head stage (rank 0), sends it
// requests and receives its tokens. One head at a time; accepting a new one (after a restart)
// replaces the old connection. send() may be called from any thread; receive() from one.
#pragma once
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "engine/link/connection.h"
#include "engine/link/messages.h"

namespace pipellm::link {

class CoordinatorLink {
 public:
  // listen: "host:port" (port 0: any free port). Throws LinkError/InvalidArgument.
  explicit CoordinatorLink(const std::string& listen = "127.0.0.1:0");

  uint16_t port() const { return listener_.port(); }
  std::string address() const { return listener_.host() + ":" + std::to_string(port()); }

  // Waits up to timeout_ms for the head to connect; true when it did.
  bool accept(int timeout_ms);
  bool connected() const;

  // Throws LinkClosed when no head is connected or it went away.
  void send(const CoordinatorMessage& m);
  // The next message, or nullopt after timeout_ms. Throws LinkClosed (head gone) or
  // LinkError (malformed frame: the connection is dropped before throwing).
  std::optional<HeadMessage> receive(int timeout_ms);

  // Drops the current head connection (wakes a blocked receive()).
  void disconnect();

 private:
  std::shared_ptr<FrameConnection> current() const;
  TcpListener listener_;
  mutable std::mutex mu_;
  std::shared_ptr<FrameConnection> conn_;
};

// The head stage's end: connects to the coordinator, says Hello, polls for requests without
// blocking the scheduler loop, and sends tokens back.
class HeadLink {
 public:
  // Connects (retrying until timeout_ms) and sends `hello`. Throws LinkError.
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
