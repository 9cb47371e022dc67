#include "coordinator/serving_options.h"

#include <CLI/CLI.hpp>

#include "coordinator/strict_config.h"

namespace pipellm::coord {

void add_serving_options(CLI::App& app, ServingOptions& o) {
  app.set_config("--server-config", "", "read options from a TOML file (keys are the long flag names; strict)");
  // Fail closed: an unknown key, a malformed value or a key set twice stops the program
  // (strict_config.h); extras are an error in CLI11 too, should a key slip past the reader.
  app.config_formatter(std::make_shared<StrictConfig>(&app));
  app.allow_config_extras(CLI::config_extras_mode::error);
  auto* http_listen = app.add_option("--http-listen", o.http_listen,
                 std::string("OpenAI-compatible HTTP address (host:port, port 0 picks one; 'off'); default ") +
                     kDefaultHttpListen);
  app.add_option("--http-port-file", o.http_port_file, "write the HTTP port here when serving");
  // llama-server's spelling of the HTTP address: --host H --port P (either alone keeps the other
  // half of the default 127.0.0.1:8080).
  auto* host = app.add_option("--host", o.http_host, "HTTP host (llama-server's; with --port instead of --http-listen)");
  auto* port = app.add_option("--port", o.http_port, "HTTP port (llama-server's)")->check(CLI::Range(0, 65535));
  http_listen->excludes(host)->excludes(port);
  app.add_option("--http-threads", o.http_threads, "HTTP connections served at once")->check(CLI::Range(2, 4096));
  app.add_option("--max-header-bytes", o.http_limits.max_header_bytes, "largest HTTP request line + headers (431 beyond)")
      ->check(CLI::Range(size_t{1024}, size_t{16} << 20));
  app.add_option("--max-headers", o.http_limits.max_headers, "most HTTP header lines (431 beyond)")->check(CLI::Range(8, 100000));
  app.add_option("--http-header-timeout-ms", o.http_limits.header_timeout_ms,
                 "an HTTP header block must arrive within this (else the connection is closed)")
      ->check(CLI::Range(100, 3600000));
  app.add_option("--http-read-timeout-ms", o.http_limits.read_timeout_ms, "an HTTP request body must arrive within this")
      ->check(CLI::Range(100, 3600000));
  app.add_option("--max-connections", o.http_limits.max_connections, "open HTTP connections (503 beyond)")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--max-connections-per-client", o.http_limits.max_connections_per_client,
                 "open HTTP connections per client address (503 beyond)")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--http-queue-timeout-ms", o.http_limits.queue_timeout_ms,
                 "a request waits at most this long for a free HTTP worker (429 with Retry-After beyond)")
      ->check(CLI::Range(1, 3600000));
  app.add_option("--http-max-waiting", o.http_limits.max_waiting,
                 "requests waiting for a free HTTP worker at most (429 with Retry-After beyond)")
      ->check(CLI::Range(0, 1000000));
  app.add_flag("--allow-remote", o.allow_remote, "allow listening on addresses other than loopback");
  app.add_option("--api-keys-file,--api-key-file", o.api_keys_file, "file of API keys, one per line (also $PIPELLM_API_KEYS)");
  app.add_option("--api-key", o.api_keys,
                 "an API key, or several comma-separated (llama-server's; visible to other local users in the "
                 "process list: prefer --api-keys-file or $PIPELLM_API_KEYS)")
      ->allow_extra_args(false);
  app.add_option("--tls-cert", o.tls_cert, "PEM certificate: TLS on both front doors");
  app.add_option("--tls-key", o.tls_key, "PEM private key for --tls-cert");
  app.add_option("--max-body-bytes", o.max_body_bytes, "largest HTTP body / gRPC message")->check(CLI::Range(1024, 1 << 30));
  app.add_option("--max-streams-per-key", o.max_streams_per_key, "concurrent generations per API key (0: unlimited)")
      ->check(CLI::Range(0, 1000000));
  app.add_option("-a,--alias,--served-model-name", o.served_model_name, "model id in HTTP responses (llama-server's -a)");
  app.add_flag("--spm-infill", o.spm_infill,
               "/infill lays out the suffix before the prefix (suffix-prefix-middle), as some models were trained");
  app.add_option("--cors-origin", o.cors_origins,
                 "a browser origin (scheme://host[:port]) allowed to call the HTTP API, with CORS headers; "
                 "repeatable; '*' allows any")
      ->allow_extra_args(false);
}

void finish_serving_options(ServingOptions& o) {
  if (o.http_host.empty() && o.http_port < 0) return;
  const std::string def = kDefaultHttpListen;
  const size_t colon = def.rfind(':');
  std::string host = o.http_host.empty() ? def.substr(0, colon) : o.http_host;
  if (host.find(':') != std::string::npos && host.front() != '[') host = "[" + host + "]";  // IPv6
  o.http_listen = host + ":" + (o.http_port >= 0 ? std::to_string(o.http_port) : def.substr(colon + 1));
}

}  // namespace pipellm::coord
