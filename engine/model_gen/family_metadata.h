// The metadata of the families whose keys go beyond the shared ones (shape_metadata.cpp uses
// these): qwen35 / qwen35moe's DeltaNet and IMROPE keys, gemma4's per-layer arrays. Also the
// tensors whose mere presence a recipe reads (gemma4's attn_v, layer_output_scale).
#pragma once
#include <string>
#include <vector>

#include "engine/gguf/gguf_writer.h"
#include "engine/model_gen/model_shape.h"

namespace pipellm {

// After the shared keys: rope.dimension_sections, ssm.*, full_attention_interval and the shared
// expert's width. Throws InvalidArgument when the shape has no DeltaNet geometry.
void write_qwen35_hparams(GgufWriter& w, const ModelShape& s);

// Every gemma4 key (the shared writer's scalars do not fit: head_count_kv is one value per layer,
// feed_forward_length too when the widths differ, and sliding_window_pattern is a bool per layer).
// Throws InvalidArgument when the shape lacks a head size of either kind or a window.
void write_gemma4_hparams(GgufWriter& w, const ModelShape& s);

// The per-layer tensors gemma4's recipe looks for by name to tell a layer's structure: attn_v
// (absent on K = V and KV-sharing layers) and layer_output_scale.
std::vector<std::string> gemma4_presence_tensors(const ModelShape& s);

}  // namespace pipellm
