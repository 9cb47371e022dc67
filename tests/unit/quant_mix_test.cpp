// llama-quantize's type choices (src/llama-quant.cpp) for the MoE and fused-tensor families, and
// the honest reference: for the five fixture models of tests/data/fixtures-arch.tar.xz (made by
// llama.cpp's converter and llama-quantize) and the four of fixtures-next (qwen35, qwen35moe,
// gemma4 dense and MoE), a plan of the same shape and file type has every tensor of the file,
// with its shape and its type, and the generator's metadata carries every hyperparameter key the
// converter wrote, with the same value.
#include <gtest/gtest.h>

#include <map>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "engine/gguf/gguf_writer.h"
#include "engine/model/model_config.h"
#include "engine/model_gen/model_plan.h"
#include "engine/model_gen/quant_mix.h"
#include "engine/model_gen/shape_metadata.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

FileType ft(const char* name) { return *file_type_from_name(name); }

TEST(QuantMix, RouterNormsAndBiasesStayF32) {
  for (const char* q : {"Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "Q4_0", "MXFP4_MOE", "F16", "BF16"}) {
    const auto type = [&](const char* name, std::vector<int64_t> ne) {
      return choose_tensor_type(name, ne, 24, ft(q), true, 32);
    };
    EXPECT_EQ(type("blk.0.ffn_gate_inp.weight", {2880, 32}), TensorType::F32) << q;
    EXPECT_EQ(type("blk.0.ffn_gate_inp.bias", {32}), TensorType::F32) << q;
    EXPECT_EQ(type("blk.3.ffn_down_exps.bias", {2880, 32}), TensorType::F32) << q;
    EXPECT_EQ(type("blk.3.ffn_up_exps.bias", {2880, 32}), TensorType::F32) << q;
    EXPECT_EQ(type("blk.3.attn_sinks.weight", {64}), TensorType::F32) << q;
    EXPECT_EQ(type("blk.3.post_attention_norm.weight", {2880}), TensorType::F32) << q;
  }
}

TEST(QuantMix, EightExpertModelsBumpAttention) {
  // Mixtral-sized: attn_k and attn_v in Q8_0 whatever the mix; attn_output Q5_K in Q4_K_M only.
  const auto type = [&](const char* q, const char* name, std::vector<int64_t> ne, int n_expert) {
    return choose_tensor_type(name, ne, 32, ft(q), true, n_expert);
  };
  for (const char* q : {"Q4_K_M", "Q5_K_M", "Q6_K", "Q4_0"}) {
    EXPECT_EQ(type(q, "blk.5.attn_v.weight", {4096, 1024}, 8), TensorType::Q8_0) << q;
    EXPECT_EQ(type(q, "blk.5.attn_k.weight", {4096, 1024}, 8), TensorType::Q8_0) << q;
  }
  EXPECT_EQ(type("Q4_K_M", "blk.5.attn_output.weight", {4096, 4096}, 8), TensorType::Q5_K);
  EXPECT_EQ(type("Q5_K_M", "blk.5.attn_output.weight", {4096, 4096}, 8), TensorType::Q5_K);  // its base
  EXPECT_EQ(type("Q6_K", "blk.5.attn_output.weight", {4096, 4096}, 8), TensorType::Q6_K);
  EXPECT_EQ(type("Q4_K_M", "blk.5.attn_q.weight", {4096, 4096}, 8), TensorType::Q4_K);
  // Other expert counts get the dense rules: attn_v / ffn_down bumped on the _M mixes' layers.
  EXPECT_EQ(type("Q4_K_M", "blk.6.attn_v.weight", {4096, 1024}, 128), TensorType::Q6_K);  // (6-4)%3 == 2
  EXPECT_EQ(type("Q4_K_M", "blk.5.attn_v.weight", {4096, 1024}, 128), TensorType::Q4_K);
  EXPECT_EQ(type("Q4_K_M", "blk.6.attn_k.weight", {4096, 1024}, 128), TensorType::Q4_K);
  EXPECT_EQ(type("Q4_K_M", "blk.6.attn_output.weight", {4096, 4096}, 128), TensorType::Q4_K);
}

TEST(QuantMix, ExpertStacksFollowTheFfnDownRule) {
  const auto type = [&](const char* q, const char* name) {
    return choose_tensor_type(name, {2048, 768, 128}, 48, ft(q), true, 128);
  };
  EXPECT_EQ(type("Q4_K_M", "blk.0.ffn_down_exps.weight"), TensorType::Q6_K);  // first eighth
  EXPECT_EQ(type("Q4_K_M", "blk.7.ffn_down_exps.weight"), TensorType::Q4_K);
  EXPECT_EQ(type("Q4_K_M", "blk.8.ffn_down_exps.weight"), TensorType::Q6_K);  // (8-6)%3 == 2
  EXPECT_EQ(type("Q4_K_M", "blk.8.ffn_gate_exps.weight"), TensorType::Q4_K);
  EXPECT_EQ(type("MXFP4_MOE", "blk.8.ffn_down_exps.weight"), TensorType::MXFP4);
  EXPECT_EQ(type("Q8_0", "blk.8.ffn_down_exps.weight"), TensorType::Q8_0);
}

TEST(QuantMix, FusedQkvCountsAsAttnV) {
  // llama.cpp's attn_v category includes attn_qkv, so phi3's fused matrix gets attn_v's bump
  // (its own Q5_K rule, placed after, is never reached).
  const auto type = [&](const char* name) { return choose_tensor_type(name, {3072, 9216}, 32, ft("Q4_K_M"), true); };
  EXPECT_EQ(type("blk.0.attn_qkv.weight"), TensorType::Q6_K);
  EXPECT_EQ(type("blk.4.attn_qkv.weight"), TensorType::Q4_K);
  EXPECT_EQ(type("blk.6.attn_qkv.weight"), TensorType::Q6_K);
}

// llama-quantize counts attn_v-like tensors among themselves: where some layers have none
// (gemma4's K = V global layers, its KV-sharing layers) the i-th of n is not layer i of the model.
TEST(QuantMix, AttnVCountsAmongItsKind) {
  const auto type = [&](const char* name, AttnVSlot slot) {
    return choose_tensor_type(name, {4096, 1024}, 8, ft("Q4_K_M"), true, 0, slot);
  };
  EXPECT_EQ(type("blk.0.attn_v.weight", {}), TensorType::Q6_K);      // layer 0 of 8: the first eighth
  EXPECT_EQ(type("blk.0.attn_v.weight", {0, 4}), TensorType::Q4_K);  // the first of 4: 4 / 8 == 0
  EXPECT_EQ(type("blk.2.attn_v.weight", {}), TensorType::Q4_K);
  EXPECT_EQ(type("blk.2.attn_v.weight", {2, 4}), TensorType::Q6_K);  // (2 - 0) % 3 == 2
  EXPECT_EQ(type("blk.3.attn_qkv.weight", {3, 4}), TensorType::Q6_K);  // DeltaNet's fused input counts too
  EXPECT_TRUE(is_attn_v_like("blk.3.attn_qkv.weight"));
  EXPECT_FALSE(is_attn_v_like("blk.3.attn_gate.weight"));
}

// The hybrids' tensors llama-quantize leaves in F32 (checked against the fixtures' types below).
TEST(QuantMix, HybridTensorsThatStayF32) {
  for (const char* q : {"Q4_K_M", "Q8_0", "F16"}) {
    const auto type = [&](const char* name, std::vector<int64_t> ne) {
      return choose_tensor_type(name, ne, 8, ft(q), false, 8);
    };
    EXPECT_EQ(type("blk.0.ssm_conv1d.weight", {4, 8192}), TensorType::F32) << q;
    EXPECT_EQ(type("blk.0.ssm_a", {32}), TensorType::F32) << q;
    EXPECT_EQ(type("blk.0.ssm_dt.bias", {32}), TensorType::F32) << q;
    EXPECT_EQ(type("blk.0.ssm_norm.weight", {128}), TensorType::F32) << q;
    EXPECT_EQ(type("blk.0.ffn_gate_inp_shexp.weight", {2048}), TensorType::F32) << q;
    EXPECT_EQ(type("per_layer_model_proj.weight", {2560, 10752}), TensorType::F32) << q;
    EXPECT_EQ(type("blk.0.ffn_down_exps.scale", {128}), TensorType::F32) << q;
  }
  // The per-layer embeddings are typed as token_embd: the head's type when it is tied.
  EXPECT_EQ(choose_tensor_type("per_layer_token_embd.weight", {256, 1024}, 8, ft("Q4_K_M"), false), TensorType::Q6_K);
  EXPECT_EQ(choose_tensor_type("per_layer_token_embd.weight", {256, 1024}, 8, ft("Q4_K_M"), true), TensorType::Q4_K);
}

TEST(QuantMix, OutputHeadAndRowFallbacks) {
  const auto type = [&](const char* q, const char* name, std::vector<int64_t> ne, bool has_output) {
    return choose_tensor_type(name, ne, 24, ft(q), has_output, 32);
  };
  EXPECT_EQ(type("Q4_K_M", "output.weight", {4096, 32000}, true), TensorType::Q6_K);
  EXPECT_EQ(type("Q4_K_M", "token_embd.weight", {4096, 32000}, true), TensorType::Q4_K);
  EXPECT_EQ(type("Q4_K_M", "token_embd.weight", {4096, 32000}, false), TensorType::Q6_K);  // tied
  EXPECT_EQ(type("MXFP4_MOE", "output.weight", {2880, 201088}, true), TensorType::Q8_0);
  EXPECT_EQ(type("MXFP4_MOE", "token_embd.weight", {2880, 201088}, true), TensorType::Q8_0);
  // Rows that are not whole K-quant blocks (gpt-oss's 2880): llama.cpp takes Q8_0 for the head
  // and Q6_K, but Q5_0 / Q5_1 for Q4_K / Q5_K; PipeLLM cannot encode those, so Q8_0 throughout.
  EXPECT_EQ(type("Q4_K_M", "output.weight", {2880, 201088}, true), TensorType::Q8_0);
  EXPECT_EQ(type("Q4_K_M", "blk.3.attn_q.weight", {2880, 4096}, true), TensorType::Q8_0);
  EXPECT_EQ(type("F16", "blk.3.attn_q.weight", {2880, 4096}, true), TensorType::F16);
}

// ---- the fixtures ----

ModelShape fixture_shape(const std::string& arch, int n_layer, int n_ff, int n_head, int head_dim, int n_ctx,
                         float rope_base, float eps) {
  ModelShape s;
  s.arch = arch;
  s.n_layer = n_layer;
  s.n_embd = 256;
  s.n_ff = n_ff;
  s.n_head = n_head;
  s.n_head_kv = 2;
  s.head_dim = head_dim;
  s.n_vocab = 1024;
  s.n_ctx = n_ctx;
  s.rope_base = rope_base;
  s.rms_eps = eps;
  return s;
}

// The shapes shared/fixtures/README.md gives for the files (and their metadata shows).
struct Fixture {
  std::string name, file_type;
  ModelShape shape;
};

std::vector<Fixture> arch_fixtures() {
  ModelShape gemma3 = fixture_shape("gemma3", 6, 512, 8, 64, 32768, 1000000.0f, 1e-6f);
  gemma3.tied_output = true;
  gemma3.sliding_window = 16;
  gemma3.rope_base_swa = 10000.0f;
  gemma3.rope_scaling = "linear";
  gemma3.rope_scaling_factor = 8.0f;
  ModelShape phi3 = fixture_shape("phi3", 2, 768, 4, 0, 4096, 10000.0f, 1e-5f);
  phi3.sliding_window = 2047;
  ModelShape qwen3moe = fixture_shape("qwen3moe", 2, 768, 8, 64, 32768, 1000000.0f, 1e-6f);
  qwen3moe.n_expert = 8;
  qwen3moe.n_expert_used = 4;
  qwen3moe.n_ff_expert = 256;
  ModelShape llamamoe = fixture_shape("llama", 2, 256, 4, 0, 32768, 1000000.0f, 1e-5f);
  llamamoe.n_expert = 8;
  llamamoe.n_expert_used = 2;
  ModelShape gptoss = fixture_shape("gpt-oss", 2, 256, 8, 64, 131072, 150000.0f, 1e-5f);
  gptoss.n_expert = 8;
  gptoss.n_expert_used = 4;
  gptoss.n_ff_expert = 256;
  gptoss.sliding_window = 16;
  gptoss.rope_scaling = "yarn";
  gptoss.rope_scaling_factor = 32.0f;
  gptoss.rope_scaling_orig_ctx = 4096;
  return {{"tiny-gemma3-Q4_K_M", "Q4_K_M", gemma3},
          {"tiny-phi3-Q4_K_M", "Q4_K_M", phi3},
          {"tiny-qwen3moe-Q4_K_M", "Q4_K_M", qwen3moe},
          {"tiny-llamamoe-Q4_K_M", "Q4_K_M", llamamoe},
          {"tiny-gptoss-MXFP4_MOE", "MXFP4_MOE", gptoss}};
}

// The shapes shared/fixtures/next/README.md gives for the files (and their metadata shows).
ModelShape qwen35_fixture(const char* arch, int n_layer, int n_head, int n_head_kv, int interval) {
  ModelShape s = fixture_shape(arch, n_layer, 128, n_head, 64, 262144, 10000000.0f, 1e-6f);
  s.n_head_kv = n_head_kv;
  s.n_rot = 16;
  s.rope_sections = {3, 3, 2, 0};
  s.full_attention_interval = interval;
  s.ssm_conv_kernel = 4;
  s.ssm_state = 32;
  s.ssm_groups = 2;
  s.ssm_v_heads = 4;
  return s;
}

ModelShape gemma4_fixture(std::vector<bool> sliding, int n_ff, int n_head_kv_swa, int n_head_kv_global) {
  ModelShape s = fixture_shape("gemma4", static_cast<int>(sliding.size()), n_ff, 2, 128, 131072, 1000000.0f, 1e-6f);
  s.swa_layers = std::move(sliding);
  s.head_dim_swa = 64;
  s.n_head_kv = n_head_kv_swa;
  s.n_head_kv_global = n_head_kv_global;
  s.sliding_window = 16;
  s.rope_base_swa = 10000.0f;
  s.logit_softcap = 15.0f;
  s.tied_output = true;
  s.layer_output_scale = true;
  s.rope_freqs = true;
  return s;
}

std::vector<Fixture> next_fixtures() {
  // qwen35: layers 0 1 3 4 DeltaNet, 2 5 attention; dense SwiGLU of 128.
  const ModelShape qwen35 = qwen35_fixture("qwen35", 6, 4, 2, 3);
  // qwen35moe: 0 2 DeltaNet; 8 experts (2 used) of 32 and a shared one of 64.
  ModelShape qwen35moe = qwen35_fixture("qwen35moe", 4, 2, 1, 2);
  qwen35moe.n_expert = 8;
  qwen35moe.n_expert_used = 2;
  qwen35moe.n_ff_expert = 32;
  qwen35moe.n_ff_shexp = 64;
  // gemma4: S G S G G S S G, the last 4 layers read layers 2 (sliding) and 3 (global), with an
  // FFN twice as wide; per-layer inputs of 32.
  ModelShape gemma4 = gemma4_fixture({true, false, true, false, false, true, true, false}, 64, 2, 1);
  gemma4.shared_kv_layers = 4;
  gemma4.double_wide_mlp = true;
  gemma4.per_layer_input = 32;
  // gemma4 MoE: S S G S G, K = V on the global layers, a dense MLP of 96 beside 8 experts of 32.
  ModelShape gemma4moe = gemma4_fixture({true, true, false, true, false}, 96, 1, 1);
  gemma4moe.k_eq_v = true;
  gemma4moe.n_expert = 8;
  gemma4moe.n_expert_used = 2;
  gemma4moe.n_ff_expert = 32;
  return {{"tiny-qwen35-Q4_K_M", "Q4_K_M", qwen35},
          {"tiny-qwen35-F16", "F16", qwen35},
          {"tiny-qwen35moe-Q4_K_M", "Q4_K_M", qwen35moe},
          {"tiny-gemma4-Q4_K_M", "Q4_K_M", gemma4},
          {"tiny-gemma4moe-Q4_K_M", "Q4_K_M", gemma4moe}};
}

// Q5_0 / Q5_1 (llama.cpp's K-quant fallbacks for rows not a multiple of 256) are planned as Q8_0,
// which PipeLLM can write (quant_mix.h); every other type must be llama.cpp's own.
std::string expected_type(TensorType t) {
  return t == TensorType::Q5_0 || t == TensorType::Q5_1 ? "Q8_0" : tensor_type_name(t);
}

void expect_plan_matches_file(const Fixture& fx) {
  SCOPED_TRACE(fx.name);
  const auto file = GgufFile::open(test::model_path(fx.name));
  const ModelPlan plan = plan_model(fx.shape, ft(fx.file_type.c_str()));
  EXPECT_EQ(plan.config.summary(), ModelConfig::from_gguf(*file).summary());
  std::map<std::string, const PlannedTensor*> planned;
  for (const PlannedTensor& t : plan.tensors) planned[t.name] = &t;
  EXPECT_EQ(planned.size(), file->tensors().size());
  for (const TensorView& t : file->tensors()) {
    const auto it = planned.find(t.name);
    ASSERT_NE(it, planned.end()) << "the plan lacks " << t.name;
    const PlannedTensor& p = *it->second;
    EXPECT_EQ(tensor_type_name(p.type), expected_type(t.type)) << t.name;
    EXPECT_EQ(p.ne, std::vector<int64_t>(t.ne, t.ne + t.n_dims)) << t.name;
    if (p.type == t.type) {
      EXPECT_EQ(p.nbytes(), t.nbytes) << t.name;
    }
  }
}

void expect_converter_keys(const Fixture& fx) {
  SCOPED_TRACE(fx.name);
  const auto file = GgufFile::open(test::model_path(fx.name));
  GgufWriter w;
  w.set_string("general.architecture", fx.shape.arch);
  write_shape_hparams(w, fx.shape);
  const std::vector<uint8_t> bytes = w.write_to_memory();
  const auto ours = GgufFile::parse(bytes.data(), bytes.size(), "generated");
  const std::string prefix = fx.shape.arch + ".";
  int compared = 0;
  for (const auto& [key, value] : file->metadata()) {
    if (key.rfind(prefix, 0) != 0) continue;
    const GgufValue* v = ours->find(key);
    ASSERT_NE(v, nullptr) << "the generator does not write " << key;
    EXPECT_EQ(v->type, value.type) << key;
    EXPECT_EQ(v->elem_type, value.elem_type) << key;
    EXPECT_EQ(v->to_string(64), value.to_string(64)) << key;
    ++compared;
  }
  EXPECT_GE(compared, 10);
}

TEST(QuantMix, PlansMatchLlamaCppFixturesTensorByTensor) {
  for (const Fixture& fx : arch_fixtures()) expect_plan_matches_file(fx);
}

TEST(QuantMix, ShapeMetadataHasTheConvertersKeys) {
  for (const Fixture& fx : arch_fixtures()) expect_converter_keys(fx);
}

TEST(QuantMix, HybridPlansMatchLlamaCppFixturesTensorByTensor) {
  for (const Fixture& fx : next_fixtures()) expect_plan_matches_file(fx);
}

TEST(QuantMix, HybridShapeMetadataHasTheConvertersKeys) {
  for (const Fixture& fx : next_fixtures()) expect_converter_keys(fx);
}

}  // namespace
}  // namespace pipellm
