// Random-model generation: tensor type mixes follow llama-quantize (checked against the types in
// llama.cpp's own fixture files; the newer architectures' in quant_mix_test.cpp) and file sizes
// match llama.cpp's files of the same shapes; every newer-architecture preset, shrunk to test
// size, loads through its recipe and the loader and runs on the CPU; `pipellm mkmodel` options.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "engine/cpu/cpu_model.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model/batch.h"
#include "engine/model/model_weights.h"
#include "engine/model_gen/model_plan.h"
#include "engine/model_gen/quant_mix.h"
#include "engine/model_gen/random_model.h"
#include "engine/util/thread_pool.h"
#include "kernels/cpu/dequantize.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

const nlohmann::json& dequant_ref() {
  static const nlohmann::json j = [] {
    std::ifstream in(test::testdata("ref/dequant.json"));
    return nlohmann::json::parse(in);
  }();
  return j;
}

ModelShape tiny_shape(const std::string& arch, bool tied) {
  ModelShape s = *model_preset("tiny");
  s.arch = arch;
  s.tied_output = tied;
  if (arch != "llama") s.rms_eps = 1e-6f;
  return s;
}

void expect_plan_matches_fixture(const std::string& model, const ModelShape& shape, const std::string& quant) {
  const auto& ref = dequant_ref()[model + ".gguf"];
  ASSERT_FALSE(ref.is_null()) << model;
  const auto plan = plan_model_tensors(shape, *file_type_from_name(quant));
  EXPECT_EQ(plan.size(), ref.size()) << model;
  for (const auto& t : plan) {
    ASSERT_TRUE(ref.contains(t.name)) << model << ": llama.cpp's file has no " << t.name;
    EXPECT_EQ(tensor_type_name(t.type), ref[t.name]["type"].get<std::string>()) << model << " " << t.name;
    EXPECT_EQ(t.ne, ref[t.name]["ne"].get<std::vector<int64_t>>()) << model << " " << t.name;
  }
}

