#!/usr/bin/env bash
# SIGTERM during a stream (SPEC §10): the gateway stops taking chunks,
# finishes what is in flight, closes the store cleanly (exit 0) within its
# bound, and loses nothing acknowledged: devices that keep sending through
# repeated stops and restarts all end `complete`, with byte-identical dumps.
source "$(dirname "$0")/gw.sh"
DEVS=(t1 t2 t3 t4)
CG_DEVICES="${DEVS[*]}"
cg_setup mosquitto python3 cmp
cg_start_broker
cg_gw_config
cg_gw_start
mkdir -p "$CG_T/dumps"
for d in "${DEVS[@]}"; do
  (
    for i in 1 2 3 4 5; do
      cg_random_file "$CG_T/dumps/$d.$i" $((60000 + RANDOM % 60000))
      cg_send "$d" "$CG_T/dumps/$d.$i" --dump-id "$i" --chunk-size 512 --timeout 2 --attempts 30 --format 4 >/dev/null 2>&1 ||
        { echo "FAILED $d/$i" >>"$CG_T/failures"; exit 1; }
    done
  ) &
  echo $! >>"$CG_T/pids"
done
end=$((SECONDS + 120))
stops=0
while ((SECONDS < end)) && ps -p "$(paste -sd, "$CG_T/pids")" >/dev/null 2>&1; do
  sleep "0.$((2 + RANDOM % 6))"
  t0=$SECONDS
  cg_gw_stop          # SIGTERM; fails the test unless it exits 0 within 10 s
  stops=$((stops + 1))
  grep -q "SIGTERM: stopping" "$(cg_gw_log)" || cg_fail "no orderly stop in the log"
  cg_gw_start
done
fail=0
while read -r p; do wait "$p" || fail=1; done <"$CG_T/pids"
[[ $fail == 0 ]] || cg_fail "devices did not complete through SIGTERMs: $(cat "$CG_T/failures" 2>/dev/null)"
for d in "${DEVS[@]}"; do
  for i in 1 2 3 4 5; do
    cg_assert_stored "$d" "$i" "$CG_T/dumps/$d.$i"
  done
done
((stops > 0)) || cg_fail "the stream ended before any SIGTERM"
cg_gw_stop
cg_pass "$stops SIGTERMs during a stream: every stop clean, every dump complete and byte-identical"
