#!/usr/bin/python3
"""Independent numpy cross-check of the viz analyses.

Runs viz-dump (C) into a temporary directory, then recomputes from the files it
wrote -- the model read with a safetensors parser written here, the forward pass
written here from DESIGN.md section 1 -- and compares:
  * cosine statistics of STEM table rows and of a synthetic matrix (mean, median,
    P95, P99 of |cos|, signed mean/std, the |cos| histogram),
  * 2-D PCA (eigenvalues, projections up to sign),
  * cosine nearest neighbours,
  * the logit lens (top-k ids and probabilities per layer, entropy, tracked token),
  * dense up-projection outputs W3 x collected on text, and their cosine stats,
  * unique tokens vs window length (Heaps' law).
Exit 0 = match, 1 = mismatch, 77 = numpy missing (skipped).

Usage: /usr/bin/python3 tests/viz/crosscheck.py BUILD/tests/viz/viz-dump
"""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:  # pragma: no cover
    print("numpy is not available to", sys.executable, "- skipping", file=sys.stderr)
    sys.exit(77)

FAIL = []


def check(name, ok, detail=""):
    print(("ok    " if ok else "FAIL  ") + name + (("  " + detail) if detail else ""))
    if not ok:
        FAIL.append(name)


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    meta = header.pop("__metadata__", {})
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        raw = data[base + a:base + b]
        if info["dtype"] == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif info["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            raise ValueError(info["dtype"])
        out[name] = arr.reshape(info["shape"]).astype(np.float64)
    return out, meta


# ---------------------------------------------------------------- cosine stats

def cos_matrix(x):
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    u = np.divide(x, n, out=np.zeros_like(x), where=n > 0)
    c = np.clip(u @ u.T, -1, 1)
    iu = np.triu_indices(len(x), 1)
    return c[iu]


def check_stats(name, got, c):
    a = np.abs(c)
    check(name + " n_pairs", got["n_pairs"] == len(c))
    check(name + " mean_abs", abs(got["mean_abs"] - a.mean()) < 2e-6, f"{got['mean_abs']:.7f} vs {a.mean():.7f}")
    check(name + " mean", abs(got["mean"] - c.mean()) < 2e-6, f"{got['mean']:.7f} vs {c.mean():.7f}")
    check(name + " std", abs(got["std"] - c.std()) < 2e-6, f"{got['std']:.7f} vs {c.std():.7f}")
    check(name + " max_abs", abs(got["max_abs"] - a.max()) < 2e-6, f"{got['max_abs']:.7f} vs {a.max():.7f}")
    # quantiles: exact to one histogram bin (1/65536) plus float32 rounding
    for key, q in (("median_abs", 50), ("p95_abs", 95), ("p99_abs", 99)):
        ref = np.percentile(a, q)
        check(name + " " + key, abs(got[key] - ref) < 3e-5, f"{got[key]:.6f} vs {ref:.6f}")
    edges = np.linspace(0, 0.5, 51)
    h, _ = np.histogram(a[a < 0.5], bins=edges)
    ref = 100.0 * h / len(c)
    mine = np.array(got["hist_0_05_50"])
    # pairs within 2e-5 of a bin edge may fall either side
    near = sum(int(np.sum(np.abs(a - e) < 2e-5)) for e in edges)
    diff_pairs = np.abs(mine - ref).sum() * len(c) / 100.0
    check(name + " histogram", diff_pairs <= 2 * near + 0.5, f"{diff_pairs:.1f} pairs differ, {near} near edges")


# ---------------------------------------------------------------- forward

def rmsnorm(x, g, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g


def rope(x, nh, hd, theta):
    T = x.shape[0]
    x = x.reshape(T, nh, hd // 2, 2).copy()
    i = np.arange(hd // 2)
    freq = theta ** (-2.0 * i / hd)
    ang = np.arange(T)[:, None] * freq[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0].copy(), x[..., 1].copy()
    x[..., 0] = x0 * c - x1 * s
    x[..., 1] = x0 * s + x1 * c
    return x.reshape(T, nh * hd)


def attention_block(W, cfg, l, x):
    """h_mid = x + Wo attn(RMSNorm(x)) for one sequence x[T, D]."""
    D, H, KV = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"]
    hd = D // H
    p = f"layers.{l}."
    a = rmsnorm(x, W[p + "attention_norm.weight"], cfg["norm_eps"])
    q = rope(a @ W[p + "attention.wq.weight"].T, H, hd, cfg["rope_theta"])
    k = rope(a @ W[p + "attention.wk.weight"].T, KV, hd, cfg["rope_theta"])
    v = a @ W[p + "attention.wv.weight"].T
    T = x.shape[0]
    o = np.zeros((T, H * hd))
    mask = np.triu(np.ones((T, T), dtype=bool), 1)
    for h in range(H):
        kh = h // (H // KV)
        qh, khm, vh = q[:, h * hd:(h + 1) * hd], k[:, kh * hd:(kh + 1) * hd], v[:, kh * hd:(kh + 1) * hd]
        s = qh @ khm.T / math.sqrt(hd)
        s[mask] = -np.inf
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o[:, h * hd:(h + 1) * hd] = s @ vh
    return x + o @ W[p + "attention.wo.weight"].T


def forward(W, cfg, ids):
    """Residual stream before layer 0 and after every layer; FFN up outputs."""
    stem = cfg["stem_layers"]
    x = W["tok_embeddings.weight"][ids]
    res, ups = [x], []
    for l in range(cfg["n_layers"]):
        p = f"layers.{l}."
        hm = attention_block(W, cfg, l, x)
        f = rmsnorm(hm, W[p + "ffn_norm.weight"], cfg["norm_eps"])
        g = f @ W[p + "feed_forward.w1.weight"].T
        if l in stem:
            u = W[f"stem_embeddings.{stem.index(l)}.weight"][ids]
        else:
            u = f @ W[p + "feed_forward.w3.weight"].T
        ups.append(u)
        x = hm + (g / (1 + np.exp(-g)) * u) @ W[p + "feed_forward.w2.weight"].T
        res.append(x)
    return res, ups


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    tmp = tempfile.mkdtemp(prefix="viz-crosscheck-")
    subprocess.run([sys.argv[1], tmp], check=True)
    with open(os.path.join(tmp, "results.json")) as f:
        R = json.load(f)
    W, meta = load_safetensors(os.path.join(tmp, "model.safetensors"))
    cj = json.loads(meta["stem_config"])
    cfg = dict(cj)
    # the config JSON names its fields; normalize what the forward needs
    cfg.setdefault("n_layers", cj.get("layers", cj.get("n_layers")))
    if "stem_layers" in cj and isinstance(cj["stem_layers"], str):
        cfg["stem_layers"] = [int(s) for s in cj["stem_layers"].split(",") if s != ""]
    cfg["stem_layers"] = sorted(cfg["stem_layers"])
    for key, alt in (("dim", "dim"), ("n_heads", "heads"), ("n_kv_heads", "kv_heads"), ("norm_eps", "norm_eps"),
                     ("rope_theta", "rope_theta"), ("vocab", "vocab"), ("ffn_dim", "ffn"), ("seq_len", "seq")):
        if key not in cfg:
            cfg[key] = cj[alt]

    # cosine stats of STEM rows
    sample = np.array(R["sample"])
    for e in R["cos"]:
        rows = W[f"stem_embeddings.{e['stem_index']}.weight"][sample]
        check_stats(f"cos layer {e['layer']}", e, cos_matrix(rows))

    # synthetic matrix (tiles, zero and duplicate rows)
    S = R["synthetic"]
    x = np.fromfile(S["path"], dtype="<f4").reshape(S["n"], S["d"]).astype(np.float64)
    check("synthetic n_zero", S["n_zero"] == int(np.sum(np.linalg.norm(x, axis=1) == 0)))
    check_stats("synthetic", S, cos_matrix(x))

    def check_pca(name, x, var, coords):
        xc = x - x.mean(0)
        cov = xc.T @ xc / (len(x) - 1)
        w, v = np.linalg.eigh(cov)
        w, v = w[::-1], v[:, ::-1]
        check(name + " eigenvalues", np.allclose(var, w[:2], rtol=1e-6, atol=1e-9), f"{var} vs {w[:2]}")
        ref = xc @ v[:, :2]
        coords = np.array(coords)
        for a in range(2):
            sgn = 1.0 if np.dot(ref[:, a], coords[:, a]) >= 0 else -1.0
            err = np.abs(sgn * ref[:, a] - coords[:, a]).max() / np.abs(ref[:, a]).max()
            check(f"{name} PC{a + 1} projections (up to sign)", err < 1e-5, f"rel err {err:.2e}")
        if "pca_total_var" in S and name == "synthetic PCA":
            check(name + " total variance", abs(S["pca_total_var"] - np.trace(cov)) < 1e-6 * np.trace(cov))

    check_pca("synthetic PCA", x, S["pca_var"], S["pca_coords"])
    P = R["pca_layer1"]
    check_pca("layer 1 PCA", W["stem_embeddings.0.weight"][sample], P["var"], P["coords"])

    # neighbours
    Nb = R["neighbours"]
    T = W[f"stem_embeddings.{Nb['stem_index']}.weight"]
    nrm = np.linalg.norm(T, axis=1)
    c = T @ T[Nb["query"]] / (nrm * nrm[Nb["query"]])
    c[Nb["query"]] = -np.inf
    order = sorted(range(len(c)), key=lambda i: (-c[i], i))[:len(Nb["ids"])]
    check("neighbours ids", order == Nb["ids"], f"{Nb['ids']} vs {order}")
    check("neighbours cos", np.allclose(Nb["cos"], c[order], atol=1e-5))

    # logit lens
    L = R["lens"]
    ids = np.array(L["prompt_ids"])
    res, _ = forward(W, cfg, ids)
    worst = 0.0
    ok_ids = True
    for r, row in enumerate(L["rows"]):
        y = rmsnorm(res[r][-1], W["norm.weight"], cfg["norm_eps"])
        logits = W["output.weight"] @ y
        p = np.exp(logits - logits.max())
        p /= p.sum()
        k = len(row["ids"])
        ref_ids = sorted(range(len(p)), key=lambda i: (-p[i], i))[:k]
        for i in range(k):
            if row["ids"][i] != ref_ids[i] and abs(p[row["ids"][i]] - p[ref_ids[i]]) > 1e-5:
                ok_ids = False
        worst = max(worst, float(np.abs(np.array(row["probs"]) - p[ref_ids]).max()))
        ent = float(-(p[p > 0] * np.log(p[p > 0])).sum())
        worst = max(worst, abs(row["entropy"] - ent) * 0.1)
        worst = max(worst, abs(row["track"] - p[ids[0]]))
    check("logit lens top-k ids", ok_ids)
    check("logit lens probabilities", worst < 2e-4, f"max abs err {worst:.2e}")

    # dense outputs: same windows as viz_capture_up
    Dn = R["dense"]
    text = np.array(Dn["text_ids"])
    n_ids, n_want = len(text), Dn["n_want"]
    Tw = min(min(cfg["seq_len"], 128), n_ids)
    Wn = (n_want + Tw - 1) // Tw
    vecs = []
    for w in range(Wn):
        start = (n_ids - Tw) * w // (Wn - 1) if Wn > 1 else 0
        _, ups = forward(W, cfg, text[start:start + Tw])
        vecs.append(ups[Dn["layer"]])
    vecs = np.concatenate(vecs)[:n_want]
    check("dense n_got", Dn["n_got"] == len(vecs))
    err = np.abs(np.array(Dn["first_vector"]) - vecs[0]).max() / np.abs(vecs[0]).max()
    check("dense first W3 x vector", err < 1e-4, f"rel err {err:.2e}")
    check("dense self-check reported", Dn["max_rel_err"] < 1e-4, f"{Dn['max_rel_err']:.2e}")
    check_stats("dense cos", Dn, cos_matrix(vecs))

    # Heaps
    H = R["heaps"]
    V = cfg["vocab"]
    for L_, U, Wc in zip(H["length"], H["unique"], H["windows"]):
        starts = [(n_ids - L_) * w // (Wc - 1) if Wc > 1 else 0 for w in range(Wc)]
        ref = np.mean([len(set(text[s:s + L_].tolist())) for s in starts])
        check(f"heaps unique at {L_}", abs(U - ref) < 1e-9, f"{U} vs {ref}")
    print(f"{len(FAIL)} failures" if FAIL else "all checks passed")
    return 1 if FAIL else 0


if __name__ == "__main__":
    sys.exit(main())