TEST(ModelGen, TypeMixesMatchLlamaQuantize) {
  for (const char* q : {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K"})
    expect_plan_matches_fixture(std::string("tiny-llama-") + q, tiny_shape("llama", false), q);
  expect_plan_matches_fixture("tiny-tied-Q4_K_M", tiny_shape("llama", true), "Q4_K_M");
  expect_plan_matches_fixture("tiny-tied-Q8_0", tiny_shape("llama", true), "Q8_0");
  expect_plan_matches_fixture("tiny-qwen2-Q4_K_M", tiny_shape("qwen2", false), "Q4_K_M");
  expect_plan_matches_fixture("tiny-qwen3-Q4_K_M", tiny_shape("qwen3", false), "Q4_K_M");
}

double gib(uint64_t b) { return static_cast<double>(b) / (1ull << 30); }

TEST(ModelGen, SizesMatchLlamaCppFiles) {
  // Sizes of llama.cpp's files of these shapes (issue 2): 4.58, 4.33, 7.95 GiB and 763 MiB.
  const auto l8 = *model_preset("llama3-8b");
  EXPECT_NEAR(gib(planned_bytes(plan_model_tensors(l8, *file_type_from_name("Q4_K_M")))), 4.58, 0.01);
  EXPECT_NEAR(gib(planned_bytes(plan_model_tensors(l8, *file_type_from_name("Q4_0")))), 4.33, 0.01);
  EXPECT_NEAR(gib(planned_bytes(plan_model_tensors(l8, *file_type_from_name("Q8_0")))), 7.95, 0.01);
  const auto l1 = *model_preset("llama3.2-1b");
  EXPECT_NEAR(static_cast<double>(planned_bytes(plan_model_tensors(l1, *file_type_from_name("Q4_K_M")))) /
                  (1 << 20),
              763.0, 1.5);
}

TEST(ModelGen, WritesALoadableModelWithTheVocabCopied) {
  auto vocab = GgufFile::open(test::model_path("tiny-llama-F32"));
  RandomModelOptions opt;
  opt.shape = tiny_shape("qwen3", false);
  opt.file_type = *file_type_from_name("Q4_K_M");
  opt.vocab = vocab.get();
  ThreadPool pool(2);
  const std::string path = ::testing::TempDir() + "/pipellm_mkmodel_test.gguf";
  write_random_model(opt, path, pool);
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->get_string("general.architecture"), "qwen3");
  EXPECT_EQ(f->get_u32("qwen3.block_count"), 2u);
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens"), vocab->get_string_array("tokenizer.ggml.tokens"));
  const auto plan = plan_model_tensors(opt.shape, opt.file_type);
  ASSERT_EQ(f->tensors().size(), plan.size());
  for (size_t k = 0; k < plan.size(); ++k) {
    EXPECT_EQ(f->tensors()[k].name, plan[k].name);
    EXPECT_EQ(f->tensors()[k].nbytes, plan[k].nbytes());
  }
  // Weights are finite with the intended spread: sd 0.02 for matrices, norms near 1.
  const TensorView& q = f->tensor("blk.0.attn_q.weight");
  std::vector<float> row(static_cast<size_t>(q.ne[0]));
  double sum2 = 0;
  for (int64_t r = 0; r < q.n_rows(); ++r) {
    dequantize_row(q.type, q.row(r), row.data(), q.ne[0]);
    for (float v : row) {
      ASSERT_TRUE(std::isfinite(v));
      sum2 += static_cast<double>(v) * v;
    }
  }
  EXPECT_NEAR(std::sqrt(sum2 / static_cast<double>(q.n_elements())), 0.02, 0.003);
  const TensorView& n = f->tensor("blk.1.ffn_norm.weight");
  dequantize_row(n.type, n.data, row.data(), n.ne[0]);
  EXPECT_NEAR(row[0], 1.0f, 0.1f);
  std::remove(path.c_str());
}

TEST(ModelGen, PlainTextTokensAreAsciiAndSpaceMarks) {
  EXPECT_TRUE(is_plain_text_token("Hello"));
  EXPECT_TRUE(is_plain_text_token("\xC4\xA0the"));      // byte-level BPE: " the"
  EXPECT_TRUE(is_plain_text_token("\xE2\x96\x81the"));  // SentencePiece: " the"
  EXPECT_FALSE(is_plain_text_token(""));
  EXPECT_FALSE(is_plain_text_token("caf\xC3\xA9"));      // é
  EXPECT_FALSE(is_plain_text_token("a\n"));
  EXPECT_FALSE(is_plain_text_token("\xC4"));              // a lone lead byte
}

// --text-head: the output rows of tokens that are not normal plain-text tokens are zero, the
// others random, so the greedy random model writes only plain text.
TEST(ModelGen, TextHeadZeroesTheRowsOfOtherTokens) {
  auto vocab = GgufFile::open(test::model_path("tiny-llama-F32"));
  RandomModelOptions opt;
  opt.shape = tiny_shape("llama", false);
  opt.file_type = *file_type_from_name("Q8_0");
  opt.vocab = vocab.get();
  opt.text_head = true;
  ThreadPool pool(2);
  const std::string path = ::testing::TempDir() + "/pipellm_mkmodel_text_head.gguf";
  write_random_model(opt, path, pool);
  auto f = GgufFile::open(path);
  const auto& texts = vocab->get_string_array("tokenizer.ggml.tokens");
  const auto types = vocab->get_i32_array("tokenizer.ggml.token_type");
  const TensorView& out = f->tensor("output.weight");
  ASSERT_EQ(out.n_rows(), static_cast<int64_t>(texts.size()));
  std::vector<float> row(static_cast<size_t>(out.ne[0]));
  int zero = 0, kept = 0;
  for (int64_t r = 0; r < out.n_rows(); ++r) {
    dequantize_row(out.type, out.row(r), row.data(), out.ne[0]);
    const bool all_zero = std::all_of(row.begin(), row.end(), [](float v) { return v == 0.0f; });
    const std::string text(texts[static_cast<size_t>(r)]);
    const bool plain = types[static_cast<size_t>(r)] == 1 && is_plain_text_token(text);
    EXPECT_EQ(all_zero, !plain) << "token " << r << " '" << text << "'";
    (all_zero ? zero : kept) += 1;
  }
  EXPECT_GT(zero, 0);
  EXPECT_GT(kept, 0);
  opt.shape.tied_output = true;
  EXPECT_THROW(write_random_model(opt, path, pool), InvalidArgument);
  std::remove(path.c_str());
}

// ---- the presets of the newer architectures ----

std::string param_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string s = info.param;
  for (char& c : s)
    if (c == '-' || c == '.') c = '_';
  return s;
}

