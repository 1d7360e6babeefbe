#!/usr/bin/env bash
# Policy with a real broker (SPEC §5, §6): consent per group, the retained
# consent signal and its republication on SIGHUP, duplicate throttling at
# chunk 0, regions recorded, collection window and quota (kept across a
# restart), and a bad reload that changes nothing.
source "$(dirname "$0")/gw.sh"
CG_DEVICES="eu-1 eu-2 us-1 off-1 q-1 late-1 $(printf 'z-%02d ' $(seq 1 20))"
cg_setup mosquitto python3
cg_start_broker

policy() {
  cat <<YAML
default_region: US
regions:
  EU: { upstreams: [ { name: eu-files, kind: file, path: "$CG_T/outbox-eu" } ] }
  US: { upstreams: [ { name: us-files, kind: file, path: "$CG_T/outbox-us" } ] }
groups:
  - { name: fleet-eu, devices: ["eu-*"], crash_dumps: enabled, regional_data_boundary: EU }
  - { name: lab-off, devices: ["off-*"], crash_dumps: ${OFF_CONSENT:-disabled} }
  - { name: quota, devices: ["q-*"], crash_dumps: enabled, collection: { max_dumps: 1 } }
  - { name: closed, devices: ["late-*"], crash_dumps: enabled,
      collection: { start: 2020-01-01T00:00:00Z, stop: 2021-01-01T00:00:00Z } }
  - { name: zephyr-fleet, devices: ["z-*"], crash_dumps: enabled }
  - { name: default, devices: ["us-*"], crash_dumps: enabled }
throttle: { max_identical: ${MAX_IDENTICAL:-5}, window: 24h }
consent: { valid_for: 1h }
YAML
}
CG_GW_POLICY=$(policy) cg_gw_config
cg_gw_start
mk=$CG_TOOLS/cg_mkzephyr
[[ -x $mk ]] || cg_fail "cg_mkzephyr not built ($mk)"
stats() { # the gateway's counters, from the line SIGUSR1 logs
  local before
  before=$(grep -c ' stats: ' "$(cg_gw_log)" || true)
  kill -USR1 "$CG_GW_PID"
  cg_wait_for --timeout 10 bash -c "(( \$(grep -c ' stats: ' '$(cg_gw_log)') > $before ))" ||
    cg_fail "no stats line"
  grep ' stats: ' "$(cg_gw_log)" | tail -1
}
stat() { stats | grep -o " $1=[0-9]*" | cut -d= -f2; }

# 1. A device whose group has not consented: consent_required, nothing stored.
cg_random_file "$CG_T/raw.bin" 50000
rc=0
cg_send off-1 "$CG_T/raw.bin" --dump-id 1 --chunk-size 1000 --format 4 || rc=$?
((rc == 4)) || cg_fail "non-consenting device: crashgate-send exited $rc, want 4 (consent_required)"
n=$(cg_ctl list --json | python3 -c 'import json,sys; print(len([d for d in json.load(sys.stdin) if d["device"]=="off-1"]))')
[[ $n == 0 ]] || cg_fail "a non-consenting device's dump is in the store ($n records)"
chunks=$(stat chunks_stored 2>/dev/null || true)
[[ ${chunks:-0} == 0 ]] || cg_fail "chunks of a non-consenting device were stored: $chunks"
out=$(cg_consent off-1) && cg_fail "off-1's consent signal says enabled: $out"
[[ $out == "enabled=false group=lab-off "* ]] || cg_fail "off-1's consent signal: '$out'"
cg_log "non-consenting device: consent_required, 0 chunks stored, consent signal $out"

# 2. Regions: an EU group's dump is recorded EU, the default group's US.
cg_send eu-1 "$CG_T/raw.bin" --dump-id 7 --format 4 || cg_fail "eu-1 not complete"
cg_send us-1 "$CG_T/raw.bin" --dump-id 8 --format 4 || cg_fail "us-1 not complete"
cg_ctl show eu-1/7 --json | python3 -c '
import json,sys; d=json.load(sys.stdin)
assert d["region"] == "EU" and d["group"] == "fleet-eu", d' || cg_fail "eu-1/7 is not recorded in EU"
cg_ctl show us-1/8 --json | python3 -c '
import json,sys; d=json.load(sys.stdin)
assert d["region"] == "US" and d["group"] == "default", d' || cg_fail "us-1/8 is not recorded in US"
out=$(cg_consent eu-1) || cg_fail "eu-1 has no enabled consent signal: $out"
[[ $out == "enabled=true group=fleet-eu "*"valid_for=3600" ]] || cg_fail "eu-1's consent signal: '$out'"

