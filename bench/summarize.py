#!/usr/bin/python3
"""Summarize one bench/run.sh run: read the raw JSON files of a run directory,
print the comparison table and write the summary (with every raw result) as JSON.

  summarize.py RUN_DIR OUT.json

Shared machines: every raw result carries "_machine" (bench/measure.py): how
many cores OTHER processes (and the hypervisor, as steal) used while it ran. A
run is "quiet" when that is below QUIET_CORES. For each program, the quiet runs
are used when there is at least one, else all runs (and the table says so).

Aggregation over the runs used:
  training step time = median over all their timed steps; tok/s = B*T / that.
  "best" column = the fastest single step (noise only ever adds time, so on a
  busy machine the fastest step is the better estimate of what the code can do).
  PyTorch is reported at each thread setting; the best one is the comparison.
  sgemm peak = median over all pool_each trials (best: the fastest trial).
  our GFLOP/s = flops_per_step (bench_train's formula) / our step time.
  MFU = our GFLOP/s / sgemm peak (median/median, best/best).
  top-k latency = median over runs of each run's median (and p90) per thread
  setting (best: the smallest per-run median); the best setting of each side is
  compared.
Only the standard library is used.
"""
import glob
import json
import os
import statistics
import sys

GOAL_RATIO, GOAL_MFU, GOAL_TOPK_MS = 2.0, 0.60, 5.0
QUIET_CORES = 0.25


def load(pattern):
    out = []
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            try:
                out.append(json.load(f))
            except json.JSONDecodeError as e:
                print(f"summarize: skipping {path}: {e}", file=sys.stderr)
    return out


def disturbance(r):
    m = r.get("_machine", {})
    return m.get("others_cores", 0.0) + m.get("steal_cores", 0.0)


def pick(runs):
    """(runs used, note) preferring quiet runs."""
    quiet = [r for r in runs if disturbance(r) < QUIET_CORES]
    d = ", ".join(f"{disturbance(r):.2f}" for r in runs)
    if quiet:
        return quiet, f"{len(quiet)}/{len(runs)} quiet runs (others' cores: {d})"
    return runs, f"NO quiet run of {len(runs)} (others' cores: {d})"


def train_summary(all_runs):
    runs, note = pick(all_runs)
    steps = [t for r in runs for t in r["step_ms_all"]]
    med = statistics.median(steps)
    tok = runs[0]["tokens_per_step"]
    return {
        "runs_used": len(runs),
        "runs_total": len(all_runs),
        "quiet_note": note,
        "steps_timed": len(steps),
        "step_ms_median": med,
        "step_ms_best": min(steps),
        "tokens_per_s": tok / med * 1e3,
        "tokens_per_s_best": tok / min(steps) * 1e3,
        "phase_ms": {k: statistics.median(r["phase_ms"][k] for r in runs) for k in runs[0]["phase_ms"]},
        "adamw_foreach": sorted({str(r["foreach"]) for r in runs if "foreach" in r}),
    }


def topk_summary(all_runs):
    runs, note = pick(all_runs)
    by_thr = {}
    for r in runs:
        for lat in r["latency"]:
            by_thr.setdefault(lat["threads"], []).append(lat)
    out = {}
    for t, lats in sorted(by_thr.items()):
        out[t] = {
            "runs_used": len(lats),
            "quiet_note": note,
            "median_ms": statistics.median(x["median_ms"] for x in lats),
            "p90_ms": statistics.median(x["p90_ms"] for x in lats),
            "best_median_ms": min(x["median_ms"] for x in lats),
            "min_ms": min(x["min_ms"] for x in lats),
        }
    return out