// Each preset at test size (shrink_shape: its family's every tensor kind, in KiB) in its own file
// type: written, read back by the recipe, bound by the loader and run on the CPU.
class ModelGenPreset : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelGenPreset, AtTestSizeLoadsAndRunsOnTheCpu) {
  const ModelShape shape = shrink_shape(*model_preset(GetParam()));
  RandomModelOptions opt;
  opt.shape = shape;
  opt.file_type = *file_type_from_name(shape.file_type);
  ThreadPool pool(2);
  const std::string path = ::testing::TempDir() + "/pipellm_preset_" + param_name({GetParam(), 0}) + ".gguf";
  write_random_model(opt, path, pool);
  {
    const auto f = GgufFile::open(path);
    const ModelConfig c = ModelConfig::from_gguf(*f);
    const ModelPlan plan = plan_model(shape, opt.file_type);
    EXPECT_EQ(c.summary(), plan.config.summary());
    EXPECT_EQ(arch_name(c.arch), shape.arch);
    EXPECT_EQ(c.has_moe(), shape.n_expert > 0);
    EXPECT_EQ(c.tied_output, shape.tied_output);
    // The loader finds every tensor of every layer with the shape the recipe asks for.
    const ModelWeights w = ModelWeights::load(*f, c, LayerRange::all(c), true, true);
    EXPECT_EQ(w.layers.size(), static_cast<size_t>(c.n_layer));
    ASSERT_EQ(f->tensors().size(), plan.tensors.size());
    for (size_t k = 0; k < plan.tensors.size(); ++k) {
      EXPECT_EQ(f->tensors()[k].name, plan.tensors[k].name);
      EXPECT_EQ(f->tensors()[k].type, plan.tensors[k].type) << plan.tensors[k].name;
    }
    if (shape.sliding_window > 0 && shape.arch != "phi3") {  // both kinds of layer are there
      EXPECT_GT(c.layer(0).window, 0);
      EXPECT_EQ(c.layer(c.n_layer - 1).window, 0);
    }
  }
  CpuModelOptions mo;
  mo.n_threads = 2;
  mo.stage.n_ctx = 64;
  const auto model = CpuModel::open(path, mo);
  const std::vector<int32_t> tokens = {1,   17, 300, 5,   900, 42,  7, 613, 259, 1000,
                                       3,   77, 512, 64,  128, 999, 2, 31,  8,   400};  // past the 16-key windows
  std::vector<float> logits;
  model->stage().forward(Batch::sequence(tokens, 0, 0, true), logits);
  ASSERT_EQ(logits.size(), tokens.size() * static_cast<size_t>(model->config().n_vocab));
  double sum2 = 0;
  for (float v : logits) {
    ASSERT_TRUE(std::isfinite(v));
    sum2 += static_cast<double>(v) * v;
  }
  EXPECT_GT(sum2, 0.0);  // a random network's logits are not all zero
  std::remove(path.c_str());
}

INSTANTIATE_TEST_SUITE_P(NewArchs, ModelGenPreset,
                         ::testing::Values("gemma3-12b", "gemma3-27b", "phi3-mini", "qwen3-30b-a3b", "mixtral-8x7b",
                                           "gpt-oss-20b", "qwen3.6-35b-a3b", "qwen3.6-27b", "gemma4-31b",
                                           "gemma4-26b-a4b"),
                         param_name);

double gb(uint64_t b) { return static_cast<double>(b) / 1e9; }

