// The forward pass of one pipeline stage (or a whole model) on one NVIDIA GPU.
//
// Mirrors engine/cpu/cpu_stage.h: same Batch semantics, same activations ([T][width] f32), same
// KV cache layout (engine/model/kv_cache.h; f16, q8_0 or q4_0 on the device, K and V apart).
// Products use the quantized mat-vec kernels for up to 8 tokens and cuBLAS on f16 (dequantized)
// weights beyond.
//
// step() is the runtime's path (engine/model/stage.h): input rows in device memory (written by
// the transport), output rows left there, and on the tail one token per logits row sampled on
// the GPU with each sequence's own settings and penalties (kernels/cuda/sampling.h; only ids
// come back), except for sequences the GPU sampler cannot serve (a grammar, top_logprobs, a
// filter order it lacks): their rows come back and the host Sampler picks (host_sampled_rows.h).
// A decode step (every row wants logits: one token per sequence) of any stage -
// first, middle, tail or whole model - is captured once per (batch bucket 1/2/4/8/...,
// context bucket 512/1024/2048/...) as a CUDA graph and replayed; tokens, positions and slots
// are read from device memory, so a replay needs only one small host-to-device copy. Prefill
// chunks run eagerly. use_graphs = false runs decode steps eagerly too (the ablation).
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "engine/cuda/cuda_weights.h"
#include "engine/cuda/device_memory.h"
#include "engine/cuda/host_experts.h"
#include "engine/cuda/host_rows.h"
#include "engine/cuda/host_sampled_rows.h"
#include "engine/cuda/streamed_weights.h"
#include "engine/model/stage.h"
#include "kernels/cuda/cuda_raii.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/matvec_quant.h"
#include "kernels/cuda/mmq.h"
#include "kernels/cuda/sampling.h"

