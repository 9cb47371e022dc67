#include "engine/model/expert_placement.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <regex>

#include "base/error.h"

namespace pipellm {

namespace {

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

bool is_device_buffer(const std::string& b) {
  if (b == "gpu" || b == "cuda") return true;
  if (b.rfind("cuda", 0) != 0) return false;
  return std::all_of(b.begin() + 4, b.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

// The routed experts' weight matrices: they decide a layer's placement (biases and scales follow).
bool is_expert_matrix(LayerTensor r) {
  return r == LayerTensor::GateExps || r == LayerTensor::UpExps || r == LayerTensor::DownExps ||
         r == LayerTensor::GateUpExps;
}

struct Matcher {
  const ExpertPlacementFlags& f;
  std::vector<std::regex> res;

  explicit Matcher(const ExpertPlacementFlags& flags) : f(flags) {
    for (const TensorOverride& o : f.overrides) res.emplace_back(o.pattern, std::regex::ECMAScript);
  }
  // The first override whose pattern occurs in `name`.
  const TensorOverride* match(const std::string& name) const {
    for (size_t i = 0; i < res.size(); ++i) {
      if (std::regex_search(name, res[i])) return &f.overrides[i];
    }
    return nullptr;
  }
  [[noreturn]] static void not_an_expert(const TensorOverride& o, const std::string& name) {
    throw InvalidArgument("--override-tensor '" + o.text + "' puts " + name +
                          " in host memory: only routed expert stacks (ffn_*_exps) can stay on the CPU here");
  }
};

}  // namespace

std::vector<TensorOverride> parse_tensor_overrides(const std::string& value) {
  std::vector<TensorOverride> out;
  size_t start = 0;
  while (start <= value.size()) {
    const size_t comma = std::min(value.find(',', start), value.size());
    const std::string entry = value.substr(start, comma - start);
    start = comma + 1;
    const size_t eq = entry.rfind('=');
    const auto bad = [&](const std::string& why) {
      return InvalidArgument("--override-tensor: '" + entry + "': " + why);
    };
    if (eq == std::string::npos) throw bad("expected PATTERN=BUFFER (e.g. 'exps=CPU')");
    TensorOverride o;
    o.pattern = entry.substr(0, eq);
    o.text = entry;
    const std::string buffer = lower(entry.substr(eq + 1));
    if (o.pattern.empty()) throw bad("the pattern is empty");
    if (buffer == "cpu") {
      o.host = true;
    } else if (!is_device_buffer(buffer)) {
      throw bad("the buffer '" + entry.substr(eq + 1) + "' is not CPU or CUDA<n>");
    }
    try {
      std::regex check(o.pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw bad(std::string("not a regular expression: ") + e.what());
    }
    out.push_back(std::move(o));
  }
  return out;
}

std::vector<bool> host_expert_layers(const ModelConfig& c, const ExpertPlacementFlags& f) {
  std::vector<bool> host(static_cast<size_t>(c.n_layer), false);
  if (!f.any()) return host;
  const Matcher m(f);
  for (const char* name : {"token_embd.weight", "output.weight", "output_norm.weight", "rope_freqs.weight",
                           "per_layer_token_embd.weight", "per_layer_model_proj.weight"}) {
    if (const TensorOverride* o = m.match(name); o != nullptr && o->host) Matcher::not_an_expert(*o, name);
  }
  for (int il = 0; il < c.n_layer; ++il) {
    const std::string prefix = "blk." + std::to_string(il) + ".";
    std::optional<bool> layer_host;
    std::string first_name;
    for (const TensorSpec& t : c.layer_tensors(il)) {
      const std::string name = prefix + t.name;
      const TensorOverride* o = m.match(name);
      if (!is_expert_stack(t.role)) {
        if (o != nullptr && o->host) Matcher::not_an_expert(*o, name);
        continue;
      }
      if (!is_expert_matrix(t.role)) continue;  // biases and scales go with their matrices
      const bool h = o != nullptr ? o->host : (f.cpu_moe || il < f.n_cpu_moe);
      if (layer_host && *layer_host != h) {
        throw InvalidArgument("tensor placement: " + first_name + " would be " + (*layer_host ? "on the CPU" : "on the GPU") +
                              " but " + name + (h ? " on the CPU" : " on the GPU") +
                              (o != nullptr ? " ('" + o->text + "')" : std::string()) +
                              ": a layer's expert stacks stay together here");
      }
      layer_host = h;
      if (first_name.empty()) first_name = name;
    }
    host[static_cast<size_t>(il)] = layer_host.value_or(false);
  }
  return host;
}

std::optional<double> parse_cpu_rows_share(const std::string& text) {
  if (text == "auto") return -1.0;
  size_t used = 0;
  double f = -1.0;
  try {
    f = std::stod(text, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (used != text.size() || !(f >= 0.0 && f <= 0.95)) return std::nullopt;
  return f;
}

std::string describe_host_experts(const std::vector<bool>& layers) {
  std::string ranges;
  int count = 0;
  for (size_t i = 0; i < layers.size();) {
    if (!layers[i]) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j + 1 < layers.size() && layers[j + 1]) ++j;
    count += static_cast<int>(j - i + 1);
    ranges += (ranges.empty() ? "" : ", ") + std::to_string(i) + (j > i ? "-" + std::to_string(j) : "");
    i = j + 1;
  }
  if (count == 0) return "";
  return "experts of " + std::to_string(count) + " layer" + (count > 1 ? "s" : "") + " (" + ranges +
         ") in host memory, computed on the CPU";
}

}  // namespace pipellm
