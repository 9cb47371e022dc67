// GGUF reader: valid files parse to the values written; every malformed-file case gives a
// FormatError naming the file, the field or tensor and the byte offset; nothing crashes.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/gguf/gguf_file.h"
#include "engine/gguf/gguf_writer.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

// A hand encoder of GGUF bytes, independent of GgufWriter, so malformed files can be built.
struct Bytes {
  std::vector<uint8_t> b;
  template <typename T>
  Bytes& put(T v) {
    const size_t at = b.size();
    b.resize(at + sizeof(T));
    std::memcpy(b.data() + at, &v, sizeof(T));
    return *this;
  }
  Bytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    return put<uint32_t>(0x46554747u).put(version).put(n_tensors).put(n_kv);
  }
  Bytes& pad_to(size_t align) {
    b.resize((b.size() + align - 1) / align * align, 0);
    return *this;
  }
};

// One F32 tensor "w" of shape [4, 2] with an optional tweak of its info fields.
Bytes one_tensor_file(uint32_t n_dims = 2, uint32_t type = 0, uint64_t offset = 0, uint64_t ne0 = 4,
                      size_t data_bytes = 32) {
  Bytes f;
  f.header(3, 1, 1).str("general.architecture").put<uint32_t>(8).str("llama");
  f.str("w").put<uint32_t>(n_dims);
  for (uint32_t d = 0; d < n_dims; ++d) f.put<uint64_t>(d == 0 ? ne0 : 2);
  f.put<uint32_t>(type).put<uint64_t>(offset);
  f.pad_to(32);
  for (size_t k = 0; k < data_bytes / 4; ++k) f.put<float>(static_cast<float>(k));
  return f;
}

