#!/usr/bin/env python3
"""The table and the result file of bench/gpu.sh (standard library only).

  gpu_summarize.py RUN_DIR OUT.json

RUN_DIR holds what gpu.sh wrote: env.json, env.txt, torch-probe.txt,
testlog.json (meson's, one JSON object a line), and one JSON per run:
  train-CONFIG-ours-dev-rR.json      bench_train, tables on the device
  train-CONFIG-ours-offF-rR.json     bench_train --offload F
  train-CONFIG-torch-rR.json         reference_torch.py train
  decode-CONFIG-{ours,torch}.json    bench_decode / reference_torch.py decode
  profile-CONFIG.json                bench_train_prof
A run that failed, timed out or was skipped holds _failed / _skipped instead.

Training step time of a side = the median over ALL timed steps of its runs (all
rounds pooled); "best" = the fastest step. tok/s = tokens per step / median.
Ratios: ours/torch tok/s (goal >= 1); offloaded / on-device step time (goal
<= 1.1). Decode: medians of the per-call latencies (prefill) and of the per-token
latencies (decode); ratio ours/torch latency (< 1: ours faster).
Prints the table; writes {"env", "env_text", "tests", "summary", "runs"}.
"""
import glob
import json
import os
import re
import statistics
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"_failed": True, "error": str(e)}


def ok(d):
    return d and not d.get("_failed") and not d.get("_skipped")


def pooled(runs, key="step_ms_all"):
    v = []
    for d in runs:
        v.extend(d.get(key) or [])
    return v


def side_train(runs):
    good = [d for d in runs if ok(d)]
    res = {"runs": len(runs), "runs_ok": len(good)}
    if not good:
        res["errors"] = [d.get("_skipped") or (d.get("stderr_tail") or [d.get("error", "?")])[-1:] for d in runs]
        return res
    steps = pooled(good)
    med = statistics.median(steps)
    tps = good[0]["tokens_per_step"]
    res.update({
        "step_ms_median": med,
        "step_ms_best": min(steps),
        "step_ms_per_run": [d["step_ms"] for d in good],
        "tokens_per_s": tps / med * 1e3,
        "tokens_per_s_best": tps / min(steps) * 1e3,
        "phase_ms": {k: statistics.median(d["phase_ms"][k] for d in good) for k in good[0].get("phase_ms", {})},
        "device": good[0].get("device"),
        "loss_first": good[0].get("loss_first"),
        "loss_last": good[-1].get("loss_last"),
        "params_total": good[0].get("params_total"),
    })
    for k in ("achieved_gflops", "flops_per_step", "foreach", "attention", "torch"):
        if k in good[0]:
            res[k] = good[0][k]
    if "flops_per_step" in good[0]:
        res["achieved_gflops"] = good[0]["flops_per_step"] / med * 1e-6
    offs = [d["offload"] for d in good if d.get("offload", {}).get("active")]
    if offs:
        def mean(k):
            return statistics.mean(o[k] for o in offs)
        res["offload"] = {
            "fraction": offs[0]["fraction"], "capacity": offs[0]["capacity"], "slots": offs[0]["slots"],
            "hit_rate": mean("hit_rate"), "dedup_saving": mean("dedup_saving"),
            "bytes_moved_per_chunk": mean("bytes_moved_per_chunk"),
            "copy_ms_per_chunk": mean("copy_ms_per_chunk"), "stall_ms_per_chunk": mean("stall_ms_per_chunk"),
            "overlap": mean("overlap"), "evictions": sum(o["evictions"] for o in offs),
            "bytes_written_back_per_chunk": mean("bytes_written_back_per_chunk")
            if all("bytes_written_back_per_chunk" in o for o in offs) else None,
        }
    return res


def side_decode(d):
    if not ok(d):
        return {"ok": False, "error": (d or {}).get("_skipped") or ((d or {}).get("stderr_tail") or ["missing"])[-1]}
    return {
        "ok": True, "prompt_len": d["prompt_len"], "gen": d["gen"], "decode_window": d["decode_window"],
        "prefill_ms": d["prefill"]["median_ms"], "prefill_ms_min": d["prefill"]["min_ms"],
        "decode_ms_per_token": d["decode_per_token"]["median_ms"],
        "decode_ms_per_token_p90": d["decode_per_token"]["p90_ms"],
        "decode_tokens_per_s": d["decode_tokens_per_s"], "first_id": d.get("first_id"),
        "generated_ids": d.get("generated_ids"), "device": d.get("device"), "attention": d.get("attention"),
        "offload": d.get("offload"),
    }


