#include "engine/model_gen/requantize.h"

#include <cstring>
#include <vector>

#include "base/error.h"
#include "engine/gguf/gguf_writer.h"
#include "engine/util/thread_pool.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/quantize.h"

namespace pipellm {

void requantize_model(const GgufFile& in, const FileType& ft, const std::string& out_path, ThreadPool& pool) {
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

  for (const TensorView& t : in.tensors()) {
    const std::vector<int64_t> ne(t.ne, t.ne + t.n_dims);
    const TensorType to = choose_tensor_type(t.name, ne, n_layer, ft, has_output, n_expert);
    if (to == t.type) {
      w.add_tensor(t.name, t.type, ne, t.data);
      continue;
    }
    if (!can_quantize(to))
      throw InvalidArgument("tensor '" + t.name + "': PipeLLM cannot encode " + tensor_type_name(to));
    if (!tensor_type_info(t.type).can_dequantize)
      throw InvalidArgument("tensor '" + t.name + "': PipeLLM cannot decode " + tensor_type_name(t.type));
    const TensorView* src = &t;
    w.add_tensor(t.name, to, ne, [src, to, &pool](uint8_t* dst, size_t) {
      const size_t out_row = tensor_row_bytes(to, src->ne[0]);
      pool.parallel_for(src->n_rows(), [&](int64_t r0, int64_t r1) {
        std::vector<float> row(static_cast<size_t>(src->ne[0]));
        for (int64_t r = r0; r < r1; ++r) {
          dequantize_row(src->type, src->row(r), row.data(), src->ne[0]);
          quantize_row(to, row.data(), dst + static_cast<size_t>(r) * out_row, src->ne[0]);
        }
      });
    });
  }
  w.write(out_path);
}

}  // namespace pipellm
