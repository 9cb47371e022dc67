// `pipellm inspect FILE [--json] [--tensor NAME [--f32 OUT]]`: what is inside a GGUF file.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/error.h"
#include "cli/commands.h"
#include "engine/gguf/gguf_file.h"
#include "flags/llama_flags.h"
#include "kernels/cpu/dequantize.h"

namespace pipellm::cli {
namespace {

std::string human_bytes(uint64_t b) {
  char buf[32];
  if (b >= (1ull << 30)) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(b) / (1ull << 30));
  } else if (b >= (1ull << 20)) {
    std::snprintf(buf, sizeof buf, "%.2f MiB", static_cast<double>(b) / (1ull << 20));
  } else if (b >= 1024) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(b) / 1024);
  } else {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  }
  return buf;
}

// Layer index of "blk.N.*" tensors, -1 for the rest (embeddings, output head, norms).
int layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  size_t end = name.find('.', 4);
  if (end == std::string::npos) return -1;
  try {
    return std::stoi(name.substr(4, end - 4));
  } catch (...) {
    return -1;
  }
}

nlohmann::json value_to_json(const GgufValue& v, size_t max_items) {
  switch (v.type) {
    case GgufType::BOOL: return v.u != 0;
    case GgufType::U8:
    case GgufType::U16:
    case GgufType::U32:
    case GgufType::U64: return v.u;
    case GgufType::I8:
    case GgufType::I16:
    case GgufType::I32:
    case GgufType::I64: return v.i;
    case GgufType::F32:
    case GgufType::F64: return v.f;
    case GgufType::STRING: return std::string(v.s);
    case GgufType::ARRAY: {
      nlohmann::json a = nlohmann::json::array();
      const uint64_t n = std::min<uint64_t>(v.count, max_items);
      for (uint64_t k = 0; k < n; ++k) {
        if (v.elem_type == GgufType::STRING) {
          a.push_back(std::string(v.strings[k]));
        } else if (v.elem_type == GgufType::ARRAY) {
          a.push_back(value_to_json(v.items[k], max_items));
        } else if (v.elem_type == GgufType::F32 || v.elem_type == GgufType::F64) {
          a.push_back(v.array_as_double(k));
        } else {
          a.push_back(v.array_as_int(k));
        }
      }
      if (v.count <= max_items) return a;
      return {{"type", gguf_type_name(v.elem_type)}, {"count", v.count}, {"head", a}};
    }
  }
  return nullptr;
}

