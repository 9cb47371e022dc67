#include "base/version.h"

namespace pipellm {

const char* pipellm_version() { return PIPELLM_VERSION_STRING; }

}  // namespace pipellm
