// A CUDA tail's host-sampled sequences (engine/cuda/host_sampled_rows.h): grammars, top_logprobs
// alternatives and filter orders the GPU sampler lacks sample with the host Sampler on the rows
// of the stage's own logits.
// - Exactly: beside device-sampled slots, in eager (prefill) and graph-replayed decode steps, each
//   host-sampled row's token, logprob and alternatives equal a host Sampler's on that row.
// - Against the CPU stage on the same model: the same greedy ids under a grammar, outputs that
//   the grammar accepts for seeded sampling at temperature 1, top_logprobs within a tolerance.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "engine/cpu/cpu_model.h"
#include "engine/cuda/cuda_model.h"
#include "engine/runtime/generator.h"
#include "engine/runtime/grammar/gbnf_parser.h"
#include "engine/runtime/grammar/grammar_matcher.h"
#include "engine/runtime/grammar/json_schema.h"
#include "engine/runtime/grammar/token_vocabulary.h"
#include "engine/runtime/sampler.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/model_test_util.h"

namespace pipellm {
namespace {

using Vocab = std::shared_ptr<const grammar::TokenVocabulary>;

constexpr int kCtx = 256;

std::unique_ptr<cuda::CudaModel> open_cuda(const std::string& name, int n_slots, bool graphs) {
  cuda::CudaStageOptions opt;
  opt.n_ctx = kCtx;
  opt.n_slots = n_slots;
  opt.max_batch_tokens = 64;
  opt.use_graphs = graphs;
  return cuda::CudaModel::open(test::model_path(name), opt);
}

std::unique_ptr<CpuModel> open_cpu(const std::string& name) {
  CpuModelOptions opt;
  opt.n_threads = 4;
  opt.stage.n_ctx = kCtx;
  return CpuModel::open(test::model_path(name), opt);
}

Vocab vocab_of(const GgufFile& f) { return grammar::TokenVocabulary::from_tokenizer(*Tokenizer::from_gguf(f)); }

// A bounded JSON object: every output must end (the grammar then allows only end-of-generation).
const char* kObjectSchema =
    R"({"type":"object","properties":{"name":{"type":"string","maxLength":6},"age":{"type":"integer","minimum":0,"maximum":120}},
        "required":["name","age"],"additionalProperties":false})";

std::string object_gbnf() { return grammar::json_schema_to_gbnf(nlohmann::ordered_json::parse(kObjectSchema)); }

// Whether the ids spell a whole sentence of the grammar: each one accepted, and it may end there.
bool spells(const std::string& gbnf, const Vocab& v, const std::vector<int32_t>& ids) {
  grammar::GrammarMatcher m(std::make_shared<const grammar::Grammar>(grammar::parse_gbnf(gbnf)), v);
  for (int32_t t : ids) {
    if (!m.accept(t)) return false;
  }
  return m.can_end();
}

std::string text_of(const Vocab& v, const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t t : ids) s += v->text(t);
  return s;
}

// The object schema's constraints, checked on the parsed output.
void expect_valid_object(const std::string& text) {
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(text)) << text;
  ASSERT_TRUE(j.is_object()) << text;
  ASSERT_TRUE(j.contains("name") && j.contains("age")) << text;
  EXPECT_EQ(j.size(), 2u) << text;
  ASSERT_TRUE(j["name"].is_string()) << text;
  ASSERT_TRUE(j["age"].is_number_integer()) << text;
  EXPECT_GE(j["age"].get<int>(), 0) << text;
  EXPECT_LE(j["age"].get<int>(), 120) << text;
}

// One whole-model generation under `s`, stopping at an end-of-generation id.
GenerationResult run(Stage& st, const Tokenizer& tok, const std::vector<int32_t>& prompt, const SamplingSpec& s,
                     int max_tokens) {
  GenerationRequest r;
  r.prompt = prompt;
  r.max_tokens = max_tokens;
  r.sampling = s;
  TextHooks hooks;
  hooks.is_eog = [&](int32_t t) { return tok.is_eog(t); };
  return generate(st, r, hooks);
}

struct SlotCase {
  SamplingSpec spec;
  bool host;  // the stage must sample it on the host
};

