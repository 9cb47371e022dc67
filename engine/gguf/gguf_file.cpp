#include "engine/gguf/gguf_file.h"

#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>

#include "base/error.h"

namespace pipellm {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr int kMaxArrayDepth = 8;
constexpr size_t kMaxTensorName = 256;

// Bounds-checked little-endian reader over the file; every failure names the byte offset.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& name)
      : data_(data), size_(size), name_(name) {}

  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }

  [[noreturn]] void fail(const std::string& what, size_t at) const {
    std::ostringstream os;
    os << name_ << ": byte " << at << ": " << what;
    throw FormatError(os.str());
  }
  [[noreturn]] void fail(const std::string& what) const { fail(what, pos_); }

  const uint8_t* take(size_t n, const char* what) {
    if (n > left()) {
      std::ostringstream os;
      os << "truncated " << what << ": needs " << n << " bytes, " << left() << " left in the file";
      fail(os.str());
    }
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  template <typename T>
  T read(const char* what) {
    T v;
    std::memcpy(&v, take(sizeof(T), what), sizeof(T));
    return v;
  }
  std::string_view read_string(const char* what) {
    const size_t at = pos_;
    const uint64_t len = read<uint64_t>(what);
    if (len > GgufFile::kMaxStringBytes || len > left()) {
      std::ostringstream os;
      os << what << ": string length " << len << " exceeds the " << left() << " bytes left in the file";
      fail(os.str(), at);
    }
    const uint8_t* p = take(static_cast<size_t>(len), what);
    return std::string_view(reinterpret_cast<const char*>(p), static_cast<size_t>(len));
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& name_;
};

void read_value(Cursor& c, GgufType type, GgufValue& out, const std::string& key, int depth);

void read_array(Cursor& c, GgufValue& out, const std::string& key, int depth) {
  const size_t at = c.pos();
  if (depth >= kMaxArrayDepth) c.fail("metadata '" + key + "': arrays nested deeper than 8", at);
  const uint32_t et = c.read<uint32_t>("array element type");
  if (!gguf_type_is_valid(et))
    c.fail("metadata '" + key + "': unknown array element type " + std::to_string(et), at);
  out.elem_type = static_cast<GgufType>(et);
  const size_t count_at = c.pos();
  out.count = c.read<uint64_t>("array length");
  // The smallest possible encoding of one element bounds the count by the bytes left,
  // so no allocation is ever driven by an unchecked count.
  size_t min_elem = gguf_scalar_size(out.elem_type);
  if (out.elem_type == GgufType::STRING) min_elem = 8;
  if (out.elem_type == GgufType::ARRAY) min_elem = 12;
  if (out.count > c.left() / min_elem) {
    std::ostringstream os;
    os << "metadata '" << key << "': array of " << out.count << " " << gguf_type_name(out.elem_type)
       << " cannot fit in the " << c.left() << " bytes left in the file";
    c.fail(os.str(), count_at);
  }
  const size_t n = static_cast<size_t>(out.count);
  if (out.elem_type == GgufType::STRING) {
    out.strings.reserve(n);
    for (size_t k = 0; k < n; ++k) out.strings.push_back(c.read_string("array string"));
  } else if (out.elem_type == GgufType::ARRAY) {
    out.items.resize(n);
    for (size_t k = 0; k < n; ++k) {
      out.items[k].type = GgufType::ARRAY;
      read_array(c, out.items[k], key, depth + 1);
    }
  } else {
    out.raw = c.take(n * min_elem, "array data");
  }
}

void read_value(Cursor& c, GgufType type, GgufValue& out, const std::string& key, int depth) {
  out.type = type;
  switch (type) {
    case GgufType::U8: out.u = c.read<uint8_t>("u8 value"); break;
    case GgufType::I8: out.i = c.read<int8_t>("i8 value"); break;
    case GgufType::U16: out.u = c.read<uint16_t>("u16 value"); break;
    case GgufType::I16: out.i = c.read<int16_t>("i16 value"); break;
    case GgufType::U32: out.u = c.read<uint32_t>("u32 value"); break;
    case GgufType::I32: out.i = c.read<int32_t>("i32 value"); break;
    case GgufType::U64: out.u = c.read<uint64_t>("u64 value"); break;
    case GgufType::I64: out.i = c.read<int64_t>("i64 value"); break;
    case GgufType::F32: out.f = c.read<float>("f32 value"); break;
    case GgufType::F64: out.f = c.read<double>("f64 value"); break;
    case GgufType::BOOL: {
      const size_t at = c.pos();
      const uint8_t b = c.read<uint8_t>("bool value");
      if (b > 1) c.fail("metadata '" + key + "': bool value " + std::to_string(b) + " is not 0 or 1", at);
      out.u = b;
      break;
    }
    case GgufType::STRING: out.s = c.read_string("string value"); break;
    case GgufType::ARRAY: read_array(c, out, key, depth); break;
  }
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t& out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return true;
  out = a * b;
  return false;
}

}  // namespace

