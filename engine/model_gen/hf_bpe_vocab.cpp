#include "engine/model_gen/hf_bpe_vocab.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "engine/gguf/gguf_writer.h"
#include "engine/util/json_file.h"

namespace pipellm {
namespace {

using nlohmann::json;

bool is_null_or(const json& j, const char* key, const json& expected) {
  return !j.contains(key) || j[key].is_null() || j[key] == expected;
}

// The GPT-2 scheme: one ByteLevel pre-tokenizer with its regex and no prefix space.
void check_pre_tokenizer(const json& pt, const std::string& path) {
  if (!pt.is_object() || pt.value("type", "") != "ByteLevel")
    throw FormatError(path + ": pre_tokenizer must be ByteLevel (found " + pt.dump() + ")");
  if (pt.value("add_prefix_space", false)) throw FormatError(path + ": ByteLevel add_prefix_space is not supported");
  if (!pt.value("use_regex", true)) throw FormatError(path + ": ByteLevel without its regex is not supported");
}

void check_model(const json& m, const std::string& path) {
  if (!m.is_object() || m.value("type", "") != "BPE") throw FormatError(path + ": model.type must be BPE");
  if (!is_null_or(m, "byte_fallback", false)) throw FormatError(path + ": BPE byte_fallback is not supported");
  if (!is_null_or(m, "ignore_merges", false)) throw FormatError(path + ": BPE ignore_merges is not supported");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"}) {
    if (m.contains(k) && !m[k].is_null() && m[k] != "") throw FormatError(path + ": BPE " + k + " is not supported");
  }
}

std::string merge_string(const json& m, const std::string& path) {
  if (m.is_string()) return m.get<std::string>();  // older files: "left right"
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
    return m[0].get<std::string>() + " " + m[1].get<std::string>();
  throw FormatError(path + ": a merge is neither \"a b\" nor [\"a\", \"b\"]: " + m.dump());
}

}  // namespace

HfBpeVocab read_hf_byte_level_bpe(const std::string& path) {
  const json j = read_json_file(path);
  if (j.contains("normalizer") && !j["normalizer"].is_null())
    throw FormatError(path + ": a normalizer is not supported (found " + j["normalizer"].dump() + ")");
  if (!j.contains("pre_tokenizer")) throw FormatError(path + ": no pre_tokenizer");
  check_pre_tokenizer(j["pre_tokenizer"], path);
  if (!j.contains("model")) throw FormatError(path + ": no model");
  const json& m = j["model"];
  check_model(m, path);
  if (!m.contains("vocab") || !m["vocab"].is_object()) throw FormatError(path + ": model.vocab is not an object");

  HfBpeVocab v;
  const size_t n = m["vocab"].size();
  v.tokens.assign(n, std::string());
  v.types.assign(n, 1);
  std::vector<bool> seen(n, false);
  for (const auto& [text, idj] : m["vocab"].items()) {
    if (!idj.is_number_integer()) throw FormatError(path + ": vocab entry '" + text + "' has no integer id");
    const int64_t id = idj.get<int64_t>();
    if (id < 0 || static_cast<size_t>(id) >= n || seen[static_cast<size_t>(id)])
      throw FormatError(path + ": vocab ids are not 0.." + std::to_string(n - 1) + " once each (id " +
                        std::to_string(id) + ")");
    seen[static_cast<size_t>(id)] = true;
    v.tokens[static_cast<size_t>(id)] = text;
  }
  if (j.contains("added_tokens")) {
    for (const auto& t : j["added_tokens"]) {
      const int64_t id = t.value("id", int64_t{-1});
      const std::string text = t.value("content", "");
      if (id < 0 || static_cast<size_t>(id) >= n || v.tokens[static_cast<size_t>(id)] != text)
        throw FormatError(path + ": added token '" + text + "' (id " + std::to_string(id) + ") is not in model.vocab");
      v.types[static_cast<size_t>(id)] = t.value("special", false) ? 3 : 4;
    }
  }
  if (!m.contains("merges") || !m["merges"].is_array()) throw FormatError(path + ": model.merges is not an array");
  v.merges.reserve(m["merges"].size());
  for (const auto& mj : m["merges"]) v.merges.push_back(merge_string(mj, path));
  return v;
}

void set_gguf_tokenizer(GgufWriter& w, const HfBpeVocab& v, const GgufTokenizerSettings& s) {
  const auto n = static_cast<int32_t>(v.tokens.size());
  for (int32_t id : {s.bos, s.eos}) {
    if (id >= n) throw InvalidArgument("special token id " + std::to_string(id) + " is outside the vocabulary of " +
                                       std::to_string(n));
  }
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", s.pre);
  w.set_string_array("tokenizer.ggml.tokens", v.tokens);
  w.set_i32_array("tokenizer.ggml.token_type", v.types);
  w.set_string_array("tokenizer.ggml.merges", v.merges);
  if (s.bos >= 0) w.set_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(s.bos));
  if (s.eos >= 0) w.set_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(s.eos));
  w.set_bool("tokenizer.ggml.add_bos_token", s.add_bos);
  w.set_bool("tokenizer.ggml.add_eos_token", false);
}

}  // namespace pipellm