def main():
    run_dir, out_path = sys.argv[1], sys.argv[2]
    env = {}
    env_path = os.path.join(run_dir, "env.json")
    if os.path.exists(env_path):
        with open(env_path) as f:
            env = json.load(f)
    L = lambda pat: load(os.path.join(run_dir, pat))  # noqa: E731
    sgemm, ours_train, torch_train = L("sgemm-*.json"), L("ours-train-*.json"), L("torch-train-*.json")
    ours_topk, torch_topk, prof, shapes = L("ours-topk-*.json"), L("torch-topk-*.json"), L("profile.json"), L("shapes.json")

    s = {"env": env, "quiet_threshold_cores": QUIET_CORES}
    if sgemm:
        used, note = pick(sgemm)
        modes = {}
        for m in used[0]["modes"]:
            trials = [g for r in used for g in r["modes"][m]["trials_gflops"]]
            modes[m] = {"median_gflops": statistics.median(trials), "best_gflops": max(trials), "trials": len(trials)}
        s["sgemm"] = {"size": used[0]["size"], "threads": used[0]["threads"], "openblas": used[0]["openblas_config"],
                      "modes": modes, "quiet_note": note,
                      "peak_gflops": modes["pool_each"]["median_gflops"],
                      "peak_gflops_best": modes["pool_each"]["best_gflops"],
                      "peak_definition": f"pool_each: {used[0]['threads']} threads, each its own single-threaded "
                                         f"sgemm {used[0]['size']}^3; median over all trials of the runs used"}
    if ours_train:
        o = train_summary(ours_train)
        fl = ours_train[0]["flops_per_step"]
        o["flops_per_step"] = fl
        o["gflops"] = fl / (o["step_ms_median"] * 1e-3) * 1e-9
        o["gflops_best"] = fl / (o["step_ms_best"] * 1e-3) * 1e-9
        o["config"] = ours_train[0]["config"]
        o["threads"] = ours_train[0]["threads"]
        if "sgemm" in s:
            o["mfu"] = o["gflops"] / s["sgemm"]["peak_gflops"]
            o["mfu_best"] = o["gflops_best"] / s["sgemm"]["peak_gflops_best"]
        s["ours_train"] = o
    if torch_train:
        by_thr = {}
        for r in torch_train:
            by_thr.setdefault(r["threads"], []).append(r)
        tt = {t: train_summary(rs) for t, rs in sorted(by_thr.items())}
        best = max(tt, key=lambda t: tt[t]["tokens_per_s"])
        best_b = max(tt, key=lambda t: tt[t]["tokens_per_s_best"])
        s["torch_train"] = {"by_threads": tt, "best_threads": best, "tokens_per_s": tt[best]["tokens_per_s"],
                            "best_threads_by_fastest_step": best_b,
                            "tokens_per_s_best": tt[best_b]["tokens_per_s_best"],
                            "torch": torch_train[0]["torch"], "foreach": torch_train[0].get("foreach")}
        if "ours_train" in s:
            o = s["ours_train"]
            s["ratio"] = o["tokens_per_s"] / s["torch_train"]["tokens_per_s"]
            s["ratio_best"] = o["tokens_per_s_best"] / s["torch_train"]["tokens_per_s_best"]
            s["torch_train"]["gflops"] = o["flops_per_step"] / (tt[best]["step_ms_median"] * 1e-3) * 1e-9
    if ours_topk:
        ot = topk_summary(ours_topk)
        best = min(ot, key=lambda t: ot[t]["median_ms"])
        s["ours_topk"] = {"by_threads": ot, "best_threads": best, "median_ms": ot[best]["median_ms"],
                          "p90_ms": ot[best]["p90_ms"], "best_median_ms": min(x["best_median_ms"] for x in ot.values()),
                          "model": ours_topk[0]["model"], "config": ours_topk[0]["config"],
                          "prompt_len": ours_topk[0]["prompt_len"], "topk": ours_topk[0]["topk"]}
    if torch_topk:
        by_thr = {}
        for r in torch_topk:
            by_thr.setdefault(r["threads"], []).append(r)
        tk = {}
        for t, rs in sorted(by_thr.items()):
            tk.update(topk_summary(rs))
        best = min(tk, key=lambda t: tk[t]["median_ms"])
        s["torch_topk"] = {"by_threads": tk, "best_threads": best, "median_ms": tk[best]["median_ms"],
                           "p90_ms": tk[best]["p90_ms"], "best_median_ms": min(x["best_median_ms"] for x in tk.values()),
                           "topk": torch_topk[0]["topk"]}
        if "ours_topk" in s:
            a = [x["id"] for x in s["ours_topk"]["topk"]]
            b = [x["id"] for x in s["torch_topk"]["topk"]]
            s["topk_ids_match"] = a == b
            s["topk_max_prob_diff"] = max(abs(x["prob"] - y["prob"])
                                          for x, y in zip(s["ours_topk"]["topk"], s["torch_topk"]["topk"]))
    if prof:
        s["profile"] = prof[0].get("profile")
        s["profile_step_ms"] = prof[0].get("step_ms")
        s["profile_others_cores"] = disturbance(prof[0])
    if shapes and "shapes" in shapes[0]:
        s["gemm_shapes_alone"] = shapes[0]["shapes"]

    goals = {}
    if "ratio" in s:
        goals["ratio_vs_torch >= 2"] = s["ratio"] >= GOAL_RATIO
    if "mfu" in s.get("ours_train", {}):
        goals["mfu >= 60%"] = s["ours_train"]["mfu"] >= GOAL_MFU
    if "ours_topk" in s:
        goals["topk <= 5 ms"] = s["ours_topk"]["median_ms"] <= GOAL_TOPK_MS
    s["goals_met"] = goals
    s["raw"] = {"sgemm": sgemm, "ours_train": ours_train, "torch_train": torch_train, "ours_topk": ours_topk,
                "torch_topk": torch_topk, "profile": prof, "shapes": shapes}

    with open(out_path, "w") as f:
        json.dump(s, f, indent=2, default=str)
        f.write("\n")
    print_table(s)