std::string TensorView::shape_string() const {
  std::ostringstream os;
  os << "[";
  for (int d = 0; d < n_dims; ++d) os << (d ? ", " : "") << ne[d];
  os << "]";
  return os.str();
}

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->name_ = path;
  f->map_ = MappedFile(path);
  f->data_ = f->map_.data();
  f->size_ = f->map_.size();
  f->parse_all();
  f->open_split_parts();
  return f;
}

size_t GgufFile::file_size() const {
  size_t total = size_;
  for (const auto& p : parts_) total += p->size_;
  return total;
}

void GgufFile::open_split_parts() {
  const uint32_t count = get_u32_or("split.count", 1);
  if (count <= 1) return;
  const uint32_t no = get_u32_or("split.no", 0);
  // llama.cpp names the parts PREFIX-%05d-of-%05d.gguf.
  char suffix[64];
  std::snprintf(suffix, sizeof suffix, "-%05u-of-%05u.gguf", no + 1, count);
  const std::string s(suffix);
  if (name_.size() < s.size() || name_.compare(name_.size() - s.size(), s.size(), s) != 0) {
    throw FormatError(name_ + ": part " + std::to_string(no + 1) + " of a split model, but the name does not end in " +
                      s + " (llama.cpp's gguf-split naming)");
  }
  if (no != 0) {
    char first[64];
    std::snprintf(first, sizeof first, "-%05u-of-%05u.gguf", 1u, count);
    throw FormatError(name_ + ": part " + std::to_string(no + 1) + " of " + std::to_string(count) +
                      " of a split model: open the first part, " + name_.substr(0, name_.size() - s.size()) + first);
  }
  const std::string prefix = name_.substr(0, name_.size() - s.size());
  for (uint32_t k = 1; k < count; ++k) {
    char part[64];
    std::snprintf(part, sizeof part, "-%05u-of-%05u.gguf", k + 1, count);
    std::unique_ptr<GgufFile> p(new GgufFile());
    p->name_ = prefix + part;
    p->map_ = MappedFile(p->name_);
    p->data_ = p->map_.data();
    p->size_ = p->map_.size();
    p->parse_all();
    if (p->get_u32_or("split.no", 0) != k || p->get_u32_or("split.count", 1) != count) {
      throw FormatError(p->name_ + ": split.no / split.count do not say part " + std::to_string(k + 1) + " of " +
                        std::to_string(count));
    }
    for (const TensorView& t : p->tensors_) {
      if (tensor_index_.count(t.name) != 0) throw FormatError(p->name_ + ": tensor " + t.name + " is in two parts");
      tensor_index_.emplace(t.name, tensors_.size());
      tensors_.push_back(t);
    }
    parts_.push_back(std::move(p));
  }
  if (has("split.tensors.count")) {
    const uint64_t want = get_u64("split.tensors.count");
    if (want != tensors_.size()) {
      throw FormatError(name_ + ": split.tensors.count says " + std::to_string(want) + " tensors, the " +
                        std::to_string(count) + " parts hold " + std::to_string(tensors_.size()));
    }
  }
}