namespace pipellm::cuda {

struct MoeMatvecArgs;  // kernels/cuda/moe.h

struct CudaStageOptions {
  int device = 0;
  int n_ctx = 2048;
  int n_slots = 1;
  int max_batch_tokens = 512;  // tokens per forward chunk (prefill)
  bool use_graphs = true;
  bool resident_f16 = false;   // keep f16 copies of the matrices (faster prefill / large batches)
  StreamingOptions streaming;  // a VRAM budget: stream the layers that do not fit (docs/PREFETCH.md)
  bool pdl = true;             // programmatic dependent launch between kernels (kernels/cuda/launch.h)
  // Products of 9 .. mmq_max_rows activation rows on tensor cores over the quantized blocks
  // (mmq.h: batched decode, small prefill chunks); 0 turns them off (the mat-vec up to 32 rows,
  // cuBLAS on f16 weights beyond).
  int mmq_max_rows = 64;
  // Batches of up to this many rows take the quantized mat-vec (launches of up to
  // kMatvecMaxRows, each reading the weights once) instead of mmq; 1..32 (a benchmark's ablation:
  // on an H100 the mat-vec decodes 16 sequences at 942 tok/s, mmq at 2417).
  int matvec_max_rows = 8;
  MmqTuning mmq_tuning;  // their layout over the GPU (mmq.h; a benchmark's ablation)
  // Split-KV attention: the blocks per SM the splits of a step aim for (attention.h's
  // attention_split; more splits hide more of each block's tile pipeline fill at long depths:
  // on an H100, 4 instead of 2 decode 4% faster at depth 4096 and 20% at 32768, 8 less so).
  int attention_blocks_per_sm = 4;
  // Attention's split phase on tensor cores where it applies (attention_mma.h: f16 caches, head
  // sizes 64, 128 and 256, up to 16 query heads per KV head). On an H100 (8B Q4_K_M shape) decode at
  // depth 4096 goes 282.5 -> 305.5 tok/s, at 32768 163.2 -> 206.1; off: the CUDA-core kernel.
  bool attention_tensor_cores = true;
  // Mat-vec products of F32/F16/BF16 weights (MoE routers, float models) with a block per row
  // (matvec.h MatvecArgs::float_split) instead of a warp: on an H100 qwen3-30b-a3b Q4_K_M decodes
  // 206.8 -> 372.9 tok/s (its F32 routers took 42% of a step at 19 GB/s); off: a warp per row.
  bool float_matvec_split = true;
  // Quantized mat-vecs with MatvecArgs::flat_items (rows of n_in 2048 or 5376 no longer leave lane
  // groups idle); off until measured on a GPU.
  bool matvec_flat_items = false;
  // Grouped expert products (prefill, large batches) also for MXFP4 stacks and stacks with biases,
  // i.e. gpt-oss's (enqueue_device_experts; the biases added per pair after): on an H100
  // gpt-oss-20b prefills 1167 -> 9605 tok/s (pp512) and decodes 64 sequences 1085 -> 3482 tok/s;
  // off: a mat-vec per (token, expert) pair.
  bool group_gptoss_experts = true;
  // Mixture-of-experts decode in two launches per layer instead of six (enqueue_fused_experts);
  // off: the separate products (a benchmark's ablation).
  bool fuse_expert_decode = true;
  // The buffer those cuBLAS products dequantize a matrix into, a slice of rows at a time (MiB of
  // f16; 0: kDequantSliceElems). A slice that fits the L2 cache is read back from it.
  int dequant_slice_mib = 0;
  // KV cache element types (llama.cpp's --cache-type-k / -v): f16, or the q8_0 / q4_0 blocks the
  // CPU cache writes (head sizes a multiple of 32). No f32 on the device.
  TensorType kv_type_k = TensorType::F16;
  TensorType kv_type_v = TensorType::F16;
  // Per global layer: its routed experts stay in host memory and the CPU multiplies them
  // (host_experts.h; --cpu-moe, --n-cpu-moe, -ot: engine/model/expert_placement.h). Empty: none.
  std::vector<bool> host_experts;
  int host_threads = 0;  // CPU threads for those products (and streaming.cpu_rows'); 0: one per hardware thread
  uint64_t expert_cache_bytes = 0;  // VRAM for the most used of those experts (expert_cache.h); 0: none
  int expert_cache_refresh = 32;    // steps between the cache's refreshes
};

// opt.host_experts for the stage's layers (index 0 = range.first).
std::vector<bool> local_host_experts(const CudaStageOptions& opt, LayerRange range);

// Whether a stage over these weights runs its 9..opt.mmq_max_rows-row products on the
// tensor-core kernel (mmq.h): every matrix it holds (the output head too when `last`) but the
// routers has one (routers take the mat-vec) and the expert stacks are grouped per call.
bool stage_uses_mmq(const ModelWeights& w, bool last, const CudaStageOptions& opt);

class CudaStage : public Stage {
 public:
  // `w` (and the memory its views point to) is only read during construction.
  CudaStage(const ModelConfig& c, const ModelWeights& w, bool first, bool last, const CudaStageOptions& opt);
  ~CudaStage() override;

  const ModelConfig& config() const override { return cfg_; }
  LayerRange range() const override { return range_; }
  bool is_first() const override { return first_; }
  bool is_last() const override { return last_; }
  int n_ctx() const override { return opt_.n_ctx; }
  int n_slots() const override { return opt_.n_slots; }
  int max_step_tokens() const override { return max_tokens_; }
  void forward(const Batch& batch, std::vector<float>& out) override;
  void start_sequence(int slot, const SamplingSpec& sampling, const std::vector<int32_t>& history) override;
  ActivationRows input_rows(int n_tokens) override;
  void step(const Batch& batch, StepOutput& out, bool want_logits) override;
  ActivationRows output_rows() override { return {x_.get(), MemorySpace::Device, stream_.get()}; }
  void rows_to_host(const ActivationRows& rows, float* host, size_t count) override;
  void rows_from_host(const float* host, const ActivationRows& rows, size_t count) override;
  // Used memory of the current device (cudaMemGetInfo); 0 if the query fails.
  uint64_t device_memory_bytes() const override {
    size_t free_bytes = 0, total_bytes = 0;
    return cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess ? total_bytes - free_bytes : 0;
  }

