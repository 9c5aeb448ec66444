#!/usr/bin/env bash
# make bench-sync: end-to-end HTTP syncs of 1,000 and 10,000 generated titles (first sync,
# unchanged re-sync, 10% changed) against the real server on a throwaway database of the
# embedded cluster. Prints ms, items/s and the server's peak RSS, then markdown rows for
# bench/RESULTS.md, with the seed stack's per-title pattern side by side (BENCH_SEED=0 skips
# it). BENCH_SIZES / BENCH_RUNS / SHELFSYNC_WORKERS override the defaults.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
bench_database "shelfsync_bench_$$"
bench_server 38100 SHELFSYNC_LOG_LEVEL=info

echo "bench-sync: $(bench_machine); server pid $SERVER_PID on port $PORT"
BENCH_URL="http://127.0.0.1:$PORT" BENCH_PID="$SERVER_PID" lua5.4 bench/bench_sync.lua

# Where the server's time went, per import (the route logs each phase).
echo
echo "server-side phases per import (ms), in order:"
grep -o '"msg":"sync import [^"]*' "$WORK/server.log" | sed -E 's/.*, ([0-9]+) titles \(([0-9]+) new.*ms: /\1 titles, \2 new: /'
# The enrichment queue is filled after the answer (not in the times above): its own lines.
echo "enrichment queue after the answer, per import that queued (ms):"
grep -o '"msg":"sync [0-9a-f-]*: [0-9]* titles queued[^"]*' "$WORK/server.log" |
  sed -E 's/.*: ([0-9]+) titles queued.*\(([0-9]+) due or new\); ms: /\1 of \2 queued: /' || true

# A library file (POST /api/import, issue 14) on a fresh server, so that its peak RSS is
# the import's own.
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
mv "$WORK/server.log" "$WORK/server-sync.log"
bench_server 38300 SHELFSYNC_LOG_LEVEL=info
echo
echo "bench-import: server pid $SERVER_PID on port $PORT"
BENCH_URL="http://127.0.0.1:$PORT" BENCH_PID="$SERVER_PID" lua5.4 bench/bench_import.lua
grep -o '"msg":"file import [^"]*' "$WORK/server.log" | sed 's/"msg":"//'
