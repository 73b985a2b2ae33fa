#!/usr/bin/env bash
# Engine vs PyTorch CPU benchmark in one run: builds what is missing, then
# interleaves the programs (sgemm, ours, torch, ours, torch, ...) so machine
# noise hits both sides alike, prints the table and writes
# bench/results/latest.json. See bench/README.md.
#
#   bench/run.sh [--model FILE] [--rounds N] [--steps N] [--threads N]
#                [--torch-threads "1 2"] [--topk-runs N] [--no-profile] [--quick]
#
# Environment: BUILD (build dir, default build-bench), TORCH_PYTHON (default
# /usr/bin/python3: Debian's python3-torch, not the python3 on PATH),
# STEM_BENCH_MODEL (same as --model). Nothing else in the environment is changed:
# both sides inherit it as is (OPENBLAS_CORETYPE included); thread counts are
# set per program (our pool; torch.set_num_threads + OpenBLAS threads for torch).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build-bench}
PY=${TORCH_PYTHON:-/usr/bin/python3}
# the default model: where scripts/workbench.sh caches `stem train --preset default` (and the
# workbench looks for it: stem_default_model_path in ui/stem-state.c)
MODEL=${STEM_BENCH_MODEL:-${XDG_DATA_HOME:-$HOME/.local/share}/stem-workbench/default.safetensors}
ROUNDS=3
STEPS=8
WARMUP=2
THREADS=2
TORCH_THREADS="1 2"
TOPK_RUNS=200
SGEMM_SIZE=2048
SGEMM_TRIALS=5
PROFILE=1

while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --torch-threads) TORCH_THREADS=$2; shift 2 ;;
        --topk-runs) TOPK_RUNS=$2; shift 2 ;;
        --sgemm-size) SGEMM_SIZE=$2; shift 2 ;;
        --no-profile) PROFILE=0; shift ;;
        --quick) ROUNDS=1; STEPS=3; WARMUP=1; TOPK_RUNS=50; SGEMM_SIZE=1024; SGEMM_TRIALS=3; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

# The architecture of the issue (STEM on all layers but the first).
ARCH=(--vocab 4096 --dim 256 --layers 6 --heads 8 --ffn 688 --seq 128 --batch 16 --stem-layers all-but-first)

log() { echo "run.sh: $*" >&2; }
# run a bench program: its JSON to $1, plus how busy the rest of the machine was
measure() { local out=$1; shift; "$PY" "$ROOT/bench/measure.py" "$out" -- "$@"; }

# One run.sh at a time per machine: two at once time each other (and share
# bench/results/latest.json). A second one waits for the first.
if command -v flock >/dev/null; then
    exec 9>"${TMPDIR:-/tmp}/stem-bench-run.lock"
    if ! flock -n 9; then
        log "another bench/run.sh is running on this machine: waiting for it"
        flock 9
    fi
fi

# ---------------------------------------------------------------- build
if [ ! -f "$BUILD/build.ninja" ]; then
    log "configuring $BUILD"
    meson setup "$BUILD" "$ROOT" >/dev/null
fi
log "building bench programs"
if ! out=$(ninja -C "$BUILD" bench/bench_sgemm bench/bench_train bench/bench_train_prof bench/bench_topk 2>&1); then
    echo "$out" >&2; log "build failed"; exit 1
fi
B="$BUILD/bench"
if [ ! -x "$PY" ] || ! "$PY" -c 'import torch' 2>/dev/null; then
    log "no PyTorch at $PY (install python3-torch or set TORCH_PYTHON)"; exit 1
fi

# ---------------------------------------------------------------- model for top-k
if [ ! -f "$MODEL" ]; then
    INIT="$B/default-init.safetensors"
    log "no model at $MODEL: using a randomly initialized default-preset model $INIT"
    log "  (train the real one with: stem train --preset default --out $MODEL, or scripts/workbench.sh)"
    if [ ! -f "$INIT" ]; then
        if ninja -C "$BUILD" app/stem >/dev/null 2>&1 && "$BUILD/app/stem" init --preset default --out "$INIT" --quiet; then
            :
        else
            log "  (the stem CLI did not build or run: writing it with bench_topk --make-default)"
            "$B/bench_topk" --make-default "$INIT"
        fi
    fi
    MODEL=$INIT
