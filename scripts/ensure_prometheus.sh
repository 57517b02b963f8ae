#!/usr/bin/env bash
# The alert-rule tests (tests/deploy/test_alert_rules.py) need promtool. Install
# Debian's `prometheus` package (it ships /usr/bin/promtool) when promtool is
# missing; do nothing when it is there. The package's postinst must not leave a
# Prometheus daemon running (it would hold port 9090 for the rest of the run):
# a policy-rc.d forbids invoke-rc.d to start services during the install, and
# any prometheus process that appeared anyway is stopped afterwards.
set -euo pipefail
command -v promtool >/dev/null && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then
    sudo=(sudo -n)
  else
    echo "error: promtool is missing and installing the 'prometheus' package needs root (run: apt-get install prometheus)" >&2
    exit 1
  fi
fi

policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# scripts/ensure_prometheus.sh: no service starts while it installs prometheus\nexit 101\n' |
    "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then "${sudo[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT

before=$(pgrep -x prometheus || true)
export DEBIAN_FRONTEND=noninteractive
apt_install() {
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold prometheus >/tmp/ensure_prometheus.log 2>&1
}
if ! apt_install; then
  # A fresh machine may have no package lists yet (or stale ones).
  "${sudo[@]}" apt-get update -qq >>/tmp/ensure_prometheus.log 2>&1 || true
  if ! apt_install; then
    cat /tmp/ensure_prometheus.log >&2
    echo "error: installing the 'prometheus' package (for promtool) failed; see above" >&2
    exit 1
  fi
fi

# With systemd as init, policy-rc.d is ignored by deb-systemd-invoke on some
# releases: stop and disable the unit so it does not hold port 9090.
if [ -d /run/systemd/system ]; then
  "${sudo[@]}" systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
fi
# Stop only daemons that this install started (not one that ran before).
for pid in $(pgrep -x prometheus || true); do
  if ! grep -qw "$pid" <<<"$before"; then
    "${sudo[@]}" kill "$pid" 2>/dev/null || true
  fi
done

command -v promtool >/dev/null || {
  echo "error: the 'prometheus' package is installed but promtool is not on PATH" >&2
  exit 1
}
