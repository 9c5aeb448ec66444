#!/usr/bin/env bash
# make bench-web: the web app in headless Chromium against the real server, one user with
# 5,000 titles: navigation -> the first 24 covers (or placeholders) drawn on /library, the
# redraw after a search, and the JS + CSS bytes a page loads (gzip). Prints markdown rows
# for bench/RESULTS.md. BENCH_TITLES / BENCH_RUNS override 5,000 titles / 7 runs.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
bench_database "shelfsync_bench_web_$$"
WORKERS="${SHELFSYNC_WORKERS:-$(nproc)}"
bench_server 38600 SHELFSYNC_WORKERS="$WORKERS" SHELFSYNC_LOG_LEVEL=warn

echo "bench-web: $(bench_machine); $WORKERS workers, server pid $SERVER_PID on port $PORT"
LUA_PATH="$ROOT/?.lua;$ROOT/lua/?.lua;;" LUA_CPATH="$ROOT/build/?.so;;" \
  lua5.4 - "${BENCH_TITLES:-5000}" > "$WORK/library.json" <<'LUA'
rawset(_G, "host", setmetatable({ config = {} }, { __index = require("host") }))
local fx = require("spec.support.library_fixture")
io.write(fx.wire(fx.generate{ count = tonumber(arg[1]), seed = 5, asin_prefix = "B5" }))
LUA
SHELFSYNC_TEST_DIR="$WORK" node bench/bench_web.mjs "http://127.0.0.1:$PORT" "$WORK/library.json" "${BENCH_RUNS:-7}"
