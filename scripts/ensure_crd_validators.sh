#!/usr/bin/env bash
# The Prometheus Operator resources in deploy/kubernetes/ are validated against the
# schemas shipped in the npm package @kubernetes-models/prometheus-operator
# (tests/deploy/test_operator_resources.py). Installs it, as pinned by
# tests/deploy/crd/package-lock.json, with the machine's npm; does nothing when the
# installed tree already matches the lock file.
set -euo pipefail
cd "$(dirname "$0")/../tests/deploy/crd"
command -v npm >/dev/null || {
  echo "error: npm is missing (Node.js 20+ with npm is needed to validate deploy/kubernetes/)" >&2
  exit 1
}
stamp=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.installed 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
# --engine-strict=false: the packages declare node >=22 but need nothing newer than
# the machine's Node.js 20 (ES modules and static class blocks).
npm ci --no-audit --no-fund --loglevel=error --engine-strict=false >/dev/null
echo "$stamp" > node_modules/.installed
