#include "engine/runtime/embedding.h"

#include <cmath>

#include "base/error.h"
#include "engine/model/batch.h"

namespace pipellm {

const char* pooling_name(Pooling p) {
  switch (p) {
    case Pooling::None: return "none";
    case Pooling::Mean: return "mean";
    case Pooling::Cls: return "cls";
    case Pooling::Last: return "last";
    case Pooling::Rank: return "rank";
  }
  return "?";
}

Pooling parse_pooling(const std::string& name) {
  for (Pooling p : {Pooling::None, Pooling::Mean, Pooling::Cls, Pooling::Last, Pooling::Rank}) {
    if (name == pooling_name(p)) return p;
  }
  throw InvalidArgument("pooling: '" + name + "' is not one of none, mean, cls, last, rank");
}

Pooling model_pooling(const GgufFile& f) {
  const std::string key = f.get_string("general.architecture") + ".pooling_type";
  if (!f.has(key)) return Pooling::None;
  const uint32_t v = f.get_u32(key);
  if (v > 4) throw FormatError(key + ": " + std::to_string(v) + " is not a pooling type (0..4)");
  return static_cast<Pooling>(v);
}

std::vector<float> pool_states(const std::vector<float>& states, int n, int E, Pooling p) {
  if (n <= 0) throw InvalidArgument("embeddings: no tokens to pool");
  const size_t e = static_cast<size_t>(E);
  switch (p) {
    case Pooling::None: return std::vector<float>(states.begin(), states.begin() + static_cast<int64_t>(n) * E);
    case Pooling::Cls: return std::vector<float>(states.begin(), states.begin() + E);
    case Pooling::Last:
      return std::vector<float>(states.begin() + static_cast<int64_t>(n - 1) * E, states.begin() + static_cast<int64_t>(n) * E);
    case Pooling::Mean: {
      std::vector<double> sum(e, 0.0);
      for (int t = 0; t < n; ++t) {
        const float* row = states.data() + static_cast<size_t>(t) * e;
        for (size_t i = 0; i < e; ++i) sum[i] += row[i];
      }
      std::vector<float> out(e);
      for (size_t i = 0; i < e; ++i) out[i] = static_cast<float>(sum[i] / n);
      return out;
    }
    case Pooling::Rank: break;
  }
  throw InvalidArgument("embeddings: rank pooling (a reranker's classification head) is not supported");
}

void normalize_embedding(float* v, int64_t n, int norm) {
  if (norm < 0) return;
  double s = 0.0;
  if (norm == 0) {
    for (int64_t i = 0; i < n; ++i) s = std::max(s, static_cast<double>(std::fabs(v[i])));
    s /= 32760.0;  // int16 range
  } else if (norm == 2) {
    for (int64_t i = 0; i < n; ++i) s += static_cast<double>(v[i]) * v[i];
    s = std::sqrt(s);
  } else {
    for (int64_t i = 0; i < n; ++i) s += std::pow(std::fabs(static_cast<double>(v[i])), norm);
    s = std::pow(s, 1.0 / norm);
  }
  const double scale = s > 0.0 ? 1.0 / s : 0.0;
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(v[i] * scale);
}

std::unique_ptr<Embedder> Embedder::open(const std::string& path, const EmbedderOptions& opt) {
  std::unique_ptr<Embedder> e(new Embedder());
  e->opt_ = opt;
  CpuModelOptions mo;
  mo.n_threads = opt.n_threads;
  mo.stage.n_ctx = opt.n_ctx;
  mo.stage.n_slots = 1;
  mo.stage.kv_type = TensorType::F32;  // one slot: exact attention for the vectors
  mo.stage.max_batch_tokens = opt.max_batch_tokens;
  e->model_ = CpuModel::open(path, mo);
  e->pooling_ = opt.pooling.value_or(model_pooling(e->model_->file()));
  if (e->pooling_ == Pooling::Rank) {
    throw InvalidArgument("embeddings: rank pooling (a reranker's classification head) is not supported");
  }
  return e;
}

std::vector<float> Embedder::hidden_states(const std::vector<int32_t>& tokens) {
  if (tokens.empty()) throw InvalidArgument("embeddings: no tokens");
  if (static_cast<int64_t>(tokens.size()) > opt_.n_ctx) {
    throw InvalidArgument("embeddings: " + std::to_string(tokens.size()) + " tokens, more than the context of " +
                          std::to_string(opt_.n_ctx));
  }
  std::vector<float> out;
  std::lock_guard<std::mutex> lock(mu_);
  model_->stage().forward_hidden(Batch::sequence(tokens, 0, 0, /*all_logits=*/true), out);
  return out;
}

std::vector<std::vector<float>> Embedder::embed(const std::vector<int32_t>& tokens) {
  const std::vector<float> h = hidden_states(tokens);
  const int n = static_cast<int>(tokens.size()), E = n_embd();
  const std::vector<float> pooled = pool_states(h, n, E, pooling_);
  std::vector<std::vector<float>> out;
  for (size_t r = 0; r < pooled.size(); r += static_cast<size_t>(E)) {
    out.emplace_back(pooled.begin() + static_cast<int64_t>(r), pooled.begin() + static_cast<int64_t>(r) + E);
  }
  return out;
}

}  // namespace pipellm
