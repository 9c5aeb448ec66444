#!/usr/bin/env bash
# make bench-api: the library read API of one user with 5,000 titles under wrk (first page
# of /api/library, two searches, /api/dashboard; 15 s each), beside the ceiling of the same
# SQL under pgbench on the same database, as a ratio. Runs the real server on a throwaway
# database of the embedded cluster and prints markdown rows for bench/RESULTS.md.
# BENCH_TITLES / BENCH_SECONDS / BENCH_CONNECTIONS / SHELFSYNC_WORKERS override the defaults
# (5,000 titles, 15 s, as many wrk connections and pgbench clients as workers, one worker
# per core).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

command -v wrk >/dev/null || { echo "bench-api: wrk is missing (apt-get install wrk)" >&2; exit 1; }
command -v pgbench >/dev/null || { echo "bench-api: pgbench is missing (postgresql-contrib)" >&2; exit 1; }

scripts/pg.sh start >/dev/null
PGBIN=$(scripts/pg.sh pgbin)
ADMIN=$(scripts/pg.sh url postgres)
DB="shelfsync_bench_api_$$"
WORK="$ROOT/var/bench-api-$$"
mkdir -p "$WORK"
SERVER_PID=""

cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  "$PGBIN/psql" "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$PGBIN/psql" "$ADMIN" -qc "CREATE DATABASE $DB" >/dev/null
export DATABASE_URL="$(scripts/pg.sh url "$DB")"
build/shelfsync migrate 2>"$WORK/migrate.log" || { cat "$WORK/migrate.log"; exit 1; }

# The server on the first free loopback port of a range (another run may take a port
# between the check and the bind: then the next one).
# One worker per core by default (the server's own default is two): the database runs on
# the same cores, every worker holds one database connection, and more workers than cores
# only add run-queue waits to the latencies (measured: 4 workers on 2 cores, p99 x4-8 for
# the same throughput). SHELFSYNC_WORKERS=4 measures the server's default.
WORKERS="${SHELFSYNC_WORKERS:-$(nproc)}"
PORT=""
for p in $(seq 38400 38600); do
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
  SHELFSYNC_LISTEN="127.0.0.1:$p" SHELFSYNC_PUBLIC_URL="http://127.0.0.1:$p" \
  SHELFSYNC_SECRET="bench-secret-0123456789abcdef0123456789abcdef" SHELFSYNC_DEV_LOGIN=1 \
  SHELFSYNC_WORKERS="$WORKERS" SHELFSYNC_LOG_LEVEL=warn \
    build/shelfsync serve >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$p/healthz" >/dev/null 2>&1 && { PORT=$p; break; }
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n "$PORT" ]] && break
  if kill -0 "$SERVER_PID" 2>/dev/null || ! grep -q "cannot listen" "$WORK/server.log"; then
    cat "$WORK/server.log"; exit 1
  fi
  SERVER_PID=""
done
[[ -n "$PORT" ]] || { echo "bench-api: no free port" >&2; exit 1; }

echo "bench-api: $(nproc) cores, PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), $WORKERS workers, server pid $SERVER_PID on port $PORT"
BENCH_ROOT="$ROOT" BENCH_URL="http://127.0.0.1:$PORT" BENCH_WORK="$WORK" BENCH_WORKERS="$WORKERS" \
  lua5.4 bench/bench_api.lua
