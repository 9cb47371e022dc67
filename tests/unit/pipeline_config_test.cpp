// Stage config: a good file parses to the expected values; a table of bad ones gives errors that
// name the file, the line and the key.
#include <gtest/gtest.h>

#include "engine/pipeline/pipeline_config.h"

namespace pipellm {
namespace {

TEST(PipelineConfig, ParsesEveryKey) {
  const char* text =
      "model: m/x.gguf\n"
      "context_length: 4096\n"
      "max_sequences: 8\n"
      "micro_batches: 3\n"
      "max_batch_tokens: 1024\n"
      "prefill_chunk: 512\n"
      "kv_cache_type: f32\n"
      "threads: 4\n"
      "scratch: 1GiB\n"
      "transport: nccl\n"
      "coordinator: head:5000\n"
      "prefetch: {enabled: true, staging_buffers: 3, buffer_size: 64 MiB}\n"
      "stages:\n"
      "  - {device: cuda:0, memory: 22GiB, host: a, layers: [0, 10]}\n"
      "  - {device: cuda:1, memory: 1.5GB, host: b, layers: [10, 32]}\n";
  const PipelineConfig c = PipelineConfig::parse(text, "t.yaml", "/cfg");
  EXPECT_EQ(c.model, "/cfg/m/x.gguf");
  EXPECT_EQ(c.context_length, 4096);
  EXPECT_EQ(c.max_sequences, 8);
  EXPECT_EQ(c.micro_batches, 3);
  EXPECT_EQ(c.max_batch_tokens, 1024);
  EXPECT_EQ(c.prefill_chunk, 512);
  EXPECT_EQ(c.kv_cache_type, KvType::F32);
  EXPECT_EQ(c.kv_cache_type_k, KvType::F32);  // kv_cache_type sets both sides
  EXPECT_EQ(c.kv_cache_type_v, KvType::F32);
  EXPECT_EQ(c.threads, 4);
  EXPECT_EQ(c.scratch_bytes, 1ull << 30);
  EXPECT_EQ(c.transport, TransportKind::Nccl);
  EXPECT_EQ(c.coordinator, "head:5000");
  EXPECT_TRUE(c.prefetch.enabled);
  EXPECT_EQ(c.prefetch.staging_buffers, 3);
  EXPECT_EQ(c.prefetch.buffer_bytes, 64ull << 20);
  ASSERT_EQ(c.n_stages(), 2);
  EXPECT_EQ(c.stages[0].device_index, 0);
  EXPECT_EQ(c.stages[1].device_index, 1);
  EXPECT_EQ(c.stages[0].memory_bytes, 22ull << 30);
  EXPECT_EQ(c.stages[1].memory_bytes, 1500000000ull);
  EXPECT_EQ(c.stages[1].host, "b");
  EXPECT_EQ(c.stages[1].layers, std::make_pair(10, 32));
  EXPECT_EQ(c.stages[1].line, 15);
}

TEST(PipelineConfig, DefaultsAndAbsolutePaths) {
  const PipelineConfig c = PipelineConfig::parse("model: /abs.gguf\nstages: [{device: cpu}]\n", "t.yaml", "/cfg");
  EXPECT_EQ(c.model, "/abs.gguf");
  EXPECT_EQ(c.n_stages(), 1);
  EXPECT_FALSE(c.stages[0].is_gpu());
  EXPECT_EQ(c.transport, TransportKind::Auto);
  EXPECT_FALSE(c.has_explicit_layers());
}

// kv_cache_type_k / kv_cache_type_v set one side each; the other keeps kv_cache_type (f16 by default).
TEST(PipelineConfig, KvCacheTypesPerSide) {
  const PipelineConfig d = PipelineConfig::parse("model: a.gguf\nstages: [{device: cpu}]\n", "t.yaml", "/cfg");
  EXPECT_EQ(d.kv_cache_type_k, KvType::F16);
  EXPECT_EQ(d.kv_cache_type_v, KvType::F16);
  const PipelineConfig k = PipelineConfig::parse("model: a.gguf\nkv_cache_type_k: q8_0\nstages: [{device: cpu}]\n",
                                                 "t.yaml", "/cfg");
  EXPECT_EQ(k.kv_cache_type, KvType::F16);
  EXPECT_EQ(k.kv_cache_type_k, KvType::Q8_0);
  EXPECT_EQ(k.kv_cache_type_v, KvType::F16);
  const PipelineConfig b = PipelineConfig::parse(
      "model: a.gguf\nkv_cache_type: q4_0\nkv_cache_type_v: q8_0\nstages: [{device: cpu}]\n", "t.yaml", "/cfg");
  EXPECT_EQ(b.kv_cache_type, KvType::Q4_0);
  EXPECT_EQ(b.kv_cache_type_k, KvType::Q4_0);
  EXPECT_EQ(b.kv_cache_type_v, KvType::Q8_0);
  EXPECT_STREQ(kv_type_name(KvType::Q4_0), "q4_0");
  EXPECT_EQ(kv_tensor_type(KvType::Q8_0), TensorType::Q8_0);
}

TEST(PipelineConfig, ExpertPlacementPerStage) {
  const PipelineConfig c = PipelineConfig::parse(
      "model: a.gguf\nstages:\n  - {device: cuda:0, n_cpu_moe: 12, expert_cache: 2GiB, cpu_rows: 0.25}\n  - device: cuda:1\n    cpu_moe: true\n"
      "    override_tensor: \"blk\\\\.40\\\\.=CUDA1,exps=CPU\"\n  - {device: cuda:2}\n",
      "t.yaml", "/cfg");
  ASSERT_EQ(c.stages.size(), 3u);
  EXPECT_EQ(c.stages[0].experts.n_cpu_moe, 12);
  EXPECT_EQ(c.stages[0].experts.cache_bytes, uint64_t{2} << 30);
  EXPECT_EQ(c.stages[1].experts.cache_bytes, 0u);
  EXPECT_DOUBLE_EQ(c.stages[0].cpu_rows, 0.25);
  EXPECT_DOUBLE_EQ(c.stages[1].cpu_rows, 0.0);
  EXPECT_FALSE(c.stages[0].experts.cpu_moe);
  EXPECT_TRUE(c.stages[1].experts.cpu_moe);
  ASSERT_EQ(c.stages[1].experts.overrides.size(), 2u);
  EXPECT_EQ(c.stages[1].experts.overrides[0].pattern, "blk\\.40\\.");
  EXPECT_FALSE(c.stages[1].experts.overrides[0].host);
  EXPECT_TRUE(c.stages[1].experts.overrides[1].host);
  EXPECT_FALSE(c.stages[2].experts.any());
}

struct BadConfig {
  const char* text;
  const char* message;  // expected substring of the error
};

class PipelineConfigErrors : public ::testing::TestWithParam<BadConfig> {};

TEST_P(PipelineConfigErrors, NamesKeyAndLine) {
  try {
    PipelineConfig::parse(GetParam().text, "bad.yaml", "/cfg");
    FAIL() << "no error for:\n" << GetParam().text;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(GetParam().message), std::string::npos)
        << "got: " << e.what() << "\nwanted: " << GetParam().message;
  }
}


INSTANTIATE_TEST_SUITE_P(
    Table, PipelineConfigErrors,
    ::testing::Values(
        BadConfig{"stages: [{device: cpu}]\n", "bad.yaml: model: missing"},
        BadConfig{"model: a.gguf\n", "bad.yaml: stages: missing"},
        BadConfig{"model: a.gguf\nstages: []\n", "bad.yaml:2: stages: expected a non-empty list"},
        BadConfig{"model: a.gguf\ncontext_lenght: 10\nstages: [{device: cpu}]\n", "bad.yaml:2: context_lenght: unknown key"},
        BadConfig{"model: a.gguf\ncontext_length: lots\nstages: [{device: cpu}]\n",
                  "bad.yaml:2: context_length: expected an integer, found 'lots'"},
        BadConfig{"model: a.gguf\nmicro_batches: 0\nstages: [{device: cpu}]\n",
                  "bad.yaml:2: micro_batches: 0 is outside [1, 64]"},
        BadConfig{"model: a.gguf\nkv_cache_type: q8\nstages: [{device: cpu}]\n",
                  "bad.yaml:2: kv_cache_type: 'q8' is not one of f16, f32, q8_0, q4_0"},
        BadConfig{"model: a.gguf\nkv_cache_type_k: q5_1\nstages: [{device: cpu}]\n",
                  "bad.yaml:2: kv_cache_type_k: 'q5_1' is not one of f16, f32, q8_0, q4_0"},
        BadConfig{"model: a.gguf\nkv_cache_type_v: [q8_0]\nstages: [{device: cpu}]\n",
                  "bad.yaml:2: kv_cache_type_v: '' is not one of f16, f32, q8_0, q4_0"},
        BadConfig{"model: a.gguf\ntransport: tcp\nstages: [{device: cpu}]\n",
                  "bad.yaml:2: transport: 'tcp' is not one of auto, nccl, ipc, mpi"},
        BadConfig{"model: a.gguf\nstages:\n  - device: gpu0\n", "bad.yaml:3: stages[0].device: 'gpu0' is not cpu or cuda:N"},
        BadConfig{"model: a.gguf\nstages:\n  - device: cpu\n    memory: 24 GB!\n",
                  "bad.yaml:4: stages[0].memory: unknown unit 'GB!'"},
        BadConfig{"model: a.gguf\nstages:\n  - device: cpu\n    memroy: 24GiB\n", "bad.yaml:4: stages[0].memroy: unknown key"},
        BadConfig{"model: a.gguf\nstages:\n  - device: cpu\n    vram_budget: 2GiB\n",
                  "bad.yaml:4: stages[0].vram_budget: needs a cuda:N device"},
        BadConfig{"model: a.gguf\nstages:\n  - device: cuda:0\n    vram_budget: 2GiB\n",
                  "bad.yaml:4: stages[0].vram_budget: streams weights: set prefetch.enabled: true"},
        BadConfig{"model: a.gguf\nstages:\n  - device: cuda:0\n    cpu_rows: most\n",
                  "bad.yaml:4: stages[0].cpu_rows: expected auto or a share in [0, 0.95], found 'most'"},
        BadConfig{"model: a.gguf\nstages:\n  - device: cpu\n    cpu_rows: auto\n",
                  "bad.yaml:4: stages[0].cpu_rows: needs a cuda:N device"},
        BadConfig{"model: a.gguf\nstages:\n  - device: cpu\n    cpu_moe: true\n",
                  "bad.yaml:4: stages[0].cpu_moe: needs a cuda:N device"},
        BadConfig{"model: a.gguf\nstages:\n  - device: cuda:0\n    n_cpu_moe: -2\n",
                  "bad.yaml:4: stages[0].n_cpu_moe: -2 is outside [0, 1048576]"},
        BadConfig{"model: a.gguf\nstages:\n  - device: cuda:0\n    override_tensor: exps=TPU\n",
                  "bad.yaml:4: stages[0].override_tensor: --override-tensor: 'exps=TPU': the buffer 'TPU' is not CPU or CUDA<n>"},
        BadConfig{"model: a.gguf\nstages:\n  - device: cpu\n    layers: [3]\n",
                  "bad.yaml:4: stages[0].layers: expected [first, last)"},
        BadConfig{"model: a.gguf\nstages:\n  - {device: cpu, layers: [0, 4]}\n  - {device: cpu, layers: [5, 8]}\n",
                  "bad.yaml:4: stages[1].layers: starts at 5 but the previous stage ends at 4"},
        BadConfig{"model: a.gguf\nstages:\n  - {device: cpu, layers: [0, 4]}\n  - {device: cpu}\n",
                  "bad.yaml:4: stages[1].layers: missing: give layers for every stage or for none"},
        BadConfig{"model: a.gguf\nstages:\n  - {device: cpu, layers: [1, 4]}\n", "stages[0].layers: must start at layer 0"},
        BadConfig{"model: a.gguf\nprefetch: {enabled: maybe}\nstages: [{device: cpu}]\n",
                  "bad.yaml:2: prefetch.enabled: expected true or false, found 'maybe'"},
        BadConfig{"model: a.gguf\nprefetch: {stagin_buffers: 2}\nstages: [{device: cpu}]\n",
                  "bad.yaml:2: prefetch.stagin_buffers: unknown key"},
        BadConfig{"model: a.gguf\nmax_batch_tokens: 64\nprefill_chunk: 128\nstages: [{device: cpu}]\n",
                  "bad.yaml:3: prefill_chunk: 128 exceeds max_batch_tokens (64)"},
        BadConfig{"model: [a]\nstages: [{device: cpu}]\n", "bad.yaml:1: model: expected a file path"},
        BadConfig{"model: a.gguf\nstages: [{device: cpu}\n", "bad.yaml:3: YAML syntax: end of sequence flow not found"},
        BadConfig{"- just\n- a list\n", "bad.yaml:1: the config must be a mapping"},
        // Issue 21 item 11: a key given twice is an error (the second used to be ignored silently).
        BadConfig{"model: a.gguf\ncontext_length: 10\ncontext_length: 20\nstages: [{device: cpu}]\n",
                  "bad.yaml:3: context_length: given twice (first on line 2)"},
        BadConfig{"model: a.gguf\nstages:\n  - device: cpu\n    device: cuda:0\n",
                  "bad.yaml:4: stages[0].device: given twice (first on line 3)"},
        BadConfig{"model: a.gguf\nprefetch: {enabled: true, enabled: false}\nstages: [{device: cpu}]\n",
                  "prefetch.enabled: given twice"}));

TEST(PipelineConfig, MissingFile) {
  try {
    PipelineConfig::load("/nonexistent/x.yaml");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.yaml: cannot open"), std::string::npos);
  }
}

TEST(PipelineConfig, ShippedConfigsParse) {
  for (const char* name : {"cpu-2rank.yaml", "cpu-3rank.yaml", "dual4090.yaml", "single-gpu.yaml", "multinode.yaml"}) {
    SCOPED_TRACE(name);
    const PipelineConfig c = PipelineConfig::load(std::string(PIPELLM_SOURCE_DIR) + "/configs/" + name);
    EXPECT_GE(c.n_stages(), 1);
  }
}

}  // namespace
}  // namespace pipellm
