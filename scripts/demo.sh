#!/usr/bin/env bash
# The README's first command: sets up .venv if needed, then runs the demo on
# embedded defaults (mongosim, a private Redis, Milvus Lite, the offline model).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/cdc-sidecar demo "$@"
