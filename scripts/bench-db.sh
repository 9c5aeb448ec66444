#!/usr/bin/env bash
# make bench-db: the batched catalog upsert against one statement per row (issue 3), over the
# embedded cluster's unix socket and over TCP on 127.0.0.1, in a throwaway migrated database.
# Prints the figures and a machine line to paste into bench/RESULTS.md.
# BENCH_ROWS, BENCH_RUNS, BENCH_PER_ROW_RUNS and BENCH_VARIANTS=0 tune bench/bench_db.lua.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
BUILD="${SHELFSYNC_BUILD:-build}"
bench_database "shelfsync_bench_$$"
SOCKET_URL="$DATABASE_URL"
TCP_URL="$(scripts/pg.sh tcp-url "$BENCH_DB")"

echo "machine: $(bench_machine)"
LUA_PATH="$ROOT/?.lua;;" LUA_CPATH="$ROOT/$BUILD/?.so;;" lua5.4 bench/bench_db.lua "$SOCKET_URL" "$TCP_URL"
