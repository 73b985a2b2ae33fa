#!/usr/bin/python3
"""End-to-end tests of the `stem` command-line program.

Usage: test_cli.py PATH/TO/stem

Runs the real binary in a temporary directory: trains the tiny preset once,
then checks `info`, `topk`, `generate`, `init`, `--help` on every command, the
error contract (ONE line starting "stem: error: " on stderr, exit 1 for runtime
errors, 2 for usage errors, nothing on stdout) and that a failed run leaves no
output or temporary file behind ("nothing half-written").

Every check runs even when an earlier one failed (except those that need the
trained model); the output is TAP-like and the exit status is 1 when any check
failed. Only the Python standard library is used.

Error-line contract as tested: the first line of stderr starts with
"stem: error: ", it is the only line containing "stem: error:", and the only
other line allowed is a usage hint of the form "Try 'stem ... --help'." (see
ALLOW_HINT_LINE).
"""

import hashlib
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile

ALLOW_HINT_LINE = True   # usage errors may add one "Try 'stem CMD --help'." line
CMD_TIMEOUT = 120        # seconds, per command (the tiny preset trains in ~2 s)

STEM = None
ENV = None
results = []             # (ok, name, detail)


# ----------------------------------------------------------------- harness

def check(ok, name, detail=""):
    results.append((bool(ok), name, detail))
    n = len(results)
    if ok:
        print("ok %d - %s" % (n, name), flush=True)
    else:
        print("not ok %d - %s" % (n, name), flush=True)
        for line in str(detail).splitlines() or [""]:
            print("#   " + line, flush=True)
    return bool(ok)


def run(*args, preexec_fn=None, timeout=CMD_TIMEOUT):
    """Run stem with args; returns (rc, stdout, stderr) as text (bytes decoded
    with surrogateescape so odd bytes never raise)."""
    p = subprocess.run([STEM] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                       timeout=timeout, preexec_fn=preexec_fn)
    return (p.returncode, p.stdout.decode("utf-8", "surrogateescape"),
            p.stderr.decode("utf-8", "surrogateescape"))


def fmt(args, rc, out, err):
    return "$ stem %s\nrc=%s\nstdout: %r\nstderr: %r" % (
        " ".join(str(a) for a in args), rc, out[:600], err[:600])


def error_line_problem(err):
    """None if stderr follows the one-line error contract, else a reason."""
    lines = err.splitlines()
    if not lines:
        return "stderr is empty"
    if not lines[0].startswith("stem: error: "):
        return "first stderr line does not start with 'stem: error: '"
    if len(lines[0]) <= len("stem: error: "):
        return "the error message is empty"
    if sum("stem: error:" in l for l in lines) != 1:
        return "more than one 'stem: error:' line"
    rest = lines[1:]
    if not rest:
        return None
    if ALLOW_HINT_LINE and len(rest) == 1 and re.fullmatch(r"Try 'stem[^']*--help'\.", rest[0]):
        return None
    return "extra stderr lines after the error: %r" % rest


def expect_error(name, args, code, codes=None):
    """A bad input: one error line, the exit status `code` (or one of `codes`),
    nothing on stdout."""
    rc, out, err = run(*args)
    allowed = codes if codes else (code,)
    problems = []
    if rc not in allowed:
        problems.append("exit status %s, expected %s" % (rc, " or ".join(map(str, allowed))))
    p = error_line_problem(err)
    if p:
        problems.append(p)
    if out.strip():
        problems.append("stdout is not empty")
    return check(not problems, "error: " + name, "; ".join(problems) + "\n" + fmt(args, rc, out, err))


def listing(d):
    return sorted(os.listdir(d))


def is_num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unescape_token_text(s):
    r"""Token text as printed by the CLI back to bytes: a token holding part of a
    UTF-8 character is shown as \xNN escapes."""
    out = bytearray()
    i = 0
    while i < len(s):
        m = re.match(r"\\x([0-9A-Fa-f]{2})", s[i:])
        if m:
            out.append(int(m.group(1), 16))
            i += 4
        else:
            out += s[i].encode("utf-8")
            i += 1
    return bytes(out)


