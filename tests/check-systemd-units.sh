#!/bin/sh
# check-systemd-units.sh: `systemd-analyze --user verify` on data/systemd/*, with ExecStart pointed
# at a built gt (verify insists that the binary exists). Exit 77 (skip) without systemd-analyze.
# Usage: tests/check-systemd-units.sh [GT_BINARY]   (default: $GT_BINARY, else _build/src/cli/gt)
set -eu

SRC=${GT_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
GT=${1:-${GT_BINARY:-$SRC/_build/src/cli/gt}}

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "1..0 # SKIP systemd-analyze not installed"
  exit 77
fi
case $GT in /*) ;; *) GT=$(pwd)/$GT ;; esac
if [ ! -x "$GT" ]; then
  echo "check-systemd-units: gt binary not found: $GT" >&2
  exit 1
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/gt-units.XXXXXX")
trap 'rm -rf "$T"' EXIT INT TERM
# verify needs a private runtime dir and a unit search path it can write.
mkdir -m 0700 "$T/run" "$T/units"
export XDG_RUNTIME_DIR="$T/run"
export XDG_CONFIG_HOME="$T/config"
export SYSTEMD_LOG_LEVEL=${SYSTEMD_LOG_LEVEL:-notice}

n=0
fail=0
for unit in "$SRC"/data/systemd/*.service "$SRC"/data/systemd/*.socket; do
  name=$(basename "$unit")
  sed "s|^ExecStart=/usr/bin/gt |ExecStart=$GT |" "$unit" > "$T/units/$name"
done
# An instance of the template is what gets verified; the socket needs its service beside it.
cd "$T/units"
for name in gt-server.service gt-server.socket gt-client@demo.service gt.service; do
  n=$((n + 1))
  out=$(systemd-analyze --user verify "$name" 2>&1) || true
  # Any diagnostic counts as a failure: verify reports most problems without failing.
  if [ -n "$out" ]; then
    echo "not ok $n - $name"
    echo "$out" | sed 's/^/# /'
    fail=1
  else
    echo "ok $n - $name"
  fi
done
echo "1..$n"
exit $fail
