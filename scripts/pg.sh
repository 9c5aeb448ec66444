#!/usr/bin/env bash
# The embedded PostgreSQL cluster: scripts/pg.sh start|stop|status|url [DBNAME]
#
# Lives in var/pg (data, log, unix socket) and also listens on 127.0.0.1 on a free port
# outside the ephemeral range (see candidate_ports).
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

# TCP ports are taken from 15432-15631: below Linux's ephemeral range (32768-60999 by
# default, /proc/sys/net/ipv4/ip_local_port_range), so no outgoing connection of this or
# any other program can be holding the port when PostgreSQL binds it. The cluster's last
# port comes first, so its URL stays the same across restarts when it can.
PORT_LO=15432
PORT_HI=15631

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Free ports to try, best first: the last one, then the range from a random offset (runs
# in sibling checkouts then rarely try the same port at the same moment).
candidate_ports() {
  local last="" p i span=$((PORT_HI - PORT_LO + 1)) off=$((RANDOM % (PORT_HI - PORT_LO + 1)))
  [[ -f "$BASE/port" ]] && last=$(cat "$BASE/port")
  if [[ "$last" =~ ^[0-9]+$ ]] && (( last >= PORT_LO && last <= PORT_HI )) && ! port_in_use "$last"; then
    echo "$last"
  fi
  for ((i = 0; i < span; i++)); do
    p=$((PORT_LO + (off + i) % span))
    [[ "$p" == "$last" ]] || port_in_use "$p" || echo "$p"
  done
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

# Starts on a free port; another program can still take that port between the check and
# PostgreSQL's bind, so a failed bind tries the next candidate (at most 5 times).
start() {
  init
  if running; then return; fi
  local p tries=0
  for p in $(candidate_ports); do
    as_pg sh -c "echo $p > '$BASE/port'"
    if as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$BASE/log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$p -c unix_socket_directories='$BASE/run' -c max_connections=300" \
        start >/dev/null 9>&-; then    # the server must not inherit (and hold) our lock
      echo "pg.sh: PostgreSQL running in $DATA (socket $BASE/run, 127.0.0.1:$p)"
      return
    fi
    tail -n 3 "$BASE/log" >&2 || true
    if ! tail -n 20 "$BASE/log" | grep -qiE "could not (bind|create listen)|address already in use"; then
      echo "pg.sh: PostgreSQL did not start (log: $BASE/log)" >&2; exit 1
    fi
    tries=$((tries + 1))
    (( tries < 5 )) || break
    echo "pg.sh: port $p was taken meanwhile; trying another" >&2
  done
  echo "pg.sh: no port in $PORT_LO-$PORT_HI could be bound (log: $BASE/log)" >&2; exit 1
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
