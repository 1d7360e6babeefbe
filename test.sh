#!/usr/bin/env bash
# Install, build and run every test: unit, integration (real Mosquitto on
# loopback, real RocksDB in temp dirs) and fuzz-corpus replays; the whole
# suite again under ASan+UBSan; then each fuzz target under libFuzzer for
# CG_FUZZ_SECONDS (default 30) seconds; then the container smoke test
# (containers/smoke.sh: builds the image with podman, runs the compose stack,
# sends a crash through it). Benchmarks: tests/bench/run.sh.
set -euo pipefail
cd "$(dirname "$0")"
./install-deps.sh
jobs=$(nproc)
passed=0 failed=0

suite() { # NAME BUILD_DIR CMAKE_ARGS...
  local name=$1 dir=$2
  shift 2
  echo "== $name: configure and build in $dir"
  cmake -S . -B "$dir" "$@" >"$dir.cmake.log" 2>&1 || { cat "$dir.cmake.log"; return 1; }
  cmake --build "$dir" -j "$jobs" >"$dir.build.log" 2>&1 || { tail -50 "$dir.build.log"; return 1; }
  echo "== $name: ctest"
  local out rc=0
  out=$(cd "$dir" && ctest -j "$jobs" --output-on-failure --timeout 900 2>&1) || rc=$?
  echo "$out" | tail -40
  local f t
  f=$(echo "$out" | sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\1/p')
  t=$(echo "$out" | sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\2/p')
  passed=$((passed + ${t:-0} - ${f:-0}))
  failed=$((failed + ${f:-1}))
  return $rc
}

rc=0
suite "tests" build -DCMAKE_BUILD_TYPE=RelWithDebInfo || rc=1
suite "tests under ASan+UBSan" build-asan -DCG_SANITIZE=ON -DCG_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug || rc=1

echo "== fuzzing (libFuzzer, ${CG_FUZZ_SECONDS:-30} s per target)"
if CC=clang cmake -S . -B build-fuzz -DCG_FUZZ=ON -DCG_SANITIZE=ON -DCG_BENCH=OFF >build-fuzz.cmake.log 2>&1 &&
  cmake --build build-fuzz -j "$jobs" >build-fuzz.build.log 2>&1; then
  for t in fuzz_chunk fuzz_reassembly fuzz_decode_zephyr fuzz_decode_minidump fuzz_decode_elf fuzz_config fuzz_admin_query; do
    work=$(mktemp -d)
    cp tests/fuzz/corpus/$t/* "$work/"
    if ./build-fuzz/tests/$t -max_total_time="${CG_FUZZ_SECONDS:-30}" -max_len=4096 \
      -print_final_stats=1 "$work" >"build-fuzz/$t.log" 2>&1; then
      echo "fuzz $t: $(grep -E 'stat::number_of_executed_units' "build-fuzz/$t.log" | awk '{print $2}') runs, no crash"
      passed=$((passed + 1))
    else
      echo "fuzz $t: FAILED"; tail -40 "build-fuzz/$t.log"
      failed=$((failed + 1)); rc=1
    fi
    rm -rf "$work"
  done
else
  tail -30 build-fuzz.build.log build-fuzz.cmake.log
  failed=$((failed + 1)); rc=1
fi
echo "== container smoke test (image build, compose stack, a crash end to end)"
if ./containers/smoke.sh >build/container-smoke.log 2>&1; then
  tail -1 build/container-smoke.log
  passed=$((passed + 1))
else
  tail -60 build/container-smoke.log
  failed=$((failed + 1)); rc=1
fi
echo "$passed passed, $failed failed"
exit $rc