fi

# ---------------------------------------------------------------- runs
RUN=$(mktemp -d "$B/run-XXXXXX")
trap 'rm -rf "$RUN"' EXIT
cat > "$RUN/env.json" <<EOF
{"cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')", "nproc": $(nproc),
 "OPENBLAS_CORETYPE": "${OPENBLAS_CORETYPE:-}", "OPENBLAS_NUM_THREADS": "${OPENBLAS_NUM_THREADS:-}",
 "loadavg_before": "$(cut -d' ' -f1-3 /proc/loadavg)", "date": "$(date -Iseconds)",
 "git": "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo +dirty)",
 "rounds": $ROUNDS, "steps": $STEPS, "warmup": $WARMUP, "threads": $THREADS, "torch_threads": "$TORCH_THREADS",
 "model": "$MODEL"}
EOF

for r in $(seq 1 "$ROUNDS"); do
    log "round $r/$ROUNDS: sgemm peak"
    measure "$RUN/sgemm-$r.json" "$B/bench_sgemm" --size "$SGEMM_SIZE" --threads "$THREADS" --trials "$SGEMM_TRIALS"
    log "round $r/$ROUNDS: ours training ($STEPS steps)"
    measure "$RUN/ours-train-$r.json" \
        "$B/bench_train" "${ARCH[@]}" --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS"
    for t in $TORCH_THREADS; do
        log "round $r/$ROUNDS: torch training, $t thread(s)"
        measure "$RUN/torch-train-$t-$r.json" \
            "$PY" "$ROOT/bench/reference_torch.py" train "${ARCH[@]}" --steps "$STEPS" --warmup "$WARMUP" --threads "$t"
    done
done

TOPK_THREADS=$(echo "$TORCH_THREADS" | tr ' ' ',')
for r in $(seq 1 "$ROUNDS"); do
    log "round $r/$ROUNDS: top-k latency, ours"
    measure "$RUN/ours-topk-$r.json" "$B/bench_topk" --model "$MODEL" --threads "$TOPK_THREADS" --runs "$TOPK_RUNS"
    IDS=$("$PY" -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["prompt_ids"])))' \
          "$RUN/ours-topk-$r.json")
    for t in $TORCH_THREADS; do
        log "round $r/$ROUNDS: top-k latency, torch $t thread(s)"
        measure "$RUN/torch-topk-$t-$r.json" \
            "$PY" "$ROOT/bench/reference_torch.py" topk --model "$MODEL" --ids "$IDS" --threads "$t" --runs "$TOPK_RUNS"
    done
done

if [ "$PROFILE" = 1 ]; then
    log "profile: bench_train_prof ($STEPS steps)"
    "$PY" "$ROOT/bench/measure.py" "$RUN/profile.json" --stderr "$RUN/profile.txt" -- \
        "$B/bench_train_prof" "${ARCH[@]}" --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS"
    log "profile: the step's GEMM shapes alone (bench_sgemm --shapes)"
    measure "$RUN/shapes.json" "$B/bench_sgemm" --size 1024 --threads "$THREADS" --trials 5 --shapes
fi

# record the load after the runs (a busy machine makes every number here noisy)
"$PY" - "$RUN/env.json" <<'EOF'
import json, sys
p = sys.argv[1]
e = json.load(open(p))
e["loadavg_after"] = " ".join(open("/proc/loadavg").read().split()[:3])
json.dump(e, open(p, "w"))
EOF

mkdir -p "$ROOT/bench/results"
"$PY" "$ROOT/bench/summarize.py" "$RUN" "$ROOT/bench/results/latest.json"
log "wrote bench/results/latest.json"
