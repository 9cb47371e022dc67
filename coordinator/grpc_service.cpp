#include "coordinator/grpc_service.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include <nlohmann/json.hpp>

#include "coordinator/generation.h"
#include "engine/runtime/grammar/gbnf_parser.h"
#include "engine/runtime/grammar/json_schema.h"
#include "coordinator/text_stream.h"

namespace pipellm::coord {

namespace v1 = pipellm::v1;
using clock = std::chrono::steady_clock;
// How long one wait for the next event lasts before the client's cancel and deadline are
// checked again.
constexpr auto kPoll = std::chrono::milliseconds(20);

grpc::StatusCode grpc_code(Code c) {
  switch (c) {
    case Code::Ok: return grpc::StatusCode::OK;
    case Code::InvalidArgument: return grpc::StatusCode::INVALID_ARGUMENT;
    case Code::ResourceExhausted: return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case Code::Unavailable: return grpc::StatusCode::UNAVAILABLE;
    case Code::Cancelled: return grpc::StatusCode::CANCELLED;
    case Code::DeadlineExceeded: return grpc::StatusCode::DEADLINE_EXCEEDED;
    case Code::Internal: return grpc::StatusCode::INTERNAL;
  }
  return grpc::StatusCode::UNKNOWN;
}

namespace {

grpc::Status status_of(const RequestError& e) { return grpc::Status(grpc_code(e.code()), e.what()); }

std::vector<ChatMessage> chat_of(const v1::ChatPrompt& c) {
  std::vector<ChatMessage> m;
  for (const auto& x : c.messages()) m.push_back({x.role(), x.content()});
  return m;
}

v1::FinishReason finish_of(link::FinishReason r) {
  switch (r) {
    case link::FinishReason::Stop: return v1::FINISH_REASON_STOP;
    case link::FinishReason::Length: return v1::FINISH_REASON_LENGTH;
    case link::FinishReason::Cancelled: return v1::FINISH_REASON_CANCELLED;
    case link::FinishReason::Error: return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

double ms_between(clock::time_point a, clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

bool past_deadline(const grpc::ServerContext* ctx) {
  return ctx->deadline() != std::chrono::system_clock::time_point::max() &&
         std::chrono::system_clock::now() >= ctx->deadline();
}

}  // namespace

// The GBNF of `grammar` or `json_schema` (checked here: a bad one is this request's
// INVALID_ARGUMENT naming the field), "" for neither.
std::string structured_output(const v1::GenerateRequest& r) {
  if (r.has_grammar() && r.has_json_schema()) throw RequestError(Code::InvalidArgument, "give grammar or json_schema, not both");
  std::string gbnf;
  const char* field = r.has_grammar() ? "grammar" : "json_schema";
  try {
    if (r.has_grammar()) {
      gbnf = r.grammar();
    } else if (r.has_json_schema()) {
      const auto schema = nlohmann::ordered_json::parse(r.json_schema(), nullptr, false);
      if (schema.is_discarded()) throw InvalidArgument("not valid JSON");
      gbnf = grammar::json_schema_to_gbnf(schema);
    }
    if (!gbnf.empty()) grammar::parse_gbnf(gbnf);
  } catch (const Error& e) {
    throw RequestError(Code::InvalidArgument, std::string(field) + ": " + e.what());
  }
  return gbnf;
}

GenerateInput to_input(const v1::GenerateRequest& r) {
  GenerateInput in;
  switch (r.prompt_case()) {
    case v1::GenerateRequest::kText:
      in.kind = GenerateInput::PromptKind::Text;
      in.text = r.text();
      break;
    case v1::GenerateRequest::kTokens:
      in.kind = GenerateInput::PromptKind::Tokens;
      in.tokens.assign(r.tokens().ids().begin(), r.tokens().ids().end());
      break;
    case v1::GenerateRequest::kChat:
      in.kind = GenerateInput::PromptKind::Chat;
      in.chat = chat_of(r.chat());
      in.add_generation_prompt = !r.chat().has_add_generation_prompt() || r.chat().add_generation_prompt();
      break;
    default: break;
  }
  if (r.has_add_special()) in.add_special = r.add_special();
  const auto& s = r.sampling();
  if (s.has_temperature()) in.temperature = s.temperature();
  if (s.has_top_k()) in.top_k = s.top_k();
  if (s.has_top_p()) in.top_p = s.top_p();
  if (s.has_min_p()) in.min_p = s.min_p();
  if (s.has_repetition_penalty()) in.repetition_penalty = s.repetition_penalty();
  if (s.has_presence_penalty()) in.presence_penalty = s.presence_penalty();
  if (s.has_frequency_penalty()) in.frequency_penalty = s.frequency_penalty();
  if (s.has_penalty_last_n()) in.penalty_last_n = s.penalty_last_n();
  if (s.has_seed()) in.seed = s.seed();
  in.logprobs = s.has_logprobs() && s.logprobs();
  if (s.has_top_logprobs()) in.top_logprobs = s.top_logprobs();
  if (s.has_cache_prompt()) in.cache_prompt = s.cache_prompt();
  if (r.has_max_tokens()) in.max_tokens = r.max_tokens();
  in.stop.assign(r.stop().begin(), r.stop().end());
  in.ignore_eos = r.ignore_eos();
  in.grammar = structured_output(r);
  return in;
}

PipeLLMService::PipeLLMService(RequestScheduler& sched, const ModelText& text, const RequestLimits& limits,
                               std::string backend)
    : sched_(sched), text_(text), limits_(limits), backend_(std::move(backend)) {}

grpc::Status PipeLLMService::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                      grpc::ServerWriter<v1::GenerateResponse>* out) {
  const auto t0 = clock::now();
  const auto model = sched_.model();
  if (!model) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model stages are not available: " + sched_.down_reason());
  }
  std::unique_ptr<Generation> gen;  // the one generation path, shared with the HTTP door
  try {
    const PreparedRequest prep = text_.prepare(to_input(*req), model->n_ctx, model->n_vocab, limits_);
    // The stream slot is held by GuardedPipeLLMService for the whole call: no lease here.
    gen = Generation::start(sched_, text_, prep, StreamLimiter::Lease{});
    spdlog::debug("generate: request {} ({} prompt tokens, max_tokens {})", gen->id(), gen->prompt_tokens(),
                  prep.submit.max_tokens);
  } catch (const RequestError& e) {
    spdlog::info("generate: refused ({}): {}", code_name(e.code()), e.what());
    return status_of(e);
  } catch (const std::exception& e) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string("prompt: ") + e.what());
  }

