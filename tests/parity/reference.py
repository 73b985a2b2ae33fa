#!/usr/bin/python3
"""Independent PyTorch reference for the STEM transformer (DESIGN.md section 1).

Written from the design document and the C *headers* only (file format, tensor
names, layout, optimizer semantics); it does not translate engine/ or kernels/.
The C parity test (tests/parity/test_parity.c) compares the engine against the
fixtures this script writes.

Run with Debian's torch (python3-torch), not the python3 first on PATH:

    /usr/bin/python3 tests/parity/reference.py --out tests/parity/fixtures     # regenerate
    /usr/bin/python3 tests/parity/reference.py --check tests/parity/fixtures   # verify committed

--check regenerates into a temporary directory and compares with the committed
files: the model file, ids and targets must be byte-identical (they come from the
seeded RNG only); computed tensors must be byte-identical or, failing that (a
different CPU may pick different vector kernels), within 1e-6 of each tensor's
max |value|. Exit status 0 = match, 1 = mismatch, 77 = torch missing (skipped).

Outputs (all little-endian safetensors, F32 / I32):
  tiny.safetensors           model in the stem-workbench/1 format (Lingua names)
  tiny_expected.safetensors  ids, targets, logits, loss, grad.<name>, after.<name>,
                             logits_after; __metadata__ holds the optimizer settings.

The model is defined in float32 terms (float32 parameters; RoPE frequencies and
angles computed in float32 as in Meta Lingua), but the fixtures are its float64
evaluation (forward, backward, clipping, AdamW) rounded to float32 at the end: the
exact answer to float32 precision, and byte-reproducible across BLAS kernels (a
float32 run of the optimizer step is not: it is ill-conditioned for gradient
elements near Adam's eps, and differs by ~1e-6 between OPENBLAS_CORETYPE values).
The float32 evaluation is also run and its discrepancy printed: the error floor of
any float32 implementation. CPU, one thread, deterministic.
"""
import argparse
import json
import math
import os
import struct
import sys
import tempfile

try:
    import torch
except ImportError:  # pragma: no cover
    print("torch is not available to", sys.executable, "- skipping", file=sys.stderr)
    sys.exit(77)

# ---------------------------------------------------------------------------
# Configuration and hyperparameters of the fixture
# ---------------------------------------------------------------------------
CFG = {
    "vocab": 300, "dim": 32, "n_layers": 3, "n_heads": 4, "n_kv_heads": 2,
    "ffn_dim": 48, "seq_len": 16, "rope_theta": 10000.0, "norm_eps": 1e-05,
    "stem_layers": [1, 2],
}
B, T = 2, 16
SEED = 1234
HPARAMS = {"lr": "0.01", "wd": "0.1", "table_lr": "0.02", "table_wd": "0.0",
           "clip": "0.5", "table_clip": "0.005"}
BETAS = (0.9, 0.95)
ADAM_EPS = 1e-8


def param_names(cfg):
    """Tensor names in the engine's layout order (engine/model.h)."""
    names = ["tok_embeddings.weight"]
    for l in range(cfg["n_layers"]):
        p = f"layers.{l}."
        names += [p + "attention_norm.weight", p + "attention.wq.weight", p + "attention.wk.weight",
                  p + "attention.wv.weight", p + "attention.wo.weight", p + "ffn_norm.weight",
                  p + "feed_forward.w1.weight", p + "feed_forward.w2.weight"]
        if l not in cfg["stem_layers"]:
            names.append(p + "feed_forward.w3.weight")
    names += ["norm.weight", "output.weight"]
    names += [f"stem_embeddings.{j}.weight" for j in range(len(cfg["stem_layers"]))]
    return names


def param_shape(cfg, name):
    V, D, F = cfg["vocab"], cfg["dim"], cfg["ffn_dim"]
    hd = D // cfg["n_heads"]
    if name in ("tok_embeddings.weight", "output.weight"):
        return (V, D)
    if name.startswith("stem_embeddings."):
        return (V, F)
    if name.endswith("norm.weight"):
        return (D,)
    leaf = name.split(".")[-2]
    return {"wq": (cfg["n_heads"] * hd, D), "wk": (cfg["n_kv_heads"] * hd, D),
            "wv": (cfg["n_kv_heads"] * hd, D), "wo": (D, cfg["n_heads"] * hd),
            "w1": (F, D), "w2": (D, F), "w3": (F, D)}[leaf]


