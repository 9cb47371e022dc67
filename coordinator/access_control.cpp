#include "coordinator/access_control.h"

#include <fstream>

#include "base/error.h"

namespace pipellm::coord {

namespace {

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  const size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

// Compares without returning early on the first differing byte (timing does not reveal a prefix).
bool same_key(std::string_view a, std::string_view b) {
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned>(x ^ y);
  }
  return diff == 0;
}

}  // namespace

ApiKeys ApiKeys::of(std::vector<std::string> keys) {
  ApiKeys k;
  for (auto& s : keys) {
    s = trim(s);
    if (!s.empty()) k.keys_.push_back(std::move(s));
  }
  return k;
}

namespace {

// Appends the non-blank comma-separated keys of `list`; how many.
size_t add_comma_separated(const std::string& list, std::vector<std::string>& keys) {
  size_t added = 0;
  size_t start = 0;
  for (;;) {
    const size_t comma = list.find(',', start);
    std::string k = trim(list.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (!k.empty()) {
      keys.push_back(std::move(k));
      ++added;
    }
    if (comma == std::string::npos) return added;
    start = comma + 1;
  }
}

}  // namespace

ApiKeys ApiKeys::load(const std::string& file, const std::optional<std::string>& env_value,
                      const std::vector<std::string>& flag_values) {
  std::vector<std::string> keys;
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) throw Error("api keys: cannot read '" + file + "'");
    std::string line;
    size_t from_file = 0;
    while (std::getline(in, line)) {
      line = trim(line);
      if (line.empty() || line[0] == '#') continue;
      keys.push_back(line);
      ++from_file;
    }
    if (from_file == 0) throw Error("api keys: '" + file + "' holds no keys");
  }
  if (env_value && add_comma_separated(*env_value, keys) == 0) {
    throw Error("api keys: $PIPELLM_API_KEYS is set but holds no key (comma-separated keys; unset it to serve "
                "without keys)");
  }
  for (const std::string& v : flag_values) {
    if (add_comma_separated(v, keys) == 0) throw Error("api keys: an --api-key value holds no key");
  }
  return of(std::move(keys));
}

std::optional<size_t> ApiKeys::find(std::string_view key) const {
  std::optional<size_t> found;
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (same_key(keys_[i], key) && !found) found = i;
  }
  return found;
}

std::string AuthResult::code() const {
  switch (kind) {
    case Kind::Ok: return "ok";
    case Kind::Missing: return "missing_api_key";
    case Kind::Malformed:
    case Kind::Wrong: return "invalid_api_key";
  }
  return "invalid_api_key";
}

std::string AuthResult::message() const {
  switch (kind) {
    case Kind::Ok: return "";
    case Kind::Missing: return "authorization: missing (send 'Authorization: Bearer <api key>')";
    case Kind::Malformed: return "authorization: not of the form 'Bearer <api key>'";
    case Kind::Wrong: return "authorization: the API key is not valid";
  }
  return "authorization: refused";
}

AuthResult check_bearer(const ApiKeys& keys, std::string_view authorization) {
  AuthResult r;
  if (!keys.enabled()) {
    r.principal = "anonymous";
    return r;
  }
  if (authorization.empty()) {
    r.kind = AuthResult::Kind::Missing;
    return r;
  }
  constexpr std::string_view kScheme = "bearer ";
  bool scheme_ok = authorization.size() > kScheme.size();
  for (size_t i = 0; scheme_ok && i < kScheme.size(); ++i) {
    scheme_ok = std::tolower(static_cast<unsigned char>(authorization[i])) == kScheme[i];
  }
  if (!scheme_ok) {
    r.kind = AuthResult::Kind::Malformed;
    return r;
  }
  std::string_view key = authorization.substr(kScheme.size());
  while (!key.empty() && key.front() == ' ') key.remove_prefix(1);
  while (!key.empty() && (key.back() == ' ' || key.back() == '\r')) key.remove_suffix(1);
  const auto idx = keys.find(key);
  if (!idx) {
    r.kind = AuthResult::Kind::Wrong;
    return r;
  }
  r.principal = "key #" + std::to_string(*idx + 1);
  return r;
}

StreamLimiter::Lease& StreamLimiter::Lease::operator=(Lease&& o) noexcept {
  if (this != &o) {
    release();
    owner_ = o.owner_;
    principal_ = std::move(o.principal_);
    o.owner_ = nullptr;
  }
  return *this;
}

void StreamLimiter::Lease::release() {
  if (owner_) owner_->give_back(principal_);
  owner_ = nullptr;
}

std::optional<StreamLimiter::Lease> StreamLimiter::try_acquire(const std::string& principal) {
  std::lock_guard<std::mutex> lock(mu_);
  int& n = open_[principal];
  if (max_ > 0 && n >= max_) return std::nullopt;
  ++n;
  return Lease(this, principal);
}

int StreamLimiter::open(const std::string& principal) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = open_.find(principal);
  return it == open_.end() ? 0 : it->second;
}

void StreamLimiter::give_back(const std::string& principal) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = open_.find(principal);
  if (it == open_.end()) return;
  if (--it->second <= 0) open_.erase(it);
}

bool is_loopback_host(const std::string& host) {
  if (host == "localhost" || host == "::1" || host == "[::1]") return true;
  // 127.0.0.0/8
  return host.rfind("127.", 0) == 0 && host.find_first_not_of("0123456789.") == std::string::npos;
}

std::pair<std::string, int> split_host_port(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 >= address.size()) {
    throw InvalidArgument("listen address '" + address + "': expected host:port");
  }
  std::string host = address.substr(0, colon);
  const std::string port_text = address.substr(colon + 1);
  if (port_text.find_first_not_of("0123456789") != std::string::npos || port_text.size() > 5) {
    throw InvalidArgument("listen address '" + address + "': bad port '" + port_text + "'");
  }
  const int port = std::stoi(port_text);
  if (port > 65535) throw InvalidArgument("listen address '" + address + "': port over 65535");
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) throw InvalidArgument("listen address '" + address + "': empty host");
  return {host, port};
}

}  // namespace pipellm::coord
