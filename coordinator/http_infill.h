// llama-server's POST /infill: fill in the middle, as code editors ask for it (llama.vscode,
// llama.vim). The body is /completion's plus input_prefix and input_suffix (text, or token ids
// and texts mixed) and input_extra ([{filename, text}], other files for context); the prompt is
// laid out with the model's FIM tokens as llama-server does:
//   [FIM_REP]myproject\n [FIM_SEP]<filename>\n<text> ... [FIM_SEP]filename\n    (the extra context)
//   [BOS] [FIM_PRE]<prefix tail><prompt> [FIM_SUF]<suffix head> [FIM_MID]
// The prefix keeps its last 3/4 of a batch of tokens (llama-server's default -b 2048), the suffix
// its first quarter less the prompt's tokens and 2, the extra context its last tokens that fit
// the context after a batch and twice n_predict. Without FIM_REP / FIM_SEP the extra chunks are
// separated by a "--- snippet ---" line instead. No I/O: unit-testable.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace pipellm::coord {

constexpr int kInfillBatch = 2048;  // llama-server's default logical batch (-b)

// The prompt tokens of an /infill body; `n_predict` the request's (-1: to the end of the context),
// `n_ctx` the sequence's context. Throws HttpError 400 naming the field (input_prefix,
// input_suffix, input_extra, prompt) for a wrong type, or "not_supported" for a model without
// FIM prefix, suffix and middle tokens.
// `spm`: llama-server's --spm-infill order, the suffix part before the prefix part
// ([FIM_SUF]suffix[FIM_PRE]prefix prompt[FIM_MID]), as some models were trained.
std::vector<int32_t> infill_prompt(const Tokenizer& tok, const nlohmann::json& body, int n_predict, int n_ctx,
                                   bool spm = false);

}  // namespace pipellm::coord
