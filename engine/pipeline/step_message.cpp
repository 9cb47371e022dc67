#include "engine/pipeline/step_message.h"

#include <cstring>
#include <type_traits>

#include "base/error.h"

namespace pipellm {

namespace {

constexpr uint32_t kHeaderMagic = 0x54534c50;  // "PLST"
constexpr uint32_t kResultMagic = 0x53524c50;  // "PLRS"
constexpr uint32_t kVersion = 6;  // 2: per-rank statistics; 3: the sampling chain; 4: grammar; 5: top_logprobs; 6: start history
constexpr uint64_t kMaxCount = 1u << 28;

// The hosts of one pipeline share byte order; x86-64 and aarch64 are both little-endian.
static_assert(sizeof(float) == 4, "f32 wire format");

class Writer {
 public:
  template <typename T>
  void put(T v) {
    static_assert(std::is_trivially_copyable<T>::value, "plain value");
    const size_t at = buf_.size();
    buf_.resize(at + sizeof(T));
    std::memcpy(buf_.data() + at, &v, sizeof(T));
  }
  template <typename T>
  void put_array(const std::vector<T>& v) {
    put<uint64_t>(v.size());
    const size_t at = buf_.size();
    buf_.resize(at + v.size() * sizeof(T));
    if (!v.empty()) std::memcpy(buf_.data() + at, v.data(), v.size() * sizeof(T));
  }
  std::vector<uint8_t> take() { return std::move(buf_); }