// Four sequences side by side: one the device samples, three the host does (a grammar with
// penalties at temperature 1, greedy with logprobs and alternatives and a frequency penalty, a
// filter order the GPU lacks). Every host-sampled row equals a host Sampler fed the same tokens
// on the stage's own logits row, bit for bit; prefill is eager, decode replays graphs (or runs
// eagerly without them).
TEST(CudaHostSampling, RowsEqualTheHostSamplerOnTheStageLogits) {
  PIPELLM_REQUIRE_GPU();
  const std::string name = "tiny-llama-Q8_0";
  for (const bool graphs : {true, false}) {
    SCOPED_TRACE(graphs ? "graphs" : "eager");
    auto m = open_cuda(name, 4, graphs);
    cuda::CudaStage& st = m->stage();
    const int V = m->config().n_vocab;
    const Vocab vocab = vocab_of(m->file());
    std::vector<SlotCase> cases(4);
    cases[0].spec.temperature = 0.8f;
    cases[0].spec.top_k = 40;
    cases[0].spec.seed = 5;
    cases[0].host = false;
    cases[1].spec.temperature = 1.0f;
    cases[1].spec.seed = 3;
    cases[1].spec.repeat_penalty = 1.3f;
    cases[1].spec.penalty_last_n = 16;
    cases[1].spec.grammar = "root ::= [a-z ]+";
    cases[1].spec.grammar_vocab = vocab;
    cases[1].host = true;
    cases[2].spec.logprobs = true;
    cases[2].spec.top_logprobs = 5;
    cases[2].spec.frequency_penalty = 0.5f;
    cases[2].host = true;
    SamplerParams odd;
    odd.temperature = 1.0f;
    odd.top_k = 20;
    odd.top_p = 0.9f;
    odd.min_p = 0.0f;
    odd.seed = 9;
    odd.chain = SamplerParams::parse_chain("top_p,top_k,temperature");
    cases[3].spec = sampling_spec(odd);
    cases[3].host = true;
    std::vector<std::unique_ptr<Sampler>> ref;
    for (int s = 0; s < 4; ++s) {
      EXPECT_EQ(cuda::CudaStage::host_sampled(cases[s].spec), cases[s].host) << "slot " << s;
      st.start_sequence(s, cases[s].spec, {});
      ref.push_back(std::make_unique<Sampler>(sampler_params(cases[s].spec), V));
    }
    // Checks a step's output against the references; rows are the batch's logits rows.
    const auto check = [&](const Batch& b, const StepOutput& out, int step) {
      SCOPED_TRACE("step " + std::to_string(step));
      const int n = b.n_outputs();
      ASSERT_EQ(out.tokens.size(), static_cast<size_t>(n));
      ASSERT_EQ(out.logprobs.size(), static_cast<size_t>(n));      // slot 2 asked
      ASSERT_EQ(out.top_logprobs.size(), static_cast<size_t>(n));  // likewise
      std::vector<float> logits;
      st.last_logits(n, logits);
      int row = 0;
      for (int i = 0; i < b.n_tokens(); ++i) {
        const int s = b.slot[static_cast<size_t>(i)];
        ref[static_cast<size_t>(s)]->accept(b.tokens[static_cast<size_t>(i)]);
        if (!b.logits[static_cast<size_t>(i)]) continue;
        const int32_t got = out.tokens[static_cast<size_t>(row)];
        ASSERT_GE(got, 0);
        ASSERT_LT(got, V);
        if (cases[s].host) {
          Sampler& r = *ref[static_cast<size_t>(s)];
          const int32_t want = r.sample(logits.data() + static_cast<size_t>(row) * V);
          EXPECT_EQ(got, want) << "slot " << s;
          if (s == 2) {
            EXPECT_EQ(out.logprobs[static_cast<size_t>(row)], static_cast<float>(r.logprob(want)));
            EXPECT_EQ(out.top_logprobs[static_cast<size_t>(row)], r.top_logprobs(5));
          }
        }
        if (s != 2) {
          EXPECT_TRUE(std::isnan(out.logprobs[static_cast<size_t>(row)])) << "slot " << s;
          EXPECT_TRUE(out.top_logprobs[static_cast<size_t>(row)].empty()) << "slot " << s;
        }
        ++row;
      }
    };
    // Prefill: the four prompts in one eager step, logits for each one's last token.
    Batch b;
    std::vector<int32_t> pos(4);
    for (int s = 0; s < 4; ++s) {
      for (int p = 0; p < 3 + 2 * s; ++p) b.add(1 + 37 * s + 11 * p, p, s, p == 2 + 2 * s);
      pos[static_cast<size_t>(s)] = 3 + 2 * s;
    }
    StepOutput out;
    st.step(b, out, false);
    check(b, out, 0);
    std::vector<int32_t> cur = out.tokens;
    for (int step = 1; step <= 12; ++step) {
      Batch d;
      for (int s = 0; s < 4; ++s) d.add(cur[static_cast<size_t>(s)], pos[static_cast<size_t>(s)]++, s, true);
      st.step(d, out, false);
      check(d, out, step);
      if (HasFatalFailure()) return;
      cur = out.tokens;  // the emitted tokens are the next step's inputs (and device history)
    }
    if (graphs) {
      EXPECT_GT(st.graphs_captured(), 0u);
    }
  }
}

