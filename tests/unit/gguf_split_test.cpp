// Split GGUF files (llama.cpp's gguf-split: NAME-00001-of-0000N.gguf): a fixture model cut into
// three parts opens from its first part and computes the same logits as the whole file; wrong
// entry points and missing or inconsistent parts are named.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/cpu/cpu_model.h"
#include "engine/gguf/gguf_file.h"
#include "engine/gguf/gguf_writer.h"
#include "tests/unit/model_test_util.h"

namespace pipellm {
namespace {

namespace fs = std::filesystem;

// Writes `src` as `count` parts under dir/NAME-0000k-of-0000N.gguf (tensors dealt in order,
// metadata in the first part, split.* keys in all) as gguf-split does; returns the part paths.
std::vector<std::string> write_split(const GgufFile& src, const fs::path& dir, uint32_t count) {
  std::vector<std::string> paths;
  const size_t n = src.tensors().size(), per = (n + count - 1) / count;
  for (uint32_t k = 0; k < count; ++k) {
    GgufWriter w;
    if (k == 0) {
      for (const auto& [key, value] : src.metadata()) w.set_value(key, value);
    }
    w.set_u32("split.no", k);
    w.set_u32("split.count", count);
    w.set_i32("split.tensors.count", static_cast<int32_t>(n));
    for (size_t i = k * per; i < std::min(n, (k + 1) * per); ++i) {
      const TensorView& t = src.tensors()[i];
      w.add_tensor(t.name, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims), t.data);
    }
    char name[64];
    std::snprintf(name, sizeof name, "model-%05u-of-%05u.gguf", k + 1, count);
    paths.push_back((dir / name).string());
    w.write(paths.back());
  }
  return paths;
}

class GgufSplit : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("pipellm-split-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(GgufSplit, ThreePartsGiveTheWholeFilesLogits) {
  const std::string whole = test::model_path("tiny-llama-Q8_0");
  auto src = GgufFile::open(whole);
  const auto parts = write_split(*src, dir_, 3);
  auto f = GgufFile::open(parts[0]);
  EXPECT_EQ(f->n_parts(), 3);
  EXPECT_EQ(f->tensors().size(), src->tensors().size());
  EXPECT_NE(f->find_tensor(src->tensors().back().name), nullptr);

  CpuModelOptions opt;
  opt.n_threads = 2;
  opt.stage.n_ctx = 64;
  auto a = CpuModel::open(whole, opt), b = CpuModel::open(parts[0], opt);
  const auto tokens = test::read_ids(test::testdata("ref/tiny-llama-Q8_0.tokens"));
  std::vector<float> la, lb;
  a->stage().forward(Batch::sequence(tokens, 0, 0, true), la);
  b->stage().forward(Batch::sequence(tokens, 0, 0, true), lb);
  EXPECT_EQ(la, lb);
}

TEST_F(GgufSplit, WrongPartAndMissingPartsAreNamed) {
  auto src = GgufFile::open(test::model_path("tiny-llama-Q8_0"));
  const auto parts = write_split(*src, dir_, 3);
  try {
    GgufFile::open(parts[1]);
    FAIL() << "expected an error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("open the first part"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model-00001-of-00003.gguf"), std::string::npos) << e.what();
  }
  fs::remove(parts[2]);
  EXPECT_THROW(GgufFile::open(parts[0]), Error);
  // A renamed first part cannot find its siblings: the naming rule is named.
  const std::string renamed = (dir_ / "renamed.gguf").string();
  fs::copy_file(parts[0], renamed);
  try {
    GgufFile::open(renamed);
    FAIL() << "expected an error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("gguf-split naming"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pipellm
