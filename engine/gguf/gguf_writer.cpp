#include "engine/gguf/gguf_writer.h"

#include <cstdio>
#include <cstring>
#include <memory>

#include "base/error.h"

namespace pipellm {
namespace {

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));
}

void put_string(std::vector<uint8_t>& out, std::string_view s) {
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

void encode_array_body(std::vector<uint8_t>& out, const GgufValue& v) {
  put<uint32_t>(out, static_cast<uint32_t>(v.elem_type));
  put<uint64_t>(out, v.count);
  if (v.elem_type == GgufType::STRING) {
    for (auto s : v.strings) put_string(out, s);
  } else if (v.elem_type == GgufType::ARRAY) {
    for (const auto& item : v.items) encode_array_body(out, item);
  } else {
    const size_t n = static_cast<size_t>(v.count) * gguf_scalar_size(v.elem_type);
    out.insert(out.end(), v.raw, v.raw + n);
  }
}

}  // namespace

GgufWriter::GgufWriter(uint32_t alignment) : alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    throw InvalidArgument("gguf writer: alignment " + std::to_string(alignment) + " is not a power of two");
  if (alignment != 32) set_u32("general.alignment", alignment);
}

void GgufWriter::set_raw(const std::string& key, GgufType type, std::vector<uint8_t> bytes) {
  std::vector<uint8_t> enc;
  put<uint32_t>(enc, static_cast<uint32_t>(type));
  enc.insert(enc.end(), bytes.begin(), bytes.end());
  for (auto& kv : kv_) {
    if (kv.first == key) {
      kv.second = std::move(enc);
      return;
    }
  }
  kv_.emplace_back(key, std::move(enc));
}

void GgufWriter::set_u8(const std::string& key, uint8_t v) { set_raw(key, GgufType::U8, {v}); }
void GgufWriter::set_u32(const std::string& key, uint32_t v) {
  std::vector<uint8_t> b;
  put(b, v);
  set_raw(key, GgufType::U32, std::move(b));
}
void GgufWriter::set_i32(const std::string& key, int32_t v) {
  std::vector<uint8_t> b;
  put(b, v);
  set_raw(key, GgufType::I32, std::move(b));
}
void GgufWriter::set_u64(const std::string& key, uint64_t v) {
  std::vector<uint8_t> b;
  put(b, v);
  set_raw(key, GgufType::U64, std::move(b));
}
void GgufWriter::set_f32(const std::string& key, float v) {
  std::vector<uint8_t> b;
  put(b, v);
  set_raw(key, GgufType::F32, std::move(b));
}
void GgufWriter::set_bool(const std::string& key, bool v) {
  set_raw(key, GgufType::BOOL, {static_cast<uint8_t>(v ? 1 : 0)});
}
void GgufWriter::set_string(const std::string& key, std::string_view v) {
  std::vector<uint8_t> b;
  put_string(b, v);
  set_raw(key, GgufType::STRING, std::move(b));
}
void GgufWriter::set_string_array(const std::string& key, const std::vector<std::string>& v) {
  std::vector<uint8_t> b;
  put<uint32_t>(b, static_cast<uint32_t>(GgufType::STRING));
  put<uint64_t>(b, v.size());
  for (const auto& s : v) put_string(b, s);
  set_raw(key, GgufType::ARRAY, std::move(b));
}
void GgufWriter::set_f32_array(const std::string& key, const std::vector<float>& v) {
  std::vector<uint8_t> b;
  put<uint32_t>(b, static_cast<uint32_t>(GgufType::F32));
  put<uint64_t>(b, v.size());
  for (float x : v) put(b, x);
  set_raw(key, GgufType::ARRAY, std::move(b));
}
void GgufWriter::set_i32_array(const std::string& key, const std::vector<int32_t>& v) {
  std::vector<uint8_t> b;
  put<uint32_t>(b, static_cast<uint32_t>(GgufType::I32));
  put<uint64_t>(b, v.size());
  for (int32_t x : v) put(b, x);
  set_raw(key, GgufType::ARRAY, std::move(b));
}

