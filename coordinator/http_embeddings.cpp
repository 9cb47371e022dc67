#include "coordinator/http_embeddings.h"

#include <cstring>

namespace pipellm::coord {

using nlohmann::json;

namespace {

[[noreturn]] void refuse(const std::string& param, const std::string& message, const std::string& code = "invalid_parameter") {
  throw HttpError(bad_request(param, message, code));
}

const char* kShapes = "a string, an array of strings, an array of token ids or an array of arrays of token ids";

std::vector<int32_t> token_ids(const json& a, const std::string& where, int n_vocab) {
  std::vector<int32_t> ids;
  ids.reserve(a.size());
  for (size_t j = 0; j < a.size(); ++j) {
    const json& v = a[j];
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= n_vocab) {
      refuse("input", where + "[" + std::to_string(j) + "]: not a token id (the vocabulary has ids 0.." +
                          std::to_string(n_vocab - 1) + ")");
    }
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return ids;
}

std::vector<int32_t> text_ids(const json& s, const std::string& where, const Tokenizer& tok, size_t max_bytes) {
  const std::string& text = s.get_ref<const std::string&>();
  if (text.empty()) refuse("input", where + ": empty string");
  if (text.size() > max_bytes) {
    refuse("input", where + ": " + std::to_string(text.size()) + " bytes, more than the limit of " + std::to_string(max_bytes),
           "input_too_large");
  }
  return tok.encode(text, /*add_special=*/true, /*parse_special=*/true);
}

bool all_integers(const json& a) {
  for (const json& v : a) {
    if (!v.is_number()) return false;
  }
  return true;
}

}  // namespace

EmbeddingRequest parse_embedding_request(const json& body, const Tokenizer& tok, int n_ctx, int n_embd, bool oai,
                                         size_t max_bytes) {
  EmbeddingRequest r;
  auto in = body.find("input");
  std::string name = "input";
  if (in == body.end() && !oai) {
    in = body.find("content");
    name = "content";
  }
  if (in == body.end()) refuse("input", oai ? "input: missing" : "input: missing (give \"input\" or \"content\")");
  const json& v = *in;
  const int n_vocab = tok.n_vocab();
  if (v.is_string()) {
    r.inputs.push_back(text_ids(v, name, tok, max_bytes));
  } else if (v.is_array()) {
    if (v.empty()) refuse("input", name + ": empty array");
    if (all_integers(v)) {
      r.inputs.push_back(token_ids(v, name, n_vocab));
    } else {
      if (v.size() > kMaxEmbeddingInputs) {
        refuse("input", name + ": " + std::to_string(v.size()) + " inputs, more than the limit of " +
                            std::to_string(kMaxEmbeddingInputs));
      }
      for (size_t i = 0; i < v.size(); ++i) {
        const std::string where = name + "[" + std::to_string(i) + "]";
        const json& e = v[i];
        if (e.is_string()) {
          r.inputs.push_back(text_ids(e, where, tok, max_bytes));
        } else if (e.is_array()) {
          if (e.empty()) refuse("input", where + ": empty array");
          r.inputs.push_back(token_ids(e, where, n_vocab));
        } else {
          refuse("input", where + ": must be a string or an array of token ids (" + name + " is " + kShapes + ")");
        }
      }
    }
  } else {
    refuse("input", name + ": must be " + kShapes);
  }
  for (size_t i = 0; i < r.inputs.size(); ++i) {
    const std::string where = r.inputs.size() == 1 && !v.is_array() ? name : name + "[" + std::to_string(i) + "]";
    if (r.inputs[i].empty()) refuse("input", where + ": no tokens");
    if (static_cast<int64_t>(r.inputs[i].size()) > n_ctx) {
      refuse("input", where + ": " + std::to_string(r.inputs[i].size()) + " tokens, more than the context of " +
                          std::to_string(n_ctx),
             "input_too_long");
    }
  }
  if (const auto f = body.find("encoding_format"); f != body.end()) {
    if (!f->is_string() || (*f != "float" && *f != "base64")) {
      refuse("encoding_format", "encoding_format: must be \"float\" or \"base64\"");
    }
    r.base64 = *f == "base64";
  }
  if (const auto n = body.find("embd_normalize"); n != body.end()) {
    if (!n->is_number_integer() || n->get<int64_t>() < -1 || n->get<int64_t>() > 1000) {
      refuse("embd_normalize", "embd_normalize: must be an integer from -1 to 1000 (-1 none, 0 max-abs, 1 taxicab, 2 L2, p > 2 p-norm)");
    }
    r.normalize = static_cast<int>(n->get<int64_t>());
  }
  if (const auto d = body.find("dimensions"); d != body.end()) {
    if (!d->is_number_integer() || d->get<int64_t>() != n_embd) {
      refuse("dimensions", "dimensions: this model's embeddings have " + std::to_string(n_embd) +
                               " dimensions (shortening them is not supported)");
    }
  }
  return r;
}

std::string base64_floats(const std::vector<float>& v) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string bytes(v.size() * sizeof(float), '\0');
  for (size_t i = 0; i < v.size(); ++i) {
    uint32_t u;
    std::memcpy(&u, &v[i], sizeof u);
    for (int b = 0; b < 4; ++b) bytes[i * 4 + static_cast<size_t>(b)] = static_cast<char>((u >> (8 * b)) & 0xff);
  }
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t w = 0;
    for (size_t k = 0; k < 3; ++k) w = (w << 8) | (k < n ? static_cast<uint8_t>(bytes[i + k]) : 0u);
    for (size_t k = 0; k < 4; ++k) out += k <= n ? kAlphabet[(w >> (18 - 6 * k)) & 0x3f] : '=';
  }
  return out;
}

json run_embeddings(Embedder* embedder, const Tokenizer& tok, const json& body, const std::string& model, bool oai,
                    size_t max_bytes) {
  if (embedder == nullptr) {
    ApiError e;
    e.status = 501;
    e.type = "not_supported_error";
    e.code = "embeddings_disabled";
    e.message = "embeddings are off on this server: start pipellm-coordinator with --embeddings";
    throw HttpError(e);
  }
  if (oai && embedder->pooling() == Pooling::None) {
    ApiError e = bad_request("input",
                             "the server's pooling is none (one vector per token, what generative models have), which "
                             "/v1/embeddings cannot return: start the server with --pooling mean|cls|last, or use "
                             "/embedding for the per-token vectors",
                             "pooling_none");
    throw HttpError(e);
  }
  const EmbeddingRequest r = parse_embedding_request(body, tok, embedder->n_ctx(), embedder->n_embd(), oai, max_bytes);
  json data = json::array();
  int64_t prompt_tokens = 0;
  for (size_t i = 0; i < r.inputs.size(); ++i) {
    std::vector<std::vector<float>> vecs = embedder->embed(r.inputs[i]);
    prompt_tokens += static_cast<int64_t>(r.inputs[i].size());
    if (embedder->pooling() != Pooling::None) {  // per-token vectors stay as they are (llama-server)
      for (auto& vec : vecs) normalize_embedding(vec.data(), static_cast<int64_t>(vec.size()), r.normalize);
    }
    if (oai) {
      json item = {{"object", "embedding"}, {"index", i}};
      if (r.base64) {
        item["embedding"] = base64_floats(vecs[0]);
      } else {
        item["embedding"] = vecs[0];
      }
      data.push_back(std::move(item));
    } else {
      data.push_back({{"index", i}, {"embedding", vecs}});
    }
  }
  if (!oai) return data;
  return {{"object", "list"},
          {"data", std::move(data)},
          {"model", model},
          {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
}

}  // namespace pipellm::coord
