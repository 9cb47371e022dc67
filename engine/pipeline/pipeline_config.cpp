#include "engine/pipeline/pipeline_config.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace pipellm {

const char* transport_name(TransportKind t) {
  switch (t) {
    case TransportKind::Auto: return "auto";
    case TransportKind::Nccl: return "nccl";
    case TransportKind::Ipc: return "ipc";
    case TransportKind::Mpi: return "mpi";
  }
  return "?";
}

const char* kv_type_name(KvType t) {
  switch (t) {
    case KvType::F16: return "f16";
    case KvType::F32: return "f32";
    case KvType::Q8_0: return "q8_0";
    case KvType::Q4_0: return "q4_0";
  }
  throw Error("kv_type_name: unknown KV cache type " + std::to_string(static_cast<int>(t)));
}

TensorType kv_tensor_type(KvType t) {
  switch (t) {
    case KvType::F16: return TensorType::F16;
    case KvType::F32: return TensorType::F32;
    case KvType::Q8_0: return TensorType::Q8_0;
    case KvType::Q4_0: return TensorType::Q4_0;
  }
  throw Error("kv_tensor_type: unknown KV cache type " + std::to_string(static_cast<int>(t)));
}

KvType kv_type_of(TensorType t) {
  for (KvType k : {KvType::F16, KvType::F32, KvType::Q8_0, KvType::Q4_0}) {
    if (kv_tensor_type(k) == t) return k;
  }
  throw InvalidArgument(std::string("KV cache type ") + tensor_type_name(t) + ": not f16, f32, q8_0 or q4_0");
}

bool PipelineConfig::has_explicit_layers() const {
  for (const auto& s : stages) {
    if (s.layers) return true;
  }
  return false;
}

namespace {

// Reads one mapping, remembering which keys were consumed so that the rest are reported.
class Reader {
 public:
  Reader(const std::string& file, const YAML::Node& node, std::string path)
      : file_(file), node_(node), path_(std::move(path)) {}

  [[noreturn]] void fail(const YAML::Node& at, const std::string& key, const std::string& what) const {
    std::ostringstream os;
    os << file_ << ":" << (at.Mark().line + 1) << ": " << key << ": " << what;
    throw ConfigError(os.str());
  }

  std::string full(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  YAML::Node get(const std::string& key) {
    seen_.insert(key);
    return node_[key];
  }

  // Unknown keys, and keys given twice (yaml-cpp keeps both and reads the first, so the second
  // would be silently ignored), are errors.
  void check_unknown() const {
    std::map<std::string, int> lines;
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      const std::string k = it->first.as<std::string>();
      if (seen_.count(k) == 0) fail(it->first, full(k), "unknown key");
      const auto [at, fresh] = lines.emplace(k, it->first.Mark().line + 1);
      if (!fresh) fail(it->first, full(k), "given twice (first on line " + std::to_string(at->second) + ")");
    }
  }

  std::string str(const std::string& key, const std::string& fallback) {
    const YAML::Node n = get(key);
    if (!n) return fallback;
    if (!n.IsScalar()) fail(n, full(key), "expected a string");
    return n.Scalar();
  }

  bool boolean(const std::string& key, bool fallback) {
    const YAML::Node n = get(key);
    if (!n) return fallback;
    bool v = false;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) fail(n, full(key), "expected true or false, found '" + scalar(n) + "'");
    return v;
  }

  int integer(const std::string& key, int fallback, int lo, int hi) {
    const YAML::Node n = get(key);
    if (!n) return fallback;
    return integer_of(n, full(key), lo, hi);
  }

