#include "engine/model/vram_plan.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

#include "base/error.h"
#include "engine/model/kv_cache.h"

namespace pipellm {
namespace {

uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

uint64_t matrix_bytes(const TensorView* t) { return t ? align_up(t->nbytes, kStreamAlign) : 0; }
uint64_t vector_bytes(const TensorView* t) { return t ? static_cast<uint64_t>(t->n_elements()) * sizeof(float) : 0; }

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// Which layers stream when n of them must: spread evenly (each streamed layer last in its
// stretch, so resident compute precedes it while its copy runs) or the last n.
std::vector<bool> placement(int n_layers, int n_streamed, StreamPlacement p) {
  std::vector<bool> s(static_cast<size_t>(n_layers), false);
  for (int i = 0; i < n_layers; ++i) {
    if (p == StreamPlacement::ResidentFirst) {
      s[static_cast<size_t>(i)] = i >= n_layers - n_streamed;
    } else {
      const int64_t a = static_cast<int64_t>(i) * n_streamed / n_layers;
      const int64_t b = static_cast<int64_t>(i + 1) * n_streamed / n_layers;
      s[static_cast<size_t>(i)] = b > a;
    }
  }
  return s;
}

}  // namespace

uint64_t parse_byte_size(const std::string& text, const std::string& what) {
  auto bad = [&](const std::string& why) {
    return InvalidArgument(what + ": '" + text + "' is not a size (" + why +
                           "; examples: 2GiB, 1500MB, 2147483648)");
  };
  size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  const size_t num_start = i;
  bool dot = false;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || (text[i] == '.' && !dot))) {
    dot = dot || text[i] == '.';
    ++i;
  }
  const std::string num = text.substr(num_start, i - num_start);
  if (num.empty() || num == ".") throw bad("no number");
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  std::string unit = lower(text.substr(i));
  while (!unit.empty() && std::isspace(static_cast<unsigned char>(unit.back()))) unit.pop_back();
  double mult = 0;
  const struct {
    const char* name;
    double mult;
  } units[] = {{"", 1},         {"b", 1},          {"kb", 1e3},       {"mb", 1e6},        {"gb", 1e9},
               {"tb", 1e12},    {"k", 1024.0},     {"m", 1048576.0},  {"g", 1073741824.0}, {"t", 1099511627776.0},
               {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0}, {"tib", 1099511627776.0}};
  for (const auto& u : units)
    if (unit == u.name) mult = u.mult;
  if (mult == 0) throw bad("unknown unit '" + unit + "'");
  const double v = std::stod(num) * mult;
  if (!(v >= 0) || v > 9.0e18) throw bad("out of range");
  if (dot && mult == 1 && v != std::floor(v)) throw bad("fractional bytes");
  return static_cast<uint64_t>(std::llround(v));
}

std::string format_bytes(uint64_t bytes) {
  char buf[64];
  const double b = static_cast<double>(bytes);
  if (bytes >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1ull << 30));
  else if (bytes >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1ull << 20));
  else if (bytes >= (1ull << 10)) std::snprintf(buf, sizeof buf, "%.1f KiB", b / (1ull << 10));
  else std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  return buf;
}

int VramPlan::n_streamed() const { return static_cast<int>(std::count(streamed.begin(), streamed.end(), true)); }

std::string VramPlan::summary() const {
  std::string layers;
  for (bool s : streamed) layers += s ? 'S' : 'R';
  std::string out = "layers resident " + std::to_string(n_resident()) + "/" + std::to_string(streamed.size()) +
                    " [" + layers + "]";
  if (slots > 0) {
    out += ", streamed " + format_bytes(streamed_bytes) + "/pass, ring " + std::to_string(slots) + " x " +
           format_bytes(slot_bytes);
  }
  out += ", resident weights " + format_bytes(resident_weight_bytes) + ", device total " + format_bytes(device_bytes);
  if (embeddings_in_host) out += ", embeddings in host memory";
  if (host_pinned_bytes > 0) out += ", pinned host " + format_bytes(host_pinned_bytes);
  return out;
}

