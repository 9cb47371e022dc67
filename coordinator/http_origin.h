// Who may drive the HTTP door from a browser. A web page can make its visitor's browser POST to
// a server on localhost (CSRF: a `text/plain` body needs no CORS preflight), and a DNS name
// rebound to 127.0.0.1 lets such a page read the answers too (DNS rebinding). Keyless local
// servers are exactly the ones exposed. So, before any route runs:
// - a loopback listener answers only requests whose Host names loopback (localhost, 127.x,
//   [::1]) on its own port; a server listening beyond loopback (--allow-remote) has names we
//   cannot know, and relies on API keys and TLS instead;
// - an Origin, when a browser sends one, must be this server itself or one of `cors_origins`
//   (--cors-origin; "*" allows any);
// - POST bodies must be declared JSON (Content-Type: application/json), which a browser sends
//   cross-origin only after a preflight this server answers for `cors_origins` alone.
// Non-browser clients (curl, SDKs) send no Origin and the right Host, and are not affected.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace pipellm::coord {

struct OriginPolicy {
  std::string listen_host;                // the host of the listen address
  std::vector<std::string> cors_origins;  // allowed Origin values, exactly ("*": any)
};

struct OriginRefusal {
  int status = 403;
  std::string code;     // "host_not_allowed", "origin_not_allowed", "unsupported_media_type"
  std::string message;  // names the header and what was expected
};

// `host`, `origin`, `content_type`: the headers ("" when absent); `local_port`: the port the
// request came in on; `method`: "POST", "GET"...
std::optional<OriginRefusal> check_origin(const OriginPolicy& p, const std::string& method, const std::string& host,
                                          const std::string& origin, const std::string& content_type, int local_port);

// Whether the Origin is one of --cors-origin (the response then carries CORS headers).
bool cors_allowed(const OriginPolicy& p, const std::string& origin);

}  // namespace pipellm::coord
