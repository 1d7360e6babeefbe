#!/usr/bin/env bash
# The mqtt output plugin against a real Mosquitto playing the cloud broker
# (cloud-broker.conf, cloud.acl), driven through drive.c exactly as the core
# would: dlopen, option table, init, flush, destroy.
#
#  1. init refuses bad options (scheme, wildcard topic, TLS files on tcp://,
#     unreadable password file) with a reason.
#  2. Batches arrive on the topic byte-identical, in order, and decode as the
#     batch document with the right records and dump bytes (throttled records
#     without a dump, an empty dump, a 4 MiB one); MQTT 5 content type is
#     application/cbor; MQTT 3.1.1 works too.
#  3. Broker stopped: flush says RETRY well within `timeout`; broker back: the
#     same batch goes through on the same plugin instance (reconnect).
#     Broker frozen (SIGSTOP, TCP still up): RETRY after `timeout` for the
#     PUBACK and for the connect; thawed: delivered.
#  4. DROP for a batch above max_message_bytes or the broker's Maximum
#     Packet Size, and for a publish the broker's ACL refuses (PUBACK 0x87);
#     a wrong password is a RETRY.
#  5. Throughput of 4 MiB and 8 MiB batches (printed; 8 MiB must not show
#     Paho's one-second stall per socket buffer, see doorbell.c).
#  6. TLS with the certificates of cg_gen_certs (ssl:// and mqtts://, a
#     client certificate); a server whose chain or name does not verify, or
#     a client without the certificate the broker requires, is refused.
#  7. No password ever appears in anything the plugin printed.
#
# Environment (from plugins/mqtt/CMakeLists.txt): CG_MQTT_DRIVE, CG_MQTT_PLUGIN,
# CG_SRC, CG_TEST_TMP.
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC2034  # CG_NAME and CG_DEVICES are read by lib.sh
CG_NAME=test_mqtt
# shellcheck source=tests/integration/lib.sh
source "${CG_SRC:-$here/../../..}/tests/integration/lib.sh"
cg_setup mosquitto mosquitto_sub mosquitto_passwd cmp openssl
[[ -x ${CG_MQTT_DRIVE:-} && -f ${CG_MQTT_PLUGIN:-} ]] ||
  cg_skip "CG_MQTT_DRIVE / CG_MQTT_PLUGIN not set (run through ctest)"

export CG_BROKER_CONF=$here/cloud-broker.conf CG_BROKER_ACL=$here/cloud.acl
# shellcheck disable=SC2034
CG_DEVICES=reader   # the user that reads what the plugin publishes
LOGS=$CG_T/logs
mkdir -p "$LOGS"

# drive NAME OPTION... -- COMMAND... : run the driver, output in $LOGS/NAME.out
# (stdout) and .err (stderr); prints nothing; returns the driver's status.
drive() {
  local name=$1
  shift
  timeout 120 "$CG_MQTT_DRIVE" "$CG_MQTT_PLUGIN" "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.err"
}

# drive_ok NAME OPTION... -- COMMAND... : drive, which must get through init
# and destroy and exit 0 (whatever the flushes returned).
drive_ok() {
  local rc=0
  drive "$@" || rc=$?
  ((rc == 0)) || cg_fail "$1: driver exited with $rc ($(tail -n 3 "$LOGS/$1.err" | tr '\n' ' '))"
  grep -q '^destroyed$' "$LOGS/$1.out" || cg_fail "$1: destroy not reached"
}

# result NAME I : the I-th "result" line of $LOGS/NAME.out (1-based).
result() {
  grep '^result ' "$LOGS/$1.out" | sed -n "${2}p"
}

# field LINE KEY : the value of KEY=... in a result line (reason: the rest).
field() {
  if [[ $2 == reason ]]; then
    sed -n 's/.* reason=//p' <<<"$1"
  else
    sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"
  fi
}

# expect NAME I STATUS [REASON-REGEX] : the I-th flush of run NAME ended so.
expect() {
  local line
  line=$(result "$1" "$2")
  [[ -n $line ]] || cg_fail "$1: no result #$2 ($(tail -n 3 "$LOGS/$1.err" | tr '\n' ' '))"
  [[ $(field "$line" status) == "$3" ]] || cg_fail "$1: flush #$2: want $3, got: $line"
  if [[ -n ${4:-} ]] && ! grep -Eq -- "$4" <<<"$(field "$line" reason)"; then
    cg_fail "$1: flush #$2: reason does not match /$4/: $line"
  fi
}

