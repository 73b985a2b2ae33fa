#!/usr/bin/env bash
# Which layers should be STEM layers? Trains the default architecture with each
# STEM layer set at a reduced budget (400 steps; same corpus, seed and lr) and
# prints validation loss and capital recall. This is how the default preset's
# layer set was chosen (README "Default model").
#   bash bench/layer_sets.sh [STEM_BINARY] [STEPS]
set -euo pipefail
STEM=${1:-build/app/stem}
STEPS=${2:-400}
OUT=$(mktemp -d)
printf '%-15s %9s %11s %9s %9s\n' "stem layers" "val loss" "capital" "held-out" "tok/s"
for spec in all-but-first all every-2 none; do
  flag="--stem-layers $spec"; [ "$spec" = none ] && flag="--dense"
  "$STEM" train --preset default --steps "$STEPS" $flag --out "$OUT/m.safetensors" --json --quiet > "$OUT/r.json"
  /usr/bin/python3 - "$spec" "$OUT/r.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
print(f"{sys.argv[1]:15s} {r['val_loss']:9.3f} {100*r['capital_top1']:10.1f}% {100*r['capital_top1_heldout']:8.1f}% {r['tokens_per_s']:9.0f}")
PY
done
rm -rf "$OUT"
