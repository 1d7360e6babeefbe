#!/usr/bin/env bash
# The http plugin behind the forwarder, against a test HTTP server on
# loopback: a 400 moves the batch to the dead-letter state (visible in
# `crashgatectl queue`) while later dumps go on; `crashgatectl retry` sends it
# again and it is delivered, byte-identical.
source "$(dirname "$0")/gw.sh"
CG_DEVICES="h1"
cg_setup mosquitto python3
[[ -f $CRASHGATE_PLUGIN_DIR/crashgate_out_http.so ]] || cg_skip "http plugin not built"
cg_start_broker
cg_start_http_server
req=$CG_HTTP_REQ control=$CG_HTTP_CONTROL port=$CG_HTTP_PORT
echo '{"status": 400, "body": "schema says no"}' >"$control"
CG_GW_POLICY=$(cat <<YAML
default_region: US
regions:
  US: { upstreams: [ { name: us-http, kind: http, url: "http://127.0.0.1:$port/ingest",
                       batch: { max_dumps: 1, max_delay: 100ms }, retry: { min: 100ms, max: 1s } } ] }
groups: [ { name: all, devices: ["*"], crash_dumps: enabled } ]
YAML
) cg_gw_config
cg_gw_start
q() { timeout 60 "$CG_BIN/crashgatectl" -c "$CG_T/gw.yaml" queue --json; }

cg_random_file "$CG_T/a" 30000
cg_send h1 "$CG_T/a" --dump-id 1 --format 4 >/dev/null || cg_fail "h1/1 not complete"
cg_wait_for --timeout 20 bash -c "'$CG_BIN/crashgatectl' -c '$CG_T/gw.yaml' queue --json | grep -q '\"dead_letters\": 1'" ||
  cg_fail "a 400 did not make a dead letter: $(q)"
q | grep -q 'HTTP 400' || cg_fail "the dead letter's reason is not shown: $(q)"
cg_random_file "$CG_T/b" 20000
cg_send h1 "$CG_T/b" --dump-id 2 --format 4 >/dev/null || cg_fail "h1/2 not complete"

received() { # device dump_id file: a request body holds that dump
  python3 - "$req" "$CG_SRC/tests/integration" "$@" <<'PY'
import glob, sys
sys.path.insert(0, sys.argv[2])
import cbor
want = open(sys.argv[5], "rb").read()
for f in glob.glob(f"{sys.argv[1]}/*.body"):
    try:
        doc = cbor.loads(open(f, "rb").read())
    except Exception:
        continue
    for r in doc.get("records", []):
        m = r["meta"]
        if m["device"] == sys.argv[3] and m["dump_id"] == int(sys.argv[4]) and r.get("dump") == want:
            sys.exit(0)
sys.exit(1)
PY
}
cg_wait_for --timeout 20 received h1 2 "$CG_T/b" || cg_fail "the dump after the dead letter was not delivered"
n_before=$(ls "$req"/*.body | wc -l)

timeout 60 "$CG_BIN/crashgatectl" -c "$CG_T/gw.yaml" retry us-http >"$CG_T/retry.out" || cg_fail "retry: $(cat "$CG_T/retry.out")"
cg_wait_for --timeout 20 bash -c "(( \$(ls '$req'/*.body | wc -l) > $n_before ))" || cg_fail "retry sent nothing"
cg_wait_for --timeout 20 bash -c "'$CG_BIN/crashgatectl' -c '$CG_T/gw.yaml' queue --json | grep -q '\"dead_letters\": 0'" ||
  cg_fail "the dead letter is still there after a successful retry: $(q)"
last=$(ls "$req"/*.body | sort | tail -1)
python3 - "$last" "$CG_T/a" "$CG_SRC/tests/integration" <<'PY' || cg_fail "the retried batch is not dump h1/1"
import sys
sys.path.insert(0, sys.argv[3])
import cbor
doc = cbor.loads(open(sys.argv[1], "rb").read())
r = doc["records"][0]
assert r["meta"]["device"] == "h1" and r["meta"]["dump_id"] == 1, r["meta"]
assert r["dump"] == open(sys.argv[2], "rb").read()
PY
grep -q 'Idempotency-Key' "$req"/*.json || cg_fail "requests carry no Idempotency-Key"

# SIGKILL during a flush: the upstream holds the request (hang), the gateway
# is killed, restarted, and sends that batch again; nothing else repeats.
echo '{"action": "hang", "seconds": 4}' >"$control"
n_before=$(ls "$req"/*.json | wc -l)
cg_random_file "$CG_T/c" 10000
cg_send h1 "$CG_T/c" --dump-id 3 --format 4 >/dev/null || cg_fail "h1/3 not complete"
cg_wait_for --timeout 20 bash -c "(( \$(ls '$req'/*.json | wc -l) > $n_before ))" || cg_fail "the batch never left"
cg_gw_kill
cg_gw_start
cg_wait_for --timeout 30 received h1 3 "$CG_T/c" || cg_fail "the batch in flight at SIGKILL was lost"
python3 - "$req" "$CG_SRC/tests/integration" <<'PY' || cg_fail "something other than the batch in flight was sent twice"
import glob, json, sys
sys.path.insert(0, sys.argv[2])
import cbor
seen = {}
for f in sorted(glob.glob(f"{sys.argv[1]}/*.body")):
    meta = json.load(open(f[:-5] + ".json"))
    if meta.get("answered", {}).get("status", 200) not in (200, None) and "hang" not in json.dumps(meta):
        continue   # the 400 of the dead letter
    try:
        doc = cbor.loads(open(f, "rb").read())
    except Exception:
        continue
    for r in doc["records"]:
        k = (r["meta"]["device"], r["meta"]["dump_id"])
        seen.setdefault(k, set()).add(doc["batch_id"])
twice = {k: v for k, v in seen.items() if k != ("h1", 1)}
# Every record went in one batch id only: a repeat is the same batch again.
assert all(len(v) == 1 for v in twice.values()), twice
PY
cg_gw_stop
cg_pass "400 -> dead letter (shown by queue) -> retry -> delivered; later dumps not held up"
