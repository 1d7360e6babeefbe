#!/usr/bin/env bash
# A dump sent by crashgate-send (shuffled, repeated chunks; native and
# Spotflow-compatible keys; QoS 0 and 1) arrives byte-identical, is listed,
# and is stored once when sent again. A device cannot write as another.
source "$(dirname "$0")/gw.sh"
CG_DEVICES="dev-a dev-b dev-c"
cg_setup mosquitto cmp
cg_start_broker
cg_gw_config
cg_gw_start

dump=$CG_T/dump.bin
cg_random_file "$dump" 200000

cg_send dev-a "$dump" --dump-id 1 --chunk-size 1000 --shuffle --seed 7 --repeat 1 --build-id 0a0b0c0d --fw-version 1.2.3 --format 4 ||
  cg_fail "crashgate-send did not get complete"
cg_assert_stored dev-a 1 "$dump"

# A real third-party crash dump, Spotflow-compatible keys only, at QoS 0.
fixture=$CG_SRC/../shared/fixtures/minidump/linux-mini.dmp
if [[ -f $fixture ]]; then
  cg_send dev-b "$fixture" --dump-id 2 --chunk-size 512 --spotflow --qos 0 || cg_fail "fixture dump not complete"
  cg_assert_stored dev-b 2 "$fixture"
else
  cg_log "fixtures absent: fixture part skipped"
fi

# Sent again after it was stored: answered complete, stored once.
cg_send dev-a "$dump" --dump-id 1 --chunk-size 4000 || cg_fail "a re-sent dump was not answered complete"
n=$(cg_ctl list --json | python3 -c 'import json,sys; print(sum(1 for d in json.load(sys.stdin) if d["device"]=="dev-a" and d["dump_id"]==1))')
[[ $n == 1 ]] || cg_fail "dump dev-a/1 stored $n times"

# show --json carries the record fields.
cg_ctl show dev-a/1 --json >"$CG_T/show.json"
python3 - "$CG_T/show.json" <<'PY' || cg_fail "show --json is wrong: $(cat "$CG_T/show.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["id"].startswith("it-gw/dev-a/1/"), d["id"]
assert d["status"] in ("stored", "forwarded") and d["size"] == 200000 and d["chunks"] == 200
assert d["build_id"] == "0a0b0c0d" and d["fw_version"] == "1.2.3" and d["format"] == "raw"
assert d["received_at"].endswith("Z")
PY
cg_ctl list | grep -q "dev-a" || cg_fail "list does not show dev-a"

# dev-c publishing under dev-b's topic is dropped by the broker's ACL:
# no answer, nothing stored for dev-b's dump 3.
rc=0
timeout 60 "$CG_BIN/crashgate-send" --uri "$CG_BROKER_URI" --device dev-b --username dev-c \
  --password-file "$CG_T/dev-c.pw" --dump-id 3 --timeout 1 --attempts 1 "$dump" 2>/dev/null || rc=$?
[[ $rc == 6 ]] || cg_fail "impersonating send ended with $rc, expected 6 (no answer)"
if cg_ctl show dev-b/3 >/dev/null 2>&1; then cg_fail "a dump written as another device was stored"; fi
cg_ctl list --json | python3 -c 'import json,sys; assert not [d for d in json.load(sys.stdin) if d["dump_id"]==3]' ||
  cg_fail "chunks written as another device reached the store"

cg_gw_stop
grep -q "stats:" "$(cg_gw_log)" || cg_fail "no final stats line"
cg_pass "ingest: byte-identical dumps, listed, stored once, impersonation refused"
