// Writes GGUF v3 files: metadata and tensors with correct alignment.
// Used by tests (malformed-file cases start from valid files) and by `pipellm mkmodel`.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/tensor_type.h"
#include "engine/gguf/gguf_value.h"

namespace pipellm {

class GgufWriter {
 public:
  // Fills the tensor's bytes (exactly tensor_row_bytes * rows of them) when the file is written.
  using TensorFill = std::function<void(uint8_t* dst, size_t nbytes)>;

  explicit GgufWriter(uint32_t alignment = 32);

  // Setting a key twice replaces the earlier value (order of first setting is kept).
  void set_u8(const std::string& key, uint8_t v);
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_u64(const std::string& key, uint64_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_string(const std::string& key, std::string_view v);
  void set_string_array(const std::string& key, const std::vector<std::string>& v);
  void set_f32_array(const std::string& key, const std::vector<float>& v);
  void set_i32_array(const std::string& key, const std::vector<int32_t>& v);
  // Copies a value read from another file (any type, nested arrays included).
  void set_value(const std::string& key, const GgufValue& v);

  void add_tensor(const std::string& name, TensorType type, const std::vector<int64_t>& ne,
                  const void* data);  // data is copied at write time; must outlive write()
  void add_tensor(const std::string& name, TensorType type, const std::vector<int64_t>& ne, TensorFill fill);

  // Writes atomically (temporary file, then rename): a failed write leaves no partial file.
  void write(const std::string& path) const;
  std::vector<uint8_t> write_to_memory() const;

  size_t n_tensors() const { return tensors_.size(); }

 private:
  struct Tensor {
    std::string name;
    TensorType type;
    std::vector<int64_t> ne;
    uint64_t nbytes;
    TensorFill fill;
  };
  void set_raw(const std::string& key, GgufType type, std::vector<uint8_t> bytes);
  std::vector<uint8_t> header() const;  // everything before the data section, padded
  template <typename Sink>
  void emit(Sink& sink) const;

  uint32_t alignment_;
  std::vector<std::pair<std::string, std::vector<uint8_t>>> kv_;  // key -> encoded (type, value)
  std::vector<Tensor> tensors_;
};

}  // namespace pipellm
