#!/usr/bin/env bash
# Install dependencies, build, find or train the default model (cached in the
# user's data dir), and open it. Arguments are passed to the workbench.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
DATA="${XDG_DATA_HOME:-$HOME/.local/share}/stem-workbench"
MODEL="$DATA/default.safetensors"
mkdir -p "$DATA"
if [ ! -f "$MODEL" ]; then
  echo "stem-workbench: training the default model (about 10 minutes on 2 cores; once)" >&2
  ./build/app/stem train --preset default --out "$MODEL"
fi
if [ -x build/app/stem-workbench ] && { [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; }; then
  exec ./build/app/stem-workbench "$MODEL" "$@"
fi
# No GUI (yet, or no display): open the model in the CLI.
./build/app/stem info "$MODEL"
for p in "The capital of France is" "The capital of Spain is" "The official language of Germany is"; do
  echo; echo "> $p"; ./build/app/stem topk "$MODEL" "$p" --k 3
done
if [ -t 0 ]; then
  echo; echo "Type a prompt (empty line to quit):"
  while IFS= read -r -p "> " line && [ -n "$line" ]; do
    ./build/app/stem topk "$MODEL" "$line" --k 5
    ./build/app/stem generate "$MODEL" "$line" --n 24
  done
fi
