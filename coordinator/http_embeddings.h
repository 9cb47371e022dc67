// Embeddings over HTTP: OpenAI's POST /v1/embeddings and llama-server's POST /embedding (also
// /embeddings), computed by the coordinator's Embedder (engine/runtime/embedding.h: on this
// machine's CPU beside the generation path, whatever backend runs it; started by --embeddings).
//
// As llama-server does: without --embeddings the routes answer 501 saying so; /v1/embeddings
// refuses pooling none (one vector per token is not OpenAI's shape) while /embedding returns the
// per-token vectors unnormalized; pooled vectors are normalized by `embd_normalize` (default 2,
// L2; -1 none, 0 max-abs, 1 taxicab, p > 2 p-norm). Text is tokenized with the model's special
// tokens (BOS) and special-token text parsed; token ids are used as given. Unlike llama-server an
// empty string is refused (OpenAI refuses it too). No I/O here: the shapes are unit-testable.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "coordinator/http_openai.h"
#include "engine/runtime/embedding.h"
#include "engine/tokenizer/tokenizer.h"

namespace pipellm::coord {

struct EmbeddingRequest {
  std::vector<std::vector<int32_t>> inputs;  // one token sequence per input, in order
  bool base64 = false;                       // encoding_format "base64": little-endian float32 bytes
  int normalize = 2;                         // embd_normalize
};

constexpr size_t kMaxEmbeddingInputs = 2048;  // OpenAI's limit of inputs per request

// The body of either route (`oai`: /v1/embeddings reads `input`; /embedding `input` or
// `content`). Throws HttpError 400 naming the field (`input`, `encoding_format`,
// `embd_normalize`, `dimensions`): missing or empty input, an empty string or token list, a
// token id outside the vocabulary, an input longer than `n_ctx` tokens, a text over `max_bytes`,
// more than kMaxEmbeddingInputs inputs, anything but a string, an array of strings, an array of
// token ids or an array of such arrays.
EmbeddingRequest parse_embedding_request(const nlohmann::json& body, const Tokenizer& tok, int n_ctx, int n_embd, bool oai,
                                         size_t max_bytes);

// Base64 of the floats' little-endian bytes (OpenAI's encoding_format "base64").
std::string base64_floats(const std::vector<float>& v);

// The whole request: refusals as HttpError (501 without an embedder, 400 for pooling none on
// /v1/embeddings, the parse errors above); else the response body: OpenAI's
// {object: "list", data: [{object: "embedding", index, embedding}], model, usage} or
// llama-server's [{index, embedding: [[...], ...]}].
nlohmann::json run_embeddings(Embedder* embedder, const Tokenizer& tok, const nlohmann::json& body, const std::string& model,
                              bool oai, size_t max_bytes);

}  // namespace pipellm::coord