# 3. 20 devices, the same Zephyr crash: exactly max_identical stored; the
#    others answered throttled at chunk 0, counted.
"$mk" "$CG_T/z.bin" --size 65536 --pc 0800abcd --lr 08001235 --reason 3
pids=()
for i in $(seq 1 20); do
  dev=$(printf 'z-%02d' "$i")
  ( rc=0; cg_send "$dev" "$CG_T/z.bin" --dump-id 100 --chunk-size 1024 --format 1 --build-id c0ffee \
      >"$CG_T/z.$i.out" 2>&1 || rc=$?; echo "$rc" >"$CG_T/z.$i.rc" ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
complete=0 throttled=0
for i in $(seq 1 20); do
  case $(cat "$CG_T/z.$i.rc") in
    0) complete=$((complete + 1)) ;;
    2) throttled=$((throttled + 1)) ;;
    *) cat "$CG_T/z.$i.out" >&2; cg_fail "z-$i: unexpected exit $(cat "$CG_T/z.$i.rc")" ;;
  esac
done
((complete == 5 && throttled == 15)) || cg_fail "identical crashes: $complete complete, $throttled throttled; want 5 and 15"
early=$(stat throttled_early)
((early == 15)) || cg_fail "throttled at chunk 0: $early, want 15"
cg_ctl signatures --json >"$CG_T/sigs.json"
python3 - "$CG_T/sigs.json" <<'PY' || cg_fail "signatures: $(cat "$CG_T/sigs.json")"
import json, sys
rows = [r for r in json.load(open(sys.argv[1])) if r["throttled"] or r["count"] == 5]
z = [r for r in rows if r["count"] == 5 and r["throttled"] == 15]
assert len(z) == 1, rows
r = z[0]
assert r["devices"] == 20 and r["occurrences"] == 20, r
assert r["first_seen"] <= r["last_seen"]
PY
stored=$(cg_ctl list --json | python3 -c 'import json,sys; print(len([d for d in json.load(sys.stdin) if d["device"].startswith("z-") and d["status"] in ("stored", "forwarded")]))')
((stored == 5)) || cg_fail "$stored Zephyr dumps stored, want 5"
cg_log "20 identical Zephyr crashes: 5 stored, 15 throttled at chunk 0 and counted"

# 4. Collection window and quota; the quota survives a restart.
cg_random_file "$CG_T/q1.bin" 3000
cg_random_file "$CG_T/q2.bin" 3000
rc=0; cg_send late-1 "$CG_T/q1.bin" --dump-id 1 --format 4 2>"$CG_T/late.err" || rc=$?
((rc == 3)) && grep -q "outside the collection window" "$CG_T/late.err" ||
  cg_fail "a dump outside the collection window: exit $rc, $(cat "$CG_T/late.err")"
cg_send q-1 "$CG_T/q1.bin" --dump-id 1 --format 4 || cg_fail "first dump of the quota group not complete"
cg_gw_stop
cg_gw_start
rc=0; cg_send q-1 "$CG_T/q2.bin" --dump-id 2 --format 4 2>"$CG_T/q.err" || rc=$?
((rc == 3)) && grep -q "quota reached" "$CG_T/q.err" ||
  cg_fail "second dump over the quota after a restart: exit $rc, $(cat "$CG_T/q.err")"

# 5. SIGHUP: consent for lab-off switched on; the retained signal changes and
#    the device's dumps are collected. The throttle limit stays counted.
before=$(cg_consent off-1 | grep -o 'issued_at=[0-9]*' || true)
sleep 1.1   # issued_at has one-second resolution
OFF_CONSENT=enabled CG_GW_POLICY=$(OFF_CONSENT=enabled policy) cg_gw_config
kill -HUP "$CG_GW_PID"
cg_wait_for --timeout 10 grep -q "reloaded" "$(cg_gw_log)" || cg_fail "no reload in the log"
cg_wait_for --timeout 10 bash -c "[[ \$('$CG_BIN/crashgate-send' --uri '$CG_BROKER_URI' --device off-1 \
  --password-file '$CG_T/off-1.pw' --timeout 3 --consent 2>/dev/null) == enabled=true* ]]" ||
  cg_fail "off-1's consent signal was not republished as enabled after SIGHUP"
after=$(cg_consent off-1 | grep -o 'issued_at=[0-9]*')
[[ $after != "$before" ]] || cg_fail "consent not reissued ($before)"
# Every device seen gets the new signal, not only the changed group.
out=$(cg_consent eu-1) || cg_fail "eu-1 lost its consent after reload"
cg_send off-1 "$CG_T/raw.bin" --dump-id 2 --format 4 || cg_fail "off-1 not collected after consent was enabled"

# 6. A bad file on SIGHUP keeps the running configuration.
cp "$CG_T/gw.yaml" "$CG_T/gw.good"
echo "groups: [ { name: x } ]" >>"$CG_T/gw.yaml"
kill -HUP "$CG_GW_PID"
cg_wait_for --timeout 10 grep -q "reload refused" "$(cg_gw_log)" || cg_fail "a bad reload was not refused"
cg_random_file "$CG_T/raw2.bin" 4000
cg_send off-1 "$CG_T/raw2.bin" --dump-id 3 --format 4 || cg_fail "the running configuration was lost on a bad reload"
gen=$(stat config_generation)
((gen == 2)) || cg_fail "config generation $gen after one good and one bad reload, want 2"
cp "$CG_T/gw.good" "$CG_T/gw.yaml"
cg_gw_stop
cg_pass
