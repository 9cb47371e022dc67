// Mixture-of-experts routing of one token (CPU reference): from the router's logits over
// n_expert experts, the k experts a token goes to and their weights.
//   SoftmaxTopK  p = softmax(logits) over all experts; the k largest p; weights p / sum of those k
//                (qwen3moe, Mixtral; llama.cpp clamps the sum to >= 6.1e-5)
//   TopKSoftmax  the k largest logits; weights = softmax over those k (gpt-oss)
// Ties go to the lower expert id. ids and weights are in descending order of weight.
#pragma once
#include <cstdint>

namespace pipellm {

enum class MoeRouting { SoftmaxTopK, TopKSoftmax };

const char* moe_routing_name(MoeRouting r);

void moe_route(MoeRouting r, const float* logits, int n_expert, int k, int32_t* ids, float* weights);

}  // namespace pipellm
