#!/usr/bin/env bash
# The GPU measurement harness of issue #6, in one command (see bench/README.md, "GPU"):
# builds a release tree with the CUDA backend, runs the CUDA parity tests, then
# times on the same GPU, interleaved round by round:
#   (a) training tok/s, ours (tables on the device) vs PyTorch (cuda)
#   (b) ours with offloaded tables (--offload F for each F) vs on the device,
#       with the offload statistics (hit rate, bytes moved, copy/stall, overlap)
#   (c) prefill and per-token decode latency, ours vs PyTorch (no KV cache on
#       either side: each token re-runs the forward over the window)
# for two configurations: "small" (run.sh's ARCH; launch-bound on a big GPU) and
# "big" (GPU-sized). Writes PREFIX.json (everything), PREFIX-summary.txt (the
# table, also printed), PREFIX-build.log, PREFIX-tests.log, PREFIX-runs.log.
#
#   bench/gpu.sh [--dry-cpu] [--rounds N] [--steps N] [--warmup N] [--configs "small big"]
#                [--offload "0.05 0.25"] [--zipf A] [--no-prefetch] [--math fp32|tf32|bf16]
#                [--gen G] [--decode-runs N] [--prefill-runs N] [--threads N]
#                [--budget SECONDS] [--tests-timeout SECONDS] [--skip-build] [--skip-tests]
#                [--no-profile] [--no-torch] [--debs DIR]
#
# --dry-cpu: the whole harness on the CPU (--device cpu, tiny sizes, 1 round, no
#   nvidia-smi, the existing build-bench/ tree): proves it works end to end.
# --budget: wall-clock seconds for everything, build included (default 480); runs
#   that would start too late are skipped (recorded as skipped), the summary is
#   always written. Order of priority: round 1 of training, decode, further
#   rounds, the profile.
# --debs DIR: Debian packages (from bench/gpu-debs.sh) unpacked into a private
#   sysroot when this machine lacks the C libraries the build needs.
# Environment: OUT (output folder; PREFIX = $OUT/gpu, else bench/results/gpu-latest,
#   or bench/results/gpu-dry-cpu with --dry-cpu), BUILD (default build-gpu;
#   build-bench with --dry-cpu), TORCH_PYTHON (tried first), CUDA_HOME
#   (default /usr/local/cuda).
set -uo pipefail

T_START=$(date +%s)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DRY=0
ROUNDS=2
STEPS=10
WARMUP=3
CONFIGS="small big"
OFFLOADS="0.05 0.25"
ZIPF=1.0
PREFETCH=1
MATH=fp32
GEN=32
DECODE_RUNS=2
PREFILL_RUNS=20
THREADS=4
BUDGET=480
TESTS_TIMEOUT=150
RUN_TIMEOUT=150
SKIP_BUILD=0
SKIP_TESTS=0
PROFILE=1
TORCH=1
DEBS=
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-cpu) DRY=1; shift ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --configs) CONFIGS=$2; shift 2 ;;
        --offload) OFFLOADS=$2; shift 2 ;;
        --zipf) ZIPF=$2; shift 2 ;;
        --no-prefetch) PREFETCH=0; shift ;;
        --math) MATH=$2; shift 2 ;;
        --gen) GEN=$2; shift 2 ;;
        --decode-runs) DECODE_RUNS=$2; shift 2 ;;
        --prefill-runs) PREFILL_RUNS=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --budget) BUDGET=$2; shift 2 ;;
        --tests-timeout) TESTS_TIMEOUT=$2; shift 2 ;;
        --skip-build) SKIP_BUILD=1; shift ;;
        --skip-tests) SKIP_TESTS=1; shift ;;
        --no-profile) PROFILE=0; shift ;;
        --no-torch) TORCH=0; shift ;;
        --debs) DEBS=$2; shift 2 ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) echo "gpu.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

if [ "$DRY" = 1 ]; then
    DEVICE=cpu
    BUILD=${BUILD:-$ROOT/build-bench}
    JOBS=2
    THREADS=2
    DEFAULT_PREFIX=$ROOT/bench/results/gpu-dry-cpu
else
    DEVICE=cuda
    BUILD=${BUILD:-$ROOT/build-gpu}
    JOBS=$(nproc)
    DEFAULT_PREFIX=$ROOT/bench/results/gpu-latest