def ratio(a, b):
    return a / b if a and b else None


def fx(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)


def human(n):
    if n is None:
        return "-"
    for unit in ("", "k", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"


def tests_summary(run_dir, env):
    res = {"rc": env.get("tests_rc"), "counts": {}, "tests": []}
    path = os.path.join(run_dir, "testlog.json")
    if os.path.exists(path):
        for line in open(path):
            try:
                t = json.loads(line)
            except ValueError:
                continue
            r = t.get("result", "?")
            res["counts"][r] = res["counts"].get(r, 0) + 1
            res["tests"].append({"name": t.get("name"), "result": r, "duration": t.get("duration")})
    return res


def main():
    run_dir, out = sys.argv[1], sys.argv[2]
    env = load(os.path.join(run_dir, "env.json"))
    env_text = open(os.path.join(run_dir, "env.txt"), errors="replace").read() \
        if os.path.exists(os.path.join(run_dir, "env.txt")) else ""
    runs = {os.path.basename(p)[:-5]: load(p) for p in sorted(glob.glob(os.path.join(run_dir, "*.json")))
            if os.path.basename(p) not in ("env.json", "testlog.json")}
    configs = env.get("configs") or ["small", "big"]
    offloads = env.get("offloads") or []

    summary = {"train": {}, "decode": {}}
    for c in configs:
        def pick(pat):
            return [d for n, d in sorted(runs.items()) if re.fullmatch(pat, n)]
        t = {"ours_dev": side_train(pick(rf"train-{c}-ours-dev-r\d+")),
             "torch": side_train(pick(rf"train-{c}-torch-r\d+")), "offload": {}}
        t["ratio_ours_over_torch_tok_s"] = ratio(t["ours_dev"].get("tokens_per_s"), t["torch"].get("tokens_per_s"))
        for f in offloads:
            o = side_train(pick(rf"train-{c}-ours-off{re.escape(f)}-r\d+"))
            o["ratio_step_vs_dev"] = ratio(o.get("step_ms_median"), t["ours_dev"].get("step_ms_median"))
            t["offload"][f] = o
        summary["train"][c] = t
        ours, torch = side_decode(runs.get(f"decode-{c}-ours")), side_decode(runs.get(f"decode-{c}-torch"))
        dd = {"ours": ours, "torch": torch}
        if ours.get("ok") and torch.get("ok"):
            dd["prefill_ratio_ours_over_torch"] = ratio(ours["prefill_ms"], torch["prefill_ms"])
            dd["decode_ratio_ours_over_torch"] = ratio(ours["decode_ms_per_token"], torch["decode_ms_per_token"])
            same_model = runs[f"decode-{c}-ours"].get("model") == runs[f"decode-{c}-torch"].get("model") != "random"
            dd["same_model_file"] = same_model
            dd["ids_match"] = (ours["first_id"] == torch["first_id"] and ours["generated_ids"] == torch["generated_ids"]) \
                if same_model else None
        summary["decode"][c] = dd
    tests = tests_summary(run_dir, env)
    summary["tests"] = tests["counts"]

    # ---- the table
    L = []
    dev_name = "-"
    for c in configs:
        d = summary["train"][c]["ours_dev"].get("device")
        if d:
            dev_name = f"{d.get('name')} ({d.get('backend')})"
            break
    L.append(f"STEM GPU bench{' (DRY RUN on the CPU)' if env.get('dry_cpu') else ''}: {dev_name}; nvidia-smi: {env.get('gpu')}")
    L.append(f"torch: {env.get('torch')}")
    L.append(f"build: {'ok' if env.get('build_ok') else 'FAILED'}{' (private sysroot)' if env.get('sysroot') else ''}; "
             f"cuda tests: {', '.join(f'{n} {k}' for k, n in tests['counts'].items()) or 'none run'} "
             f"(exit {tests['rc']})")
    L.append(f"math {env.get('math')}, token ids zipf {env.get('zipf')}, prefetch {'on' if env.get('prefetch') else 'off'}, "
             f"{env.get('rounds')} round(s) x {env.get('steps')} steps (+{env.get('warmup')} warm-up), wall {env.get('wall_s')} s")
    L.append("")
    L.append("TRAINING  (step ms: median over all timed steps of all rounds; best = fastest step)")
    L.append(f"  {'config':<6} {'run':<20} {'step ms':>9} {'best':>8} {'tok/s':>9}  ratio / offload statistics")
    for c in configs:
        t = summary["train"][c]

        def row(name, s, extra=""):
            if not s.get("runs_ok"):
                L.append(f"  {c:<6} {name:<20} {'-':>9} {'-':>8} {'-':>9}  "
                         f"{'(not run)' if not s.get('runs') else 'FAILED/skipped: ' + str(s.get('errors'))[:90]}")
                return
            L.append(f"  {c:<6} {name:<20} {s['step_ms_median']:>9.2f} {s['step_ms_best']:>8.2f} "
                     f"{human(s['tokens_per_s']):>9}  {extra}")
        r = t["ratio_ours_over_torch_tok_s"]
        row("ours, tables on dev", t["ours_dev"],
            f"ours/torch tok/s {fx(r)}x (goal >= 1: {'MET' if r and r >= 1 else 'not met' if r else 'n/a'})")
        row("torch", t["torch"], f"attention {t['torch'].get('attention', '-')}, AdamW {t['torch'].get('foreach', '-')}")
        for f, o in t["offload"].items():
            rr = o.get("ratio_step_vs_dev")
            os_ = o.get("offload") or {}
            extra = (f"off/dev step {fx(rr)}x (goal <= 1.1: {'MET' if rr and rr <= 1.1 else 'not met' if rr else 'n/a'}); "
                     f"hit {fx(os_.get('hit_rate'))}, dedup {fx(os_.get('dedup_saving'))}, "
                     f"{human(os_.get('bytes_moved_per_chunk'))}B/step in (rows), "
                     f"{human(os_.get('bytes_written_back_per_chunk'))}B/step back, copy {fx(os_.get('copy_ms_per_chunk'))} ms, "
                     f"stall {fx(os_.get('stall_ms_per_chunk'))} ms, overlap {fx(os_.get('overlap'))}, "
                     f"slots {os_.get('slots', '-')}/cap {os_.get('capacity', '-')}") if os_ else ""
            row(f"ours, offload {f}", o, extra)
        for name, s in [("ours", t["ours_dev"]), ("torch", t["torch"])] + \
                [(f"offload {f}", o) for f, o in t["offload"].items()]:
            if s.get("runs_ok"):
                ph = ", ".join(f"{k} {v:.2f}" for k, v in s["phase_ms"].items())
                L.append(f"  {'':<6}   {name} phases (ms): {ph}")
    L.append("")
    L.append("DECODE  (batch 1, greedy, NO KV cache on either side: each token re-runs the forward over the window)")
    L.append(f"  {'config':<6} {'side':<6} {'prompt':>6} {'prefill ms':>11} {'window':>10} {'ms/token':>9} {'tok/s':>8}")
    for c in configs:
        dd = summary["decode"][c]
        for side in ("ours", "torch"):
            s = dd[side]
            if not s.get("ok"):
                L.append(f"  {c:<6} {side:<6} FAILED/skipped: {str(s.get('error'))[:100]}")
                continue
            w = s["decode_window"]
            L.append(f"  {c:<6} {side:<6} {s['prompt_len']:>6} {s['prefill_ms']:>11.3f} {f'{w[0]}..{w[1]}':>10} "
                     f"{s['decode_ms_per_token']:>9.3f} {s['decode_tokens_per_s']:>8.1f}")
        if "prefill_ratio_ours_over_torch" in dd:
            im = dd.get("ids_match")
            L.append(f"  {c:<6} ours/torch latency: prefill {fx(dd['prefill_ratio_ours_over_torch'])}x, "
                     f"decode {fx(dd['decode_ratio_ours_over_torch'])}x (< 1: ours faster); generated ids "
                     f"{'match' if im else 'DIFFER' if im is False else 'not compared'}")
    text = "\n".join(L)
    print(text)

    with open(out, "w") as f:
        json.dump({"env": env, "env_text": env_text, "tests": tests, "summary": summary, "table": text,
                   "runs": runs}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