VramPlan plan_vram(const VramPlanInput& in) {
  if (in.slots < 2) throw InvalidArgument("VRAM plan: the staging ring needs at least 2 slots, got " + std::to_string(in.slots));
  const int n = static_cast<int>(in.layer_bytes.size());
  uint64_t all_layers = 0, largest = 0;
  for (uint64_t b : in.layer_bytes) {
    all_layers += b;
    largest = std::max(largest, b);
  }
  const uint64_t base = in.layer_fixed_bytes + in.output_bytes + in.kv_bytes + in.other_bytes;
  const uint64_t everything = base + in.embeddings_bytes + all_layers;

  VramPlan p;
  p.streamed.assign(static_cast<size_t>(n), false);
  p.resident_weight_bytes = in.layer_fixed_bytes + in.output_bytes + in.embeddings_bytes + all_layers;
  p.device_bytes = everything;
  // Streaming: the embeddings can move to host memory unless the output head is the embedding.
  const bool emb_host = in.embeddings_in_host && !in.output_is_embeddings && in.embeddings_bytes > 0;
  const uint64_t emb_dev = emb_host ? 0 : in.embeddings_bytes;
  const int max_slots = std::min(in.slots, std::max(n, 1));
  const uint64_t minimum = base + emb_dev + static_cast<uint64_t>(max_slots) * largest;
  p.minimum_budget = n == 0 ? everything : std::min(everything, minimum);
  if (in.min_streamed > n) throw InvalidArgument("VRAM plan: cannot stream " + std::to_string(in.min_streamed) +
                                                 " layers of " + std::to_string(n));
  if (in.min_streamed <= 0 && (in.budget == 0 || everything <= in.budget)) return p;
  if (n == 0 || (in.budget != 0 && in.budget < minimum)) {
    std::string parts = "staging ring " + std::to_string(max_slots) + " x " + format_bytes(largest) + ", KV cache " +
                        format_bytes(in.kv_bytes) + ", output head " + format_bytes(in.output_bytes) +
                        ", norms/biases " + format_bytes(in.layer_fixed_bytes);
    if (emb_dev > 0) parts += ", embeddings " + format_bytes(emb_dev);
    if (in.other_bytes > 0) parts += ", other " + format_bytes(in.other_bytes);
    throw InvalidArgument("VRAM budget " + format_bytes(in.budget) + " (" + std::to_string(in.budget) +
                          " bytes) is too small: streaming needs at least " + format_bytes(minimum) + " (" +
                          std::to_string(minimum) + " bytes: " + parts + ")");
  }

  // The fewest streamed layers that fit; the ring never has more slots than streamed layers.
  for (int ns = std::max(1, in.min_streamed); ns <= n; ++ns) {
    const std::vector<bool> s = placement(n, ns, in.placement);
    uint64_t resident = 0, streamed = 0;
    for (int i = 0; i < n; ++i) (s[static_cast<size_t>(i)] ? streamed : resident) += in.layer_bytes[static_cast<size_t>(i)];
    const int slots = std::min(in.slots, ns);
    const uint64_t ring = static_cast<uint64_t>(slots) * largest;
    const uint64_t device = base + emb_dev + resident + ring;
    if (in.budget != 0 && device > in.budget) continue;
    p.streamed = s;
    p.embeddings_in_host = emb_host;
    p.slots = slots;
    p.slot_bytes = largest;
    p.ring_bytes = ring;
    p.resident_weight_bytes = in.layer_fixed_bytes + in.output_bytes + emb_dev + resident;
    p.streamed_bytes = streamed;
    p.host_pinned_bytes = streamed + (emb_host ? in.embeddings_bytes : 0);
    p.device_bytes = device;
    return p;
  }
  throw Error("VRAM plan: no placement fits although the minimum does (internal error)");
}

uint64_t layer_stream_bytes(const LayerWeights& l) {
  uint64_t total = 0;
  for (LayerTensor r : all_layer_tensors()) {
    if (is_matrix(r)) total += matrix_bytes(l[r]);
  }
  return total;
}

uint64_t layer_fixed_bytes(const LayerWeights& l) {
  uint64_t total = 0;
  for (LayerTensor r : all_layer_tensors()) {
    if (!is_matrix(r)) total += vector_bytes(l[r]);
  }
  return total;
}

VramPlanInput vram_plan_input(const ModelConfig& c, const ModelWeights& w, int n_slots, int n_ctx, uint64_t budget,
                              int max_step, TensorType k_type, TensorType v_type) {
  VramPlanInput in;
  for (const LayerWeights& l : w.layers) {
    in.layer_bytes.push_back(layer_stream_bytes(l));
    in.layer_fixed_bytes += layer_fixed_bytes(l);
  }
  in.embeddings_bytes = w.token_embd ? w.token_embd->nbytes : 0;
  in.output_is_embeddings = w.output != nullptr && w.output == w.token_embd;
  in.output_bytes = (w.output && !in.output_is_embeddings ? w.output->nbytes : 0) + vector_bytes(w.output_norm) +
                    vector_bytes(w.rope_freqs);
  for (int il = w.range.first; il < w.range.last; ++il) {
    const uint64_t rows = static_cast<uint64_t>(c.kv_rows(il, n_ctx, max_step));
    // Layers without rows (recurrent, KV-sharing) hold no cache whatever their head sizes.
    const uint64_t row_bytes = rows == 0 ? 0 : kv_row_bytes(k_type, c.k_dim(il)) + kv_row_bytes(v_type, c.v_dim(il));
    in.kv_bytes += static_cast<uint64_t>(n_slots) *
                   (rows * row_bytes + static_cast<uint64_t>(c.state_floats(il)) * sizeof(float));
  }
  in.budget = budget;
  return in;
}

}  // namespace pipellm
