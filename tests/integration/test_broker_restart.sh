#!/usr/bin/env bash
# The broker restarted mid-stream: devices keep sending through the restart
# (their clients reconnect; crashgate-send resends what the gateway reports
# missing) and the gateway reconnects on its own. Every dump completes.
source "$(dirname "$0")/gw.sh"
DEVS=(r0 r1 r2 r3)
CG_DEVICES="${DEVS[*]}"
cg_setup mosquitto cmp
cg_start_broker
cg_gw_config
cg_gw_start
mkdir -p "$CG_T/dumps"
pids=()
for d in "${DEVS[@]}"; do
  (
    for i in 1 2 3 4 5; do
      cg_random_file "$CG_T/dumps/$d.$i" 300000
      cg_send "$d" "$CG_T/dumps/$d.$i" --dump-id "$i" --chunk-size 512 --timeout 3 --attempts 20 >/dev/null 2>&1 || exit 1
    done
  ) &
  pids+=($!)
done
sleep 1
cg_restart_broker
cg_log "broker restarted"
sleep 2
cg_restart_broker
cg_log "broker restarted again"
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
((fail == 0)) || cg_fail "devices did not complete across broker restarts"
for d in "${DEVS[@]}"; do
  for i in 1 2 3 4 5; do cg_assert_stored "$d" "$i" "$CG_T/dumps/$d.$i"; done
done
grep -q "connection lost" "$(cg_gw_log)" || cg_fail "the gateway never saw the broker go away"
[[ $(grep -c "connected to" "$(cg_gw_log)") -ge 2 ]] || cg_fail "the gateway did not reconnect"
cg_gw_stop
cg_pass "broker restarted twice mid-stream: every dump complete"