std::string parse_error(const std::vector<uint8_t>& bytes) {
  try {
    GgufFile::parse(bytes.data(), bytes.size(), "bad.gguf");
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

void expect_error(const std::vector<uint8_t>& bytes, const std::string& needle) {
  const std::string msg = parse_error(bytes);
  EXPECT_NE(msg, "") << "expected an error containing '" << needle << "'";
  EXPECT_NE(msg.find("bad.gguf"), std::string::npos) << msg;
  EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg;
}

TEST(GgufFile, ParsesHandEncodedFile) {
  Bytes f = one_tensor_file();
  auto g = GgufFile::parse(f.b.data(), f.b.size(), "ok.gguf");
  EXPECT_EQ(g->version(), 3u);
  EXPECT_EQ(g->get_string("general.architecture"), "llama");
  ASSERT_EQ(g->tensors().size(), 1u);
  const TensorView& t = g->tensor("w");
  EXPECT_EQ(t.n_dims, 2);
  EXPECT_EQ(t.ne[0], 4);
  EXPECT_EQ(t.ne[1], 2);
  EXPECT_EQ(t.nbytes, 32u);
  EXPECT_EQ(t.file_offset % 32, 0u);
  float v;
  std::memcpy(&v, t.data + 5 * 4, 4);
  EXPECT_EQ(v, 5.0f);
}

TEST(GgufFile, VersionTwoAccepted) {
  Bytes f;
  f.header(2, 0, 1).str("k").put<uint32_t>(4).put<uint32_t>(7);
  auto g = GgufFile::parse(f.b.data(), f.b.size(), "v2.gguf");
  EXPECT_EQ(g->get_u32("k"), 7u);
}

TEST(GgufFile, WriterRoundTripsEveryValueType) {
  GgufWriter w(64);
  w.set_u8("u8", 200);
  w.set_u32("u32", 4000000000u);
  w.set_i32("i32", -5);
  w.set_u64("u64", 1ull << 40);
  w.set_f32("f32", 1.5f);
  w.set_bool("b", true);
  w.set_string("s", "héllo");
  w.set_string_array("sa", {"a", "", "ccc"});
  w.set_f32_array("fa", {1.0f, -2.5f});
  w.set_i32_array("ia", {3, -4, 5});
  // A nested array (array of arrays of i32), built by hand.
  Bytes inner;
  inner.put<uint32_t>(9).put<uint64_t>(2);
  inner.put<uint32_t>(5).put<uint64_t>(2).put<int32_t>(1).put<int32_t>(2);
  inner.put<uint32_t>(5).put<uint64_t>(1).put<int32_t>(3);
  Bytes nested;
  nested.header(3, 0, 1).str("nested").put<uint32_t>(9);
  nested.b.insert(nested.b.end(), inner.b.begin(), inner.b.end());
  auto ng = GgufFile::parse(nested.b.data(), nested.b.size(), "nested.gguf");
  w.set_value("nested", ng->get("nested"));
  std::vector<float> data(64);
  for (size_t k = 0; k < data.size(); ++k) data[k] = static_cast<float>(k) * 0.5f;
  w.add_tensor("t0", TensorType::F32, {32, 2}, data.data());
  w.add_tensor("t1", TensorType::F32, {3}, data.data());

  const auto bytes = w.write_to_memory();
  auto g = GgufFile::parse(bytes.data(), bytes.size(), "rt.gguf");
  EXPECT_EQ(g->alignment(), 64u);
  EXPECT_EQ(g->get_u32("u8"), 200u);
  EXPECT_EQ(g->get_u32("u32"), 4000000000u);
  EXPECT_EQ(g->get_i64("i32"), -5);
  EXPECT_EQ(g->get_u64("u64"), 1ull << 40);
  EXPECT_EQ(g->get_f32("f32"), 1.5f);
  EXPECT_TRUE(g->get_bool("b"));
  EXPECT_EQ(g->get_string("s"), "héllo");
  const auto& sa = g->get_string_array("sa");
  ASSERT_EQ(sa.size(), 3u);
  EXPECT_EQ(sa[2], "ccc");
  EXPECT_EQ(g->get_f32_array("fa"), (std::vector<float>{1.0f, -2.5f}));
  EXPECT_EQ(g->get_i32_array("ia"), (std::vector<int32_t>{3, -4, 5}));
  const GgufValue& n = g->get("nested");
  ASSERT_EQ(n.elem_type, GgufType::ARRAY);
  ASSERT_EQ(n.items.size(), 2u);
  EXPECT_EQ(n.items[0].array_as_int(1), 2);
  EXPECT_EQ(n.items[1].array_as_int(0), 3);
  const TensorView& t1 = g->tensor("t1");
  EXPECT_EQ(t1.offset % 64, 0u);
  float v;
  std::memcpy(&v, t1.data + 8, 4);
  EXPECT_EQ(v, 1.0f);
}

TEST(GgufFile, TypedAccessorErrorsNameKeyAndTypes) {
  GgufWriter w;
  w.set_string("llama.attention.head_count", "eight");
  w.set_i32("neg", -1);
  const auto bytes = w.write_to_memory();
  auto g = GgufFile::parse(bytes.data(), bytes.size(), "m.gguf");
  try {
    g->get_u32("llama.attention.head_count");
    FAIL() << "no error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("gguf: llama.attention.head_count: expected u32, found string"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(g->get_u32("neg"), FormatError);
  try {
    g->get_u32("missing.key");
    FAIL() << "no error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("missing metadata key 'missing.key'"), std::string::npos);
  }
  EXPECT_EQ(g->get_u32_or("missing.key", 9), 9u);
}

TEST(GgufFile, MalformedFilesGiveNamedErrors) {
  expect_error({}, "not a GGUF file");
  expect_error({'G', 'G', 'U', 'X', 3, 0, 0, 0}, "bad magic");
  expect_error(Bytes().header(1, 0, 0).b, "unsupported GGUF version 1");
  expect_error(Bytes().header(4, 0, 0).b, "unsupported GGUF version 4");
  expect_error(Bytes().put<uint32_t>(0x46554747u).put<uint32_t>(3).b, "truncated tensor count");
  // Counts that cannot fit are refused before any allocation.
  expect_error(Bytes().header(3, 0, 1ull << 60).b, "metadata count");
  expect_error(Bytes().header(3, 1ull << 60, 0).b, "tensor count");
  // Absurd string length in a key.
  expect_error(Bytes().header(3, 0, 1).put<uint64_t>(~0ull).put<uint64_t>(0).b, "string length 18446744073709551615");
  // Unknown value type.
  expect_error(Bytes().header(3, 0, 1).str("k").put<uint32_t>(99).b, "metadata 'k': unknown value type 99");
  // Absurd array count.
  expect_error(Bytes().header(3, 0, 1).str("arr").put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(1ull << 62).b,
               "metadata 'arr': array of 4611686018427387904 u32 cannot fit");
  // Unknown array element type.
  expect_error(Bytes().header(3, 0, 1).str("arr").put<uint32_t>(9).put<uint32_t>(77).put<uint64_t>(1).b,
               "unknown array element type 77");
  // Arrays nested too deeply.
  Bytes deep;
  deep.header(3, 0, 1).str("deep").put<uint32_t>(9);
  for (int d = 0; d < 20; ++d) deep.put<uint32_t>(9).put<uint64_t>(1);
  expect_error(deep.b, "nested deeper than 8");
  // Duplicate key.
  expect_error(Bytes().header(3, 0, 2).str("k").put<uint32_t>(4).put<uint32_t>(1).str("k").put<uint32_t>(4)
                   .put<uint32_t>(2).b,
               "duplicate metadata key 'k'");
  // Bool that is neither 0 nor 1.
  expect_error(Bytes().header(3, 0, 1).str("b").put<uint32_t>(7).put<uint8_t>(5).b, "bool value 5");
  // Bad alignment.
  expect_error(Bytes().header(3, 0, 1).str("general.alignment").put<uint32_t>(4).put<uint32_t>(48).b,
               "general.alignment 48 is not a power of two");
  expect_error(Bytes().header(3, 0, 1).str("general.alignment").put<uint32_t>(8).str("x").b,
               "general.alignment: expected u32, found string");
  // Tensor info problems.
  expect_error(one_tensor_file(5).b, "tensor 'w': 5 dimensions");
  expect_error(one_tensor_file(0).b, "tensor 'w': 0 dimensions");
  expect_error(one_tensor_file(2, 99).b, "tensor 'w': unknown tensor type 99");
  expect_error(one_tensor_file(2, 0, 7).b, "tensor 'w': data offset 7 is not aligned to 32");
  expect_error(one_tensor_file(2, 0, 4096).b, "runs past the end of the file");
  expect_error(one_tensor_file(2, 0, 0, 4, 16).b, "runs past the end of the file");
  expect_error(one_tensor_file(2, 8 /*Q8_0*/, 0, 4).b, "row length 4 is not a multiple of the Q8_0 block size 32");
  expect_error(one_tensor_file(2, 0, 0, 1ull << 62).b, "overflow");
  expect_error(one_tensor_file(2, 0, 0, ~0ull).b, "overflow");
  // Duplicate tensor name.
  Bytes dup;
  dup.header(3, 2, 0);
  for (int k = 0; k < 2; ++k) dup.str("w").put<uint32_t>(1).put<uint64_t>(8).put<uint32_t>(0).put<uint64_t>(0);
  dup.pad_to(32);
  dup.b.resize(dup.b.size() + 32, 0);
  expect_error(dup.b, "duplicate tensor 'w'");
}

TEST(GgufFile, ErrorsCarryByteOffsets) {
  const std::string msg = parse_error(one_tensor_file(2, 99).b);
  // The type field of the first tensor info sits after header(24) + kv + name + dims.
  const size_t kv = 8 + 20 + 4 + 8 + 5;
  const size_t type_at = 24 + kv + 8 + 1 + 4 + 16;
  EXPECT_NE(msg.find("byte " + std::to_string(type_at)), std::string::npos) << msg;
}

TEST(GgufFile, EveryTruncationOfAValidFileFailsCleanly) {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string_array("tokenizer.ggml.tokens", {"a", "b", "c"});
  w.set_f32_array("scores", {0.f, 1.f, 2.f});
  std::vector<float> data(64, 1.0f);
  w.add_tensor("t", TensorType::F32, {64}, data.data());
  const auto full = w.write_to_memory();
  ASSERT_NO_THROW(GgufFile::parse(full.data(), full.size(), "full.gguf"));
  for (size_t n = 0; n < full.size(); ++n) {
    std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(GgufFile::parse(cut.data(), cut.size(), "cut.gguf"), FormatError) << "prefix " << n;
  }
}

TEST(GgufFile, OpensFixtureModelsZeroCopy) {
  auto g = GgufFile::open(test::model_path("tiny-llama-Q4_K_M"));
  EXPECT_EQ(g->get_string("general.architecture"), "llama");
  EXPECT_EQ(g->get_u32("llama.block_count"), 2u);
  EXPECT_EQ(g->get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(g->get_string_array("tokenizer.ggml.tokens").size(), 1024u);
  const TensorView& emb = g->tensor("token_embd.weight");
  EXPECT_EQ(emb.ne[0], 256);
  EXPECT_EQ(emb.ne[1], 1024);
  for (const auto& t : g->tensors()) EXPECT_LE(t.file_offset + t.nbytes, g->file_size()) << t.name;
  EXPECT_THROW(g->tensor("no.such.tensor"), FormatError);
}

// With general.alignment 1 a tensor can start at an odd byte; the kernels read blocks in place,
// so the reader refuses it by name (found by the fuzzer: misaligned block reads are UB).
TEST(GgufFile, MisalignedTensorDataIsRefused) {
  GgufWriter w(1);
  const std::vector<uint8_t> one(1, 7);
  const std::vector<float> data(2, 1.0f);
  w.add_tensor("byte", TensorType::I8, {1}, one.data());
  w.add_tensor("floats", TensorType::F32, {2}, data.data());
  const auto bytes = w.write_to_memory();
  try {
    GgufFile::parse(bytes.data(), bytes.size(), "odd.gguf");
    FAIL() << "expected an error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("is not aligned to 4 bytes (general.alignment 1)"), std::string::npos)
        << e.what();
  }
}

TEST(GgufFile, MissingFileIsAnErrorNamingThePath) {
  try {
    GgufFile::open("/nonexistent/model.gguf");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.gguf"), std::string::npos);
  }
}

}  // namespace
}  // namespace pipellm
