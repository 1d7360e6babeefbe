#!/usr/bin/env bash
# An upstream that is down for a while (its directory replaced by a file, so
# every write fails) holds its queue on disk and retries with backoff; when it
# is back every dump is delivered, in order per device. The gateway killed with
# SIGKILL while forwarding loses nothing: after a restart every dump arrives.
source "$(dirname "$0")/gw.sh"
CG_DEVICES="d1 d2"
cg_setup mosquitto python3
cg_start_broker
CG_GW_POLICY=$(cat <<YAML
default_region: US
regions:
  US: { upstreams: [ { name: us-files, kind: file, path: "$CG_T/out",
                       batch: { max_dumps: 2, max_delay: 200ms }, retry: { min: 100ms, max: 1s } },
                     { name: us-mirror, kind: file, path: "$CG_T/mirror",
                       batch: { max_dumps: 2, max_delay: 200ms } } ] }
groups: [ { name: all, devices: ["*"], crash_dumps: enabled } ]
YAML
) cg_gw_config
cg_gw_start
mkdir -p "$CG_T/out"
mv "$CG_T/out" "$CG_T/out.away" && touch "$CG_T/out"    # the upstream is down
for i in 1 2 3 4 5; do
  for d in d1 d2; do
    cg_random_file "$CG_T/$d.$i" $((3000 * i))
    cg_send "$d" "$CG_T/$d.$i" --dump-id "$i" --format 4 >/dev/null || cg_fail "$d/$i not complete"
  done
done
cg_wait_for --timeout 20 grep -q "not delivered" "$(cg_gw_log)" || cg_fail "no retry was logged while the upstream was down"
# The other upstream of the region is not held up by the outage.
cg_wait_for --timeout 20 bash -c "python3 - '$CG_T' '$CG_SRC/tests/integration' <<'PY'
import glob, sys
sys.path.insert(0, sys.argv[2])
import cbor
n = sum(len(cbor.loads(open(f, 'rb').read())['records']) for f in glob.glob(sys.argv[1] + '/mirror/batch-*.cbor'))
sys.exit(0 if n == 10 else 1)
PY" || cg_fail "one upstream's outage held up the other"
timeout 60 "$CG_BIN/crashgatectl" -c "$CG_T/gw.yaml" queue --json >"$CG_T/q.json"
python3 -c '
import json, sys
q = {r["upstream"]: r for r in json.load(open(sys.argv[1]))}
assert q["us-files"]["depth"] == 10 and q["us-files"]["last_error"], q
assert q["us-mirror"]["depth"] == 0, q
# Not forwarded yet: one upstream of the region still lacks them.
' "$CG_T/q.json" || cg_fail "queue while down: $(cat "$CG_T/q.json")"
s=$(cg_ctl show d1/1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
[[ $s == stored ]] || cg_fail "d1/1 is '$s' while one upstream lacks it, want stored"
rm "$CG_T/out" && mv "$CG_T/out.away" "$CG_T/out"        # back

delivered() {
  python3 - "$CG_T" "$CG_SRC/tests/integration" "$1" <<'PY'
import glob, sys
sys.path.insert(0, sys.argv[2])
import cbor
t, want = sys.argv[1], int(sys.argv[3])
order, seen = {}, set()
for f in sorted(glob.glob(f"{t}/out/batch-*.cbor")):
    for r in cbor.loads(open(f, "rb").read())["records"]:
        m = r["meta"]
        assert r["dump"] == open(f"{t}/{m['device']}.{m['dump_id']}", "rb").read()
        if (m["device"], m["dump_id"]) not in seen:
            order.setdefault(m["device"], []).append(m["dump_id"])
        seen.add((m["device"], m["dump_id"]))
for d, ids in order.items():
    assert ids == sorted(ids), (d, ids)
sys.exit(0 if len(seen) == want else 1)
PY
}
cg_wait_for --timeout 30 delivered 10 || cg_fail "not every dump was delivered once the upstream was back"

# SIGKILL while forwarding: stream more dumps, kill, restart, all arrive.
for i in 6 7 8 9 10; do
  for d in d1 d2; do
    cg_random_file "$CG_T/$d.$i" 20000
    cg_send "$d" "$CG_T/$d.$i" --dump-id "$i" --format 4 >/dev/null || cg_fail "$d/$i not complete"
  done
  ((i == 8)) && cg_gw_kill && cg_gw_start
done
cg_gw_kill
cg_gw_start
cg_wait_for --timeout 30 delivered 20 || { delivered 20; cg_fail "a dump was lost across SIGKILL"; }
cg_gw_stop
cg_pass "an outage holds the queue and retries; everything delivered in order; SIGKILL loses nothing"
