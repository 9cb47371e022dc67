// Byte encoding of the link messages. A frame is
//   u32 payload_length (little endian) | u8 message type | payload
// where payload_length counts the type byte too. Integers are little endian, floats are IEEE
// bits, strings and arrays are a u32 count followed by the elements.
// Decoding validates every count against the bytes present; malformed input throws
// LinkError naming the message and field, never reads out of bounds.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/error.h"
#include "engine/link/messages.h"

namespace pipellm::link {

class LinkError : public Error {
 public:
  using Error::Error;
};

constexpr size_t kFrameHeaderBytes = 4;
constexpr uint32_t kMaxFrameBytes = 64u << 20;  // a 16M-token prompt; anything larger is an error

enum class MsgType : uint8_t {
  Submit = 1,
  Cancel = 2,
  Shutdown = 3,
  Hello = 16,
  Token = 17,
  Finished = 18,
  Error = 19,
  StageStats = 20,
  Progress = 21,
};

// Whole frames (header included), ready to write.
std::vector<uint8_t> encode(const CoordinatorMessage& m);
std::vector<uint8_t> encode(const HeadMessage& m);

// `body` is the frame without its 4-byte length header: type byte then payload.
CoordinatorMessage decode_coordinator_message(const uint8_t* body, size_t size);
HeadMessage decode_head_message(const uint8_t* body, size_t size);

}  // namespace pipellm::link
