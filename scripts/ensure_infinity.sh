#!/usr/bin/env bash
# The server-backend tests (tests/server) and bench/bench_server.py run a real
# embedding server: Infinity, whose pinned dependencies conflict with the project's
# (numpy 1.x, transformers 4.x), so it gets a virtualenv of its own. The virtualenv
# is kept under the user's cache, named by the hash of scripts/infinity-requirements.txt,
# so a fresh clone on the same machine reuses it and a changed pin builds a new one
# (about 3 minutes); .venv-infinity in the repository links to it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=$(sha256sum scripts/infinity-requirements.txt | cut -c1-16)
venv="${XDG_CACHE_HOME:-$HOME/.cache}/cdc-sidecar/infinity-$stamp"
if [ ! -f "$venv/.installed" ]; then
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$PY" -m venv "$venv"
  "$venv/bin/pip" install --quiet torch==2.13.0
  "$venv/bin/pip" install --quiet -r scripts/infinity-requirements.txt
  touch "$venv/.installed"
fi
ln -sfn "$venv" .venv-infinity
