// `pipellm import-raw`'s library side: manifest + raw weights + HF tokenizer.json -> GGUF.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "base/error.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model_gen/hf_bpe_vocab.h"
#include "engine/model_gen/raw_import.h"
#include "engine/util/thread_pool.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/fp16.h"

namespace pipellm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kEmbd = 64;

class RawImport : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("pipellm-raw-import-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    // Weights: an f32 embedding [3, 64], an f32 norm [64], a Q8_0 matrix [2, 64] (4 blocks).
    for (int i = 0; i < 3 * kEmbd; ++i) embd_.push_back(0.01f * static_cast<float>(i % 97) - 0.4f);
    for (int i = 0; i < kEmbd; ++i) norm_.push_back(1.0f + 0.001f * static_cast<float>(i));
    for (int b = 0; b < 4; ++b) {
      const uint16_t d = f32_to_fp16(0.0125f * static_cast<float>(b + 1));
      uint8_t block[34];
      std::memcpy(block, &d, 2);
      for (int j = 0; j < 32; ++j) block[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j * 8 - 127 + b));
      q8_.insert(q8_.end(), block, block + 34);
    }
    std::vector<uint8_t> blob;
    auto put = [&](const void* p, size_t n) {
      const size_t off = blob.size();
      blob.insert(blob.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
      return off;
    };
    const size_t o_embd = put(embd_.data(), embd_.size() * 4);
    const size_t o_norm = put(norm_.data(), norm_.size() * 4);
    const size_t o_q8 = put(q8_.data(), q8_.size());
    std::ofstream(path("w.bin"), std::ios::binary).write(reinterpret_cast<const char*>(blob.data()),
                                                          static_cast<std::streamsize>(blob.size()));
    manifest_ = {{"arch", "llama"}, {"name", "test"}, {"n_vocab", 3}, {"n_embd", kEmbd}, {"n_layer", 1},
                 {"n_head", 2}, {"n_head_kv", 1}, {"head_dim", 32}, {"n_ff", 128}, {"n_ctx", 256},
                 {"rope_base", 10000.0}, {"rms_eps", 1e-5}, {"bos_id", 0}, {"eos_id", 0}, {"add_bos", true},
                 {"tokenizer_pre", "gpt-2"},
                 {"tensors", json::array({
                                 {{"name", "token_embd.weight"}, {"dtype", "f32"}, {"shape", {3, kEmbd}},
                                  {"offset", o_embd}, {"nbytes", embd_.size() * 4}},
                                 {{"name", "output_norm.weight"}, {"dtype", "f32"}, {"shape", {kEmbd}},
                                  {"offset", o_norm}, {"nbytes", norm_.size() * 4}},
                                 {{"name", "output.weight"}, {"dtype", "q8_0"}, {"shape", {2, kEmbd}},
                                  {"offset", o_q8}, {"nbytes", q8_.size()}},
                             })}};
    // Merges in the newer pair form and the older string form.
    tokenizer_ = {{"normalizer", nullptr},
                  {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
                  {"added_tokens", json::array({{{"id", 0}, {"content", "<|endoftext|>"}, {"special", true}}})},
                  {"model",
                   {{"type", "BPE"}, {"byte_fallback", false}, {"ignore_merges", false},
                    {"vocab", {{"<|endoftext|>", 0}, {"a", 1}, {"b", 2}}},
                    {"merges", json::array({json::array({"a", "b"}), "b a"})}}}};
    write_inputs();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write_inputs() const {
    std::ofstream(path("m.json")) << manifest_.dump();
    std::ofstream(path("tokenizer.json")) << tokenizer_.dump();
  }
  std::unique_ptr<GgufFile> import(TensorType matrices) {
    write_inputs();
    RawImportOptions opt{path("m.json"), path("w.bin"), path("tokenizer.json"), matrices};
    ThreadPool pool(2);
    import_raw_model(opt, path("out.gguf"), pool);
    return GgufFile::open(path("out.gguf"));
  }

  fs::path dir_;
  std::vector<float> embd_, norm_;
  std::vector<uint8_t> q8_;
  json manifest_, tokenizer_;
};

std::vector<float> decoded(const TensorView& t) {
  std::vector<float> v(static_cast<size_t>(t.n_elements()));
  dequantize_row(t.type, t.data, v.data(), t.n_elements());
  return v;
}

TEST_F(RawImport, F32KeepsEveryValueAndWritesTheMetadata) {
  const auto f = import(TensorType::F32);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_u32("general.file_type"), 0u);
  EXPECT_EQ(f->get_u32("llama.embedding_length"), static_cast<uint32_t>(kEmbd));
  EXPECT_EQ(f->get_u32("llama.attention.head_count_kv"), 1u);
  EXPECT_EQ(f->get_u32("llama.rope.dimension_count"), 32u);
  EXPECT_EQ(f->get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f->get_string("tokenizer.ggml.pre"), "gpt-2");
  const auto& tokens = f->get_string_array("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 3u);
  EXPECT_EQ(tokens[0], "<|endoftext|>");
  EXPECT_EQ(tokens[2], "b");
  EXPECT_EQ(f->get_i32_array("tokenizer.ggml.token_type"), (std::vector<int32_t>{3, 1, 1}));
  const auto& merges = f->get_string_array("tokenizer.ggml.merges");
  ASSERT_EQ(merges.size(), 2u);
  EXPECT_EQ(merges[0], "a b");
  EXPECT_EQ(merges[1], "b a");
  EXPECT_EQ(f->get_u32("tokenizer.ggml.bos_token_id"), 0u);
  EXPECT_TRUE(f->get_bool("tokenizer.ggml.add_bos_token"));

  const TensorView& e = f->tensor("token_embd.weight");
  EXPECT_EQ(e.type, TensorType::F32);
  EXPECT_EQ(e.ne[0], kEmbd);  // GGUF order: the reversed PyTorch shape
  EXPECT_EQ(e.ne[1], 3);
  EXPECT_EQ(decoded(e), embd_);
  EXPECT_EQ(decoded(f->tensor("output_norm.weight")), norm_);
  std::vector<float> q8_values(2 * kEmbd);
  dequantize_row(TensorType::Q8_0, q8_.data(), q8_values.data(), 2 * kEmbd);
  EXPECT_EQ(decoded(f->tensor("output.weight")), q8_values);
}

TEST_F(RawImport, Q8_0CopiesQ8_0BlocksAndKeepsVectorsF32) {
  const auto f = import(TensorType::Q8_0);
  EXPECT_EQ(f->get_u32("general.file_type"), 7u);
  const TensorView& o = f->tensor("output.weight");
  ASSERT_EQ(o.type, TensorType::Q8_0);
  ASSERT_EQ(o.nbytes, q8_.size());
  EXPECT_EQ(std::memcmp(o.data, q8_.data(), q8_.size()), 0);
  EXPECT_EQ(f->tensor("output_norm.weight").type, TensorType::F32);
  const TensorView& e = f->tensor("token_embd.weight");
  ASSERT_EQ(e.type, TensorType::Q8_0);
  const auto v = decoded(e);
  float amax = 0;
  for (float x : embd_) amax = std::max(amax, std::fabs(x));
  const float half_step = amax / 127 / 2 * 1.01f;  // Q8_0 rounds to the nearest step of amax/127
  for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(v[i], embd_[i], half_step) << i;
}

TEST_F(RawImport, RejectsInconsistentInputs) {
  manifest_["tensors"][2]["nbytes"] = 100;  // not what Q8_0 [2, 64] needs
  EXPECT_THROW(import(TensorType::F32), FormatError);
  manifest_["tensors"][2]["nbytes"] = q8_.size();
  manifest_["tensors"][2]["offset"] = 1u << 20;  // past the end of the weights file
  EXPECT_THROW(import(TensorType::F32), FormatError);
  manifest_["tensors"][2]["offset"] = 0;
  manifest_["n_vocab"] = 4;  // the tokenizer has 3 tokens
  EXPECT_THROW(import(TensorType::F32), FormatError);
  manifest_["n_vocab"] = 3;
  tokenizer_["normalizer"] = {{"type", "NFC"}};
  EXPECT_THROW(import(TensorType::F32), FormatError);
  tokenizer_["normalizer"] = nullptr;
  tokenizer_["pre_tokenizer"]["add_prefix_space"] = true;
  EXPECT_THROW(import(TensorType::F32), FormatError);
}

}  // namespace
}  // namespace pipellm
