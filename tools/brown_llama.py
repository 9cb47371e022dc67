"""The default model's architecture in PyTorch, shared by training and the reference check.

The model computes exactly what llama.cpp's `llama` architecture computes for the stored tensors:
RMSNorm, RoPE in GGML's normal mode (rotates the adjacent pairs (2i, 2i+1) of each head,
theta = pos * base^(-2i/head_dim)), grouped-query attention (query head h reads key/value head
h // (n_head / n_head_kv)), SwiGLU feed-forward, untied output matrix. So the GGUF stores the
weights as they are, with no row permutation.
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

EOT = "<|endoftext|>"
PROMPTS = [
    "The jury said",
    "In the morning",
    "She looked at him and",
    "The president of the United States",
    "It was a",
    "The church",
    "Science has shown that",
    "He said that the",
]



# ---------------------------------------------------------------- corpus

def read_documents(path):
    with open(path, encoding="utf-8") as f:
        docs = [d.strip("\n") for d in f.read().split("\n\n")]
    return [d for d in docs if d]


def split_documents(docs):
    # Every 20th document (5%) is held out for validation; the rest trains.
    train = [d for i, d in enumerate(docs) if i % 20 != 7]
    val = [d for i, d in enumerate(docs) if i % 20 == 7]
    return train, val


# ---------------------------------------------------------------- model

class Config:
    def __init__(self, n_vocab, n_embd=384, n_layer=6, n_head=6, n_head_kv=2, n_ff=1024, n_ctx=512,
                 rope_base=10000.0, rms_eps=1e-5, dropout=0.1):
        self.n_vocab, self.n_embd, self.n_layer = n_vocab, n_embd, n_layer
        self.n_head, self.n_head_kv, self.n_ff, self.n_ctx = n_head, n_head_kv, n_ff, n_ctx
        self.head_dim = n_embd // n_head
        self.rope_base, self.rms_eps, self.dropout = rope_base, rms_eps, dropout


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        xf = x.float() if x.dtype != torch.float64 else x
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.to(y.dtype)).to(x.dtype)


def rope_tables(cfg, n_pos, device, dtype):
    # GGML normal mode: pair i of a head is (x[2i], x[2i+1]), theta = pos * base^(-2i/head_dim).
    half = cfg.head_dim // 2
    inv = cfg.rope_base ** (-2.0 * torch.arange(half, dtype=torch.float64) / cfg.head_dim)
    ang = torch.arange(n_pos, dtype=torch.float64)[:, None] * inv[None, :]
    return ang.cos().to(device=device, dtype=dtype), ang.sin().to(device=device, dtype=dtype)


def apply_rope(x, cos, sin):
    # x: [B, H, T, D]; cos/sin: [T, D/2]
    xf = x.to(cos.dtype)
    xe, xo = xf[..., 0::2], xf[..., 1::2]
    ye = xe * cos - xo * sin
    yo = xe * sin + xo * cos
    return torch.stack((ye, yo), dim=-1).flatten(-2).to(x.dtype)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        E, D = cfg.n_embd, cfg.head_dim
        self.attn_norm = RMSNorm(E, cfg.rms_eps)
        self.wq = nn.Linear(E, cfg.n_head * D, bias=False)
        self.wk = nn.Linear(E, cfg.n_head_kv * D, bias=False)
        self.wv = nn.Linear(E, cfg.n_head_kv * D, bias=False)
        self.wo = nn.Linear(cfg.n_head * D, E, bias=False)
        self.ffn_norm = RMSNorm(E, cfg.rms_eps)
        self.w_gate = nn.Linear(E, cfg.n_ff, bias=False)
        self.w_up = nn.Linear(E, cfg.n_ff, bias=False)
        self.w_down = nn.Linear(cfg.n_ff, E, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin):
        cfg = self.cfg
        B, T, _ = x.shape
        h = self.attn_norm(x)
        q = self.wq(h).view(B, T, cfg.n_head, cfg.head_dim).transpose(1, 2)
        k = self.wk(h).view(B, T, cfg.n_head_kv, cfg.head_dim).transpose(1, 2)
        v = self.wv(h).view(B, T, cfg.n_head_kv, cfg.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        group = cfg.n_head // cfg.n_head_kv
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        if q.dtype == torch.float64:  # the reference: plain softmax attention, no fused kernel
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(cfg.head_dim)
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            a = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v
        else:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=cfg.dropout if self.training else 0.0)
        a = a.transpose(1, 2).reshape(B, T, cfg.n_head * cfg.head_dim)
        x = x + self.drop(self.wo(a))
        h = self.ffn_norm(x)
        x = x + self.drop(self.w_down(F.silu(self.w_gate(h)) * self.w_up(h)))
        return x


class Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_embd = nn.Embedding(cfg.n_vocab, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.out_norm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        self.output = nn.Linear(cfg.n_embd, cfg.n_vocab, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.apply(self._init)
        for b in self.blocks:  # scaled init of the residual projections
            nn.init.normal_(b.wo.weight, std=0.02 / math.sqrt(2 * cfg.n_layer))
            nn.init.normal_(b.w_down.weight, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids):
        T = ids.shape[1]
        dtype = torch.float64 if self.output.weight.dtype == torch.float64 else torch.float32
        cos, sin = rope_tables(self.cfg, T, ids.device, dtype)
        x = self.drop(self.tok_embd(ids))
        for b in self.blocks:
            x = b(x, cos, sin)
        return self.output(self.out_norm(x))


def gguf_tensors(model):
    """(gguf name, torch tensor) pairs. nn.Linear's weight [out, in] is GGUF's [in, out] as is."""
    out = [("token_embd.weight", model.tok_embd.weight)]
    for i, b in enumerate(model.blocks):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", b.attn_norm.weight), (p + "attn_q.weight", b.wq.weight),
                (p + "attn_k.weight", b.wk.weight), (p + "attn_v.weight", b.wv.weight),
                (p + "attn_output.weight", b.wo.weight), (p + "ffn_norm.weight", b.ffn_norm.weight),
                (p + "ffn_gate.weight", b.w_gate.weight), (p + "ffn_up.weight", b.w_up.weight),
                (p + "ffn_down.weight", b.w_down.weight)]
    out += [("output_norm.weight", model.out_norm.weight), ("output.weight", model.output.weight)]
    return out


# ---------------------------------------------------------------- Q8_0 rounding

def q8_0_blocks(w):
    """w: float32 [rows, cols], cols % 32 == 0 -> (GGUF Q8_0 bytes, the values they decode to)."""
    x = w.reshape(-1, 32).astype(np.float32)
    amax = np.abs(x).max(axis=1)
    d16 = (amax / np.float32(127.0)).astype(np.float16)
    d = d16.astype(np.float32)
    inv = np.where(d > 0, np.float32(1.0) / np.where(d > 0, d, np.float32(1.0)), np.float32(0.0))
    q = np.clip(np.round(x * inv[:, None]), -127, 127).astype(np.int8)
    raw = np.concatenate([d16.view(np.uint8).reshape(-1, 2), q.view(np.uint8)], axis=1)
    deq = (d[:, None] * q.astype(np.float32)).reshape(w.shape)
    return raw.tobytes(), deq



def q8_0_decode(raw, shape):
    """GGUF Q8_0 bytes (per block: little-endian f16 scale, 32 int8) -> float64 array."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 34)
    d = blocks[:, :2].copy().view("<f2").astype(np.float64)
    q = blocks[:, 2:].copy().view(np.int8).astype(np.float64)
    return (d * q).reshape(shape)