  int integer_of(const YAML::Node& n, const std::string& key, int lo, int hi) const {
    long long v = 0;
    if (!n.IsScalar() || !YAML::convert<long long>::decode(n, v)) {
      fail(n, key, "expected an integer, found '" + scalar(n) + "'");
    }
    if (v < lo || v > hi) {
      fail(n, key, std::to_string(v) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    return static_cast<int>(v);
  }

  // "24GiB", "512 MiB", "1.5GB", or a plain number of bytes.
  uint64_t bytes(const std::string& key, uint64_t fallback) {
    const YAML::Node n = get(key);
    if (!n) return fallback;
    if (!n.IsScalar()) fail(n, full(key), "expected a size such as 22GiB");
    const std::string s = n.Scalar();
    size_t i = 0;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
    std::string unit = s.substr(i);
    while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
    double num = 0.0;
    try {
      size_t used = 0;
      num = std::stod(s.substr(0, i), &used);
      if (used != i) throw std::invalid_argument("x");
    } catch (const std::exception&) {
      fail(n, full(key), "expected a size such as 22GiB, found '" + s + "'");
    }
    static const std::pair<const char*, double> kUnits[] = {
        {"", 1.0},         {"B", 1.0},        {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0},
        {"TiB", 1099511627776.0}, {"KB", 1e3}, {"MB", 1e6},     {"GB", 1e9},        {"TB", 1e12}};
    for (const auto& u : kUnits) {
      if (unit == u.first) {
        const double v = num * u.second;
        if (!(v >= 0.0) || v > 1e18) fail(n, full(key), "size '" + s + "' is out of range");
        return static_cast<uint64_t>(std::llround(v));
      }
    }
    fail(n, full(key), "unknown unit '" + unit + "' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)");
  }

  template <typename E>
  E choice(const std::string& key, E fallback, const std::vector<std::pair<const char*, E>>& options) {
    const YAML::Node n = get(key);
    if (!n) return fallback;
    const std::string v = n.IsScalar() ? n.Scalar() : std::string();
    for (const auto& o : options) {
      if (v == o.first) return o.second;
    }
    std::string list;
    for (const auto& o : options) list += (list.empty() ? "" : ", ") + std::string(o.first);
    fail(n, full(key), "'" + v + "' is not one of " + list);
  }

  static std::string scalar(const YAML::Node& n) { return n.IsScalar() ? n.Scalar() : "<not a scalar>"; }

  const std::string& file() const { return file_; }
  const YAML::Node& node() const { return node_; }

 private:
  std::string file_;
  YAML::Node node_;
  std::string path_;
  std::set<std::string> seen_;
};

std::string join_path(const std::string& dir, const std::string& p) {
  if (p.empty() || p.front() == '/' || dir.empty()) return p;
  return dir.back() == '/' ? dir + p : dir + "/" + p;
}

StageSpec parse_stage(const std::string& file, const YAML::Node& n, size_t index) {
  const std::string path = "stages[" + std::to_string(index) + "]";
  if (!n.IsMap()) {
    throw ConfigError(file + ":" + std::to_string(n.Mark().line + 1) + ": " + path + ": expected a mapping");
  }
  Reader r(file, n, path);
  StageSpec s;
  s.line = n.Mark().line + 1;
  const YAML::Node dev = r.get("device");
  if (dev) {
    const std::string d = dev.IsScalar() ? dev.Scalar() : "";
    if (d == "cpu") {
      s.device = "cpu";
    } else if (d.rfind("cuda:", 0) == 0 && d.size() > 5 &&
               d.find_first_not_of("0123456789", 5) == std::string::npos && d.size() < 9) {
      s.device = d;
      s.device_index = std::stoi(d.substr(5));
    } else {
      r.fail(dev, path + ".device", "'" + d + "' is not cpu or cuda:N");
    }
  }
  s.memory_bytes = r.bytes("memory", 0);
  s.vram_budget = r.bytes("vram_budget", 0);
  if (s.vram_budget != 0 && !s.is_gpu()) r.fail(n["vram_budget"], path + ".vram_budget", "needs a cuda:N device");
  s.experts.cpu_moe = r.boolean("cpu_moe", false);
  s.experts.n_cpu_moe = r.integer("n_cpu_moe", 0, 0, 1 << 20);
  if (const YAML::Node ot = r.get("override_tensor")) {
    if (!ot.IsScalar()) r.fail(ot, path + ".override_tensor", "expected PATTERN=BUFFER[,PATTERN=BUFFER...]");
    try {
      s.experts.overrides = parse_tensor_overrides(ot.Scalar());
    } catch (const InvalidArgument& e) {
      r.fail(ot, path + ".override_tensor", e.what());
    }
  }
  s.experts.cache_bytes = r.bytes("expert_cache", 0);
  if (const YAML::Node cr = r.get("cpu_rows")) {
    const std::optional<double> f = cr.IsScalar() ? parse_cpu_rows_share(cr.Scalar()) : std::nullopt;
    if (!f) r.fail(cr, path + ".cpu_rows", "expected auto or a share in [0, 0.95], found '" + Reader::scalar(cr) + "'");
    s.cpu_rows = *f;
    if (!s.is_gpu()) r.fail(cr, path + ".cpu_rows", "needs a cuda:N device");
  }
  if ((s.experts.any() || s.experts.cache_bytes > 0) && !s.is_gpu()) {
    for (const char* key : {"cpu_moe", "n_cpu_moe", "override_tensor", "expert_cache"}) {
      if (n[key]) r.fail(n[key], path + "." + key, "needs a cuda:N device (a CPU stage holds every expert in host memory)");
    }
  }
  s.host = r.str("host", "");
  const YAML::Node layers = r.get("layers");
  if (layers) {
    if (!layers.IsSequence() || layers.size() != 2) {
      r.fail(layers, path + ".layers", "expected [first, last) as a list of two integers");
    }
    const int a = r.integer_of(layers[0], path + ".layers", 0, 1 << 20);
    const int b = r.integer_of(layers[1], path + ".layers", 0, 1 << 20);
    if (b < a) r.fail(layers, path + ".layers", "last (" + std::to_string(b) + ") is before first (" + std::to_string(a) + ")");
    s.layers = std::make_pair(a, b);
  }
  r.check_unknown();
  return s;
}

}  // namespace

PipelineConfig PipelineConfig::parse(const std::string& text, const std::string& name, const std::string& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(name + ":" + std::to_string(e.mark.line + 1) + ": YAML syntax: " + e.msg);
  }
  if (!root.IsMap()) throw ConfigError(name + ":1: the config must be a mapping of keys");

