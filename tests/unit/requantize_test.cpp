// `pipellm quantize` on files people already have: an already-quantized source is refused unless
// --allow-requantize is given, and with it the requantized model's logits stay within a bound
// derived from the weights (not from recorded outputs); every tensor is reported once; type names
// without an encoder are refused by name with the accepted list.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "base/error.h"
#include "engine/cpu/cpu_model.h"
#include "engine/gguf/gguf_file.h"
#include "engine/gguf/gguf_writer.h"
#include "engine/model_gen/quant_mix.h"
#include "engine/model_gen/requantize.h"
#include "engine/util/thread_pool.h"
#include "kernels/cpu/dequantize.h"
#include "tests/unit/model_test_util.h"
#include "tests/unit/cli_run.h"

namespace pipellm {
namespace {

using test::RunResult;
using test::run_cli;
using test::slurp;
using test::temp_path;

namespace fs = std::filesystem;

const char* kSource = "tiny-llama-Q4_K_M";  // llama.cpp's Q4_K_M file (Q4_K and Q6_K matrices)

// A scratch directory removed with everything in it.
class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("pipellm-requantize-" + std::to_string(::getpid()))) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

bool is_float(TensorType t) { return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16; }

std::vector<float> decode(const TensorView& t) {
  std::vector<float> v(static_cast<size_t>(t.n_elements()));
  for (int64_t r = 0; r < t.n_rows(); ++r) dequantize_row(t.type, t.row(r), v.data() + r * t.ne[0], t.ne[0]);
  return v;
}

// Rounds to bfloat16 (nearest even): an independent, known-size perturbation of the weights.
float round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  float y;
  std::memcpy(&y, &u, 4);
  return y;
}

// `path` with every tensor decoded to F32 (the exact values the file encodes), each matrix
// passed through `perturb` when given.
void write_f32_copy(const GgufFile& f, const std::string& path, float (*perturb)(float) = nullptr) {
  GgufWriter w(f.alignment());
  for (const auto& [key, value] : f.metadata()) {
    if (key != "general.alignment") w.set_value(key, value);
  }
  w.set_u32("general.file_type", 0);
  for (const TensorView& t : f.tensors()) {
    const std::vector<int64_t> ne(t.ne, t.ne + t.n_dims);
    const bool matrix = t.n_dims >= 2;
    w.add_tensor(t.name, TensorType::F32, ne, [&t, perturb, matrix](uint8_t* dst, size_t) {
      std::vector<float> v = decode(t);
      if (perturb && matrix)
        for (float& x : v) x = perturb(x);
      std::memcpy(dst, v.data(), v.size() * sizeof(float));
    });
  }
  w.write(path);
}

// Relative RMS distance, in float64, between the weight matrices of two files of the same model
// (all matrices pooled: the perturbation the model as a whole sees).
double weight_error(const GgufFile& a, const GgufFile& b, float (*perturb)(float) = nullptr) {
  double num = 0.0, den = 0.0;
  for (const TensorView& t : a.tensors()) {
    if (t.n_dims < 2) continue;
    const std::vector<float> x = decode(t);
    std::vector<float> y = decode(b.tensor(t.name));
    if (perturb)
      for (float& v : y) v = perturb(v);
    for (size_t i = 0; i < x.size(); ++i) {
      const double d = static_cast<double>(y[i]) - x[i];
      num += d * d;
      den += static_cast<double>(x[i]) * x[i];
    }
  }
  return std::sqrt(num / den);
}

std::vector<float> prompt_logits(const std::string& path, const std::vector<int32_t>& tokens) {
  CpuModelOptions opt;
  opt.n_threads = 2;
  opt.stage.n_ctx = 128;
  auto model = CpuModel::open(path, opt);
  std::vector<float> logits;
  model->stage().forward(Batch::sequence(tokens, 0, 0, /*all_logits=*/true), logits);
  return logits;
}