// A sequence restarted in a host-sampled slot with device settings samples on the device again:
// greedy ids equal the stage's greedy ids before any host sampling.
TEST(CudaHostSampling, SlotReturnsToTheDeviceSampler) {
  PIPELLM_REQUIRE_GPU();
  auto m = open_cuda("tiny-llama-Q8_0", 1, true);
  const auto tok = Tokenizer::from_gguf(m->file());
  const std::vector<int32_t> prompt = tok->encode("Answer in JSON:", true, false);
  SamplingSpec greedy;
  const GenerationResult before = run(m->stage(), *tok, prompt, greedy, 16);
  SamplingSpec g;
  g.grammar = object_gbnf();
  g.grammar_vocab = vocab_of(m->file());
  run(m->stage(), *tok, prompt, g, 200);
  EXPECT_FALSE(cuda::CudaStage::host_sampled(greedy));
  const GenerationResult after = run(m->stage(), *tok, prompt, greedy, 16);
  EXPECT_EQ(after.tokens, before.tokens);
}

// Greedy under a grammar: the CUDA stage's ids equal the CPU stage's (up to a near tie of the
// CPU's own logits, which float differences between the engines may flip: then the ids agree up
// to there), and spell the grammar. A near tie: a top-2 gap under the fixtures' smallest
// clear_gap, 0.1 (shared/fixtures/README.md: max(0.1, 3 x llama.cpp's own worst distance)).
constexpr float kNearTieGap = 0.1f;
TEST(CudaHostSampling, GrammarGreedyIdsMatchCpu) {
  PIPELLM_REQUIRE_GPU();
  for (const std::string name : {"tiny-llama-Q8_0", "tiny-llama-F32", "tiny-qwen3-Q4_K_M"}) {
    SCOPED_TRACE(name);
    auto cpu = open_cpu(name);
    auto gpu = open_cuda(name, 1, true);
    const auto tok = Tokenizer::from_gguf(cpu->file());
    const Vocab vocab = vocab_of(cpu->file());
    const std::vector<int32_t> prompt = tok->encode("Answer in JSON:", true, false);
    SamplingSpec s;
    s.grammar = object_gbnf();
    s.grammar_vocab = vocab;
    const GenerationResult c = run(cpu->stage(), *tok, prompt, s, 200);
    const GenerationResult g = run(gpu->stage(), *tok, prompt, s, 200);
    std::printf("[ %s ] CPU: %s\n[ %s ] GPU: %s\n", name.c_str(), text_of(vocab, c.tokens).c_str(), name.c_str(),
                text_of(vocab, g.tokens).c_str());
    size_t k = 0;
    while (k < c.tokens.size() && k < g.tokens.size() && c.tokens[k] == g.tokens[k]) ++k;
    if (k < c.tokens.size() && k < g.tokens.size()) {
      std::vector<int32_t> ctx = prompt;
      ctx.insert(ctx.end(), c.tokens.begin(), c.tokens.begin() + static_cast<long>(k));
      std::vector<float> l;
      cpu->stage().forward(Batch::sequence(ctx, 0, 0), l);
      const float* row = l.data() + l.size() - static_cast<size_t>(cpu->config().n_vocab);
      const float gap = std::fabs(row[c.tokens[k]] - row[g.tokens[k]]);
      std::printf("[ %s ] ids agree for %zu tokens, then CPU %d / GPU %d (CPU logit gap %.4f)\n", name.c_str(), k,
                  c.tokens[k], g.tokens[k], gap);
      EXPECT_LT(gap, kNearTieGap) << "token " << k;
    } else {
      EXPECT_EQ(g.tokens, c.tokens);
    }
    EXPECT_EQ(g.reason, StopReason::EndOfGeneration);
    EXPECT_TRUE(spells(s.grammar, vocab, g.tokens)) << text_of(vocab, g.tokens);
    expect_valid_object(text_of(vocab, g.tokens));
  }
}

