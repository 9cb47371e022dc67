// ModelConfig from GGUF metadata and ModelWeights binding (fixtures and hand-built files).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>

#include "base/error.h"
#include "engine/model/model_config.h"
#include "engine/model/model_weights.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

ModelConfig config_of(const std::string& name) {
  auto f = GgufFile::open(test::model_path(name));
  return ModelConfig::from_gguf(*f);
}

TEST(ModelConfig, TinyLlama) {
  const ModelConfig c = config_of("tiny-llama-Q4_K_M");
  EXPECT_EQ(c.arch, Arch::Llama);
  EXPECT_EQ(c.n_layer, 2);
  EXPECT_EQ(c.n_embd, 256);
  EXPECT_EQ(c.n_ff, 768);
  EXPECT_EQ(c.n_head, 4);
  EXPECT_EQ(c.n_head_kv, 2);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.n_rot, 64);
  EXPECT_EQ(c.n_vocab, 1024);
  EXPECT_EQ(c.layer(0).rope.type, RopeType::Normal);
  EXPECT_FLOAT_EQ(c.layer(0).rope.base, 10000.0f);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_FALSE(c.has_qkv_bias);
  EXPECT_FALSE(c.has_qk_norm);
  EXPECT_FALSE(c.tied_output);
}

TEST(ModelConfig, QwenAndTiedFlags) {
  const ModelConfig q2 = config_of("tiny-qwen2-Q8_0");
  EXPECT_EQ(q2.arch, Arch::Qwen2);
  EXPECT_EQ(q2.layer(0).rope.type, RopeType::Neox);
  EXPECT_TRUE(q2.has_qkv_bias);
  EXPECT_FLOAT_EQ(q2.rms_eps, 1e-6f);
  const ModelConfig q3 = config_of("tiny-qwen3-Q8_0");
  EXPECT_EQ(q3.arch, Arch::Qwen3);
  EXPECT_EQ(q3.layer(0).rope.type, RopeType::Neox);
  EXPECT_TRUE(q3.has_qk_norm);
  EXPECT_FALSE(q3.has_qkv_bias);
  const ModelConfig tied = config_of("tiny-tied-Q8_0");
  EXPECT_TRUE(tied.tied_output);
}

// A GGUF v3 file with string metadata only and no tensors.
std::vector<uint8_t> gguf_with_strings(const std::vector<std::pair<std::string, std::string>>& kv) {
  std::vector<uint8_t> b;
  auto put = [&](const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
  };
  auto u32 = [&](uint32_t v) { put(&v, 4); };
  auto u64 = [&](uint64_t v) { put(&v, 8); };
  auto str = [&](const std::string& s) {
    u64(s.size());
    put(s.data(), s.size());
  };
  put("GGUF", 4);
  u32(3);
  u64(0);
  u64(kv.size());
  for (const auto& [k, v] : kv) {
    str(k);
    u32(8);  // string
    str(v);
  }
  while (b.size() % 32 != 0) b.push_back(0);
  return b;
}

TEST(ModelConfig, UnsupportedArchitectureIsNamed) {
  const auto bytes = gguf_with_strings({{"general.architecture", "gpt2"}});
  auto f = GgufFile::parse(bytes.data(), bytes.size(), "mem.gguf");
  try {
    ModelConfig::from_gguf(*f);
    FAIL() << "expected an error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported architecture 'gpt2'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("mem.gguf"), std::string::npos) << e.what();
  }
}

// A file claiming 1e9 layers (with tensors for 2) fails at once with a short message, before
// anything is sized by the claim (issue 21 item 5).
TEST(ModelConfig, HugeBlockCountIsRefusedBeforeAllocating) {
  std::ifstream in(test::model_path("tiny-llama-Q8_0"), std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string key = "llama.block_count";
  const auto it = std::search(bytes.begin(), bytes.end(), key.begin(), key.end());
  ASSERT_NE(it, bytes.end());
  const size_t value_at = static_cast<size_t>(it - bytes.begin()) + key.size() + 4;  // after the type id
  for (const uint32_t n : {1000000000u, 3u}) {
    std::memcpy(bytes.data() + value_at, &n, 4);
    auto f = GgufFile::parse(bytes.data(), bytes.size(), "mem.gguf");
    try {
      ModelConfig::from_gguf(*f);
      FAIL() << "expected an error for " << n << " layers";
    } catch (const FormatError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("llama.block_count"), std::string::npos) << m;
      EXPECT_LT(m.size(), 300u) << m;
    }
  }
}