TEST(Requantize, QuantizedSourceIsRefusedWithoutTheFlag) {
  TempDir dir;
  const std::string src = test::model_path(kSource);
  const std::string out = dir.file("out.gguf");
  const RunResult r = run_cli("quantize " + src + " " + out + " Q8_0");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_FALSE(fs::exists(out)) << "nothing is written when a tensor is refused";
  EXPECT_NE(r.err.find("--allow-requantize"), std::string::npos) << r.err;
  // The message names a tensor of the file and that tensor's (quantized) type.
  auto f = GgufFile::open(src);
  bool named = false;
  for (const TensorView& t : f->tensors()) {
    if (r.err.find("'" + t.name + "'") == std::string::npos) continue;
    named = true;
    EXPECT_FALSE(is_float(t.type)) << t.name;
    EXPECT_NE(r.err.find(std::string("(") + tensor_type_name(t.type) + ")"), std::string::npos) << r.err;
  }
  EXPECT_TRUE(named) << r.err;

  // The library refuses too, before writing anything.
  ThreadPool pool(2);
  EXPECT_THROW(requantize_model(*f, *file_type_from_name("Q6_K"), out, pool), InvalidArgument);
  EXPECT_FALSE(fs::exists(out));
}

TEST(Requantize, SameMixCopiesWithoutTheFlag) {
  // Q4_K_M -> Q4_K_M re-encodes nothing (every tensor keeps its type): not a requantization.
  TempDir dir;
  auto f = GgufFile::open(test::model_path(kSource));
  ThreadPool pool(2);
  const std::string out = dir.file("same.gguf");
  const RequantizeSummary s = requantize_model(*f, *file_type_from_name("Q4_K_M"), out, pool);
  EXPECT_EQ(s.n_converted, 0);
  auto g = GgufFile::open(out);
  for (const TensorView& t : f->tensors()) {
    const TensorView& u = g->tensor(t.name);
    ASSERT_EQ(u.type, t.type) << t.name;
    ASSERT_EQ(u.nbytes, t.nbytes) << t.name;
    EXPECT_EQ(std::memcmp(u.data, t.data, t.nbytes), 0) << t.name;
  }
}

// With --allow-requantize, Q4_K_M -> Q8_0: the engine loads the result and its logits stay close
// to the original's. The reference is the original's weights decoded to F32 (the exact values the
// Q4_K file holds). The bound is first-order: the logits move by (sensitivity x relative weight
// error), the sensitivity measured on the same reference with every weight rounded to bfloat16
// (an independent perturbation of known size), the weight errors computed in float64.
TEST(Requantize, AllowedRequantizationKeepsLogitsClose) {
  TempDir dir;
  const std::string src = test::model_path(kSource);
  const std::string out = dir.file("q8_0.gguf");
  const RunResult r = run_cli("quantize --allow-requantize " + src + " " + out + " Q8_0 2");
  ASSERT_EQ(r.code, 0) << r.err;

  auto orig = GgufFile::open(src);
  auto requant = GgufFile::open(out);
  int requantized = 0;
  for (const TensorView& t : orig->tensors()) {
    if (t.n_dims < 2) continue;
    EXPECT_EQ(requant->tensor(t.name).type, TensorType::Q8_0) << t.name;
    requantized += is_float(t.type) ? 0 : 1;
  }
  EXPECT_GT(requantized, 0);

  const std::string ref_path = dir.file("ref-f32.gguf");
  const std::string bf16_path = dir.file("ref-bf16.gguf");
  write_f32_copy(*orig, ref_path);
  write_f32_copy(*orig, bf16_path, round_bf16);

  const auto tokens = test::read_ids(test::fixture_ref(kSource, ".tokens"));
  const std::vector<float> ref = prompt_logits(ref_path, tokens);
  const std::vector<float> bf16 = prompt_logits(bf16_path, tokens);
  const std::vector<float> got = prompt_logits(out, tokens);
  const std::vector<float> original = prompt_logits(src, tokens);
  ASSERT_EQ(got.size(), ref.size());

  const double e_bf16 = weight_error(*orig, *orig, round_bf16);
  const double e_q8 = weight_error(*orig, *requant);
  const double sensitivity = test::rel_rms(bf16.data(), ref.data(), ref.size()) / e_bf16;
  const double predicted = sensitivity * e_q8;
  const double dist = test::rel_rms(got.data(), ref.data(), ref.size());
  const double original_dist = test::rel_rms(original.data(), ref.data(), ref.size());
  std::printf(
      "weights: Q8_0 re-encoding %.2e, bf16 %.2e relative RMS; sensitivity %.3f -> predicted %.2e; "
      "requantized vs reference %.2e, original Q4_K_M file vs reference %.2e\n",
      e_q8, e_bf16, sensitivity, predicted, dist, original_dist);
  EXPECT_GT(e_q8, 0.0);
  // 2x the first-order prediction, plus the engine's own distance on the original file (its
  // quantized-activation products, which the Q8_0 file goes through as well).
  EXPECT_LT(dist, 2.0 * predicted + original_dist);

  // The clear picks do not move.
  const size_t V = ref.size() / tokens.size();
  int considered = 0, agreed = 0;
  for (size_t p = 0; p < tokens.size(); ++p) {
    const float* a = got.data() + p * V;
    const float* b = ref.data() + p * V;
    if (test::top_gap(b, V) > 0.1) {
      ++considered;
      agreed += test::argmax(a, V) == test::argmax(b, V) ? 1 : 0;
    }
  }
  ASSERT_GT(considered, 0);
  EXPECT_EQ(agreed, considered);
}

