// The vocabulary's token texts as a byte trie, flattened in preorder so a walk is one pass over
// an array: node i's subtree is [i, end), and skipping a subtree (a prefix the grammar rejects,
// so every token under it is rejected too) is one jump. Shared prefixes ("  ", " the", "\":")
// are stepped through the automaton once for all the tokens that start with them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pipellm::grammar {

struct TrieNode {
  uint32_t end;    // one past the last node of this node's subtree
  uint16_t depth;  // bytes from the root (the root is 0)
  uint8_t byte;    // the byte on the edge into this node
};

class TokenTrie {
 public:
  // Token id i has text texts[i]; empty texts (and texts over 65535 bytes) are left out, so
  // those tokens are never reached.
  explicit TokenTrie(const std::vector<std::string>& texts);

  const std::vector<TrieNode>& nodes() const { return nodes_; }
  // The ids of the tokens whose text ends at node i.
  const int32_t* tokens_begin(size_t i) const { return ids_.data() + first_[i]; }
  const int32_t* tokens_end(size_t i) const { return ids_.data() + first_[i + 1]; }
  size_t max_depth() const { return max_depth_; }

 private:
  std::vector<TrieNode> nodes_;
  std::vector<uint32_t> first_;  // [nodes + 1]: CSR offsets into ids_
  std::vector<int32_t> ids_;
  size_t max_depth_ = 0;
};

}  // namespace pipellm::grammar