def load_exported(export_dir, device):
    """Builds the float64 model from manifest.json + weights.bin (as written by the trainer)."""
    with open(os.path.join(export_dir, "manifest.json")) as f:
        man = json.load(f)
    with open(os.path.join(export_dir, "weights.bin"), "rb") as f:
        blob = f.read()
    cfg = Config(man["n_vocab"], man["n_embd"], man["n_layer"], man["n_head"], man["n_head_kv"],
                 man["n_ff"], man["n_ctx"], man["rope_base"], man["rms_eps"], dropout=0.0)
    model = Model(cfg).double()
    params = dict(gguf_tensors(model))
    for t in man["tensors"]:
        raw = blob[t["offset"]:t["offset"] + t["nbytes"]]
        if t["dtype"] == "q8_0":
            w = q8_0_decode(raw, t["shape"])
        elif t["dtype"] == "f32":
            w = np.frombuffer(raw, dtype="<f4").astype(np.float64).reshape(t["shape"])
        else:
            raise ValueError(f"{t['name']}: unknown dtype {t['dtype']}")
        p = params.pop(t["name"])
        if tuple(p.shape) != tuple(w.shape):
            raise ValueError(f"{t['name']}: shape {w.shape} in the manifest, {tuple(p.shape)} in the model")
        with torch.no_grad():
            p.copy_(torch.from_numpy(w))
    if params:
        raise ValueError(f"tensors missing from the manifest: {sorted(params)}")
    return model.to(device).eval(), man


