#include "engine/runtime/grammar/json_schema.h"

#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <vector>

#include "base/error.h"
#include "engine/runtime/grammar/gbnf_text.h"
#include "engine/runtime/grammar/int_range_gbnf.h"
#include "engine/runtime/grammar/json_gbnf_rules.h"
#include "engine/runtime/grammar/pattern_gbnf.h"
#include "engine/runtime/grammar/utf8.h"

namespace pipellm::grammar {
namespace {

using json = nlohmann::ordered_json;
constexpr int kMaxDepth = 128;  // nested schemas (not $ref recursion, which makes rules once)

// Rule names are letters, digits and '-' (GBNF); anything else becomes '-'.
std::string sanitize(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    if (ok) out += c;
    else if (out.empty() || out.back() != '-') out += '-';
  }
  return out.empty() ? "x" : out;
}

std::string sub(const std::string& name, const std::string& suffix) {
  return name.empty() ? suffix : name + "-" + suffix;
}

class SchemaConverter {
 public:
  explicit SchemaConverter(const json& root) : root_(root) {}

  std::string run() {
    rules_["root"] = "";  // reserved first: a property named "root" must not take the name
    rules_["root"] = expr(root_, "", 0);
    std::string out;
    for (const auto& [name, body] : rules_) out += name + " ::= " + body + "\n";
    return out;
  }

 private:
  [[noreturn]] void fail(const std::string& where, const std::string& what) const {
    throw InvalidArgument("json schema: " + (where.empty() ? std::string("root") : where) + ": " + what);
  }

  // A rule `base` (made unique unless an identical rule has the name) with `body`.
  std::string define(const std::string& base0, const std::string& body) {
    std::string base = sanitize(base0);
    if (json_rule(base) != nullptr) base += "-";  // keep the builtin names for the builtins
    for (int i = 0;; ++i) {
      const std::string name = i == 0 ? base : base + std::to_string(i);
      auto it = rules_.find(name);
      if (it == rules_.end()) {
        rules_[name] = body;
        return name;
      }
      if (it->second == body) return name;
    }
  }
  std::string reserve(const std::string& base) { return define(base, "\x01 reserved " + std::to_string(rules_.size())); }

  // A builtin rule and the builtins it uses.
  std::string builtin(const std::string& name) {
    if (rules_.count(name)) return name;
    const JsonRule* r = json_rule(name);
    rules_[name] = r->body;
    for (const std::string& d : r->deps) builtin(d);
    return name;
  }

  std::string visit(const json& s, const std::string& name, int depth) { return define(name, expr(s, name, depth)); }

