#!/usr/bin/env python3
"""Trains PipeLLM's default model: a small llama-architecture decoder on the Brown corpus.

Usage (on a machine with a CUDA GPU, torch and HF `tokenizers`):
  python3 tools/train_default_model.py --corpus .carry/brown/brown.txt --out OUT_DIR [--smoke]

Writes into OUT_DIR:
  tokenizer.json   the HF byte-level BPE tokenizer (GPT-2 pre-tokenizer regex, no prefix space)
  weights.bin      the weights as GGUF-ready bytes: 2-D tensors as Q8_0 blocks, 1-D tensors f32
  manifest.json    hyperparameters, tokenizer settings and each tensor's name/type/shape/offset
  reference.json   PyTorch reference (float64 forward) for the prompts: ids, greedy ids, gaps;
                   HF tokenizer ids of a validation text slice
  logits.f32       the reference logits of every prompt position, float32, prompt after prompt
  train_log.txt    loss curve, validation loss, samples

The architecture (tools/brown_llama.py) is llama.cpp's `llama`: the GGUF stores the weights as
they are, with no row permutation.

The exported weights are the trained weights rounded through Q8_0 (per 32 elements: an f16 scale
and int8 values). The PyTorch reference runs those rounded weights, so the shipped Q8_0 model and
the reference compute the same function; re-quantizing them to Q8_0 is exact.
"""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from brown_llama import (EOT, Config, Model, gguf_tensors, q8_0_blocks, read_documents, split_documents,
                         write_reference)

# ---------------------------------------------------------------- data and tokenizer

