// A GGUF metadata value: scalar, string, or (possibly nested) array.
// Strings and numeric arrays are views into the mapped file (zero copy).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pipellm {

enum class GgufType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};

const char* gguf_type_name(GgufType t);  // "u32", "string", "array", ...
bool gguf_type_is_valid(uint32_t t);
size_t gguf_scalar_size(GgufType t);  // 0 for STRING and ARRAY

struct GgufValue {
  GgufType type = GgufType::U8;

  // Scalars (the field that matches `type`; integers widened).
  uint64_t u = 0;       // U8/U16/U32/U64/BOOL
  int64_t i = 0;        // I8/I16/I32/I64
  double f = 0.0;       // F32/F64
  std::string_view s;   // STRING

  // Arrays: element type and count; numeric elements are a view of count*size bytes,
  // strings a vector of views, nested arrays a vector of values.
  GgufType elem_type = GgufType::U8;
  uint64_t count = 0;
  const uint8_t* raw = nullptr;
  std::vector<std::string_view> strings;
  std::vector<GgufValue> items;

  bool is_integer() const;
  bool is_float() const { return type == GgufType::F32 || type == GgufType::F64; }
  // Element i of a numeric array widened to double / int64 (no bounds check beyond count).
  double array_as_double(uint64_t idx) const;
  int64_t array_as_int(uint64_t idx) const;
  // Human-readable short rendering for `pipellm inspect` (arrays abbreviated).
  std::string to_string(size_t max_items = 8) const;
};

}  // namespace pipellm
