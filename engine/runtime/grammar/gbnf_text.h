// Writing GBNF: quoting text as a literal and code points inside a character class, so the
// generators (JSON schema, patterns, integer ranges) never emit something the parser reads
// differently from what was meant.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pipellm::grammar {

// "text" with '"', '\\' and control characters escaped; the UTF-8 of `text` is kept as is.
std::string gbnf_literal(std::string_view text);
// One code point for use inside [...]: letters and digits as they are, the rest escaped.
std::string gbnf_class_char(uint32_t cp);
// "a | b | c"; a single item stays as it is.
std::string gbnf_join(const std::vector<std::string>& items, const std::string& sep);
// "x{m,n}" / "x*" / "x+" / "x?" for `item` repeated lo..hi times (hi < 0: unbounded), with
// `separator` (a GBNF expression, may be empty) between items.
std::string gbnf_repeat(const std::string& item, long lo, long hi, const std::string& separator = "");

}  // namespace pipellm::grammar