TEST(ModelGen, NewPresetSizesMatchPublishedFiles) {
  struct Case {
    const char* preset;
    double gb;  // decimal GB, as the download pages list them
  };
  // Published llama.cpp GGUFs of these models in the preset's file type (their tokenizer
  // metadata, a few MB, is in the published size and not in the plan):
  // gpt-oss-20b MXFP4_MOE: ggml-org/gpt-oss-20b-GGUF gpt-oss-20b-mxfp4.gguf, 12.1 GB;
  // qwen3-30b-a3b Q4_K_M: unsloth's / bartowski's Qwen3-30B-A3B-Q4_K_M.gguf, 18.6 GB;
  // gemma3-12b / -27b Q4_K_M: bartowski's google_gemma-3-{12b,27b}-it-Q4_K_M.gguf, 7.3 / 16.5 GB;
  // phi3-mini Q4_K_M: bartowski's Phi-3-mini-4k-instruct-Q4_K_M.gguf, 2.39 GB.
  const Case cases[] = {{"gpt-oss-20b", 12.1},  {"qwen3-30b-a3b", 18.6}, {"gemma3-12b", 7.3},
                        {"gemma3-27b", 16.5},   {"phi3-mini", 2.39}};
  for (const Case& c : cases) {
    const ModelShape s = *model_preset(c.preset);
    const double planned = gb(planned_bytes(plan_model_tensors(s, *file_type_from_name(s.file_type))));
    EXPECT_NEAR(planned / c.gb, 1.0, 0.03) << c.preset << ": " << planned << " GB planned";
  }

  // Mixtral. bartowski's Mixtral-8x22B-v0.1-Q4_K_M.gguf (llama.cpp b2636), 85.58 GB: the same
  // rules at 8x22B's shape (56 layers, n_embd 6144, 48 heads, experts 16384 wide).
  const auto q4km = *file_type_from_name("Q4_K_M");
  ModelShape x22 = *model_preset("mixtral-8x7b");
  x22.n_layer = 56;
  x22.n_embd = 6144;
  x22.n_ff = 16384;
  x22.n_head = 48;
  EXPECT_NEAR(gb(planned_bytes(plan_model_tensors(x22, q4km))) / 85.58, 1.0, 0.01);
  // 8x7B plans 28.4 GB. TheBloke's mixtral-8x7b-v0.1.Q4_K_M.gguf (26.44 GB) predates llama.cpp's
  // stacked experts (April 2024): its per-expert blk.N.ffn_down.E.weight names escaped the
  // "ffn_down.weight" bump, so that file is this plan with every ffn_down_exps left in Q4_K.
  auto x7 = plan_model_tensors(*model_preset("mixtral-8x7b"), q4km);
  EXPECT_NEAR(gb(planned_bytes(x7)), 28.4, 0.1);
  for (PlannedTensor& t : x7)
    if (t.name.find("ffn_down_exps") != std::string::npos) t.type = TensorType::Q4_K;
  EXPECT_NEAR(gb(planned_bytes(x7)) / 26.44, 1.0, 0.01);
}

// The real-size recipes see the published structure.
TEST(ModelGen, NewPresetsHaveTheirFamiliesStructure) {
  const auto config = [](const char* name) {
    return plan_model(*model_preset(name), *file_type_from_name("Q8_0")).config;
  };
  const ModelConfig g27 = config("gemma3-27b");
  EXPECT_EQ(g27.n_layer, 62);
  EXPECT_TRUE(g27.tied_output);
  EXPECT_EQ(g27.layer(4).window, 1024);
  EXPECT_EQ(g27.layer(5).window, 0);  // every sixth layer is global
  EXPECT_FLOAT_EQ(g27.layer(5).rope.freq_scale, 1.0f / 8.0f);
  EXPECT_FLOAT_EQ(g27.layer(4).rope.base, 10000.0f);
  EXPECT_FLOAT_EQ(g27.layer(0).attn_scale, 1.0f / std::sqrt(168.0f));  // query_pre_attn_scalar 5376 / 32
  const ModelConfig oss = config("gpt-oss-20b");
  EXPECT_EQ(oss.layer(0).n_expert, 32);
  EXPECT_EQ(oss.layer(0).n_expert_used, 4);
  EXPECT_EQ(oss.layer(0).window, 128);
  EXPECT_EQ(oss.layer(1).window, 0);
  EXPECT_TRUE(oss.layer(1).sinks);
  EXPECT_FLOAT_EQ(oss.layer(1).rope.ext_factor, 1.0f);  // YaRN
  const ModelConfig q = config("qwen3-30b-a3b");
  EXPECT_EQ(q.layer(0).n_ff, 768);
  EXPECT_EQ(q.layer(0).n_expert, 128);
  EXPECT_TRUE(q.layer(0).qk_norm);
  const ModelConfig mx = config("mixtral-8x7b");
  EXPECT_EQ(mx.layer(0).n_ff, 14336);
  EXPECT_EQ(mx.layer(0).n_expert_used, 2);
  const ModelConfig phi = config("phi3-mini");
  EXPECT_TRUE(phi.layer(0).qkv_fused);
  EXPECT_EQ(phi.layer(0).window, 0);  // Phi-3's sliding_window is not used
  EXPECT_EQ(phi.head_dim, 96);
}