def train_tokenizer(docs, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    return tok


def encode_stream(tok, docs, eot_id):
    # Each document starts with <|endoftext|>, which doubles as BOS: a prompt is [EOT] + text.
    out = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        out.append(eot_id)
        out.extend(enc.ids)
    return np.asarray(out, dtype=np.int64)


def round_and_export(model, out_dir):
    """Rounds every matrix through Q8_0 in place; writes weights.bin; returns the tensor table."""
    table, offset = [], 0
    with open(os.path.join(out_dir, "weights.bin"), "wb") as f:
        for name, p in gguf_tensors(model):
            w = p.detach().float().cpu().numpy()
            if w.ndim == 2:
                raw, deq = q8_0_blocks(w)
                p.data.copy_(torch.from_numpy(deq).to(p.device, p.dtype))
                dtype = "q8_0"
            else:
                raw, dtype = w.astype("<f4").tobytes(), "f32"
            f.write(raw)
            table.append({"name": name, "dtype": dtype, "shape": list(w.shape), "offset": offset,
                          "nbytes": len(raw)})
            offset += len(raw)
            pad = (-offset) % 32
            f.write(b"\0" * pad)
            offset += pad
    return table


# ---------------------------------------------------------------- training

def batches(stream, n_ctx, batch, gen, device):
    n = len(stream) - n_ctx - 1
    while True:
        starts = torch.randint(0, n, (batch,), generator=gen)
        x = torch.stack([torch.from_numpy(stream[s:s + n_ctx + 1]) for s in starts.tolist()])
        x = x.to(device, non_blocking=True)
        yield x[:, :-1], x[:, 1:]


@torch.no_grad()
def evaluate(model, val, n_ctx, device, batch=32):
    model.eval()
    n_chunks = (len(val) - 1) // n_ctx
    data = torch.from_numpy(val[:n_chunks * n_ctx + 1]).to(device)
    total, count = 0.0, 0
    for c0 in range(0, n_chunks, batch):
        c1 = min(n_chunks, c0 + batch)
        idx = torch.arange(c0, c1, device=device)[:, None] * n_ctx + torch.arange(n_ctx + 1, device=device)
        seq = data[idx]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(seq[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), seq[:, 1:].reshape(-1),
                               reduction="sum")
        total += loss.item()
        count += seq[:, 1:].numel()
    model.train()
    return total / count


def lr_at(step, total, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def train(model, train_ids, val_ids, args, log, device):
    """Trains with a cosine schedule of args.max_steps (shrunk to fit args.time_budget); keeps and
    restores the weights of the best validation loss. Returns (best loss, its step, steps run)."""
    cfg = model.cfg
    decay = [p for n, p in model.named_parameters() if p.ndim == 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), fused=True)
    gen = torch.Generator().manual_seed(1234)
    it = batches(train_ids, cfg.n_ctx, args.batch, gen, device)
    tokens_per_step = args.batch * cfg.n_ctx
    max_steps = args.max_steps
    best = (float("inf"), -1, None)
    t0 = time.time()
    step = 0
    while step < max_steps:
        lr = lr_at(step, max_steps, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = next(it)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, cfg.n_vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step == 30:
            # Fit the schedule into the time budget once the speed is known.
            torch.cuda.synchronize()
            per_step = (time.time() - t0) / step
            fit = int(args.time_budget / per_step)
            max_steps = max(60, min(max_steps, fit))
            log(f"{per_step * 1000:.1f} ms/step, {tokens_per_step / per_step / 1e3:.0f}k tok/s -> "
                f"{max_steps} steps ({max_steps * tokens_per_step / len(train_ids):.1f} epochs)")
        if step % args.eval_every == 0 or step == max_steps:
            vl = evaluate(model, val_ids, cfg.n_ctx, device)
            log(f"step {step:5d}  lr {lr:.2e}  train {loss.item():.4f}  val {vl:.4f}  "
                f"({time.time() - t0:.0f} s)")
            if vl < best[0]:
                best = (vl, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[2])
    log(f"best validation loss {best[0]:.4f} at step {best[1]} (perplexity {math.exp(best[0]):.1f})")
    return best[0], best[1], step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--sweep", default="0.1:1500,0.2:2500", help="dropout:steps,... runs to compare")
    ap.add_argument("--time-budget", type=float, default=330.0, help="seconds of training in all")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--smoke", action="store_true", help="tiny run that checks the whole pipeline")
    args = ap.parse_args()
    if args.smoke:
        args.eval_every, args.warmup = 20, 10

    os.makedirs(args.out, exist_ok=True)
    log_path = os.path.join(args.out, "train_log.txt")
    log_file = open(log_path, "w", encoding="utf-8")

    def log(msg):
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    torch.manual_seed(0)
    random.seed(0)
    device = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True

    docs = read_documents(args.corpus)
    train_docs, val_docs = split_documents(docs)
    if args.smoke:
        train_docs, val_docs = train_docs[:40], val_docs[:5]
    log(f"corpus: {len(docs)} documents; train {len(train_docs)}, validation {len(val_docs)}")
    t = time.time()
    tok = train_tokenizer(train_docs, args.vocab)
    eot = tok.token_to_id(EOT)
    log(f"tokenizer: {tok.get_vocab_size()} tokens, {EOT} = {eot} ({time.time() - t:.1f} s)")
    tok.save(os.path.join(args.out, "tokenizer.json"))
    train_ids = encode_stream(tok, train_docs, eot)
    val_ids = encode_stream(tok, val_docs, eot)
    log(f"tokens: train {len(train_ids)}, validation {len(val_ids)} "
        f"({sum(len(d) for d in train_docs) / len(train_ids):.2f} chars/token)")

    # A small sweep over regularisation and length (the corpus is small: it overfits); the run
    # with the best validation loss is kept.
    sweep = [(float(a), int(b)) for a, b in (x.split(":") for x in args.sweep.split(","))]
    budget = args.time_budget / len(sweep)
    model, best_val, best_step, steps = None, float("inf"), -1, 0
    for dropout, n_steps in sweep:
        cfg = Config(tok.get_vocab_size(), dropout=dropout)
        if args.smoke:
            cfg.n_ctx, n_steps = 128, 40
        torch.manual_seed(0)
        m = Model(cfg).to(device)
        n_params = sum(p.numel() for p in m.parameters())
        log(f"model: llama, {n_params / 1e6:.2f}M parameters, n_embd {cfg.n_embd}, n_layer {cfg.n_layer}, "
            f"n_head {cfg.n_head}/{cfg.n_head_kv}, n_ff {cfg.n_ff}, n_ctx {cfg.n_ctx}, vocab {cfg.n_vocab}; "
            f"dropout {dropout}, {n_steps} steps")
        args.max_steps, args.time_budget = n_steps, budget
        v, b, s_run = train(m, train_ids, val_ids, args, log, device)
        if v < best_val:
            model, best_val, best_step, steps = m, v, b, s_run
        else:
            del m
    cfg = model.cfg
    log(f"kept: dropout {cfg.dropout}, validation loss {best_val:.4f}")

    # Round to Q8_0 (the shipped weights) and measure what that costs.
    table = round_and_export(model, args.out)
    q8_val = evaluate(model, val_ids, cfg.n_ctx, device)
    log(f"validation loss after Q8_0 rounding {q8_val:.4f}")

    manifest = {
        "arch": "llama", "name": "PipeLLM Brown 12M", "n_vocab": cfg.n_vocab, "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_head_kv": cfg.n_head_kv,
        "head_dim": cfg.head_dim, "n_ff": cfg.n_ff, "n_ctx": cfg.n_ctx, "rope_base": cfg.rope_base,
        "rms_eps": cfg.rms_eps, "bos_id": eot, "eos_id": eot, "add_bos": True,
        "tokenizer_pre": "gpt-2", "n_params": n_params, "val_loss": best_val, "val_loss_q8_0": q8_val,
        "train_steps": best_step, "dropout": cfg.dropout, "tensors": table,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)

    # Float64 reference of the rounded weights: logits of every prompt position, greedy text.
    write_reference(model, tok, eot, val_docs, args.out, log)
    log(f"done: {steps} steps run, best at {best_step}")
    log_file.close()


if __name__ == "__main__":
    sys.exit(main())
