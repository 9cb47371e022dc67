// Glue between coordinator_main and the serving pieces: API keys from the options and the
// environment, the listen-address policy, the two front doors. No gRPC type appears here, so
// coordinator_main is the same with and without gRPC; the gRPC door is switched in one place,
// start_grpc() (PIPELLM_HAVE_GRPC, set by coordinator/serving.cmake when gRPC is found).
#pragma once
#include <memory>
#include <string>

#include "coordinator/front_door.h"
#include "coordinator/http_server.h"
#include "coordinator/serving_options.h"

namespace pipellm::coord {

// --api-keys-file and $PIPELLM_API_KEYS; logs how many keys (never the keys).
ApiKeys load_api_keys(const ServingOptions& o);
// The loopback rule of every port the coordinator listens on (the front doors, the stage link):
// throws InvalidArgument naming `what` unless `address` is loopback or allow_remote is set.
void require_loopback_or_allowed(const std::string& address, bool allow_remote, const std::string& what,
                                 const std::string& advice);
// The rule for a front door (and a warning when it reaches beyond this machine without TLS).
void check_listen_address(const std::string& address, const ServingOptions& o, const char* front_door);
// A PEM file's contents; throws Error naming the file ("tls: cannot read the key '...'").
std::string read_tls_file(const std::string& path, const char* what);

// The gRPC front door as coordinator_main sees it (pipellm.v1.PipeLLM behind the access guard,
// the standard health service, reflection).
class GrpcFrontDoor {
 public:
  virtual ~GrpcFrontDoor() = default;
  virtual int port() const = 0;
  virtual void set_serving(bool serving) = 0;  // the health service's status
  virtual void stop() = 0;                     // no new calls; open ones get 2 s
};

struct GrpcListen {
  std::string address;     // host:port (port 0 picks one), or "off"
  bool given = false;      // asked for explicitly (not the default address)
  std::string port_file;   // write the bound port here
  std::string backend;     // for GetModelInfo
};

// Whether this build has the gRPC front door (PIPELLM_HAVE_GRPC).
bool grpc_built();
// The gRPC front door, or nullptr when `address` is "off" or this build has no gRPC (a log
// line; asking for it explicitly -- an address or --port-file -- then throws InvalidArgument).
std::unique_ptr<GrpcFrontDoor> start_grpc(const GrpcListen& l, const ServingOptions& o, FrontDoorContext ctx);
// The HTTP front door, or nullptr when off (or when the default port is busy: a warning).
std::unique_ptr<HttpFrontDoor> start_http(const ServingOptions& o, FrontDoorContext ctx);

// --embeddings: the side path that computes them (engine/runtime/embedding.h) on this machine's
// CPU, or nullptr when not asked for; beside GPU or MPI stages it warns that they run on the CPU.
// Throws Error naming the file when the model cannot be opened here.
struct EmbeddingSetup {
  bool enabled = false;     // --embeddings
  std::string pooling;      // --pooling none|mean|cls|last ("": the model's <arch>.pooling_type)
  std::string backend;      // inprocess | mpirun | attach (embeddings run on this CPU whatever it is)
  std::string device;       // cpu | cuda[:N]
  std::string model_path;
  int n_ctx = 0;            // the longest input (the in-process context)
  int n_threads = 0;
  int max_batch_tokens = 512;
};
std::unique_ptr<Embedder> start_embeddings(const EmbeddingSetup& s);

// Defined in grpc_guard.cpp, which only gRPC builds compile (call start_grpc instead): binds
// `address` (TLS from `o`); throws Error when it cannot.
std::unique_ptr<GrpcFrontDoor> make_grpc_front_door(const std::string& address, const ServingOptions& o,
                                                    FrontDoorContext ctx, const std::string& backend);

}  // namespace pipellm::coord
