#!/usr/bin/env bash
# A fixture of our own: a small crasher is compiled here, run under gdb
# until it faults, and its core written with gdb's generate-core-file. The
# core goes through the broker; the decoded crash must name the fault the
# toolchain says it is: SIGSEGV, the PC inside crash_here() (from nm), the
# module "crasher", and the executable's GNU build id (from readelf). The
# same crash from a second run (other ASLR base) has the same signature.
source "$(dirname "$0")/gw.sh"
CG_DEVICES="c1 c2"
cg_setup mosquitto python3 gcc gdb nm readelf
cat >"$CG_T/crasher.c" <<'C'
#include <stdio.h>
__attribute__((noinline)) void crash_here(volatile int *p) { *p = 42; }
int main(int argc, char **argv)
{
	(void)argv;
	crash_here(argc > 5 ? (volatile int *)&argc : (volatile int *)0);
	puts("not reached");
	return 0;
}
C
gcc -O0 -g -Wl,--build-id -o "$CG_T/crasher" "$CG_T/crasher.c" || cg_fail "cannot build the crasher"
for run in 1 2; do
  (cd "$CG_T" && timeout 60 gdb -nx -batch -ex run -ex "generate-core-file $CG_T/crasher.$run.core" ./crasher) \
    >"$CG_T/gdb.$run.log" 2>&1 || true
  [[ -s $CG_T/crasher.$run.core ]] || cg_skip "gdb could not write a core here (ptrace?): $(tail -3 "$CG_T/gdb.$run.log")"
done
read -r sym_addr sym_size < <(nm -S "$CG_T/crasher" | awk '$4 == "crash_here" { print $1, $2 }')
build_id=$(readelf -n "$CG_T/crasher" | awk '/Build ID/ { print $3 }')
[[ -n $sym_addr && -n $build_id ]] || cg_fail "nm/readelf found no crash_here or build id"

cg_start_broker
cg_gw_config
cg_gw_start
cg_send c1 "$CG_T/crasher.1.core" --dump-id 1 --chunk-size 4096 >/dev/null || cg_fail "core 1 not complete"
cg_send c2 "$CG_T/crasher.2.core" --dump-id 1 --chunk-size 1000 >/dev/null || cg_fail "core 2 not complete"
cg_ctl show c1/1 --json >"$CG_T/c1.json"
cg_ctl show c2/1 --json >"$CG_T/c2.json"
python3 - "$CG_T/c1.json" "$CG_T/c2.json" "$sym_addr" "$sym_size" "$build_id" <<'PY' ||
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
lo, size, bid = int(sys.argv[3], 16), int(sys.argv[4], 16), sys.argv[5]
for d in (a, b):
    c = d["crash"]
    assert d["format"] == "elf-core", d
    assert c.get("signal") == 11 and c.get("reason") == "SIGSEGV", c
    assert c.get("module") == "crasher", c
    off = int(c["module_offset"], 16)
    assert lo <= off < lo + size, ("PC outside crash_here", hex(off), hex(lo), hex(size))
    assert d.get("build_id") == bid, (d.get("build_id"), bid)
    assert not c.get("decode_error"), c
assert a["signature"] == b["signature"], (a["signature"], b["signature"])
PY
  cg_fail "decoded crash differs from the toolchain's view: $(cat "$CG_T/c1.json")"
cg_gw_stop
cg_pass "a crasher built here decodes to SIGSEGV in crash_here() with its build id"