TEST(ModelConfig, MissingKeyIsNamed) {
  const auto bytes = gguf_with_strings({{"general.architecture", "llama"}});
  auto f = GgufFile::parse(bytes.data(), bytes.size(), "mem.gguf");
  try {
    ModelConfig::from_gguf(*f);
    FAIL() << "expected an error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("llama.block_count"), std::string::npos) << e.what();
  }
}

TEST(ModelWeights, LoadsOnlyTheRequestedRange) {
  auto f = GgufFile::open(test::model_path("tiny-llama-Q4_K_M"));
  const ModelConfig c = ModelConfig::from_gguf(*f);
  const ModelWeights mid = ModelWeights::load(*f, c, {1, 2}, false, false);
  EXPECT_EQ(mid.token_embd, nullptr);
  EXPECT_EQ(mid.output, nullptr);
  ASSERT_EQ(mid.layers.size(), 1u);
  EXPECT_EQ(mid.layer(1)[LayerTensor::Q]->name, "blk.1.attn_q.weight");
  EXPECT_EQ(mid.layer(1)[LayerTensor::QBias], nullptr);

  const ModelWeights full = ModelWeights::load(*f, c, {0, 2}, true, true);
  EXPECT_EQ(full.output->name, "output.weight");
  EXPECT_EQ(full.token_embd->name, "token_embd.weight");
  // Whole lm head + every layer matrix + one embedding row.
  uint64_t layer_bytes = 0;
  for (const auto& t : f->tensors()) {
    if (t.name.rfind("blk.", 0) == 0) layer_bytes += t.nbytes;
  }
  EXPECT_EQ(full.bytes_per_token(c), layer_bytes + f->tensor("output.weight").nbytes +
                                        f->tensor("output_norm.weight").nbytes +
                                        f->tensor("token_embd.weight").row_bytes());

  EXPECT_THROW(ModelWeights::load(*f, c, {1, 3}, false, false), InvalidArgument);
}

TEST(ModelWeights, TiedOutputUsesTheEmbeddings) {
  auto f = GgufFile::open(test::model_path("tiny-tied-Q8_0"));
  const ModelConfig c = ModelConfig::from_gguf(*f);
  const ModelWeights tail = ModelWeights::load(*f, c, {1, 2}, false, true);
  ASSERT_NE(tail.output, nullptr);
  EXPECT_EQ(tail.output->name, "token_embd.weight");
}

TEST(ModelWeights, MissingTensorsAreAllListed) {
  auto f = GgufFile::open(test::model_path("tiny-llama-Q8_0"));
  ModelConfig c = ModelConfig::from_gguf(*f);
  for (LayerSpec& l : c.layers) l.qk_norm = true;  // the file has no q/k norms
  try {
    ModelWeights::load(*f, c, {0, 2}, true, true);
    FAIL() << "expected an error";
  } catch (const FormatError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("missing 4 tensors"), std::string::npos) << m;
    for (const char* n : {"blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight", "blk.1.attn_q_norm.weight",
                          "blk.1.attn_k_norm.weight"}) {
      EXPECT_NE(m.find(n), std::string::npos) << m;
    }
  }
}

TEST(ModelWeights, ShapeMismatchNamesTensorAndShapes) {
  auto f = GgufFile::open(test::model_path("tiny-llama-Q8_0"));
  ModelConfig c = ModelConfig::from_gguf(*f);
  c.layers[0].n_ff = 512;
  try {
    ModelWeights::load(*f, c, {0, 1}, false, false);
    FAIL() << "expected an error";
  } catch (const FormatError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("blk.0.ffn_gate.weight has shape [256, 768], expected [256, 512]"), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace pipellm
