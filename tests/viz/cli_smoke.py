#!/usr/bin/python3
"""Smoke test of the viz commands of `stem`: every command runs on a small random
model, its --json parses and has the documented keys, its --plot file is a
valid PNG/SVG/PDF, a report is written in all three formats (PDF pages checked
with pdfinfo when installed), and bad arguments fail with the documented exit
codes (2 = usage, 1 = error).

Usage: /usr/bin/python3 tests/viz/cli_smoke.py BUILD/app/stem
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

FAIL = []


def check(name, ok, detail=""):
    print(("ok    " if ok else "FAIL  ") + name + (("  " + detail) if detail else ""))
    if not ok:
        FAIL.append(name)


def run(stem, *args, rc=0):
    p = subprocess.run([stem, *args], capture_output=True, text=True)
    if p.returncode != rc:
        print("command:", " ".join(args), "\nstdout:", p.stdout[-2000:], "\nstderr:", p.stderr[-2000:])
    check(f"exit {rc}: stem {' '.join(args)[:90]}", p.returncode == rc, f"got {p.returncode}")
    return p


def is_file(path, magic):
    try:
        with open(path, "rb") as f:
            head = f.read(16)
        return os.path.getsize(path) > 500 and head.startswith(magic)
    except OSError:
        return False


def main():
    stem = sys.argv[1]
    d = tempfile.mkdtemp(prefix="viz-cli-")
    m = os.path.join(d, "m.safetensors")
    run(stem, "init", "--preset", "tiny", "--vocab", "300", "--layers", "3", "--stem-layers", "1,2", "--seed", "3",
        "--out", m)
    cm = ["--corpus-mb", "0.2", "--threads", "1"]

    p = run(stem, "geometry", m, "--json", "--sample", "200", "--plot", os.path.join(d, "g.png"), *cm)
    g = json.loads(p.stdout)
    layers = g["models"][0]["layers"]
    check("geometry: one entry per layer", [l["layer"] for l in layers] == [0, 1, 2])
    check("geometry: sources", [l["source"] for l in layers] == ["dense_up_outputs", "stem_rows", "stem_rows"])
    keys = {"mean_abs_cos", "median_abs_cos", "p95_abs_cos", "histogram"}
    check("geometry: keys", all(keys <= set(l) for l in layers))
    check("geometry: histogram sums to 100%", all(abs(sum(l["histogram"]["percent"]) - 100) < 1e-6 or
                                                 l["histogram"]["hi"] < 1 for l in layers))
    check("geometry: png", is_file(os.path.join(d, "g.png"), b"\x89PNG"))
    p = run(stem, "geometry", m, "--layer", "1", "--compare", m, "--json", *cm)
    g = json.loads(p.stdout)
    check("geometry --compare: two models", len(g["models"]) == 2 and len(g["models"][1]["layers"]) == 1)

    p = run(stem, "pca", m, "--layer", "2", "--sample", "50", "--highlight", "#100,#101", "--json",
            "--plot", os.path.join(d, "p.svg"), *cm)
    j = json.loads(p.stdout)
    check("pca: points and highlights", len(j["points"]) >= 50 and sum(pt["highlight"] for pt in j["points"]) == 2)
    check("pca: explained variance in (0, 1]", 0 < j["explained_pc1"] + j["explained_pc2"] <= 1.0 + 1e-9)
    check("pca: svg", is_file(os.path.join(d, "p.svg"), b"<?xml"))

    p = run(stem, "neighbours", m, "#101", "--k", "4", "--all-tokens", "--json", "--plot", os.path.join(d, "n.pdf"), *cm)
    j = json.loads(p.stdout)
    check("neighbours: per STEM layer", [l["layer"] for l in j["layers"]] == [1, 2])
    check("neighbours: sorted", all(l["neighbours"][i]["cos"] >= l["neighbours"][i + 1]["cos"]
                                    for l in j["layers"] for i in range(3)))
    check("neighbours: pdf", is_file(os.path.join(d, "n.pdf"), b"%PDF"))

    p = run(stem, "lens", m, "The capital of Spain is", "--k", "3", "--track", "#101", "--json",
            "--plot", os.path.join(d, "l.png"))
    j = json.loads(p.stdout)
    check("lens: embeddings + 3 layers", [l["layer"] for l in j["layers"]] == [-1, 0, 1, 2])
    check("lens: track", all("track_prob" in l for l in j["layers"]))
    t = run(stem, "topk", m, "The capital of Spain is", "--k", "3", "--json")
    tk = json.loads(t.stdout)["topk"]
    check("lens: last layer = topk", [e["id"] for e in j["layers"][-1]["topk"]] == [e["id"] for e in tk])

    p = run(stem, "active-params", m, "--max-len", "512", "--windows", "8", "--corpus-mb", "0.2", "--json",
            "--plot", os.path.join(d, "a.png"))
    j = json.loads(p.stdout)
    pts = j["points"]
    check("active-params: monotone unique counts", all(pts[i]["unique_tokens"] <= pts[i + 1]["unique_tokens"]
                                                       for i in range(len(pts) - 1)))
    check("active-params: dense constant", len({pt["dense_active_params"] for pt in pts}) == 1)

    edit = ["--source", "Spain", "--target", "France", "--allow-subword"]
    p = run(stem, "shift", m, "The capital of Spain is", *edit, "--json", "--plot", os.path.join(d, "s.png"))
    j = json.loads(p.stdout)
    check("shift: three panels", all(j[k] is not None and len(j[k]["topk"]) == 5 for k in ("original", "written_in", "edited")))
    check("shift: answers from the facts", j["source_answer"] == " Madrid" and j["target_answer"] == " Paris")
    check("shift: probability moved in [0, 1]", 0 <= j["prob_moved"] <= 1)
    p = run(stem, "localize", m, "The capital of Spain is", *edit, "--json", "--plot", os.path.join(d, "z.png"))
    j = json.loads(p.stdout)
    check("localize: STEM layers", [l["layer"] for l in j["layers"]] == [1, 2])
    check("localize: cumulative at the last layer = all layers",
          abs(j["layers"][-1]["p_target_cumulative"] - j["p_target_all_layers"]) < 1e-12)

    db = os.path.join(d, "e.db")
    run(stem, "edit", "apply", "--db", db, "--model", m, *edit)
    for ext, magic in (("pdf", b"%PDF"), ("json", b"{"), ("md", b"# Edit report")):
        out = os.path.join(d, "r." + ext)
        run(stem, "report", "--db", db, "--model", m, "1", "--out", out, "--gen-tokens", "4", "-q")
        check(f"report .{ext}", is_file(out, magic))
    j = json.load(open(os.path.join(d, "r.json")))
    check("report json: provenance", len(j["provenance"]["model_sha256"]) == 64 and j["state"] == "applied")
    check("report json: sections", all(k in j for k in ("recipe", "rows_per_layer", "warnings", "shift", "localization",
                                                         "metrics", "generations", "commands")))
    pdfinfo = shutil.which("pdfinfo")
    if pdfinfo:
        info = subprocess.run([pdfinfo, os.path.join(d, "r.pdf")], capture_output=True, text=True).stdout
        pages = int([l for l in info.splitlines() if l.startswith("Pages:")][0].split()[1])
        check("report pdf: several pages", pages >= 4, f"{pages} pages")
    run(stem, "report", "--db", db, "--model", m, "--all", "--out", os.path.join(d, "all.json"), "--no-metrics", "-q")
    check("report --all json", len(json.load(open(os.path.join(d, "all.json")))) > 0)

    # errors
    run(stem, "geometry", m, "--plot", os.path.join(d, "x.bmp"), rc=2)
    run(stem, "lens", m, rc=2)
    run(stem, "pca", os.path.join(d, "missing.safetensors"), rc=1)
    run(stem, "report", "--db", db, "--model", m, "99", "--out", os.path.join(d, "x.pdf"), rc=1)
    run(stem, "report", "--db", db, "--model", m, "1", "--out", os.path.join(d, "x.docx"), rc=2)
    run(stem, "neighbours", m, "#99999", rc=1)
    shutil.rmtree(d)
    print(f"{len(FAIL)} failures" if FAIL else "all checks passed")
    return 1 if FAIL else 0


if __name__ == "__main__":
    sys.exit(main())
