#!/usr/bin/env bash
# The admin endpoint: /healthz without a token; /readyz and /metrics only
# with the bearer token; /readyz 503 while the broker is down and 200 when it
# is back; /metrics parsed by Prometheus's own text-format parser, its
# counters moving by exactly what was sent; no token off loopback is refused.
source "$(dirname "$0")/gw.sh"
CG_DEVICES="m1"
cg_setup mosquitto curl
pyprom=/usr/bin/python3
"$pyprom" -c 'import prometheus_client.parser' 2>/dev/null || cg_skip "python3-prometheus-client not installed"
cg_start_broker
port=$(cg_free_port)
printf 's3cret-admin-token\n' >"$CG_T/token"
cg_gw_config "admin: { listen: 127.0.0.1:$port, token_file: \"$CG_T/token\" }"
cg_gw_start
base=http://127.0.0.1:$port
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
auth=(-H "Authorization: Bearer s3cret-admin-token")
[[ $(code "$base/healthz") == 200 ]] || cg_fail "/healthz without a token"
for r in readyz metrics; do
  [[ $(code "$base/$r") == 401 ]] || cg_fail "/$r without a token is not 401"
  [[ $(code -H "Authorization: Bearer wrong" "$base/$r") == 401 ]] || cg_fail "/$r with a wrong token is not 401"
  [[ $(code -H "Authorization: Bearer s3cret-admin-token-and-more" "$base/$r") == 401 ]] || cg_fail "/$r with a longer token"
  [[ $(code "${auth[@]}" "$base/$r") == 200 ]] || cg_fail "/$r with the token is not 200"
done
[[ $(code "${auth[@]}" "$base/nope") == 404 ]] || cg_fail "unknown route is not 404"
grep -q s3cret "$(cg_gw_log)" && cg_fail "the token appears in the log"

scrape() { curl -sf "${auth[@]}" "$base/metrics" >"$CG_T/$1.prom" || cg_fail "scrape failed"; }
scrape before
cg_random_file "$CG_T/d1" 10000
cg_random_file "$CG_T/d2" 20000
cg_send m1 "$CG_T/d1" --dump-id 1 --chunk-size 1000 --format 4 >/dev/null || cg_fail "d1"
cg_send m1 "$CG_T/d2" --dump-id 2 --chunk-size 1000 --format 4 >/dev/null || cg_fail "d2"
scrape after
"$pyprom" - "$CG_T/before.prom" "$CG_T/after.prom" <<'PY' || cg_fail "metrics did not move by what was sent"
import sys
from prometheus_client.parser import text_string_to_metric_families
def load(p):
    out = {}
    for fam in text_string_to_metric_families(open(p).read()):
        for s in fam.samples:   # labelled series summed (rejections by reason)
            out[s.name] = out.get(s.name, 0) + s.value
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
d = lambda k: b[k] - a[k]
assert d("crashgate_chunks_received_total") == 30, d("crashgate_chunks_received_total")
assert d("crashgate_chunk_received_bytes_total") == 30000
assert d("crashgate_dumps_completed_total") == 2
assert d("crashgate_dumps_rejected_total") == 0
assert b["crashgate_open_dumps"] == 0 and b["crashgate_broker_connected"] == 1
assert b["crashgate_store_bytes"] >= 30000
PY

# /v1: list with filters and paging, one dump, its bytes, signatures.
for r in v1/dumps v1/signatures v1/dumps/m1/1 v1/dumps/m1/1/raw v1/upstreams; do
  [[ $(code "$base/$r") == 401 ]] || cg_fail "/$r without a token is not 401"
