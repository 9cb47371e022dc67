#include "engine/link/codec.h"

#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>

namespace pipellm::link {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
  }
  return "unknown";
}

namespace {

class Writer {
 public:
  explicit Writer(MsgType t) {
    buf_.resize(kFrameHeaderBytes);
    u8(static_cast<uint8_t>(t));
  }
  void u8(uint8_t v) { buf_.push_back(v); }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) buf_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) buf_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void i32(int32_t v) { u32(static_cast<uint32_t>(v)); }
  void i64(int64_t v) { u64(static_cast<uint64_t>(v)); }
  void f32(float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    u32(bits);
  }
  void f64(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, 8);
    u64(bits);
  }
  void str(const std::string& s) {
    u32(static_cast<uint32_t>(s.size()));
    buf_.insert(buf_.end(), s.begin(), s.end());
  }
  void ids(const std::vector<int32_t>& v) {
    u32(static_cast<uint32_t>(v.size()));
    for (int32_t x : v) i32(x);
  }
  std::vector<uint8_t> finish() {
    const size_t body = buf_.size() - kFrameHeaderBytes;
    if (body > kMaxFrameBytes) {
      throw LinkError("link: message of " + std::to_string(body) + " bytes exceeds the frame limit of " +
                      std::to_string(kMaxFrameBytes));
    }
    for (int i = 0; i < 4; ++i) buf_[static_cast<size_t>(i)] = static_cast<uint8_t>(body >> (8 * i));
    return std::move(buf_);
  }

 private:
  std::vector<uint8_t> buf_;
};

class Reader {
 public:
  Reader(const uint8_t* p, size_t n, const char* msg) : p_(p), n_(n), msg_(msg) {}
  float logprob(const char* field) {  // a log-probability (<= 0) or NaN (not asked for)
    const float v = f32(field);
    if (!(std::isnan(v) || v <= 0.0f)) fail(field, "not a log-probability (<= 0) or NaN");
    return v;
  }
  // A count of alternatives: at most kMaxTopLogprobs, so a hostile frame cannot ask for more.
  int32_t top_count(const char* field) {
    const int32_t v = i32(field);
    if (v < 0 || v > kMaxTopLogprobs) fail(field, std::to_string(v) + " outside [0, " + std::to_string(kMaxTopLogprobs) + "]");
    return v;
  }
  uint8_t u8(const char* field) {
    need(1, field);
    return p_[off_++];
  }
  uint32_t u32(const char* field) {
    need(4, field);
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p_[off_ + static_cast<size_t>(i)]) << (8 * i);
    off_ += 4;
    return v;
  }
  uint64_t u64(const char* field) {
    need(8, field);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p_[off_ + static_cast<size_t>(i)]) << (8 * i);
    off_ += 8;
    return v;
  }
  int32_t i32(const char* field) { return static_cast<int32_t>(u32(field)); }
  int64_t i64(const char* field) { return static_cast<int64_t>(u64(field)); }
  float f32(const char* field) {
    const uint32_t bits = u32(field);
    float v;
    std::memcpy(&v, &bits, 4);
    return v;
  }
  double f64(const char* field) {
    const uint64_t bits = u64(field);
    double v;
    std::memcpy(&v, &bits, 8);
    return v;
  }
  // A total that must be finite and >= 0.
  double seconds(const char* field) {
    const double v = f64(field);
    if (!std::isfinite(v) || v < 0.0) fail(field, "not a non-negative finite time");
    return v;
  }
  std::string str(const char* field) {
    const uint32_t n = u32(field);
    need(n, field);
    std::string s(reinterpret_cast<const char*>(p_ + off_), n);
    off_ += n;
    return s;
  }
  std::vector<int32_t> ids(const char* field) {
    const uint32_t n = u32(field);
    if (n > (n_ - off_) / 4) fail(field, "count " + std::to_string(n) + " exceeds the bytes left");
    std::vector<int32_t> v(n);
    for (auto& x : v) x = i32(field);
    return v;
  }
  void done() const {
    if (off_ != n_) {
      throw LinkError(std::string("link: ") + msg_ + ": " + std::to_string(n_ - off_) + " trailing bytes");
    }
  }

  [[noreturn]] void fail(const char* field, const std::string& why) const {
    throw LinkError(std::string("link: ") + msg_ + "." + field + " at byte " + std::to_string(off_) + ": " + why);
  }

 private:
  void need(size_t k, const char* field) const {
    if (k > n_ - off_) fail(field, "truncated (needs " + std::to_string(k) + " bytes, " + std::to_string(n_ - off_) + " left)");
  }
  const uint8_t* p_;
  size_t n_;
  size_t off_ = 0;
  const char* msg_;
};