  clock::time_point first{}, last{};
  for (;;) {
    if (past_deadline(ctx)) {
      gen->abandon();
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          "deadline exceeded after " + std::to_string(gen->generated_tokens()) + " tokens");
    }
    if (ctx->IsCancelled()) {
      gen->abandon();
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
    }
    const Generation::Update u = gen->poll(kPoll);
    if (!u.tokens.empty()) {
      const auto now = clock::now();
      if (first == clock::time_point{}) first = now;
      last = now;
    }
    if (!u.text.empty() || !u.tokens.empty()) {
      v1::GenerateResponse r;
      r.mutable_chunk()->set_text(u.text);
      for (int32_t id : u.tokens) r.mutable_chunk()->add_token_ids(id);
      for (float lp : u.logprobs) r.mutable_chunk()->add_token_logprobs(lp);
      for (const auto& alts : u.top_logprobs) {
        v1::TokenAlternatives* a = r.mutable_chunk()->add_top_logprobs();
        for (const TokenLogprob& t : alts) {
          v1::TokenLogprob* x = a->add_alternatives();
          x->set_id(t.id);
          x->set_logprob(t.logprob);
        }
      }
      if (!out->Write(r)) {
        gen->abandon();
        return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      }
    }
    if (!u.ended) continue;
    if (u.failed) {
      spdlog::warn("generate: request {} failed ({}): {}", gen->id(), code_name(*u.failed), u.message);
      return grpc::Status(grpc_code(*u.failed), u.message);
    }
    v1::GenerateResponse r;
    auto* f = r.mutable_final();
    f->set_finish_reason(finish_of(u.finish));
    f->set_stop_string(u.stop_string);
    auto* usage = f->mutable_usage();
    const int generated = gen->generated_tokens();
    usage->set_prompt_tokens(gen->prompt_tokens());
    usage->set_generated_tokens(generated);
    usage->set_cached_tokens(gen->cached_tokens());
    usage->set_total_ms(ms_between(t0, clock::now()));
    if (generated > 0) {
      usage->set_time_to_first_token_ms(ms_between(t0, first));
      const double span = std::chrono::duration<double>(last - first).count();
      usage->set_tokens_per_second(generated > 1 && span > 0 ? (generated - 1) / span : 0.0);
    }
    out->Write(r);
    spdlog::debug("generate: request {} done ({}, {} tokens)", gen->id(), link::finish_reason_name(u.finish),
                  generated);
    return grpc::Status::OK;
  }
}