// One progress line per tensor, in file order, each named once; then the summary.
TEST(Requantize, ProgressListsEveryTensorOnce) {
  TempDir dir;
  const std::string src = test::model_path("tiny-llama-F32");
  const RunResult r = run_cli("quantize " + src + " " + dir.file("q4.gguf") + " Q4_K_M");
  ASSERT_EQ(r.code, 0) << r.err;
  auto f = GgufFile::open(src);
  const auto& tensors = f->tensors();
  std::map<std::string, int> seen;
  std::vector<std::string> order;
  std::istringstream lines(r.err);
  std::string line, summary, last_percent;
  while (std::getline(lines, line)) {
    if (line.rfind("quantize: wrote ", 0) == 0) summary = line;
    if (line.empty() || line[0] != '[') continue;
    std::istringstream fields(line.substr(line.find(']') + 1));
    std::string percent, name, from, arrow, to;
    fields >> percent >> name >> from >> arrow >> to;
    EXPECT_EQ(arrow, "->") << line;
    ++seen[name];
    order.push_back(name);
    last_percent = percent;
    const TensorView* t = f->find_tensor(name);
    ASSERT_NE(t, nullptr) << "progress names a tensor the file lacks: " << line;
    EXPECT_EQ(from, tensor_type_name(t->type)) << line;
  }
  ASSERT_EQ(order.size(), tensors.size()) << r.err;
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(order[i], tensors[i].name);
    EXPECT_EQ(seen[tensors[i].name], 1) << tensors[i].name;
  }
  EXPECT_EQ(last_percent, "100.0%");
  EXPECT_NE(summary.find("MiB ->"), std::string::npos) << r.err;
  EXPECT_NE(summary.find(" s,"), std::string::npos) << r.err;
}

