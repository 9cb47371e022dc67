// A framed, bidirectional byte stream over one socket. Sends are serialised by one mutex and
// receives by another, so one thread may read while others write. A malformed frame (oversize
// length, unknown type, bad payload) throws LinkError; the caller then drops the connection.
#pragma once
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "engine/link/codec.h"
#include "engine/link/socket.h"

namespace pipellm::link {

// The peer closed the connection (EOF or reset).
class LinkClosed : public LinkError {
 public:
  using LinkError::LinkError;
};

class FrameConnection {
 public:
  explicit FrameConnection(Fd fd);

  // Writes a whole frame (from encode()); blocks until written. Throws LinkClosed/LinkError.
  void send_frame(const std::vector<uint8_t>& frame);

  // The next frame's body (type byte + payload), or nullopt when none is complete after
  // timeout_ms (0: only what has already arrived; -1: wait). Throws LinkClosed at EOF.
  std::optional<std::vector<uint8_t>> recv_frame(int timeout_ms);

  // Wakes blocked readers/writers (they see LinkClosed); the fd closes on destruction.
  void shutdown();

 private:
  std::optional<std::vector<uint8_t>> take_frame();  // from rbuf_, if complete
  Fd fd_;
  std::mutex send_mu_;
  std::mutex recv_mu_;
  std::vector<uint8_t> rbuf_;
};

}  // namespace pipellm::link
