#!/usr/bin/env bash
# make bench-enrich: the metadata fetcher against the local Audnexus stand-in answering in
# 20 ms (spec/support/audnexus/provider.mjs), with metadata_rate_per_s out of the way:
#   1. 10,000 queued titles: titles enriched per second, the server's CPU time per title;
#   2. a 10,000-title first sync with the fetcher idle (no provider configured) and while
#      it works through another 10,000 queued titles (median of 3 each).
# BENCH_TITLES, BENCH_RUNS, BENCH_CONCURRENCY (default 16), BENCH_LATENCY_MS override.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
bench_database "shelfsync_bench_$$"

LATENCY=${BENCH_LATENCY_MS:-20}
(cd spec/support/audnexus && exec node provider.mjs --latency-ms "$LATENCY") >"$WORK/provider.out" 2>&1 &
PROVIDER_PID=$!
trap 'kill $PROVIDER_PID 2>/dev/null || true; bench_cleanup' EXIT
for _ in $(seq 1 100); do grep -q '"port"' "$WORK/provider.out" 2>/dev/null && break; sleep 0.1; done
PROVIDER_URL=$(sed -nE 's/.*"url":"([^"]+)".*/\1/p' "$WORK/provider.out")
[[ -n "$PROVIDER_URL" ]] || { cat "$WORK/provider.out"; exit 1; }

# The server-side phases of each sync (the route logs them); total includes the queueing.
phases() {
  grep -o '"msg":"sync import [^"]*' "$WORK/server.log" | sed -E 's/.*\); ms: /  ms: /'
}

echo "bench-enrich: $(bench_machine); provider $PROVIDER_URL answering in $LATENCY ms"
ENRICH_ENV=(SHELFSYNC_LOG_LEVEL=info SHELFSYNC_METADATA_PROVIDER_URL="$PROVIDER_URL"
            SHELFSYNC_METADATA_RATE_PER_S=100000 SHELFSYNC_METADATA_CONCURRENCY="${BENCH_CONCURRENCY:-16}"
            SHELFSYNC_METADATA_POLL_MS=100)

# The fetcher idle: no provider, so nothing is queued or fetched.
bench_server 38300 SHELFSYNC_LOG_LEVEL=info SHELFSYNC_METADATA_PROVIDER_URL=
BENCH_URL="http://127.0.0.1:$PORT" BENCH_PID="$SERVER_PID" BENCH_MODE=sync BENCH_SALT=1 lua5.4 bench/bench_enrich.lua
phases
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""

bench_server 38300 "${ENRICH_ENV[@]}"
BENCH_URL="http://127.0.0.1:$PORT" BENCH_PID="$SERVER_PID" BENCH_MODE=enrich BENCH_SALT=2 lua5.4 bench/bench_enrich.lua
BENCH_URL="http://127.0.0.1:$PORT" BENCH_PID="$SERVER_PID" BENCH_MODE=sync BENCH_SALT=3 BENCH_BACKGROUND=1 lua5.4 bench/bench_enrich.lua
echo "provider: $(curl -s "$PROVIDER_URL/control/state" | sed -nE 's/.*"total":([0-9]+).*"max_in_flight":([0-9]+).*/\1 requests, at most \2 at once/p')"
phases
