// The sampling flags (llama_flags.h) applied to the engine's SamplerParams: the one mapping from
// what a user typed to what the sampler gets, for `pipellm generate` (the settings of its
// request) and the coordinator (the defaults of requests). Library pipellm_flags_engine: the
// part of flags/ that needs the engine (pipellm-client does not link it).
#pragma once
#include "engine/runtime/sampler.h"
#include "flags/llama_flags.h"

namespace pipellm::flags {

// `base` with each setting the flags give; seed, grammar and length are the caller's (their
// meaning differs between a request and a server's defaults). Throws InvalidArgument for a bad
// --samplers order.
SamplerParams apply_sampling_flags(const SamplingFlags& f, SamplerParams base = {});

}  // namespace pipellm::flags
