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
# mypy runs beside the tests; its verdict counts as before. Its cache lives outside the
# checkout, so a clean clone checks in seconds what takes 70 s of a core from a cold
# cache (mypy revalidates every cached module against its source).
types=$(mktemp)
MYPY_CACHE_DIR="${MYPY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cdc-sidecar/mypy}" .venv/bin/mypy > "$types" 2>&1 &
mypy_pid=$!
# Three workers on two cores: the tests wait on services, subprocesses and polls for
# about a quarter of a two-worker run (17 CPU-minutes in 11 minutes on an AVX2-only
# AMD EPYC, where the model is slower); a third worker fills that time. With three
# workers and the services they start sharing two cores, torch's and OpenMP's second
# thread per process only adds synchronisation and spinning: one thread each.
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
tests=0
.venv/bin/pytest -n 3 --dist worksteal "$@" || tests=$?
typed=0
wait "$mypy_pid" || typed=$?
cat "$types"
rm -f "$types"
if [ "$typed" -ne 0 ]; then
  echo "mypy failed (above)" >&2
  exit "$typed"
fi
exit "$tests"
