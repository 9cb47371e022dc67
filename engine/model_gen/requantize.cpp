#include "engine/model_gen/requantize.h"

#include <cstring>
#include <vector>

#include "base/error.h"
#include "engine/gguf/gguf_writer.h"
#include "engine/util/thread_pool.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/quantize.h"

namespace pipellm {
namespace {

bool is_float_type(TensorType t) { return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16; }

}  // namespace

RequantizeSummary requantize_model(const GgufFile& in, const FileType& ft, const std::string& out_path,
                                   ThreadPool& pool, const RequantizeOptions& options) {
  const std::string arch = in.get_string("general.architecture");
  const int n_layer = static_cast<int>(in.get_u32(arch + ".block_count"));
  const bool has_output = in.find_tensor("output.weight") != nullptr;
  // llama-quantize's MoE rules depend on the expert count (0: dense).
  const int n_expert = static_cast<int>(in.get_u32_or(arch + ".expert_count", 0));

  GgufWriter w(in.alignment());
  for (const auto& [key, value] : in.metadata()) {
    if (key != "general.alignment") w.set_value(key, value);
  }
  w.set_u32("general.file_type", ft.gguf_id);

  RequantizeSummary sum;
  sum.n_tensors = static_cast<int>(in.tensors().size());
  for (const TensorView& t : in.tensors()) sum.in_bytes += t.nbytes;

  // Progress is reported from the fill callbacks, which the writer runs in file order.
  auto report = [&options, &sum](int index, const TensorView& t, TensorType to, uint64_t done) {
    if (!options.on_tensor) return;
    RequantizeProgress p;
    p.index = index;
    p.count = sum.n_tensors;
    p.name = &t.name;
    p.from = t.type;
    p.to = to;
    p.converted = to != t.type;
    p.in_bytes_done = done;
    p.in_bytes_total = sum.in_bytes;
    options.on_tensor(p);
  };

  int index = 0;
  uint64_t done = 0;
  for (const TensorView& t : in.tensors()) {
    ++index;
    done += t.nbytes;
    const std::vector<int64_t> ne(t.ne, t.ne + t.n_dims);
    const TensorType to = choose_tensor_type(t.name, ne, n_layer, ft, has_output, n_expert);
    const TensorView* src = &t;
    sum.out_bytes += tensor_row_bytes(to, t.ne[0]) * static_cast<uint64_t>(t.n_rows());
    if (to == t.type) {
      w.add_tensor(t.name, t.type, ne, [src, index, done, &report](uint8_t* dst, size_t n) {
        std::memcpy(dst, src->data, n);
        report(index, *src, src->type, done);
      });
      continue;
    }
    if (!can_quantize(to))
      throw InvalidArgument("tensor '" + t.name + "': PipeLLM cannot encode " + tensor_type_name(to));
    if (!tensor_type_info(t.type).can_dequantize)
      throw InvalidArgument("tensor '" + t.name + "': PipeLLM cannot decode " + tensor_type_name(t.type));
    if (!is_float_type(t.type) && !options.allow_requantize) {
      throw InvalidArgument("tensor '" + t.name + "' is already quantized (" + tensor_type_name(t.type) +
                            "): re-encoding it as " + tensor_type_name(to) +
                            " would round its weights a second time; quantize from the F32/F16/BF16 "
                            "original, or pass --allow-requantize to do it anyway");
    }
    ++sum.n_converted;
    w.add_tensor(t.name, to, ne, [src, to, index, done, &pool, &report](uint8_t* dst, size_t) {
      const size_t out_row = tensor_row_bytes(to, src->ne[0]);
      pool.parallel_for(src->n_rows(), [&](int64_t r0, int64_t r1) {
        std::vector<float> row(static_cast<size_t>(src->ne[0]));
        for (int64_t r = r0; r < r1; ++r) {
          dequantize_row(src->type, src->row(r), row.data(), src->ne[0]);
          quantize_row(to, row.data(), dst + static_cast<size_t>(r) * out_row, src->ne[0]);
        }
      });
      report(index, *src, to, done);
    });
  }
  w.write(out_path);
  return sum;
}

}  // namespace pipellm
