// Zero-copy, hardened reader for llama.cpp's GGUF files (v2 and v3).
// Every count, length and offset is validated before use; errors name the file,
// the field or tensor and the byte offset.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/tensor_type.h"
#include "engine/gguf/gguf_value.h"
#include "engine/util/mapped_file.h"

namespace pipellm {

// A tensor in the file: a typed view of its bytes inside the mapping.
struct TensorView {
  std::string name;
  TensorType type = TensorType::F32;
  int n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the contiguous (fastest) dimension
  uint64_t offset = 0;           // relative to the data section
  uint64_t file_offset = 0;      // absolute byte offset in the file
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;

  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t n_rows() const { return ne[1] * ne[2] * ne[3]; }
  size_t row_bytes() const { return static_cast<size_t>(nbytes / static_cast<uint64_t>(n_rows())); }
  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes(); }
  std::string shape_string() const;  // "[256, 1024]"
};

class GgufFile {
 public:
  static constexpr uint32_t kDefaultAlignment = 32;
  static constexpr uint64_t kMaxStringBytes = 1ull << 30;  // no real key or token is this large
  static constexpr uint64_t kTensorDataAlignment = 4;      // tensor data must start at a multiple

  // Maps and parses `path`. Throws FormatError (bad structure) or Error (I/O). A split model
  // (llama.cpp's gguf-split: NAME-00001-of-0000N.gguf, `split.count` > 1) is opened from its
  // first part: the other parts are mapped too and their tensors join this file's (metadata
  // comes from the first part).
  static std::unique_ptr<GgufFile> open(const std::string& path);
  // Parses a buffer that outlives the object (fuzzing, tests). `name` is used in errors.
  static std::unique_ptr<GgufFile> parse(const uint8_t* data, size_t size, const std::string& name);

  const std::string& name() const { return name_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  size_t file_size() const;  // all parts together
  int n_parts() const { return 1 + static_cast<int>(parts_.size()); }

  // Metadata, in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(std::string_view key) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }
  const GgufValue& get(std::string_view key) const;  // throws "missing key"

  // Typed accessors: throw FormatError "gguf: KEY: expected u32, found string" etc.
  // Integer getters accept any integer type whose value fits.
  uint32_t get_u32(std::string_view key) const;
  uint64_t get_u64(std::string_view key) const;
  int64_t get_i64(std::string_view key) const;
  float get_f32(std::string_view key) const;  // accepts f32/f64
  bool get_bool(std::string_view key) const;
  std::string get_string(std::string_view key) const;
  const std::vector<std::string_view>& get_string_array(std::string_view key) const;
  std::vector<float> get_f32_array(std::string_view key) const;    // numeric array -> float
  std::vector<int32_t> get_i32_array(std::string_view key) const;  // integer array, range-checked

  uint32_t get_u32_or(std::string_view key, uint32_t fallback) const;
  float get_f32_or(std::string_view key, float fallback) const;
  bool get_bool_or(std::string_view key, bool fallback) const;
  std::string get_string_or(std::string_view key, const std::string& fallback) const;

  // Tensors, in file order.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find_tensor(std::string_view name) const;
  const TensorView& tensor(std::string_view name) const;  // throws "missing tensor"

 private:
  GgufFile() = default;
  void parse_all();
  void open_split_parts();
  [[noreturn]] void fail_key(std::string_view key, const char* expected, const GgufValue& v) const;

  std::string name_;
  MappedFile map_;  // empty when parsing a caller's buffer
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
  std::vector<std::unique_ptr<GgufFile>> parts_;  // split parts 2..N (their mappings stay alive)
};

}  // namespace pipellm
