// Embeddings: the final-norm hidden states of a prompt (CpuStage::forward_hidden), pooled per
// sequence and normalized as llama.cpp does (llama-server's /v1/embeddings and /embedding).
//
// Pooling follows llama.cpp's numbering of GGUF `<arch>.pooling_type`: 0 none (one vector per
// token; what generative models have, the key being absent), 1 mean, 2 cls (the first token),
// 3 last, 4 rank (a reranker's classification head: not supported here).
//
// The Embedder is a side path beside the serving runtime, not through the head link: its own
// whole-model CPU stage (one KV slot) over the same file (the mapping shares the page cache), its
// own threads, one sequence at a time, on the coordinator's CPU whatever runs generation (GPU
// stages included: embeddings through the stages are not built yet).
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/cpu/cpu_model.h"

namespace pipellm {

enum class Pooling { None = 0, Mean = 1, Cls = 2, Last = 3, Rank = 4 };

const char* pooling_name(Pooling p);  // "none", "mean", "cls", "last", "rank"
// "none" | "mean" | "cls" | "last" | "rank"; throws InvalidArgument naming the value.
Pooling parse_pooling(const std::string& name);
// The file's `<arch>.pooling_type`; None where the key is absent (generative models). Throws
// FormatError for a value outside 0..4.
Pooling model_pooling(const GgufFile& f);

// One sequence's per-token states [n][E] pooled: one vector of E (mean, cls, last), or the n
// rows unchanged (none). Throws InvalidArgument for rank or n == 0.
std::vector<float> pool_states(const std::vector<float>& states, int n, int E, Pooling p);

// llama.cpp's embd_normalize, in place: -1 none, 0 max-abs scaled to 32760 (int16 range),
// 1 taxicab (sum of |x|), 2 Euclidean (L2, the default), p > 2 the p-norm. A zero vector stays zero.
void normalize_embedding(float* v, int64_t n, int norm);

struct EmbedderOptions {
  int n_ctx = 2048;             // the longest input, in tokens
  int n_threads = 0;            // 0: one per hardware thread
  int max_batch_tokens = 512;   // longer inputs run in chunks through the KV cache
  std::optional<Pooling> pooling;  // nullopt: the model's (model_pooling)
};

class Embedder {
 public:
  // Opens the model on the CPU. Throws Error naming the file, InvalidArgument for rank pooling
  // (asked for, or the model's).
  static std::unique_ptr<Embedder> open(const std::string& path, const EmbedderOptions& opt);

  Pooling pooling() const { return pooling_; }
  int n_embd() const { return model_->config().n_embd; }
  int n_vocab() const { return model_->config().n_vocab; }
  int n_ctx() const { return opt_.n_ctx; }

  // The final-norm hidden state of every position of `tokens` (from position 0), [n][n_embd].
  // Throws InvalidArgument for no tokens, more than n_ctx, or an id outside the vocabulary.
  std::vector<float> hidden_states(const std::vector<int32_t>& tokens);
  // pool_states(hidden_states(tokens)): one vector (pooled) or one per token (none); not
  // normalized. Thread-safe: calls run one at a time.
  std::vector<std::vector<float>> embed(const std::vector<int32_t>& tokens);

 private:
  Embedder() = default;
  EmbedderOptions opt_;
  Pooling pooling_ = Pooling::None;
  std::unique_ptr<CpuModel> model_;
  std::mutex mu_;
};

}  // namespace pipellm