  PipelineConfig c;
  c.source = name;
  Reader r(name, root, "");
  const YAML::Node model = r.get("model");
  if (!model) throw ConfigError(name + ": model: missing (path of the GGUF file)");
  if (!model.IsScalar() || model.Scalar().empty()) r.fail(model, "model", "expected a file path");
  c.model = join_path(base_dir, model.Scalar());

  c.context_length = r.integer("context_length", c.context_length, 1, 1 << 24);
  c.max_sequences = r.integer("max_sequences", c.max_sequences, 1, 1 << 16);
  c.micro_batches = r.integer("micro_batches", c.micro_batches, 1, 64);
  c.max_batch_tokens = r.integer("max_batch_tokens", c.max_batch_tokens, 1, 1 << 20);
  c.prefill_chunk = r.integer("prefill_chunk", c.prefill_chunk, 1, 1 << 20);
  c.threads = r.integer("threads", c.threads, 0, 4096);
  c.scratch_bytes = r.bytes("scratch", c.scratch_bytes);
  const std::vector<std::pair<const char*, KvType>> kv_types = {
      {"f16", KvType::F16}, {"f32", KvType::F32}, {"q8_0", KvType::Q8_0}, {"q4_0", KvType::Q4_0}};
  c.kv_cache_type = r.choice<KvType>("kv_cache_type", c.kv_cache_type, kv_types);
  c.kv_cache_type_k = r.choice<KvType>("kv_cache_type_k", c.kv_cache_type, kv_types);
  c.kv_cache_type_v = r.choice<KvType>("kv_cache_type_v", c.kv_cache_type, kv_types);
  c.transport = r.choice<TransportKind>(
      "transport", c.transport,
      {{"auto", TransportKind::Auto}, {"nccl", TransportKind::Nccl}, {"ipc", TransportKind::Ipc}, {"mpi", TransportKind::Mpi}});
  c.coordinator = r.str("coordinator", "");

  const YAML::Node pf = r.get("prefetch");
  if (pf) {
    if (!pf.IsMap()) r.fail(pf, "prefetch", "expected a mapping (enabled, staging_buffers, buffer_size)");
    Reader p(name, pf, "prefetch");
    c.prefetch.enabled = p.boolean("enabled", c.prefetch.enabled);
    c.prefetch.staging_buffers = p.integer("staging_buffers", c.prefetch.staging_buffers, 2, 16);
    c.prefetch.buffer_bytes = p.bytes("buffer_size", c.prefetch.buffer_bytes);
    if (c.prefetch.buffer_bytes == 0) p.fail(pf["buffer_size"], "prefetch.buffer_size", "must be positive");
    p.check_unknown();
  }

  const YAML::Node stages = r.get("stages");
  if (!stages) throw ConfigError(name + ": stages: missing (one entry per rank)");
  if (!stages.IsSequence() || stages.size() == 0) r.fail(stages, "stages", "expected a non-empty list, one entry per rank");
  for (size_t i = 0; i < stages.size(); ++i) c.stages.push_back(parse_stage(name, stages[i], i));
  r.check_unknown();

