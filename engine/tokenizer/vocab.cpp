#include "engine/tokenizer/vocab.h"

#include <algorithm>
#include <cctype>
#include <initializer_list>

#include "base/error.h"
#include "engine/gguf/gguf_file.h"

namespace pipellm::tok {

namespace {

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
uint32_t attr_from_type(int32_t t) {
  switch (t) {
    case 1: return kAttrNormal;
    case 2: return kAttrUnknown;
    case 3: return kAttrControl;
    case 4: return kAttrUserDefined;
    case 5: return kAttrUnused;
    case 6: return kAttrByte;
    default: return 0;  // undefined
  }
}

bool is_one_of(std::string_view s, std::initializer_list<std::string_view> names) {
  return std::find(names.begin(), names.end(), s) != names.end();
}

// Special ids from tokenizer.ggml.*_token_id; an id outside the vocabulary keeps the default.
void read_special_ids(const GgufFile& f, Vocab& v) {
  const int32_t n = v.n_tokens();
  auto read = [&](const char* key, int32_t& id) {
    if (id >= n) id = -1;
    if (!f.has(key)) return;
    const int64_t x = f.get_i64(key);
    if (x >= 0 && x < n) id = static_cast<int32_t>(x);
  };
  read("tokenizer.ggml.bos_token_id", v.bos);
  read("tokenizer.ggml.eos_token_id", v.eos);
  read("tokenizer.ggml.eot_token_id", v.eot);
  read("tokenizer.ggml.eom_token_id", v.eom);
  read("tokenizer.ggml.unknown_token_id", v.unk);
  read("tokenizer.ggml.fim_pre_token_id", v.fim_pre);
  read("tokenizer.ggml.fim_suf_token_id", v.fim_suf);
  read("tokenizer.ggml.fim_mid_token_id", v.fim_mid);
  read("tokenizer.ggml.fim_pad_token_id", v.fim_pad);
  read("tokenizer.ggml.fim_rep_token_id", v.fim_rep);
  read("tokenizer.ggml.fim_sep_token_id", v.fim_sep);
}

// llama.cpp recognises end-of-turn and FIM tokens by their text and forces them to be control
// tokens; this changes how they are matched in text and rendered, so it is part of parity.
void apply_text_fixups(Vocab& v) {
  constexpr std::string_view kEotTexts[] = {
      "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
      "<EOT>", "_<EOT>", "[EOT]", "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
      "<end_of_utterance>"};
  // FIM tokens by kind (prefix, suffix, middle, pad, repository, file separator).
  constexpr std::string_view kFimPre[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>",
                                          "\xe2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>",
                                          "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>"};
  constexpr std::string_view kFimSuf[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>",
                                          "\xe2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>",
                                          "<\xef\xbd\x9c" "fim\xe2\x96\x81" "hole\xef\xbd\x9c>"};
  constexpr std::string_view kFimMid[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>",
                                          "\xe2\x96\x81<MID>", "<|code_middle|>", "<|middle|>",
                                          "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>"};
  constexpr std::string_view kFimPad[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"};
  constexpr std::string_view kFimRep[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"};
  constexpr std::string_view kFimSep[] = {"<|file_sep|>"};
  constexpr std::string_view kEogTexts[] = {
      "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
      "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
      "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
      "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", "[e~["};
  // Each listed text is looked up (not each token compared with the lists: 262k tokens x 70
  // texts was a noticeable part of loading). The lowest id wins where several texts match.
  auto lowest_id = [&v](const auto& texts) {
    int32_t best = -1;
    for (std::string_view t : texts) {
      const int32_t id = v.find(t);
      if (id >= 0 && (best < 0 || id < best)) best = id;
    }
    return best;
  };
  if (v.eot < 0 && (v.eot = lowest_id(kEotTexts)) >= 0) v.attr[v.eot] |= kAttrControl;
  if (v.eom < 0 && (v.eom = v.find("<|eom_id|>")) >= 0) v.attr[v.eom] |= kAttrControl;
  const auto fim = [&](const auto& texts, int32_t& id) {
    for (std::string_view t : texts) {
      if (const int32_t i = v.find(t); i >= 0) v.attr[i] |= kAttrControl;
    }
    if (id < 0) id = lowest_id(texts);
  };
  fim(kFimPre, v.fim_pre);
  fim(kFimSuf, v.fim_suf);
  fim(kFimMid, v.fim_mid);
  fim(kFimPad, v.fim_pad);
  fim(kFimRep, v.fim_rep);
  fim(kFimSep, v.fim_sep);
  for (int32_t id = 0; id < v.n_tokens(); ++id) {
    if ((v.attr[id] & kAttrControl) && v.text[id].find("unused") != std::string::npos) v.attr[id] |= kAttrUnused;
  }
  for (std::string_view t : kEogTexts) {
    if (const int32_t id = v.find(t); id >= 0) {
      v.eog.insert(id);
      v.attr[id] |= kAttrControl;
    }
  }
  for (std::string_view t : {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"}) {
    if (const int32_t id = v.find(t); id >= 0) v.attr[id] = kAttrUserDefined;  // gpt-oss: always rendered
  }
  for (int32_t id : {v.eos, v.eot, v.eom}) {
    if (id >= 0) v.eog.insert(id);
  }
  // o200k-harmony style vocabularies: <|end|> is not an end of generation there.
  auto eog_has = [&](std::initializer_list<std::string_view> l) {
    return std::any_of(v.eog.begin(), v.eog.end(), [&](int32_t id) { return is_one_of(v.text[id], l); });
  };
  if ((eog_has({"<|return|>"}) && eog_has({"<|call|>", "<|calls|>"})) ||
      (eog_has({"<|call|>", "<|calls|>"}) && eog_has({"<|flush|>"}))) {
    for (int32_t id : std::vector<int32_t>(v.eog.begin(), v.eog.end())) {
      if (v.text[id] == "<|end|>") {
        v.eog.erase(id);
        v.attr[id] = kAttrUserDefined;
      }
    }
  }
}

void build_special_list(Vocab& v) {
  for (int32_t id = 0; id < v.n_tokens(); ++id) {
    if (v.attr[id] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) v.special_tokens.push_back(id);
  }
  std::stable_sort(v.special_tokens.begin(), v.special_tokens.end(),
                   [&](int32_t a, int32_t b) { return v.text[a].size() > v.text[b].size(); });
}

// Strip attributes llama.cpp sets by model name.
void apply_name_fixups(const GgufFile& f, Vocab& v) {
  std::string name = f.get_string_or("general.name", "");
  std::transform(name.begin(), name.end(), name.begin(),
                 [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
  const std::string arch = f.get_string_or("general.architecture", "");
  auto set = [&](std::string_view tok, uint32_t bit, bool on) {
    const int32_t id = v.find(tok);
    if (id < 0) return;
    v.attr[id] = on ? (v.attr[id] | bit) : (v.attr[id] & ~bit);
  };
  auto contains = [](const std::string& s, std::initializer_list<const char*> subs) {
    return std::any_of(subs.begin(), subs.end(), [&](const char* x) { return s.find(x) != std::string::npos; });
  };
  if (contains(v.pre, {"jina-v2-de", "jina-v2-es", "jina-v2-code"}) ||
      contains(arch, {"nomic-bert-moe", "jina-bert-v3"})) {
    set("<mask>", kAttrLstrip, true);
  } else if (contains(name, {"phi-3", "phi3"})) {
    for (int32_t id : v.special_tokens) v.attr[id] |= kAttrRstrip;
    set("</s>", kAttrRstrip, true);
    for (const char* t : {"<unk>", "<s>", "<|endoftext|>"}) set(t, kAttrRstrip, false);
  } else if (contains(name, {"modern-bert"})) {
    set("[MASK]", kAttrLstrip, true);
  }
}

}  // namespace

void TokenIndex::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  slots_.assign(cap, Slot{});
  mask_ = cap - 1;
}

int32_t TokenIndex::insert(const std::vector<std::string>& texts, int32_t id) {
  const uint64_t h = hash(texts[id]);
  const auto tag = static_cast<uint32_t>(h >> 32);
  for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.id < 0) {
      s = {tag, id};
      return -1;
    }
    if (s.tag == tag && texts[s.id] == texts[id]) return s.id;
  }
}

int32_t TokenIndex::find(const std::vector<std::string>& texts, std::string_view str) const {
  if (slots_.empty()) return -1;
  const uint64_t h = hash(str);
  const auto tag = static_cast<uint32_t>(h >> 32);
  for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (s.id < 0) return -1;
    if (s.tag == tag && texts[s.id] == str) return s.id;
  }
}

std::unique_ptr<Vocab> load_vocab(const GgufFile& f) {
  auto v = std::make_unique<Vocab>();
  const std::string model = f.get_string("tokenizer.ggml.model");
  v->pre = f.get_string_or("tokenizer.ggml.pre", "");
  PreTokenizerConfig pre_cfg;
  if (model == "llama") {
    v->type = VocabType::kSpm;
    v->bos = 1, v->eos = 2, v->unk = 0;
    v->add_space_prefix = true;
    v->add_bos = true;
  } else if (model == "gpt2") {
    v->type = VocabType::kBpe;
    v->bos = 11, v->eos = 11;
    auto cfg = find_pretokenizer_config(v->pre);
    if (!cfg) throw FormatError("tokenizer: unknown pre-tokenizer type '" + v->pre + "' (tokenizer.ggml.pre)");
    pre_cfg = *cfg;
    v->pre_regexes = pre_cfg.regexes;
    v->ignore_merges = pre_cfg.ignore_merges;
    v->clean_spaces = pre_cfg.clean_spaces;
    v->add_bos = pre_cfg.add_bos;
    if (!pre_cfg.has_bos) v->bos = -1;
    const auto& merges = f.get_string_array("tokenizer.ggml.merges");
    v->merges.assign(merges.begin(), merges.end());
  } else {
    throw FormatError("tokenizer: unsupported tokenizer.ggml.model '" + model + "' (expected llama or gpt2)");
  }
  v->add_space_prefix = f.get_bool_or("tokenizer.ggml.add_space_prefix", v->add_space_prefix);

  const auto& tokens = f.get_string_array("tokenizer.ggml.tokens");
  const size_t n = tokens.size();
  std::vector<float> scores;
  if (f.has("tokenizer.ggml.scores")) {
    scores = f.get_f32_array("tokenizer.ggml.scores");
    if (scores.size() < n) throw FormatError("tokenizer: tokenizer.ggml.scores has fewer entries than tokens");
  }
  std::vector<int32_t> types;
  if (f.has("tokenizer.ggml.token_type")) {
    types = f.get_i32_array("tokenizer.ggml.token_type");
    if (types.size() < n) throw FormatError("tokenizer: tokenizer.ggml.token_type has fewer entries than tokens");
  }
  v->text.reserve(n);
  v->score.resize(n, 0.0f);
  v->attr.resize(n, kAttrNormal);
  for (size_t i = 0; i < n; ++i) {
    v->text.emplace_back(tokens[i].empty() ? "[EMPTY_" + std::to_string(i) + "]" : std::string(tokens[i]));
    if (!scores.empty()) v->score[i] = scores[i];
    if (!types.empty()) v->attr[i] = attr_from_type(types[i]);
  }
  v->ids.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const int32_t dup = v->ids.insert(v->text, static_cast<int32_t>(i));
    if (dup >= 0) {
      throw FormatError("tokenizer: duplicate token '" + v->text[i] + "' (ids " + std::to_string(dup) + " and " +
                        std::to_string(i) + ") in tokenizer.ggml.tokens");
    }
  }

  read_special_ids(f, *v);
  v->add_bos = f.get_bool_or("tokenizer.ggml.add_bos_token", v->add_bos);
  v->add_eos = f.get_bool_or("tokenizer.ggml.add_eos_token", v->add_eos);
  if (v->add_bos && v->bos < 0) throw FormatError("tokenizer: tokenizer.ggml.add_bos_token is true but there is no BOS token");
  if (v->add_eos && v->eos < 0) throw FormatError("tokenizer: tokenizer.ggml.add_eos_token is true but there is no EOS token");

  apply_text_fixups(*v);
  build_special_list(*v);
  apply_name_fixups(f, *v);
  if (f.has("tokenizer.chat_template")) v->chat_template = f.get_string("tokenizer.chat_template");
  return v;
}

}  // namespace pipellm::tok