// Seeded sampling at temperature 1 under a grammar, several seeds: every CUDA output is a
// sentence of the grammar (and a valid object for the schema's).
TEST(CudaHostSampling, SeededGrammarOutputsValidate) {
  PIPELLM_REQUIRE_GPU();
  const std::string name = "tiny-qwen3-Q4_K_M";
  auto cpu = open_cpu(name);
  auto gpu = open_cuda(name, 1, true);
  const auto tok = Tokenizer::from_gguf(gpu->file());
  const Vocab vocab = vocab_of(gpu->file());
  const std::vector<int32_t> prompt = tok->encode("Answer in JSON:", true, false);
  int same_as_cpu = 0, runs = 0;
  for (const std::string& gbnf : {std::string("root ::= (\"yes\" | \"no\") \".\""), object_gbnf()}) {
    for (uint64_t seed = 1; seed <= 8; ++seed) {
      SCOPED_TRACE("seed " + std::to_string(seed) + ", grammar " + gbnf.substr(0, 40));
      SamplingSpec s;
      s.temperature = 1.0f;
      s.seed = seed;
      s.grammar = gbnf;
      s.grammar_vocab = vocab;
      const GenerationResult g = run(gpu->stage(), *tok, prompt, s, 200);
      const std::string text = text_of(vocab, g.tokens);
      EXPECT_EQ(g.reason, StopReason::EndOfGeneration) << text;
      EXPECT_TRUE(spells(gbnf, vocab, g.tokens)) << text;
      if (gbnf[0] == 'r' && gbnf.find("yes") != std::string::npos) {
        EXPECT_TRUE(text == "yes." || text == "no.") << text;
      } else {
        expect_valid_object(text);
      }
      // The same seed draws the same numbers on the CPU: equal outputs unless the logits differ
      // enough to move a draw across a boundary (counted, not required).
      same_as_cpu += run(cpu->stage(), *tok, prompt, s, 200).tokens == g.tokens ? 1 : 0;
      ++runs;
    }
  }
  std::printf("[ %s ] seeded grammar outputs equal to the CPU's: %d/%d\n", name.c_str(), same_as_cpu, runs);
}

// top_logprobs through Stage::step on both stages, teacher-forced with the CPU's greedy tokens:
// a log-probability is logit - logsumexp(logits), so where the two stages' logits differ by at
// most D the log-probabilities differ by at most 2 D: that is the bound (D measured per step on
// the logits both stages return); the ids agree wherever the CPU's neighbours are further apart
// than it, the chosen token's logprob likewise.
TEST(CudaHostSampling, TopLogprobsMatchCpu) {
  PIPELLM_REQUIRE_GPU();
  constexpr int kTop = 8;
  for (const std::string name : {"tiny-llama-F32", "tiny-llama-Q8_0"}) {
    SCOPED_TRACE(name);
    auto cpu = open_cpu(name);
    auto gpu = open_cuda(name, 1, true);
    const auto tok = Tokenizer::from_gguf(cpu->file());
    SamplingSpec s;
    s.logprobs = true;
    s.top_logprobs = kTop;
    s.repeat_penalty = 1.2f;  // penalties over the host window on both
    s.penalty_last_n = 8;
    cpu->stage().start_sequence(0, s, {});
    gpu->stage().start_sequence(0, s, {});
    Batch b = Batch::sequence(tok->encode("The quick brown fox", true, false), 0, 0);
    int32_t pos = b.n_tokens();
    double worst = 0.0;
    int ids_compared = 0, ids_equal = 0;
    for (int step = 0; step < 24; ++step) {
      StepOutput oc, og;
      cpu->stage().step(b, oc, true);
      gpu->stage().step(b, og, true);
      ASSERT_EQ(oc.logits.size(), og.logits.size());
      double max_dlogit = 0.0;
      for (size_t i = 0; i < oc.logits.size(); ++i) {
        max_dlogit = std::max(max_dlogit, std::fabs(static_cast<double>(og.logits[i]) - oc.logits[i]));
      }
      const double tol = 2.0 * max_dlogit + 1e-5;
      ASSERT_EQ(oc.top_logprobs.size(), 1u);
      ASSERT_EQ(og.top_logprobs.size(), 1u);
      ASSERT_EQ(og.logprobs.size(), 1u);
      const auto& c = oc.top_logprobs[0];
      const auto& g = og.top_logprobs[0];
      ASSERT_EQ(c.size(), static_cast<size_t>(kTop));
      ASSERT_EQ(g.size(), static_cast<size_t>(kTop));
      for (int k = 0; k < kTop; ++k) {
        const double d = std::fabs(static_cast<double>(g[k].logprob) - c[k].logprob);
        worst = std::max(worst, d);
        EXPECT_LT(d, tol) << "step " << step << " rank " << k;
        const bool clear = (k == 0 || c[k - 1].logprob - c[k].logprob > 2 * tol) &&
                           (k == kTop - 1 || c[k].logprob - c[k + 1].logprob > 2 * tol);
        if (clear) {
          ++ids_compared;
          ids_equal += g[k].id == c[k].id ? 1 : 0;
          EXPECT_EQ(g[k].id, c[k].id) << "step " << step << " rank " << k;
        }
      }
      // The chosen token's logprob is its entry's (greedy: the first).
      EXPECT_EQ(og.logprobs[0], g[0].logprob) << "step " << step;
      EXPECT_EQ(og.tokens[0], g[0].id) << "step " << step;
      const int32_t next = oc.tokens[0];
      b = Batch::sequence({next}, pos++, 0);
    }
    std::printf("[ %s ] top_logprobs: worst |GPU - CPU| %.2e, ids equal %d/%d where clear\n", name.c_str(), worst,
                ids_equal, ids_compared);
    EXPECT_GT(ids_compared, 0);
  }
}

}  // namespace
}  // namespace pipellm