void write_sampling(Writer& w, const SamplingParams& s) {
  w.f32(s.temperature);
  w.i32(s.top_k);
  w.f32(s.top_p);
  w.f32(s.min_p);
  w.f32(s.repeat_penalty);
  w.f32(s.presence_penalty);
  w.f32(s.frequency_penalty);
  w.i32(s.penalty_last_n);
  w.u8(s.cache_prompt ? 1 : 0);
  w.u64(s.seed);
  w.u32(s.chain);
  w.u8(s.logprobs ? 1 : 0);
  w.i32(s.top_logprobs);
  // The GBNF text only: the head's tail matches it against its own model's vocabulary.
  w.str(s.grammar);
}

SamplingParams read_sampling(Reader& r) {
  SamplingParams s;
  s.temperature = r.f32("temperature");
  s.top_k = r.i32("top_k");
  s.top_p = r.f32("top_p");
  s.min_p = r.f32("min_p");
  s.repeat_penalty = r.f32("repeat_penalty");
  s.presence_penalty = r.f32("presence_penalty");
  s.frequency_penalty = r.f32("frequency_penalty");
  s.penalty_last_n = r.i32("penalty_last_n");
  s.cache_prompt = r.u8("cache_prompt") != 0;
  s.seed = r.u64("seed");
  s.chain = r.u32("chain");
  s.logprobs = r.u8("logprobs") != 0;
  s.top_logprobs = r.top_count("top_logprobs");
  s.grammar = r.str("grammar");
  return s;
}

std::vector<uint8_t> encode_one(const SubmitRequest& m) {
  Writer w(MsgType::Submit);
  w.u64(m.id);
  w.ids(m.prompt);
  write_sampling(w, m.sampling);
  w.i32(m.max_tokens);
  w.ids(m.stop_ids);
  return w.finish();
}
std::vector<uint8_t> encode_one(const CancelRequest& m) {
  Writer w(MsgType::Cancel);
  w.u64(m.id);
  return w.finish();
}
std::vector<uint8_t> encode_one(const ShutdownRequest&) { return Writer(MsgType::Shutdown).finish(); }
std::vector<uint8_t> encode_one(const HelloMsg& m) {
  Writer w(MsgType::Hello);
  w.u32(m.protocol_version);
  w.str(m.model_name);
  w.str(m.arch);
  w.i32(m.n_vocab);
  w.i32(m.n_layer);
  w.i32(m.n_embd);
  w.i32(m.n_ctx);
  w.i32(m.max_sequences);
  w.i32(m.n_stages);
  w.str(m.plan);
  w.str(m.secret);
  return w.finish();
}
std::vector<uint8_t> encode_one(const TokenMsg& m) {
  Writer w(MsgType::Token);
  w.u64(m.id);
  w.i32(m.token);
  w.f32(m.logprob);
  w.u8(static_cast<uint8_t>(m.top_logprobs.size()));
  for (const TokenLogprob& t : m.top_logprobs) {
    w.i32(t.id);
    w.f32(t.logprob);
  }
  return w.finish();
}
std::vector<uint8_t> encode_one(const FinishedMsg& m) {
  Writer w(MsgType::Finished);
  w.u64(m.id);
  w.u8(static_cast<uint8_t>(m.reason));
  w.i32(m.prompt_tokens);
  w.i32(m.generated_tokens);
  w.i32(m.cached_tokens);
  return w.finish();
}
std::vector<uint8_t> encode_one(const ErrorMsg& m) {
  Writer w(MsgType::Error);
  w.i64(m.id);
  w.str(m.message);
  return w.finish();
}

std::vector<uint8_t> encode_one(const StageStatsMsg& m) {
  Writer w(MsgType::StageStats);
  w.i32(m.rank);
  w.str(m.device);
  w.i64(m.steps);
  w.f64(m.step_seconds);
  w.f64(m.transfer_seconds);
  w.u64(m.gpu_bytes);
  return w.finish();
}

std::vector<uint8_t> encode_one(const ProgressMsg& m) {
  Writer w(MsgType::Progress);
  w.i64(m.steps_issued);
  w.i64(m.steps_done);
  w.f64(m.waiting_seconds);
  w.f64(m.busy_seconds);
  w.f64(m.step_seconds);
  w.str(m.suspect);
  return w.finish();
}

[[noreturn]] void bad_type(uint8_t t, const char* direction) {
  throw LinkError(std::string("link: unknown message type ") + std::to_string(t) + " for " + direction);
}

}  // namespace

std::vector<uint8_t> encode(const CoordinatorMessage& m) {
  return std::visit([](const auto& x) { return encode_one(x); }, m);
}
std::vector<uint8_t> encode(const HeadMessage& m) {
  return std::visit([](const auto& x) { return encode_one(x); }, m);
}

