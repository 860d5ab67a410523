#!/usr/bin/env bash
# Installs the system packages the test suite needs (Debian), or names exactly what is missing.
set -euo pipefail
# Each entry: "<command or file that proves it is installed>:<Debian package>".
PREREQS=(
  "dockerd:docker.io"
  "/bin/busybox:busybox-static"
  "chromium:chromium"
  "redis-server:redis-server"  # tests/stress outages and bench/load.py start private instances
  "/usr/lib/postgresql:postgresql"  # tests/stress outages start a private cluster (initdb, pg_ctl)
  "wrk:wrk"                    # bench/load.py
)
missing=()
for entry in "${PREREQS[@]}"; do
  probe=${entry%%:*}
  pkg=${entry##*:}
  if [[ $probe == /* ]]; then [ -e "$probe" ] || missing+=("$pkg"); else command -v "$probe" >/dev/null || missing+=("$pkg"); fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "==> installing Debian packages: ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "error: the tests need these Debian packages: ${missing[*]} (run as root with apt-get, or install them)" >&2
  exit 1
fi