done
# The routes that change something: the token first, then the method.
[[ $(code -X DELETE "$base/v1/dumps/m1/1") == 401 ]] || cg_fail "DELETE without a token is not 401"
[[ $(code -X DELETE "$base/v1/dumps?device=m1") == 401 ]] || cg_fail "DELETE by filter without a token is not 401"
[[ $(code -X POST "$base/v1/upstreams/us-files/retry") == 401 ]] || cg_fail "POST retry without a token is not 401"
[[ $(code -X PUT "${auth[@]}" "$base/v1/dumps") == 405 ]] || cg_fail "PUT is not 405"
[[ $(code -X POST "${auth[@]}" "$base/metrics") == 405 ]] || cg_fail "POST /metrics is not 405"
[[ $(code -X DELETE "${auth[@]}" "$base/v1/dumps") == 400 ]] || cg_fail "DELETE of everything is not refused"
[[ $(code -X POST "${auth[@]}" "$base/v1/upstreams/us-files/retry") == 404 ]] || cg_fail "retry without dead letters is not 404"
[[ $(code -X POST "${auth[@]}" "$base/v1/upstreams/nope/retry") == 404 ]] || cg_fail "retry of an unknown upstream is not 404"
[[ $(code -X DELETE "${auth[@]}" "$base/v1/dumps/m1/99") == 404 ]] || cg_fail "DELETE of an unknown dump is not 404"
[[ $(code "${auth[@]}" "$base/v1/dumps?status=bogus") == 400 ]] || cg_fail "a bad status is not 400"
cg_random_file "$CG_T/d3" 5000
cg_send m1 "$CG_T/d3" --dump-id 3 --format 4 >/dev/null || cg_fail "d3"
curl -sf "${auth[@]}" "$base/v1/dumps?device=m1&limit=2" >"$CG_T/p1.json" || cg_fail "list"
next=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert [x["dump_id"] for x in d["dumps"]] == [1, 2], d; print(d["next"])' "$CG_T/p1.json") ||
  cg_fail "first page: $(cat "$CG_T/p1.json")"
curl -sf "${auth[@]}" "$base/v1/dumps?device=m1&limit=2&after=$next" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert [x["dump_id"] for x in d["dumps"]] == [3] and "next" not in d, d' || cg_fail "second page"
curl -sf "${auth[@]}" "$base/v1/dumps?device=nobody" | python3 -c '
import json, sys; assert json.load(sys.stdin)["dumps"] == []' || cg_fail "device filter"
curl -sf "${auth[@]}" "$base/v1/dumps?status=stored&region=US&since=2020-01-01T00:00:00Z" | python3 -c '
import json, sys; d = json.load(sys.stdin)["dumps"]; assert len(d) == 3 and all(x["region"] == "US" for x in d), d' ||
  cg_fail "status/region/since filters"
[[ $(code "${auth[@]}" "$base/v1/dumps?limit=0") == 400 ]] || cg_fail "a bad limit is not 400"
curl -sf "${auth[@]}" "$base/v1/dumps/m1/2" | python3 -c '
import json, sys; d = json.load(sys.stdin); assert d["device"] == "m1" and d["dump_id"] == 2 and d["size"] == 20000, d' ||
  cg_fail "one dump"
