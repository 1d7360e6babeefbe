#!/usr/bin/env bash
# crashgatectl over the admin API (SPEC §10): it finds the API from the
# gateway's YAML (-c) or --url/--token-file; list with filters, show,
# download (byte-identical), signatures, queue, retry of a dead letter, purge
# (asks unless --yes, durable across SIGKILL); --help for every command;
# exit codes; reads the store when the daemon is down. /metrics: rejections
# by reason and the per-upstream figures, parsed by Prometheus's parser.
source "$(dirname "$0")/gw.sh"
CG_DEVICES="c1 c2"
cg_setup mosquitto python3 curl
[[ -f $CRASHGATE_PLUGIN_DIR/crashgate_out_http.so ]] || cg_skip "http plugin not built"
pyprom=/usr/bin/python3
"$pyprom" -c 'import prometheus_client.parser' 2>/dev/null || cg_skip "python3-prometheus-client not installed"
ctl() { timeout 60 "$CG_BIN/crashgatectl" "$@"; }
expect_rc() { # WANT CMD...: run, compare the exit code
  local want=$1 rc=0
  shift
  "$@" >"$CG_T/out" 2>"$CG_T/err" </dev/null || rc=$?
  ((rc == want)) || cg_fail "'$*' exited $rc, not $want: $(cat "$CG_T/err")"
}

# --help: the tool and every command.
ctl --help >"$CG_T/help" || cg_fail "--help"
for cmd in list show download signatures queue retry purge health backup check-config; do
  grep -q "^  $cmd " "$CG_T/help" || cg_fail "--help does not list $cmd"
  ctl "$cmd" --help >"$CG_T/h.$cmd" || cg_fail "$cmd --help exited non-zero"
  grep -q "usage: crashgatectl .*$cmd" "$CG_T/h.$cmd" || cg_fail "$cmd --help: $(cat "$CG_T/h.$cmd")"
done
grep -q -- "--device" "$CG_T/h.list" || cg_fail "list --help does not name its filters"
expect_rc 2 ctl frobnicate
expect_rc 2 ctl list

cg_start_broker
cg_start_http_server
req=$CG_HTTP_REQ control=$CG_HTTP_CONTROL hport=$CG_HTTP_PORT
echo '{"status": 400, "body": "schema says no"}' >"$control"
port=$(cg_free_port)
printf 'ctl-token-%s\n' "$RANDOM$RANDOM" >"$CG_T/token"
CG_GW_LIMITS="max_dump_bytes: 64KiB" CG_GW_POLICY=$(cat <<YAML
default_region: US
regions:
  US:
    upstreams:
      - { name: us-files, kind: file, path: "$CG_T/outbox", batch: { max_dumps: 8, max_delay: 100ms } }
      - { name: us-http, kind: http, url: "http://127.0.0.1:$hport/ingest",
          batch: { max_dumps: 8, max_delay: 100ms }, retry: { min: 100ms, max: 1s } }
groups: [ { name: all, devices: ["*"], crash_dumps: enabled } ]
YAML
) cg_gw_config "admin: { listen: 127.0.0.1:$port, token_file: \"$CG_T/token\" }"
cg_gw_start
base=http://127.0.0.1:$port
C=(-c "$CG_T/gw.yaml")
scrape() { curl -sf -H "Authorization: Bearer $(cat "$CG_T/token")" "$base/metrics" >"$CG_T/$1.prom" || cg_fail "scrape"; }
scrape before

cg_random_file "$CG_T/d1" 10000
cg_random_file "$CG_T/d2" 20000
cg_random_file "$CG_T/d3" 5000
cg_random_file "$CG_T/big" 100000
cg_send c1 "$CG_T/d1" --dump-id 1 --format 4 >/dev/null || cg_fail "c1/1"
cg_send c1 "$CG_T/d2" --dump-id 2 --format 4 >/dev/null || cg_fail "c1/2"
cg_send c2 "$CG_T/d3" --dump-id 1 --format 4 >/dev/null || cg_fail "c2/1"
rc=0; cg_send c2 "$CG_T/big" --dump-id 9 --format 4 >"$CG_T/big.out" 2>&1 || rc=$?
((rc != 0)) || cg_fail "a dump over max_dump_bytes was accepted"