fi
if [ -n "${OUT:-}" ]; then PREFIX=$OUT/gpu; else PREFIX=$DEFAULT_PREFIX; fi
mkdir -p "$(dirname "$PREFIX")"
DEADLINE=$((T_START + BUDGET))
RESERVE=20          # seconds kept for the summary
RUN=$(mktemp -d "${TMPDIR:-/tmp}/stem-gpu-XXXXXX")
trap 'rm -rf "$RUN"' EXIT
RUNLOG=$PREFIX-runs.log
BUILDLOG=$PREFIX-build.log
TESTLOG=$PREFIX-tests.log
: > "$RUNLOG"
: > "$BUILDLOG"
: > "$TESTLOG"
export PATH="${CUDA_HOME:-/usr/local/cuda}/bin:$PATH"

log() { echo "gpu.sh [$(( $(date +%s) - T_START ))s]: $*" | tee -a "$RUNLOG" >&2; }
left() { echo $(( DEADLINE - $(date +%s) )); }

# meson and ninja: on PATH, else beside a python3 (a virtual environment's bin/),
# else as that python's modules (pip's meson and ninja packages).
mkdir -p "$RUN/bin"
for tool in meson ninja; do
    command -v "$tool" >/dev/null 2>&1 && continue
    for p in ${TORCH_PYTHON:-} python3 /usr/bin/python3; do
        pp=$(command -v "$p" 2>/dev/null) || continue
        d=$(dirname "$pp")
        if [ -x "$d/$tool" ]; then ln -sf "$d/$tool" "$RUN/bin/$tool"; break; fi
        mod=$tool; [ "$tool" = meson ] && mod=mesonbuild.mesonmain
        if "$pp" -c "import ${mod%%.*}" >/dev/null 2>&1; then
            printf '#!/bin/sh\nexec %s -m %s "$@"\n' "$pp" "$mod" > "$RUN/bin/$tool"
            chmod +x "$RUN/bin/$tool"
            break
        fi
    done
done
export PATH="$PATH:$RUN/bin"