// The hybrid presets' recipes see the published structure (model_presets.cpp cites the figures).
TEST(ModelGen, HybridPresetsHaveTheirFamiliesStructure) {
  const auto config = [](const char* name) {
    return plan_model(*model_preset(name), *file_type_from_name("Q8_0")).config;
  };
  const ModelConfig q35 = config("qwen3.6-35b-a3b");
  EXPECT_EQ(q35.n_layer, 40);
  EXPECT_EQ(q35.n_vocab, 248320);
  EXPECT_FALSE(q35.tied_output);
  for (int il : {0, 1, 2}) EXPECT_EQ(q35.layer(il).mixer, Mixer::DeltaNet) << il;
  EXPECT_EQ(q35.layer(3).mixer, Mixer::Attention);  // every 4th layer attends
  EXPECT_EQ(q35.layer(0).delta.n_k_heads, 16);
  EXPECT_EQ(q35.layer(0).delta.n_v_heads, 32);
  EXPECT_EQ(q35.layer(0).delta.head, 128);
  EXPECT_TRUE(q35.layer(3).gated_q);
  EXPECT_EQ(q35.layer(3).head_dim, 256);
  EXPECT_EQ(q35.layer(3).n_rot, 64);  // a quarter of the head
  EXPECT_EQ(q35.layer(3).n_head_kv, 2);
  EXPECT_EQ(q35.layer(0).n_expert, 256);
  EXPECT_EQ(q35.layer(0).n_expert_used, 8);
  EXPECT_EQ(q35.layer(0).n_ff, 512);
  EXPECT_EQ(q35.layer(0).n_ff_shexp, 512);
  const ModelConfig q27 = config("qwen3.6-27b");
  EXPECT_EQ(q27.n_layer, 64);
  EXPECT_EQ(q27.layer(0).delta.n_v_heads, 48);
  EXPECT_EQ(q27.layer(63).mixer, Mixer::Attention);
  EXPECT_EQ(q27.layer(0).n_ff, 17408);
  EXPECT_FALSE(q27.has_moe());

  const ModelConfig g31 = config("gemma4-31b");
  EXPECT_EQ(g31.n_layer, 60);
  EXPECT_TRUE(g31.tied_output);
  EXPECT_TRUE(g31.has_rope_freqs);
  EXPECT_FLOAT_EQ(g31.logit_softcap, 30.0f);
  EXPECT_EQ(g31.per_layer_input, 0);
  const LayerSpec& local = g31.layer(4);
  const LayerSpec& global = g31.layer(5);  // 5 sliding layers, then a global one
  EXPECT_EQ(local.window, 1024);
  EXPECT_EQ(local.head_dim, 256);
  EXPECT_EQ(local.n_head_kv, 16);
  EXPECT_FALSE(local.k_eq_v);
  EXPECT_FLOAT_EQ(local.rope.base, 10000.0f);
  EXPECT_EQ(global.window, 0);
  EXPECT_EQ(global.head_dim, 512);
  EXPECT_EQ(global.n_head_kv, 4);
  EXPECT_TRUE(global.k_eq_v);            // attention_k_eq_v: no attn_v
  EXPECT_TRUE(global.rope.freq_factors);  // proportional rope through rope_freqs
  EXPECT_TRUE(global.output_scale);
  EXPECT_EQ(global.kv_source, -1);       // no KV sharing
  EXPECT_EQ(global.n_ff, 21504);
  const ModelConfig g26 = config("gemma4-26b-a4b");
  EXPECT_EQ(g26.n_layer, 30);
  EXPECT_EQ(g26.layer(0).n_expert, 128);
  EXPECT_EQ(g26.layer(0).n_expert_used, 8);
  EXPECT_EQ(g26.layer(0).n_ff, 704);
  EXPECT_EQ(g26.layer(0).n_ff_dense, 2112);  // the dense MLP beside the experts
  EXPECT_EQ(g26.layer(29).n_head_kv, 2);
  EXPECT_TRUE(g26.layer(29).k_eq_v);

  // The plan lists what the recipe binds: rope_freqs over the global heads' pairs, no attn_v on
  // a K = V layer.
  const auto plan = plan_model_tensors(*model_preset("gemma4-31b"), *file_type_from_name("Q4_K_M"));
  std::map<std::string, const PlannedTensor*> by_name;
  for (const PlannedTensor& t : plan) by_name[t.name] = &t;
  ASSERT_TRUE(by_name.count("rope_freqs.weight"));
  EXPECT_EQ(by_name["rope_freqs.weight"]->ne, std::vector<int64_t>{256});
  EXPECT_EQ(by_name["rope_freqs.weight"]->type, TensorType::F32);
  EXPECT_TRUE(by_name.count("blk.4.attn_v.weight"));
  EXPECT_FALSE(by_name.count("blk.5.attn_v.weight"));
  EXPECT_EQ(by_name["blk.5.attn_k.weight"]->ne, (std::vector<int64_t>{5376, 4 * 512}));
}

