// libFuzzer entry: any byte string is parsed; valid parses are walked (metadata rendering, typed
// accessors, first row of every tensor dequantized) so the views the reader hands out are exercised.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/error.h"
#include "engine/gguf/gguf_file.h"
#include "kernels/cpu/dequantize.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<pipellm::GgufFile> f;
  try {
    f = pipellm::GgufFile::parse(data, size, "fuzz.gguf");
  } catch (const pipellm::FormatError&) {
    return 0;
  }
  for (const auto& [key, value] : f->metadata()) {
    (void)value.to_string();
    try {
      (void)f->get_u32(key);
    } catch (const pipellm::Error&) {
    }
    try {
      (void)f->get_f32_array(key);
    } catch (const pipellm::Error&) {
    }
  }
  std::vector<float> row;
  for (const auto& t : f->tensors()) {
    if (!pipellm::tensor_type_info(t.type).can_dequantize || t.ne[0] > (1 << 16) || t.nbytes == 0) continue;
    row.resize(static_cast<size_t>(t.ne[0]));
    pipellm::dequantize_row(t.type, t.data, row.data(), t.ne[0]);
  }
  return 0;
}
