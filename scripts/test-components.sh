#!/usr/bin/env bash
# Install the production components the suite starts by itself (tests/topologies.py), from the
# Debian mirror this machine's apt already uses: PgBouncer (pgbouncer), Debian's PostgreSQL
# server for the primary and its streaming standby (pg_basebackup) when none is installed, and
# pg_auto_failover for that server's major (postgresql-<major>-auto-failover: pg_autoctl); and
# Node.js with npm for the bench's Graphile Worker peer (tests/dev/test_bench_still_runs.py runs
# it; bench/graphile/install.sh installs Graphile itself).
# Idempotent: what is there is kept. Installing never starts a service (policy-rc.d).
set -Eeuo pipefail
trap 'echo "test-components: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

need=()
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
compgen -G '/usr/lib/postgresql/*/bin/pg_basebackup' >/dev/null || need+=(postgresql)
# pg_autoctl comes built for one major: the Debian server's (the newest, as the tests pick it),
# else the default one's that installing `postgresql` brings.
major=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
command -v pg_autoctl >/dev/null || need+=("postgresql-${major:-15}-auto-failover")
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "test-components: need ${need[*]} from Debian: apt-get install ${need[*]} (as root)" >&2
  exit 1
fi
echo "test-components: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Debian's packages start their service on install unless told not to; the tests start their own.
restore_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  restore_policy=1
fi
trap '[ $restore_policy -eq 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y --no-install-recommends "${need[@]}" >/dev/null \
  || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
