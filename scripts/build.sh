#!/usr/bin/env bash
# Configure (once) and build into ./build. Extra arguments go to `meson setup`.
set -euo pipefail
cd "$(dirname "$0")/.."
# nvcc (the CUDA module, kernels/cuda) is often installed off PATH; ninja runs it
# by name, so every build needs it on PATH, not only `meson setup`.
if [ -d /usr/local/cuda/bin ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
if [ ! -f build/build.ninja ]; then
  meson setup build "$@"
fi
ninja -C build