// Parameter counts of the text models (F16 bytes / 2) against the published ones. Gemma 4 31B:
// "30.7B dense + ~550M vision encoder", 26B-A4B: 25.2 B total (model cards; the vision encoder
// counted apart). Qwen3.6 publishes totals with a vision tower (27 blocks of 1152, ~0.45 B) and
// the MTP block llama.cpp's converter leaves out: 35B-A3B's 35.95 B and 27B's 27.78 B (bf16
// safetensors totals) less ~0.45 B and ~0.85 B (one MoE layer) or ~0.45 B (one dense layer) are
// estimates, hence the tolerance.
TEST(ModelGen, HybridPresetsHaveThePublishedParameterCounts) {
  struct Case {
    const char* preset;
    double billions;
  };
  const Case cases[] = {{"qwen3.6-35b-a3b", 34.65}, {"qwen3.6-27b", 26.9}, {"gemma4-31b", 30.7},
                        {"gemma4-26b-a4b", 25.2}};
  for (const Case& c : cases) {
    const double params =
        static_cast<double>(planned_bytes(plan_model_tensors(*model_preset(c.preset), *file_type_from_name("F16")))) /
        2e9;
    EXPECT_NEAR(params / c.billions, 1.0, 0.02) << c.preset << ": " << params << " B parameters planned";
  }
}

// gemma-4-26B-A4B's experts are 704 wide and its dense MLP 2112: their ffn_down rows are no whole
// number of 256-blocks, so where the mix says Q4_K llama-quantize falls back to Q5_0, which
// PipeLLM cannot encode: it writes Q8_0 (quant_mix.h). With those tensors at Q5_0's 22 bytes per
// 32 values instead of Q8_0's 34, the plan is ggml-org's gemma-4-26B-A4B-it Q4_K_M GGUF (16.80 GB
// on disk per its Hugging Face tree); the generated file is about 9% larger.
TEST(ModelGen, Gemma4MoeSizeIsLlamaCppsButForTheQ5_0Fallback) {
  const FileType q4km = *file_type_from_name("Q4_K_M");
  const ModelPlan plan = plan_model(*model_preset("gemma4-26b-a4b"), q4km);
  uint64_t as_llama_cpp = 0;
  for (const PlannedTensor& t : plan.tensors) {
    std::vector<int64_t> whole_blocks = t.ne;
    whole_blocks[0] = (whole_blocks[0] + 255) / 256 * 256;
    const bool q5_0 = t.type == TensorType::Q8_0 &&
                      choose_tensor_type(t.name, whole_blocks, plan.config.n_layer, q4km, false, 128) == TensorType::Q4_K;
    as_llama_cpp += q5_0 ? t.nbytes() / 34 * 22 : t.nbytes();
  }
  EXPECT_NEAR(gb(as_llama_cpp) / 16.80, 1.0, 0.01) << gb(as_llama_cpp) << " GB";
  EXPECT_NEAR(static_cast<double>(planned_bytes(plan.tensors)) / static_cast<double>(as_llama_cpp), 1.09, 0.01);
}