  void set_use_graphs(bool on) { opt_.use_graphs = on; }
  // Changing PDL drops the captured graphs (their kernel nodes carry the launch attribute).
  void set_pdl(bool on) {
    if (on != opt_.pdl) {
      graphs_.clear();
      graph_bytes_ = 0;
    }
    opt_.pdl = on;
  }
  // The logits of the last step's rows ([rows][n_vocab], before penalties only when the step
  // had none), for tests.
  void last_logits(int rows, std::vector<float>& out) const;
  // The device settings a SamplingSpec becomes; InvalidArgument for a filter order the GPU
  // sampler does not implement (temperature must come first or last, top_k/top_p/min_p in
  // that order). A grammar and top_logprobs are not device settings (see host_sampled).
  static SlotSampling slot_sampling(const SamplingSpec& s);
  // Whether a sequence with these settings samples on the host: a grammar, top_logprobs > 0, or
  // a filter order slot_sampling refuses. Throws InvalidArgument for a malformed chain.
  static bool host_sampled(const SamplingSpec& s);
  size_t graphs_captured() const { return graphs_.size(); }
  size_t weight_device_bytes() const { return weights_->device_bytes; }
  cudaStream_t stream() const { return stream_.get(); }
  const StreamedWeights* streamed() const { return streamed_.get(); }  // null without a VRAM budget
  const HostExperts* host_experts() const { return host_experts_.get(); }  // null when the GPU holds every expert
  const HostRows* cpu_rows() const { return cpu_rows_.get(); }  // null unless StreamingOptions::cpu_rows split rows off
  // What the stage holds on its device, by kind (engine/cuda/device_memory.h, where it is
  // defined); the CUDA graphs' share grows as decode buckets are captured.
  DeviceMemoryReport memory_report() const;

  // Decode buckets: the batch size and context length a step of n sequences up to max_pos runs as.
  static int batch_bucket(int n);
  // Rows of logits the stage holds: a step samples one row per sequence at most (a decode bucket
  // of them), so not one per token of a step (512 x a 128k vocabulary is 250 MiB); forward()
  // projects all-logits batches in groups of this many (at least 64: one tensor-core product each).
  static int logits_rows(int n_slots, int max_tokens) { return std::min(max_tokens, std::max(batch_bucket(n_slots), 64)); }
  static constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;
  // Products without a resident f16 copy dequantize the matrix a slice of rows at a time into a
  // buffer of at most kDequantSliceElems (64 MiB of f16; opt.dequant_slice_mib), not one as large
  // as the largest matrix (a 128k-token vocabulary's output head alone is 1 GiB). Its size in f16
  // elements (0: no product of up to max_tokens rows needs it; mmq: whether the stage multiplies
  // on quantized blocks).
  static constexpr int64_t kDequantSliceElems = int64_t{1} << 25;
  static int64_t dequant_buffer_elems(const CudaStageOptions& opt, bool mmq, int max_tokens, int64_t largest_matrix) {
    if (opt.resident_f16 || (mmq && opt.mmq_max_rows >= max_tokens)) return 0;
    return std::min(largest_matrix, opt.dequant_slice_mib > 0 ? (int64_t{opt.dequant_slice_mib} << 20) / 2
                                                              : kDequantSliceElems);
  }
  // Whether a batch of T tokens takes the grouped experts' f16 rows by the options alone
  // (MmqTuning::f16_experts_from; the stage and stage_fit size eh_ by it at the largest batch).
  static bool f16_expert_rows_from(const CudaStageOptions& opt, int T) {
    return opt.mmq_tuning.f16 && T >= opt.mmq_tuning.f16_experts_from;
  }
  // Rows per slice of an [n_in, n_out] matrix through a dequantization buffer of `elems` f16
  // values: all of them where they fit; else whole 128-row tiles where at least one fits (a ragged
  // slice leaves y + r0 unaligned, and cuBLAS takes its align1 kernels: gemma4-31b's n_in 5376
  // gave 6241-row slices and 56% of its pp512 in them); 0 where not even one row fits.
  static int64_t dequant_slice_rows(int64_t elems, int64_t n_in, int64_t n_out) {
    constexpr int64_t kTile = 128;
    const int64_t rows = elems / n_in;
    return rows >= n_out ? n_out : (rows > kTile ? rows - rows % kTile : rows);
  }
  // Attention's scratch (floats) for the most any step of up to max_tokens tokens over the
  // layers in `range` can ask for: the split choice of every batch bucket, as enqueue_attention
  // makes it with this target of blocks.
  static int64_t attention_scratch_max(const ModelConfig& c, LayerRange range, int n_ctx, int max_tokens,
                                       int target_blocks);
  int context_bucket(int max_pos) const;

