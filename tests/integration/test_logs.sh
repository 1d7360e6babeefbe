#!/usr/bin/env bash
# Logs of the real daemon (SPEC §10, issue 5): with --log-format json every
# line is one JSON object (time, level, module, msg), through start, dumps,
# a rejection, a reload and a stop; no line carries the broker password, the
# admin token or any dump bytes, even when the dump's bytes hold them.
source "$(dirname "$0")/gw.sh"
CG_DEVICES="l1"
cg_setup mosquitto python3
cg_start_broker
port=$(cg_free_port)
token="log-token-$RANDOM$RANDOM"
printf '%s\n' "$token" >"$CG_T/token"
CG_GW_LIMITS="max_dump_bytes: 64KiB" cg_gw_config "admin: { listen: 127.0.0.1:$port, token_file: \"$CG_T/token\" }"
CG_GW_ARGS="--log-format json --log-level debug" cg_gw_start
password=$(head -1 "$CG_T/crashgate.pw")
marker="DUMP-BYTES-MARKER-$RANDOM$RANDOM"
# A dump made of text a careless log line would show: the marker, the
# broker password and the admin token, with newlines between.
for i in $(seq 1 200); do printf '%s\n%s\n%s\n' "$marker" "$password" "$token"; done >"$CG_T/dump"
cg_send l1 "$CG_T/dump" --dump-id 1 --chunk-size 1000 >/dev/null || cg_fail "dump not complete"
cg_random_file "$CG_T/big" 100000
cg_send l1 "$CG_T/big" --dump-id 2 >/dev/null 2>&1 && cg_fail "an oversized dump was accepted"
kill -HUP "$CG_GW_PID"
cg_wait_for --timeout 10 grep -q "reload" "$(cg_gw_log)" || cg_fail "no reload logged"
cg_gw_stop
log=$(cg_gw_log)
python3 - "$log" <<'PY' || cg_fail "a log line is not a JSON event"
import json, sys
levels = set()
n = 0
for line in open(sys.argv[1], encoding="utf-8"):
    if line.startswith("=="):   # lines the test harness writes
        continue
    e = json.loads(line)
    assert set(e) == {"time", "level", "module", "msg"}, e
    assert e["level"] in ("debug", "info", "warn", "error"), e
    assert e["time"].endswith("Z"), e
    levels.add(e["level"])
    n += 1
assert n >= 5 and {"info", "warn"} <= levels, (n, levels)
PY
for secret in "$marker" "$password" "$token"; do
  grep -qF -- "$secret" "$log" && cg_fail "the log holds '${secret:0:12}...'"
done
grep -q "rejected dump l1/2" "$log" || cg_fail "the rejection is not logged"
cg_pass "logs: JSON lines through start/dumps/rejection/reload/stop; no secrets, no dump bytes"