def init_params(cfg, gen):
    """normal(0, 0.02) for linears and embeddings, 1 + 0.1*normal for norms (so norm
    gradients matter), tables xavier-normal std sqrt(2/(V+F)) scaled x10."""
    V, F = cfg["vocab"], cfg["ffn_dim"]
    table_std = 10.0 * math.sqrt(2.0 / (V + F))
    params = {}
    for name in param_names(cfg):
        shape = param_shape(cfg, name)
        z = torch.randn(shape, generator=gen, dtype=torch.float32)
        if name.endswith("norm.weight"):
            params[name] = 1.0 + 0.1 * z
        elif name.startswith("stem_embeddings."):
            params[name] = table_std * z
        else:
            params[name] = 0.02 * z
    return params


def make_batch(cfg, gen):
    V = cfg["vocab"]
    ids = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
    # repeated tokens, within and across sequences: table and embedding rows must
    # accumulate gradients from several positions
    ids[0, 10] = ids[0, 2]
    ids[1, 5] = ids[0, 3]
    ids[1, 12] = ids[1, 5]
    targets = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
    targets[0, 0] = -1
    targets[0, 7] = -1
    targets[1, 15] = -1
    targets[1, 3] = -1
    targets[1, 4] = -1
    return ids, targets


# ---------------------------------------------------------------------------
# The model (functional: params is a dict name -> tensor)
# ---------------------------------------------------------------------------
def rmsnorm(x, g, eps):
    # x * rsqrt(mean(x^2) + eps) * g, in the working precision (float32 for fixtures)
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * g


def rope_tables(hd, T_, theta, dtype):
    # Lingua: freqs = 1 / theta^(arange(0, hd, 2)/hd), computed in float32
    freqs = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    t = torch.arange(T_, dtype=torch.float32)
    ang = torch.outer(t, freqs)                      # [T, hd/2]
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


def apply_rope(x, cos, sin):
    # x: [B, T, heads, hd]; rotate adjacent pairs (2i, 2i+1)
    a = x[..., 0::2]
    b = x[..., 1::2]
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    out = torch.stack((a * c - b * s, a * s + b * c), dim=-1)   # [B,T,h,hd/2,2]
    return out.flatten(-2)