 private:
  void validate(const Batch& b, bool need_hidden) const;
  // An Error a host function (host experts, host rows) met in a step the stream has run.
  void rethrow_host_errors();
  // Copies the step's tokens, positions, slots (rows [n, padded) are padding: position -1) and,
  // when `b` asks for logits rows, their slots and positions to the device.
  void upload_step(const Batch& b, int c0, int n, int padded);
  // Eager step of the rows in x_ (or embedded); the tail samples the rows that want logits.
  void run_eager(const Batch& b, bool want_logits, StepOutput& out);
  // Rows [c0, c0 + T) of `b`: uploads the step's ids, embeds (first stage) or copies host_rows
  // into x_ (when given), and runs the layers.
  void enqueue_chunk(const Batch& b, int c0, int T, const float* host_rows);
  // Gathers the chunk's rows that want logits, from batch row *i on (the chunk being rows c0 ..
  // c0 + T, in x_), into g_ — at most logits_rows(n_slots), *i moved past them — and projects
  // them into logits_; how many.
  int enqueue_logits_rows(const Batch& b, int c0, int T, int* i);
  // The tail's sampling of n_out rows of logits_ whose slots/positions are at row_slot/row_pos.
  void enqueue_sampling(int n_out, const int32_t* row_slot, const int32_t* row_pos);
  // Enqueues the forward pass of T tokens whose ids/pos/slots are in d_tok_/d_pos_/d_slot_ (or
  // whose hidden rows are in x_). n_keys: an upper bound on pos + 1 over the tokens.
  // one_run: the T tokens are one sequence's, at consecutive positions (a prompt chunk).
  void enqueue_layers(int T, int n_keys, bool one_run = false);
  // The blocks of local layer i (the layer's LayerSpec says which parts it has).
  void enqueue_attention(int i, const CudaLayer& l, const LayerSpec& s, int T, int n_keys, bool one_run);
  // out: the down product's rows (gemma4's MLP beside experts); null: added to x (post-norm).
  void enqueue_dense_ffn(const CudaLayer& l, const LayerSpec& s, int T, float* out);
  void enqueue_moe_ffn(int i, const CudaLayer& l, const LayerSpec& s, int T);
  // Small steps on the layer's own experts (no grouping) with 8-bit activations: gate, up and the
  // activation in one launch now, down and the weighted sum in one launch that `combine` runs
  // (moe.h moe_gated_matvec / moe_matvec_combine). False (nothing enqueued) where they do not apply.
  bool enqueue_fused_experts(const CudaLayer& l, const LayerSpec& s, int T, std::function<void(float*, bool)>& combine);
  // With several pairs per expert (prefill, large batches) the pairs are grouped by expert and
  // each expert's pairs multiplied as one tensor-core product (mmq_experts): its weights are read
  // once per tile of pairs instead of once per pair; only where some expert stack of the layer can
  // take it (no grouping work for nothing). A stack's bias goes on after its grouped product, by
  // each pair's expert; MXFP4 stacks and stacks with biases (gpt-oss) group only with
  // opt_.group_gptoss_experts.
  bool expert_groupable(const CudaMatrix& m, const float* bias) const;
  bool groups_experts(const CudaLayer& l, const CudaLayer& mats, const LayerSpec& s, int T) const;
  // The chosen experts' products on the device: per (token, expert) pair, the down rows in ed_.
  // The expert matrices are mats' (the layer's own, or host experts uploaded for the step), the
  // biases l's.
  void enqueue_device_experts(const CudaLayer& l, const CudaLayer& mats, const LayerSpec& s, int T);
  // The pairs the expert cache holds (cache_id_: slots, the others slot 0) on the cached experts
  // `mats`, into ed_ (biases by the real ids in route_id_).
  void enqueue_cached_experts(const CudaLayer& l, const CudaLayer& mats, const LayerSpec& s, int T);
  // One product of the routed experts for every pair: (stack, bias or null, float rows x, their
  // 8-bit blocks or null, their f16 copy or null, rows per x row, out y).
  using ExpertProduct = std::function<void(LayerTensor, const float*, const float*, const int8_t*, const float2*,
                                           const __half*, int, float*)>;
  // The routed experts' FFN of a step's pairs through `product` on the stacks `mats`: gate and up
  // (or the [gate; up] stack), the gated activation, the down product into ed_. The biases (l's)
  // are added by the products (bias_in_products) or, for products on other ids than the experts'
  // (the cache's slots), by each pair's real expert in route_id_.
  void expert_ffn(const CudaLayer& l, const CudaLayer& mats, const LayerSpec& s, int T, const ExpertProduct& product,
                  bool bias_in_products);
  // The activated rows (P of F) as 8-bit blocks in eq_/eds_ (and as f16 rows in eh_: f16) for the
  // down products; false where F is not whole 32-element blocks (the float kernel then reads the rows).
  bool quantize_pair_rows(const float* rows, int P, int F, bool f16);
  // The arguments of one expert product per pair (moe.h) on the stack `w`.
  MoeMatvecArgs expert_args(const CudaMatrix& w, const int32_t* ids, int n_pairs, const float* x, const int8_t* xq,
                            const float2* xds, int x_group, const float* bias, float* y) const;
  // One expert product per pair (moe.h moe_matvec): expert ids[p] of `w` on the pair's row.
  void expert_matvec(const CudaMatrix& w, const int32_t* ids, int n_pairs, const float* x, const int8_t* xq,
                     const float2* xds, int x_group, const float* bias, float* y);
  // The MoE block's output into x from the routed sum (combine(dst, add) writes or adds it to
  // dst): gemma4's dense MLP beside it, the shared expert, or the post-norm.
  void moe_output(const CudaLayer& l, const LayerSpec& s, int T, const std::function<void(float*, bool)>& combine);
  void enqueue_delta_net(int i, const CudaLayer& l, const LayerSpec& s, int T);
  void enqueue_per_layer_inputs(int T);  // gemma4: inp_pl_ from the step's token ids
  void enqueue_per_layer_block(int i, const CudaLayer& l, int T);
  // x += post(tmp_ + bias): a block's output (in tmp_) with its optional bias and post-norm.
  void add_block_output(int T, const float* bias, const float* norm_w);
  void enqueue_softcap(int n_rows);
  void enqueue_embed(int T);
  // Final norm + lm head over `n_out` rows of x_ starting at the rows listed (host) or all T.
  void enqueue_logits(int n_out);
  void enqueue_decode_step(int B, int ctx_bucket);
  // The sampled ids of b's logits rows (and log-probabilities when a row's slot asked) to the
  // host, the host-sampled slots' picks put in their place.
  void fetch_tokens(const Batch& b, StepOutput& out);
  void product(const CudaMatrix& w, int T, float* y, int64_t y_stride, bool add);
  // Several products of the same prepared input (q, k, v; gate, up), so that the rows the CPU
  // keeps (host_rows.h) take one host function for all of them.
  void products(const std::vector<HostRows::Output>& outs, int T);
  // products() with neighbours of one type sharing a launch where the mat-vec (up to three
  // matrices, 8-bit activations) or mmq (MmqTuning::fuse) takes them: q/k/v, DeltaNet's
  // in-projections. A layer whose rows the CPU partly keeps takes products() as it is.
  void fused_products(const CudaLayer& l, int T, const std::vector<HostRows::Output>& outs);
  // act_ = act(gate rows, up rows) of the prepared input, F wide: one gated mat-vec launch for small
  // batches, else the two products (sharing a launch where fused_products can) and the activation.
  void gated_products(const CudaLayer& l, const CudaMatrix& gate, const CudaMatrix& up, GatedAct act, int T, int F);
  // The product of w's rows as the device holds them (product() adds the rows the CPU keeps).
  void product_rows(const CudaMatrix& w, int T, float* y, int64_t y_stride, bool add);
  // How a product of T activation rows runs: the quantized mat-vec (in launches of up to
  // kMatvecMaxRows rows, each reading the weights once) for up to opt_.matvec_max_rows rows; the
  // tensor-core product on the quantized blocks (mmq.h) beyond, up to opt_.mmq_max_rows rows, when
  // every matrix of the stage allows it; else cuBLAS on f16 weights (resident copies, or
  // dequantized per product).
  // Without mmq and without resident copies the mat-vec takes batches up to kMatvecChunkedRows
  // (cheaper than dequantizing every matrix each step).
  static constexpr int kMatvecChunkedRows = 32;
  bool use_matvec(int T) const {
    return T <= (mmq_ || opt_.resident_f16 ? opt_.matvec_max_rows : kMatvecChunkedRows);
  }
  bool use_mmq(int T) const { return mmq_ && T > opt_.matvec_max_rows && T <= opt_.mmq_max_rows; }
  // Whether mmq takes w with further matrices in one launch at T rows (MmqTuning::fuse; which
  // matrices may join it: product_groups.h).
  bool shares_mmq(int T, const DeviceMatrix& w) const {
    return opt_.mmq_tuning.fuse && use_mmq(T) && mmq_supports(w);
  }
  MmqArgs mmq_args(const CudaMatrix& w, int T, float* y, int64_t y_stride, bool add) const;
  // A mat-vec of w over the prepared input (product_input's float rows and 8-bit blocks).
  MatvecArgs matvec_args(const DeviceMatrix& w, MatvecMode mode, float* y, int64_t y_stride) const;
  // Expert products are grouped by expert (mmq_experts) from this many pairs per expert on
  // average; below, a mat-vec per pair (moe.h).
  static constexpr int kGroupedPairsPerExpert = 2;
  bool q8_activations(int T) const { return use_matvec(T) || use_mmq(T); }
  // mmq's f16 variant (MmqTuning::f16) reads f16 rows in xh_, written beside the 8-bit ones.
  bool f16_mmq(int T) const { return use_mmq(T) && opt_.mmq_tuning.f16; }
  // Grouped expert products on f16 rows (MmqTuning::f16_experts_from): xh_ holds the experts' input
  // rows (product_input up to mmq_max_rows, the MoE block's float_rows beyond) and eh_ the activated ones.
  bool f16_expert_rows(int T) const { return mmq_ && !use_matvec(T) && f16_expert_rows_from(opt_, T); }
  void matvec_rows(const MatvecArgs& a, int T);
  void product_input(int T, const float* x, int64_t n, const float* norm_w, bool normalize);
  // Whether the CPU keeps rows of some matrix of layer l (host_rows.h): the layer then takes no
  // fused launches (they would miss those rows).
  bool split_rows(const CudaLayer& l) const { return cpu_rows_ && cpu_rows_->splits_layer(l); }
  // PDL only inside decode steps, whose kernels follow kernels (never a host copy).
  Launch launch() const { return Launch(stream_.get(), opt_.pdl && in_decode_); }

