#!/usr/bin/env bash
# Fetches pymongo's own test tree (unified runner + change-stream spec JSON) from
# the sdist of exactly the installed pymongo version, into .spec/ (git-ignored).
# The spec tests prove mongosim's fidelity against the driver's own expectations,
# so they must match the driver version in use, and are never vendored.
# Idempotent: does nothing when the tree for this version is already present.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
VERSION=$("$PY" -c 'import pymongo; print(pymongo.version)')
DEST=.spec/pymongo-$VERSION
if [ -f "$DEST/test/asynchronous/unified_format.py" ]; then
    exit 0
fi
mkdir -p .spec/download
"$PY" -m pip download --quiet --no-binary :all: --no-deps \
    --dest .spec/download "pymongo==$VERSION"
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
tar -xzf ".spec/download/pymongo-$VERSION.tar.gz" -C "$DEST.tmp" --strip-components=1 \
    "pymongo-$VERSION/test"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
