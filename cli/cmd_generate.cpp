// `pipellm generate`: text (or token ids) in, streamed text (or ids) out, on the CPU engine or
// (--device cuda) the CUDA stage, through the serving runtime (engine/runtime generate()).
#include <chrono>
#include <nlohmann/json.hpp>
#include <cstdio>
#include <random>
#include <string>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/engine_options.h"
#include "engine/runtime/generator.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/streaming_decoder.h"
#include "engine/tokenizer/tokenizer.h"

namespace pipellm::cli {
namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: pipellm generate [-m FILE] (-p PROMPT | --ids-file F) [options]\n"
               "  -p, --prompt TEXT   prompt text (tokenized with the model's tokenizer)\n"
               "  --ids-file F        prompt as whitespace-separated token ids (no tokenizer needed)\n"
               "  --print-ids         print the generated ids on one line instead of text\n"
               "  -n, --n-predict N   tokens to generate (default 128)\n"
               "  --temp T            temperature; 0 = greedy (default 0.8)\n"
               "  --top-k K           (default 40; 0 = off)\n"
               "  --top-p P           (default 0.95; 1 = off)\n"
               "  --min-p M           (default 0.05; 0 = off)\n"
               "  --repeat-penalty R  (default 1.0 = off)   --repeat-last-n N (default 64)\n"
               "  --presence-penalty X  --frequency-penalty X  (default 0)\n"
               "  --sampler-chain S   order of top_k,top_p,min_p,temperature (default in that order)\n"
               "  --seed S            random seed (default: random, printed on stderr)\n"
               "  --stop STR          stop when STR appears (repeatable; not printed)\n"
               "  --ignore-eos        do not stop at end-of-generation tokens\n"
               "  --no-special        do not add BOS (and other special tokens) to the prompt\n"
               "  --chat              wrap the prompt as one user turn of the model's chat template\n"
               "  --json              print one JSON object at the end instead of streaming\n%s",
               engine_flags_help());
}

struct Options {
  EngineFlags engine;
  std::string prompt;
  bool have_prompt = false;
  std::string ids_file;
  bool print_ids = false;
  bool json = false;
  bool chat = false;
  bool ignore_eos = false;
  bool add_special = true;
  bool seed_given = false;
  SamplerParams sampling;  // the flags as given; the request carries them as a SamplingSpec
  GenerationRequest req;
};

Options parse(int argc, char** argv, bool& help) {
  Options o;
  o.req.max_tokens = 128;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    SamplerParams& s = o.sampling;
    if (a == "-h" || a == "--help") {
      help = true;
      return o;
    } else if (parse_engine_flag(argc, argv, i, o.engine)) {
    } else if (a == "-p" || a == "--prompt") {
      o.prompt = flag_value(argc, argv, i);
      o.have_prompt = true;
    } else if (a == "--ids-file") {
      o.ids_file = flag_value(argc, argv, i);
    } else if (a == "--print-ids") {
      o.print_ids = true;
    } else if (a == "-n" || a == "--n-predict") {
      o.req.max_tokens = parse_int(a, flag_value(argc, argv, i), 0, 1 << 24);
    } else if (a == "--temp") {
      s.temperature = parse_float(a, flag_value(argc, argv, i), 0.0f, 100.0f);
    } else if (a == "--top-k") {
      s.top_k = parse_int(a, flag_value(argc, argv, i), 0, 1 << 24);
    } else if (a == "--top-p") {
      s.top_p = parse_float(a, flag_value(argc, argv, i), 1e-6f, 1.0f);
    } else if (a == "--min-p") {
      s.min_p = parse_float(a, flag_value(argc, argv, i), 0.0f, 1.0f);
    } else if (a == "--repeat-penalty") {
      s.repeat_penalty = parse_float(a, flag_value(argc, argv, i), 1e-3f, 100.0f);
    } else if (a == "--repeat-last-n") {
      s.penalty_last_n = parse_int(a, flag_value(argc, argv, i), 0, 1 << 24);
    } else if (a == "--presence-penalty") {
      s.presence_penalty = parse_float(a, flag_value(argc, argv, i), -100.0f, 100.0f);
    } else if (a == "--frequency-penalty") {
      s.frequency_penalty = parse_float(a, flag_value(argc, argv, i), -100.0f, 100.0f);
    } else if (a == "--sampler-chain") {
      s.chain = SamplerParams::parse_chain(flag_value(argc, argv, i));
    } else if (a == "--seed") {
      s.seed = parse_u64(a, flag_value(argc, argv, i));
      o.seed_given = true;
    } else if (a == "--stop") {
      o.req.stop_strings.push_back(flag_value(argc, argv, i));
    } else if (a == "--ignore-eos") {
      o.ignore_eos = true;
    } else if (a == "--no-special") {
      o.add_special = false;
    } else if (a == "--chat") {
      o.chat = true;
    } else if (a == "--json") {
      o.json = true;
    } else {
      throw InvalidArgument("unknown option '" + a + "'");
    }
  }
  if (o.have_prompt == !o.ids_file.empty()) throw InvalidArgument("give exactly one of -p PROMPT and --ids-file F");
  if (o.chat && !o.ids_file.empty()) throw InvalidArgument("--chat needs a text prompt (-p)");
  if (!o.seed_given) o.sampling.seed = std::random_device{}();
  o.sampling.validate();
  o.req.sampling = sampling_spec(o.sampling);
  return o;
}

std::string ids_line(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s;
}

}  // namespace