# ---------------------------------------------------------------------------
# Interactive driver (a coprocess), for steps that change the broker between
# flushes of one plugin instance.
# ---------------------------------------------------------------------------

# drv_start NAME OPTION... : start the driver reading commands from us.
drv_start() {
  DRV_NAME=$1
  shift
  : >"$LOGS/$DRV_NAME.out"
  coproc DRV { exec "$CG_MQTT_DRIVE" "$CG_MQTT_PLUGIN" "$@" 2>"$LOGS/$DRV_NAME.err"; }
  # Our own copies: bash unsets DRV and DRV_PID when the coprocess exits.
  # shellcheck disable=SC2153  # DRV_PID is set by coproc
  DRV_PID_=$DRV_PID
  exec {DRV_R}<&"${DRV[0]}" {DRV_W}>&"${DRV[1]}"
  cg_track_pid "$DRV_PID_"
}

# drv CMD : send one command, wait (bounded) for its result line into $LINE.
drv() {
  local l
  printf '%s\n' "$*" >&"$DRV_W"
  while IFS= read -r -t 90 l <&"$DRV_R"; do
    printf '%s\n' "$l" >>"$LOGS/$DRV_NAME.out"
    if [[ $l == result* ]]; then
      LINE=$l
      return 0
    fi
  done
  cg_fail "$DRV_NAME: no result for '$*' ($(tail -n 3 "$LOGS/$DRV_NAME.err" | tr '\n' ' '))"
}

# drv_expect STATUS [REASON-REGEX] [MAX-MS] : check $LINE.
drv_expect() {
  [[ $(field "$LINE" status) == "$1" ]] || cg_fail "$DRV_NAME: want $1, got: $LINE"
  if [[ -n ${2:-} ]] && ! grep -Eq -- "$2" <<<"$(field "$LINE" reason)"; then
    cg_fail "$DRV_NAME: reason does not match /$2/: $LINE"
  fi
  if [[ -n ${3:-} ]] && (($(field "$LINE" ms) > $3)); then
    cg_fail "$DRV_NAME: took longer than $3 ms: $LINE"
  fi
}

drv_stop() {
  local l
  printf 'quit\n' >&"$DRV_W"
  while IFS= read -r -t 30 l <&"$DRV_R"; do
    printf '%s\n' "$l" >>"$LOGS/$DRV_NAME.out"
  done
  exec {DRV_R}<&- {DRV_W}>&-
  wait "$DRV_PID_" || cg_fail "$DRV_NAME: driver exited with $?"
  grep -q '^destroyed$' "$LOGS/$DRV_NAME.out" || cg_fail "$DRV_NAME: destroy not reached"
}

# reader_open SESSION TOPIC : a persistent reader session that queues what
# is published on TOPIC from now on. One session per step: mosquitto_sub -C
# may leave with its last message unacknowledged, which the broker then
# delivers again to the same session.
reader_open() {
  cg_mqtt_opts reader
  timeout 30 mosquitto_sub "${CG_MQTT_OPTS[@]}" -V 5 -x 3600 -c -i "$1" -q 1 -t "$2" -E ||
    cg_fail "reader could not subscribe to $2"
}

# collect SESSION TOPIC N FILE [FORMAT] : the first N messages queued for the
# session, raw and concatenated (or one line each in mosquitto_sub's FORMAT).
collect() {
  local fmt=(-N)
  [[ -z ${5:-} ]] || fmt=(-F "$5")
  cg_mqtt_opts reader
  timeout 60 mosquitto_sub "${CG_MQTT_OPTS[@]}" -V 5 -x 3600 -c -i "$1" -q 1 -t "$2" -C "$3" -W 30 \
    "${fmt[@]}" >"$4" || cg_fail "reader got fewer than $3 messages on $2"
}

cg_start_broker
PW=$CG_T/crashgate.pw
BASE=(uri="$CG_BROKER_URI" username=crashgate password_file="$PW")

