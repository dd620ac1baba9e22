#!/usr/bin/env bash
# Installs Graphile Worker, the peer of `make bench` (bench/graphile_peer.py), into
# bench/graphile/node_modules exactly as package-lock.json pins it. Idempotent: an install made
# from the same lock is kept (a stamp beside it records which).
set -Eeuo pipefail
cd "$(dirname "$0")"
for tool in node npm; do
  if ! command -v "$tool" >/dev/null; then
    echo "bench: the Graphile Worker peer needs Node.js and npm ($tool is missing):" \
      "apt-get install -y nodejs npm (as root)" >&2
    exit 1
  fi
done
stamp=node_modules/.installed-from-lock
cmp -s package-lock.json "$stamp" 2>/dev/null && exit 0
echo "bench: installing Graphile Worker from bench/graphile/package-lock.json" >&2
npm ci --no-audit --no-fund --loglevel=error >&2
cp package-lock.json "$stamp"