CoordinatorMessage decode_coordinator_message(const uint8_t* body, size_t size) {
  if (size < 1) throw LinkError("link: empty frame (no message type)");
  const auto t = static_cast<MsgType>(body[0]);
  switch (t) {
    case MsgType::Submit: {
      Reader r(body + 1, size - 1, "Submit");
      SubmitRequest m;
      m.id = r.u64("id");
      m.prompt = r.ids("prompt");
      m.sampling = read_sampling(r);
      m.max_tokens = r.i32("max_tokens");
      m.stop_ids = r.ids("stop_ids");
      r.done();
      return m;
    }
    case MsgType::Cancel: {
      Reader r(body + 1, size - 1, "Cancel");
      CancelRequest m;
      m.id = r.u64("id");
      r.done();
      return m;
    }
    case MsgType::Shutdown: {
      Reader r(body + 1, size - 1, "Shutdown");
      r.done();
      return ShutdownRequest{};
    }
    default: bad_type(body[0], "coordinator -> head");
  }
}

HeadMessage decode_head_message(const uint8_t* body, size_t size) {
  if (size < 1) throw LinkError("link: empty frame (no message type)");
  const auto t = static_cast<MsgType>(body[0]);
  switch (t) {
    case MsgType::Hello: {
      Reader r(body + 1, size - 1, "Hello");
      HelloMsg m;
      m.protocol_version = r.u32("protocol_version");
      if (m.protocol_version != kProtocolVersion) {
        throw LinkError("link: Hello: protocol version " + std::to_string(m.protocol_version) + ", expected " +
                        std::to_string(kProtocolVersion));
      }
      m.model_name = r.str("model_name");
      m.arch = r.str("arch");
      m.n_vocab = r.i32("n_vocab");
      m.n_layer = r.i32("n_layer");
      m.n_embd = r.i32("n_embd");
      m.n_ctx = r.i32("n_ctx");
      m.max_sequences = r.i32("max_sequences");
      m.n_stages = r.i32("n_stages");
      m.plan = r.str("plan");
      m.secret = r.str("secret");
      r.done();
      return m;
    }
    case MsgType::Token: {
      Reader r(body + 1, size - 1, "Token");
      TokenMsg m;
      m.id = r.u64("id");
      m.token = r.i32("token");
      m.logprob = r.logprob("logprob");
      const uint8_t n_top = r.u8("top_logprobs");
      if (n_top > kMaxTopLogprobs) r.fail("top_logprobs", std::to_string(n_top) + " alternatives, over " + std::to_string(kMaxTopLogprobs));
      m.top_logprobs.resize(n_top);
      for (TokenLogprob& t : m.top_logprobs) {
        t.id = r.i32("top_logprobs.id");
        if (t.id < 0) r.fail("top_logprobs.id", "negative token id");
        t.logprob = r.logprob("top_logprobs.logprob");
      }
      r.done();
      return m;
    }
    case MsgType::Finished: {
      Reader r(body + 1, size - 1, "Finished");
      FinishedMsg m;
      m.id = r.u64("id");
      const uint8_t reason = r.u8("reason");
      if (reason > static_cast<uint8_t>(FinishReason::Error)) {
        throw LinkError("link: Finished.reason: unknown value " + std::to_string(reason));
      }
      m.reason = static_cast<FinishReason>(reason);
      m.prompt_tokens = r.i32("prompt_tokens");
      m.generated_tokens = r.i32("generated_tokens");
      m.cached_tokens = r.i32("cached_tokens");
      r.done();
      return m;
    }
    case MsgType::Error: {
      Reader r(body + 1, size - 1, "Error");
      ErrorMsg m;
      m.id = r.i64("id");
      m.message = r.str("message");
      r.done();
      return m;
    }
    case MsgType::StageStats: {
      Reader r(body + 1, size - 1, "StageStats");
      StageStatsMsg m;
      m.rank = r.i32("rank");
      if (m.rank < 0) throw LinkError("link: StageStats.rank: negative (" + std::to_string(m.rank) + ")");
      m.device = r.str("device");
      m.steps = r.i64("steps");
      if (m.steps < 0) throw LinkError("link: StageStats.steps: negative (" + std::to_string(m.steps) + ")");
      m.step_seconds = r.seconds("step_seconds");
      m.transfer_seconds = r.seconds("transfer_seconds");
      m.gpu_bytes = r.u64("gpu_bytes");
      r.done();
      return m;
    }
    case MsgType::Progress: {
      Reader r(body + 1, size - 1, "Progress");
      ProgressMsg m;
      m.steps_issued = r.i64("steps_issued");
      m.steps_done = r.i64("steps_done");
      if (m.steps_issued < 0 || m.steps_done < 0) {
        throw LinkError("link: Progress.steps: negative (" + std::to_string(m.steps_issued) + ", " +
                        std::to_string(m.steps_done) + ")");
      }
      m.waiting_seconds = r.seconds("waiting_seconds");
      m.busy_seconds = r.seconds("busy_seconds");
      m.step_seconds = r.seconds("step_seconds");
      m.suspect = r.str("suspect");
      r.done();
      return m;
    }
    default: bad_type(body[0], "head -> coordinator");
  }
}

}  // namespace pipellm::link