# ---------------------------------------------------------------- references and samples

@torch.no_grad()
def greedy(model, ids, n):
    """n greedy steps by full re-forward; returns (new ids, top1-top2 logit gap at each step)."""
    seq = list(ids)
    gaps = []
    dev = model.output.weight.device
    for _ in range(n):
        logits = model(torch.tensor([seq], device=dev))[0, -1]
        top = torch.topk(logits, 2)
        gaps.append(float(top.values[0] - top.values[1]))
        seq.append(int(top.indices[0]))
    return seq[len(ids):], gaps


@torch.no_grad()
def sample(model, ids, n, temp, top_k, gen):
    seq = list(ids)
    dev = model.output.weight.device
    for _ in range(n):
        logits = model(torch.tensor([seq[-model.cfg.n_ctx:]], device=dev))[0, -1].float()
        v, i = torch.topk(logits / temp, top_k)
        p = torch.softmax(v, -1).cpu()
        seq.append(int(i.cpu()[torch.multinomial(p, 1, generator=gen)]))
    return seq[len(ids):]



@torch.no_grad()
def write_reference(model, tok, eot, val_docs, out_dir, log):
    """Float64 forward of `model`: logits.f32 (every prompt position, float32, prompt after
    prompt) and reference.json (prompt ids, 64 greedy ids with the top-2 logit gap of each step,
    HF tokenizer ids of a validation text slice); logs samples."""
    model = model.double().eval()
    device = model.output.weight.device
    refs = []
    with open(os.path.join(out_dir, "logits.f32"), "wb") as f:
        for p in PROMPTS:
            ids = [eot] + tok.encode(p, add_special_tokens=False).ids
            logits = model(torch.tensor([ids], device=device))[0]
            f.write(logits.float().cpu().numpy().astype("<f4").tobytes())
            g, gaps = greedy(model, ids, 64)
            refs.append({"prompt": p, "ids": ids, "greedy": g, "gaps": gaps})
            log(f"greedy  {p!r} -> {tok.decode(g)!r} (smallest top-2 gap {min(gaps):.4f})")
    val_text = "\n\n".join(val_docs)[:30000]
    reference = {"prompts": refs, "n_vocab": model.cfg.n_vocab, "val_text": val_text,
                 "val_ids": tok.encode(val_text, add_special_tokens=False).ids}
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(reference, f)
    gen = torch.Generator().manual_seed(7)
    for p in PROMPTS[:5]:
        ids = [eot] + tok.encode(p, add_special_tokens=False).ids
        for _ in range(2):
            s = sample(model, ids, 60, 0.8, 40, gen)
            log(f"sampled {p!r} -> {tok.decode(s)!r}")
