#!/usr/bin/env bash
# Forwarding (SPEC §8) through the `file` plugin: each region's dumps reach
# only that region's upstream, in order per device, byte-identical, in
# batches that respect max_dumps and max_bytes; throttled occurrences are
# forwarded as counts; a restart resumes after the last acknowledged batch
# without losing any; a plugin of the wrong ABI version is refused.
source "$(dirname "$0")/gw.sh"
CG_DEVICES="eu-1 eu-2 us-1"
cg_setup mosquitto python3
cg_start_broker
CG_GW_POLICY=$(cat <<YAML
default_region: US
regions:
  EU: { upstreams: [ { name: eu-files, kind: file, path: "$CG_T/out-eu",
                       batch: { max_dumps: 3, max_bytes: 1MiB, max_delay: 1s } } ] }
  US: { upstreams: [ { name: us-files, kind: file, path: "$CG_T/out-us",
                       batch: { max_dumps: 50, max_bytes: 150KiB, max_delay: 1s } } ] }
groups:
  - { name: eu, devices: ["eu-*"], crash_dumps: enabled, regional_data_boundary: EU }
  - { name: us, devices: ["us-*"], crash_dumps: enabled, regional_data_boundary: US }
throttle: { max_identical: 2, window: 1h }
YAML
) cg_gw_config
cg_gw_start

for i in 1 2 3 4; do
  for d in eu-1 eu-2 us-1; do
    cg_random_file "$CG_T/$d.$i" $((20000 + i * 30000))
    cg_send "$d" "$CG_T/$d.$i" --dump-id "$i" --format 4 >/dev/null || cg_fail "$d/$i not complete"
  done
done
# The same crash three times from us-1: 2 stored, the third a throttled count.
cg_random_file "$CG_T/same" 5000
for i in 11 12 13; do
  rc=0; cg_send us-1 "$CG_T/same" --dump-id "$i" --format 4 --chunk-size 4096 >/dev/null 2>&1 || rc=$?
  # The device's content dedup answers complete for the same content; the
  # third differs by dump id only, so it is a duplicate of its own content.
  ((rc == 0 || rc == 2)) || cg_fail "us-1/$i: exit $rc"
done

check() {
  python3 - "$CG_T" "$CG_SRC/tests/integration" <<'PY'
import glob, os, sys
sys.path.insert(0, sys.argv[2])
import cbor
t = sys.argv[1]
got = {}
for region, upstream, maxd, maxb in (("EU", "eu-files", 3, 1 << 20), ("US", "us-files", 50, 150 << 10)):
    files = sorted(glob.glob(f"{t}/out-{region.lower()}/batch-*.cbor"))
    order = {}
    for f in files:
        doc = cbor.loads(open(f, "rb").read())
        assert doc["gateway"] == "it-gw" and doc["upstream"] == upstream and doc["region"] == region, doc
        recs = doc["records"]
        assert 1 <= len(recs) <= maxd, (f, len(recs))
        body = sum(len(r.get("dump", b"")) for r in recs)
        assert len(recs) == 1 or body <= maxb, (f, body)
        for r in recs:
            m = r["meta"]
            assert m["region"] == region, ("a dump crossed its data boundary", f, m)
            if m["status"] == "throttled":
                assert "dump" not in r
                continue
            key = (m["device"], m["dump_id"])
            data = open(f"{t}/{m['device']}.{m['dump_id']}", "rb").read() if m["dump_id"] < 10 else open(f"{t}/same", "rb").read()
            assert r["dump"] == data, ("bytes differ", key)
            got.setdefault(key, 0)
            got[key] += 1
            order.setdefault(m["device"], []).append(m["dump_id"])
    for dev, ids in order.items():
        assert ids == sorted(ids), ("out of order", dev, ids)
want = {(d, i) for d in ("eu-1", "eu-2", "us-1") for i in (1, 2, 3, 4)}
missing = want - set(got)
if missing:
    print("missing", sorted(missing))
    sys.exit(1)
PY
}
cg_wait_for --timeout 30 check || { check; cg_fail "not every dump reached its region's upstream"; }
n_eu=$(ls "$CG_T/out-eu" | wc -l)
((n_eu >= 3)) || cg_fail "EU: $n_eu batch files, want at least 3 (max_dumps 3 for 8 dumps)"

