#!/usr/bin/env bash
# Per-record outcomes through the forwarder (plugin ABI 2, record_status),
# with the sentry plugin against the test server: a batch of three dumps
# (max_dumps 3, so the batch is exactly those three) where Sentry accepts
# the first, answers 503 for the second: the retry sends only the two not
# yet accepted. Then one refused (400) among three: only that one becomes a
# dead letter, the two others are delivered, and `retry` sends only it.
source "$(dirname "$0")/gw.sh"
CG_DEVICES="s1"
cg_setup mosquitto python3
[[ -f $CRASHGATE_PLUGIN_DIR/crashgate_out_sentry.so ]] || cg_skip "sentry plugin not built"
cg_start_broker
cg_start_http_server
req=$CG_HTTP_REQ control=$CG_HTTP_CONTROL
printf 'http://0123456789abcdef0123456789abcdef@127.0.0.1:%s/42\n' "$CG_HTTP_PORT" >"$CG_T/dsn"
CG_GW_POLICY=$(cat <<YAML
default_region: US
regions:
  US: { upstreams: [ { name: us-sentry, kind: sentry, dsn_file: "$CG_T/dsn",
                       batch: { max_dumps: 3, max_delay: 60s }, retry: { min: 100ms, max: 500ms } } ] }
groups: [ { name: all, devices: ["*"], crash_dumps: enabled } ]
YAML
) cg_gw_config
cg_gw_start
nreq() { find "$req" -name '[0-9][0-9][0-9][0-9].json' | wc -l; }
q() { timeout 60 "$CG_BIN/crashgatectl" -c "$CG_T/gw.yaml" queue --json; }
queue_is() { # PYTHON-EXPR over u (us-sentry's queue row)
  q | python3 -c "import json,sys; u=json.load(sys.stdin)[0]; sys.exit(0 if ($1) else 1)"
}
send3() { # FIRST_ID
  local i
  for i in 0 1 2; do
    cg_random_file "$CG_T/d$(($1 + i))" $((4000 + i))
    cg_send s1 "$CG_T/d$(($1 + i))" --dump-id $(($1 + i)) --format 4 >/dev/null || cg_fail "s1/$(($1 + i))"
  done
}

# 1. Accepted, then 503: the retry resends only what Sentry has not taken.
printf '%s\n' '{"status": 200}' '{"status": 503}' >"$control"
send3 1
cg_wait_for --timeout 30 queue_is 'u["depth"] == 0' || cg_fail "batch 1 not delivered: $(q)"
# 2 requests in the first attempt (200, 503), 2 in the second: 4, not 5.
[[ $(nreq) == 4 ]] || cg_fail "the retry sent $(($(nreq) - 2)) records, not the 2 not yet accepted"

# 2. One refused among three: only it becomes a dead letter.
printf '%s\n' '{"status": 200}' '{"status": 400, "body": "bad event"}' '{"status": 200}' >"$control"
send3 4
cg_wait_for --timeout 30 queue_is 'u["depth"] == 0 and u["dead_letters"] == 1' || cg_fail "no dead letter: $(q)"
[[ $(nreq) == 7 ]] || cg_fail "$(nreq) requests, expected 7"
for i in 4 6; do
  s=$(timeout 60 "$CG_BIN/crashgatectl" --data-dir "$CG_T/gw" show s1/$i --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  [[ $s == forwarded ]] || cg_fail "s1/$i is $s, not forwarded (it was accepted)"
done
s=$(timeout 60 "$CG_BIN/crashgatectl" --data-dir "$CG_T/gw" show s1/5 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
[[ $s == stored ]] || cg_fail "the refused s1/5 is $s, not stored"
grep -q "1 of 3 dumps of batch [0-9]* refused for good" "$(cg_gw_log)" || cg_fail "the dead letter does not hold only the refused dump"
: >"$control"
timeout 60 "$CG_BIN/crashgatectl" -c "$CG_T/gw.yaml" retry us-sentry >/dev/null || cg_fail "retry"
cg_wait_for --timeout 30 queue_is 'u["dead_letters"] == 0' || cg_fail "the dead letter was not delivered: $(q)"
[[ $(nreq) == 8 ]] || cg_fail "retry sent $(($(nreq) - 7)) records, not the 1 refused"
cg_pass "sentry through the forwarder: accepted records are not sent again, only the refused one is a dead letter"
