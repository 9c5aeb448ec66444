#!/usr/bin/env bash
# make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="body jwt route pg_array import upload bulk"]: builds
# the libFuzzer targets in fuzz/ with clang (ASan + UBSan) into build-fuzz/ and runs each for
# FUZZ_SECONDS from its seed corpus (fuzz/corpus/<target>, read only; new inputs go to
# build-fuzz/corpus/<target>). Prints executions per target; exits 1 on any finding (the
# input is kept as build-fuzz/<target>-crash-*). Not part of make test.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TARGETS="${FUZZ_TARGETS:-body jwt route pg_array import upload bulk}"
OUT=build-fuzz
CC=clang
if ! command -v "$CC" >/dev/null || ! dpkg-query -W -f='${Status}' libclang-rt-dev 2>/dev/null | grep -q "ok installed"; then
  echo "fuzz: installing clang libclang-rt-dev (libFuzzer)"
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends clang libclang-rt-dev >/dev/null || exit 1
fi
# The Makefile's package list, so a library the host gains links here too.
PKGS="$(sed -n 's/^PKGS *:= *//p' Makefile)"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror $SAN $(pkg-config --cflags $PKGS)"
LIBS="$(pkg-config --libs $PKGS) -llua5.4-cjson -lpthread -lm"
mkdir -p "$OUT/obj"

# The host's objects, instrumented for coverage (main.c has its own main; luamod.c is the
# specs' module entry).
objs=()
for src in core/*.c; do
  name=$(basename "$src" .c)
  [[ "$name" == main || "$name" == luamod ]] && continue
  obj="$OUT/obj/$name.o"
  if [[ ! -f "$obj" || "$src" -nt "$obj" || -n "$(find core -name '*.h' -newer "$obj")" ]]; then
    $CC $CFLAGS -fsanitize=fuzzer-no-link -c -o "$obj" "$src" || exit 1
  fi
  objs+=("$obj")
done

failed=0
summary=()
for t in $TARGETS; do
  $CC $CFLAGS -fsanitize=fuzzer -o "$OUT/fuzz_$t" "fuzz/fuzz_$t.c" "${objs[@]}" $LIBS || exit 1
  mkdir -p "$OUT/corpus/$t"
  log="$OUT/fuzz_$t.log"
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=0 \
    "$OUT/fuzz_$t" -max_total_time="$SECONDS_EACH" -print_final_stats=1 -rss_limit_mb=2048 \
    -timeout=10 -artifact_prefix="$OUT/$t-" "$OUT/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
  rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
  if [[ $rc -ne 0 ]]; then
    failed=1
    echo "fuzz_$t: FOUND SOMETHING (see $log and $OUT/$t-*)"
    grep -E "ERROR|fuzz:|runtime error" "$log" | head -5
  fi
  summary+=("$(printf '%-10s %12s execs %8s/s  cov %6s  %s' "$t" "$execs" "$rate" "$cov" "$([[ $rc -eq 0 ]] && echo ok || echo FAIL)")")
done
echo
echo "fuzz: ${SECONDS_EACH} s per target"
printf '%s\n' "${summary[@]}"
exit $failed
