#!/usr/bin/env bash
# A stream of dumps from many devices at once: 24 devices, each sending 4
# dumps back to back with shuffled chunks of assorted sizes; every dump
# arrives complete and byte-identical, and no chunk is left behind.
source "$(dirname "$0")/gw.sh"
DEVS=()
for i in $(seq -w 0 23); do DEVS+=("m$i"); done
CG_DEVICES="${DEVS[*]}"
cg_setup mosquitto cmp python3
cg_start_broker
cg_gw_config
cg_gw_start
mkdir -p "$CG_T/dumps"
pids=()
for d in "${DEVS[@]}"; do
  (
    for i in 1 2 3 4; do
      f=$CG_T/dumps/$d.$i
      cg_random_file "$f" $((1000 + RANDOM * 4))
      cg_send "$d" "$f" --dump-id "$i" --chunk-size $((128 << (RANDOM % 4))) --shuffle --seed "$RANDOM" \
        --timeout 5 >/dev/null 2>"$f.err" || exit 1
    done
  ) &
  pids+=($!)
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
((fail == 0)) || cg_fail "some devices did not get complete: $(cat "$CG_T"/dumps/*.err | head -5)"
for d in "${DEVS[@]}"; do
  for i in 1 2 3 4; do cg_assert_stored "$d" "$i" "$CG_T/dumps/$d.$i"; done
done
cg_ctl list --json | python3 -c '
import json, sys
rows = json.load(sys.stdin)
stored = [d for d in rows if d["status"] in ("stored", "forwarded")]
opened = [d for d in rows if d["status"] == "open"]
assert len(stored) == 96, len(stored)
assert not opened, opened
' || cg_fail "the store does not hold exactly 96 stored dumps and nothing open"
cg_gw_stop
cg_pass "96 dumps from 24 devices at once, all byte-identical"
