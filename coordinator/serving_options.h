// Command-line options of the coordinator's serving side (both front doors): the HTTP
// address, binding policy, API keys, TLS and abuse limits. Kept apart from CoordinatorOptions'
// own flags; every option can also come from a TOML/INI file (--server-config).
#pragma once
#include <cstddef>
#include <string>

namespace CLI {
class App;
}

namespace pipellm::coord {

constexpr const char* kDefaultHttpListen = "127.0.0.1:8080";

struct ServingOptions {
  std::string http_listen;                     // "": 127.0.0.1:8080 (busy: a warning); "off": no HTTP
  std::string http_port_file;                  // write the bound HTTP port here
  int http_threads = 64;                       // HTTP requests processed at once
  size_t max_header_bytes = 64 << 10;          // HTTP request line + headers (431 beyond)
  int max_headers = 256;                       // HTTP header lines (431 beyond)
  int http_header_timeout_ms = 10000;          // whole header block, else the connection is closed
  int http_read_timeout_ms = 30000;            // whole request body
  int max_connections = 4096;                  // open HTTP connections (503 beyond)
  int max_connections_per_client = 512;        // open HTTP connections per client address (503 beyond)
  bool allow_remote = false;                   // needed to listen on a non-loopback address
  std::string api_keys_file;                   // one key per line; also $PIPELLM_API_KEYS (comma-separated)
  std::string tls_cert, tls_key;               // PEM files: TLS on both front doors
  size_t max_body_bytes = 1 << 20;             // HTTP body / gRPC message
  int max_streams_per_key = 0;                 // concurrent generations per API key (0: unlimited)
  std::string served_model_name;               // model id in HTTP responses (default: the GGUF's name)
};

// Adds the flags (and --server-config FILE) to `app`.
void add_serving_options(CLI::App& app, ServingOptions& o);

}  // namespace pipellm::coord