std::unique_ptr<GgufFile> GgufFile::parse(const uint8_t* data, size_t size, const std::string& name) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->name_ = name;
  f->data_ = data;
  f->size_ = size;
  f->parse_all();
  return f;
}

void GgufFile::parse_all() {
  Cursor c(data_, size_, name_);
  if (size_ < 4) c.fail("not a GGUF file: only " + std::to_string(size_) + " bytes", 0);
  const uint32_t magic = c.read<uint32_t>("magic");
  if (magic != kMagic) c.fail("not a GGUF file: bad magic (expected \"GGUF\")", 0);
  version_ = c.read<uint32_t>("version");
  if (version_ != 2 && version_ != 3)
    c.fail("unsupported GGUF version " + std::to_string(version_) + " (supported: 2, 3)", 4);

  const size_t nt_at = c.pos();
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const size_t nkv_at = c.pos();
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  // Smallest encodings: a key/value is >= 8+0+4+1 bytes, a tensor info >= 8+4+8+4+8.
  if (n_kv > c.left() / 13)
    c.fail("metadata count " + std::to_string(n_kv) + " cannot fit in the file", nkv_at);
  if (n_tensors > c.left() / 32)
    c.fail("tensor count " + std::to_string(n_tensors) + " cannot fit in the file", nt_at);

  kv_.reserve(static_cast<size_t>(n_kv));
  for (uint64_t k = 0; k < n_kv; ++k) {
    const size_t key_at = c.pos();
    std::string key(c.read_string("metadata key"));
    if (key.empty()) c.fail("metadata #" + std::to_string(k) + ": empty key", key_at);
    if (kv_index_.count(key)) c.fail("duplicate metadata key '" + key + "'", key_at);
    const size_t type_at = c.pos();
    const uint32_t t = c.read<uint32_t>("metadata type");
    if (!gguf_type_is_valid(t))
      c.fail("metadata '" + key + "': unknown value type " + std::to_string(t), type_at);
    GgufValue v;
    read_value(c, static_cast<GgufType>(t), v, key, 0);
    kv_index_.emplace(key, kv_.size());
    kv_.emplace_back(std::move(key), std::move(v));
  }

  if (const GgufValue* a = find("general.alignment")) {
    if (a->type != GgufType::U32)
      c.fail(std::string("general.alignment: expected u32, found ") + gguf_type_name(a->type));
    if (a->u == 0 || (a->u & (a->u - 1)) != 0)
      c.fail("general.alignment " + std::to_string(a->u) + " is not a power of two");
    alignment_ = static_cast<uint32_t>(a->u);
  }

  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    const size_t info_at = c.pos();
    TensorView t;
    t.name = std::string(c.read_string("tensor name"));
    const std::string who = "tensor '" + t.name + "'";
    if (t.name.empty()) c.fail("tensor #" + std::to_string(k) + ": empty name", info_at);
    if (t.name.size() > kMaxTensorName) c.fail(who + ": name longer than 256 bytes", info_at);
    if (tensor_index_.count(t.name)) c.fail("duplicate " + who, info_at);
    const size_t dims_at = c.pos();
    const uint32_t n_dims = c.read<uint32_t>("tensor dimension count");
    if (n_dims < 1 || n_dims > 4)
      c.fail(who + ": " + std::to_string(n_dims) + " dimensions (supported: 1 to 4)", dims_at);
    t.n_dims = static_cast<int>(n_dims);
    uint64_t n_elem = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const size_t ne_at = c.pos();
      const uint64_t ne = c.read<uint64_t>("tensor dimension");
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          mul_overflows(n_elem, ne, n_elem) ||
          n_elem > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        c.fail(who + ": dimension " + std::to_string(d) + " = " + std::to_string(ne) +
                   " makes the element count overflow",
               ne_at);
      t.ne[d] = static_cast<int64_t>(ne);
    }
    const size_t type_at = c.pos();
    const uint32_t type_id = c.read<uint32_t>("tensor type");
    const auto info = tensor_type_info(type_id);
    if (!info) c.fail(who + ": unknown tensor type " + std::to_string(type_id), type_at);
    t.type = static_cast<TensorType>(type_id);
    if (t.ne[0] % info->block_size != 0)
      c.fail(who + ": row length " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                 info->name + " block size " + std::to_string(info->block_size),
             dims_at);
    uint64_t rows = static_cast<uint64_t>(t.ne[1]) * static_cast<uint64_t>(t.ne[2]);
    if (mul_overflows(rows, static_cast<uint64_t>(t.ne[3]), rows) ||
        mul_overflows(static_cast<uint64_t>(t.ne[0] / info->block_size) * info->block_bytes, rows,
                      t.nbytes))
      c.fail(who + ": byte size overflows", dims_at);
    const size_t off_at = c.pos();
    t.offset = c.read<uint64_t>("tensor offset");
    if (t.offset % alignment_ != 0)
      c.fail(who + ": data offset " + std::to_string(t.offset) + " is not aligned to " +
                 std::to_string(alignment_),
             off_at);
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t pad = (alignment_ - c.pos() % alignment_) % alignment_;
  data_offset_ = c.pos() + pad;
  if (!tensors_.empty() && data_offset_ > size_)
    c.fail("data section starts at byte " + std::to_string(data_offset_) + ", past the end of the file (" +
           std::to_string(size_) + " bytes)");
  for (auto& t : tensors_) {
    const uint64_t avail = size_ - data_offset_;
    if (t.offset > avail || t.nbytes > avail - t.offset) {
      std::ostringstream os;
      os << name_ << ": tensor '" << t.name << "' " << tensor_type_name(t.type) << " " << t.shape_string()
         << ": data [" << data_offset_ + t.offset << ", " << data_offset_ + t.offset + t.nbytes
         << ") runs past the end of the file (" << size_ << " bytes)";
      throw FormatError(os.str());
    }
    t.file_offset = data_offset_ + t.offset;
    t.data = data_ + t.file_offset;
    // The kernels read blocks and rows in place (f16 scales, f32 values): a tiny
    // general.alignment must not hand them misaligned data.
    if (reinterpret_cast<uintptr_t>(t.data) % kTensorDataAlignment != 0) {
      throw FormatError(name_ + ": tensor '" + t.name + "': data at byte " + std::to_string(t.file_offset) +
                        " is not aligned to " + std::to_string(kTensorDataAlignment) + " bytes (general.alignment " +
                        std::to_string(alignment_) + ")");
    }
  }
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(std::string(key));
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GgufValue& GgufFile::get(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) throw FormatError(name_ + ": missing metadata key '" + std::string(key) + "'");
  return *v;
}

