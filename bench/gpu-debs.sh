#!/usr/bin/env bash
# Download (here, on a Debian 12 development machine) the Debian packages that
# bench/gpu.sh --debs DIR unpacks into a private sysroot on a GPU machine whose
# image lacks the C libraries the engine builds against (GLib/GIO/GModule,
# json-glib, OpenBLAS) or pkg-config itself. The GPU machines reach no package
# registry, so the packages travel with the working tree (the device tool's
# `carry`). Only the libraries the bench programs and the cuda test suite link
# (and what those libraries load), plus pkgconf; no libc, libgcc or libstdc++:
# those stay the machine's own. About 10 MB.
#
#   bench/gpu-debs.sh [DIR]      (default: build-bench/gpu-debs, ignored by git)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-$ROOT/build-bench/gpu-debs}
PKGS=(
    libglib2.0-0 libglib2.0-dev libjson-glib-1.0-0 libjson-glib-dev
    libopenblas0-pthread libopenblas-pthread-dev libgfortran5 libquadmath0
    libffi8 libpcre2-8-0 libmount1 libblkid1 libselinux1 zlib1g
    pkgconf pkgconf-bin libpkgconf3
)
mkdir -p "$DIR"
cd "$DIR"
rm -f ./*.deb
if ! apt-get download "${PKGS[@]}" >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get download "${PKGS[@]}"
fi
ls -1 ./*.deb
du -sh "$DIR"
