#include "stage_worker/request_io.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "base/error.h"

namespace pipellm {

std::vector<int32_t> stop_token_ids(const GgufFile& f, const Tokenizer* tok) {
  std::vector<int32_t> ids;
  if (tok != nullptr) {
    for (int32_t id = 0; id < tok->n_vocab(); ++id) {
      if (tok->is_eog(id)) ids.push_back(id);
    }
    return ids;
  }
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"}) {
    if (f.has(key)) ids.push_back(static_cast<int32_t>(f.get_i64(key)));
  }
  return ids;
}

namespace {

std::vector<int32_t> parse_ids(const std::string& s, const std::string& where) {
  std::vector<int32_t> ids;
  std::istringstream in(s);
  std::string item;
  while (in >> item) {
    try {
      size_t used = 0;
      const long v = std::stol(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw std::invalid_argument("x");
      ids.push_back(static_cast<int32_t>(v));
    } catch (const std::exception&) {
      throw InvalidArgument(where + ": '" + item + "' is not a token id");
    }
  }
  return ids;
}

std::vector<int32_t> encode(const Tokenizer* tok, const std::string& text, const std::string& where) {
  if (tok == nullptr) throw InvalidArgument(where + ": a text prompt needs the model's tokenizer");
  return tok->encode(text, /*add_special=*/true, /*parse_special=*/true);
}

}  // namespace

std::vector<Request> build_requests(const WorkerOptions& o, const Tokenizer* tok, const std::vector<int32_t>& stop_ids) {
  std::vector<Request> out;
  auto base = [&](int64_t id) {
    Request r;
    r.id = id;
    r.max_new_tokens = o.max_tokens;
    r.sampling = o.sampling;
    if (!o.ignore_eos) r.stop_tokens = stop_ids;
    return r;
  };
  if (o.have_prompt) {
    Request r = base(0);
    r.prompt = encode(tok, o.prompt, "--prompt");
    out.push_back(std::move(r));
  } else if (!o.tokens.empty()) {
    Request r = base(0);
    r.prompt = parse_ids(o.tokens, "--tokens");
    out.push_back(std::move(r));
  } else if (!o.requests.empty()) {
    std::ifstream in(o.requests);
    if (!in) throw InvalidArgument("--requests: cannot open " + o.requests);
    std::string line;
    int line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = o.requests + ":" + std::to_string(line_no);
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const std::exception& e) {
        throw InvalidArgument(where + ": " + e.what());
      }
      Request r = base(static_cast<int64_t>(out.size()));
      try {
        if (j.contains("prompt")) {
          r.prompt = encode(tok, j.at("prompt").get<std::string>(), where);
        } else if (j.contains("tokens")) {
          r.prompt = j.at("tokens").get<std::vector<int32_t>>();
        } else {
          throw InvalidArgument("needs \"prompt\" or \"tokens\"");
        }
        r.max_new_tokens = j.value("max_tokens", r.max_new_tokens);
        r.sampling.temperature = j.value("temperature", r.sampling.temperature);
        r.sampling.top_k = j.value("top_k", r.sampling.top_k);
        r.sampling.top_p = j.value("top_p", r.sampling.top_p);
        r.sampling.min_p = j.value("min_p", r.sampling.min_p);
        r.sampling.repeat_penalty = j.value("repeat_penalty", r.sampling.repeat_penalty);
        r.sampling.seed = j.value("seed", r.sampling.seed);
        r.sampling.cache_prompt = j.value("cache_prompt", r.sampling.cache_prompt);
      } catch (const InvalidArgument& e) {
        throw InvalidArgument(where + ": " + e.what());
      } catch (const nlohmann::json::exception& e) {
        throw InvalidArgument(where + ": " + e.what());
      }
      out.push_back(std::move(r));
    }
    if (out.empty()) throw InvalidArgument("--requests: " + o.requests + " holds no request");
  }
  return out;
}

ResultCollector::ResultCollector(const std::vector<Request>& reqs, const Tokenizer* tok, bool keep_logits, bool stream_text)
    : tok_(tok), keep_logits_(keep_logits), stream_(stream_text && reqs.size() == 1 && tok != nullptr) {
  for (const Request& r : reqs) {
    order_.push_back(r.id);
    Result& res = results_[r.id];
    if (tok_ != nullptr) res.decoder = std::make_unique<StreamingDecoder>(*tok_);
  }
}

void ResultCollector::on_token(const TokenEvent& e) {
  Result& r = results_.at(e.seq_id);
  r.finish = e.finish;
  if (e.logits != nullptr && keep_logits_) r.logits.emplace_back(e.logits, e.logits + e.n_vocab);
  if (e.finish == FinishReason::Stop) {
    if (r.decoder) {
      const std::string rest = r.decoder->flush();
      r.text += rest;
      if (stream_) std::fwrite(rest.data(), 1, rest.size(), stdout);
    }
  } else {
    r.tokens.push_back(e.token);
    if (r.decoder) {
      std::string piece = r.decoder->push(e.token);
      if (e.finish != FinishReason::None) piece += r.decoder->flush();
      r.text += piece;
      if (stream_ && !piece.empty()) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      }
    }
  }
}

void ResultCollector::print_text() const {
  if (tok_ == nullptr) {
    for (int64_t id : order_) {
      std::printf("[%lld]", static_cast<long long>(id));
      for (int32_t t : results_.at(id).tokens) std::printf(" %d", t);
      std::printf("\n");
    }
    return;
  }
  if (stream_) {
    std::printf("\n");
    return;
  }
  for (int64_t id : order_) std::printf("[%lld] %s\n", static_cast<long long>(id), results_.at(id).text.c_str());
}

void ResultCollector::write_json(const std::string& path, const HeadStats& st, int n_ranks, const std::string& transport) const {
  nlohmann::json j;
  j["ranks"] = n_ranks;
  j["transport"] = transport;
  j["stats"] = {{"steps", st.steps},
                {"tokens_fed", st.tokens_fed},
                {"generated_tokens", st.generated_tokens},
                {"seconds", st.seconds},
                {"first_token_seconds", st.first_token_seconds}};
  nlohmann::json reqs = nlohmann::json::array();
  for (int64_t id : order_) {
    const Result& r = results_.at(id);
    nlohmann::json x;
    x["id"] = id;
    x["tokens"] = r.tokens;
    x["finish"] = finish_reason_name(r.finish);
    if (tok_ != nullptr) x["text"] = r.text;
    if (keep_logits_) x["logits"] = r.logits;
    reqs.push_back(std::move(x));
  }
  j["requests"] = std::move(reqs);
  std::ofstream out(path);
  if (!out) throw Error("--json: cannot write " + path);
  out << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  if (!out) throw Error("--json: error writing " + path);
}

}  // namespace pipellm
