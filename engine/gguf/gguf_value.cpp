#include "engine/gguf/gguf_value.h"

#include <cstring>
#include <sstream>

namespace pipellm {

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::U8: return "u8";
    case GgufType::I8: return "i8";
    case GgufType::U16: return "u16";
    case GgufType::I16: return "i16";
    case GgufType::U32: return "u32";
    case GgufType::I32: return "i32";
    case GgufType::F32: return "f32";
    case GgufType::BOOL: return "bool";
    case GgufType::STRING: return "string";
    case GgufType::ARRAY: return "array";
    case GgufType::U64: return "u64";
    case GgufType::I64: return "i64";
    case GgufType::F64: return "f64";
  }
  return "unknown";
}

bool gguf_type_is_valid(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::F64); }

size_t gguf_scalar_size(GgufType t) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::BOOL: return 1;
    case GgufType::U16:
    case GgufType::I16: return 2;
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::F32: return 4;
    case GgufType::U64:
    case GgufType::I64:
    case GgufType::F64: return 8;
    case GgufType::STRING:
    case GgufType::ARRAY: return 0;
  }
  return 0;
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::U16:
    case GgufType::I16:
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::U64:
    case GgufType::I64: return true;
    default: return false;
  }
}

namespace {
template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
}  // namespace

double GgufValue::array_as_double(uint64_t idx) const {
  const uint8_t* p = raw + idx * gguf_scalar_size(elem_type);
  switch (elem_type) {
    case GgufType::U8: return load<uint8_t>(p);
    case GgufType::I8: return load<int8_t>(p);
    case GgufType::U16: return load<uint16_t>(p);
    case GgufType::I16: return load<int16_t>(p);
    case GgufType::U32: return load<uint32_t>(p);
    case GgufType::I32: return load<int32_t>(p);
    case GgufType::F32: return load<float>(p);
    case GgufType::BOOL: return load<uint8_t>(p) != 0;
    case GgufType::U64: return static_cast<double>(load<uint64_t>(p));
    case GgufType::I64: return static_cast<double>(load<int64_t>(p));
    case GgufType::F64: return load<double>(p);
    default: return 0.0;
  }
}

int64_t GgufValue::array_as_int(uint64_t idx) const {
  const uint8_t* p = raw + idx * gguf_scalar_size(elem_type);
  switch (elem_type) {
    case GgufType::U8: return load<uint8_t>(p);
    case GgufType::I8: return load<int8_t>(p);
    case GgufType::U16: return load<uint16_t>(p);
    case GgufType::I16: return load<int16_t>(p);
    case GgufType::U32: return load<uint32_t>(p);
    case GgufType::I32: return load<int32_t>(p);
    case GgufType::BOOL: return load<uint8_t>(p) != 0;
    case GgufType::U64: return static_cast<int64_t>(load<uint64_t>(p));
    case GgufType::I64: return load<int64_t>(p);
    case GgufType::F32: return static_cast<int64_t>(load<float>(p));
    case GgufType::F64: return static_cast<int64_t>(load<double>(p));
    default: return 0;
  }
}

std::string GgufValue::to_string(size_t max_items) const {
  std::ostringstream os;
  switch (type) {
    case GgufType::U8:
    case GgufType::U16:
    case GgufType::U32:
    case GgufType::U64: os << u; break;
    case GgufType::BOOL: os << (u ? "true" : "false"); break;
    case GgufType::I8:
    case GgufType::I16:
    case GgufType::I32:
    case GgufType::I64: os << i; break;
    case GgufType::F32:
    case GgufType::F64: os << f; break;
    case GgufType::STRING:
      if (s.size() > 60) {
        os << '"' << s.substr(0, 57) << "...\" (" << s.size() << " bytes)";
      } else {
        os << '"' << s << '"';
      }
      break;
    case GgufType::ARRAY: {
      os << "[" << gguf_type_name(elem_type) << " x " << count << "]";
      if (count == 0) break;
      os << " {";
      const uint64_t n = count < max_items ? count : max_items;
      for (uint64_t k = 0; k < n; ++k) {
        if (k) os << ", ";
        if (elem_type == GgufType::STRING) {
          os << '"' << strings[k].substr(0, 24) << '"';
        } else if (elem_type == GgufType::ARRAY) {
          os << items[k].to_string(2);
        } else if (elem_type == GgufType::F32 || elem_type == GgufType::F64) {
          os << array_as_double(k);
        } else {
          os << array_as_int(k);
        }
      }
      if (count > n) os << ", ...";
      os << "}";
      break;
    }
  }
  return os.str();
}

}  // namespace pipellm
