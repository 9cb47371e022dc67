// `pipellm generate`: text (or token ids) in, streamed text (or ids) out, on the CPU engine or
// (--device cuda / -ngl) the CUDA stage, through the serving runtime (engine/runtime generate());
// -cnv: an interactive chat with the model's template. llama-cli's flags (flags/llama_flags.h).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/engine_options.h"
#include "engine/runtime/generator.h"
#include "engine/runtime/grammar/json_schema.h"
#include "engine/runtime/grammar/token_vocabulary.h"
#include "engine/runtime/sampler.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/streaming_decoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "flags/sampler_flags.h"

namespace pipellm::cli {
namespace {

struct Options {
  EngineFlags engine;
  flags::SamplingFlags sampling;
  flags::ChatFlags chat_flags;
  std::string ids_file;
  bool print_ids = false;
  bool json = false;
  bool chat = false;          // one user turn of the chat template
  bool add_special = true;
  int ubatch = 0;             // -ub: prompt tokens per step
  std::vector<std::string> stop;
  GenerationRequest req;
};

// Parses the command line (CLI11; llama.cpp's flags from flags/llama_flags.h). Returns the exit
// status when the program should stop (help, usage error), else nullopt.
std::optional<int> parse(int argc, char** argv, Options& o) {
  CLI::App app{"pipellm generate: text (or token ids) in, streamed text out. With no -m: the default model shipped with PipeLLM.",
               "pipellm generate"};
  app.get_formatter()->column_width(34);
  add_engine_flags(app, o.engine);
  flags::add_sampling_flags(app, o.sampling);
  flags::add_chat_flags(app, o.chat_flags);
  app.add_option("--ids-file", o.ids_file, "prompt as whitespace-separated token ids (no tokenizer needed)");
  app.add_flag("--print-ids", o.print_ids, "print the generated ids on one line instead of text");
  app.add_option("--stop,-r,--reverse-prompt", o.stop, "stop when this text appears (repeatable; not printed)")
      ->allow_extra_args(false);
  app.add_flag_callback("--no-special", [&o] { o.add_special = false; }, "do not add BOS to the prompt");
  app.add_flag("--chat", o.chat, "wrap the prompt as one user turn of the chat template");
  app.add_flag("--json", o.json, "print one JSON object at the end instead of streaming");
  flags::add_ubatch_flag(app, o.ubatch);
  flags::add_accepted_llama_flags(app, /*server=*/false);
  if (auto code = flags::parse(app, argc, argv)) return code;
  const flags::ChatFlags& c = o.chat_flags;
  try {
    if (c.conversation) {
      if (!o.ids_file.empty() || o.print_ids || o.json) throw InvalidArgument("-cnv works with text: leave out --ids-file, --print-ids and --json");
    } else if (c.have_prompt == !o.ids_file.empty()) {
      throw InvalidArgument("give exactly one of -p PROMPT (or -f FILE) and --ids-file F, or -cnv for a chat");
    }
    if ((o.chat || !c.system_prompt.empty()) && !o.ids_file.empty()) throw InvalidArgument("--chat and -sys need a text prompt");
    if (!o.sampling.grammar.empty() && !o.sampling.json_schema.empty()) throw InvalidArgument("give --grammar or --json-schema, not both");
    const flags::SamplingFlags& f = o.sampling;
    SamplerParams sp = flags::apply_sampling_flags(f);  // the engine's defaults where a flag is left out
    sp.seed = flags::resolve_seed(f.seed);
    sp.validate();
    o.req.sampling = sampling_spec(sp);
    o.req.max_tokens = f.n_predict.value_or(-1);
    o.req.stop_strings = o.stop;
  } catch (const InvalidArgument& e) {
    std::fprintf(stderr, "pipellm generate: error: %s\n", e.what());
    return 2;
  }
  return std::nullopt;
}

std::string ids_line(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s;
}

int usage_error(const std::string& what) {
  std::fprintf(stderr, "pipellm generate: error: %s\n", what.c_str());
  return 2;
}

// End-of-generation ids: the tokenizer's, or (ids in, ids out) the file's EOS/EOT.
std::function<bool(int32_t)> eog_of(const Tokenizer* tok, const GgufFile& file) {
  if (tok) return [tok](int32_t id) { return tok->is_eog(id); };
  const int64_t eos = file.has("tokenizer.ggml.eos_token_id") ? file.get_i64("tokenizer.ggml.eos_token_id") : -1;
  const int64_t eot = file.has("tokenizer.ggml.eot_token_id") ? file.get_i64("tokenizer.ggml.eot_token_id") : -1;
  return [eos, eot](int32_t id) { return id == eos || id == eot; };
}

// max_tokens for a prompt: -n, or (-n -1) up to the end of the context.
int token_budget(int n_predict, size_t n_prompt, int n_ctx) {
  const int room = n_ctx - static_cast<int>(n_prompt);
  return n_predict < 0 ? room : std::min(n_predict, room);
}

// -cnv: read a user turn per line from stdin, answer it with the whole conversation rendered by
// the chat template, until end of input. -p (if given) is the first turn.
int chat_loop(Stage& stage, const Tokenizer& tok, const std::string& tmpl, Options& o, int n_ctx,
              const TextHooks& base_hooks) {
  const std::string eos = tok.eos_id() >= 0 ? tok.token_to_piece(tok.eos_id()) : "";
  std::vector<ChatMessage> history;
  if (!o.chat_flags.system_prompt.empty()) history.push_back({"system", o.chat_flags.system_prompt});
  std::string line = o.chat_flags.have_prompt ? o.chat_flags.prompt : "";
  bool first = o.chat_flags.have_prompt;
  std::fprintf(stderr, "chat mode: one message per line; end of input (Ctrl-D) ends the chat\n");
  std::vector<int32_t> cache;  // what the stage's slot holds: each turn feeds only the new part
  int64_t n_prompt = 0, n_cached = 0;
  for (;;) {
    if (!first) {
      std::fprintf(stderr, "\n> ");
      std::fflush(stderr);
      if (!std::getline(std::cin, line)) break;
    }
    first = false;
    if (line.empty()) continue;
    history.push_back({"user", line});
    GenerationRequest req = o.req;
    req.prompt = tok.encode(apply_chat_template(tmpl, history, /*add_generation_prompt=*/true, "", eos),
                            o.add_special, /*parse_special=*/true);
    if (static_cast<int>(req.prompt.size()) >= n_ctx) {
      std::fprintf(stderr, "pipellm generate: the conversation (%zu tokens) no longer fits the context of %d (raise -c)\n",
                   req.prompt.size(), n_ctx);
      return 1;
    }
    req.max_tokens = token_budget(o.sampling.n_predict.value_or(-1), req.prompt.size(), n_ctx);
    req.slot_cache = &cache;
    StreamingDecoder stream(tok);
    TextHooks hooks = base_hooks;
    hooks.piece = [&stream](int32_t id) { return stream.push(id); };
    hooks.flush = [&stream] { return stream.flush(); };
    const GenerationResult res = generate(stage, req, hooks, [](int32_t, const std::string& text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::printf("\n");
    std::fflush(stdout);
    history.push_back({"assistant", res.text});
    n_prompt += res.n_prompt;
    n_cached += res.n_cached;
  }
  std::fprintf(stderr, "chat: %lld prompt tokens, %lld of them from the cache\n", static_cast<long long>(n_prompt),
               static_cast<long long>(n_cached));
  return 0;
}

}  // namespace

int cmd_generate(int argc, char** argv) {
  Options o;
  if (auto code = parse(argc, argv, o)) return *code;
  if (o.ubatch > 0) o.req.prefill_chunk = o.ubatch;
  const flags::ChatFlags& c = o.chat_flags;
  std::string model_path;
  try {
    model_path = resolve_model(o.engine);
    if (!o.ids_file.empty()) o.req.prompt = read_ids_file(o.ids_file);
  } catch (const InvalidArgument& e) {
    return usage_error(e.what());
  }

  const auto t0 = std::chrono::steady_clock::now();
  // -c 0: the model's training context (llama.cpp's meaning); none given: 4096.
  const int n_ctx = o.engine.ctx_size != 0     ? o.engine.ctx_size
                    : o.engine.ctx_from_model ? std::max(1, ModelConfig::from_gguf(*GgufFile::open(model_path)).n_ctx_train)
                                              : 4096;
  auto model = open_model(model_path, o.engine, n_ctx);
  const auto t_gpu = std::chrono::steady_clock::now();
  const auto gpu = open_gpu_stage(*model, o.engine, n_ctx);
  if (gpu) {
    // The stage's construction is dominated by the weights' upload (KV allocation included).
    const double up_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_gpu).count();
    uint64_t bytes = 0;
    for (const TensorView& t : model->file().tensors()) bytes += t.nbytes;
    std::fprintf(stderr, "%s: weights uploaded in %.2f s (%.2f GB, %.1f GB/s, stage setup included)\n",
                 o.engine.device.c_str(), up_s, bytes / 1e9, bytes / 1e9 / up_s);
  }
  Stage& stage = gpu ? *gpu : model->stage();
  std::unique_ptr<Tokenizer> tok;
  if (c.have_prompt || c.conversation || !o.print_ids) tok = Tokenizer::from_gguf(model->file());
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const bool chat = o.chat || !c.system_prompt.empty() || c.conversation;
  std::string tmpl;
  try {
    if (chat) {
      const auto t = flags::resolve_chat_template(c.chat_template, tok->chat_template());
      if (!t) throw InvalidArgument("the model has no tokenizer.chat_template (give --chat-template NAME|JINJA)");
      tmpl = *t;
    }
    const flags::SamplingFlags& f = o.sampling;
    if (!f.grammar.empty() || !f.json_schema.empty()) {
      if (!tok) throw InvalidArgument("--grammar / --json-schema need the model's tokenizer (leave out --print-ids)");
      std::string grammar = f.grammar;
      if (!f.json_schema.empty()) {
        const auto schema = nlohmann::ordered_json::parse(f.json_schema, nullptr, false);
        if (schema.is_discarded()) throw InvalidArgument("--json-schema: not valid JSON");
        grammar = grammar::json_schema_to_gbnf(schema);
      }
      SamplerParams sp = sampler_params(o.req.sampling);
      sp.grammar = grammar;
      sp.grammar_vocab = grammar::TokenVocabulary::from_tokenizer(*tok);
      sp.validate();
      o.req.sampling = sampling_spec(sp);
    }
    if (c.have_prompt && !c.conversation) {
      std::string text = c.prompt;
      if (chat) {
        // BOS comes from encode(add_special); the template writes EOS only between turns.
        const std::string eos = tok->eos_id() >= 0 ? tok->token_to_piece(tok->eos_id()) : "";
        std::vector<ChatMessage> msgs;
        if (!c.system_prompt.empty()) msgs.push_back({"system", c.system_prompt});
        msgs.push_back({"user", c.prompt});
        text = apply_chat_template(tmpl, msgs, /*add_generation_prompt=*/true, "", eos);
      }
      o.req.prompt = tok->encode(text, o.add_special, /*parse_special=*/true);
    }
    const int V = model->config().n_vocab;
    for (int32_t id : o.req.prompt) {
      if (id >= V) throw InvalidArgument("prompt token id " + std::to_string(id) + " is outside the vocabulary");
    }
    if (static_cast<int>(o.req.prompt.size()) >= n_ctx) {
      throw InvalidArgument("the prompt has " + std::to_string(o.req.prompt.size()) +
                            " tokens; the context holds " + std::to_string(n_ctx) + " (raise -c/--ctx-size)");
    }
    o.req.max_tokens = token_budget(o.req.max_tokens, o.req.prompt.size(), n_ctx);
  } catch (const InvalidArgument& e) {
    return usage_error(e.what());
  } catch (const FormatError& e) {
    return usage_error(std::string("chat template: ") + e.what());
  } catch (const CLI::ValidationError& e) {
    return usage_error(e.what());
  }

  TextHooks hooks;
  if (!o.sampling.ignore_eos) hooks.is_eog = eog_of(tok.get(), model->file());
  if (c.conversation) return chat_loop(stage, *tok, tmpl, o, n_ctx, hooks);

  std::unique_ptr<StreamingDecoder> stream;
  size_t skip = 0;
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
  if (stream_text && c.have_prompt && !chat) {  // the continuation reads on from the prompt
    std::fwrite(c.prompt.data(), 1, c.prompt.size(), stdout);
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
