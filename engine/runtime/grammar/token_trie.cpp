#include "engine/runtime/grammar/token_trie.h"

#include <algorithm>

namespace pipellm::grammar {

TokenTrie::TokenTrie(const std::vector<std::string>& texts) {
  std::vector<int32_t> order;
  for (size_t i = 0; i < texts.size(); ++i) {
    if (!texts[i].empty() && texts[i].size() <= 65535) order.push_back(static_cast<int32_t>(i));
  }
  // Byte order (std::string compares as unsigned char): a text comes before its extensions, so
  // creating nodes in this order lays them out in preorder.
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return texts[a] < texts[b]; });
  nodes_.push_back({0, 0, 0});
  std::vector<uint32_t> path = {0};  // path[d]: the open node at depth d
  const std::string* prev = nullptr;
  std::vector<uint32_t> count;  // tokens per node
  count.push_back(0);
  for (int32_t id : order) {
    const std::string& t = texts[static_cast<size_t>(id)];
    size_t common = 0;
    if (prev != nullptr) {
      while (common < prev->size() && common < t.size() && (*prev)[common] == t[common]) ++common;
    }
    // Close the nodes deeper than the shared prefix: their subtrees end here.
    while (path.size() > common + 1) {
      nodes_[path.back()].end = static_cast<uint32_t>(nodes_.size());
      path.pop_back();
    }
    for (size_t d = common; d < t.size(); ++d) {
      path.push_back(static_cast<uint32_t>(nodes_.size()));
      nodes_.push_back({0, static_cast<uint16_t>(d + 1), static_cast<uint8_t>(t[d])});
      count.push_back(0);
    }
    ++count[path.back()];
    ids_.push_back(id);  // tokens arrive in node order, so ids_ is already grouped by node
    max_depth_ = std::max(max_depth_, t.size());
    prev = &t;
  }
  while (!path.empty()) {
    nodes_[path.back()].end = static_cast<uint32_t>(nodes_.size());
    path.pop_back();
  }
  first_.assign(nodes_.size() + 1, 0);
  for (size_t i = 0; i < nodes_.size(); ++i) first_[i + 1] = first_[i] + count[i];
}

}  // namespace pipellm::grammar
