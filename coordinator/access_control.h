// Who may use the front doors, and how much: API keys (a file of keys and/or the
// PIPELLM_API_KEYS environment variable) checked against `Authorization: Bearer KEY` (HTTP
// header, gRPC metadata), and a cap on concurrent streams per key. Keys never appear in logs or
// messages: a caller is named by "key #N" (its position) or "anonymous" when keys are off.
#pragma once
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pipellm::coord {

class ApiKeys {
 public:
  ApiKeys() = default;  // no keys: everyone is admitted as "anonymous"
  // Keys from `file` (one per line; blank lines and lines starting with '#' skipped) and from
  // `env_value` (comma-separated; nullopt: the variable is not set). Fails closed: a source that
  // is given but yields no key throws Error naming it (an unreadable or keyless file, a set
  // $PIPELLM_API_KEYS holding only separators or blanks), rather than serve without keys.
  // `flag_values`: --api-key values (llama-server's), each one or more comma-separated keys.
  static ApiKeys load(const std::string& file, const std::optional<std::string>& env_value,
                      const std::vector<std::string>& flag_values = {});
  static ApiKeys of(std::vector<std::string> keys);

  bool enabled() const { return !keys_.empty(); }
  size_t size() const { return keys_.size(); }
  // Index of the key (constant-time comparison against every key), or nullopt.
  std::optional<size_t> find(std::string_view key) const;

 private:
  std::vector<std::string> keys_;
};

// The outcome of checking one request's credentials.
struct AuthResult {
  enum class Kind { Ok, Missing, Malformed, Wrong } kind = Kind::Ok;
  std::string principal;  // "key #N" or "anonymous" (when Ok)
  bool ok() const { return kind == Kind::Ok; }
  // The refusal, named (never containing the key): "missing_api_key", "invalid_api_key".
  std::string code() const;
  std::string message() const;
};

// `authorization` is the Authorization header / metadata value ("" when absent).
AuthResult check_bearer(const ApiKeys& keys, std::string_view authorization);

// Concurrent generation streams per principal. A Lease holds one slot until destroyed.
class StreamLimiter {
 public:
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& o) noexcept : owner_(o.owner_), principal_(std::move(o.principal_)) { o.owner_ = nullptr; }
    Lease& operator=(Lease&& o) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { release(); }
    void release();

   private:
    friend class StreamLimiter;
    Lease(StreamLimiter* owner, std::string principal) : owner_(owner), principal_(std::move(principal)) {}
    StreamLimiter* owner_ = nullptr;
    std::string principal_;
  };

  explicit StreamLimiter(int max_per_principal) : max_(max_per_principal) {}  // 0: unlimited
  // A slot, or nullopt when `principal` already has max_per_principal streams open.
  std::optional<Lease> try_acquire(const std::string& principal);
  int open(const std::string& principal) const;
  int limit() const { return max_; }

 private:
  void give_back(const std::string& principal);
  int max_;
  mutable std::mutex mu_;
  std::map<std::string, int> open_;
};

// Whether `host` (of a host:port listen address) is a loopback address. Front doors listen on
// loopback unless the operator passes --allow-remote.
bool is_loopback_host(const std::string& host);
// Splits "host:port" / "[v6]:port"; throws InvalidArgument naming the address.
std::pair<std::string, int> split_host_port(const std::string& address);

}  // namespace pipellm::coord
