#!/bin/sh
# The GUI test: train the tiny model with the stem CLI (STEM on every layer, so
# that an edit of the prompt's tokens moves its next-token distribution), start
# the real stem-workbench on it with a fresh edit database under Xvfb, and let
# its --self-test script drive the window (ui/stem-selftest.c). Screenshots and
# reports land in OUTDIR. Any GTK critical aborts (G_DEBUG=fatal-criticals).
#   run-gui-test.sh STEM WORKBENCH OUTDIR
# STEM_GUI_MODEL=FILE runs the same script on another model (the README's
# screenshots: the default model) instead of a freshly trained tiny one.
set -eu
STEM=$1
WORKBENCH=$2
OUT=$3
XVFB=$(command -v xvfb-run || true)
if [ -z "$XVFB" ]; then
  echo "xvfb-run not found: skipped" >&2
  exit 77
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/stem-gui.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# a private home: config (window state), data (recent files, models), cache
export XDG_CONFIG_HOME="$TMP/config" XDG_DATA_HOME="$TMP/data" XDG_CACHE_HOME="$TMP/cache"
export GTK_A11Y=none NO_AT_BRIDGE=1 GSETTINGS_BACKEND=memory
# a private session bus when we can have one (torn down at exit), else none
BUS=""
if command -v dbus-run-session >/dev/null 2>&1; then BUS="dbus-run-session --"; else unset DBUS_SESSION_BUS_ADDRESS; fi
mkdir -p "$OUT"
rm -f "$OUT"/*.png "$OUT"/report.* "$OUT"/*.safetensors "$OUT"/*.stempatch "$OUT"/*.log

MODEL="${STEM_GUI_MODEL:-}"
if [ -z "$MODEL" ]; then
  MODEL="$TMP/tiny.safetensors"
  "$STEM" train --preset tiny --stem-layers all --out "$MODEL" --quiet --threads 2
fi

# criticals abort; warnings from GTK/GLib fail the test too (checked in the log)
run() {
  log=$1
  shift
  status=0
  G_DEBUG=fatal-criticals $BUS "$XVFB" -a -s "-screen 0 1400x900x24 -nolisten tcp" "$@" >"$log" 2>&1 || status=$?
  cat "$log"
  if [ "$status" -ne 0 ]; then echo "stem-workbench exited with $status" >&2; exit 1; fi
  if grep -E '(Gtk|Gdk|Gsk|GLib|GLib-GObject|GLib-GIO|Pango)-(WARNING|CRITICAL)' "$log" >/dev/null; then
    echo "GTK or GLib warnings in $log" >&2
    exit 1
  fi
}
run "$OUT/workbench.log" "$WORKBENCH" --self-test "$OUT" --db "$TMP/edits.sqlite" "$MODEL"

# a first start: no model given and none remembered (its own config and data)
XDG_CONFIG_HOME="$TMP/config-empty" XDG_DATA_HOME="$TMP/data-empty" run "$OUT/workbench-empty.log" "$WORKBENCH" --self-test "$OUT"

# what a person's next start would find: the window size and the last model
STATE="$XDG_CONFIG_HOME/stem-workbench/state.ini"
grep -q '^width=' "$STATE" || { echo "the window size was not saved in $STATE" >&2; exit 1; }
grep -q '^last=.*trained-tiny.safetensors' "$STATE" || { echo "the last model was not saved in $STATE" >&2; exit 1; }
ls "$OUT"/*.png
echo "gui: passed"