int write_tensor_f32(const GgufFile& f, const std::string& name, const std::string& out) {
  const TensorView& t = f.tensor(name);
  std::ofstream os(out, std::ios::binary);
  if (!os) throw Error(out + ": cannot open for writing");
  std::vector<float> row(static_cast<size_t>(t.ne[0]));
  for (int64_t r = 0; r < t.n_rows(); ++r) {
    dequantize_row(t.type, t.row(r), row.data(), t.ne[0]);
    os.write(reinterpret_cast<const char*>(row.data()), static_cast<std::streamsize>(row.size() * 4));
  }
  if (!os) throw Error(out + ": write failed");
  std::fprintf(stderr, "wrote %s: %lld floats (%s %s) to %s\n", name.c_str(),
               static_cast<long long>(t.n_elements()), tensor_type_name(t.type), t.shape_string().c_str(),
               out.c_str());
  return 0;
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
  std::string path, tensor_name, f32_out;
  bool json = false;
  CLI::App app{"pipellm inspect: what is inside a GGUF file: metadata, tokenizer, tensors, bytes per layer.",
               "pipellm inspect"};
  auto* file = app.add_option("FILE", path, "the GGUF file")->type_name("");
  // -m as llama.cpp's programs name the model file; the positional FILE stays.
  app.add_option("-m,--model", path, "the GGUF file (instead of FILE)")->type_name("FILE")->excludes(file);
  app.add_flag("--json", json, "print everything as one JSON object");
  auto* tensor = app.add_option("--tensor", tensor_name, "show one tensor (name, type, shape, bytes, offset)")
                     ->type_name("NAME");
  app.add_option("--f32", f32_out,
                 "with --tensor: write it dequantized to this file as little-endian float32, row-major (ne0 "
                 "fastest)")
      ->type_name("OUT")
      ->needs(tensor);
  if (auto code = flags::parse(app, argc, argv)) return *code;
  if (path.empty()) {
    std::fputs("pipellm inspect: error: give the GGUF file (FILE or -m FILE)\nRun with --help for more information.\n",
               stderr);
    return 2;
  }

  std::unique_ptr<GgufFile> f;
  try {
    f = GgufFile::open(path);
  } catch (const Error& e) {
    std::fprintf(stderr, "pipellm inspect: %s\n", e.what());
    return 1;
  }
  if (!f32_out.empty()) return write_tensor_f32(*f, tensor_name, f32_out);

  uint64_t total = 0;
  std::map<int, uint64_t> per_layer;
  for (const auto& t : f->tensors()) {
    total += t.nbytes;
    per_layer[layer_of(t.name)] += t.nbytes;
  }
  const std::string arch = f->get_string_or("general.architecture", "");
  const std::string tok_model = f->get_string_or("tokenizer.ggml.model", "");
  const GgufValue* tokens = f->find("tokenizer.ggml.tokens");
  const uint64_t n_vocab = tokens ? tokens->count : 0;

  if (json) {
    nlohmann::json j;
    j["file"] = path;
    j["version"] = f->version();
    j["alignment"] = f->alignment();
    j["architecture"] = arch;
    nlohmann::json meta = nlohmann::json::object();
    for (const auto& [k, v] : f->metadata()) meta[k] = value_to_json(v, 16);
    j["metadata"] = meta;
    j["tokenizer"] = {{"model", tok_model}, {"pre", f->get_string_or("tokenizer.ggml.pre", "")},
                      {"n_vocab", n_vocab}};
    nlohmann::json ts = nlohmann::json::array();
    for (const auto& t : f->tensors()) {
      ts.push_back({{"name", t.name},
                    {"type", tensor_type_name(t.type)},
                    {"shape", std::vector<int64_t>(t.ne, t.ne + t.n_dims)},
                    {"bytes", t.nbytes},
                    {"offset", t.file_offset}});
    }
    j["tensors"] = ts;
    j["total_bytes"] = total;
    nlohmann::json layers = nlohmann::json::object();
    for (const auto& [l, b] : per_layer) layers[l < 0 ? "other" : std::to_string(l)] = b;
    j["bytes_per_layer"] = layers;
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }

  if (!tensor_name.empty()) {
    const TensorView& t = f->tensor(tensor_name);
    std::printf("%s: %s %s, %s at byte %llu\n", t.name.c_str(), tensor_type_name(t.type),
                t.shape_string().c_str(), human_bytes(t.nbytes).c_str(),
                static_cast<unsigned long long>(t.file_offset));
    return 0;
  }

  std::printf("file:          %s (GGUF v%u, %s)\n", path.c_str(), f->version(), human_bytes(f->file_size()).c_str());
  std::printf("architecture:  %s\n", arch.empty() ? "(none)" : arch.c_str());
  std::printf("\nmetadata (%zu keys):\n", f->metadata().size());
  for (const auto& [k, v] : f->metadata()) std::printf("  %-44s %s\n", k.c_str(), v.to_string().c_str());
  std::printf("\ntokenizer:     %s, pre '%s', %llu tokens\n", tok_model.empty() ? "(none)" : tok_model.c_str(),
              f->get_string_or("tokenizer.ggml.pre", "").c_str(), static_cast<unsigned long long>(n_vocab));
  std::printf("\ntensors (%zu):\n  %-36s %-8s %-22s %12s\n", f->tensors().size(), "name", "type", "shape", "bytes");
  for (const auto& t : f->tensors())
    std::printf("  %-36s %-8s %-22s %12llu\n", t.name.c_str(), tensor_type_name(t.type), t.shape_string().c_str(),
                static_cast<unsigned long long>(t.nbytes));
  std::printf("\nbytes per layer:\n");
  for (const auto& [l, b] : per_layer)
    std::printf("  %-10s %s\n", l < 0 ? "other" : ("blk." + std::to_string(l)).c_str(), human_bytes(b).c_str());
  std::printf("\ntotal tensor data: %s (%llu bytes)\n", human_bytes(total).c_str(),
              static_cast<unsigned long long>(total));
  return 0;
}

}  // namespace pipellm::cli
