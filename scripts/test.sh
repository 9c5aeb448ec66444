#!/usr/bin/env bash
# make test [SPEC=file]: build, the embedded cluster, a throwaway migrated database, then
# busted over spec/ (spec/browser drives headless Chromium: each step of its journey is
# one test). The last line is "N passed, N failed".
# SHELFSYNC_ASAN=1 (make test-asan) builds with ASan + UBSan into build-asan/ and fails the
# run if any sanitizer report was written.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

if [[ "${SHELFSYNC_ASAN:-0}" == 1 ]]; then
  export SHELFSYNC_BUILD="build-asan"
  make -s build BUILD=build-asan SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" CFLAGS="-O1 -g" || exit 1
else
  export SHELFSYNC_BUILD="build"
  make -s build || exit 1
fi

scripts/pg.sh start >/dev/null || exit 1
PGBIN=$(scripts/pg.sh pgbin)
RUN_ID="$$"
DB="shelfsync_test_$RUN_ID"
export SHELFSYNC_TEST_DIR="$ROOT/var/test-$RUN_ID"
mkdir -p "$SHELFSYNC_TEST_DIR"
ADMIN=$(scripts/pg.sh url postgres)

cleanup() {
  # Servers a spec left behind (it crashed before its teardown).
  for f in "$SHELFSYNC_TEST_DIR"/*.pid; do
    [[ -f "$f" ]] && kill -9 "$(cat "$f")" 2>/dev/null
  done
  "$PGBIN/psql" "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
  [[ "${KEEP_TEST_DIR:-0}" == 1 ]] || rm -rf "$SHELFSYNC_TEST_DIR"
}
trap cleanup EXIT

"$PGBIN/psql" "$ADMIN" -qc "CREATE DATABASE $DB" >/dev/null || exit 1
export DATABASE_URL="$(scripts/pg.sh url "$DB")"
export SHELFSYNC_PG_ADMIN_URL="$ADMIN"
export SHELFSYNC_PGBIN="$PGBIN"
"$SHELFSYNC_BUILD/shelfsync" migrate 2>"$SHELFSYNC_TEST_DIR/migrate.log" || { cat "$SHELFSYNC_TEST_DIR/migrate.log"; exit 1; }

export LUA_PATH="$ROOT/?.lua;$ROOT/?/init.lua;;"
export LUA_CPATH="$ROOT/$SHELFSYNC_BUILD/?.so;;"
if [[ "${SHELFSYNC_ASAN:-0}" == 1 ]]; then
  # Commands the specs start drop it again (spec/support/helpers.lua: exec, run).
  # host.so is loaded into the (uninstrumented) lua5.4 interpreter: the runtime must come first.
  export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
  export ASAN_OPTIONS="detect_leaks=0:log_path=$SHELFSYNC_TEST_DIR/asan"
  export UBSAN_OPTIONS="print_stacktrace=1:log_path=$SHELFSYNC_TEST_DIR/ubsan"
fi

specs=("$@")
((${#specs[@]})) || specs=(spec/unit spec/integration spec/browser)
OUT="$SHELFSYNC_TEST_DIR/tap.txt"
lua5.4 /usr/bin/busted --lpath="$ROOT/?.lua" -o TAP "${specs[@]}" 2>&1 | tee "$OUT"
unset LD_PRELOAD

passed=$(grep -cE '^ok [0-9]+' "$OUT")
failed=$(grep -cE '^not ok [0-9]+' "$OUT")
if ! grep -qE '^1\.\.[0-9]+' "$OUT"; then
  echo "busted did not finish (see above)"
  failed=$((failed + 1))
fi
reports=$(ls "$SHELFSYNC_TEST_DIR"/asan.* "$SHELFSYNC_TEST_DIR"/ubsan.* "$SHELFSYNC_TEST_DIR"/server-asan.* 2>/dev/null)
if [[ -n "$reports" ]]; then
  echo "sanitizer reports:"
  for r in $reports; do echo "== $r"; cat "$r"; done
  failed=$((failed + 1))
fi
echo
echo "$passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
