// Hand-written word splitters equivalent to llama.cpp's for the GPT-2 pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
// and the Llama 3 pattern
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+
// The Qwen2 pattern is the Llama 3 one with single digits.
// Both take the current pieces (lengths in code points) and return the refined pieces.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace pipellm::tok {

std::vector<size_t> split_gpt2(const std::vector<uint32_t>& cpts, const std::vector<size_t>& pieces);
// max_digits: 3 for Llama 3 (\p{N}{1,3}); 1 gives the Qwen2 pattern (\p{N}).
std::vector<size_t> split_llama3(const std::vector<uint32_t>& cpts, const std::vector<size_t>& pieces,
                                 size_t max_digits = 3);

}  // namespace pipellm::tok