# ---------------------------------------------------------------------------
cg_log "1. init refuses bad options"
# ---------------------------------------------------------------------------
bad_init() {
  local name=$1 want=$2
  shift 2
  local rc=0
  drive "$name" "$@" -- "flush 1 10" || rc=$?
  [[ $rc == 3 ]] || cg_fail "$name: init should fail (exit 3), got $rc: $(cat "$LOGS/$name.out")"
  grep -Eq "^init failed: .*$want" "$LOGS/$name.out" || cg_fail "$name: reason: $(cat "$LOGS/$name.out")"
}
bad_init scheme 'tcp://, ssl:// or mqtts://' uri=http://127.0.0.1:1 topic=t
bad_init wildcard 'wildcards' "${BASE[@]}" topic='cloud/+/x'
bad_init wildcard2 'wildcards' "${BASE[@]}" topic='cloud/#'
bad_init tlsfiles 'need a TLS uri' "${BASE[@]}" topic=t ca_file=/etc/hostname
bad_init nopw 'password_file .*cannot read' uri="$CG_BROKER_URI" topic=t username=crashgate \
  password_file="$CG_T/absent.pw"
grep -q '^plugin kind=mqtt abi_version=2 ' "$LOGS/scheme.out" || cg_fail "ABI line: $(head -1 "$LOGS/scheme.out")"
drive_ok idle "${BASE[@]}" topic=t -- quit   # init and destroy with no flush in between

# ---------------------------------------------------------------------------
cg_log "2. batches arrive byte-identical and decode"
# ---------------------------------------------------------------------------
mkdir -p "$CG_T/sent"
reader_open r-main cloud/crashes/main
drive_ok deliver "${BASE[@]}" topic=cloud/crashes/main --save "$CG_T/sent" -- \
  "flush 3 1000" "flush 2 t" "flush 1 0" "flush 4 100KiB" "flush 1 4MiB" "flush 5 1"
for i in 1 2 3 4 5 6; do expect deliver $i OK 'published'; done
grep -q 'connected to .* (MQTT 5)' "$LOGS/deliver.err" || cg_fail "deliver: no connect logged"
(($(grep -c 'connected to' "$LOGS/deliver.err") == 1)) || cg_fail "deliver: more than one connection for 6 flushes"
collect r-main cloud/crashes/main 6 "$CG_T/got.bin"
cat "$CG_T"/sent/ok-*.cbor >"$CG_T/want.bin"
cmp "$CG_T/want.bin" "$CG_T/got.bin" || cg_fail "what arrived differs from the batch documents sent"
"$CG_MQTT_DRIVE" --check "$CG_T/got.bin" >"$LOGS/check.out" || cg_fail "check: $(grep bad "$LOGS/check.out")"
diff - <(grep '^doc ' "$LOGS/check.out") <<EOF || cg_fail "decoded batches differ from what was sent"
doc batch=1 records=3 dumps=3 dump_bytes=3000
doc batch=2 records=2 dumps=0 dump_bytes=0
doc batch=3 records=1 dumps=1 dump_bytes=0
doc batch=4 records=4 dumps=4 dump_bytes=409600
doc batch=5 records=1 dumps=1 dump_bytes=4194304
doc batch=6 records=5 dumps=5 dump_bytes=5
EOF
# Content type (MQTT 5) and MQTT 3.1.1.
reader_open r-v cloud/crashes/v
drive_ok v311 "${BASE[@]}" topic=cloud/crashes/v protocol=3.1.1 -- "flush 2 2000"
expect v311 1 OK
grep -q '(MQTT 3.1.1)' "$LOGS/v311.err" || cg_fail "v311: not connected with 3.1.1"
drive_ok ct "${BASE[@]}" topic=cloud/crashes/v -- "flush 1 10"
expect ct 1 OK
collect r-v cloud/crashes/v 2 "$CG_T/ct.txt" '%C|%l'
[[ $(sed -n 1p "$CG_T/ct.txt") == "|"* ]] || cg_fail "3.1.1 message has properties: $(cat "$CG_T/ct.txt")"
[[ $(sed -n 2p "$CG_T/ct.txt") == "application/cbor|"* ]] || cg_fail "content type: $(cat "$CG_T/ct.txt")"

