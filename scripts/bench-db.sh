#!/usr/bin/env bash
# make bench-db: the batched catalog upsert against one statement per row (issue 3), over the
# embedded cluster's unix socket and over TCP on 127.0.0.1, in a throwaway migrated database.
# Prints the figures and a machine line to paste into bench/RESULTS.md.
# BENCH_ROWS, BENCH_RUNS, BENCH_PER_ROW_RUNS and BENCH_VARIANTS=0 tune bench/bench_db.lua.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BUILD="${SHELFSYNC_BUILD:-build}"

scripts/pg.sh start >/dev/null
PGBIN="$(scripts/pg.sh pgbin)"
ADMIN="$(scripts/pg.sh url postgres)"
DB="shelfsync_bench_$$"

cleanup() { "$PGBIN/psql" -X "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true; }
trap cleanup EXIT

"$PGBIN/psql" -X "$ADMIN" -qc "CREATE DATABASE $DB" >/dev/null
SOCKET_URL="$(scripts/pg.sh url "$DB")"
TCP_URL="$(scripts/pg.sh tcp-url "$DB")"
DATABASE_URL="$SOCKET_URL" "$BUILD/shelfsync" migrate 2>/dev/null

echo "machine: $(date -u +%Y-%m-%d), $(nproc) cores (load $(cut -d" " -f1-3 /proc/loadavg)), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')"
LUA_PATH="$ROOT/?.lua;;" LUA_CPATH="$ROOT/$BUILD/?.so;;" lua5.4 bench/bench_db.lua "$SOCKET_URL" "$TCP_URL"
