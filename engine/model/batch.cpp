#include "engine/model/batch.h"

namespace pipellm {

int Batch::n_outputs() const {
  int n = 0;
  for (uint8_t l : logits) n += l ? 1 : 0;
  return n;
}

void Batch::add(int32_t token, int32_t position, int32_t seq_slot, bool want_logits) {
  tokens.push_back(token);
  pos.push_back(position);
  slot.push_back(seq_slot);
  logits.push_back(want_logits ? 1 : 0);
}

void Batch::clear() {
  tokens.clear();
  hidden = nullptr;
  pos.clear();
  slot.clear();
  logits.clear();
}

Batch Batch::sequence(const std::vector<int32_t>& toks, int32_t start_pos, int32_t seq_slot, bool all_logits) {
  Batch b;
  const size_t n = toks.size();
  for (size_t i = 0; i < n; ++i) {
    b.add(toks[i], start_pos + static_cast<int32_t>(i), seq_slot, all_logits || i + 1 == n);
  }
  return b;
}

}  // namespace pipellm
