#include "engine/model_gen/random_model.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "base/error.h"
#include "engine/gguf/gguf_writer.h"
#include "engine/model_gen/shape_metadata.h"
#include "engine/util/thread_pool.h"
#include "kernels/cpu/quantize.h"

namespace pipellm {
namespace {

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t hash_name(const std::string& s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Uniform values of standard deviation `sd` (cheap, and the distribution is irrelevant here),
// reproducible per (seed, tensor, row) so rows can be generated in parallel.
void random_row(float* dst, int64_t n, uint64_t seed, float sd, float mean) {
  const float scale = sd * std::sqrt(3.0f) / static_cast<float>(1u << 23);
  uint64_t s = seed;
  for (int64_t k = 0; k < n; k += 2) {
    const uint64_t r = splitmix64(s);
    dst[k] = mean + scale * static_cast<float>(static_cast<int32_t>(r & 0xffffff) - (1 << 23));
    if (k + 1 < n) dst[k + 1] = mean + scale * static_cast<float>(static_cast<int32_t>((r >> 32) & 0xffffff) - (1 << 23));
  }
}

void set_synthetic_vocab(GgufWriter& w, int n_vocab) {
  // SentencePiece-style: unk, bos, eos, the 256 byte pieces, then filler pieces.
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<int32_t> types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    tokens.emplace_back(buf);
    types.push_back(6);
  }
  for (int k = static_cast<int>(tokens.size()); k < n_vocab; ++k) {
    tokens.push_back("\xE2\x96\x81t" + std::to_string(k));
    types.push_back(1);
  }
  tokens.resize(static_cast<size_t>(n_vocab));
  types.resize(static_cast<size_t>(n_vocab));
  std::vector<float> scores(static_cast<size_t>(n_vocab));
  for (int k = 0; k < n_vocab; ++k) scores[static_cast<size_t>(k)] = -static_cast<float>(k);
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_string("tokenizer.ggml.pre", "default");
  w.set_string_array("tokenizer.ggml.tokens", tokens);
  w.set_f32_array("tokenizer.ggml.scores", scores);
  w.set_i32_array("tokenizer.ggml.token_type", types);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
}

}  // namespace

bool is_plain_text_token(const std::string& text) {
  if (text.empty()) return false;
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x21 && c <= 0x7E) {
      ++i;
    } else if (text.compare(i, 2, "\xC4\xA0") == 0) {  // U+0120, byte-level BPE's space
      i += 2;
    } else if (text.compare(i, 3, "\xE2\x96\x81") == 0) {  // U+2581, SentencePiece's space
      i += 3;
    } else {
      return false;
    }
  }
  return true;
}

int effective_vocab_size(const RandomModelOptions& opt) {
  if (opt.vocab) return static_cast<int>(opt.vocab->get_string_array("tokenizer.ggml.tokens").size());
  return opt.shape.n_vocab;
}

void write_random_model(const RandomModelOptions& opt, const std::string& path, ThreadPool& pool) {
  ModelShape s = opt.shape;
  s.n_vocab = effective_vocab_size(opt);
  if (s.n_vocab < 259) throw InvalidArgument("vocabulary of " + std::to_string(s.n_vocab) + " tokens is too small");
  if (s.n_head <= 0 || (s.head_dim == 0 && s.n_embd % s.n_head != 0) || s.n_head_kv <= 0 ||
      s.n_head % s.n_head_kv != 0)
    throw InvalidArgument("inconsistent head counts: n_embd " + std::to_string(s.n_embd) + ", n_head " +
                          std::to_string(s.n_head) + ", n_head_kv " + std::to_string(s.n_head_kv));

  GgufWriter w;
  const std::string& a = s.arch;
  w.set_string("general.architecture", a);
  w.set_string("general.name", "pipellm random " + a + " " + opt.file_type.name);
  w.set_u32("general.file_type", opt.file_type.gguf_id);
  w.set_u32("general.quantization_version", 2);
  write_shape_hparams(w, s);
  if (opt.vocab) {
    for (const auto& [key, value] : opt.vocab->metadata())
      if (key.rfind("tokenizer.", 0) == 0) w.set_value(key, value);
  } else {
    set_synthetic_vocab(w, s.n_vocab);
  }

  // text_head: the output rows to keep (tokens of plain text, normal type).
  std::vector<uint8_t> keep_row;
  if (opt.text_head) {
    if (s.tied_output) throw InvalidArgument("text_head needs a separate output matrix (the shape ties it)");
    if (!opt.vocab) throw InvalidArgument("text_head needs a vocabulary file (--vocab)");
    const auto& texts = opt.vocab->get_string_array("tokenizer.ggml.tokens");
    std::vector<int32_t> types;
    if (opt.vocab->has("tokenizer.ggml.token_type")) types = opt.vocab->get_i32_array("tokenizer.ggml.token_type");
    keep_row.resize(texts.size());
    size_t kept = 0;
    for (size_t k = 0; k < texts.size(); ++k) {
      const bool normal = types.empty() || (k < types.size() && types[k] == 1);  // llama_token_type NORMAL
      keep_row[k] = normal && is_plain_text_token(std::string(texts[k])) ? 1 : 0;
      kept += keep_row[k];
    }
    if (kept == 0) throw InvalidArgument("text_head: the vocabulary has no plain-text token");
  }

  const auto plan = plan_model_tensors(s, opt.file_type);
  const uint64_t total = planned_bytes(plan);
  uint64_t done_bytes = 0;
  size_t done = 0;
  for (const auto& t : plan) {
    const uint64_t tseed = opt.seed ^ hash_name(t.name);
    const auto has = [&](const char* part) { return t.name.find(part) != std::string::npos; };
    // Factors (norm weights, scales, rope frequency divisors) near 1 and small matrices keep the
    // random network's activations tame; ssm_a holds -exp(A_log) < 0, so DeltaNet states decay.
    const bool is_factor = has("norm") || has("scale") || has("rope_freqs");
    const bool is_bias = has(".bias");
    const bool is_decay = t.name.size() > 6 && t.name.compare(t.name.size() - 6, 6, ".ssm_a") == 0;
    const float mean = is_factor ? 1.0f : (is_decay ? -1.0f : 0.0f);
    const float sd = is_factor || is_decay ? 0.05f : (is_bias ? 0.01f : 0.02f);
    const int64_t ne0 = t.ne[0];
    const TensorType type = t.type;
    const std::vector<uint8_t>* keep = t.name == "output.weight" && !keep_row.empty() ? &keep_row : nullptr;
    w.add_tensor(t.name, t.type, t.ne, [&, tseed, mean, sd, ne0, type, keep](uint8_t* dst, size_t nbytes) {
      const size_t row_bytes = tensor_row_bytes(type, ne0);
      const int64_t rows = static_cast<int64_t>(nbytes / row_bytes);
      pool.parallel_for(rows, [&](int64_t r0, int64_t r1) {
        std::vector<float> row(static_cast<size_t>(ne0));
        for (int64_t r = r0; r < r1; ++r) {
          random_row(row.data(), ne0, tseed + static_cast<uint64_t>(r) * 0x9e3779b97f4a7c15ull, sd, mean);
          if (keep && !(*keep)[static_cast<size_t>(r)]) std::fill(row.begin(), row.end(), 0.0f);
          quantize_row(type, row.data(), dst + static_cast<size_t>(r) * row_bytes, ne0);
        }
      });
      done_bytes += nbytes;
      ++done;
      if (opt.progress) opt.progress(done, plan.size(), done_bytes, total);
    });
  }
  w.write(path);
}

}  // namespace pipellm
