# Shared by the bench-* scripts (source it): a throwaway migrated database on the embedded
# cluster, the real server on a free loopback port, and cleanup of both on exit.
#   bench_database NAME          creates and migrates database NAME; exports DATABASE_URL
#   bench_server FIRST_PORT ...  starts build/shelfsync serve (extra VAR=value arguments go
#                                into its environment); sets PORT and SERVER_PID
#   bench_machine                one line: date, cores, load, CPU model, PostgreSQL version
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/pg.sh start >/dev/null
PGBIN=$(scripts/pg.sh pgbin)
ADMIN=$(scripts/pg.sh url postgres)
WORK="$ROOT/var/bench-$$"
mkdir -p "$WORK"
BENCH_DB=""
SERVER_PID=""
PORT=""

bench_cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ -n "$BENCH_DB" ]]; then
    "$PGBIN/psql" -X "$ADMIN" -qc "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap bench_cleanup EXIT

bench_database() {
  BENCH_DB="$1"
  "$PGBIN/psql" -X "$ADMIN" -qc "CREATE DATABASE $BENCH_DB" >/dev/null
  export DATABASE_URL="$(scripts/pg.sh url "$BENCH_DB")"
  "${SHELFSYNC_BUILD:-build}/shelfsync" migrate 2>"$WORK/migrate.log" || { cat "$WORK/migrate.log"; exit 1; }
}

# Another process may take a port between the probe and the bind: then the next is tried.
bench_server() {
  local first=$1 p
  shift
  for p in $(seq "$first" $((first + 200))); do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    env SHELFSYNC_LISTEN="127.0.0.1:$p" SHELFSYNC_PUBLIC_URL="http://127.0.0.1:$p" \
        SHELFSYNC_SECRET="bench-secret-0123456789abcdef0123456789abcdef" SHELFSYNC_DEV_LOGIN=1 \
        "$@" build/shelfsync serve >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
      curl -fs "http://127.0.0.1:$p/healthz" >/dev/null 2>&1 && { PORT=$p; return 0; }
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null || ! grep -q "cannot listen" "$WORK/server.log"; then
      cat "$WORK/server.log"; exit 1
    fi
    SERVER_PID=""
  done
  echo "no free port from $first" >&2
  exit 1
}

bench_machine() {
  echo "$(date -u +%Y-%m-%d), $(nproc) cores (load $(cut -d" " -f1-3 /proc/loadavg)), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')"
}
