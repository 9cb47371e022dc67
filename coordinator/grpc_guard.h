// Access control and metrics in front of the gRPC service: a decorator over PipeLLMService
// that checks `authorization: Bearer KEY` metadata (UNAUTHENTICATED, logged without the key),
// caps concurrent Generate streams per key (RESOURCE_EXHAUSTED, "too many concurrent
// streams"), and counts every call by method and status. The health service stays open;
// reflection needs the key too, and malformed protobufs are INVALID_ARGUMENT
// (grpc_interceptors.h). Also the gRPC front door itself (make_grpc_front_door,
// serving_setup.h): this file is compiled only where gRPC is found.
#pragma once
#include "coordinator/front_door.h"
#include "coordinator/grpc_service.h"

namespace pipellm::coord {

class GuardedPipeLLMService final : public pipellm::v1::PipeLLM::Service {
 public:
  GuardedPipeLLMService(PipeLLMService& inner, FrontDoorContext ctx) : inner_(inner), ctx_(ctx) {}

  grpc::Status Generate(grpc::ServerContext* ctx, const pipellm::v1::GenerateRequest* req,
                        grpc::ServerWriter<pipellm::v1::GenerateResponse>* out) override;
  grpc::Status Tokenize(grpc::ServerContext* ctx, const pipellm::v1::TokenizeRequest* req,
                        pipellm::v1::TokenizeResponse* out) override;
  grpc::Status Detokenize(grpc::ServerContext* ctx, const pipellm::v1::DetokenizeRequest* req,
                          pipellm::v1::DetokenizeResponse* out) override;
  grpc::Status GetModelInfo(grpc::ServerContext* ctx, const pipellm::v1::ModelInfoRequest* req,
                            pipellm::v1::ModelInfo* out) override;

 private:
  // OK with the caller's principal, or UNAUTHENTICATED.
  grpc::Status authorize(grpc::ServerContext* ctx, const char* method, std::string& principal);
  grpc::Status counted(const char* method, grpc::Status st);

  PipeLLMService& inner_;
  FrontDoorContext ctx_;
};

// The gRPC status code's canonical name ("OK", "UNAUTHENTICATED", ...).
const char* grpc_code_name(grpc::StatusCode c);

}  // namespace pipellm::coord