# A python3 for the bookkeeping (standard library only): any that runs.
PYS=
for p in /usr/bin/python3 python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import json' >/dev/null 2>&1; then PYS=$(command -v "$p"); break; fi
done
if [ -z "$PYS" ]; then echo "gpu.sh: no python3 at all: cannot summarize" >&2; fi
jstr() { "$PYS" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

# ---------------------------------------------------------------- environment
log "output: $PREFIX.json (+ -summary.txt -build.log -tests.log -runs.log), build dir $BUILD, budget ${BUDGET}s"
{
    echo "== date: $(date -Iseconds)"
    echo "== host: $(uname -a)"
    echo "== cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') x $(nproc)"
    if git -C "$ROOT" rev-parse --short HEAD >/dev/null 2>&1; then
        echo "== git: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo +dirty)"
    else
        echo "== git: no repository here (a copy of the working tree)"
    fi
} | tee "$RUN/env.txt" >&2
GPU_NAME=none
if [ "$DRY" = 0 ]; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi 2>&1 | tee -a "$RUN/env.txt" >&2
        GPU_NAME=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
    else
        echo "== nvidia-smi: not found" | tee -a "$RUN/env.txt" >&2
    fi
    { echo "== nvcc:"; nvcc --version 2>&1 || echo "nvcc: not found on PATH ($PATH)"; } | tee -a "$RUN/env.txt" >&2
else
    echo "== dry run on the CPU: nvidia-smi and nvcc skipped" | tee -a "$RUN/env.txt" >&2
fi
{
    echo "== cc: $(cc --version 2>&1 | head -1)"
    echo "== meson: $(meson --version 2>&1 | head -1)  ninja: $(ninja --version 2>&1 | head -1)"
    echo "== pkg-config: $(command -v pkg-config || echo missing)"
} | tee -a "$RUN/env.txt" >&2

# PyTorch: the first python3 whose torch sees CUDA (the CPU in a dry run).
TPY=
TORCH_STATUS="unavailable"
: > "$RUN/torch-probe.txt"
if [ "$TORCH" = 1 ]; then
    for p in ${TORCH_PYTHON:-} /usr/bin/python3 python3; do
        command -v "$p" >/dev/null 2>&1 || continue
        pp=$(command -v "$p")
        r=$("$pp" -c 'import torch; print(torch.__version__, torch.cuda.is_available(), torch.version.cuda)' 2>/dev/null | tail -1)
        echo "$pp: ${r:-no torch}" >> "$RUN/torch-probe.txt"
        [ -n "$r" ] || continue
        cuda_ok=$(echo "$r" | cut -d' ' -f2)
        if [ "$DRY" = 1 ] || [ "$cuda_ok" = True ]; then TPY=$pp; TORCH_STATUS="$pp: torch $r"; break; fi
        TORCH_STATUS="no torch with CUDA (last: $pp: torch $r)"
    done
else
    TORCH_STATUS="disabled (--no-torch)"
fi
echo "== torch: $TORCH_STATUS" | tee -a "$RUN/env.txt" >&2
sed 's/^/   probe: /' "$RUN/torch-probe.txt" | tee -a "$RUN/env.txt" >&2

# ---------------------------------------------------------------- build
BUILD_OK=0
OURS_ENV=(env)   # our programs run through env(1): with the sysroot's variables when one is used
B=$BUILD/bench
if [ "$SKIP_BUILD" = 1 ]; then
    log "build skipped (--skip-build)"
    BUILD_OK=1
else
    log "configuring and building $BUILD (log: $BUILDLOG)"
    (
        set -e
        if [ -n "$DEBS" ]; then
            # a private sysroot when the C libraries are missing here (bench/gpu-sysroot.sh)
            # (beside the build dir: the programs' RPATH points into it)
            . "$ROOT/bench/gpu-sysroot.sh" "$DEBS" "$BUILD-sysroot"
        fi
        if [ ! -f "$BUILD/build.ninja" ]; then
            if [ "$DRY" = 1 ]; then
                meson setup "$BUILD" "$ROOT" ${MESON_EXTRA:-}
            else
                meson setup "$BUILD" "$ROOT" --buildtype=release -Dcuda=enabled -Dgui=disabled ${MESON_EXTRA:-}
            fi
        elif [ "$DRY" = 0 ]; then
            meson configure "$BUILD" -Dbuildtype=release -Dcuda=enabled -Dgui=disabled
        fi
        # only what the runs and the cuda suite need (not the whole tree: the GUI,
        # the edit database and the charts need libraries a GPU image may lack)
        targets="bench/bench_train bench/bench_train_prof bench/bench_decode bench/bench_topk"
        if [ -n "$PYS" ]; then
            targets="$targets $(meson introspect "$BUILD" --tests | "$PYS" -c '
import json, os, sys
b = os.path.realpath(sys.argv[1])
print(" ".join(sorted({os.path.relpath(os.path.realpath(t["cmd"][0]), b) for t in json.load(sys.stdin)
                       if any(s == "cuda" or s.endswith(":cuda") for s in t["suite"])})))' "$BUILD")"
        fi
        echo "building: $targets"
        ninja -C "$BUILD" -j "$JOBS" $targets
        [ -n "${STEM_SYSROOT_ENV:-}" ] && echo "$STEM_SYSROOT_ENV" > "$RUN/sysroot.env"
        true
    ) >> "$BUILDLOG" 2>&1 && BUILD_OK=1
    if [ "$BUILD_OK" = 1 ]; then log "build ok"; else log "BUILD FAILED (tail of $BUILDLOG below): our runs are skipped"; tail -25 "$BUILDLOG" >&2; fi
    # the CUDA module on its own (where this configuration builds it): when it
    # fails, the bench programs still run and say why there is no CUDA
    if [ "$BUILD_OK" = 1 ] && ninja -C "$BUILD" -t targets all 2>/dev/null | grep '^kernels/cuda/libstem-cuda.so:' >/dev/null; then
        log "building the CUDA module"
        if ninja -C "$BUILD" -j "$JOBS" kernels/cuda/libstem-cuda.so >> "$BUILDLOG" 2>&1; then
            log "CUDA module ok"
        else
            log "CUDA MODULE BUILD FAILED (tail of $BUILDLOG below)"; tail -15 "$BUILDLOG" >&2
        fi
    fi
fi
[ -f "$RUN/sysroot.env" ] && OURS_ENV=(env $(cat "$RUN/sysroot.env"))
SYSROOT_USED=0; [ -f "$RUN/sysroot.env" ] && SYSROOT_USED=1
if [ "$DRY" = 0 ] && [ "$BUILD_OK" = 1 ] && [ ! -f "$BUILD/kernels/cuda/libstem-cuda.so" ]; then
    log "no CUDA module was built ($BUILD/kernels/cuda/libstem-cuda.so): our --device cuda runs will fail with the reason"
fi

# ---------------------------------------------------------------- CUDA parity tests
TESTS_RC=skipped
if [ "$SKIP_TESTS" = 1 ] || [ "$BUILD_OK" = 0 ]; then
    log "cuda test suite skipped"
else
    to=$TESTS_TIMEOUT
    (( to > $(left) - 60 )) && to=$(( $(left) - 60 ))
    if (( to < 20 )); then
        log "cuda test suite skipped: time budget"
    else
        log "meson test --suite cuda (at most ${to}s; log: $TESTLOG)"
        timeout --kill-after=10 "$to" "${OURS_ENV[@]}" meson test -C "$BUILD" --no-rebuild --suite cuda \
            --print-errorlogs > "$RUN/tests.out" 2>&1
        TESTS_RC=$?
        { cat "$RUN/tests.out"; echo; echo "==== meson-logs/testlog.txt"; cat "$BUILD/meson-logs/testlog.txt" 2>/dev/null; } > "$TESTLOG"
        cp "$BUILD/meson-logs/testlog.json" "$RUN/testlog.json" 2>/dev/null || true
        grep -E "^(Ok|Expected Fail|Fail|Unexpected Pass|Skipped|Timeout|ERROR):" "$RUN/tests.out" >&2 || tail -5 "$RUN/tests.out" >&2
        log "cuda test suite: exit $TESTS_RC"
    fi
fi

# ---------------------------------------------------------------- the runs
declare -A ARCH
if [ "$DRY" = 1 ]; then
    ARCH[small]="--vocab 512 --dim 64 --layers 2 --heads 4 --ffn 128 --seq 32 --batch 4 --stem-layers all-but-first"
    ARCH[big]="--vocab 1024 --dim 96 --layers 3 --heads 4 --ffn 192 --seq 64 --batch 4 --stem-layers all-but-first"
    [ "$ROUNDS" = 2 ] && ROUNDS=1
    STEPS=3; WARMUP=1; PREFILL_RUNS=3; DECODE_RUNS=1; GEN=4
else
    # run.sh's ARCH, and a GPU-sized one
    ARCH[small]="--vocab 4096 --dim 256 --layers 6 --heads 8 --ffn 688 --seq 128 --batch 16 --stem-layers all-but-first"
    ARCH[big]="--vocab 32768 --dim 1024 --layers 8 --heads 16 --ffn 2752 --seq 512 --batch 8 --stem-layers all-but-first"
fi
PF=(); [ "$PREFETCH" = 1 ] && PF=(--prefetch)

# run NAME CMD...: stdout (one JSON object) to $RUN/NAME.json, stderr to the runs
# log; a failure, a time-out or a skip is recorded in the JSON instead.
run() {
    local name=$1; shift
    local l; l=$(left)
    if (( l - RESERVE < 15 )); then
        log "skip $name: time budget"
        echo '{"_skipped": "time budget"}' > "$RUN/$name.json"
        return 1
    fi
    local to=$(( l - RESERVE < RUN_TIMEOUT ? l - RESERVE : RUN_TIMEOUT ))
    log "$name"
    echo "---- $name: $*" >> "$RUNLOG"
    local t0 rc; t0=$(date +%s.%N)
    timeout --kill-after=10 "$to" "$@" > "$RUN/$name.out" 2> "$RUN/$name.err"
    rc=$?
    cat "$RUN/$name.err" >> "$RUNLOG"
    "$PYS" - "$RUN/$name" "$rc" "$t0" "$to" <<'EOF'
import json, sys, time
base, rc, t0, to = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
try:
    d = json.load(open(base + ".out")) if rc == 0 else None
except ValueError as e:
    d, rc = None, -1
if d is None:
    err = open(base + ".err", errors="replace").read().strip().splitlines()
    d = {"_failed": True, "rc": rc, "timed_out": rc in (124, 137), "timeout_s": to, "stderr_tail": err[-12:]}
d["_wall_s"] = round(time.time() - t0, 2)
json.dump(d, open(base + ".json", "w"), indent=1)
EOF
    [ "$rc" = 0 ] || log "  $name FAILED (exit $rc; see $RUNLOG)"
    return "$rc"
}

train_round() {   # train_round R
    local r=$1 c
    for c in $CONFIGS; do
        local A=${ARCH[$c]}
        if [ "$BUILD_OK" = 1 ]; then
            run "train-$c-ours-dev-r$r" "${OURS_ENV[@]}" "$B/bench_train" $A --device "$DEVICE" --math "$MATH" --zipf "$ZIPF" \
                --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS"
            for f in $OFFLOADS; do
                run "train-$c-ours-off$f-r$r" "${OURS_ENV[@]}" "$B/bench_train" $A --device "$DEVICE" --math "$MATH" --zipf "$ZIPF" \
                    --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS" --offload "$f" "${PF[@]}"
            done
        fi
        if [ -n "$TPY" ]; then
            run "train-$c-torch-r$r" env PYTHONUNBUFFERED=1 "$TPY" "$ROOT/bench/reference_torch.py" train $A \
                --device "$DEVICE" --math "$MATH" --zipf "$ZIPF" --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS"
        fi
    done
}

decode_all() {
    local c
    for c in $CONFIGS; do
        local A=${ARCH[$c]} model="$RUN/decode-$c.safetensors"
        # one random model file for both sides (so the generated ids can be compared)
        if [ "$BUILD_OK" = 1 ] && (( $(left) - RESERVE > 30 )) && timeout $(( $(left) - RESERVE )) \
                "${OURS_ENV[@]}" "$B/bench_decode" $A --save-model "$model" >> "$RUNLOG" 2>&1; then
            run "decode-$c-ours" "${OURS_ENV[@]}" "$B/bench_decode" --model "$model" --device "$DEVICE" --math "$MATH" \
                --gen "$GEN" --runs "$PREFILL_RUNS" --decode-runs "$DECODE_RUNS" --threads "$THREADS"
            MSRC=(--model "$model")
        else
            MSRC=($A)   # no file: PyTorch decodes its own random model (latency only)
        fi
        if [ -n "$TPY" ]; then
            run "decode-$c-torch" env PYTHONUNBUFFERED=1 "$TPY" "$ROOT/bench/reference_torch.py" decode "${MSRC[@]}" \
                --device "$DEVICE" --math "$MATH" --gen "$GEN" --runs "$PREFILL_RUNS" --decode-runs "$DECODE_RUNS" \
                --threads "$THREADS"
        fi
        rm -f "$model"
    done
}

if [ "$BUILD_OK" = 0 ] && [ -z "$TPY" ]; then
    log "nothing to run: no build and no PyTorch"
else
    train_round 1
    decode_all
    for r in $(seq 2 "$ROUNDS"); do train_round "$r"; done
    if [ "$PROFILE" = 1 ] && [ "$BUILD_OK" = 1 ]; then
        for c in $CONFIGS; do
            # where a step goes (ops synchronized one by one on a device: slower, see README)
            run "profile-$c" "${OURS_ENV[@]}" "$B/bench_train_prof" ${ARCH[$c]} --device "$DEVICE" --math "$MATH" --zipf "$ZIPF" \
                --steps 3 --warmup 2 --threads "$THREADS"
            "$PYS" - "$RUN/profile-$c.err" >> "$RUN/profiles.txt" <<EOF
import sys
t = open(sys.argv[1], errors="replace").read()
i = t.find("profile over")
print("== profile $c\n" + (t[i:] if i >= 0 else "(none)"))
EOF
        done
    fi
fi

# ---------------------------------------------------------------- summary
"$PYS" - "$RUN" "$PREFIX" <<EOF
import json, sys
env = {
    "date_start": $T_START, "wall_s": None, "dry_cpu": bool($DRY), "device": "$DEVICE", "gpu": $(jstr "$GPU_NAME"),
    "build_dir": $(jstr "$BUILD"), "build_ok": bool($BUILD_OK), "tests_rc": $(jstr "$TESTS_RC"),
    "torch": $(jstr "$TORCH_STATUS"), "rounds": $ROUNDS, "steps": $STEPS, "warmup": $WARMUP, "zipf": $ZIPF,
    "prefetch": bool($PREFETCH), "math": "$MATH", "offloads": "$OFFLOADS".split(), "configs": "$CONFIGS".split(),
    "arch": {c: a for c, a in {"small": $(jstr "${ARCH[small]}"), "big": $(jstr "${ARCH[big]}")}.items()},
    "threads": $THREADS, "gen": $GEN, "decode_runs": $DECODE_RUNS, "prefill_runs": $PREFILL_RUNS,
    "budget_s": $BUDGET, "sysroot": bool($SYSROOT_USED),
}
json.dump(env, open(sys.argv[1] + "/env.json", "w"))
EOF
sed -i "s/\"wall_s\": null/\"wall_s\": $(( $(date +%s) - T_START ))/" "$RUN/env.json"
"$PYS" "$ROOT/bench/gpu_summarize.py" "$RUN" "$PREFIX.json" | tee "$PREFIX-summary.txt"
[ -f "$RUN/profiles.txt" ] && cat "$RUN/profiles.txt" >> "$PREFIX-summary.txt"
log "done in $(( $(date +%s) - T_START ))s: $PREFIX.json, $PREFIX-summary.txt, $BUILDLOG, $TESTLOG, $RUNLOG"
