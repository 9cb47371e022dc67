// Python's str semantics on UTF-8 text, as the chat templates' Jinja (run by Python) sees it:
// lengths, indices and slices count code points, strip()/split() without arguments use Python's
// whitespace set, case mapping is per code point, floats print as Python's repr().
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tokenizer/unicode_text.h"

namespace pipellm::jinja::pystr {

// Byte offsets of every code point, plus s.size() at the end (size() - 1 code points). Invalid
// UTF-8 bytes count as one code point each, so no input is rejected.
std::vector<size_t> code_point_offsets(const std::string& s);
size_t length(const std::string& s);  // in code points

// The code points as separate strings (iterating a str in Python).
std::vector<std::string> chars(const std::string& s);

// Python's str.isspace() set (ASCII whitespace, \x1c-\x1f, NEL, NBSP, the Unicode spaces).
bool is_space(uint32_t cp);

// str.strip/lstrip/rstrip: `chars` null strips whitespace, else any code point in *chars.
std::string strip(const std::string& s, const std::string* chars, bool left, bool right);

// str.split / str.rsplit: `sep` null splits on whitespace runs; maxsplit < 0 means no limit.
// An empty separator is the caller's error (Python's ValueError).
std::vector<std::string> split(const std::string& s, const std::string* sep, int64_t maxsplit);
std::vector<std::string> rsplit(const std::string& s, const std::string* sep, int64_t maxsplit);
std::vector<std::string> splitlines(const std::string& s);

// str.replace (count < 0: all; an empty `from` inserts `to` between code points, as Python does).
std::string replace(const std::string& s, const std::string& from, const std::string& to, int64_t count);
int64_t count(const std::string& s, const std::string& sub);
// str.find / rfind in code points (-1 when absent).
int64_t find(const std::string& s, const std::string& sub, bool reverse);

std::string upper(const std::string& s);
std::string lower(const std::string& s);
std::string capitalize(const std::string& s);  // str.capitalize(): first upper, rest lower
std::string title_method(const std::string& s);  // str.title(): a letter after a non-letter is upper
std::string title_filter(const std::string& s);  // Jinja's |title: words split at [-\s({[<]
bool is_upper(const std::string& s);  // str.isupper(): has cased letters, all upper
bool is_lower(const std::string& s);

// repr() of a str: single quotes unless the text has ' and no ", escapes as Python writes them.
std::string repr(const std::string& s);
// repr() of a float: the shortest round-trip digits, '1e+16' / '1e-05' outside [1e-4, 1e16),
// '1.0' for integral values, 'inf', 'nan'.
std::string float_repr(double d);

// Python's string-literal escapes as Jinja's lexer decodes them ("unicode-escape"): \n \t \\ \'
// \" \a \b \f \r \v, \ooo, \xhh, \uXXXX, \UXXXXXXXX; a backslash-newline disappears; unknown
// escapes stay as written. Returns false (with *bad set to the byte offset) on a malformed \x/\u.
bool unescape(const std::string& body, std::string* out, size_t* bad);

// Appends the UTF-8 encoding of a code point (the tokenizer's encoder).
using tok::append_utf8;
// Decodes the code point at s[i]; *len is its byte length (1 for an invalid byte).
uint32_t decode_at(const std::string& s, size_t i, size_t* len);

}  // namespace pipellm::jinja::pystr
