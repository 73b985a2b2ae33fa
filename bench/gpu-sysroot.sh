# Sourced by bench/gpu.sh (inside its build step, under set -e) with two
# arguments: a folder of Debian packages (bench/gpu-debs.sh) and a sysroot folder.
#
# When this machine's pkg-config finds every library the build needs, it does
# nothing. Otherwise it unpacks the packages into the sysroot and points the
# meson configuration at them, for the libraries the bench programs and the
# cuda test suite really link (GLib, GIO, GModule, json-glib, OpenBLAS):
#   - one .pc file per module, written here with absolute sysroot paths and no
#     Requires.private (so no other -dev package is needed), first on
#     PKG_CONFIG_PATH;
#   - modules the configuration requires but those targets never link (lapacke,
#     sqlite3, cairo, pangocairo: the edit database, the charts) get an EMPTY
#     .pc file when this machine has none, so `meson setup` passes; building
#     anything that uses them then fails, and gpu.sh builds only its targets;
#   - C link arguments (-Dc_link_args, not LDFLAGS: meson would hand those to
#     nvcc too, which rejects them) with -rpath-link (the linker resolves the
#     libraries' own needs) and an old-style RPATH (--disable-new-dtags: it also
#     applies to the libraries' dependencies) to the sysroot, so the programs run
#     without LD_LIBRARY_PATH, and nothing else on the machine (meson, nvcc,
#     python) sees the sysroot's libraries;
#   - pkgconf from the sysroot, through a native file, when there is no
#     pkg-config at all.
# Exports STEM_SYSROOT_ENV (what gpu.sh records) and MESON_EXTRA.
_debs=$1
_sr=$2
_real="glib-2.0 gio-2.0 gmodule-2.0 json-glib-1.0 openblas"
_other="lapacke sqlite3 cairo pangocairo"
if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists $_real $_other && pkg-config --atleast-version=2.74 glib-2.0
then
    echo "gpu-sysroot: pkg-config finds every library here: no sysroot"
else
    echo "gpu-sysroot: missing here: $(for m in $_real $_other; do command -v pkg-config >/dev/null 2>&1 && pkg-config --exists $m || printf '%s ' $m; done)"
    if [ ! -d "$_debs" ] || ! ls "$_debs"/*.deb >/dev/null 2>&1; then
        echo "gpu-sysroot: no packages in '$_debs' (make them with bench/gpu-debs.sh and carry the folder)"
        false
    fi
    mkdir -p "$_sr/pc" "$_sr/bin"
    for _d in "$_debs"/*.deb; do
        if command -v dpkg-deb >/dev/null 2>&1; then
            dpkg-deb -x "$_d" "$_sr"
        else
            _t=$(mktemp -d)
            (cd "$_t" && ar x "$_d" && tar -xf data.tar.* -C "$_sr")
            rm -rf "$_t"
        fi
    done
    _L=$_sr/usr/lib/x86_64-linux-gnu
    _I=$_sr/usr/include
    _ver() { sed -n 's/^Version: *//p' "$1" | head -1; }
    _gv=$(_ver "$_L/pkgconfig/glib-2.0.pc")
    _jv=$(_ver "$_L/pkgconfig/json-glib-1.0.pc")
    _ov=$(sed -n 's/^version=//p' "$_L/openblas-pthread/pkgconfig/openblas.pc" | head -1)
    _pc() {   # _pc NAME VERSION CFLAGS LIBS
        printf 'Name: %s\nDescription: %s from the gpu.sh sysroot\nVersion: %s\nCflags: %s\nLibs: %s\n' \
            "$1" "$1" "$2" "$3" "$4" > "$_sr/pc/$1.pc"
    }
    _gc="-I$_I/glib-2.0 -I$_L/glib-2.0/include -pthread"
    _pc glib-2.0 "$_gv" "$_gc" "-L$_L -lglib-2.0 -pthread"
    _pc gobject-2.0 "$_gv" "$_gc" "-L$_L -lgobject-2.0 -lglib-2.0"
    _pc gio-2.0 "$_gv" "$_gc" "-L$_L -lgio-2.0 -lgobject-2.0 -lglib-2.0"
    _pc gmodule-2.0 "$_gv" "$_gc" "-L$_L -Wl,--export-dynamic -lgmodule-2.0 -lglib-2.0 -pthread"
    _pc gmodule-no-export-2.0 "$_gv" "$_gc" "-L$_L -lgmodule-2.0 -lglib-2.0 -pthread"
    _pc json-glib-1.0 "$_jv" "-I$_I/json-glib-1.0 $_gc" "-L$_L -ljson-glib-1.0 -lgio-2.0 -lgobject-2.0 -lglib-2.0"
    _pc openblas "$_ov" "-I$_I/x86_64-linux-gnu/openblas-pthread" "-L$_L/openblas-pthread -lopenblas"
    for _m in $_other; do
        if ! { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists $_m; }; then
            _pc $_m 99 "" ""
            echo "gpu-sysroot: $_m: empty stand-in (not linked by the targets gpu.sh builds)"
        fi
    done
    export PKG_CONFIG_PATH="$_sr/pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    export MESON_EXTRA="${MESON_EXTRA:-} -Dc_link_args=-Wl,--disable-new-dtags,-rpath,$_L,-rpath-link,$_L,-rpath,$_L/openblas-pthread,-rpath-link,$_L/openblas-pthread"
    if ! command -v pkg-config >/dev/null 2>&1; then
        printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s/usr/bin/pkgconf "$@"\n' "$_L" "$_sr" > "$_sr/bin/pkg-config"
        chmod +x "$_sr/bin/pkg-config"
        printf "[binaries]\npkg-config = '%s/bin/pkg-config'\n" "$_sr" > "$_sr/native.ini"
        export MESON_EXTRA="${MESON_EXTRA:-} --native-file $_sr/native.ini"
        echo "gpu-sysroot: pkg-config: the sysroot's pkgconf"
    fi
    export STEM_SYSROOT_ENV="STEM_SYSROOT=$_sr"
    echo "gpu-sysroot: $_sr ready (glib $_gv, json-glib $_jv, openblas $_ov)"
fi
