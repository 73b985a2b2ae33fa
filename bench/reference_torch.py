#!/usr/bin/python3
"""PyTorch reference for bench/run.sh and bench/gpu.sh: the same STEM
architecture, written independently of the C engine, timed the same way. Prints
one JSON object.

On the CPU machines run it with Debian's python3-torch: /usr/bin/python3 (not
the python3 on PATH). On a GPU machine: any python3 whose torch sees CUDA.

  reference_torch.py train [--threads T] [--steps N] [--warmup W] [arch flags]
      times full training steps (zero_grad, forward + mean cross-entropy,
      backward, clip per group, AdamW with two parameter groups) on random tokens.
  reference_torch.py topk --model FILE.safetensors --ids 1,2,3 [--threads T]
      loads an engine model file and times the next-token top-k for the prompt:
      forward, final norm and LM head for the LAST position only, softmax, top-k.
  reference_torch.py decode [--model FILE | arch flags] [--prompt-len P] [--gen G]
      prefill and per-token greedy decode latency, batch 1, WITHOUT a KV cache:
      each new token re-runs the full forward over the window (the last seq_len
      ids), exactly as the engine's stem_generate does, so the two compare like
      for like (a KV-cached PyTorch decode would be faster; not measured here).
      Prompt ids (1000003 (i+1) + 12345) mod V unless --ids.

--device cpu|cuda (cpu). On cuda, torch.cuda.synchronize() runs before every
clock read; --math fp32 (default: TF32 off, full fp32 matmuls, as the engine's
default), tf32 (set_float32_matmul_precision('high')) or bf16 ('medium': bf16
inside fp32 matmuls, like the engine's bf16 GEMM mode). --attn auto (default)
uses F.scaled_dot_product_attention (causal) where this torch has it, on CUDA
only (PyTorch at its best there); naive = matmul + masked softmax + matmul as
below, which is what the engine computes. --zipf A draws training ids with
weight 1/(id+1)^A (0 = uniform), as bench_train --zipf.

--threads T sets torch.set_num_threads(T) AND OpenBLAS's thread count (PyTorch's
CPU matmuls go to the system OpenBLAS, which ignores set_num_threads; the
environment variables are set before torch is imported). Everything else in the
environment, OPENBLAS_CORETYPE included, is inherited unchanged.

Architecture (the project DESIGN.md, section 1): pre-norm RMSNorm (eps 1e-5), causal
attention with RoPE on adjacent pairs (2i, 2i+1), theta 10000; SwiGLU FFN
w2(silu(w1 x) * w3 x) in dense layers; STEM layers replace w3 x by the row of a
per-layer [V, F] table (nn.Embedding) at the current input token; untied head.
torch 1.13 has no scaled_dot_product_attention: attention is plain
matmul + masked softmax + matmul, which is also what the engine computes.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["train", "topk", "decode"])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--math", choices=["fp32", "tf32", "bf16"], default="fp32")
    p.add_argument("--attn", choices=["auto", "naive", "sdpa"], default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--blas-threads", type=int, default=None, help="OpenBLAS threads (default: --threads)")
    # train
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=0)
    p.add_argument("--ffn", type=int, default=688)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--stem-layers", default="all-but-first", help="none | all | all-but-first | list like 1,3")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--foreach", default="auto",
                   help="AdamW implementation: 1 = foreach (multi-tensor), 0 = per-tensor loop, fused (CUDA), "
                        "auto = time them all on this machine first and keep the fastest (default)")
    p.add_argument("--zipf", type=float, default=0.0, help="training ids Zipf-distributed with exponent A (0 = uniform)")
    p.add_argument("--seed", type=int, default=1)
    # topk
    p.add_argument("--model", help="engine model file (safetensors)")
    p.add_argument("--ids", help="comma-separated prompt token ids")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--topk-warmup", type=int, default=20)
    # decode
    p.add_argument("--prompt-len", type=int, default=0, help="prompt tokens (default: context / 2)")
    p.add_argument("--gen", type=int, default=32)
    p.add_argument("--decode-runs", type=int, default=2)
    p.add_argument("--decode-warmup", type=int, default=3)
    return p.parse_args(argv)


ARGS = parse_args(sys.argv[1:])
# Thread settings must be in the environment before torch (and OpenBLAS) load.
_blas = ARGS.blas_threads if ARGS.blas_threads else ARGS.threads
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
os.environ["OPENBLAS_NUM_THREADS"] = str(_blas)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(ARGS.threads)

if ARGS.device == "cuda" and not torch.cuda.is_available():
    sys.exit("reference_torch: --device cuda, but torch.cuda.is_available() is False (torch %s)" % torch.__version__)
DEV = torch.device(ARGS.device)
CUDA = DEV.type == "cuda"
if CUDA:
    # fp32 unless asked: the engine's default GEMMs are plain fp32
    torch.backends.cuda.matmul.allow_tf32 = ARGS.math == "tf32"
    torch.backends.cudnn.allow_tf32 = ARGS.math == "tf32"
if hasattr(torch, "set_float32_matmul_precision"):
    torch.set_float32_matmul_precision({"fp32": "highest", "tf32": "high", "bf16": "medium"}[ARGS.math])
HAVE_SDPA = hasattr(F, "scaled_dot_product_attention")
USE_SDPA = ARGS.attn == "sdpa" or (ARGS.attn == "auto" and CUDA and HAVE_SDPA)
if USE_SDPA and not HAVE_SDPA:
    sys.exit("reference_torch: --attn sdpa, but torch %s has no scaled_dot_product_attention" % torch.__version__)


def sync():
    if CUDA:
        torch.cuda.synchronize()


def now():
    """Clock read after everything queued on the GPU is done."""
    sync()
    return time.perf_counter()


# ---------------------------------------------------------------- model

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(hd, T, theta):
    # freq_i = theta^(-2i/hd), angle = t * freq_i (float32, as Lingua's precompute_freqs_cis)
    freqs = 1.0 / (theta ** (torch.arange(0, hd, 2)[: hd // 2].float() / hd))
    ang = torch.outer(torch.arange(T).float(), freqs)  # [T, hd/2]
    return torch.cos(ang), torch.sin(ang)


def apply_rope(x, cos, sin):
    # x [B, T, nh, hd]; rotate adjacent pairs (2i, 2i+1)
    B, T, nh, hd = x.shape
    xr = x.view(B, T, nh, hd // 2, 2)
    x0, x1 = xr[..., 0], xr[..., 1]
    c = cos[:T].view(1, T, 1, hd // 2)
    s = sin[:T].view(1, T, 1, hd // 2)
    return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).view(B, T, nh, hd)


class Attention(nn.Module):
    def __init__(self, dim, heads, kv_heads):
        super().__init__()
        self.h, self.kv, self.hd = heads, kv_heads, dim // heads
        self.wq = nn.Linear(dim, heads * self.hd, bias=False)
        self.wk = nn.Linear(dim, kv_heads * self.hd, bias=False)
        self.wv = nn.Linear(dim, kv_heads * self.hd, bias=False)
        self.wo = nn.Linear(heads * self.hd, dim, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = apply_rope(self.wq(x).view(B, T, self.h, self.hd), cos, sin).transpose(1, 2)
        k = apply_rope(self.wk(x).view(B, T, self.kv, self.hd), cos, sin).transpose(1, 2)
        v = self.wv(x).view(B, T, self.kv, self.hd).transpose(1, 2)
        if self.kv != self.h:
            k = k.repeat_interleave(self.h // self.kv, dim=1)
            v = v.repeat_interleave(self.h // self.kv, dim=1)
        if USE_SDPA:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.wo(o.transpose(1, 2).reshape(B, T, self.h * self.hd))
        s = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hd)) + mask[:T, :T]
        o = torch.matmul(torch.softmax(s, dim=-1), v)  # [B, h, T, hd]
        return self.wo(o.transpose(1, 2).reshape(B, T, self.h * self.hd))


class FeedForward(nn.Module):
    """Dense SwiGLU, or STEM: the up projection w3 x is replaced by table[token]."""

    def __init__(self, dim, ffn, stem, vocab):
        super().__init__()
        self.stem = stem
        self.w1 = nn.Linear(dim, ffn, bias=False)
        self.w2 = nn.Linear(ffn, dim, bias=False)
        if stem:
            self.table = nn.Embedding(vocab, ffn)
        else:
            self.w3 = nn.Linear(dim, ffn, bias=False)

    def forward(self, x, ids):
        up = self.table(ids) if self.stem else self.w3(x)
        return self.w2(F.silu(self.w1(x)) * up)


class Block(nn.Module):
    def __init__(self, cfg, stem):
        super().__init__()
        self.attention_norm = RMSNorm(cfg["dim"], cfg["norm_eps"])
        self.attention = Attention(cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"])
        self.ffn_norm = RMSNorm(cfg["dim"], cfg["norm_eps"])
        self.feed_forward = FeedForward(cfg["dim"], cfg["ffn_dim"], stem, cfg["vocab"])

    def forward(self, x, ids, cos, sin, mask):
        h = x + self.attention(self.attention_norm(x), cos, sin, mask)
        return h + self.feed_forward(self.ffn_norm(h), ids)


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg["vocab"], cfg["dim"])
        self.layers = nn.ModuleList(Block(cfg, l in cfg["stem_layers"]) for l in range(cfg["n_layers"]))
        self.norm = RMSNorm(cfg["dim"], cfg["norm_eps"])
        self.output = nn.Linear(cfg["dim"], cfg["vocab"], bias=False)
        cos, sin = rope_tables(cfg["dim"] // cfg["n_heads"], cfg["seq_len"], cfg["rope_theta"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        T = cfg["seq_len"]
        mask = torch.full((T, T), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)

    def init_weights(self, seed):
        g = torch.Generator().manual_seed(seed)
        out_std = 0.02 / math.sqrt(2 * self.cfg["n_layers"])
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith(".table.weight"):
                p.data.normal_(0.0, math.sqrt(2.0 / (self.cfg["vocab"] + self.cfg["ffn_dim"])), generator=g)
            elif name.endswith("wo.weight") or name.endswith("w2.weight"):
                p.data.normal_(0.0, out_std, generator=g)
            else:
                p.data.normal_(0.0, 0.02, generator=g)

    def hidden(self, ids):
        h = self.tok_embeddings(ids)
        for layer in self.layers:
            h = layer(h, ids, self.cos, self.sin, self.mask)
        return h

    def forward(self, ids, targets):
        logits = self.output(self.norm(self.hidden(ids)))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))

    def next_logits(self, ids):
        """Logits after the last position only ([B, V])."""
        h = self.hidden(ids)[:, -1, :]
        return self.output(self.norm(h))


def parse_stem_layers(spec, n_layers):
    if spec in ("", "none"):
        return []
    if spec == "all":
        return list(range(n_layers))
    if spec == "all-but-first":
        return list(range(1, n_layers))
    if spec.startswith("every-"):
        k = int(spec[6:])
        return list(range(k - 1, n_layers, k))
    return sorted(int(s) for s in spec.split(","))


def quantile(v, q):
    s = sorted(v)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def env_info():
    d = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "openblas_threads": _blas,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "device": {"requested": ARGS.device, "backend": DEV.type,
                   "name": torch.cuda.get_device_name(0) if CUDA else "CPU", "math": ARGS.math},
        "attention": "sdpa" if USE_SDPA else "naive",
        "cuda_available": torch.cuda.is_available(),
    }
    if CUDA:
        d["cuda_version"] = torch.version.cuda
    return d


def make_cfg(a):
    return {
        "vocab": a.vocab, "dim": a.dim, "n_layers": a.layers, "n_heads": a.heads,
        "n_kv_heads": a.kv_heads or a.heads, "ffn_dim": a.ffn, "seq_len": a.seq,
        "rope_theta": 10000.0, "norm_eps": 1e-5,
        "stem_layers": parse_stem_layers(a.stem_layers, a.layers),
    }


# ---------------------------------------------------------------- train

def bench_train(a):
    torch.manual_seed(a.seed)
    cfg = make_cfg(a)
    model = Transformer(cfg)
    model.init_weights(a.seed)
    model.to(DEV)
    model.train()
    tables = [p for n, p in model.named_parameters() if n.endswith(".table.weight")]
    table_ids = {id(p) for p in tables}
    backbone = [p for p in model.parameters() if id(p) not in table_ids]
    # the engine's defaults (stem_optim_defaults): lr 3e-3, wd 0.1 backbone / 0 tables,
    # betas (0.9, 0.95), eps 1e-8, clip 1.0 per group
    groups = [{"params": backbone, "lr": 3e-3, "weight_decay": 0.1}]
    if tables:
        groups.append({"params": tables, "lr": 3e-3, "weight_decay": 0.0})

    # AdamW implementations: "true" = foreach (multi-tensor), "false" = per-tensor
    # loop, "fused" = one fused kernel (CUDA, torch >= 2.0)
    def make_opt(impl):
        kw = {"fused": True} if impl == "fused" else {"foreach": impl == "true"}
        return torch.optim.AdamW([dict(g) for g in groups], betas=(0.9, 0.95), eps=1e-8, **kw)

    B, T, V = a.batch, a.seq, a.vocab
    g = torch.Generator().manual_seed(a.seed)
    weights = (torch.arange(V, dtype=torch.float64) + 1.0).pow(-a.zipf) if a.zipf > 0 else None
    batches = []
    for _ in range(4):
        if weights is None:
            stream = torch.randint(0, V, (B, T + 1), generator=g)
        else:
            stream = torch.multinomial(weights, B * (T + 1), replacement=True, generator=g).view(B, T + 1)
        batches.append((stream[:, :T].contiguous().to(DEV), stream[:, 1:].contiguous().to(DEV)))

    # Which AdamW implementation is fastest here? (PyTorch at its best.) Time 3
    # optimizer steps of each on real gradients, interleaved; keep the fastest.
    probe = {}
    if a.foreach == "auto":
        model(*batches[0]).backward()
        impls = ["true", "false"]
        if CUDA:
            try:
                make_opt("fused")
                impls.append("fused")
            except (RuntimeError, TypeError, ValueError):
                pass
        cands = {fe: make_opt(fe) for fe in impls}
        times_by = {fe: [] for fe in impls}
        for _ in range(4):
            for fe, o in cands.items():
                t = now()
                o.step()
                times_by[fe].append(now() - t)
        probe = {fe: statistics.median(v[1:]) * 1e3 for fe, v in times_by.items()}
        foreach = min(times_by, key=lambda fe: statistics.median(times_by[fe][1:]))
        del cands
    else:
        foreach = {"1": "true", "0": "false"}.get(a.foreach, a.foreach)
    opt = make_opt(foreach)

    times, phases = [], {"zero_grad": [], "forward": [], "backward": [], "optimizer": []}
    loss_first = loss_last = float("nan")
    for s in range(a.warmup + a.steps):
        x, y = batches[s % len(batches)]
        t0 = now()
        opt.zero_grad(set_to_none=True)
        t1 = now()
        loss = model(x, y)
        t2 = now()
        loss.backward()
        t3 = now()
        torch.nn.utils.clip_grad_norm_(backbone, 1.0)
        if tables:
            torch.nn.utils.clip_grad_norm_(tables, 1.0)
        opt.step()
        t4 = now()
        lv = loss.item()
        if s == 0:
            loss_first = lv
        loss_last = lv
        if s >= a.warmup:
            times.append(t4 - t0)
            phases["zero_grad"].append(t1 - t0)
            phases["forward"].append(t2 - t1)
            phases["backward"].append(t3 - t2)
            phases["optimizer"].append(t4 - t3)
            print(f"reference_torch: step {s - a.warmup + 1}/{a.steps} {(t4 - t0) * 1e3:.1f} ms (loss {lv:.3f})",
                  file=sys.stderr)
    med = statistics.median(times)
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "bench": "train",
        "engine": "pytorch",
        **env_info(),
        "foreach": foreach,
        "foreach_probe_ms": probe,
        "tokens": {"distribution": "zipf" if a.zipf > 0 else "uniform", "zipf": a.zipf},
        "config": {"vocab": V, "dim": a.dim, "layers": a.layers, "heads": a.heads, "kv_heads": cfg["n_kv_heads"],
                   "ffn": a.ffn, "seq": T, "batch": B, "stem_layers": cfg["stem_layers"]},
        "threads": a.threads,
        "steps": a.steps,
        "warmup": a.warmup,
        "tokens_per_step": B * T,
        "step_ms": med * 1e3,
        "step_ms_mean": statistics.mean(times) * 1e3,
        "step_ms_min": min(times) * 1e3,
        "step_ms_p90": quantile(times, 0.9) * 1e3,
        "step_ms_all": [round(t * 1e3, 2) for t in times],
        "phase_ms": {k: statistics.median(v) * 1e3 for k, v in phases.items()},
        "tokens_per_s": B * T / med,
        "params_total": n_params,
        "loss_first": loss_first,
        "loss_last": loss_last,
    }


# ---------------------------------------------------------------- topk

def read_safetensors(path):
    """{name: float32 tensor}, metadata dict: through the safetensors package
    where it is installed (fast), else a minimal reader of the format."""
    try:
        from safetensors import safe_open
        out = {}
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            for name in f.keys():
                out[name] = f.get_tensor(name).float()
        return out, meta
    except ImportError:
        pass
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    dtypes = {"F32": (torch.float32, 4), "BF16": (torch.bfloat16, 2), "F16": (torch.float16, 2)}
    out = {}
    for name, info in header.items():
        dt, size = dtypes[info["dtype"]]
        b, e = info["data_offsets"]
        count = (e - b) // size
        t = torch.frombuffer(bytearray(data[base + b:base + e]), dtype=dt, count=count) if count else torch.empty(0, dtype=dt)
        out[name] = t.reshape(info["shape"]).float()
    return out, meta


def load_engine_model(path):
    tensors, meta = read_safetensors(path)
    c = json.loads(meta["stem_config"])
    cfg = {k: c[k] for k in ("vocab", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "seq_len",
                             "rope_theta", "norm_eps")}
    cfg["stem_layers"] = list(c["stem_layers"])
    model = Transformer(cfg)
    sd = {}
    for name, t in tensors.items():
        if name.startswith("stem_embeddings."):
            j = int(name.split(".")[1])
            sd[f"layers.{cfg['stem_layers'][j]}.feed_forward.table.weight"] = t
        else:
            sd[name] = t
    model.load_state_dict(sd, strict=True)
    model.to(DEV)
    model.eval()
    return model, cfg


def bench_topk(a):
    if not a.model or not a.ids:
        sys.exit("reference_torch: topk needs --model and --ids")
    t0 = time.perf_counter()
    model, cfg = load_engine_model(a.model)
    load_ms = (time.perf_counter() - t0) * 1e3
    ids = torch.tensor([[int(s) for s in a.ids.split(",")]], dtype=torch.long, device=DEV)

    def call():
        with torch.inference_mode():
            probs = torch.softmax(model.next_logits(ids)[0], dim=-1)
            top = torch.topk(probs, a.k)
            return top.values.cpu(), top.indices.cpu()   # on the host, as the engine's result

    for _ in range(a.topk_warmup):
        call()
    lat = []
    for _ in range(a.runs):
        t = now()
        call()
        lat.append((now() - t) * 1e3)
    top_values, top_indices = call()
    return {
        "bench": "topk",
        "engine": "pytorch",
        **env_info(),
        "model": a.model,
        "threads": a.threads,
        "prompt_len": ids.shape[1],
        "k": a.k,
        "runs": a.runs,
        "load_ms": load_ms,
        "latency": [{"threads": a.threads, "median_ms": statistics.median(lat), "p90_ms": quantile(lat, 0.9),
                     "min_ms": min(lat), "mean_ms": statistics.mean(lat)}],
        "topk": [{"id": int(i), "prob": float(p)} for p, i in zip(top_values, top_indices)],
    }


# ---------------------------------------------------------------- decode

def bench_decode(a):
    t0 = time.perf_counter()
    if a.model:
        model, cfg = load_engine_model(a.model)
    else:
        torch.manual_seed(a.seed)
        cfg = make_cfg(a)
        model = Transformer(cfg)
        model.init_weights(a.seed)
        model.to(DEV)
        model.eval()
    sync()
    load_ms = (time.perf_counter() - t0) * 1e3
    V, S = cfg["vocab"], cfg["seq_len"]
    if a.ids:
        prompt = [int(s) for s in a.ids.split(",")]
    else:
        P = min(a.prompt_len or max(S // 2, 1), S)
        prompt = [(1000003 * (i + 1) + 12345) % V for i in range(P)]
    P = len(prompt)

    def next_id(seq):
        # stem_next_probs + argmax: forward over the window, head for the last
        # position, softmax, argmax, the id back on the host
        window = torch.tensor([seq[-S:]], dtype=torch.long, device=DEV)
        with torch.inference_mode():
            probs = torch.softmax(model.next_logits(window)[0], dim=-1)
            return int(torch.argmax(probs).item())

    for _ in range(a.decode_warmup):
        next_id(prompt)
    pre = []
    first = -1
    for _ in range(a.runs):
        t = now()
        first = next_id(prompt)
        pre.append((now() - t) * 1e3)
    dec = []
    gen = []
    for r in range(-1, a.decode_runs):   # one untimed run first
        seq = list(prompt)
        for _ in range(a.gen):
            t = now()
            nxt = next_id(seq)
            dt = (now() - t) * 1e3
            seq.append(nxt)
            if r >= 0:
                dec.append(dt)
        gen = seq[P:]

    def stats(v):
        return {"median_ms": statistics.median(v), "p90_ms": quantile(v, 0.9), "min_ms": min(v),
                "mean_ms": statistics.mean(v), "n": len(v)}

    return {
        "bench": "decode",
        "engine": "pytorch",
        **env_info(),
        "model": a.model or "random",
        "config": {"vocab": V, "dim": cfg["dim"], "layers": cfg["n_layers"], "heads": cfg["n_heads"],
                   "kv_heads": cfg["n_kv_heads"], "ffn": cfg["ffn_dim"], "seq": S, "stem_layers": cfg["stem_layers"]},
        "kv_cache": False,
        "threads": a.threads,
        "load_ms": load_ms,
        "prompt_len": P,
        "gen": a.gen,
        "runs": a.runs,
        "decode_runs": a.decode_runs,
        "decode_window": [min(P, S), min(P + a.gen - 1, S)],
        "prefill": stats(pre),
        "decode_per_token": stats(dec),
        "decode_tokens_per_s": 1e3 / statistics.mean(dec),
        "prompt_ids": prompt,
        "first_id": first,
        "generated_ids": gen,
    }


if __name__ == "__main__":
    result = {"train": bench_train, "topk": bench_topk, "decode": bench_decode}[ARGS.mode](ARGS)
    print(json.dumps(result, indent=2))