def expected_counts(cfg):
    """Parameter and FLOP counts from the config, written from the architecture
    (DESIGN.md section 1), independently of the C code."""
    V, D, L, H, KV, F = (cfg[k] for k in ("vocab", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim"))
    hd = D // H
    stem = set(cfg["stem_layers"])
    ns, nd = len(stem), L - len(stem)
    attn = D * H * hd + 2 * D * KV * hd + H * hd * D        # wq, wk, wv, wo
    per_layer_norms = 2 * D
    backbone = L * (attn + per_layer_norms) + nd * 3 * D * F + ns * 2 * D * F
    total = V * D + backbone + D + V * D + ns * V * F      # emb, layers, norm, output, tables
    macs = L * attn + nd * 3 * D * F + ns * 2 * D * F + V * D
    dense_macs = L * attn + L * 3 * D * F + V * D
    return {"params_total": total, "params_tables": ns * V * F,
            "flops_per_token": 2.0 * macs, "dense_flops_per_token": 2.0 * dense_macs}


# ----------------------------------------------------------------- tests

def test_help():
    rc, out, err = run("--help")
    check(rc == 0 and "Usage" in out, "stem --help exits 0 with usage", fmt(["--help"], rc, out, err))
    # every listed command (plus the ones the contract names) answers --help
    listed = []
    in_cmds = False
    for line in out.splitlines():
        if line.strip().startswith("Commands"):
            in_cmds = True
            continue
        if in_cmds:
            m = re.match(r"^\s{2,}([a-z][a-z0-9-]*)\s", line)
            if m:
                listed.append(m.group(1))
            elif not line.strip():
                in_cmds = False
    required = ["train", "init", "info", "topk", "generate", "eval"]
    for c in required:
        check(c in listed, "stem --help lists '%s'" % c, out)
    for c in sorted(set(listed) | set(required)):
        args = [c, "--help"]
        rc, out2, err2 = run(*args)
        ok = rc == 0 and "Usage" in out2 and ("stem " + c) in out2 and not err2.strip()
        check(ok, "stem %s --help exits 0 with usage on stdout" % c, fmt(args, rc, out2, err2))
    rc, out, err = run("train", "--help")
    for opt in ("--preset", "--dense", "--stem-layers", "--out", "--json", "--quiet"):
        check(opt in out, "train --help documents %s" % opt, out)
    rc, out, err = run("topk", "--help")
    check("--k" in out and "--json" in out, "topk --help documents --k and --json", out)
    rc, out, err = run("generate", "--help")
    for opt in ("--n", "--temperature", "--seed"):
        check(opt in out, "generate --help documents %s" % opt, out)


def test_train(work):
    """Train the tiny preset once; returns (path, summary) or (None, None)."""
    model = os.path.join(work, "tiny.safetensors")
    args = ["train", "--preset", "tiny", "--out", model, "--json", "--quiet"]
    rc, out, err = run(*args)
    if not check(rc == 0, "train --preset tiny exits 0", fmt(args, rc, out, err)):
        return None, None
    check(not err.strip(), "train --quiet prints nothing on stderr", err)
    try:
        s = json.loads(out)
    except ValueError as e:
        check(False, "train --json prints one JSON document on stdout", "%s\n%r" % (e, out[:1000]))
        return None, None
    check(isinstance(s, dict), "train --json prints a JSON object", out[:500])
    types = {"tokens_per_s": is_num, "final_loss": is_num, "val_loss": is_num, "params_total": is_int,
             "params_active": is_int, "flops_per_token": is_num}
    for k, f in types.items():
        check(k in s and f(s[k]), "train JSON has %s of the right type" % k, json.dumps(s, indent=1))
    if not all(k in s and types[k](s[k]) for k in types):
        return model, None
    check(s["tokens_per_s"] > 0 and math.isfinite(s["tokens_per_s"]), "train tokens_per_s > 0", s)
    check(math.isfinite(s["final_loss"]) and s["final_loss"] > 0, "train final_loss finite and > 0", s)
    check(math.isfinite(s["val_loss"]) and s["val_loss"] > 0, "train val_loss finite and > 0", s)
    check(0 < s["params_active"] < s["params_total"], "train params 0 < active < total (STEM)", s)
    if "dense_flops_per_token" in s:
        check(s["flops_per_token"] < s["dense_flops_per_token"], "train STEM FLOPs < dense FLOPs", s)
    check(s.get("out") in (None, model), "train JSON 'out' is the --out path", s)
    check(os.path.isfile(model) and os.path.getsize(model) > 0, "train wrote the model file", listing(work))
    check(listing(work) == ["tiny.safetensors"], "train left no other file in the directory", listing(work))
    return model, s


def test_info(model, summary):
    args = ["info", model, "--json"]
    rc, out, err = run(*args)
    if not check(rc == 0, "info --json exits 0", fmt(args, rc, out, err)):
        return None
    try:
        info = json.loads(out)
    except ValueError as e:
        check(False, "info --json prints JSON", "%s\n%r" % (e, out[:1000]))
        return None
    check(info.get("sha256") == sha256_of(model), "info sha256 matches hashlib",
          "%s vs %s" % (info.get("sha256"), sha256_of(model)))
    cfg = info.get("config")
    check(isinstance(cfg, dict), "info has a config object", out[:800])
    if isinstance(cfg, dict):
        want = {"vocab": 512, "dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "ffn_dim": 128,
                "seq_len": 64, "stem_layers": [1]}
        check(all(cfg.get(k) == v for k, v in want.items()), "info config is the tiny preset's", cfg)
        exp = expected_counts(cfg)
        for k, v in exp.items():
            check(info.get(k) == v, "info %s matches the architecture (%s)" % (k, v), info.get(k))
    if summary:
        for k in ("params_total", "params_active", "flops_per_token"):
            check(info.get(k) == summary.get(k), "info %s equals train's" % k,
                  "%s vs %s" % (info.get(k), summary.get(k)))
    check(info.get("kind") == "stem" and info.get("tables_dtype") == "f32", "info kind stem, tables f32", info)
    rc, out, err = run("info", model)
    check(rc == 0 and sha256_of(model) in out, "info (text) exits 0 and shows the sha256", fmt(["info", model], rc, out, err))
    return info


def topk_json(model, prompt, *extra):
    args = ["topk", model, prompt, "--json"] + list(extra)
    rc, out, err = run(*args)
    if rc != 0:
        return None, fmt(args, rc, out, err)
    try:
        return json.loads(out), out
    except ValueError as e:
        return None, "%s\n%r" % (e, out[:800])


def test_topk(model, vocab):
    prompt = "The capital of France is"
    t, raw = topk_json(model, prompt, "--k", "7")
    if not check(t is not None, "topk --json exits 0 with JSON", raw):
        return
    check(isinstance(t, dict) and set(t.keys()) == {"prompt", "device", "ids", "tokens", "topk"},
          "topk JSON has exactly prompt, device, ids, tokens, topk", raw[:800])
    check(t.get("prompt") == prompt, "topk prompt echoed", t.get("prompt"))
    ids, toks, top = t.get("ids"), t.get("tokens"), t.get("topk")
    check(isinstance(ids, list) and ids and all(is_int(i) and 0 <= i < vocab for i in ids),
          "topk ids are token ids", ids)
    check(isinstance(toks, list) and len(toks) == len(ids or []) and all(isinstance(x, str) for x in toks),
          "topk tokens: one string per id", toks)
    check(isinstance(toks, list) and "".join(toks) == prompt, "topk tokens joined == prompt", toks)
    check(isinstance(top, list) and len(top) == 7, "topk --k 7 gives 7 entries", top)
    if not isinstance(top, list) or not top:
        return
    check(all(isinstance(e, dict) and set(e.keys()) == {"id", "token", "prob"} for e in top),
          "topk entries have exactly id, token, prob", top)
    check(all(is_int(e.get("id")) and 0 <= e["id"] < vocab and isinstance(e.get("token"), str)
              and is_num(e.get("prob")) and 0 <= e["prob"] <= 1 for e in top),
          "topk entries typed (id in vocab, token string, prob in [0,1])", top)
    probs = [e.get("prob", 0) for e in top]
    check(all(probs[i] >= probs[i + 1] for i in range(len(probs) - 1)), "topk probs descending", probs)
    check(sum(probs) <= 1 + 1e-6, "topk probs sum <= 1", sum(probs))
    check(len({e.get("id") for e in top}) == len(top), "topk ids distinct", top)
    # the token text of an id is the same wherever it is printed
    tok_of = {}
    for i, s in zip(ids, toks):
        tok_of.setdefault(i, s)
    bad = [e for e in top if e["id"] in tok_of and tok_of[e["id"]] != e["token"]]
    check(not bad, "topk token text consistent between prompt tokens and top-k", bad)

    # default k is 5; k above the vocabulary gives the whole distribution
    t5, raw5 = topk_json(model, prompt)
    check(t5 is not None and len(t5.get("topk", [])) == 5, "topk default k = 5", raw5[:400])
    if t5:
        check(t5["topk"] == top[:5], "topk k=5 is the prefix of k=7", (t5["topk"], top[:5]))
    tall, rawall = topk_json(model, prompt, "--k", "100000")
    if check(tall is not None and len(tall.get("topk", [])) == vocab, "topk --k > vocab gives vocab entries",
             rawall[:400]):
        s = sum(e["prob"] for e in tall["topk"])
        check(abs(s - 1.0) < 1e-3, "topk over the whole vocabulary sums to 1", s)
        check(len({e["id"] for e in tall["topk"]}) == vocab, "topk over the whole vocabulary: every id once", "")
    # deterministic
    t2, _ = topk_json(model, prompt, "--k", "7")
    check(t2 == t, "topk is deterministic", "")
    # non-ASCII prompt: token texts (with \xNN escapes for partial characters) give back the bytes
    p2 = "Brasília, São Tomé ☃"
    tn, rawn = topk_json(model, p2, "--k", "3")
    if check(tn is not None, "topk non-ASCII prompt exits 0", rawn):
        back = b"".join(unescape_token_text(s) for s in tn["tokens"])
        check(back == p2.encode("utf-8"), "topk non-ASCII tokens decode back to the prompt bytes",
              "%r vs %r" % (back, p2.encode()))
        check(tn["prompt"] == p2, "topk non-ASCII prompt echoed", tn["prompt"])
    # control characters must be escaped in JSON (U+001F included: json-glib 1.6 leaves it raw)
    pc = "a\x1fb\x01c"
    tc, rawc = topk_json(model, pc, "--k", "2")
    check(tc is not None and tc.get("prompt") == pc,
          "topk --json with control characters in the prompt prints valid JSON", rawc[:300])
    # compute options: offloaded tables through a tiny row cache give the same
    # distribution bit for bit on the CPU (the same ops on the same rows)
    toff, rawoff = topk_json(model, prompt, "--k", "7", "--device", "cpu", "--offload", "0.02")
    if check(toff is not None, "topk --device cpu --offload 0.02 exits 0", rawoff):
        check(toff["topk"] == t["topk"], "topk with offloaded tables == resident tables", (toff["topk"], t["topk"]))
        check(toff.get("device") == "CPU" and is_int(toff.get("offload_capacity")) and toff["offload_capacity"] >= 1,
              "topk --offload JSON names the device and the cache capacity", rawoff[:400])
    expect_error("topk --device bogus", ["topk", model, prompt, "--device", "bogus"], 2)
    expect_error("topk --offload 1.5", ["topk", model, prompt, "--offload", "1.5"], 2)
    expect_error("topk --math fp8", ["topk", model, prompt, "--math", "fp8"], 2)
    rc, out, err = run("topk", model, prompt, "--device", "auto", "--json")
    if rc == 0 and json.loads(out).get("device") == "CPU":
        # no usable GPU here: --device cuda must say why, in one line, exit 1
        expect_error("topk --device cuda without a GPU", ["topk", model, prompt, "--device", "cuda"], 1)
    # text output
    rc, out, err = run("topk", model, prompt, "--k", "3")
    check(rc == 0 and len(out.strip().splitlines()) == 3, "topk text output: k lines", fmt(["topk"], rc, out, err))


def gen(model, prompt, *extra):
    args = ["generate", model, prompt] + list(extra)
    rc, out, err = run(*args)
    return rc, out, err, args


def test_generate(model):
    prompt = "The capital of Spain is"
    rc, out, err, args = gen(model, prompt, "--n", "20")
    check(rc == 0, "generate exits 0", fmt(args, rc, out, err))
    check(out.startswith(prompt), "generate output starts with the prompt", out[:200])
    rc2, out2, _, _ = gen(model, prompt, "--n", "20")
    check(rc2 == 0 and out2 == out, "greedy generate is deterministic", (out, out2))

    def gen_json(*extra):
        rc, out, err, args = gen(model, prompt, "--json", *extra)
        if rc != 0:
            return None, fmt(args, rc, out, err)
        try:
            return json.loads(out), out
        except ValueError as e:
            return None, "%s %r" % (e, out[:400])

    g, raw = gen_json("--n", "20")
    if check(g is not None and isinstance(g.get("ids"), list), "generate --json gives ids", raw):
        ids = g["ids"]
        check(1 <= len(ids) <= 20 and (len(ids) == 20 or ids[-1] == 257),
              "generate --n 20 gives 20 tokens (fewer only when ending at <eos>)", ids)
        check(g.get("prompt") == prompt and isinstance(g.get("completion"), str), "generate JSON prompt/completion",
              raw[:300])
        # text and JSON agree
        if g["completion"].isascii():
            check(out == prompt + g["completion"] + "\n", "generate text output = prompt + completion + newline",
                  (out, g["completion"]))
        # first greedy token is top-1 of topk
        t, _ = topk_json(model, prompt, "--k", "2")
        if t and len(t["topk"]) == 2 and t["topk"][0]["prob"] > t["topk"][1]["prob"]:
            check(ids[0] == t["topk"][0]["id"], "first greedy token is topk's first", (ids[0], t["topk"]))
    a, rawa = gen_json("--n", "30", "--temperature", "1", "--seed", "5")
    b, rawb = gen_json("--n", "30", "--temperature", "1", "--seed", "5")
    c, rawc = gen_json("--n", "30", "--temperature", "1", "--seed", "6")
    check(a is not None and b is not None and a == b, "sampling with --seed is deterministic", (rawa, rawb))
    check(a is not None and c is not None and a["ids"] != c["ids"], "another --seed samples other tokens",
          (rawa, rawc))
    # a very low temperature is (essentially) greedy: p^(1/T) must not underflow to a
    # zero distribution (which samples token 0 every time)
    lo, rawlo = gen_json("--n", "5", "--temperature", "0.0001", "--seed", "3")
    if check(lo is not None, "generate --temperature 0.0001 exits 0", rawlo) and g is not None:
        check(lo["ids"] == g["ids"][:5], "generate --temperature 0.0001 equals greedy",
              "T=0.0001: %s, greedy: %s" % (lo["ids"], g["ids"][:5]))
    rc, out, err, args = gen(model, prompt, "--n", "5", "--temperature", "0.7", "--seed", "9")
    check(rc == 0 and out.startswith(prompt), "sampled generate output starts with the prompt", fmt(args, rc, out, err))


def test_init(work):
    y = os.path.join(work, "init.safetensors")
    args = ["init", "--vocab", "1000", "--dim", "32", "--layers", "2", "--heads", "4", "--ffn", "64",
            "--seq", "32", "--out", y]
    rc, out, err = run(*args)
    if not check(rc == 0 and os.path.isfile(y), "init exits 0 and writes the model", fmt(args, rc, out, err)):
        return
    rc, out, err = run("info", y, "--json")
    try:
        info = json.loads(out) if rc == 0 else None
    except ValueError:
        info = None
    if not check(info is not None, "info on the init model", fmt(["info", y, "--json"], rc, out, err)):
        return
    cfg = info.get("config", {})
    want = {"vocab": 1000, "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "ffn_dim": 64, "seq_len": 32,
            "stem_layers": [1]}
    check(all(cfg.get(k) == v for k, v in want.items()), "init config as requested (STEM all-but-first)", cfg)
    exp = expected_counts(cfg) if cfg else {}
    for k, v in exp.items():
        check(info.get(k) == v, "init model %s = %s" % (k, v), info.get(k))
    check(info.get("sha256") == sha256_of(y), "init model sha256 matches hashlib", "")
    # the byte-level tokenizer of an init model round-trips ASCII
    t, raw = topk_json(y, "hello world", "--k", "3")
    check(t is not None and "".join(t["tokens"]) == "hello world" and len(t["topk"]) == 3,
          "topk on the init model", raw[:400])
    # --json summary
    y2 = os.path.join(work, "init2.safetensors")
    rc, out, err = run("init", "--preset", "tiny", "--dense", "--out", y2, "--json")
    try:
        s = json.loads(out) if rc == 0 else None
    except ValueError:
        s = None
    if check(s is not None, "init --dense --json", fmt(["init", "--dense"], rc, out, err)):
        check(s.get("params_tables") in (None, 0) and s.get("flops_per_token") == s.get("dense_flops_per_token",
              s.get("flops_per_token")), "dense init: no tables, FLOPs = dense FLOPs", s)
    rc, out, err = run("info", y2, "--json")
    if rc == 0:
        i2 = json.loads(out)
        check(i2.get("kind") == "dense" and i2["config"]["stem_layers"] == [], "info on a dense model", i2)
    # bf16 tables
    y3 = os.path.join(work, "init3.safetensors")
    rc, out, err = run("init", "--preset", "tiny", "--tables-bf16", "--stem-layers", "all", "--out", y3)
    if check(rc == 0, "init --tables-bf16", fmt(["init"], rc, out, err)):
        rc, out, err = run("info", y3, "--json")
        i3 = json.loads(out) if rc == 0 else {}
        check(i3.get("tables_dtype") == "bf16" and i3.get("config", {}).get("stem_layers") == [0, 1],
              "info on a bf16 all-STEM model", i3)
        check(os.path.getsize(y3) < os.path.getsize(y2) + 2 * 512 * 128 * 4, "bf16 tables make a smaller file", "")
    # overwriting an existing model works and leaves no temp file
    rc, out, err = run("init", "--preset", "tiny", "--seed", "2", "--out", y3)
    check(rc == 0, "init over an existing file", fmt(["init"], rc, out, err))
    for f in (y, y2, y3):
        os.unlink(f)
    check(listing(work) == ["tiny.safetensors"], "init left no other file", listing(work))


def test_errors(work, model):
    if model is None:
        model = os.path.join(work, "missing-model.safetensors")
    bad_dir = os.path.join(work, "bad")
    os.mkdir(bad_dir)
    out_x = os.path.join(bad_dir, "x.safetensors")
    trunc = os.path.join(bad_dir, "trunc.safetensors")
    text = os.path.join(bad_dir, "notes.txt")
    if os.path.exists(model):
        with open(model, "rb") as f:
            head = f.read(100)
    else:
        head = b"\x10" * 100
    with open(trunc, "wb") as f:
        f.write(head)
    with open(text, "w") as f:
        f.write("This is a text file, not a model.\n" * 10)
    nonexist = os.path.join(bad_dir, "does-not-exist.safetensors")
    before = listing(bad_dir)

    # usage errors: exit 2
    expect_error("unknown command", ["frobnicate"], 2)
    expect_error("unknown option (train)", ["train", "--frobnicate", "--out", out_x], 2)
    expect_error("unknown option (info)", ["info", "--frobnicate", model], 2)
    expect_error("unknown option (topk)", ["topk", model, "The", "--frobnicate"], 2)
    expect_error("train without --out", ["train", "--preset", "tiny"], 2)
    expect_error("init without --out", ["init", "--preset", "tiny"], 2)
    expect_error("--preset bogus", ["train", "--preset", "bogus", "--out", out_x], 2)
    expect_error("--stem-layers 9 with --layers 2",
                 ["train", "--preset", "tiny", "--layers", "2", "--stem-layers", "9", "--out", out_x], 2)
    expect_error("--stem-layers garbage", ["init", "--preset", "tiny", "--stem-layers", "1,x", "--out", out_x], 2)
    expect_error("--dense with --stem-layers",
                 ["train", "--preset", "tiny", "--dense", "--stem-layers", "1", "--out", out_x], 2)
    expect_error("--dim 30 --heads 4 (train)", ["train", "--preset", "tiny", "--dim", "30", "--heads", "4",
                                                "--out", out_x], 2)
    expect_error("--dim 30 --heads 4 (init)", ["init", "--preset", "tiny", "--dim", "30", "--heads", "4",
                                               "--out", out_x], 2)
    expect_error("--heads 4 --kv-heads 3", ["init", "--preset", "tiny", "--heads", "4", "--kv-heads", "3",
                                            "--out", out_x], 2)
    expect_error("--vocab 100 (below the byte tokens)", ["init", "--preset", "tiny", "--vocab", "100",
                                                         "--out", out_x], 2)
    expect_error("--steps 0", ["train", "--preset", "tiny", "--steps", "0", "--out", out_x], 2)
    expect_error("--dim abc", ["init", "--preset", "tiny", "--dim", "abc", "--out", out_x], 2)
    # negative values must be refused, not silently replaced by the preset's
    # (their own output directory, so a wrongly accepted run is reported once)
    neg_dir = os.path.join(work, "neg")
    os.mkdir(neg_dir)
    out_neg = os.path.join(neg_dir, "x.safetensors")
    for name, args in (
            ("--dim -1 (init)", ["init", "--preset", "tiny", "--dim", "-1", "--out", out_neg]),
            ("--vocab -1 (init)", ["init", "--preset", "tiny", "--vocab", "-1", "--out", out_neg]),
            ("--layers -1 (init)", ["init", "--preset", "tiny", "--layers", "-1", "--out", out_neg]),
            ("--steps -1 (train)", ["train", "--preset", "tiny", "--steps", "-1", "--quiet", "--out", out_neg]),
            ("--lr -1 (train)", ["train", "--preset", "tiny", "--lr", "-1", "--steps", "2", "--quiet",
                                 "--out", out_neg])):
        expect_error(name, args, 2)
        if os.path.exists(out_neg):
            os.unlink(out_neg)
    shutil.rmtree(neg_dir)
    expect_error("info without MODEL", ["info"], 2)
    expect_error("info with two MODELs", ["info", model, model], 2)
    expect_error("topk without PROMPT", ["topk", model], 2)
    expect_error("topk with an extra argument", ["topk", model, "The", "extra"], 2)
    expect_error("--k 0", ["topk", model, "The", "--k", "0"], 2)
    expect_error("--k -3", ["topk", model, "The", "--k", "-3"], 2)
    expect_error("--k abc", ["topk", model, "The", "--k", "abc"], 2)
    expect_error("generate --n 0", ["generate", model, "The", "--n", "0"], 2)
    expect_error("generate --temperature -1", ["generate", model, "The", "--temperature", "-1"], 2)
    expect_error("topk --threads -1", ["topk", model, "The", "--threads", "-1"], 2)
    expect_error("eval without 'facts'", ["eval", model], 2)
    expect_error("eval bogus MODEL", ["eval", "bogus", model], 2)
    expect_error("eval facts --relation bogus", ["eval", "facts", model, "--relation", "bogus"], 2)

    # runtime errors: exit 1
    for cmd in (["info"], ["topk"], ["generate"]):
        extra = [] if cmd == ["info"] else ["The"]
        expect_error("%s: non-existent model file" % cmd[0], cmd + [nonexist] + extra, 1)
        expect_error("%s: truncated model file (first 100 bytes)" % cmd[0], cmd + [trunc] + extra, 1)
        expect_error("%s: a text file as model" % cmd[0], cmd + [text] + extra, 1)
        expect_error("%s: a directory as model" % cmd[0], cmd + [bad_dir] + extra, 1)
    expect_error("eval facts: a text file as model", ["eval", "facts", text], 1)
    # the message names the file once (not "F: F: ...")
    rc, out, err = run("info", trunc)
    first = (err.splitlines() or [""])[0]
    check(first.count(trunc) == 1, "error for a bad model names the file once", first)
    # an empty prompt is refused (a usage or a runtime error, but one line)
    expect_error("topk: empty prompt", ["topk", model, ""], 1, codes=(1, 2))
    expect_error("generate: empty prompt", ["generate", model, ""], 1, codes=(1, 2))

    check(listing(bad_dir) == before, "bad inputs created no file", (before, listing(bad_dir)))
    shutil.rmtree(bad_dir)


def fsize_limit(limit):
    def pre():
        # a write past the limit fails with EFBIG (as on a full disk) instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def test_nothing_half_written(work, model):
    d = os.path.join(work, "half")
    os.mkdir(d)
    keep = os.path.join(d, "keep.safetensors")
    if model and os.path.exists(model):
        shutil.copyfile(model, keep)
    else:
        with open(keep, "wb") as f:
            f.write(b"previous content")
    keep_sha = sha256_of(keep)
    base = listing(d)

    def after(name, args, rc, out, err, code=1):
        p = error_line_problem(err)
        check(rc == code and p is None, name + ": one error line, exit %d" % code,
              (p or "") + "\n" + fmt(args, rc, out, err))
        check(listing(d) == base, name + ": no output or temporary file left", (base, listing(d)))
        check(sha256_of(keep) == keep_sha, name + ": the existing model is untouched", "")

    # diverging training (loss becomes NaN)
    out_nan = os.path.join(d, "nan.safetensors")
    args = ["train", "--preset", "tiny", "--lr", "1e9", "--quiet", "--out", out_nan]
    rc, out, err = run(*args)
    after("train --lr 1e9", args, rc, out, err)
    # ... onto an existing model: the old file must survive
    args = ["train", "--preset", "tiny", "--lr", "1e9", "--quiet", "--out", keep]
    rc, out, err = run(*args)
    after("train --lr 1e9 over an existing model", args, rc, out, err)
    # the output directory does not exist
    args = ["train", "--preset", "tiny", "--steps", "2", "--quiet", "--out", os.path.join(d, "nodir", "x.safetensors")]
    rc, out, err = run(*args)
    after("train into a missing directory", args, rc, out, err)
    # the output "directory" is a file
    args = ["train", "--preset", "tiny", "--steps", "2", "--quiet", "--out", os.path.join(keep, "x.safetensors")]
    rc, out, err = run(*args)
    after("train into a path under a regular file", args, rc, out, err)
    # the output path is a directory: the final rename fails after everything was written
    sub = os.path.join(d, "adir")
    os.mkdir(sub)
    base = listing(d)
    args = ["train", "--preset", "tiny", "--steps", "2", "--quiet", "--out", sub]
    rc, out, err = run(*args)
    after("train --out an existing directory", args, rc, out, err)
    check(listing(sub) == [], "train --out DIR: the directory is left empty", listing(sub))
    # disk full while writing (file size limit 100 kB; the tiny model is ~800 kB)
    args = ["init", "--preset", "tiny", "--out", os.path.join(d, "full.safetensors")]
    p = subprocess.run([STEM] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=ENV, timeout=CMD_TIMEOUT, preexec_fn=fsize_limit(100000))
    after("init on a full disk", args, p.returncode, p.stdout.decode(errors="replace"),
          p.stderr.decode(errors="replace"))
    args = ["train", "--preset", "tiny", "--steps", "2", "--quiet", "--out", keep]
    p = subprocess.run([STEM] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=ENV, timeout=CMD_TIMEOUT, preexec_fn=fsize_limit(100000))
    after("train over an existing model on a full disk", args, p.returncode, p.stdout.decode(errors="replace"),
          p.stderr.decode(errors="replace"))
    # a read-only directory (only meaningful when not running as root)
    if os.geteuid() != 0:
        ro = os.path.join(d, "ro")
        os.mkdir(ro)
        os.chmod(ro, 0o555)
        try:
            args = ["train", "--preset", "tiny", "--steps", "2", "--quiet", "--out", os.path.join(ro, "x.safetensors")]
            rc, out, err = run(*args)
            check(rc == 1 and error_line_problem(err) is None, "train into a read-only directory fails, one line",
                  fmt(args, rc, out, err))
            check(listing(ro) == [], "train into a read-only directory leaves nothing", listing(ro))
        finally:
            os.chmod(ro, 0o755)
    else:
        print("# skipped: read-only directory check (running as root, permissions are not enforced)")
    shutil.rmtree(d)


def main():
    global STEM, ENV
    if len(sys.argv) != 2:
        print("usage: test_cli.py PATH/TO/stem", file=sys.stderr)
        return 2
    STEM = os.path.abspath(sys.argv[1])
    ENV = dict(os.environ)
    if "STEM_DATA_DIR" not in ENV:
        ENV["STEM_DATA_DIR"] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data")
    ENV.setdefault("OPENBLAS_NUM_THREADS", "1")
    ENV["LC_ALL"] = "C.UTF-8"
    with tempfile.TemporaryDirectory(prefix="stem-cli-test-") as work:
        test_help()
        model, summary = test_train(work)
        if model and os.path.exists(model):
            info = test_info(model, summary)
            vocab = (info or {}).get("config", {}).get("vocab", 512)
            if summary:
                check(summary["final_loss"] < math.log(vocab), "train final_loss < ln(vocab) = %.3f" % math.log(vocab),
                      summary["final_loss"])
            test_topk(model, vocab)
            test_generate(model)
        test_init(work)
        test_errors(work, model)
        test_nothing_half_written(work, model)
    failed = [r for r in results if not r[0]]
    print("1..%d" % len(results))
    print("# %d checks, %d failed" % (len(results), len(failed)))
    for ok, name, _ in failed:
        print("# FAILED: " + name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
