// Command-line options of the coordinator's serving side (both front doors): the HTTP
// address, binding policy, API keys, TLS and abuse limits. Kept apart from CoordinatorOptions'
// own flags; every option can also come from a TOML/INI file (--server-config).
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "coordinator/http_limits.h"

namespace CLI {
class App;
}

namespace pipellm::coord {

constexpr const char* kDefaultHttpListen = "127.0.0.1:8080";

struct ServingOptions {
  std::string http_listen;                     // "": 127.0.0.1:8080 (busy: a warning); "off": no HTTP
  std::string http_host;                       // --host / --port (llama-server's): http_listen's parts
  int http_port = -1;                          // -1: not given
  std::string http_port_file;                  // write the bound HTTP port here
  int http_threads = 64;                       // HTTP requests processed at once
  HttpLimits http_limits;                      // header size/count, deadlines, connection caps
  bool allow_remote = false;                   // needed to listen on a non-loopback address
  std::string api_keys_file;                   // one key per line; also $PIPELLM_API_KEYS (comma-separated)
  std::vector<std::string> api_keys;           // --api-key values (llama-server's; comma-separated keys)
  std::string tls_cert, tls_key;               // PEM files: TLS on both front doors
  size_t max_body_bytes = 1 << 20;             // HTTP body / gRPC message
  int max_streams_per_key = 0;                 // concurrent generations per API key (0: unlimited)
  std::string served_model_name;               // model id in HTTP responses (default: the GGUF's name)
  std::vector<std::string> cors_origins;       // browser origins allowed on HTTP (http_origin.h)
  bool spm_infill = false;                     // --spm-infill: /infill's suffix before its prefix
};

// Adds the flags (and --server-config FILE) to `app`.
void add_serving_options(CLI::App& app, ServingOptions& o);
// After parsing: --host/--port into http_listen.
void finish_serving_options(ServingOptions& o);

}  // namespace pipellm::coord