  // Cross-field checks.
  if (c.prefill_chunk > c.max_batch_tokens) {
    r.fail(root["prefill_chunk"], "prefill_chunk",
           std::to_string(c.prefill_chunk) + " exceeds max_batch_tokens (" + std::to_string(c.max_batch_tokens) + ")");
  }
  size_t explicit_count = 0;
  for (const auto& s : c.stages) explicit_count += s.layers ? 1 : 0;
  if (explicit_count != 0 && explicit_count != c.stages.size()) {
    for (size_t i = 0; i < c.stages.size(); ++i) {
      if (!c.stages[i].layers) {
        r.fail(stages[i], "stages[" + std::to_string(i) + "].layers",
               "missing: give layers for every stage or for none");
      }
    }
  }
  for (size_t i = 1; i < c.stages.size() && explicit_count != 0; ++i) {
    if (c.stages[i].layers->first != c.stages[i - 1].layers->second) {
      r.fail(stages[i]["layers"], "stages[" + std::to_string(i) + "].layers",
             "starts at " + std::to_string(c.stages[i].layers->first) + " but the previous stage ends at " +
                 std::to_string(c.stages[i - 1].layers->second) + " (ranges must be contiguous)");
    }
  }
  for (size_t i = 0; i < c.stages.size(); ++i) {
    if (c.stages[i].vram_budget != 0 && !c.prefetch.enabled) {
      r.fail(stages[i]["vram_budget"], "stages[" + std::to_string(i) + "].vram_budget",
             "streams weights: set prefetch.enabled: true");
    }
  }
  if (explicit_count != 0 && c.stages.front().layers->first != 0) {
    r.fail(stages[0]["layers"], "stages[0].layers", "must start at layer 0");
  }
  return c;
}

std::string PipelineConfig::to_yaml() const {
  YAML::Emitter out;
  out.SetDoublePrecision(17);
  out << YAML::BeginMap;
  out << YAML::Key << "model" << YAML::Value << model;
  out << YAML::Key << "context_length" << YAML::Value << context_length;
  out << YAML::Key << "max_sequences" << YAML::Value << max_sequences;
  out << YAML::Key << "micro_batches" << YAML::Value << micro_batches;
  out << YAML::Key << "max_batch_tokens" << YAML::Value << max_batch_tokens;
  out << YAML::Key << "prefill_chunk" << YAML::Value << prefill_chunk;
  out << YAML::Key << "kv_cache_type" << YAML::Value << kv_type_name(kv_cache_type);
  out << YAML::Key << "kv_cache_type_k" << YAML::Value << kv_type_name(kv_cache_type_k);
  out << YAML::Key << "kv_cache_type_v" << YAML::Value << kv_type_name(kv_cache_type_v);
  out << YAML::Key << "threads" << YAML::Value << threads;
  out << YAML::Key << "scratch" << YAML::Value << scratch_bytes;
  out << YAML::Key << "transport" << YAML::Value << transport_name(transport);
  if (!coordinator.empty()) out << YAML::Key << "coordinator" << YAML::Value << coordinator;
  out << YAML::Key << "prefetch" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "enabled" << YAML::Value << prefetch.enabled;
  out << YAML::Key << "staging_buffers" << YAML::Value << prefetch.staging_buffers;
  out << YAML::Key << "buffer_size" << YAML::Value << prefetch.buffer_bytes;
  out << YAML::EndMap;
  out << YAML::Key << "stages" << YAML::Value << YAML::BeginSeq;
  for (const StageSpec& s : stages) {
    out << YAML::BeginMap;
    out << YAML::Key << "device" << YAML::Value << s.device;
    if (s.memory_bytes != 0) out << YAML::Key << "memory" << YAML::Value << s.memory_bytes;
    if (s.vram_budget != 0) out << YAML::Key << "vram_budget" << YAML::Value << s.vram_budget;
    if (s.experts.cpu_moe) out << YAML::Key << "cpu_moe" << YAML::Value << true;
    if (s.experts.n_cpu_moe != 0) out << YAML::Key << "n_cpu_moe" << YAML::Value << s.experts.n_cpu_moe;
    if (!s.experts.overrides.empty()) {
      std::string ot;
      for (const TensorOverride& o : s.experts.overrides) ot += (ot.empty() ? "" : ",") + o.text;
      out << YAML::Key << "override_tensor" << YAML::Value << YAML::DoubleQuoted << ot;
    }
    if (s.experts.cache_bytes != 0) out << YAML::Key << "expert_cache" << YAML::Value << s.experts.cache_bytes;
    if (s.cpu_rows < 0) out << YAML::Key << "cpu_rows" << YAML::Value << "auto";
    else if (s.cpu_rows > 0) out << YAML::Key << "cpu_rows" << YAML::Value << s.cpu_rows;
    if (!s.host.empty()) out << YAML::Key << "host" << YAML::Value << s.host;
    if (s.layers) {
      out << YAML::Key << "layers" << YAML::Value << YAML::Flow << YAML::BeginSeq << s.layers->first << s.layers->second
          << YAML::EndSeq;
    }
    out << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

PipelineConfig PipelineConfig::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open the config file");
  std::ostringstream ss;
  ss << in.rdbuf();
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  return parse(ss.str(), path, dir);
}

}  // namespace pipellm
