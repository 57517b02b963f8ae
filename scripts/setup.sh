#!/usr/bin/env bash
# Creates .venv and installs the project with its test tools. torch is installed
# first and pinned: an unpinned torch would pull a multi-GB CUDA build.
# Skips the installs when pyproject.toml has not changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat .venv/.installed 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet torch==2.13.0
.venv/bin/pip install --quiet -e '.[dev]'
echo "$stamp" > .venv/.installed
