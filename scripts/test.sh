#!/usr/bin/env bash
# The README's test command: sets up .venv if needed, makes sure a Redis answers
# on 127.0.0.1:6379, fetches pymongo's spec tests, then runs lint, then types beside
# the tests; it fails when any of them fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch_spec_tests.sh
bash scripts/ensure_redis.sh
bash scripts/ensure_prometheus.sh
bash scripts/ensure_crd_validators.sh
bash scripts/ensure_infinity.sh
.venv/bin/ruff check .
# mypy (a minute from a cold cache, on one core) runs beside the tests, which spend much
# of their time waiting on services and subprocesses; its verdict counts as before.
types=$(mktemp)
.venv/bin/mypy > "$types" 2>&1 &
mypy_pid=$!
# Two workers, one per core: most tests wait on a service, a subprocess or the model,
# so the run takes about 0.7 of a serial one (each worker loads the model once).
tests=0
.venv/bin/pytest -n 2 --dist worksteal "$@" || tests=$?
typed=0
wait "$mypy_pid" || typed=$?
cat "$types"
rm -f "$types"
if [ "$typed" -ne 0 ]; then
  echo "mypy failed (above)" >&2
  exit "$typed"
fi
exit "$tests"
