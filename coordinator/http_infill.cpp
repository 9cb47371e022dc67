#include "coordinator/http_infill.h"

#include <algorithm>
#include <string>

#include "coordinator/http_openai.h"

namespace pipellm::coord {

using nlohmann::json;

namespace {

[[noreturn]] void refuse(const std::string& param, const std::string& message, const std::string& code = "invalid_parameter") {
  throw HttpError(bad_request(param, message, code));
}

std::vector<int32_t> text_tokens(const Tokenizer& tok, const std::string& text) {
  return tok.encode(text, /*add_special=*/false, /*parse_special=*/false);
}

// A string, or an array of token ids and strings (llama-server's "mixed" prompts); absent: none.
std::vector<int32_t> mixed_tokens(const Tokenizer& tok, const json& body, const char* name) {
  const auto it = body.find(name);
  if (it == body.end() || it->is_null()) return {};
  if (it->is_string()) return text_tokens(tok, it->get<std::string>());
  if (!it->is_array()) refuse(name, std::string(name) + ": must be a string or an array of token ids and strings");
  std::vector<int32_t> out;
  for (const json& e : *it) {
    if (e.is_string()) {
      const auto t = text_tokens(tok, e.get<std::string>());
      out.insert(out.end(), t.begin(), t.end());
    } else if (e.is_number_integer() && e.get<int64_t>() >= 0 && e.get<int64_t>() < tok.n_vocab()) {
      out.push_back(static_cast<int32_t>(e.get<int64_t>()));
    } else {
      refuse(name, std::string(name) + ": " + e.dump() + " is not a string or a token id of the vocabulary");
    }
  }
  return out;
}

std::vector<int32_t> extra_context(const Tokenizer& tok, const json& body, const Tokenizer::FimTokens& fim) {
  std::vector<int32_t> out;
  const auto add = [&](const std::vector<int32_t>& t) { out.insert(out.end(), t.begin(), t.end()); };
  if (fim.rep >= 0) {
    out.push_back(fim.rep);
    add(text_tokens(tok, "myproject\n"));
  }
  const auto it = body.find("input_extra");
  if (it != body.end() && !it->is_null()) {
    if (!it->is_array()) refuse("input_extra", "input_extra: must be an array of {\"filename\", \"text\"} objects");
    for (const json& chunk : *it) {
      const auto text = chunk.is_object() ? chunk.find("text") : chunk.end();
      const auto file = chunk.is_object() ? chunk.find("filename") : chunk.end();
      if (!chunk.is_object() || (text != chunk.end() && !text->is_string()) || (file != chunk.end() && !file->is_string())) {
        refuse("input_extra", "input_extra: each chunk must be {\"filename\": string, \"text\": string}");
      }
      if (fim.sep >= 0) {
        out.push_back(fim.sep);
        add(text_tokens(tok, (file != chunk.end() ? file->get<std::string>() : std::string("tmp")) + "\n"));
      } else {
        add(text_tokens(tok, "\n\n--- snippet ---\n\n"));
      }
      if (text != chunk.end()) add(text_tokens(tok, text->get<std::string>()));
    }
  }
  if (fim.sep >= 0) {
    out.push_back(fim.sep);
    add(text_tokens(tok, "filename\n"));
  }
  return out;
}

}  // namespace

std::vector<int32_t> infill_prompt(const Tokenizer& tok, const json& body, int n_predict, int n_ctx, bool spm) {
  const Tokenizer::FimTokens fim = tok.fim_tokens();
  if (fim.pre < 0 || fim.suf < 0 || fim.mid < 0) {
    refuse("input_prefix", "infill: the model has no fill-in-the-middle tokens (prefix, suffix and middle)", "not_supported");
  }
  std::vector<int32_t> prefix = mixed_tokens(tok, body, "input_prefix");
  std::vector<int32_t> suffix = mixed_tokens(tok, body, "input_suffix");
  const std::vector<int32_t> prompt = mixed_tokens(tok, body, "prompt");
  const std::vector<int32_t> extra = extra_context(tok, body, fim);

  const int n_prefix = std::min<int>(static_cast<int>(prefix.size()), 3 * (kInfillBatch / 4));
  const int n_suffix = std::min<int>(static_cast<int>(suffix.size()),
                                     std::max<int>(0, kInfillBatch / 4 - (2 + static_cast<int>(prompt.size()))));
  const int64_t room = static_cast<int64_t>(n_ctx) - kInfillBatch - 2 * static_cast<int64_t>(n_predict);
  const int n_extra = static_cast<int>(std::min<int64_t>(std::max<int64_t>(0, room), static_cast<int64_t>(extra.size())));

  std::vector<int32_t> pre = {fim.pre}, suf = {fim.suf};
  pre.insert(pre.end(), prefix.end() - n_prefix, prefix.end());
  pre.insert(pre.end(), prompt.begin(), prompt.end());
  suf.insert(suf.end(), suffix.begin(), suffix.begin() + n_suffix);
  std::vector<int32_t> out(extra.end() - n_extra, extra.end());
  if (tok.add_bos() && tok.bos_id() >= 0) out.push_back(tok.bos_id());
  for (const std::vector<int32_t>* part : {spm ? &suf : &pre, spm ? &pre : &suf}) out.insert(out.end(), part->begin(), part->end());
  out.push_back(fim.mid);
  return out;
}

}  // namespace pipellm::coord