  ModelConfig cfg_;
  LayerRange range_;
  bool first_, last_;
  CudaStageOptions opt_;
  int max_tokens_ = 0;

  Stream stream_;
  CublasHandle cublas_;
  std::unique_ptr<StreamedWeights> streamed_;
  std::unique_ptr<CudaWeights> weights_;
  std::vector<DeviceBuffer<uint8_t>> k_cache_, v_cache_;  // rows of opt_.kv_type_k / kv_type_v
  std::vector<int> kv_rows_;  // per local layer: KV rows per slot

  DeviceBuffer<uint8_t> cublas_ws_;
  DeviceBuffer<int32_t> d_io_;  // [5][max_tokens_]: tokens, positions, slots, logits rows' slots, positions
  int32_t* d_tok_ = nullptr;
  int32_t* d_pos_ = nullptr;
  int32_t* d_slot_ = nullptr;
  int32_t* d_out_slot_ = nullptr;
  int32_t* d_out_pos_ = nullptr;
  DeviceBuffer<int32_t> d_next_;
  // Tail sampling state per KV slot: settings, random counter, token history [n_slots][n_ctx].
  DeviceBuffer<SlotSampling> d_sampling_;
  DeviceBuffer<uint64_t> d_counter_;
  DeviceBuffer<int32_t> d_history_;
  // Step inputs are staged in a ring of pinned buffers: a stage that does not wait for its
  // stream may stage step k+1 before step k's copy has run.
  static constexpr int kIoRing = 4;
  PinnedBuffer<int32_t> h_io_[kIoRing];
  Event io_done_[kIoRing];
  int io_next_ = 0;
  PinnedBuffer<int32_t> h_next_;
  PinnedBuffer<float> h_logprob_;
  DeviceBuffer<float> d_logprob_;
  std::vector<uint8_t> slot_logprobs_;  // per slot: the device computes its log-probabilities
  std::unique_ptr<HostSampledRows> host_rows_;  // tail: the slots sampled on the host
  std::unique_ptr<HostExperts> host_experts_;   // null unless some layer's experts stay in host memory
  std::unique_ptr<HostRows> cpu_rows_;         // null unless streamed matrices leave rows to the CPU
  double cpu_rows_pcie_gbs_ = 0, cpu_rows_cpu_gbs_ = 0;  // the rates the measured share came from (0: given)
  DeviceBuffer<float> x_, y_, q_, k_, v_, qkv_, att_, g_, u_, act_, tmp_, logits_, attn_part_;
  // MoE: router logits, per (token, expert) pair the expert id, weight and product rows.
  DeviceBuffer<float> router_, route_w_, eg_, eu_, ed_, dense_;
  DeviceBuffer<int8_t> eq_;   // the activated expert rows as 8-bit blocks, for the down products
  DeviceBuffer<float2> eds_;
  DeviceBuffer<__half> eh_;   // the same as f16 rows (f16_expert_rows)
  DeviceBuffer<int32_t> route_id_;
  DeviceBuffer<int32_t> moe_order_, moe_n_tiles_;  // pairs grouped by expert (mmq.h MoeTiles)
  // Host experts: the CPU's weighted sums; with the expert cache the pairs' slots and weights on
  // the GPU and the ids left to the CPU (kernels/cuda/moe_cache.h).
  DeviceBuffer<float> host_sum_, cache_w_;
  DeviceBuffer<int32_t> cache_id_, host_id_;
  DeviceBuffer<int4> moe_tiles_;
  DeviceBuffer<float> gq_;  // qwen35: the attention output gates
  // DeltaNet: projections and per-slot conv / recurrent states per local layer (empty for others).
  DeviceBuffer<float> dz_, dg_, dbeta_, dy_, dout_;
  std::vector<DeviceBuffer<float>> conv_state_, delta_state_;
  // gemma4: per-layer inputs and scratch; per local layer the output scale and the router's
  // pre-scaled input norm weight.
  DeviceBuffer<float> inp_pl_, pl_tok_, pl_x0_, pl_g_, pl_u_;
  std::vector<float> layer_scale_;
  std::vector<DeviceBuffer<float>> router_scale_;
  DeviceBuffer<int8_t> xq_;
  DeviceBuffer<float2> xds_;
  DeviceBuffer<__half> xh_, wh_;
  int64_t attn_part_floats_ = 0;

  std::map<std::pair<int, int>, GraphExec> graphs_;
  uint64_t graph_bytes_ = 0;  // device memory the captures took (cudaMemGetInfo around each)
  int last_rows_ = 0;
  int sms_ = 0;  // the device's multiprocessors (attention split sizing), read once
  bool mmq_ = false;  // stage_uses_mmq
  bool in_decode_ = false;
};

}  // namespace pipellm::cuda
