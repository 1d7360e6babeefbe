#!/usr/bin/env bash
# The store budget (limits.max_store_bytes) with forwarding: dumps every
# upstream already has give their bytes back when the store fills, so a
# gateway whose upstream is up keeps accepting far more than its budget;
# with the upstream down nothing is evicted and devices hear `busy`.
source "$(dirname "$0")/gw.sh"
CG_DEVICES="s1"
cg_setup mosquitto python3
cg_start_broker
CG_GW_LIMITS="max_dump_bytes: 64KiB
  max_chunk_bytes: 4KiB
  max_store_bytes: 256KiB"
CG_GW_POLICY=$(cat <<YAML
default_region: US
regions:
  US: { upstreams: [ { name: us-files, kind: file, path: "$CG_T/out",
                       batch: { max_dumps: 4, max_delay: 100ms }, retry: { min: 100ms, max: 500ms } } ] }
groups: [ { name: all, devices: ["*"], crash_dumps: enabled } ]
YAML
) cg_gw_config
cg_gw_start
for i in $(seq 1 20); do   # 20 x 30 KB = 600 KB through a 256 KiB store
  cg_random_file "$CG_T/d.$i" 30000
  cg_send s1 "$CG_T/d.$i" --dump-id "$i" --format 4 --chunk-size 4096 --attempts 8 >/dev/null ||
    cg_fail "dump $i was not accepted although every earlier one was delivered"
done
grep -q "forwarded dumps" "$(cg_gw_log)" || cg_fail "no eviction of delivered dumps was logged"
cg_ctl list --json | python3 -c '
import json, sys
rows = [d for d in json.load(sys.stdin) if d["device"] == "s1"]
assert len(rows) == 20, len(rows)
assert any(d.get("bytes_deleted") for d in rows), "nothing evicted"
assert all(d["status"] in ("stored", "forwarded") for d in rows), rows
' || cg_fail "records after eviction are wrong"

# Upstream down: nothing undelivered is evicted; the store fills and devices hear busy.
mv "$CG_T/out" "$CG_T/out.away" && touch "$CG_T/out"
busy=0
for i in $(seq 21 40); do
  cg_random_file "$CG_T/d.$i" 30000
  rc=0; cg_send s1 "$CG_T/d.$i" --dump-id "$i" --format 4 --chunk-size 4096 --attempts 1 --timeout 3 >/dev/null 2>&1 || rc=$?
  if ((rc == 5)); then busy=1; break; fi
done
((busy)) || cg_fail "the store never filled with the upstream down"
cg_gw_stop
cg_pass "delivered dumps make room when the store fills; undelivered ones never do"
