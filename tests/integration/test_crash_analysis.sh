#!/usr/bin/env bash
# Crash analysis end to end: real dumps from ../shared/fixtures sent through
# the broker are decoded at the edge; `crashgatectl show --json` carries the
# decoded fields and a signature, compared with the reference tools' values
# in expected.json. The same crash sent by two devices has one signature.
source "$(dirname "$0")/gw.sh"
CG_DEVICES="a1 a2"
cg_setup mosquitto python3
fx=$CG_SRC/../shared/fixtures
[[ -f $fx/expected.json ]] || cg_skip "fixtures absent"
cg_start_broker
cg_gw_config
cg_gw_start
files=(elf-core/crash_segv.core elf-core/core_linux64.elf minidump/linux-mini.dmp zephyr/zephyr_cortex_m_v2.bin
       zephyr/zephyr_cortex_m_v2_truncated.bin)
i=0
for f in "${files[@]}"; do
  i=$((i + 1))
  cg_send a1 "$fx/$f" --dump-id "$i" --chunk-size 700 >/dev/null || cg_fail "$f not complete"
  cg_ctl show "a1/$i" --json >"$CG_T/show.$i.json"
done
cg_send a2 "$fx/elf-core/crash_segv.core" --dump-id 1 --chunk-size 4000 >/dev/null || cg_fail "second device"
cg_ctl show a2/1 --json >"$CG_T/show.a2.json"
python3 - "$fx/expected.json" "$CG_T" "${files[@]}" <<'PY' || cg_fail "decoded fields differ from the reference tools"
import json, sys
exp = {f["file"]: f for f in json.load(open(sys.argv[1]))["fixtures"]}
t = sys.argv[2]
for i, f in enumerate(sys.argv[3:], 1):
    got = json.load(open(f"{t}/show.{i}.json"))
    e = exp[f]
    crash = got.get("crash", {})
    assert len(got.get("signature", "")) == 16, (f, got)
    if not e.get("valid", True):
        assert crash.get("decode_error"), (f, crash)
        continue
    for key in ("pc", "sp"):
        if e.get(key):
            assert int(crash[key], 16) == int(e[key], 16), (f, key, crash.get(key), e[key])
    if e.get("lr"):
        assert int(crash["lr"], 16) == int(e["lr"], 16), (f, "lr")
    assert crash.get("arch") == e["arch"], (f, crash.get("arch"), e["arch"])
a1 = json.load(open(f"{t}/show.1.json"))
a2 = json.load(open(f"{t}/show.a2.json"))
assert a1["signature"] == a2["signature"], "same crash, two devices, two signatures"
PY
# crash groups: the segfault seen from two devices is one group of two
sig=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["signature"])' "$CG_T/show.1.json")
cg_ctl signatures --json >"$CG_T/sigs.json"
python3 - "$CG_T/sigs.json" "$sig" <<'PY' || cg_fail "signatures: $(cat "$CG_T/sigs.json")"
import json, sys
groups = {g["signature"]: g for g in json.load(open(sys.argv[1]))}
g = groups[sys.argv[2]]
assert g["count"] == 2 and g["devices"] == 2 and g["throttled"] == 0, g
assert g["reason"] == "SIGSEGV", g
assert g["first_seen"] <= g["last_seen"]
assert len(groups) == 5, len(groups)  # five distinct crashes were sent
PY
cg_ctl signatures | grep -q "$sig" || cg_fail "signatures table lacks $sig"
cg_gw_stop
cg_pass "dumps decoded at the edge match the reference tools; one signature per crash"
