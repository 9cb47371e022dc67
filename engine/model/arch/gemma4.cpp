// gemma4: sliding and global layers per attention.sliding_window_pattern with their own head
// size, KV heads and rope (sliding: NEOX over n_rot_swa, base_swa; global: NEOX over n_rot with
// rope_freqs as divisors); unscaled scores over normed q and k, V normed without a weight (or the
// raw K when a layer has no attn_v); the last shared_kv_layers layers keep no K/V and read the
// cache of the last earlier layer of their kind; post-norms around attention and FFN (GELU), per
// layer widths; per-layer inputs and an output scale per layer; embeddings x sqrt(n_embd), tied
// output, final logit softcap. MoE variant: a dense MLP beside the experts (LayerSpec::n_ff_dense).
#include <cmath>

#include "base/error.h"
#include "engine/model/arch/recipe.h"

namespace pipellm::arch {

namespace {

// A per-layer key: one value per layer, or a scalar for all.
std::vector<int32_t> per_layer(const HParams& h, const std::string& k, int n_layer, int fallback) {
  const GgufFile& f = h.file();
  if (!h.has(k)) return std::vector<int32_t>(static_cast<size_t>(n_layer), fallback);
  if (f.get(h.key(k)).type != GgufType::ARRAY) return std::vector<int32_t>(static_cast<size_t>(n_layer), h.req(k));
  std::vector<int32_t> v = f.get_i32_array(h.key(k));
  if (static_cast<int>(v.size()) != n_layer) h.fail(k, "needs one value per layer");
  for (int32_t x : v) {
    if (x <= 0) h.fail(k, "invalid value " + std::to_string(x));
  }
  return v;
}

}  // namespace

void gemma4(const GgufFile& f, ModelConfig& c) {
  const HParams h(f, "gemma4");
  c.n_layer = h.layers();
  c.n_embd = h.req("embedding_length");
  c.n_head = h.req("attention.head_count");
  // read_common reads the scalar head counts and widths: the per-layer arrays are read below.
  const std::vector<int32_t> kv_heads = per_layer(h, "attention.head_count_kv", c.n_layer, c.n_head);
  const std::vector<int32_t> n_ff = per_layer(h, "feed_forward_length", c.n_layer, 0);
  c.n_ctx_train = h.opt("context_length", 4096);
  c.rms_eps = h.f32("attention.layer_norm_rms_epsilon", 1e-6f);
  c.n_vocab = h.has("vocab_size") ? h.req("vocab_size") : static_cast<int>(f.tensor("token_embd.weight").ne[1]);
  c.tied_output = f.find_tensor("output.weight") == nullptr;
  c.has_rope_freqs = f.find_tensor("rope_freqs.weight") != nullptr;
  c.embd_scale = std::sqrt(static_cast<float>(c.n_embd));
  c.logit_softcap = h.f32("final_logit_softcapping", 0.0f);
  c.per_layer_input = h.opt_nonneg("embedding_length_per_layer_input", 0);
  if (!h.has("embedding_length_per_layer_input")) h.fail("embedding_length_per_layer_input", "missing key");

  const int head = h.req("attention.key_length"), head_v = h.opt("attention.value_length", head);
  const int head_swa = h.req("attention.key_length_swa"), head_v_swa = h.opt("attention.value_length_swa", head_swa);
  const int rot = h.opt("rope.dimension_count", head), rot_swa = h.opt("rope.dimension_count_swa", head_swa);
  const int window = h.req("attention.sliding_window");
  if (!h.has("attention.sliding_window_pattern")) h.fail("attention.sliding_window_pattern", "missing key");
  const std::vector<int32_t> sliding = f.get_i32_array(h.key("attention.sliding_window_pattern"));
  if (static_cast<int>(sliding.size()) != c.n_layer) h.fail("attention.sliding_window_pattern", "needs one value per layer");
  const int shared = h.opt_nonneg("attention.shared_kv_layers", 0);
  if (shared >= c.n_layer) h.fail("attention.shared_kv_layers", "leaves no layer with its own K/V");
  const int n_kv = c.n_layer - shared;
  if (shared > 0 && (n_kv < 2 || !sliding[static_cast<size_t>(n_kv - 2)] || sliding[static_cast<size_t>(n_kv - 1)])) {
    // llama.cpp assumes layer n_kv-2 is sliding and n_kv-1 global: the sharing layers read them.
    h.fail("attention.shared_kv_layers", "the last two layers with their own K/V must be sliding, then global");
  }

  RopeSpec global = read_rope(h, RopeType::Neox);
  global.freq_factors = c.has_rope_freqs;
  RopeSpec local;
  local.type = RopeType::Neox;
  local.base = h.f32("rope.freq_base_swa", 10000.0f);
  const bool moe = h.opt_nonneg("expert_count", 0) > 0;
  for (int il = 0; il < c.n_layer; ++il) {
    const bool swa = sliding[static_cast<size_t>(il)] != 0;
    LayerSpec s;
    s.n_head_kv = kv_heads[static_cast<size_t>(il)];
    s.head_dim = swa ? head_swa : head;
    s.head_dim_v = swa ? head_v_swa : head_v;
    s.n_rot = swa ? rot_swa : rot;
    s.window = swa ? window : 0;
    s.rope = swa ? local : global;
    s.attn_scale = 1.0f;
    s.qk_norm = true;
    s.v_norm = true;
    s.post_attn_norm = true;
    s.post_ffn_norm = true;
    s.act = GatedAct::GeluTanh;
    if (il >= n_kv) s.kv_source = swa ? n_kv - 2 : n_kv - 1;
    // A layer without attn_v takes V from the raw K projection.
    s.k_eq_v = s.kv_source < 0 && f.find_tensor("blk." + std::to_string(il) + ".attn_v.weight") == nullptr;
    s.per_layer_input = c.per_layer_input > 0;
    s.output_scale = f.find_tensor("blk." + std::to_string(il) + ".layer_output_scale.weight") != nullptr;
    if (moe) {
      s.ffn = FfnKind::Moe;
      read_experts(h, s);
      s.n_ff = h.req("expert_feed_forward_length");
      s.n_ff_dense = n_ff[static_cast<size_t>(il)];
    } else {
      s.n_ff = n_ff[static_cast<size_t>(il)];
    }
    c.layers.push_back(s);
  }
  // The model-wide figures are the largest of any layer (from_gguf).
  c.n_head_kv = 1;
  c.head_dim = c.head_dim_v = c.n_rot = 2;
}

}  // namespace pipellm::arch
