#!/usr/bin/env bash
# Durability under SIGKILL.
#  A. A backlog of dumps waits in the broker and more are published while
#     crashgated is killed with SIGKILL again and again mid-drain. Devices do
#     not resend (--no-wait), so any chunk PUBACKed to the broker but not
#     stored would be lost for good: the test counts such chunks and
#     requires zero, and every dump present and byte-identical.
#  B. Devices that wait for `complete` and resend after `incomplete` (the
#     full protocol) while kills continue: every crashgate-send ends
#     `complete` and every dump is present and byte-identical.
source "$(dirname "$0")/gw.sh"
DEVS=(k0 k1 k2 k3 k4 k5 k6 k7)
CG_DEVICES="${DEVS[*]}"
cg_setup mosquitto cmp python3
cg_start_broker
cg_gw_config
cg_gw_start            # establishes the persistent session
cg_gw_stop

ROUNDS=${CG_KILL_ROUNDS:-12}
mkdir -p "$CG_T/dumps"
for d in "${DEVS[@]}"; do
  for i in 1 2 3 4 5 6; do
    cg_random_file "$CG_T/dumps/$d.$i" $((60000 + RANDOM % 40000))
  done
done

# A: backlog of batch 1 while the gateway is down
for d in "${DEVS[@]}"; do
  for i in 1 2 3; do
    cg_send "$d" "$CG_T/dumps/$d.$i" --dump-id "$i" --chunk-size 256 --no-wait >/dev/null ||
      cg_fail "publish $d/$i failed"
  done
done
# batch 2 published while the kill loop runs
(
  for d in "${DEVS[@]}"; do
    for i in 4 5 6; do
      cg_send "$d" "$CG_T/dumps/$d.$i" --dump-id "$i" --chunk-size 256 --shuffle --seed "$i" --no-wait >/dev/null || exit 1
    done
  done
) &
pubs=$!
midway=0
for ((r = 0; r < ROUNDS; r++)); do
  cg_gw_start
  sleep "0.$((RANDOM % 3))$((RANDOM % 10))"
  cg_gw_kill
  # killed while it still had work: it had stored something but not all
  n=$(grep -c " complete: " "$(cg_gw_log)" || true)
  ((n > 0)) && midway=$((midway + 1))
done
wait "$pubs" || cg_fail "batch 2 publishers failed"
cg_gw_start
expected=$(( ${#DEVS[@]} * 6 ))
settled() {
  [[ $(cg_ctl list --json | python3 -c 'import json,sys; print(sum(1 for d in json.load(sys.stdin) if d["status"] in ("stored", "forwarded")))') == "$expected" ]]
}
cg_wait_for --timeout 60 settled || true
cg_ctl list --json >"$CG_T/list-a.json"
lost=$(python3 - "$CG_T/list-a.json" "$CG_T/dumps" <<'PY'
import json, os, sys
rows = json.load(open(sys.argv[1]))
lost = 0
for d in rows:
    if d["status"] == "open":
        size = os.path.getsize(os.path.join(sys.argv[2], "%s.%d" % (d["device"], d["dump_id"])))
        lost += (size + 255) // 256 - d["chunks"]
stored = {(d["device"], d["dump_id"]) for d in rows if d["status"] in ("stored", "forwarded")}
for name in os.listdir(sys.argv[2]):
    dev, i = name.rsplit(".", 1)
    if (dev, int(i)) not in stored and not any(d["device"] == dev and d["dump_id"] == int(i) for d in rows):
        lost += (os.path.getsize(os.path.join(sys.argv[2], name)) + 255) // 256
print(lost)
PY
)
cg_log "phase A: $ROUNDS SIGKILLs ($midway after the gateway had completed dumps in that run); chunks lost between the broker's PUBACK and the store: $lost"
[[ $lost == 0 ]] || cg_fail "$lost chunks acknowledged to the broker were lost"
for d in "${DEVS[@]}"; do
  for i in 1 2 3 4 5 6; do
    cg_assert_stored "$d" "$i" "$CG_T/dumps/$d.$i"
  done
done

# B: full protocol under kills
cg_gw_stop
cg_gw_start
for d in "${DEVS[@]}"; do
  (
    for i in 7 8 9 10 11 12; do
      cg_random_file "$CG_T/dumps/$d.$i" $((100000 + RANDOM % 100000))
      cg_send "$d" "$CG_T/dumps/$d.$i" --dump-id "$i" --chunk-size 512 --shuffle --seed "$i" --timeout 2 --attempts 30 >/dev/null 2>&1 ||
        { echo "FAILED $d/$i" >>"$CG_T/b-failures"; exit 1; }
    done
  ) &
  echo $! >>"$CG_T/b-pids"
done
end=$((SECONDS + 120))
killed=0
while ((SECONDS < end)) && ps -p "$(paste -sd, "$CG_T/b-pids")" >/dev/null 2>&1; do
  sleep "0.$((1 + RANDOM % 5))"
  cg_gw_kill
  killed=$((killed + 1))
  cg_gw_start
done
fail=0
while read -r p; do wait "$p" || fail=1; done <"$CG_T/b-pids"
[[ $fail == 0 ]] || cg_fail "devices did not complete under kills: $(cat "$CG_T/b-failures" 2>/dev/null)"
for d in "${DEVS[@]}"; do
  for i in 7 8 9 10 11 12; do
    cg_assert_stored "$d" "$i" "$CG_T/dumps/$d.$i"
  done
done
cg_log "phase B: $killed SIGKILLs while devices sent $(( ${#DEVS[@]} * 6 )) dumps with resends: all complete and byte-identical"
cg_gw_stop
cg_pass "SIGKILL: nothing acknowledged was lost (phase A lost $lost chunks)"