grpc::Status PipeLLMService::Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* req, v1::TokenizeResponse* out) {
  GenerateInput in;
  if (req->input_case() == v1::TokenizeRequest::kText) {
    in.kind = GenerateInput::PromptKind::Text;
    in.text = req->text();
  } else if (req->input_case() == v1::TokenizeRequest::kChat) {
    in.kind = GenerateInput::PromptKind::Chat;
    in.chat = chat_of(req->chat());
    in.add_generation_prompt = !req->chat().has_add_generation_prompt() || req->chat().add_generation_prompt();
  } else {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "input: missing (give text or chat messages)");
  }
  if (req->has_add_special()) in.add_special = req->add_special();
  if (in.kind == GenerateInput::PromptKind::Text && in.text.size() > limits_.max_prompt_bytes) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "text: over the size limit");
  }
  try {
    for (int32_t id : text_.tokenize(in)) {
      out->add_ids(id);
      out->add_pieces(valid_utf8(text_.tokenizer().token_to_piece(id)));
    }
  } catch (const RequestError& e) {
    return status_of(e);
  } catch (const std::exception& e) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, e.what());
  }
  return grpc::Status::OK;
}

grpc::Status PipeLLMService::Detokenize(grpc::ServerContext*, const v1::DetokenizeRequest* req,
                                        v1::DetokenizeResponse* out) {
  const int32_t n_vocab = text_.tokenizer().n_vocab();
  std::vector<int32_t> ids;
  for (int i = 0; i < req->ids_size(); ++i) {
    const int32_t id = req->ids(i);
    if (id < 0 || id >= n_vocab) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "ids[" + std::to_string(i) + "]: unknown token id " + std::to_string(id) +
                              " (the vocabulary has ids 0.." + std::to_string(n_vocab - 1) + ")");
    }
    ids.push_back(id);
  }
  out->set_text(valid_utf8(text_.tokenizer().decode(ids)));
  return grpc::Status::OK;
}

grpc::Status PipeLLMService::GetModelInfo(grpc::ServerContext*, const v1::ModelInfoRequest*, v1::ModelInfo* out) {
  const auto m = sched_.model();
  const auto st = sched_.stats();
  out->set_backend(backend_);
  out->set_serving(sched_.serving());
  out->set_queued(st.queued);
  out->set_in_flight(st.in_flight);
  out->set_bos_id(text_.tokenizer().bos_id());
  out->set_eos_id(text_.tokenizer().eos_id());
  out->set_n_vocab(text_.tokenizer().n_vocab());
  if (m) {
    out->set_model_name(m->model_name);
    out->set_architecture(m->arch);
    out->set_n_vocab(m->n_vocab);
    out->set_n_layer(m->n_layer);
    out->set_n_embd(m->n_embd);
    out->set_context_length(m->n_ctx);
    out->set_max_sequences(m->max_sequences);
    out->set_n_stages(m->n_stages);
    out->set_plan(m->plan);
  }
  return grpc::Status::OK;
}

}  // namespace pipellm::coord