# list over the API, with filters; the token matters.
ctl "${C[@]}" list --json >"$CG_T/all.json" || cg_fail "list"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert sorted((x["device"], x["dump_id"]) for x in d) == [("c1",1),("c1",2),("c2",1)], d' \
  "$CG_T/all.json" || cg_fail "list: $(cat "$CG_T/all.json")"
ctl "${C[@]}" list --device c1 --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert [x["dump_id"] for x in d] == [1,2], d' ||
  cg_fail "list --device"
ctl "${C[@]}" list --limit 1 --json | python3 -c 'import json,sys; assert len(json.load(sys.stdin)) == 1' || cg_fail "list --limit"
# Paging: one dump per request, every page followed, nothing twice.
CRASHGATECTL_PAGE_SIZE=1 ctl "${C[@]}" list --json | python3 -c '
import json, sys; d = json.load(sys.stdin); s = [x["seq"] for x in d]; assert len(s) == 3 and s == sorted(set(s)), s' ||
  cg_fail "list one dump per page"
CRASHGATECTL_PAGE_SIZE=2 ctl "${C[@]}" list --limit 3 --json | python3 -c '
import json, sys; assert len(json.load(sys.stdin)) == 3' || cg_fail "list --limit 3 in pages of 2"
ctl "${C[@]}" list --status forwarded --since 2000-01-01T00:00:00Z --json >/dev/null || cg_fail "list --status --since"
expect_rc 2 ctl "${C[@]}" list --status nonsense
expect_rc 2 ctl "${C[@]}" list --since yesterday
ctl --url "$base" --token-file "$CG_T/token" list | grep -q "c2" || cg_fail "list over --url as a table"
expect_rc 6 ctl --url "$base" list
printf 'wrong\n' >"$CG_T/wrong"
expect_rc 6 ctl --url "$base" --token-file "$CG_T/wrong" list
expect_rc 5 ctl --url "http://127.0.0.1:$(cg_free_port)" --token-file "$CG_T/token" list

# show, download, signatures, queue
ctl "${C[@]}" show c1/2 --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["size"] == 20000 and d["device"] == "c1", d' ||
  cg_fail "show"
ctl "${C[@]}" show c1/2 | grep -q "^device  *c1" || cg_fail "show as a table"
expect_rc 4 ctl "${C[@]}" show c1/77
ctl "${C[@]}" download c1/2 -o "$CG_T/got2" || cg_fail "download"
cmp -s "$CG_T/got2" "$CG_T/d2" || cg_fail "the downloaded dump differs from what was sent"
ctl "${C[@]}" download c2/1 >"$CG_T/got3" || cg_fail "download to stdout"
cmp -s "$CG_T/got3" "$CG_T/d3" || cg_fail "download to stdout differs"
expect_rc 4 ctl "${C[@]}" download c1/77 -o "$CG_T/none"
[[ ! -e $CG_T/none && ! -e $CG_T/none.partial ]] || cg_fail "a failed download left a file"
ctl "${C[@]}" signatures --json | python3 -c 'import json,sys; s=json.load(sys.stdin); assert len(s) == 3 and all(x["devices"] == 1 for x in s), s' ||
  cg_fail "signatures"

# health (what the container's HEALTHCHECK runs) and backup.
[[ $(ctl "${C[@]}" health) == ok ]] || cg_fail "health"
ctl "${C[@]}" health --ready | grep -q ready || cg_fail "health --ready"
bk=$(ctl "${C[@]}" backup) || cg_fail "backup: $bk"
[[ -d $bk && $bk == "$CG_T/gw/backups/"* ]] || cg_fail "backup path: $bk"
mkdir -p "$CG_T/restored"
cp -a "$bk" "$CG_T/restored/store"

# The http upstream refuses (400): a dead letter; retry over the API sends it again.
cg_wait_for --timeout 20 bash -c "'$CG_BIN/crashgatectl' -c '$CG_T/gw.yaml' queue --json | python3 -c 'import json,sys; q={u[\"upstream\"]: u for u in json.load(sys.stdin)}; assert q[\"us-http\"][\"dead_letters\"] >= 1 and q[\"us-files\"][\"depth\"] == 0'" ||
  cg_fail "no dead letter for us-http: $(ctl "${C[@]}" queue)"