  // The GBNF expression for schema `s`; sub-rules are named after `name`.
  std::string expr(const json& s, const std::string& name, int depth) {
    if (depth > kMaxDepth) fail(name, "nested deeper than " + std::to_string(kMaxDepth) + " levels");
    if (s.is_boolean()) {
      if (!s.get<bool>()) fail(name, "the schema `false` matches nothing");
      return builtin("value");
    }
    if (!s.is_object()) fail(name, "a schema must be an object or a boolean, not " + s.dump());
    const json type = s.contains("type") ? s["type"] : json();
    auto is_type = [&](const char* t) { return type.is_null() || type == t; };

    if (s.contains("$ref")) return ref(s["$ref"], name);
    if (s.contains("oneOf") || s.contains("anyOf")) {
      const json& alts = s.contains("oneOf") ? s["oneOf"] : s["anyOf"];
      if (!alts.is_array() || alts.empty()) fail(name, "anyOf/oneOf must be a non-empty array");
      std::vector<std::string> rules;
      for (size_t i = 0; i < alts.size(); ++i) rules.push_back(visit(alts[i], sub(name.empty() ? "alternative" : name, std::to_string(i)), depth + 1));
      return gbnf_join(rules, " | ");
    }
    if (type.is_array()) {
      std::vector<std::string> rules;
      for (const json& t : type) {
        json one = s;
        one["type"] = t;
        rules.push_back(visit(one, sub(name, t.is_string() ? t.get<std::string>() : "type"), depth + 1));
      }
      if (rules.empty()) fail(name, "an empty list of types");
      return gbnf_join(rules, " | ");
    }
    if (s.contains("const")) return gbnf_literal(s["const"].dump()) + sp();
    if (s.contains("enum")) {
      if (!s["enum"].is_array() || s["enum"].empty()) fail(name, "enum must be a non-empty array");
      std::vector<std::string> lits;
      for (const json& v : s["enum"]) lits.push_back(gbnf_literal(v.dump()));
      return "(" + gbnf_join(lits, " | ") + ")" + sp();
    }
    if (!type.is_null() && !type.is_string()) fail(name, "type must be a string or a list of strings");
    if (is_type("object") && (s.contains("properties") || (s.contains("additionalProperties") && s["additionalProperties"] != true))) {
      std::vector<std::pair<std::string, json>> props;
      if (s.contains("properties")) {
        if (!s["properties"].is_object()) fail(name, "properties must be an object");
        for (const auto& [k, v] : s["properties"].items()) props.emplace_back(k, v);
      }
      return object(props, required_of(s), name, s.contains("additionalProperties") ? s["additionalProperties"] : json(true),
                    depth);
    }
    if (is_type("object") && s.contains("allOf")) return all_of(s, name, depth);
    if (is_type("array") && (s.contains("items") || s.contains("prefixItems"))) return array(s, name, depth);
    if (is_type("string") && s.contains("pattern")) {
      if (!s["pattern"].is_string()) fail(name, "pattern must be a string");
      return R"("\"" )" + pattern_gbnf(s["pattern"].get<std::string>()) + R"( "\"")" + sp();
    }
    const std::string format = s.contains("format") && s["format"].is_string() ? s["format"].get<std::string>() : "";
    if (is_type("string") && (format == "uuid" || format == "date" || format == "time" || format == "date-time")) {
      return builtin(format == "uuid" ? "uuid" : format + "-string");
    }
    if (type == "string" && (s.contains("minLength") || s.contains("maxLength"))) {
      const long lo = count(s, "minLength", 0, name), hi = count(s, "maxLength", -1, name);
      if (hi >= 0 && hi < lo) fail(name, "maxLength below minLength");
      return R"("\"" )" + gbnf_repeat(builtin("char"), lo, hi) + R"( "\"")" + sp();
    }
    if (type == "integer" &&
        (s.contains("minimum") || s.contains("maximum") || s.contains("exclusiveMinimum") || s.contains("exclusiveMaximum"))) {
      return integer_range(s, name) + sp();
    }
    if (type.is_null()) return builtin("value");  // no constraint this converter knows: any value
    const std::string t = type.get<std::string>();
    if (t == "object" || t == "array" || t == "string" || t == "number" || t == "integer" || t == "boolean" || t == "null") {
      return builtin(t);
    }
    fail(name, "unknown type '" + t + "'");
  }

  // " space", the whitespace allowed after every value.
  std::string sp() {
    builtin("space");
    return " space";
  }

  long count(const json& s, const char* key, long dflt, const std::string& name) {
    if (!s.contains(key)) return dflt;
    if (!s[key].is_number_integer() || s[key].get<int64_t>() < 0) fail(name, std::string(key) + " must be a non-negative integer");
    const int64_t v = s[key].get<int64_t>();
    if (v > 10000) fail(name, std::string(key) + " above 10000 is not supported");
    return static_cast<long>(v);
  }

  std::set<std::string> required_of(const json& s) {
    std::set<std::string> req;
    if (s.contains("required") && s["required"].is_array()) {
      for (const json& r : s["required"]) {
        if (r.is_string()) req.insert(r.get<std::string>());
      }
    }
    return req;
  }

  std::string ref(const json& r, const std::string& name) {
    if (!r.is_string()) fail(name, "$ref must be a string");
    const std::string ref = r.get<std::string>();
    auto it = refs_.find(ref);
    if (it != refs_.end()) return it->second;
    if (ref.empty() || ref[0] != '#') fail(name, "$ref '" + ref + "': only local references (#/...) are supported");
    // JSON pointer: "/"-separated, ~1 is '/', ~0 is '~'.
    const json* target = &root_;
    std::string last = "root";
    size_t i = 1;
    while (i < ref.size()) {
      if (ref[i] != '/') fail(name, "$ref '" + ref + "' is not a JSON pointer");
      size_t j = ref.find('/', i + 1);
      if (j == std::string::npos) j = ref.size();
      std::string key;
      for (size_t k = i + 1; k < j; ++k) {
        if (ref[k] == '~' && k + 1 < j && (ref[k + 1] == '0' || ref[k + 1] == '1')) {
          key += ref[k + 1] == '0' ? '~' : '/';
          ++k;
        } else {
          key += ref[k];
        }
      }
      if (target->is_object() && target->contains(key)) {
        target = &(*target)[key];
      } else if (target->is_array() && !key.empty() && key.find_first_not_of("0123456789") == std::string::npos &&
                 std::stoul(key) < target->size()) {
        target = &(*target)[std::stoul(key)];
      } else {
        fail(name, "$ref '" + ref + "' does not resolve (no '" + key + "')");
      }
      last = key;
      i = j;
    }
    if (ref == "#") return "root";
    // Named before its body is built, so a schema that refers to itself ends in a rule reference.
    const std::string rule = reserve(last);
    refs_[ref] = rule;
    rules_[rule] = expr(*target, rule, 0);
    return rule;
  }

  std::string integer_range(const json& s, const std::string& name) {
    auto num = [&](const char* key) {
      if (!s[key].is_number()) fail(name, std::string(key) + " must be a number");
      return s[key].get<double>();
    };
    int64_t lo = -kMaxJsonInteger, hi = kMaxJsonInteger;
    auto clamp = [](double v) { return static_cast<int64_t>(std::max(-1e17, std::min(1e17, v))); };
    if (s.contains("minimum")) lo = std::max(lo, clamp(std::ceil(num("minimum"))));
    if (s.contains("maximum")) hi = std::min(hi, clamp(std::floor(num("maximum"))));
    if (s.contains("exclusiveMinimum")) {
      if (s["exclusiveMinimum"].is_boolean()) {  // draft 4: modifies minimum
        if (s["exclusiveMinimum"].get<bool>() && s.contains("minimum")) lo = std::max(lo, clamp(std::floor(num("minimum")) + 1));
      } else {
        lo = std::max(lo, clamp(std::floor(num("exclusiveMinimum")) + 1));
      }
    }
    if (s.contains("exclusiveMaximum")) {
      if (s["exclusiveMaximum"].is_boolean()) {
        if (s["exclusiveMaximum"].get<bool>() && s.contains("maximum")) hi = std::min(hi, clamp(std::ceil(num("maximum")) - 1));
      } else {
        hi = std::min(hi, clamp(std::ceil(num("exclusiveMaximum")) - 1));
      }
    }
    if (lo > hi) fail(name, "no integer satisfies the bounds");
    return int_range_gbnf(lo, hi);
  }

  std::string array(const json& s, const std::string& name, int depth) {
    const json& items = s.contains("prefixItems") ? s["prefixItems"] : s["items"];
    if (items.is_array()) {  // a tuple
      std::string body = R"("[" space )";
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) body += R"( "," space )";
        body += visit(items[i], sub(name, "tuple-" + std::to_string(i)), depth + 1);
      }
      return body + R"( "]")" + sp();
    }
    const std::string item = visit(items, sub(name, "item"), depth + 1);
    const long lo = count(s, "minItems", 0, name), hi = count(s, "maxItems", -1, name);
    if (hi >= 0 && hi < lo) fail(name, "maxItems below minItems");
    const std::string inner = gbnf_repeat(item, lo, hi, R"("," space)");
    return R"("[" space )" + (inner.empty() ? std::string() : inner + " ") + R"("]")" + sp();
  }

  std::string all_of(const json& s, const std::string& name, int depth) {
    std::vector<std::pair<std::string, json>> props;
    std::set<std::string> required;
    std::function<void(const json&, bool)> add = [&](const json& part, bool is_required) {
      if (part.contains("$ref")) {
        ref(part["$ref"], name);  // resolves (and checks) it
        const std::string r = part["$ref"].get<std::string>();
        add(*pointer(r), is_required);
      } else if (part.contains("properties")) {
        for (const auto& [k, v] : part["properties"].items()) {
          props.emplace_back(k, v);
          if (is_required) required.insert(k);
        }
        for (const auto& r : required_of(part)) required.insert(r);
      } else {
        fail(name, "allOf parts must be object schemas with properties");
      }
    };
    for (const json& part : s["allOf"]) {
      if (part.contains("anyOf")) {
        for (const json& p : part["anyOf"]) add(p, false);
      } else {
        add(part, true);
      }
    }
    return object(props, required, name, json(false), depth);
  }

  const json* pointer(const std::string& ref) {
    // Only called after ref() resolved `ref` successfully.
    const json* t = &root_;
    size_t i = 1;
    while (i < ref.size()) {
      size_t j = ref.find('/', i + 1);
      if (j == std::string::npos) j = ref.size();
      std::string key;
      for (size_t k = i + 1; k < j; ++k) {
        if (ref[k] == '~' && k + 1 < j) {
          key += ref[k + 1] == '0' ? '~' : '/';
          ++k;
        } else {
          key += ref[k];
        }
      }
      t = t->is_array() ? &(*t)[std::stoul(key)] : &(*t)[key];
      i = j;
    }
    return t;
  }

  // Required properties first, then the optional ones in order, each at most once; then extra
  // keys when `additional` allows them (never one of the listed names).
  std::string object(const std::vector<std::pair<std::string, json>>& props, const std::set<std::string>& required,
                     const std::string& name, const json& additional, int depth) {
    std::map<std::string, std::string> kv;
    std::vector<std::string> req, opt;
    for (const auto& [prop, schema] : props) {
      const std::string value = visit(schema, sub(name, prop), depth + 1);
      kv[prop] = define(sub(name, prop) + "-kv", gbnf_literal(json(prop).dump()) + R"( space ":" space )" + value);
      (required.count(prop) ? req : opt).push_back(prop);
    }
    const std::string kExtra = "\x01*";  // not a JSON key anyone can write in a schema
    if (!(additional.is_boolean() && !additional.get<bool>())) {
      const std::string value = additional.is_object() ? visit(additional, sub(name, "additional-value"), depth + 1) : builtin("value");
      const std::string key = props.empty() ? builtin("string") : define(sub(name, "additional-k"), not_keys(props));
      kv[kExtra] = define(sub(name, "additional-kv"), key + R"( ":" space )" + value);
      opt.push_back(kExtra);
    }
    std::string body = R"("{" space )";
    for (size_t i = 0; i < req.size(); ++i) body += (i ? R"( "," space )" : "") + kv[req[i]];
    if (!opt.empty()) {
      // Alternative i starts with optional property i; a "-rest" rule then offers the later
      // ones, each optional, in order.
      std::function<std::string(size_t, bool)> chain = [&](size_t i, bool first_optional) {
        const std::string& k = opt[i];
        const bool extra = k == kExtra;
        const std::string comma = R"(( "," space )" + kv[k] + " )";
        std::string res = first_optional ? comma + (extra ? "*" : "?") : kv[k] + (extra ? " " + comma + "*" : "");
        if (i + 1 < opt.size()) {
          res += " " + define(sub(name, (extra ? std::string("additional") : k) + "-rest"), chain(i + 1, true));
        }
        return res;
      };
      std::vector<std::string> alts;
      for (size_t i = 0; i < opt.size(); ++i) alts.push_back(chain(i, false));
      body += req.empty() ? " (" + gbnf_join(alts, " | ") + ")?" : R"( ( "," space ( )" + gbnf_join(alts, " | ") + " ) )?";
    }
    return body + R"( "}")" + sp();
  }

  // A JSON string key that is none of the property names: a trie over their characters, each
  // branch either leaving the trie (then anything) or continuing it (then not ending on a name).
  std::string not_keys(const std::vector<std::pair<std::string, json>>& props) {
    const std::string ch = builtin("char");
    struct Node {
      std::map<uint32_t, Node> kids;
      bool end = false;
    };
    Node root;
    for (const auto& [prop, schema] : props) {
      Node* n = &root;
      size_t i = 0;
      uint32_t cp;
      while (i < prop.size()) {
        if (!next_code_point(prop, i, cp) || cp < 0x20 || cp == '"' || cp == '\\' || cp == 0x7F) {
          return builtin("string");  // names JSON must escape: any key (rare; not worth the grammar)
        }
        n = &n->kids[cp];
      }
      n->end = true;
    }
    // Non-empty continuations of `n` that do not spell a name.
    std::function<std::string(const Node&)> rest = [&](const Node& n) {
      std::vector<std::string> alts;
      std::string others = R"(( [^"\\\x7F\x00-\x1F)";
      for (const auto& [cp, kid] : n.kids) {
        others += gbnf_class_char(cp);
        const std::string c = "[" + gbnf_class_char(cp) + "]";
        if (kid.kids.empty()) alts.push_back(c + (kid.end ? " " + ch + "+" : " " + ch + "*"));
        else alts.push_back(c + " (" + rest(kid) + ")" + (kid.end ? "" : "?"));
      }
      alts.push_back(others + R"(] | [\\] (["\\bfnrt] | "u" )" + builtin("hex4") + " ) ) " + ch + "*");
      return gbnf_join(alts, " | ");
    };
    return R"("\"" ()" + rest(root) + ")" + (root.end ? "" : "?") + R"( "\"")" + sp();
  }

  const json& root_;
  std::map<std::string, std::string> rules_;
  std::map<std::string, std::string> refs_;  // $ref -> rule name
};

}  // namespace

std::string json_schema_to_gbnf(const nlohmann::ordered_json& schema) { return SchemaConverter(schema).run(); }

std::string json_schema_to_gbnf(const nlohmann::json& schema) {
  return json_schema_to_gbnf(nlohmann::ordered_json::parse(schema.dump()));
}

}  // namespace pipellm::grammar
