#!/usr/bin/env bash
# Creates .venv and installs the project with its test tools. torch is installed
# first and pinned: an unpinned torch would pull a multi-GB CUDA build.
#
# A checkout without .venv links it to a virtualenv kept under the user's cache,
# named by the hash of pyproject.toml, and points that virtualenv's editable install
# at this checkout: a fresh clone on a machine that built it before (CI) skips two
# minutes of installs, and a changed pyproject.toml builds a new one. A .venv that is
# a directory of its own is kept and reinstalled in place when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=$(sha256sum pyproject.toml | cut -d' ' -f1)

install() {  # $1: the virtualenv to fill from this checkout's pyproject.toml
  [ -x "$1/bin/python" ] || "$PY" -m venv "$1"
  "$1/bin/pip" install --quiet --upgrade pip
  "$1/bin/pip" install --quiet torch==2.13.0
  "$1/bin/pip" install --quiet -e '.[dev]'
  echo "$stamp" > "$1/.installed"
}

if [ -d .venv ] && [ ! -L .venv ]; then
  [ "$(cat .venv/.installed 2>/dev/null)" = "$stamp" ] || install .venv
  exit 0
fi
shared="${XDG_CACHE_HOME:-$HOME/.cache}/cdc-sidecar/venv-${stamp:0:16}"
if [ "$(cat "$shared/.installed" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$shared"
  mkdir -p "$(dirname "$shared")"
  install "$shared"
fi
ln -sfn "$shared" .venv
# The editable install names the checkout it was made from: make it this one.
.venv/bin/pip install --quiet --no-deps -e .
