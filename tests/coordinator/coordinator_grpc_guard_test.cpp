// The gRPC door's rules outside the service methods (issue 21 item 11): server reflection needs
// the API key when keys are configured (it answered anyone), and a request that is not a valid
// protobuf of its method is INVALID_ARGUMENT with a message (it was INTERNAL with none).
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include <fstream>

#include "tests/coordinator/coordinator_process.h"

namespace pipellm::test {
namespace {

struct RawResult {
  grpc::Status status;
  std::string answer;
};

// One raw request/answer call of `method` (a unary call on the wire: one message, half-close).
RawResult raw_call(const std::string& address, const std::string& method, const std::string& body,
                   const std::string& key = "") {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!key.empty()) ctx.AddMetadata("authorization", "Bearer " + key);
  grpc::CompletionQueue cq;
  grpc::Slice slice(body);
  grpc::ByteBuffer request(&slice, 1);
  auto call = stub.PrepareUnaryCall(&ctx, method, request, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  RawResult r;
  call->Finish(&response, &r.status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  cq.Next(&tag, &ok);
  std::vector<grpc::Slice> slices;
  if (response.Dump(&slices).ok()) {
    for (const auto& s : slices) r.answer.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return r;
}

const std::string kReflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
const std::string kListServices("\x3a\x00", 2);  // ServerReflectionRequest{list_services: ""}

TEST(GrpcGuard, ReflectionIsOpenWithoutKeys) {
  CoordinatorProcess coord({"--model", model_path("tiny-llama-Q8_0"), "--http-listen", "off"});
  const RawResult r = raw_call(coord.address(), kReflection, kListServices);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_NE(r.answer.find("pipellm.v1.PipeLLM"), std::string::npos);
}

TEST(GrpcGuard, ReflectionNeedsTheKeyWhenKeysAreOn) {
  TempDir dir;
  const std::string keys = dir.file("keys");
  std::ofstream(keys) << "sk-reflect\n";
  CoordinatorProcess coord({"--model", model_path("tiny-llama-Q8_0"), "--http-listen", "off", "--api-keys-file", keys});
  for (const std::string& key : {std::string(), std::string("sk-wrong")}) {
    const RawResult r = raw_call(coord.address(), kReflection, kListServices, key);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << "key '" << key << "': " << r.status.error_message();
    EXPECT_EQ(r.answer.find("pipellm"), std::string::npos) << "reflection answered without a valid key";
  }
  const RawResult ok = raw_call(coord.address(), kReflection, kListServices, "sk-reflect");
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_NE(ok.answer.find("pipellm.v1.PipeLLM"), std::string::npos);
}

TEST(GrpcGuard, AMalformedProtobufIsInvalidArgument) {
  CoordinatorProcess coord({"--model", model_path("tiny-llama-Q8_0"), "--http-listen", "off"});
  for (const char* method : {"/pipellm.v1.PipeLLM/Tokenize", "/pipellm.v1.PipeLLM/Generate"}) {
    const RawResult r = raw_call(coord.address(), method, std::string("\xff\xff\xff\xff", 4));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method << ": " << r.status.error_message();
    EXPECT_NE(r.status.error_message().find(std::string(method) + ": the request is not a valid protobuf message"),
              std::string::npos)
        << r.status.error_message();
  }
  // A valid request still works.
  const RawResult good = raw_call(coord.address(), "/pipellm.v1.PipeLLM/GetModelInfo", "");
  EXPECT_TRUE(good.status.ok()) << good.status.error_message();
}

}  // namespace
}  // namespace pipellm::test
