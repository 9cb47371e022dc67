// The pipellm.v1.PipeLLM gRPC service: maps protobuf requests onto the front-door-neutral
// GenerateInput, the RequestScheduler and ModelText, and coordinator Codes onto gRPC statuses.
#pragma once
#include <string>

#include "coordinator/request_builder.h"
#include "coordinator/request_scheduler.h"
#include "proto/pipellm.grpc.pb.h"

namespace pipellm::coord {

grpc::StatusCode grpc_code(Code c);

class PipeLLMService final : public pipellm::v1::PipeLLM::Service {
 public:
  PipeLLMService(RequestScheduler& sched, const ModelText& text, const RequestLimits& limits, std::string backend);

  grpc::Status Generate(grpc::ServerContext* ctx, const pipellm::v1::GenerateRequest* req,
                        grpc::ServerWriter<pipellm::v1::GenerateResponse>* out) override;
  grpc::Status Tokenize(grpc::ServerContext* ctx, const pipellm::v1::TokenizeRequest* req,
                        pipellm::v1::TokenizeResponse* out) override;
  grpc::Status Detokenize(grpc::ServerContext* ctx, const pipellm::v1::DetokenizeRequest* req,
                          pipellm::v1::DetokenizeResponse* out) override;
  grpc::Status GetModelInfo(grpc::ServerContext* ctx, const pipellm::v1::ModelInfoRequest* req,
                            pipellm::v1::ModelInfo* out) override;

 private:
  RequestScheduler& sched_;
  const ModelText& text_;
  RequestLimits limits_;
  std::string backend_;
};

// Protobuf -> GenerateInput (exposed for tests and other front doors' parity checks).
GenerateInput to_input(const pipellm::v1::GenerateRequest& r);

}  // namespace pipellm::coord
