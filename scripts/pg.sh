#!/usr/bin/env bash
# The embedded PostgreSQL cluster: scripts/pg.sh start|stop|status|url [DBNAME]
#
# Lives in var/pg (data, log, unix socket) and also listens on 127.0.0.1 on a free port.
# PostgreSQL refuses to run as root: as root the cluster runs as the `postgres` user; if
# that user cannot reach var/ (a checkout under a private folder), the cluster lives in
# /var/tmp/shelfsync-pg-<hash of the checkout> instead and var/pg/location says where.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
mkdir -p "$ROOT/var/pg"
# One start/stop at a time per checkout (several test runs may start together).
exec 9>"$ROOT/var/pg/.lock"
flock 9

as_pg() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

base_dir() {
  if [[ -f "$ROOT/var/pg/location" ]]; then cat "$ROOT/var/pg/location"; return; fi
  local base="$ROOT/var/pg/cluster"
  if [[ $(id -u) -eq 0 ]]; then
    mkdir -p "$base"; chown postgres: "$base"
    if ! runuser -u postgres -- test -w "$base"; then
      rmdir "$base" 2>/dev/null || true
      base="/var/tmp/shelfsync-pg-$(echo -n "$ROOT" | sha256sum | cut -c1-12)"
      mkdir -p "$base"; chown postgres: "$base"
    fi
  fi
  # A unix socket path must stay under 108 bytes.
  if (( ${#base} > 80 )); then
    base="/tmp/shelfsync-pg-$(echo -n "$ROOT" | sha256sum | cut -c1-12)"
    mkdir -p "$base"; [[ $(id -u) -ne 0 ]] || chown postgres: "$base"
  fi
  echo "$base" > "$ROOT/var/pg/location"
  echo "$base"
}

free_port() {
  local p
  for p in $(seq 55432 55632); do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  echo "pg.sh: no free port in 55432-55632" >&2; exit 1
}

BASE="$(base_dir)"
DATA="$BASE/data"

running() { [[ -f "$DATA/postmaster.pid" ]] && as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }
port() { cat "$BASE/port"; }

init() {
  [[ -f "$DATA/PG_VERSION" ]] && return
  [[ -n "$PGBIN" ]] || { echo "pg.sh: PostgreSQL is not installed (make deps)" >&2; exit 1; }
  as_pg "$PGBIN/initdb" -D "$DATA" -U shelfsync --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  as_pg mkdir -p "$BASE/run"
}

start() {
  init
  if running; then return; fi
  local p; p=$(free_port)
  as_pg sh -c "echo $p > '$BASE/port'"
  as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$BASE/log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$p -c unix_socket_directories='$BASE/run' -c max_connections=300" \
    start >/dev/null 9>&-    # the server must not inherit (and hold) our lock
  echo "pg.sh: PostgreSQL running in $DATA (socket $BASE/run, 127.0.0.1:$p)"
}

case "${1:-}" in
  start) start ;;
  stop) if running; then as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 9>&-; fi ;;
  status) if running; then echo "running on port $(port)"; else echo "stopped"; exit 3; fi ;;
  url) echo "postgresql://shelfsync@/${2:-shelfsync}?host=$BASE/run&port=$(port)" ;;
  tcp-url) echo "postgresql://shelfsync@127.0.0.1:$(port)/${2:-shelfsync}" ;;
  datadir) echo "$DATA" ;;
  pgbin) echo "$PGBIN" ;;
  *) echo "usage: scripts/pg.sh start|stop|status|url [db]|tcp-url [db]|datadir|pgbin" >&2; exit 2 ;;
esac