void GgufFile::fail_key(std::string_view key, const char* expected, const GgufValue& v) const {
  std::string found = gguf_type_name(v.type);
  if (v.type == GgufType::ARRAY) found = std::string("array of ") + gguf_type_name(v.elem_type);
  throw FormatError(name_ + ": gguf: " + std::string(key) + ": expected " + expected + ", found " + found);
}

namespace {
// Integer value widened to a signed 128-bit-free representation: (negative?, magnitude).
bool int_value(const GgufValue& v, bool& negative, uint64_t& mag) {
  if (!v.is_integer()) return false;
  switch (v.type) {
    case GgufType::U8:
    case GgufType::U16:
    case GgufType::U32:
    case GgufType::U64:
      negative = false;
      mag = v.u;
      return true;
    default:
      negative = v.i < 0;
      mag = negative ? static_cast<uint64_t>(-(v.i + 1)) + 1 : static_cast<uint64_t>(v.i);
      return true;
  }
}
}  // namespace

uint32_t GgufFile::get_u32(std::string_view key) const {
  const GgufValue& v = get(key);
  bool neg = false;
  uint64_t mag = 0;
  if (!int_value(v, neg, mag)) fail_key(key, "u32", v);
  if (neg || mag > std::numeric_limits<uint32_t>::max())
    throw FormatError(name_ + ": gguf: " + std::string(key) + ": value " + v.to_string() +
                      " out of range for u32");
  return static_cast<uint32_t>(mag);
}