def attention(x, p, pre, cfg, cos, sin):
    Bq, Tq, D = x.shape
    H, KV = cfg["n_heads"], cfg["n_kv_heads"]
    hd = D // H
    q = (x @ p[pre + "attention.wq.weight"].t()).view(Bq, Tq, H, hd)
    k = (x @ p[pre + "attention.wk.weight"].t()).view(Bq, Tq, KV, hd)
    v = (x @ p[pre + "attention.wv.weight"].t()).view(Bq, Tq, KV, hd)
    q = apply_rope(q, cos, sin)
    k = apply_rope(k, cos, sin)
    # GQA: query head h reads kv head h // (H / KV)
    rep = H // KV
    k = k.repeat_interleave(rep, dim=2)
    v = v.repeat_interleave(rep, dim=2)
    q, k, v = (z.transpose(1, 2) for z in (q, k, v))                # [B, H, T, hd]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(hd)               # [B, H, T, T]
    causal = torch.ones(Tq, Tq, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    att = torch.softmax(scores, dim=-1)
    y = (att @ v).transpose(1, 2).reshape(Bq, Tq, H * hd)
    return y @ p[pre + "attention.wo.weight"].t()


def feed_forward(x, ids, p, pre, cfg, layer):
    gate = torch.nn.functional.silu(x @ p[pre + "feed_forward.w1.weight"].t())
    if layer in cfg["stem_layers"]:
        j = cfg["stem_layers"].index(layer)
        up = p[f"stem_embeddings.{j}.weight"][ids]    # row of the CURRENT input token
    else:
        up = x @ p[pre + "feed_forward.w3.weight"].t()
    return (gate * up) @ p[pre + "feed_forward.w2.weight"].t()


def forward(p, ids, cfg):
    D = cfg["dim"]
    dtype = p["tok_embeddings.weight"].dtype
    cos, sin = rope_tables(D // cfg["n_heads"], ids.shape[1], cfg["rope_theta"], dtype)
    h = p["tok_embeddings.weight"][ids]
    eps = cfg["norm_eps"]
    for l in range(cfg["n_layers"]):
        pre = f"layers.{l}."
        h = h + attention(rmsnorm(h, p[pre + "attention_norm.weight"], eps), p, pre, cfg, cos, sin)
        h = h + feed_forward(rmsnorm(h, p[pre + "ffn_norm.weight"], eps), ids, p, pre, cfg, l)
    h = rmsnorm(h, p["norm.weight"], eps)
    return h @ p["output.weight"].t()                                  # [B, T, V]


def loss_fn(logits, targets):
    # mean cross-entropy over positions whose target >= 0
    mask = targets >= 0
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (nll * mask).sum() / mask.sum()


def run(params0, ids, targets, cfg, dtype):
    """Forward, backward, one clipped AdamW step, forward again. Returns a dict."""
    names = param_names(cfg)
    p = {n: params0[n].to(dtype).clone().requires_grad_(True) for n in names}
    backbone = [p[n] for n in names if not n.startswith("stem_embeddings.")]
    tables = [p[n] for n in names if n.startswith("stem_embeddings.")]
    h = {k: float(v) for k, v in HPARAMS.items()}
    opt = torch.optim.AdamW([
        {"params": backbone, "lr": h["lr"], "weight_decay": h["wd"]},
        {"params": tables, "lr": h["table_lr"], "weight_decay": h["table_wd"]},
    ], betas=BETAS, eps=ADAM_EPS, foreach=False)

    logits = forward(p, ids, cfg)
    loss = loss_fn(logits, targets)
    opt.zero_grad()
    loss.backward()
    grads = {n: p[n].grad.detach().clone() for n in names}
    nb = torch.nn.utils.clip_grad_norm_(backbone, h["clip"])
    nt = torch.nn.utils.clip_grad_norm_(tables, h["table_clip"])
    opt.step()
    with torch.no_grad():
        after = {n: p[n].detach().clone() for n in names}
        logits_after = forward(after, ids, cfg)
    return {"logits": logits.detach(), "loss": loss.detach().reshape(1), "grads": grads,
            "after": after, "logits_after": logits_after, "norm_backbone": float(nb),
            "norm_tables": float(nt)}


# ---------------------------------------------------------------------------
# safetensors writer / reader (hand-written: 8-byte LE header length, JSON header,
# contiguous data section in header order, offsets relative to the data start)
# ---------------------------------------------------------------------------
DTYPES = {torch.float32: "F32", torch.int32: "I32"}


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs = []
    off = 0
    for name, t in tensors:
        t = t.detach().contiguous().cpu()
        data = t.numpy().tobytes()   # numpy's native order: little-endian on x86-64/arm64
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode()
    pad = (-(8 + len(hjson))) % 64       # data section 64-byte aligned, like the C writer
    hjson += b" " * pad
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b_ in blobs:
            f.write(b_)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    rev = {v: k for k, v in DTYPES.items()}
    out = {}
    for name, e in header.items():
        b0, b1 = e["data_offsets"]
        buf = bytearray(raw[base + b0:base + b1])
        out[name] = torch.frombuffer(buf, dtype=rev[e["dtype"]]).reshape(e["shape"]) \
            if b1 > b0 else torch.zeros(e["shape"], dtype=rev[e["dtype"]])
    return out, meta


# ---------------------------------------------------------------------------
def rel_err(a, b):
    a, b = a.double(), b.double()
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / (scale if scale > 0 else 1.0)


def generate(outdir, verbose=True):
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    cfg = CFG
    gen = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    params = init_params(cfg, gen)
    ids, targets = make_batch(cfg, gen)
    names = param_names(cfg)

    # The fixtures are the float64 evaluation of the model (whose parameters are
    # float32 values), rounded to float32 at the end: the exact answer to float32
    # precision, and byte-reproducible whatever vector kernels the BLAS picks (a
    # float32 run is not: the first AdamW step is ill-conditioned, see below).
    r = run(params, ids, targets, cfg, torch.float64)
    f32 = lambda t: t.to(torch.float32)
    r["logits"], r["loss"], r["logits_after"] = f32(r["logits"]), f32(r["loss"]), f32(r["logits_after"])
    r["grads"] = {n: f32(t) for n, t in r["grads"].items()}
    r["after"] = {n: f32(t) for n, t in r["after"].items()}
    h = {k: float(v) for k, v in HPARAMS.items()}
    # clipping must be ACTIVE for both groups, or the test does not exercise it
    assert r["norm_backbone"] > h["clip"], (r["norm_backbone"], h["clip"])
    assert r["norm_tables"] > h["table_clip"], (r["norm_tables"], h["table_clip"])

    os.makedirs(outdir, exist_ok=True)
    model_meta = {"format": "stem-workbench/1", "stem_config": json.dumps(cfg, separators=(",", ":"))}
    write_safetensors(os.path.join(outdir, "tiny.safetensors"), [(n, params[n]) for n in names],
                      model_meta)
    exp = [("ids", ids.to(torch.int32)), ("targets", targets.to(torch.int32)),
           ("logits", r["logits"]), ("loss", r["loss"])]
    exp += [("grad." + n, r["grads"][n]) for n in names]
    exp += [("after." + n, r["after"][n]) for n in names]
    exp += [("logits_after", r["logits_after"])]
    meta = dict(HPARAMS)
    meta.update({"beta1": "0.9", "beta2": "0.95", "eps": "1e-08",
                 "norm_backbone": "%.9g" % r["norm_backbone"], "norm_tables": "%.9g" % r["norm_tables"],
                 "torch": torch.__version__})
    write_safetensors(os.path.join(outdir, "tiny_expected.safetensors"), exp, meta)

    if verbose:
        print(f"loss {r['loss'].item():.6f}  grad norms: backbone {r['norm_backbone']:.6f} "
              f"(clip {h['clip']}), tables {r['norm_tables']:.6f} (clip {h['table_clip']})")
        # the same computation in float32: the error floor of a float32 implementation.
        # The first AdamW step moves each element by about lr * g / (|g| + eps), which is
        # ill-conditioned for elements with |g| near eps: expect ~1e-6 absolute there.
        r32 = run(params, ids, targets, cfg, torch.float32)
        print("float32 evaluation vs the fixtures (float64) (max |diff| / max |fixture|):")
        print(f"  loss {rel_err(r32['loss'], r['loss']):.2e}  logits {rel_err(r32['logits'], r['logits']):.2e}"
              f"  logits_after {rel_err(r32['logits_after'], r['logits_after']):.2e}")
        g = max(rel_err(r32["grads"][n], r["grads"][n]) for n in names)
        a = max(rel_err(r32["after"][n], r["after"][n]) for n in names)
        aabs = max((r32["after"][n].double() - r["after"][n].double()).abs().max().item() for n in names)
        print(f"  worst grad tensor {g:.2e}  worst after-step tensor {a:.2e} (abs {aabs:.2e})")
    return 0


def check(fixdir):
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, verbose=False)
        ok = True
        for fn in ("tiny.safetensors", "tiny_expected.safetensors"):
            new_path, old_path = os.path.join(tmp, fn), os.path.join(fixdir, fn)
            if not os.path.exists(old_path):
                print(f"{fn}: missing from {fixdir}")
                ok = False
                continue
            with open(new_path, "rb") as f1, open(old_path, "rb") as f2:
                if f1.read() == f2.read():
                    print(f"{fn}: byte-identical")
                    continue
            new, new_meta = read_safetensors(new_path)
            old, old_meta = read_safetensors(old_path)
            strip = lambda m: {k: v for k, v in m.items() if k not in ("norm_backbone", "norm_tables", "torch")}
            if list(new) != list(old) or strip(new_meta) != strip(old_meta):
                print(f"{fn}: tensor names or metadata differ")
                ok = False
                continue
            worst = 0.0
            for name in new:
                a, b = new[name], old[name]
                if a.shape != b.shape or a.dtype != b.dtype:
                    print(f"{fn}: {name}: shape/dtype differ")
                    ok = False
                    continue
                exact = fn == "tiny.safetensors" or name in ("ids", "targets")
                if exact and not torch.equal(a, b):
                    print(f"{fn}: {name}: differs (must be byte-identical)")
                    ok = False
                elif not exact:
                    e = rel_err(a, b)
                    worst = max(worst, e)
                    if e > 1e-6:
                        print(f"{fn}: {name}: relative difference {e:.2e} > 1e-6")
                        ok = False
            print(f"{fn}: not byte-identical; worst relative difference {worst:.2e}")
    print("fixtures are up to date" if ok else "fixtures are STALE: regenerate with --out")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--out", help="write fixtures into this directory")
    g.add_argument("--check", help="regenerate into a temp dir and compare with this directory")
    args = ap.parse_args()
    if args.out:
        return generate(args.out)
    return check(args.check)


if __name__ == "__main__":
    sys.exit(main())
