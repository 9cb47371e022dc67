#!/usr/bin/env python3
"""Wires weight streaming (docs/PREFETCH.md) into the CUDA stage: adds the StreamedWeights hooks to
engine/cuda/cuda_stage.{h,cpp}, moves tests/gpu/pending/streamed_stage_test.cpp into tests/gpu/ and
adds the pipellm_prefetch_bench target. Idempotent. Usage: scripts/prefetch-integrate.py [REPO_ROOT]"""
import os
import sys
root = sys.argv[1] if len(sys.argv) > 1 else '.'
def edit(path, pairs):
    s = open(f'{root}/{path}').read()
    if 'streamed_' in s:
        return
    for old, new in pairs:
        if s.count(old) != 1:
            sys.exit(f'{path}: anchor not found once: {old[:60]!r}')
        s = s.replace(old, new)
    open(f'{root}/{path}', 'w').write(s)
edit('engine/cuda/cuda_stage.h', [
    ('#include "engine/cuda/cuda_weights.h"\n', '#include "engine/cuda/cuda_weights.h"\n#include "engine/cuda/streamed_weights.h"\n'),
    ('  bool resident_f16 = false;   // keep f16 copies of the matrices (faster prefill / large batches)\n',
     '  bool resident_f16 = false;   // keep f16 copies of the matrices (faster prefill / large batches)\n'
     '  StreamingOptions streaming;  // a VRAM budget: stream the layers that do not fit (docs/PREFETCH.md)\n'),
    ('  cudaStream_t stream() const { return stream_.get(); }\n',
     '  cudaStream_t stream() const { return stream_.get(); }\n'
     '  const StreamedWeights* streamed() const { return streamed_.get(); }  // null without a VRAM budget\n'),
    ('  std::unique_ptr<CudaWeights> weights_;\n', '  std::unique_ptr<StreamedWeights> streamed_;\n  std::unique_ptr<CudaWeights> weights_;\n'),
])
edit('engine/cuda/cuda_stage.cpp', [
    ('  weights_ = std::make_unique<CudaWeights>(c, w, opt_.resident_f16, stream_.get());\n',
     '  if (opt_.streaming.enabled()) {  // no resident f16 copies when streaming\n'
     '    streamed_ = std::make_unique<StreamedWeights>(c, w, opt_.n_slots, opt_.n_ctx, opt_.streaming);\n'
     '    weights_ = std::make_unique<CudaWeights>(c, streamed_->resident_view(), false, stream_.get());\n'
     '    streamed_->install(*weights_);\n'
     '  } else {\n'
     '    weights_ = std::make_unique<CudaWeights>(c, w, opt_.resident_f16, stream_.get());\n'
     '  }\n'),
    ('  for (int i = 0; i < range_.size(); ++i) {\n    const CudaLayer& l = weights_->layers[static_cast<size_t>(i)];\n',
     '  if (streamed_) streamed_->begin_pass(stream_.get());\n'
     '  for (int i = 0; i < range_.size(); ++i) {\n    const CudaLayer& l = weights_->layers[static_cast<size_t>(i)];\n'
     '    if (streamed_) streamed_->before_layer(i, stream_.get());\n'),
    ('    product(l.w_down, T, x_.get(), E, true);\n  }\n}\n',
     '    product(l.w_down, T, x_.get(), E, true);\n    if (streamed_) streamed_->after_layer(i, stream_.get());\n  }\n'
     '  if (streamed_) streamed_->end_pass(stream_.get());\n}\n'),
])
pending = f'{root}/tests/gpu/pending/streamed_stage_test.cpp'
if os.path.exists(pending):
    os.replace(pending, f'{root}/tests/gpu/streamed_stage_test.cpp')
    if not os.listdir(f'{root}/tests/gpu/pending'):
        os.rmdir(f'{root}/tests/gpu/pending')
cm = f'{root}/bench/CMakeLists.txt'
if 'pipellm_prefetch_bench' not in open(cm).read():
    with open(cm, 'a') as f:
        f.write('\n# Weight streaming under VRAM budgets (docs/PREFETCH.md): pp512/pp2048/tg32, GB/s vs pinned H2D.\n'
                'if(TARGET pipellm_engine_cuda)\n'
                '  add_executable(pipellm_prefetch_bench prefetch_bench.cpp)\n'
                '  pipellm_target_defaults(pipellm_prefetch_bench)\n'
                '  target_link_libraries(pipellm_prefetch_bench PRIVATE pipellm_engine_cuda)\n'
                'endif()\n')
print('integrated')
