#!/usr/bin/env bash
# crashgated --check-config: the shipped example passes; a bad file fails
# with exit 3 and a message naming file, line, column and key; the daemon
# refuses to start on it.
source "$(dirname "$0")/gw.sh"
cg_setup
"$CG_BIN/crashgated" --check-config "$CG_SRC/config/crashgate.example.yaml" >/dev/null ||
  cg_fail "the shipped example does not validate"
"$CG_BIN/crashgatectl" check-config "$CG_SRC/config/crashgate.example.yaml" >/dev/null ||
  cg_fail "crashgatectl check-config rejects the shipped example"
cat >"$CG_T/bad.yaml" <<'YAML'
gateway:
  id: site-1
  data_dir: /tmp/x
limits:
  max_chunk_bytes: 2MiB
YAML
rc=0
out=$("$CG_BIN/crashgated" --check-config "$CG_T/bad.yaml" 2>&1) || rc=$?
[[ $rc == 3 ]] || cg_fail "bad config: exit $rc, expected 3"
[[ $out == "$CG_T/bad.yaml:5:20: limits.max_chunk_bytes: "* ]] || cg_fail "message does not name file:line:col and key: $out"
printf 'gateway:\n  id: x\n  data_dir: /tmp/x\n  colour: blue\n' >"$CG_T/unknown.yaml"
out=$("$CG_BIN/crashgated" -c "$CG_T/unknown.yaml" 2>&1) && cg_fail "the daemon started on an unknown key"
[[ $out == "$CG_T/unknown.yaml:4:3: gateway.colour: "* ]] || cg_fail "unknown key message: $out"
"$CG_BIN/crashgated" --config-reference | grep -q "max_open_dumps_per_device" || cg_fail "reference lacks a key"
# The committed reference is the one the tables print: regenerate it with
#   build/gateway/crashgated --config-reference > config/REFERENCE.md
"$CG_BIN/crashgated" --config-reference | cmp -s - "$CG_SRC/config/REFERENCE.md" ||
  cg_fail "config/REFERENCE.md is stale: regenerate it from crashgated --config-reference"
cg_pass "configuration errors name file:line:column and key"
