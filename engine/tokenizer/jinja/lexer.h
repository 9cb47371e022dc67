// Template source -> tokens, with Jinja's whitespace control applied to the text between tags:
// `{%-`/`-%}` (and the same on {{ }} / {# #}) strip all whitespace on that side, trim_blocks drops
// the newline after a block or comment tag, lstrip_blocks drops the spaces and tabs before a block
// or comment tag that starts its line, `{%+` / `+%}` turn those two off for one tag. Hugging Face
// renders chat templates with trim_blocks and lstrip_blocks on, and, as Jinja does by default,
// without the template's single trailing newline. Comments are dropped; {% raw %} becomes text.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tokenizer/jinja/error.h"

namespace pipellm::jinja {

enum class TokenType {
  kText,        // literal template text
  kVarBegin,    // {{
  kVarEnd,      // }}
  kBlockBegin,  // {%
  kBlockEnd,    // %}
  kName,
  kString,   // text: the decoded value
  kInt,      // ival
  kFloat,    // fval
  kOperator, // text: + - * / // % ** ~ == != < <= > >= = . : | , ( ) [ ] { } ;
  kEnd,
};

struct Token {
  TokenType type;
  std::string text;
  int64_t ival = 0;
  double fval = 0;
  Pos pos;
};

struct LexOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  bool keep_trailing_newline = false;
};

// FormatError (with line and column) on an unterminated tag, comment, string or raw block, an
// unexpected character or unbalanced brackets inside a tag.
std::vector<Token> tokenize(const std::string& source, const LexOptions& options = {});

}  // namespace pipellm::jinja
