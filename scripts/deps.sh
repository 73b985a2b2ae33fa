#!/usr/bin/env bash
# Install the Debian 12 packages STEM Workbench needs (build, tests, GUI, PyTorch
# reference). Idempotent: does nothing when everything is already installed.
set -euo pipefail
PKGS=(meson ninja-build pkg-config gcc clang libclang-rt-14-dev
      libglib2.0-dev libjson-glib-dev libopenblas-dev liblapacke-dev libsqlite3-dev
      libcairo2-dev libgtk-4-dev
      python3-torch python3-numpy xvfb xauth poppler-utils)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "stem-workbench: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
