#include "coordinator/http_origin.h"

#include <algorithm>
#include <cctype>

#include "coordinator/access_control.h"

namespace pipellm::coord {

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Splits "host[:port]" / "[v6][:port]"; port -1 when absent, -2 when malformed.
std::pair<std::string, int> host_and_port(const std::string& hp) {
  std::string host = hp;
  std::string port;
  if (!hp.empty() && hp.front() == '[') {
    const size_t close = hp.find(']');
    if (close == std::string::npos) return {hp, -2};
    host = hp.substr(1, close - 1);
    if (close + 1 < hp.size()) {
      if (hp[close + 1] != ':') return {host, -2};
      port = hp.substr(close + 2);
    }
  } else if (const size_t colon = hp.rfind(':'); colon != std::string::npos) {
    host = hp.substr(0, colon);
    port = hp.substr(colon + 1);
  }
  if (port.empty()) return {lower(host), -1};
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return {lower(host), -2};
  return {lower(host), std::stoi(port)};
}

bool loopback_name(const std::string& host) {
  if (host == "localhost" || host == "localhost." || is_loopback_host(host)) return true;
  const std::string suffix = ".localhost";  // RFC 6761: always loopback
  return host.size() > suffix.size() && host.compare(host.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool local_listener(const OriginPolicy& p) { return is_loopback_host(p.listen_host); }

// An Origin naming this server: http(s)://<loopback name or the listen host>:<its port>.
bool same_origin(const OriginPolicy& p, const std::string& origin, int local_port) {
  const std::string o = lower(origin);
  std::string rest;
  int default_port = 0;
  if (o.rfind("http://", 0) == 0) {
    rest = o.substr(7);
    default_port = 80;
  } else if (o.rfind("https://", 0) == 0) {
    rest = o.substr(8);
    default_port = 443;
  } else {
    return false;  // "null", file:, extensions...
  }
  if (rest.find('/') != std::string::npos) return false;
  auto [host, port] = host_and_port(rest);
  if (port == -2) return false;
  if (port == -1) port = default_port;
  if (port != local_port) return false;
  return loopback_name(host) || host == lower(p.listen_host);
}

}  // namespace

bool cors_allowed(const OriginPolicy& p, const std::string& origin) {
  if (origin.empty()) return false;
  return std::any_of(p.cors_origins.begin(), p.cors_origins.end(),
                     [&](const std::string& a) { return a == "*" || a == origin; });
}

std::optional<OriginRefusal> check_origin(const OriginPolicy& p, const std::string& method, const std::string& host,
                                          const std::string& origin, const std::string& content_type, int local_port) {
  if (local_listener(p) && !host.empty()) {
    const auto [h, port] = host_and_port(host);
    if (port == -2 || !loopback_name(h) || (port != -1 && port != local_port)) {
      return OriginRefusal{403, "host_not_allowed",
                           "Host: '" + host + "' is not this server (it listens on loopback port " +
                               std::to_string(local_port) + "; use localhost, 127.0.0.1 or [::1])"};
    }
  }
  if (!origin.empty() && !cors_allowed(p, origin) && !same_origin(p, origin, local_port)) {
    return OriginRefusal{403, "origin_not_allowed",
                         "Origin: '" + origin + "' may not use this server (allow it with --cors-origin)"};
  }
  if (method == "POST") {
    const std::string ct = lower(content_type.substr(0, content_type.find(';')));
    const auto a = ct.find_first_not_of(" \t");
    const std::string type = a == std::string::npos ? "" : ct.substr(a, ct.find_last_not_of(" \t") - a + 1);
    if (type != "application/json") {
      return OriginRefusal{415, "unsupported_media_type",
                           "Content-Type: '" + content_type + "'; request bodies must be application/json"};
    }
  }
  return std::nullopt;
}

}  // namespace pipellm::coord