# ---------------------------------------------------------------------------
cg_log "3. broker stopped, restarted, frozen: RETRY, then delivered"
# ---------------------------------------------------------------------------
reader_open r-restart cloud/crashes/restart
drv_start restart "${BASE[@]}" topic=cloud/crashes/restart timeout=3s
drv "flush 2 5000"
drv_expect OK
cg_stop_broker
drv "flush 1 7000"
drv_expect RETRY '' 3500
drv "retry"
drv_expect RETRY '' 3500
cg_restart_broker
drv "retry"
drv_expect OK 'published' 3500
drv "flush 1 100"
drv_expect OK
# Frozen: TCP is accepted but nothing answers.
kill -STOP "$CG_BROKER_PID"
drv "flush 1 300"
drv_expect RETRY 'no PUBACK .* within 3 s' 4500
(($(field "$LINE" ms) >= 2900)) || cg_fail "RETRY before the timeout: $LINE"
drv "retry"
drv_expect RETRY 'not connected .* within 3 s' 4500
kill -CONT "$CG_BROKER_PID"
drv "retry"
drv_expect OK
drv_stop
grep -q 'dropping the connection' "$LOGS/restart.err" || cg_fail "restart: abandoned publish not logged"
# What arrived: the broker's persistence kept the reader's session over the
# restart; a batch whose PUBACK never came may arrive twice (at least once).
collect r-restart cloud/crashes/restart 4 "$CG_T/got2.bin"
"$CG_MQTT_DRIVE" --check "$CG_T/got2.bin" >"$LOGS/check2.out" || cg_fail "check2: $(grep bad "$LOGS/check2.out")"
grep '^doc ' "$LOGS/check2.out" | cut -d' ' -f2 | tr '\n' ' ' | grep -qx 'batch=1 batch=2 batch=3 batch=4 ' ||
  cg_fail "after the restart: $(grep '^doc ' "$LOGS/check2.out" | tr '\n' ' ')"

# ---------------------------------------------------------------------------
cg_log "4. DROP above max_message_bytes and on an ACL refusal; wrong password: RETRY"
# ---------------------------------------------------------------------------
drive_ok drop "${BASE[@]}" topic=cloud/crashes/bench max_message_bytes=64KiB -- \
  "flush 1 100KiB" "flush 2 40KiB" "flush 1 60KiB" "flush 1 65400"
expect drop 1 DROP 'dump data is 102400 bytes, above max_message_bytes \(65536'
expect drop 2 DROP 'dump data is 81920 bytes'
expect drop 3 OK
expect drop 4 DROP 'encoded batch is 65[0-9]{3} bytes, above max_message_bytes \(65536'
drive_ok acl "${BASE[@]}" topic=cloud/forbidden -- "flush 1 10" "flush 1 10"
expect acl 1 DROP 'refused .*Not authorized \(0x87\)'
expect acl 2 DROP 'Not authorized'
(umask 077; printf 'Wr0ng-S3cret-%s\n' "$RANDOM$RANDOM" >"$CG_T/wrong.pw")
drive_ok wrongpw uri="$CG_BROKER_URI" username=crashgate password_file="$CG_T/wrong.pw" topic=cloud/crashes/bench \
  timeout=3s -- "flush 1 10"
expect wrongpw 1 RETRY 'Bad user name or password|Not authorized'
# A broker that announces a Maximum Packet Size (it would disconnect us for a
# larger one, every time): DROP before sending, the connection stays.
cg_stop_broker
sed 's/^message_size_limit 0$/max_packet_size 100000/' "$here/cloud-broker.conf" >"$CG_T/small.conf"
grep -q '^max_packet_size 100000$' "$CG_T/small.conf" || cg_fail "cannot derive small.conf"
CG_BROKER_CONF=$CG_T/small.conf cg_start_broker
drive_ok maxpacket uri="$CG_BROKER_URI" username=crashgate password_file="$PW" topic=cloud/crashes/bench -- \
  "flush 1 150KiB" "flush 1 10"
expect maxpacket 1 DROP "above the broker's maximum packet size \(100000 bytes\)"
expect maxpacket 2 OK
(($(grep -c 'connected to' "$LOGS/maxpacket.err") == 1)) || cg_fail "maxpacket: reconnected"
cg_stop_broker
cg_start_broker
BASE=(uri="$CG_BROKER_URI" username=crashgate password_file="$PW")

# ---------------------------------------------------------------------------
cg_log "5. throughput"
# ---------------------------------------------------------------------------
drive_ok bench "${BASE[@]}" topic=cloud/crashes/bench -- "flush 1 10" "bench 10 1 4MiB" "bench 5 1 8MiB" "bench 20 4 256KiB"
grep '^bench ' "$LOGS/bench.out" >&2
b4=$(grep '^bench count=10 ' "$LOGS/bench.out")
b8=$(grep '^bench count=5 ' "$LOGS/bench.out")
[[ $(field "$b4" ok) == 10 && $(field "$b8" ok) == 5 ]] || cg_fail "bench: not all delivered: $(grep ^bench "$LOGS/bench.out")"
# Paho stalls a second per socket buffer (4 MiB at most) without the doorbell:
# five 8 MiB batches would take at least 5.5 s.
awk -v s="$(field "$b8" seconds)" 'BEGIN { exit !(s < 3.0) }' ||
  cg_fail "8 MiB batches stall: $b8"
