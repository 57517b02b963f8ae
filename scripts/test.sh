#!/usr/bin/env bash
# The README's test command: sets up .venv if needed, makes sure a Redis answers
# on 127.0.0.1:6379, fetches pymongo's spec tests, then runs lint, types and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch_spec_tests.sh
bash scripts/ensure_redis.sh
bash scripts/ensure_prometheus.sh
bash scripts/ensure_crd_validators.sh
.venv/bin/ruff check .
.venv/bin/mypy
# Two workers, one per core: most tests wait on a service, a subprocess or the model,
# so the run takes about 0.7 of a serial one (each worker loads the model once).
exec .venv/bin/pytest -n 2 --dist worksteal "$@"
