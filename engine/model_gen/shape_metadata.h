// How a ModelShape is written into a GGUF file: the `<arch>.*` hyperparameter keys, as llama.cpp's
// converter writes them for the family (the keys the architecture's recipe in engine/model/arch/
// reads), and the ModelConfig a file with that metadata describes.
#pragma once
#include "engine/gguf/gguf_writer.h"
#include "engine/model/model_config.h"
#include "engine/model_gen/model_shape.h"

namespace pipellm {

// Writes block_count, context_length, sizes, heads, rope, norm epsilon, vocab_size and, where the
// shape has them, experts, sliding window, the local rope base, rope scaling and the logit softcap;
// qwen35's DeltaNet keys and gemma4's per-layer arrays (engine/model_gen/family_metadata.h).
// Throws InvalidArgument for an architecture outside model_shape_archs() or a shape its family's
// keys cannot describe.
void write_shape_hparams(GgufWriter& w, const ModelShape& s);

// The config of a file of this shape, read by the architecture's own recipe: the metadata is
// written, parsed back as a metadata-only file and given to ModelConfig::from_gguf, so the
// generator lists exactly the tensors the loader will ask for. What a recipe tells from tensors
// (a tied output, rope_freqs, gemma4's K = V layers and output scales) it reads from one-float
// stand-ins the shape implies. Throws (naming the preset's architecture) when the recipe rejects
// the shape.
ModelConfig config_for_shape(const ModelShape& s);

}  // namespace pipellm
