#!/usr/bin/env bash
# Run the benchmarks against a real Mosquitto on a free loopback port.
# usage: tests/bench/run.sh [BUILD_DIR]   (default: build)
# Environment: CG_BENCH_CHUNKS (default 100000), CG_BENCH_OPEN (default 10000),
# CG_BENCH_STORM_DEVICES (default 10000), CG_BENCH_E2E_DUMPS (default 2000).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
export CG_SRC=$src CG_BIN=$build/gateway CG_TEST_TMP=${CG_TEST_TMP:-/tmp} CRASHGATE_PLUGIN_DIR=$build/plugins
source "$src/tests/integration/lib.sh"
cg_setup mosquitto
# The benchmark measures throughput, not authorisation: the shipped broker
# configuration with its queue limits, but anonymous clients may use the
# whole crashgate tree (an ACL's lines before any `user` apply to them).
sed -e 's/^allow_anonymous .*/allow_anonymous true/' "$src/config/mosquitto.conf" >"$CG_T/bench-mosquitto.conf"
echo "topic readwrite crashgate/#" >"$CG_T/bench.acl"
CG_BROKER_CONF=$CG_T/bench-mosquitto.conf CG_BROKER_ACL=$CG_T/bench.acl cg_start_broker
"$build/tests/bench_ingest" --uri "$CG_BROKER_URI" --crashgated "${CG_BENCH_GW:-$CG_BIN/crashgated}" --workdir "$CG_T" \
  --chunks "${CG_BENCH_CHUNKS:-100000}" --open-dumps "${CG_BENCH_OPEN:-10000}"
"$build/tests/bench_storm" --uri "$CG_BROKER_URI" --crashgated "${CG_BENCH_GW:-$CG_BIN/crashgated}" --workdir "$CG_T" \
  --devices "${CG_BENCH_STORM_DEVICES:-10000}" --broker-pid "$CG_BROKER_PID"
if [[ -x $build/tests/bench_e2e ]]; then
  "$build/tests/bench_e2e" --uri "$CG_BROKER_URI" --crashgated "${CG_BENCH_GW:-$CG_BIN/crashgated}" --workdir "$CG_T" \
    --plugin-dir "$CRASHGATE_PLUGIN_DIR" --dumps "${CG_BENCH_E2E_DUMPS:-2000}"
else
  echo "bench_e2e not built (needs libmicrohttpd): skipped" >&2
fi