int cmd_generate(int argc, char** argv) {
  Options o;
  std::string model_path;
  try {
    bool help = false;
    o = parse(argc, argv, help);
    if (help) {
      usage(stdout);
      return 0;
    }
    model_path = resolve_model(o.engine);
    if (!o.ids_file.empty()) o.req.prompt = read_ids_file(o.ids_file);
  } catch (const InvalidArgument& e) {
    std::fprintf(stderr, "pipellm generate: error: %s\n", e.what());
    return 2;
  }

  const auto t0 = std::chrono::steady_clock::now();
  const int n_ctx = o.engine.ctx != 0 ? o.engine.ctx : 4096;
  auto model = open_model(model_path, o.engine, n_ctx);
  const auto gpu = open_gpu_stage(*model, o.engine, n_ctx);
  Stage& stage = gpu ? *gpu : model->stage();
  std::unique_ptr<Tokenizer> tok;
  if (o.have_prompt || !o.print_ids) tok = Tokenizer::from_gguf(model->file());
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  try {
    if (o.have_prompt) {
      std::string text = o.prompt;
      if (o.chat) {
        const auto tmpl = tok->chat_template();
        if (!tmpl) throw InvalidArgument("--chat: the model has no tokenizer.chat_template");
        // BOS comes from encode(add_special); the template writes EOS only between turns.
        const std::string eos = tok->eos_id() >= 0 ? tok->token_to_piece(tok->eos_id()) : "";
        try {
          text = apply_chat_template(*tmpl, {{"user", o.prompt}}, /*add_generation_prompt=*/true, "", eos);
        } catch (const FormatError& e) {
          throw InvalidArgument(std::string("--chat: ") + e.what());
        }
      }
      o.req.prompt = tok->encode(text, o.add_special, /*parse_special=*/true);
    }
    const int V = model->config().n_vocab;
    for (int32_t id : o.req.prompt) {
      if (id >= V) throw InvalidArgument("prompt token id " + std::to_string(id) + " is outside the vocabulary");
    }
    if (static_cast<int>(o.req.prompt.size()) >= n_ctx) {
      throw InvalidArgument("the prompt has " + std::to_string(o.req.prompt.size()) +
                            " tokens; the context holds " + std::to_string(n_ctx) + " (raise --ctx)");
    }
  } catch (const InvalidArgument& e) {
    std::fprintf(stderr, "pipellm generate: error: %s\n", e.what());
    return 2;
  }

  TextHooks hooks;
  std::unique_ptr<StreamingDecoder> stream;
  size_t skip = 0;
  const GgufFile& file = model->file();
  if (!o.ignore_eos) {
    if (tok) {
      hooks.is_eog = [&](int32_t id) { return tok->is_eog(id); };
    } else {
      const int64_t eos = file.has("tokenizer.ggml.eos_token_id") ? file.get_i64("tokenizer.ggml.eos_token_id") : -1;
      const int64_t eot = file.has("tokenizer.ggml.eot_token_id") ? file.get_i64("tokenizer.ggml.eot_token_id") : -1;
      hooks.is_eog = [eos, eot](int32_t id) { return id == eos || id == eot; };
    }
  }
  if (tok) {
    // Primed with the prompt so that the first generated piece is rendered as a continuation.
    // The prompt's own tail that the decoder still holds back is skipped, not printed.
    stream = std::make_unique<StreamingDecoder>(*tok);
    size_t primed = 0;
    for (int32_t id : o.req.prompt) primed += stream->push(id).size();
    const size_t prompt_bytes = tok->decode(o.req.prompt).size();
    skip = prompt_bytes - std::min(primed, prompt_bytes);
    auto drop_skipped = [&skip](std::string text) {
      const size_t n = std::min(skip, text.size());
      skip -= n;
      return text.substr(n);
    };
    hooks.piece = [&, drop_skipped](int32_t id) { return drop_skipped(stream->push(id)); };
    hooks.flush = [&, drop_skipped] { return drop_skipped(stream->flush()); };
  }
  const bool stream_text = !o.json && !o.print_ids;
  if (stream_text && o.have_prompt && !o.chat) {  // the continuation reads on from the prompt
    std::fwrite(o.prompt.data(), 1, o.prompt.size(), stdout);
    std::fflush(stdout);
  }
  const GenerationResult res = generate(
      stage, o.req, hooks,
      [&](int32_t, const std::string& text) {
        if (stream_text && !text.empty()) {
          std::fwrite(text.data(), 1, text.size(), stdout);
          std::fflush(stdout);
        }
        return true;
      });

  const double prompt_tps = res.n_prompt / std::max(res.prompt_seconds, 1e-9);
  const double gen_tps = res.decode_tok_s();
  if (o.print_ids) {
    std::printf("%s\n", ids_line(res.tokens).c_str());
  } else if (o.json) {
    nlohmann::json j = {{"text", res.text},
                         {"tokens", res.tokens},
                         {"n_prompt", res.n_prompt},
                         {"n_generated", res.tokens.size()},
                         {"stop_reason", stop_reason_name(res.reason)},
                         {"seed", o.req.sampling.seed},
                         {"load_ms", load_s * 1e3},
                         {"prompt_tok_s", prompt_tps},
                         {"gen_tok_s", gen_tps},
                         {"threads", model->pool().size()}};
    // Invalid UTF-8 (a random model can stop mid-character) becomes U+FFFD instead of throwing.
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("\n");
  }
  std::fflush(stdout);
  std::fprintf(stderr,
               "load: %.0f ms | prompt: %d tokens, %.1f tok/s | generation: %zu tokens, %.1f tok/s | stop: %s | "
               "seed %llu, %d threads\n",
               load_s * 1e3, res.n_prompt, prompt_tps, res.tokens.size(), gen_tps, stop_reason_name(res.reason),
               static_cast<unsigned long long>(o.req.sampling.seed), model->pool().size());
  return 0;
}

}  // namespace pipellm::cli