# Restart: nothing is sent twice that was acknowledged, new dumps go on.
before=$(ls "$CG_T/out-us" | wc -l)
cg_gw_stop
cg_gw_start
cg_random_file "$CG_T/us-1.5" 1000
cg_send us-1 "$CG_T/us-1.5" --dump-id 5 --format 4 >/dev/null || cg_fail "us-1/5 not complete"
cg_wait_for --timeout 30 bash -c "ls '$CG_T/out-us' | wc -l | grep -qv '^$before\$'" || cg_fail "nothing forwarded after a restart"
python3 - "$CG_T" "$CG_SRC/tests/integration" <<'PY' || cg_fail "a delivered dump was delivered again after a restart"
import glob, sys
sys.path.insert(0, sys.argv[2])
import cbor
seen = {}
for f in glob.glob(f"{sys.argv[1]}/out-*/batch-*.cbor"):
    for r in cbor.loads(open(f, "rb").read())["records"]:
        m = r["meta"]
        if m["status"] != "throttled":
            k = (m["device"], m["dump_id"])
            assert k not in seen, (k, f, seen[k])
            seen[k] = f
assert ("us-1", 5) in seen
PY
# crashgatectl queue: nothing waiting, nothing dead, per upstream.
timeout 60 "$CG_BIN/crashgatectl" -c "$CG_T/gw.yaml" queue --json >"$CG_T/queue.json" || cg_fail "queue failed"
python3 - "$CG_T/queue.json" <<'PY' || cg_fail "queue: $(cat "$CG_T/queue.json")"
import json, sys
q = {r["upstream"]: r for r in json.load(open(sys.argv[1]))}
assert set(q) == {"eu-files", "us-files"}, q
for r in q.values():
    assert r["depth"] == 0 and r["bytes"] == 0 and r["dead_letters"] == 0, r
    assert r["delivered_through_seq"] > 0, r
assert q["eu-files"]["region"] == "EU" and q["eu-files"]["kind"] == "file"
PY
s=$(cg_ctl show eu-1/1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
[[ $s == forwarded ]] || cg_fail "eu-1/1 is '$s' after delivery, want forwarded"
cg_gw_stop

# A plugin built for another ABI version is refused, naming the reason.
mkdir -p "$CG_T/bad"
cat >"$CG_T/bad.yaml" <<YAML
gateway: { id: g, data_dir: "$CG_T/baddata", plugin_dir: "$CG_TOOLS/badplugins" }
regions: { US: { upstreams: [ { name: x, kind: badabi } ] } }
YAML
rc=0; "$CG_BIN/crashgated" --check-config "$CG_T/bad.yaml" 2>"$CG_T/bad.err" || rc=$?
((rc == 3)) && grep -q "ABI version 3; this gateway speaks version 2" "$CG_T/bad.err" ||
  cg_fail "wrong-ABI plugin: exit $rc, $(cat "$CG_T/bad.err")"
# A plugin key that is wrong is reported with its position.
cat >"$CG_T/bad2.yaml" <<YAML
gateway: { id: g, data_dir: "$CG_T/baddata" }
regions: { US: { upstreams: [ { name: x, kind: file, path: /tmp/x, fsync: maybe } ] } }
YAML
rc=0; "$CG_BIN/crashgated" --check-config "$CG_T/bad2.yaml" 2>"$CG_T/bad2.err" || rc=$?
((rc == 3)) && grep -q "bad2.yaml:2:75: regions.US.upstreams\[0\].fsync: 'maybe' is not a boolean" "$CG_T/bad2.err" ||
  cg_fail "bad plugin key: exit $rc, $(cat "$CG_T/bad2.err")"
cg_pass "each region's dumps reach only its upstream, in order, in bounded batches; restart resumes; wrong ABI refused"
