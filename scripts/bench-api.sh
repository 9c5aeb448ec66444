#!/usr/bin/env bash
# make bench-api: the library read API of one user with 5,000 titles under wrk (first page
# of /api/library, two searches, /api/dashboard; 15 s each), beside the ceiling of the same
# SQL under pgbench on the same database, as a ratio. Runs the real server on a throwaway
# database of the embedded cluster and prints markdown rows for bench/RESULTS.md.
# BENCH_TITLES / BENCH_SECONDS / BENCH_CONNECTIONS / SHELFSYNC_WORKERS override the defaults
# (BENCH_AB / BENCH_ROUNDS: an A/B of two server configurations, see below)
# (5,000 titles, 15 s, as many wrk connections and pgbench clients as workers, one worker
# per core).
set -euo pipefail
command -v wrk >/dev/null || { echo "bench-api: wrk is missing (apt-get install wrk)" >&2; exit 1; }
command -v pgbench >/dev/null || { echo "bench-api: pgbench is missing (postgresql-contrib)" >&2; exit 1; }

source "$(dirname "$0")/bench-lib.sh"
bench_database "shelfsync_bench_api_$$"

# One worker per core by default (the server's own default is two): the database runs on
# the same cores, every worker holds one database connection, and more workers than cores
# only add run-queue waits to the latencies (measured: 4 workers on 2 cores, p99 x4-8 for
# the same throughput). SHELFSYNC_WORKERS=4 measures the server's default.
WORKERS="${SHELFSYNC_WORKERS:-$(nproc)}"

# BENCH_AB="VAR=value ...": a second server on the same database with that environment
# (e.g. SHELFSYNC_PREPARED_STATEMENTS=0), driven in turn with the first, BENCH_ROUNDS times
# per endpoint, so that both see the same load on this shared machine.
URL_B=""
if [[ -n "${BENCH_AB:-}" ]]; then
  # shellcheck disable=SC2086 # BENCH_AB is a list of VAR=value words
  bench_server 38500 SHELFSYNC_WORKERS="$WORKERS" SHELFSYNC_LOG_LEVEL=warn $BENCH_AB
  B_PID=$SERVER_PID
  URL_B="http://127.0.0.1:$PORT"
  mv "$WORK/server.log" "$WORK/server-b.log"
  trap 'kill "$B_PID" 2>/dev/null; bench_cleanup' EXIT
fi
bench_server 38400 SHELFSYNC_WORKERS="$WORKERS" SHELFSYNC_LOG_LEVEL=warn

echo "bench-api: $(bench_machine); $WORKERS workers, server pid $SERVER_PID on port $PORT${URL_B:+; B ($BENCH_AB) on $URL_B}"
BENCH_ROOT="$ROOT" BENCH_URL="http://127.0.0.1:$PORT" BENCH_URL_B="$URL_B" BENCH_WORK="$WORK" \
  BENCH_WORKERS="$WORKERS" lua5.4 bench/bench_api.lua