// ---- the command ----

struct CliResult {
  int code;
  std::string out;
};

CliResult run_mkmodel(const std::string& args) {
  // One file per test: ctest runs the tests of this file side by side.
  const std::string out = ::testing::TempDir() + "/pipellm_mkmodel_cli_out_" +
                          ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".txt";
  const std::string cmd = std::string(PIPELLM_CLI_PATH) + " mkmodel " + args + " >" + out + " 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream in(out);
  std::ostringstream s;
  s << in.rdbuf();
  std::remove(out.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, s.str()};
}

TEST(Mkmodel, HelpListsThePresets) {
  const CliResult r = run_mkmodel("--help");
  EXPECT_EQ(r.code, 0);
  for (const std::string& name : model_preset_names()) EXPECT_NE(r.out.find(name), std::string::npos) << name;
  EXPECT_NE(r.out.find("--tiny"), std::string::npos);
}

TEST(Mkmodel, TinyPresetInThePresetsFileType) {
  const std::string path = ::testing::TempDir() + "/pipellm_mkmodel_cli_gptoss.gguf";
  const CliResult r = run_mkmodel("--preset gpt-oss-20b --tiny --layers 4 --threads 2 " + path);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto f = GgufFile::open(path);
  EXPECT_EQ(f->get_u32("general.file_type"), 38u);  // MXFP4_MOE, gpt-oss's published type
  EXPECT_EQ(f->get_u32("gpt-oss.block_count"), 4u);  // --layers applies after --tiny
  EXPECT_EQ(f->tensor("blk.3.ffn_down_exps.weight").type, TensorType::MXFP4);
  EXPECT_EQ(f->tensor("blk.3.ffn_gate_inp.weight").type, TensorType::F32);
  std::remove(path.c_str());
  EXPECT_EQ(run_mkmodel("--tiny " + path).code, 2);  // --tiny needs a preset
  EXPECT_EQ(run_mkmodel("--preset tiny --arch falcon " + path).code, 2);
}

TEST(Mkmodel, TinyHybridPresetKeepsWhatLlamaQuantizeKeeps) {
  const std::string path = ::testing::TempDir() + "/pipellm_mkmodel_cli_qwen36.gguf";
  const CliResult r = run_mkmodel("--preset qwen3.6-35b-a3b --tiny --threads 2 " + path);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto f = GgufFile::open(path);
  EXPECT_EQ(f->get_string("general.architecture"), "qwen35moe");
  EXPECT_EQ(f->get_u32("qwen35moe.block_count"), 4u);  // one attention interval
  EXPECT_FALSE(f->has("qwen35moe.feed_forward_length"));
  EXPECT_EQ(f->tensor("blk.0.ssm_conv1d.weight").type, TensorType::F32);
  EXPECT_EQ(f->tensor("blk.0.ssm_a").type, TensorType::F32);
  EXPECT_EQ(f->tensor("blk.0.ssm_dt.bias").type, TensorType::F32);
  EXPECT_EQ(f->tensor("blk.0.ffn_gate_inp_shexp.weight").type, TensorType::F32);
  // attn_v-like: the _M bump on the 3rd and the last of 4 (use_more_bits), as on attn_v.
  EXPECT_EQ(f->tensor("blk.0.attn_qkv.weight").type, TensorType::Q4_K);
  EXPECT_EQ(f->tensor("blk.2.attn_qkv.weight").type, TensorType::Q6_K);
  EXPECT_EQ(f->tensor("blk.3.attn_v.weight").type, TensorType::Q6_K);
  EXPECT_EQ(f->tensor("blk.3.attn_q.weight").type, TensorType::Q4_K);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace pipellm
