// Two rules the generated gRPC server code would otherwise decide, enforced by a server
// interceptor (issue 21 item 11):
// - server reflection needs the API key when keys are configured. The reflection service comes
//   from a plugin we cannot wrap, so without a valid key its request is emptied before the
//   service reads it, its answers are emptied before they are sent, and the call ends
//   UNAUTHENTICATED (and is counted as a refusal).
// - a request that is not a valid protobuf message of the method ends INVALID_ARGUMENT naming
//   the method; the generated code says INTERNAL with no message (our own INTERNAL statuses
//   always carry one).
// Compiled only where gRPC is (PIPELLM_HAVE_GRPC).
#pragma once
#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <vector>

#include "coordinator/front_door.h"

namespace pipellm::coord {

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> guard_interceptors(
    FrontDoorContext ctx);

}  // namespace pipellm::coord