curl -sf "${auth[@]}" "$base/v1/dumps/m1/2/raw" -o "$CG_T/raw2" || cg_fail "raw"
cmp -s "$CG_T/raw2" "$CG_T/d2" || cg_fail "the downloaded dump differs from what was sent"
[[ $(code "${auth[@]}" "$base/v1/dumps/m1/99") == 404 ]] || cg_fail "an unknown dump is not 404"
# A stable id names one dump: the same device and dump id received at
# another time is another dump.
sid=$(curl -sf "${auth[@]}" "$base/v1/dumps/m1/2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
[[ $(code "${auth[@]}" "$base/v1/dumps/$sid") == 200 ]] || cg_fail "the stable id $sid is not found"
[[ $(code "${auth[@]}" "$base/v1/dumps/${sid%/*}/12345") == 404 ]] || cg_fail "a stable id with another time finds a dump"
curl -sf "${auth[@]}" "$base/v1/signatures" | python3 -c '
import json, sys; s = json.load(sys.stdin)["signatures"]; assert len(s) == 3 and all(x["count"] == 1 for x in s), s' ||
  cg_fail "signatures"

# Purge by exact seqs, and by filter at most `limit` at a time.
cg_random_file "$CG_T/d4" 3000
cg_random_file "$CG_T/d5" 3000
cg_send m1 "$CG_T/d4" --dump-id 4 --format 4 >/dev/null || cg_fail "d4"
cg_send m1 "$CG_T/d5" --dump-id 5 --format 4 >/dev/null || cg_fail "d5"
seq4=$(curl -sf "${auth[@]}" "$base/v1/dumps/m1/4" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seq"])')
curl -sf -X DELETE "${auth[@]}" "$base/v1/dumps?seqs=$seq4,999999" | python3 -c '
import json, sys; d = json.load(sys.stdin); assert d["purged"] == [int(sys.argv[1])], d' "$seq4" || cg_fail "DELETE by seqs"
[[ $(code "${auth[@]}" "$base/v1/dumps/m1/4") == 404 ]] || cg_fail "m1/4 is still there after DELETE by seq"
[[ $(code "${auth[@]}" "$base/v1/dumps/m1/5") == 200 ]] || cg_fail "DELETE by seqs took more than it named"
[[ $(code -X DELETE "${auth[@]}" "$base/v1/dumps?seqs=1,x") == 400 ]] || cg_fail "a bad seqs list is not 400"
[[ $(code "${auth[@]}" "$base/v1/dumps?seqs=1") == 400 ]] || cg_fail "seqs on GET is not refused"
curl -sf -X DELETE "${auth[@]}" "$base/v1/dumps?device=m1&since=2020-01-01T00:00:00Z&limit=1" | python3 -c '
import json, sys; d = json.load(sys.stdin); assert d["count"] == 1 and d["more"] is True, d' || cg_fail "DELETE by filter with limit"
[[ $(code "${auth[@]}" "$base/v1/dumps/m1/1") == 404 ]] || cg_fail "the oldest match was not the one purged"
curl -sf "${auth[@]}" "$base/v1/dumps?until=1970-01-01T00:00:00Z" | python3 -c '
import json, sys; assert json.load(sys.stdin)["dumps"] == []' || cg_fail "until=the epoch is not a bound"
[[ $(code -X POST "${auth[@]}" "$base/v1/upstreams/%FF/retry") == 404 ]] || cg_fail "a non-UTF-8 upstream name is not 404"
[[ $(code "${auth[@]}" "$base/v1/dumps?%FF=1") == 400 ]] || cg_fail "a non-UTF-8 parameter is not 400"

curl -sf "${auth[@]}" "$base/v1/upstreams" | python3 -c '
import json, sys
u = json.load(sys.stdin)["upstreams"]
assert [x["upstream"] for x in u] == ["us-files"] and u[0]["region"] == "US" and u[0]["dead_letters"] == 0, u' ||
  cg_fail "upstreams"

# Readiness follows the broker.
cg_stop_broker
cg_wait_for --timeout 20 bash -c "[[ \$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer s3cret-admin-token' '$base/readyz') == 503 ]]" ||
  cg_fail "/readyz is not 503 with the broker down"
curl -s "${auth[@]}" "$base/readyz" | grep -q "broker" || cg_fail "/readyz does not say why"
cg_restart_broker
cg_wait_for --timeout 30 bash -c "[[ \$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer s3cret-admin-token' '$base/readyz') == 200 ]]" ||
  cg_fail "/readyz is not 200 once the broker is back"
cg_gw_stop

# Loopback without a token: answered only for a loopback Host (a web page
# using DNS rebinding names its own domain).
cg_gw_config "admin: { listen: 127.0.0.1:$port }"
cg_gw_start
[[ $(code "$base/readyz") == 200 ]] || cg_fail "tokenless loopback /readyz is not 200"
[[ $(code -H "Host: localhost:$port" "$base/v1/dumps") == 200 ]] || cg_fail "Host localhost is refused"
[[ $(code -H "Host: rebind.example:$port" "$base/v1/dumps") == 401 ]] || cg_fail "a foreign Host is answered"
[[ $(code -H "Host: 127.evil.example" -X DELETE "$base/v1/dumps?device=m1") == 401 ]] || cg_fail "Host 127.evil.example is answered"
cg_gw_stop

# Off loopback without a token: refused at start.
cat >"$CG_T/open.yaml" <<YAML
gateway: { id: g, data_dir: "$CG_T/open" }
mqtt: { uri: "$CG_BROKER_URI" }
admin: { listen: 0.0.0.0:$port }
YAML
rc=0; timeout 20 "$CG_BIN/crashgated" -c "$CG_T/open.yaml" 2>"$CG_T/open.err" || rc=$?
((rc == 3)) && grep -q "not a loopback address" "$CG_T/open.err" || cg_fail "open admin without a token: exit $rc $(cat "$CG_T/open.err")"
cg_pass "admin: token on every route but /healthz, readiness follows the broker, metrics parse and count"