void GgufWriter::set_value(const std::string& key, const GgufValue& v) {
  std::vector<uint8_t> b;
  switch (v.type) {
    case GgufType::U8:
    case GgufType::BOOL: put<uint8_t>(b, static_cast<uint8_t>(v.u)); break;
    case GgufType::I8: put<int8_t>(b, static_cast<int8_t>(v.i)); break;
    case GgufType::U16: put<uint16_t>(b, static_cast<uint16_t>(v.u)); break;
    case GgufType::I16: put<int16_t>(b, static_cast<int16_t>(v.i)); break;
    case GgufType::U32: put<uint32_t>(b, static_cast<uint32_t>(v.u)); break;
    case GgufType::I32: put<int32_t>(b, static_cast<int32_t>(v.i)); break;
    case GgufType::U64: put<uint64_t>(b, v.u); break;
    case GgufType::I64: put<int64_t>(b, v.i); break;
    case GgufType::F32: put<float>(b, static_cast<float>(v.f)); break;
    case GgufType::F64: put<double>(b, v.f); break;
    case GgufType::STRING: put_string(b, v.s); break;
    case GgufType::ARRAY: encode_array_body(b, v); break;
  }
  set_raw(key, v.type, std::move(b));
}

void GgufWriter::add_tensor(const std::string& name, TensorType type, const std::vector<int64_t>& ne,
                            const void* data) {
  add_tensor(name, type, ne, [data](uint8_t* dst, size_t n) { std::memcpy(dst, data, n); });
}

void GgufWriter::add_tensor(const std::string& name, TensorType type, const std::vector<int64_t>& ne,
                            TensorFill fill) {
  if (ne.empty() || ne.size() > 4)
    throw InvalidArgument("gguf writer: tensor '" + name + "' needs 1 to 4 dimensions");
  for (const auto& t : tensors_)
    if (t.name == name) throw InvalidArgument("gguf writer: duplicate tensor '" + name + "'");
  uint64_t rows = 1;
  for (size_t d = 1; d < ne.size(); ++d) rows *= static_cast<uint64_t>(ne[d]);
  const uint64_t nbytes = tensor_row_bytes(type, ne[0]) * rows;
  tensors_.push_back({name, type, ne, nbytes, std::move(fill)});
}

std::vector<uint8_t> GgufWriter::header() const {
  std::vector<uint8_t> h;
  put<uint32_t>(h, 0x46554747u);
  put<uint32_t>(h, 3);
  put<uint64_t>(h, tensors_.size());
  put<uint64_t>(h, kv_.size());
  for (const auto& kv : kv_) {
    put_string(h, kv.first);
    h.insert(h.end(), kv.second.begin(), kv.second.end());
  }
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    put_string(h, t.name);
    put<uint32_t>(h, static_cast<uint32_t>(t.ne.size()));
    for (int64_t n : t.ne) put<uint64_t>(h, static_cast<uint64_t>(n));
    put<uint32_t>(h, static_cast<uint32_t>(t.type));
    put<uint64_t>(h, offset);
    offset += (t.nbytes + alignment_ - 1) / alignment_ * alignment_;
  }
  h.resize((h.size() + alignment_ - 1) / alignment_ * alignment_, 0);
  return h;
}

template <typename Sink>
void GgufWriter::emit(Sink& sink) const {
  const auto h = header();
  sink(h.data(), h.size());
  std::vector<uint8_t> buf;
  for (const auto& t : tensors_) {
    const uint64_t padded = (t.nbytes + alignment_ - 1) / alignment_ * alignment_;
    buf.assign(static_cast<size_t>(padded), 0);
    t.fill(buf.data(), static_cast<size_t>(t.nbytes));
    sink(buf.data(), buf.size());
  }
}

std::vector<uint8_t> GgufWriter::write_to_memory() const {
  std::vector<uint8_t> out;
  auto sink = [&out](const uint8_t* p, size_t n) { out.insert(out.end(), p, p + n); };
  emit(sink);
  return out;
}

void GgufWriter::write(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  struct FileCloser {
    void operator()(FILE* f) const { std::fclose(f); }
  };
  std::unique_ptr<FILE, FileCloser> f(std::fopen(tmp.c_str(), "wb"));
  if (!f) throw Error(tmp + ": cannot open for writing");
  auto sink = [&](const uint8_t* p, size_t n) {
    if (std::fwrite(p, 1, n, f.get()) != n) {
      std::remove(tmp.c_str());
      throw Error(tmp + ": write failed (disk full?)");
    }
  };
  try {
    emit(sink);
  } catch (...) {
    f.reset();
    std::remove(tmp.c_str());
    throw;
  }
  if (std::fclose(f.release()) != 0) {
    std::remove(tmp.c_str());
    throw Error(tmp + ": close failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot rename the finished file into place");
  }
}

}  // namespace pipellm
