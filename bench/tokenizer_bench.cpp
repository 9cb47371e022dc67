// Tokenizer throughput: ~10 MB of mixed English and code (built from the fixture corpus texts),
// encoded single-threaded with each real vocabulary. Prints a table and one JSON line.
//   pipellm_tokenizer_bench [--testdata DIR] [--mb N] [--reps R]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "engine/tokenizer/tokenizer.h"

namespace {

// Texts of the corpus that are (nearly) ASCII: the English and code lines.
std::vector<std::string> corpus_texts(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string all = ss.str();
  std::vector<std::string> texts;
  for (size_t start = 0; start < all.size();) {
    size_t end = all.find('\n', start);
    if (end == std::string::npos) end = all.size();
    if (end > start) {
      const auto j = nlohmann::json::parse(all.substr(start, end - start));
      const std::string t = j.at("text").get<std::string>();
      const auto ascii = std::count_if(t.begin(), t.end(), [](char c) { return static_cast<unsigned char>(c) < 128; });
      if (!j.at("add_special").get<bool>() && !j.at("parse_special").get<bool>() && t.size() >= 8 &&
          ascii * 100 >= static_cast<long>(t.size()) * 98) {
        texts.push_back(t);
      }
    }
    start = end + 1;
  }
  return texts;
}

std::string build_text(const std::vector<std::string>& texts, size_t bytes) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<size_t> pick(0, texts.size() - 1);
  std::string out;
  out.reserve(bytes + 4096);
  while (out.size() < bytes) {
    out += texts[pick(rng)];
    out += '\n';
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = PIPELLM_BENCH_TESTDATA;
  double mb = 10.0;
  int reps = 3;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--testdata") && i + 1 < argc) dir = argv[++i];
    else if (!std::strcmp(argv[i], "--mb") && i + 1 < argc) mb = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--testdata DIR] [--mb N] [--reps R]\n", argv[0]);
      return 2;
    }
  }
  try {
    const std::string text = build_text(corpus_texts(dir + "/tokenizer/llama3.jsonl"), static_cast<size_t>(mb * 1e6));
    const char* vocabs[][2] = {{"llama3", "vocab/vocab-llama3.gguf"},
                               {"qwen3", "vocab/vocab-qwen3.gguf"},
                               {"llama2", "vocab/vocab-llama2.gguf"}};
    nlohmann::json results = nlohmann::json::object();
    std::printf("%-8s %10s %12s %10s %10s\n", "vocab", "MB", "tokens", "best_s", "MB/s");
    for (const auto& v : vocabs) {
      auto f = pipellm::GgufFile::open(dir + "/" + v[1]);
      const auto t0 = std::chrono::steady_clock::now();
      auto tok = pipellm::Tokenizer::from_gguf(*f);
      const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      double best = 1e30;
      size_t n_tokens = 0;
      for (int r = 0; r < reps; ++r) {
        const auto a = std::chrono::steady_clock::now();
        n_tokens = tok->encode(text, false, false).size();
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
      }
      const double mbs = static_cast<double>(text.size()) / 1e6 / best;
      std::printf("%-8s %10.2f %12zu %10.3f %10.2f\n", v[0], text.size() / 1e6, n_tokens, best, mbs);
      results[v[0]] = {{"mb_per_s", mbs}, {"tokens", n_tokens}, {"seconds", best}, {"load_seconds", load_s}};
    }
    results["bytes"] = text.size();
    std::printf("%s\n", results.dump().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenizer_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
