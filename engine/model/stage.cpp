#include "engine/model/stage.h"

#include "base/error.h"

namespace pipellm {

void Stage::rows_to_host(const ActivationRows&, float*, size_t) {
  throw Error("stage: rows_to_host on a stage whose rows are already on the host");
}

void Stage::rows_from_host(const float*, const ActivationRows&, size_t) {
  throw Error("stage: rows_from_host on a stage whose rows are already on the host");
}

}  // namespace pipellm