 private:
  std::vector<uint8_t> buf_;
};

class Reader {
 public:
  Reader(const std::vector<uint8_t>& b, const char* what) : b_(b), what_(what) {}
  template <typename T>
  T get(const char* field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, b_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  template <typename T>
  std::vector<T> get_array(const char* field) {
    const uint64_t n = get<uint64_t>(field);
    if (n > kMaxCount) fail(field, "count " + std::to_string(n) + " is implausible");
    need(n * sizeof(T), field);
    std::vector<T> v(n);
    if (n != 0) std::memcpy(v.data(), b_.data() + at_, n * sizeof(T));
    at_ += n * sizeof(T);
    return v;
  }
  void finish() const {
    if (at_ != b_.size()) fail("end", std::to_string(b_.size() - at_) + " trailing bytes");
  }
  [[noreturn]] void fail(const char* field, const std::string& why) const {
    throw Error(std::string(what_) + ": field " + field + " at byte " + std::to_string(at_) + ": " + why);
  }

 private:
  void need(uint64_t n, const char* field) const {
    if (n > b_.size() - at_) fail(field, "message truncated (" + std::to_string(b_.size()) + " bytes)");
  }
  const std::vector<uint8_t>& b_;
  const char* what_;
  size_t at_ = 0;
};

void put_sampling(Writer& w, const SamplingSpec& s) {
  w.put(s.temperature);
  w.put(s.top_k);
  w.put(s.top_p);
  w.put(s.min_p);
  w.put(s.repeat_penalty);
  w.put(s.frequency_penalty);
  w.put(s.presence_penalty);
  w.put(s.penalty_last_n);
  w.put(static_cast<uint8_t>(s.cache_prompt ? 1 : 0));
  w.put(s.seed);
  w.put(s.chain);
  w.put<uint8_t>(s.logprobs ? 1 : 0);
  w.put(s.top_logprobs);
  w.put_array(std::vector<char>(s.grammar.begin(), s.grammar.end()));
}

SamplingSpec get_sampling(Reader& r) {
  SamplingSpec s;
  s.temperature = r.get<float>("temperature");
  s.top_k = r.get<int32_t>("top_k");
  s.top_p = r.get<float>("top_p");
  s.min_p = r.get<float>("min_p");
  s.repeat_penalty = r.get<float>("repeat_penalty");
  s.frequency_penalty = r.get<float>("frequency_penalty");
  s.presence_penalty = r.get<float>("presence_penalty");
  s.penalty_last_n = r.get<int32_t>("penalty_last_n");
  s.cache_prompt = r.get<uint8_t>("cache_prompt") != 0;
  s.seed = r.get<uint64_t>("seed");
  s.chain = r.get<uint32_t>("chain");
  s.logprobs = r.get<uint8_t>("logprobs") != 0;
  s.top_logprobs = r.get<int32_t>("top_logprobs");
  if (s.top_logprobs < 0 || s.top_logprobs > kMaxTopLogprobs) r.fail("top_logprobs", "outside [0, " + std::to_string(kMaxTopLogprobs) + "]");
  const std::vector<char> g = r.get_array<char>("grammar");
  s.grammar.assign(g.begin(), g.end());
  return s;
}

void put_stats(Writer& w, const std::vector<RankStats>& v) {
  w.put<uint64_t>(v.size());
  for (const RankStats& s : v) {
    w.put(s.rank);
    w.put(s.steps);
    w.put(s.step_seconds);
    w.put(s.transfer_seconds);
    w.put(s.device_bytes);
  }
}

std::vector<RankStats> get_stats(Reader& r) {
  const uint64_t n = r.get<uint64_t>("stats");
  if (n > kMaxCount) r.fail("stats", "implausible count");
  std::vector<RankStats> v;
  for (uint64_t i = 0; i < n; ++i) {
    RankStats s;
    s.rank = r.get<int32_t>("stats.rank");
    if (s.rank < 0) r.fail("stats.rank", "negative");
    s.steps = r.get<int64_t>("stats.steps");
    s.step_seconds = r.get<double>("stats.step_seconds");
    s.transfer_seconds = r.get<double>("stats.transfer_seconds");
    s.device_bytes = r.get<uint64_t>("stats.device_bytes");
    v.push_back(s);
  }
  return v;
}

}  // namespace

bool RankStats::operator==(const RankStats& o) const {
  return rank == o.rank && steps == o.steps && step_seconds == o.step_seconds &&
         transfer_seconds == o.transfer_seconds && device_bytes == o.device_bytes;
}

std::vector<uint8_t> StepHeader::encode() const {
  Writer w;
  w.put(kHeaderMagic);
  w.put(kVersion);
  w.put(static_cast<uint32_t>(kind));
  w.put(step_id);
  w.put(width);
  w.put(static_cast<uint8_t>(return_logits ? 1 : 0));
  w.put<uint64_t>(starts.size());
  for (const auto& s : starts) {
    w.put(s.slot);
    w.put(s.seq_id);
    put_sampling(w, s.sampling);
    w.put_array(s.history);
  }
  w.put_array(batch.tokens);
  w.put_array(batch.pos);
  w.put_array(batch.slot);
  w.put_array(batch.logits);
  put_stats(w, stats);
  return w.take();
}

StepHeader StepHeader::decode(const std::vector<uint8_t>& bytes) {
  Reader r(bytes, "step header");
  if (r.get<uint32_t>("magic") != kHeaderMagic) r.fail("magic", "not a step header");
  const uint32_t version = r.get<uint32_t>("version");
  if (version != kVersion) r.fail("version", "version " + std::to_string(version) + ", expected " + std::to_string(kVersion));
  StepHeader h;
  const uint32_t kind = r.get<uint32_t>("kind");
  if (kind != static_cast<uint32_t>(StepKind::Forward) && kind != static_cast<uint32_t>(StepKind::Shutdown)) {
    r.fail("kind", "unknown step kind " + std::to_string(kind));
  }
  h.kind = static_cast<StepKind>(kind);
  h.step_id = r.get<int64_t>("step_id");
  h.width = r.get<int32_t>("width");
  if (h.width < 0) r.fail("width", "negative");
  h.return_logits = r.get<uint8_t>("return_logits") != 0;
  const uint64_t n_starts = r.get<uint64_t>("starts");
  if (n_starts > kMaxCount) r.fail("starts", "implausible count");
  for (uint64_t i = 0; i < n_starts; ++i) {
    SequenceStart s;
    s.slot = r.get<int32_t>("start.slot");
    s.seq_id = r.get<int64_t>("start.seq_id");
    s.sampling = get_sampling(r);
    s.history = r.get_array<int32_t>("start.history");
    h.starts.push_back(s);
  }
  h.batch.tokens = r.get_array<int32_t>("tokens");
  h.batch.pos = r.get_array<int32_t>("pos");
  h.batch.slot = r.get_array<int32_t>("slot");
  h.batch.logits = r.get_array<uint8_t>("logits");
  const size_t n = h.batch.pos.size();
  if (h.batch.tokens.size() != n || h.batch.slot.size() != n || h.batch.logits.size() != n) {
    r.fail("tokens", "arrays of different lengths");
  }
  h.stats = get_stats(r);
  r.finish();
  return h;
}

std::vector<uint8_t> StepResult::encode() const {
  Writer w;
  w.put(kResultMagic);
  w.put(kVersion);
  w.put(step_id);
  w.put_array(slot);
  w.put_array(token);
  w.put_array(logprob);
  w.put<uint64_t>(top_logprobs.size());
  for (const auto& row : top_logprobs) {
    w.put<uint8_t>(static_cast<uint8_t>(row.size()));
    for (const TokenLogprob& t : row) {
      w.put(t.id);
      w.put(t.logprob);
    }
  }
  w.put(n_vocab);
  w.put_array(logits);
  put_stats(w, stats);
  return w.take();
}

StepResult StepResult::decode(const std::vector<uint8_t>& bytes) {
  Reader r(bytes, "step result");
  if (r.get<uint32_t>("magic") != kResultMagic) r.fail("magic", "not a step result");
  const uint32_t version = r.get<uint32_t>("version");
  if (version != kVersion) r.fail("version", "version " + std::to_string(version) + ", expected " + std::to_string(kVersion));
  StepResult s;
  s.step_id = r.get<int64_t>("step_id");
  s.slot = r.get_array<int32_t>("slot");
  s.token = r.get_array<int32_t>("token");
  s.logprob = r.get_array<float>("logprob");
  const uint64_t n_top = r.get<uint64_t>("top_logprobs");
  if (n_top > kMaxCount) r.fail("top_logprobs", "implausible count");
  for (uint64_t i = 0; i < n_top; ++i) {
    const uint8_t k = r.get<uint8_t>("top_logprobs.count");
    if (k > kMaxTopLogprobs) r.fail("top_logprobs.count", std::to_string(k) + " alternatives, over " + std::to_string(kMaxTopLogprobs));
    std::vector<TokenLogprob> row(k);
    for (TokenLogprob& t : row) {
      t.id = r.get<int32_t>("top_logprobs.id");
      t.logprob = r.get<float>("top_logprobs.logprob");
    }
    s.top_logprobs.push_back(std::move(row));
  }
  s.n_vocab = r.get<int32_t>("n_vocab");
  s.logits = r.get_array<float>("logits");
  s.stats = get_stats(r);
  if (s.slot.size() != s.token.size()) r.fail("token", "slot and token counts differ");
  if (!s.logprob.empty() && s.logprob.size() != s.token.size()) r.fail("logprob", "logprob and token counts differ");
  if (!s.top_logprobs.empty() && s.top_logprobs.size() != s.token.size()) {
    r.fail("top_logprobs", "top_logprobs and token counts differ");
  }
  if (!s.logits.empty() && (s.n_vocab <= 0 || s.logits.size() != s.slot.size() * static_cast<size_t>(s.n_vocab))) {
    r.fail("logits", "size does not match rows x n_vocab");
  }
  r.finish();
  return s;
}

}  // namespace pipellm