printf 'THROUGHPUT tcp: %s\n' "$(tr '\n' ';' < <(grep '^bench ' "$LOGS/bench.out"))"

# ---------------------------------------------------------------------------
cg_log "6. TLS"
# ---------------------------------------------------------------------------
cg_stop_broker
cg_start_broker --tls
reader_open r-tls cloud/crashes/tls
CERTS=$CG_T/certs
TLS=(username=crashgate password_file="$PW" topic=cloud/crashes/tls ca_file="$CERTS/ca.crt" timeout=5s)
drive_ok tls uri="$CG_BROKER_URI" "${TLS[@]}" -- "flush 2 1000" "flush 1 4MiB"
expect tls 1 OK
expect tls 2 OK
drive_ok mqtts uri="mqtts://localhost:$CG_BROKER_PORT" "${TLS[@]}" -- "flush 1 10"
expect mqtts 1 OK
drive_ok tlsbench uri="$CG_BROKER_URI" "${TLS[@]/#topic=*/topic=cloud/crashes/bench}" -- "bench 10 1 4MiB"
grep '^bench ' "$LOGS/tlsbench.out" >&2
printf 'THROUGHPUT tls: %s\n' "$(grep '^bench ' "$LOGS/tlsbench.out")"
collect r-tls cloud/crashes/tls 3 "$CG_T/got3.bin"
"$CG_MQTT_DRIVE" --check "$CG_T/got3.bin" >"$LOGS/check3.out" || cg_fail "check3: $(grep bad "$LOGS/check3.out")"
# A CA that did not sign the server: refused.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=other-ca \
  -keyout "$CG_T/other.key" -out "$CG_T/other.crt" -days 1 2>/dev/null
drive_ok wrongca uri="$CG_BROKER_URI" "${TLS[@]/#ca_file=*/ca_file=$CG_T/other.crt}" -- "flush 1 10"
expect wrongca 1 RETRY 'certificate verify failed'
# The right CA but a server certificate for another name: refused too.
cg_stop_broker
(
  cd "$CERTS" && umask 077 &&
    openssl ecparam -name prime256v1 -genkey -noout -out server.key &&
    openssl req -new -key server.key -out server.csr -subj "/O=crashgate test/CN=elsewhere.example" &&
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyAgreement" \
      "extendedKeyUsage=serverAuth" "subjectAltName=DNS:elsewhere.example" >server.ext &&
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 1 \
      -sha256 -extfile server.ext && chmod 644 server.crt
) 2>>"$CG_T/openssl.log" || cg_fail "cannot make the wrong-name server certificate"
cg_start_broker --tls
drive_ok wrongname uri="$CG_BROKER_URI" "${TLS[@]}" -- "flush 1 10"
expect wrongname 1 RETRY 'does not name the host'
# Control: the chain does verify, so the name is what was refused.
timeout 10 openssl s_client -connect "127.0.0.1:$CG_BROKER_PORT" -CAfile "$CERTS/ca.crt" -verify_return_error \
  </dev/null >"$LOGS/s_client.txt" 2>&1 || cg_fail "control: the wrong-name certificate does not verify at all"
# Client certificate as the identity (CN=crashgate), no password.
cg_stop_broker
rm -f "$CERTS"/*
cg_start_broker --tls --require-cert
drive_ok clientcert uri="$CG_BROKER_URI" topic=cloud/crashes/main ca_file="$CERTS/ca.crt" \
  cert_file="$CERTS/crashgate.crt" key_file="$CERTS/crashgate.key" timeout=5s -- "flush 1 10"
expect clientcert 1 OK
drive_ok nocert uri="$CG_BROKER_URI" topic=cloud/crashes/main ca_file="$CERTS/ca.crt" timeout=3s -- "flush 1 10"
expect nocert 1 RETRY ''

# ---------------------------------------------------------------------------
cg_log "7. no password in any output"
# ---------------------------------------------------------------------------
for secret in "$(cat "$PW")" "$(head -n 1 "$CG_T/wrong.pw")"; do
  [[ -n $secret ]] || cg_fail "empty secret"
  if grep -rlF -- "$secret" "$LOGS" >&2; then
    cg_fail "a password appears in the output above"
  fi
done
grep -rq 'info\] cloud: connected' "$LOGS" || cg_fail "the plugin's log lines are missing"

cg_pass "mqtt plugin: delivery, reconnect, timeouts, DROP, TLS, throughput"
