// The shipped default model on the GPU against PyTorch (tests/data/default-model-ref, computed by
// tools/pytorch_reference.py from the exact weights the Q8_0 file holds). `pipellm eval --device
// cuda` runs each prompt followed by PyTorch's 64-token greedy continuation in one batch
// (teacher forcing), so every step is checked at PyTorch's own context: the logits at the prompt
// positions within 1e-2 relative RMS (the CPU engine's bound for this file), and the argmax equal
// to PyTorch's greedy token at every step whose top-1/top-2 gap is at least 0.05 (the GPU's 8-bit
// activations in the products may flip nearer ties).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/model_test_util.h"

namespace pipellm {
namespace {

TEST(CudaDefaultModel, TeacherForcedAgainstPyTorch) {
  PIPELLM_REQUIRE_GPU();
  const std::string src = PIPELLM_SOURCE_DIR;
  std::ifstream in(src + "/tests/data/default-model-ref/reference.json");
  ASSERT_TRUE(in) << "no reference.json";
  const auto ref = nlohmann::json::parse(in);
  const int V = ref.at("n_vocab").get<int>();
  const auto ref_logits = test::read_f32(src + "/tests/data/default-model-ref/logits.f32");
  const auto tmp = std::filesystem::temp_directory_path() / ("pipellm_dm_" + std::to_string(::getpid()));
  size_t logit_row = 0, checked = 0, agreed = 0;
  double worst_rms = 0;
  for (const auto& p : ref.at("prompts")) {
    const auto ids = p.at("ids").get<std::vector<int32_t>>();
    const auto greedy = p.at("greedy").get<std::vector<int32_t>>();
    const auto gaps = p.at("gaps").get<std::vector<double>>();
    {
      std::ofstream f(tmp.string() + ".ids");
      for (int32_t t : ids) f << t << ' ';
      for (int32_t t : greedy) f << t << ' ';
    }
    const std::string cmd = std::string(PIPELLM_CLI_PATH) + " eval --device cuda -m " + src +
                            "/models/default.gguf --ids-file " + tmp.string() + ".ids --logits " + tmp.string() +
                            ".f32 2>/dev/null";
    const int status = std::system(cmd.c_str());
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd;
    const auto got = test::read_f32(tmp.string() + ".f32");
    ASSERT_EQ(got.size(), (ids.size() + greedy.size()) * static_cast<size_t>(V));
    for (size_t i = 0; i < ids.size(); ++i, ++logit_row) {
      const double r = test::rel_rms(got.data() + i * V, ref_logits.data() + logit_row * V, static_cast<size_t>(V));
      worst_rms = std::max(worst_rms, r);
      EXPECT_LT(r, 1e-2) << p.at("prompt") << " position " << i;
    }
    for (size_t k = 0; k < greedy.size(); ++k) {
      if (gaps[k] < 0.05) continue;
      ++checked;
      const int am = test::argmax(got.data() + (ids.size() - 1 + k) * V, static_cast<size_t>(V));
      agreed += am == greedy[k];
      EXPECT_EQ(am, greedy[k]) << p.at("prompt") << " step " << k << " (PyTorch gap " << gaps[k] << ")";
    }
  }
  std::filesystem::remove(tmp.string() + ".ids");
  std::filesystem::remove(tmp.string() + ".f32");
  std::printf("[ default model ] CUDA vs PyTorch: worst prompt-position rel RMS %.2e; greedy argmax %zu/%zu at gaps >= 0.05\n",
              worst_rms, agreed, checked);
}

}  // namespace
}  // namespace pipellm
