#include "engine/model_gen/raw_import.h"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "base/error.h"
#include "engine/gguf/gguf_writer.h"
#include "engine/model_gen/hf_bpe_vocab.h"
#include "engine/util/json_file.h"
#include "engine/util/mapped_file.h"
#include "engine/util/thread_pool.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/quantize.h"

namespace pipellm {
namespace {

using nlohmann::json;

template <typename T>
T field(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key)) throw FormatError(where + ": missing \"" + key + "\"");
  try {
    return j.at(key).get<T>();
  } catch (const json::exception& e) {
    throw FormatError(where + ": \"" + key + "\" has the wrong type: " + e.what());
  }
}

TensorType source_type(const std::string& dtype, const std::string& where) {
  if (dtype == "f32") return TensorType::F32;
  if (dtype == "f16") return TensorType::F16;
  if (dtype == "q8_0") return TensorType::Q8_0;
  throw FormatError(where + ": dtype '" + dtype + "' (expected f32, f16 or q8_0)");
}

uint32_t file_type_id(TensorType t) {  // general.file_type (llama_ftype)
  switch (t) {
    case TensorType::F32: return 0;
    case TensorType::F16: return 1;
    case TensorType::Q8_0: return 7;
    default: throw InvalidArgument(std::string("import: matrix type ") + tensor_type_name(t) + " (expected F32, F16 or Q8_0)");
  }
}

struct RawTensor {
  std::string name;
  TensorType src = TensorType::F32;
  TensorType dst = TensorType::F32;
  std::vector<int64_t> ne;  // GGUF order
  const uint8_t* data = nullptr;
};

RawTensor read_tensor(const json& t, const MappedFile& weights, TensorType matrix_type, const std::string& where_file) {
  RawTensor r;
  r.name = field<std::string>(t, "name", where_file + ": a tensor");
  const std::string where = where_file + ": tensor " + r.name;
  r.src = source_type(field<std::string>(t, "dtype", where), where);
  const auto shape = field<std::vector<int64_t>>(t, "shape", where);
  if (shape.empty() || shape.size() > 2) throw FormatError(where + ": only 1-D and 2-D tensors are supported");
  for (int64_t d : shape)
    if (d <= 0) throw FormatError(where + ": non-positive dimension");
  r.ne.assign(shape.rbegin(), shape.rend());
  r.dst = shape.size() == 2 ? matrix_type : TensorType::F32;
  const int64_t bs = std::max(tensor_type_info(r.src).block_size, tensor_type_info(r.dst).block_size);
  if (r.ne[0] % bs != 0)
    throw FormatError(where + ": rows of " + std::to_string(r.ne[0]) + " elements are not a multiple of " + std::to_string(bs));
  const uint64_t offset = field<uint64_t>(t, "offset", where);
  const uint64_t nbytes = field<uint64_t>(t, "nbytes", where);
  const uint64_t rows = shape.size() == 2 ? static_cast<uint64_t>(shape[0]) : 1;
  const uint64_t expect = rows * tensor_row_bytes(r.src, r.ne[0]);
  if (nbytes != expect)
    throw FormatError(where + ": " + std::to_string(nbytes) + " bytes, but its dtype and shape need " + std::to_string(expect));
  if (offset > weights.size() || nbytes > weights.size() - offset)
    throw FormatError(where + ": bytes [" + std::to_string(offset) + ", " + std::to_string(offset + nbytes) +
                      ") run past the end of " + weights.path() + " (" + std::to_string(weights.size()) + " bytes)");
  r.data = weights.data() + offset;
  return r;
}

// Copies rows unchanged when the types agree, else decodes each row to floats and re-encodes.
GgufWriter::TensorFill converter(const RawTensor& t, ThreadPool& pool) {
  return [t, &pool](uint8_t* dst, size_t nbytes) {
    if (t.src == t.dst) {
      std::memcpy(dst, t.data, nbytes);
      return;
    }
    const int64_t n = t.ne[0];
    const int64_t rows = t.ne.size() == 2 ? t.ne[1] : 1;
    const size_t src_row = tensor_row_bytes(t.src, n), dst_row = tensor_row_bytes(t.dst, n);
    pool.parallel_for(rows, [&](int64_t r0, int64_t r1) {
      std::vector<float> row(static_cast<size_t>(n));
      for (int64_t r = r0; r < r1; ++r) {
        dequantize_row(t.src, t.data + static_cast<size_t>(r) * src_row, row.data(), n);
        quantize_row(t.dst, row.data(), dst + static_cast<size_t>(r) * dst_row, n);
      }
    });
  };
}

}  // namespace

void import_raw_model(const RawImportOptions& opt, const std::string& out_path, ThreadPool& pool) {
  const json man = read_json_file(opt.manifest);
  const std::string& where = opt.manifest;
  const std::string arch = field<std::string>(man, "arch", where);
  if (arch != "llama") throw FormatError(where + ": arch '" + arch + "' (only llama is supported)");
  const HfBpeVocab vocab = read_hf_byte_level_bpe(opt.tokenizer);
  const auto n_vocab = field<uint32_t>(man, "n_vocab", where);
  if (n_vocab != vocab.tokens.size())
    throw FormatError(where + ": n_vocab " + std::to_string(n_vocab) + " but " + opt.tokenizer + " has " +
                      std::to_string(vocab.tokens.size()) + " tokens");

  GgufWriter w;
  const std::string a = arch + ".";
  w.set_string("general.architecture", arch);
  w.set_string("general.name", field<std::string>(man, "name", where) + " " + tensor_type_name(opt.matrix_type));
  w.set_u32("general.file_type", file_type_id(opt.matrix_type));
  w.set_u32("general.quantization_version", 2);
  const auto head_dim = field<uint32_t>(man, "head_dim", where);
  w.set_u32(a + "block_count", field<uint32_t>(man, "n_layer", where));
  w.set_u32(a + "context_length", field<uint32_t>(man, "n_ctx", where));
  w.set_u32(a + "embedding_length", field<uint32_t>(man, "n_embd", where));
  w.set_u32(a + "feed_forward_length", field<uint32_t>(man, "n_ff", where));
  w.set_u32(a + "attention.head_count", field<uint32_t>(man, "n_head", where));
  w.set_u32(a + "attention.head_count_kv", field<uint32_t>(man, "n_head_kv", where));
  w.set_u32(a + "attention.key_length", head_dim);
  w.set_u32(a + "attention.value_length", head_dim);
  w.set_u32(a + "rope.dimension_count", head_dim);
  w.set_f32(a + "rope.freq_base", field<float>(man, "rope_base", where));
  w.set_f32(a + "attention.layer_norm_rms_epsilon", field<float>(man, "rms_eps", where));
  w.set_u32(a + "vocab_size", n_vocab);

  GgufTokenizerSettings ts;
  ts.pre = field<std::string>(man, "tokenizer_pre", where);
  ts.bos = field<int32_t>(man, "bos_id", where);
  ts.eos = field<int32_t>(man, "eos_id", where);
  ts.add_bos = field<bool>(man, "add_bos", where);
  set_gguf_tokenizer(w, vocab, ts);

  const MappedFile weights(opt.weights);
  const json& tensors = man.contains("tensors") ? man["tensors"] : json();
  if (!tensors.is_array() || tensors.empty()) throw FormatError(where + ": \"tensors\" is missing or empty");
  for (const auto& t : tensors) {
    const RawTensor r = read_tensor(t, weights, opt.matrix_type, where);
    w.add_tensor(r.name, r.dst, r.ne, converter(r, pool));
  }
  w.write(out_path);
}

}  // namespace pipellm