TEST(Requantize, TypesWithoutAnEncoderAreRefusedByName) {
  TempDir dir;
  const std::string src = test::model_path("tiny-llama-F32");
  const std::string out = dir.file("x.gguf");
  for (const char* type : {"Q9_K", "Q3_K_M", "IQ4_XS", "Q5_0"}) {
    const RunResult r = run_cli("quantize " + src + " " + out + " " + type);
    EXPECT_EQ(r.code, 2) << type << ": " << r.err;
    EXPECT_NE(r.err.find(std::string("'") + type + "'"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("accepted types:"), std::string::npos) << r.err;
    for (const std::string& n : file_type_names()) EXPECT_NE(r.err.find(" " + n), std::string::npos) << n;
    EXPECT_FALSE(fs::exists(out));
  }
  // The known ones name the tensor type PipeLLM cannot encode.
  EXPECT_NE(run_cli("quantize " + src + " " + out + " q3_k_m").err.find("Q3_K encoder"), std::string::npos);
}

// llama-quantize's argument forms: IN TYPE (output beside the input), IN OUT TYPE NTHREADS, and
// its aliases Q4_K / Q5_K for the _M mixes.
TEST(Requantize, LlamaQuantizeArgumentForms) {
  TempDir dir;
  const std::string in = dir.file("model-f32.gguf");
  fs::copy_file(test::model_path("tiny-llama-F32"), in);
  RunResult r = run_cli("quantize " + in + " Q4_K");
  ASSERT_EQ(r.code, 0) << r.err;
  auto a = GgufFile::open(dir.file("ggml-model-Q4_K_M.gguf"));
  EXPECT_EQ(a->get_u32("general.file_type"), 15u);

  r = run_cli("quantize " + in + " " + dir.file("q5.gguf") + " q5_k_s 2");
  ASSERT_EQ(r.code, 0) << r.err;
  auto b = GgufFile::open(dir.file("q5.gguf"));
  EXPECT_EQ(b->get_u32("general.file_type"), 16u);
  EXPECT_EQ(b->tensor("blk.0.attn_q.weight").type, TensorType::Q5_K);
  EXPECT_NE(r.err.find("2 threads"), std::string::npos) << r.err;

  EXPECT_EQ(run_cli("quantize " + in + " " + dir.file("q.gguf") + " Q8_0 zero").code, 2);
  EXPECT_EQ(run_cli("quantize " + in).code, 2);
}

// llama-quantize's Q4_K_S / Q5_K_S mixes (src/llama-quant.cpp): Q4_K_S gives the first four
// attn_v and the first eighth of ffn_down Q5_K; Q5_K_S only bumps the output head.
TEST(Requantize, SmallKQuantMixes) {
  const FileType s4 = *file_type_from_name("Q4_K_S");
  const FileType s5 = *file_type_from_name("Q5_K_S");
  EXPECT_EQ(s4.gguf_id, 14u);
  EXPECT_EQ(s5.gguf_id, 16u);
  EXPECT_EQ(file_type_from_name("q4_k")->name, "Q4_K_M");
  EXPECT_EQ(file_type_from_name("Q5_K")->name, "Q5_K_M");
  const auto type = [](const FileType& ft, const std::string& name, std::vector<int64_t> ne, int n_expert = 0) {
    return choose_tensor_type(name, ne, 32, ft, true, n_expert);
  };
  for (int l = 0; l < 32; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    EXPECT_EQ(type(s4, b + "attn_v.weight", {4096, 1024}), l < 4 ? TensorType::Q5_K : TensorType::Q4_K) << l;
    EXPECT_EQ(type(s4, b + "ffn_down.weight", {14336, 4096}), l < 4 ? TensorType::Q5_K : TensorType::Q4_K) << l;
    EXPECT_EQ(type(s4, b + "attn_q.weight", {4096, 4096}), TensorType::Q4_K) << l;
    EXPECT_EQ(type(s5, b + "attn_v.weight", {4096, 1024}), TensorType::Q5_K) << l;
    EXPECT_EQ(type(s5, b + "ffn_down.weight", {14336, 4096}), TensorType::Q5_K) << l;
  }
  EXPECT_EQ(type(s4, "output.weight", {4096, 128256}), TensorType::Q6_K);
  EXPECT_EQ(type(s5, "output.weight", {4096, 128256}), TensorType::Q6_K);
  EXPECT_EQ(type(s4, "token_embd.weight", {4096, 128256}), TensorType::Q4_K);
  // The 8-expert bumps: attn_v to Q8_0, attn_output to Q5_K (Q4_K_S is in llama.cpp's list).
  EXPECT_EQ(type(s4, "blk.9.attn_v.weight", {4096, 1024}, 8), TensorType::Q8_0);
  EXPECT_EQ(type(s4, "blk.9.attn_output.weight", {4096, 4096}, 8), TensorType::Q5_K);
  EXPECT_EQ(type(s5, "blk.9.attn_output.weight", {4096, 4096}, 8), TensorType::Q5_K);
  // Names llama-quantize knows but PipeLLM cannot write: the tensor type that is missing.
  EXPECT_EQ(unwritable_file_type("Q3_K_M"), TensorType::Q3_K);
  EXPECT_EQ(unwritable_file_type("iq4_xs"), TensorType::IQ4_XS);
  EXPECT_FALSE(unwritable_file_type("Q4_K_M").has_value());
  for (const std::string& n : file_type_names()) EXPECT_FALSE(unwritable_file_type(n).has_value()) << n;
}

}  // namespace
}  // namespace pipellm