ctl "${C[@]}" queue | grep -q "us-http" || cg_fail "queue as a table"
expect_rc 4 ctl "${C[@]}" retry no-such-upstream
scrape dead
echo '{"status": 200}' >"$control"
ctl "${C[@]}" retry us-http --json >"$CG_T/retry.json" || cg_fail "retry: $(cat "$CG_T/retry.json")"
cg_wait_for --timeout 20 bash -c "'$CG_BIN/crashgatectl' -c '$CG_T/gw.yaml' queue --json | grep -q '\"dead_letters\": 0'" ||
  cg_fail "the dead letter was not delivered after retry"
expect_rc 4 ctl "${C[@]}" retry us-http
scrape after

"$pyprom" - "$CG_T/before.prom" "$CG_T/dead.prom" "$CG_T/after.prom" <<'PY' || cg_fail "metrics"
import sys
from prometheus_client.parser import text_string_to_metric_families
def load(p):
    out = {}
    for fam in text_string_to_metric_families(open(p).read()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out
a, m, b = (load(p) for p in sys.argv[1:])
def v(d, name, **labels):
    return d[(name, tuple(sorted(labels.items())))]
rej = "crashgate_dumps_rejected_total"
assert v(b, rej, reason="too_large") - v(a, rej, reason="too_large") == 1
assert v(b, rej, reason="bad_crc") == v(a, rej, reason="bad_crc")
bt = "crashgate_upstream_batches_total"
assert v(m, "crashgate_upstream_dead_letter_batches", upstream="us-http", region="US") >= 1
assert v(b, "crashgate_upstream_dead_letter_batches", upstream="us-http", region="US") == 0
assert v(b, "crashgate_upstream_queue_dumps", upstream="us-files", region="US") == 0
assert v(b, "crashgate_upstream_dumps_delivered_total", upstream="us-files") == 3
assert v(b, "crashgate_upstream_dumps_delivered_total", upstream="us-http") == 3
assert v(m, bt, upstream="us-http", result="drop") >= 1
assert v(b, bt, upstream="us-http", result="ok") >= 1
assert v(b, "crashgate_upstream_delivered_bytes_total", upstream="us-files") == 35000
n = sum(v(b, bt, upstream="us-files", result=r) for r in ("ok", "retry", "drop"))
assert v(b, "crashgate_upstream_flush_duration_seconds_count", upstream="us-files") == n
assert v(b, "crashgate_upstream_flush_duration_seconds_bucket", upstream="us-files", le="+Inf") == n
assert v(b, "crashgate_upstream_flush_duration_seconds_bucket", upstream="us-files", le="0.005") <= n
PY

# A dump purged while its batch waits out an upstream outage is never sent,
# and its record does not come back when the batch settles.
metric() { # NAME UPSTREAM: one sample, by Prometheus's parser
  curl -sf -H "Authorization: Bearer $(cat "$CG_T/token")" "$base/metrics" | "$pyprom" -c '
import sys
from prometheus_client.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    for s in f.samples:
        if s.name == sys.argv[1] and s.labels.get("upstream") == sys.argv[2]:
            print(int(s.value))' "$1" "$2"
}
for i in $(seq 1 3000); do echo '{"status": 503}'; done >"$control"
cg_random_file "$CG_T/d4" 7000
cg_send c2 "$CG_T/d4" --dump-id 4 --format 4 >/dev/null || cg_fail "c2/4"
cg_wait_for --timeout 20 bash -c "'$CG_BIN/crashgatectl' -c '$CG_T/gw.yaml' queue --json | grep -q 'HTTP 503'" ||
  cg_fail "us-http is not retrying: $(ctl "${C[@]}" queue)"
sent_before=$(metric crashgate_upstream_dumps_delivered_total us-http)
ctl "${C[@]}" purge c2/4 --yes >/dev/null || cg_fail "purge c2/4"
: >"$control"
cg_wait_for --timeout 20 grep -q "seq [0-9]* was deleted before delivery; not sent" "$(cg_gw_log)" ||
  cg_fail "the purged dump's batch went on"
cg_wait_for --timeout 20 bash -c "'$CG_BIN/crashgatectl' -c '$CG_T/gw.yaml' queue --json | python3 -c 'import json,sys; q={u[\"upstream\"]: u for u in json.load(sys.stdin)}; assert q[\"us-http\"][\"depth\"] == 0'" ||
  cg_fail "us-http did not move past the purged dump"
[[ $(metric crashgate_upstream_dumps_delivered_total us-http) == "$sent_before" ]] || cg_fail "the purged dump was delivered"
expect_rc 4 ctl "${C[@]}" show c2/4
scrape prepurge

# purge: asks; "no" deletes nothing (exit 7); --yes and "y" delete.
rc=0; echo n | ctl "${C[@]}" purge c1/1 >"$CG_T/p.out" 2>"$CG_T/p.err" || rc=$?
((rc == 7)) || cg_fail "purge answered n exited $rc, not 7"
grep -q "nothing deleted" "$CG_T/p.err" && grep -q "c1" "$CG_T/p.err" || cg_fail "purge n: $(cat "$CG_T/p.err")"
ctl "${C[@]}" show c1/1 >/dev/null || cg_fail "purge answered n deleted the dump"
expect_rc 2 ctl "${C[@]}" purge
expect_rc 4 ctl "${C[@]}" purge c9/9 --yes
ctl "${C[@]}" purge --device c1 --yes --json >"$CG_T/purged.json" || cg_fail "purge --device: $(cat "$CG_T/purged.json")"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["count"] == 2, d' "$CG_T/purged.json" || cg_fail "purge count"
echo y | ctl "${C[@]}" purge c2/1 >/dev/null 2>"$CG_T/p2.err" || cg_fail "purge answered y: $(cat "$CG_T/p2.err")"
ctl "${C[@]}" list --json | python3 -c 'import json,sys; assert json.load(sys.stdin) == []' || cg_fail "purged dumps still listed"
expect_rc 4 ctl "${C[@]}" download c1/2 -o "$CG_T/gone"
scrape purged
"$pyprom" - "$CG_T/prepurge.prom" "$CG_T/purged.prom" <<'PY' || cg_fail "purge metrics"
import sys
from prometheus_client.parser import text_string_to_metric_families
def load(p):
    return {s.name: s.value for f in text_string_to_metric_families(open(p).read()) for s in f.samples if not s.labels}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert b["crashgate_dumps_purged_total"] - a["crashgate_dumps_purged_total"] == 3
assert b["crashgate_store_bytes"] <= a["crashgate_store_bytes"] - 35000, (a["crashgate_store_bytes"], b["crashgate_store_bytes"])
PY
# The backup taken before the purge still holds the three dumps, whole.
ctl --data-dir "$CG_T/restored" list --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert len(d) == 3, d' ||
  cg_fail "the backup does not open as a store with the three dumps"
ctl --data-dir "$CG_T/restored" download c1/2 -o "$CG_T/bk2" && cmp -s "$CG_T/bk2" "$CG_T/d2" || cg_fail "the backup's c1/2 differs"
# Deleted means deleted, across a SIGKILL.
cg_gw_kill
cg_gw_start
ctl "${C[@]}" list --json | python3 -c 'import json,sys; assert json.load(sys.stdin) == []' || cg_fail "purged dumps came back after SIGKILL"

# The daemon down: reads go to the store; purge cannot.
cg_send c2 "$CG_T/d3" --dump-id 2 --format 4 >/dev/null || cg_fail "c2/2"
cg_gw_stop
ctl "${C[@]}" list --json 2>"$CG_T/off.err" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert [(x["device"], x["dump_id"]) for x in d] == [("c2", 2)], d' ||
  cg_fail "list with the daemon down: $(cat "$CG_T/off.err")"
grep -q "does not answer" "$CG_T/off.err" || cg_fail "no note that the store was read directly"
ctl "${C[@]}" download c2/2 -o "$CG_T/off3" 2>/dev/null && cmp -s "$CG_T/off3" "$CG_T/d3" || cg_fail "download with the daemon down"
expect_rc 5 ctl "${C[@]}" purge --device c2 --yes
expect_rc 5 ctl "${C[@]}" health
expect_rc 5 ctl "${C[@]}" backup
grep -q "$(cat "$CG_T/token")" "$CG_T"/gw.*.log && cg_fail "the token appears in the log"
cg_pass "crashgatectl over the API: list/show/download/signatures/queue/retry/purge/health/backup, exit codes, store fallback; metrics by reason and upstream"