def mark(ok):
    return "" if ok is None else ("  [goal met]" if ok else "  [goal NOT met]")


def print_table(s):
    g = s["goals_met"]
    print()
    e = s.get("env", {})
    if e:
        print(f"machine: {e.get('cpu', '?')}, {e.get('nproc', '?')} cores; OPENBLAS_CORETYPE={e.get('OPENBLAS_CORETYPE')}; "
              f"load avg before/after: {e.get('loadavg_before', '?')} / {e.get('loadavg_after', '?')}")
    rows = [("", "median", "best", "")]
    o, t = s.get("ours_train"), s.get("torch_train")
    if o:
        c = o["config"]
        print(f"training: vocab {c['vocab']}, dim {c['dim']}, {c['layers']} layers, {c['heads']} heads, ffn {c['ffn']}, "
              f"seq {c['seq']}, batch {c['batch']}, STEM layers {c['stem_layers']}; "
              f"{o['flops_per_step'] / 1e9:.1f} GFLOP/step")
        rows.append(("ours training tok/s", f"{o['tokens_per_s']:.0f}", f"{o['tokens_per_s_best']:.0f}",
                     f"{o['threads']} threads, {o['step_ms_median']:.0f} ms/step; {o['quiet_note']}"))
    if t:
        for thr, x in t["by_threads"].items():
            rows.append((f"torch training tok/s ({thr} thr)", f"{x['tokens_per_s']:.0f}", f"{x['tokens_per_s_best']:.0f}",
                         f"{x['step_ms_median']:.0f} ms/step; AdamW foreach={'/'.join(x['adamw_foreach'])}; "
                         f"{x['quiet_note']}"))

    def ph(x):
        p = x["phase_ms"]
        return f"{p['forward']:.0f}/{p['backward']:.0f}/{p['optimizer']:.0f}"
    if o:
        rows.append(("  ours ms fwd/bwd/optim", ph(o), "", ""))
    if t:
        for thr, x in t["by_threads"].items():
            rows.append((f"  torch ({thr} thr) ms fwd/bwd/optim", ph(x), "", ""))
    if "ratio" in s:
        rows.append(("ratio ours / torch(best)", f"{s['ratio']:.2f}x", f"{s['ratio_best']:.2f}x",
                     f"torch best at {t['best_threads']} thread(s); goal >= {GOAL_RATIO:.0f}x" + mark(g.get("ratio_vs_torch >= 2"))))
    if "sgemm" in s:
        m = s["sgemm"]["modes"]
        rows.append(("sgemm peak GFLOP/s", f"{s['sgemm']['peak_gflops']:.1f}", f"{s['sgemm']['peak_gflops_best']:.1f}",
                     f"{s['sgemm']['threads']} threads x own 1-thread sgemm {s['sgemm']['size']}^3; {s['sgemm']['quiet_note']}"))
        rows.append(("  sgemm 1 thread", f"{m['single']['median_gflops']:.1f}", f"{m['single']['best_gflops']:.1f}", ""))
        rows.append(("  sgemm pool row-split", f"{m['pool_split']['median_gflops']:.1f}", f"{m['pool_split']['best_gflops']:.1f}",
                     "one sgemm via op_matmul_forward"))
        rows.append(("  sgemm OpenBLAS threads", f"{m['openblas_mt']['median_gflops']:.1f}",
                     f"{m['openblas_mt']['best_gflops']:.1f}", "reference only"))
    if o:
        rows.append(("ours GFLOP/s", f"{o['gflops']:.1f}", f"{o['gflops_best']:.1f}", ""))
        if "mfu" in o:
            rows.append(("MFU (ours / sgemm peak)", f"{100 * o['mfu']:.1f} %", f"{100 * o['mfu_best']:.1f} %",
                         "goal >= 60 %" + mark(g.get("mfu >= 60%"))))
    if t and "gflops" in t:
        rows.append(("torch GFLOP/s (same formula)", f"{t['gflops']:.1f}", "", ""))
    ok, tk = s.get("ours_topk"), s.get("torch_topk")
    if ok:
        for thr, x in ok["by_threads"].items():
            rows.append((f"ours top-k ms ({thr} thr)", f"{x['median_ms']:.2f}", f"{x['best_median_ms']:.2f}",
                         f"p90 {x['p90_ms']:.2f} ms; {x['quiet_note']}"))
    if tk:
        for thr, x in tk["by_threads"].items():
            rows.append((f"torch top-k ms ({thr} thr)", f"{x['median_ms']:.2f}", f"{x['best_median_ms']:.2f}",
                         f"p90 {x['p90_ms']:.2f} ms; {x['quiet_note']}"))
    if ok:
        c = ok["config"]
        rows.append(("top-k ms ours (best setting)", f"{ok['median_ms']:.2f}", f"{ok['best_median_ms']:.2f}",
                     f"{ok['prompt_len']}-token prompt, dim {c['dim']} x {c['layers']} layers; goal <= 5 ms"
                     + mark(g.get("topk <= 5 ms"))))
    if "topk_ids_match" in s:
        rows.append(("top-k ids ours == torch", "yes" if s["topk_ids_match"] else "NO", "",
                     f"max |prob diff| {s['topk_max_prob_diff']:.2e}"))
    w = max(len(r[0]) for r in rows)
    print()
    for name, val, best, note in rows:
        print(f"  {name:<{w}}  {val:>10}  {best:>9}   {note}")
    if s.get("profile"):
        print(f"\nwhere our step goes (bench_train_prof, {s['profile_step_ms']:.0f} ms/step in that run, "
              f"others' cores {s['profile_others_cores']:.2f}):")
        for f in sorted(s["profile"]["families"], key=lambda x: -x["ms_per_step"]):
            gf = f" {f['gflops']:.1f} GFLOP/s" if f.get("gflops") else ""
            print(f"  {f['family']:<24} {f['ms_per_step']:8.1f} ms  {f['pct_of_step']:5.1f} %{gf}")
        mm = s["profile"].get("matmuls", [])
        alone = {(x["N"], x["in"], x["out"]): x for x in s.get("gemm_shapes_alone", [])}
        key = {"matmul_fwd": "fwd_gflops", "matmul_bwd_dx": "dx_gflops", "matmul_bwd_dw": "dw_gflops"}
        if mm:
            print("\nmatmuls in the step vs the same GEMM alone, hot (bench_sgemm --shapes), GFLOP/s:")
            for m in mm:
                a = alone.get((m["N"], m["in"], m["out"]))
                a_s = f"{a[key[m['kind']]]:7.1f}" if a else "      -"
                print(f"  {m['kind']:<14} {m['weight']:<12} {m['N']:5d} x {m['in']:4d} -> {m['out']:4d}  "
                      f"{m['ms_per_step']:7.1f} ms/step  in step {m['gflops']:7.1f}  alone {a_s}")
            for name in ("qkv fused", "w1|w3 fused"):
                a = next((x for x in s.get("gemm_shapes_alone", []) if x["name"] == name), None)
                if a:
                    print(f"  (alone) {name:<12} {a['N']:5d} x {a['in']:4d} -> {a['out']:4d}  fwd {a['fwd_gflops']:.1f}  "
                          f"dx {a['dx_gflops']:.1f}  dW {a['dw_gflops']:.1f}")
    print()


if __name__ == "__main__":
    main()