uint64_t GgufFile::get_u64(std::string_view key) const {
  const GgufValue& v = get(key);
  bool neg = false;
  uint64_t mag = 0;
  if (!int_value(v, neg, mag)) fail_key(key, "u64", v);
  if (neg) throw FormatError(name_ + ": gguf: " + std::string(key) + ": negative value " + v.to_string());
  return mag;
}

int64_t GgufFile::get_i64(std::string_view key) const {
  const GgufValue& v = get(key);
  bool neg = false;
  uint64_t mag = 0;
  if (!int_value(v, neg, mag)) fail_key(key, "i64", v);
  if (!neg && mag > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    throw FormatError(name_ + ": gguf: " + std::string(key) + ": value out of range for i64");
  return neg ? v.i : static_cast<int64_t>(mag);
}

float GgufFile::get_f32(std::string_view key) const {
  const GgufValue& v = get(key);
  if (!v.is_float()) fail_key(key, "f32", v);
  return static_cast<float>(v.f);
}

bool GgufFile::get_bool(std::string_view key) const {
  const GgufValue& v = get(key);
  if (v.type != GgufType::BOOL) fail_key(key, "bool", v);
  return v.u != 0;
}

std::string GgufFile::get_string(std::string_view key) const {
  const GgufValue& v = get(key);
  if (v.type != GgufType::STRING) fail_key(key, "string", v);
  return std::string(v.s);
}

const std::vector<std::string_view>& GgufFile::get_string_array(std::string_view key) const {
  const GgufValue& v = get(key);
  if (v.type != GgufType::ARRAY || v.elem_type != GgufType::STRING) fail_key(key, "array of string", v);
  return v.strings;
}

std::vector<float> GgufFile::get_f32_array(std::string_view key) const {
  const GgufValue& v = get(key);
  if (v.type != GgufType::ARRAY || gguf_scalar_size(v.elem_type) == 0) fail_key(key, "numeric array", v);
  std::vector<float> out(static_cast<size_t>(v.count));
  for (uint64_t k = 0; k < v.count; ++k) out[k] = static_cast<float>(v.array_as_double(k));
  return out;
}

std::vector<int32_t> GgufFile::get_i32_array(std::string_view key) const {
  const GgufValue& v = get(key);
  if (v.type != GgufType::ARRAY || gguf_scalar_size(v.elem_type) == 0 || v.elem_type == GgufType::F32 ||
      v.elem_type == GgufType::F64)
    fail_key(key, "integer array", v);
  std::vector<int32_t> out(static_cast<size_t>(v.count));
  for (uint64_t k = 0; k < v.count; ++k) {
    const int64_t x = v.array_as_int(k);
    if (x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max() ||
        (v.elem_type == GgufType::U64 && x < 0))
      throw FormatError(name_ + ": gguf: " + std::string(key) + "[" + std::to_string(k) +
                        "]: value out of range for i32");
    out[k] = static_cast<int32_t>(x);
  }
  return out;
}

uint32_t GgufFile::get_u32_or(std::string_view key, uint32_t fallback) const {
  return has(key) ? get_u32(key) : fallback;
}
float GgufFile::get_f32_or(std::string_view key, float fallback) const {
  return has(key) ? get_f32(key) : fallback;
}
bool GgufFile::get_bool_or(std::string_view key, bool fallback) const {
  return has(key) ? get_bool(key) : fallback;
}
std::string GgufFile::get_string_or(std::string_view key, const std::string& fallback) const {
  return has(key) ? get_string(key) : fallback;
}

const TensorView* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorView& GgufFile::tensor(std::string_view name) const {
  const TensorView* t = find_tensor(name);
  if (!t) throw FormatError(name_ + ": missing tensor '" + std::string(name) + "'");
  return *t;
}

}  // namespace pipellm
