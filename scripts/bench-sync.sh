#!/usr/bin/env bash
# make bench-sync: end-to-end HTTP syncs of 1,000 and 10,000 generated titles (first sync,
# unchanged re-sync, 10% changed) against the real server on a throwaway database of the
# embedded cluster. Prints ms, items/s and the server's peak RSS, then markdown rows for
# bench/RESULTS.md. BENCH_SIZES / BENCH_RUNS / SHELFSYNC_WORKERS override the defaults.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

scripts/pg.sh start >/dev/null
PGBIN=$(scripts/pg.sh pgbin)
ADMIN=$(scripts/pg.sh url postgres)
DB="shelfsync_bench_$$"
WORK="$ROOT/var/bench-$$"
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

# Start the server on a free loopback port (another process may take a port between the
# probe and the bind: then the next one is tried).
PORT=""
for p in $(seq 38100 38300); do
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
  SHELFSYNC_LISTEN="127.0.0.1:$p" SHELFSYNC_PUBLIC_URL="http://127.0.0.1:$p" \
  SHELFSYNC_SECRET="bench-secret-0123456789abcdef0123456789abcdef" SHELFSYNC_DEV_LOGIN=1 \
  SHELFSYNC_LOG_LEVEL=info \
    build/shelfsync serve >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    if curl -fs "http://127.0.0.1:$p/healthz" >/dev/null 2>&1; then PORT=$p; break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n "$PORT" ]] && break
  if ! grep -q "cannot listen" "$WORK/server.log"; then cat "$WORK/server.log"; exit 1; fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
done
[[ -n "$PORT" ]] || { echo "bench-sync: could not start the server" >&2; exit 1; }

echo "bench-sync: $(nproc) cores, PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), server pid $SERVER_PID on port $PORT"
BENCH_URL="http://127.0.0.1:$PORT" BENCH_PID="$SERVER_PID" lua5.4 bench/bench_sync.lua

# Where the server's time went, per import (the route logs each phase).
echo
echo "server-side phases per import (ms), in order:"
grep -o '"msg":"sync import [^"]*' "$WORK/server.log" | sed -E 's/.*, ([0-9]+) titles \(([0-9]+) new.*ms: /\1 titles, \2 new: /'
