#!/usr/bin/env bash
# The shipped broker config (config/mosquitto.conf + config/mosquitto.acl) enforces
# SPEC §2: a device publishes only its own chunk/hello and reads only its own
# ack/consent; only the gateway ("crashgate") reads chunks and writes acks/consent;
# anonymous clients are refused. Checked over plain TCP with passwords and over TLS
# with certificate identities. Needs only mosquitto + mosquitto-clients (+ openssl
# for the TLS part).
#
# Method: every reader is a persistent session (clean session off, QoS 1) opened
# before anything is published, so whatever the broker lets through is queued for
# it. Each scenario ends with a legitimate "sentinel" message published last; a
# reader then drains exactly the expected number of messages and the output must
# equal the expected list in order. A forged message that got through would have
# been queued before the sentinel and shows up in the list, so no check waits for a
# timeout to prove a negative.
#
# Readers subscribe to crashgate/v1/# (Mosquitto grants any subscription and
# filters per message on read access), so they catch leaks on any topic.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cg_setup mosquitto mosquitto_pub mosquitto_sub mosquitto_passwd

P=crashgate/v1/dev
export CG_DEVICES="dev-a dev-b"
export CG_BROKER_LOG_TYPE=all   # logs "Denied PUBLISH from ..." lines, handy when it fails

# open_session USER CLIENT_ID TOPIC... : create a persistent QoS 1 session, disconnect.
open_session() {
  local user=$1 id=$2 t args=()
  shift 2
  for t in "$@"; do args+=(-t "$t"); done
  cg_sub "$user" -c -i "$id" -q 1 "${args[@]}" -E >/dev/null ||
    cg_fail "$user could not open its session $id"
}

# drain USER CLIENT_ID N TOPIC... : reconnect the session and print the next N queued
# messages as "topic payload" lines (retained copies re-sent on resubscribe skipped).
drain() {
  local user=$1 id=$2 n=$3 t args=()
  shift 3
  for t in "$@"; do args+=(-t "$t"); done
  cg_sub "$user" -c -i "$id" -q 1 "${args[@]}" -R -v -C "$n" -W 10 || true
}

# expect WHAT EXPECTED ACTUAL : exact comparison.
expect() {
  [[ $3 == "$2" ]] || cg_fail "$1
--- expected ---
$2
--- got ---
$3"
}

# pub_ok USER ARGS... : a publish the broker must accept.
pub_ok() {
  local user=$1
  shift
  cg_pub "$user" -q 1 "$@" || cg_fail "publish as $user failed: $*"
}

# pub_denied USER ARGS... : a publish the ACL must drop. The client still succeeds:
# MQTT 3.1.1 gets an ordinary PUBACK; MQTT 5 gets PUBACK reason 0x87, which
# mosquitto_pub reports as "Publish 1 failed: Not authorized." (exit status 0).
pub_denied() {
  local user=$1 out
  shift
  out=$(cg_pub "$user" "$@" 2>&1) || cg_fail "publish as $user failed to run: $* -> $out"
  if [[ " $* " == *" -V 5 "* && " $* " == *" -q 1 "* ]]; then
    [[ $out == *"Not authorized"* ]] ||
      cg_fail "MQTT 5 publish as $user to a denied topic was not refused with 'Not authorized': $* -> $out"
  fi
}

# refused ARGS... : a connection the broker must refuse.
refused() {
  local out
  if out=$(timeout 15 mosquitto_pub -q 1 -t "$P/dev-a/chunk" -m x "$@" 2>&1); then
    cg_fail "connection was accepted, must be refused: mosquitto_pub $*"
  fi
  [[ $out == *"ot authori"* || $out == *"rror"* ]] || cg_fail "unexpected refusal: $out"
}

# ---------------------------------------------------------------------------
cg_log "part 1: plain listener, password authentication"
cg_start_broker
H=(-h 127.0.0.1 -p "$CG_BROKER_PORT")

refused "${H[@]}"                                   # anonymous
refused "${H[@]}" -V 5                              # anonymous, MQTT 5
refused "${H[@]}" -u dev-a -P wrong-password        # bad password
refused "${H[@]}" -u dev-c -P pw-dev-c              # unknown user
cg_log "anonymous, wrong password and unknown user are refused"

open_session crashgate cg-gw "$P/+/chunk" "$P/+/hello"
open_session dev-a cg-dev-a "crashgate/v1/#"
open_session dev-b cg-dev-b "crashgate/v1/#"

# Chunks and hellos: own topic delivered, other device's topic dropped.
pub_ok     dev-a -t "$P/dev-a/chunk" -m a-chunk-1
cg_pub     dev-a -q 0 -t "$P/dev-a/hello" -m a-hello-qos0 || cg_fail "QoS 0 hello failed"
pub_denied dev-a -q 1 -t "$P/dev-b/chunk" -m forged-b-chunk-v311
pub_denied dev-a -q 1 -V 5 -t "$P/dev-b/chunk" -m forged-b-chunk-v5
pub_denied dev-a -q 0 -t "$P/dev-b/hello" -m forged-b-hello-qos0
pub_denied dev-a -q 1 -t "$P/dev-b/chunk/x" -m forged-deeper
pub_denied dev-a -q 1 -t "$P/dev-a/chunk/x" -m own-deeper
pub_ok     dev-b -t "$P/dev-b/chunk" -m b-chunk-1
pub_ok     dev-a -t "$P/dev-a/chunk" -m a-chunk-end

got=$(drain crashgate cg-gw 4 "$P/+/chunk" "$P/+/hello")
expect "gateway must get exactly the devices' own chunks/hellos (if only the QoS 0 \
hello is missing: check upgrade_outgoing_qos in config/mosquitto.conf)" \
"$P/dev-a/chunk a-chunk-1
$P/dev-a/hello a-hello-qos0
$P/dev-b/chunk b-chunk-1
$P/dev-a/chunk a-chunk-end" "$got"
cg_log "gateway received own-topic chunks only; chunk for dev-b from dev-a dropped"

# Acks and consent: only the gateway writes them, each device reads only its own.
pub_ok     crashgate -t "$P/dev-b/ack" -m ack-b-1
pub_denied dev-a -q 1 -t "$P/dev-a/ack" -m forged-own-ack
pub_denied dev-a -q 1 -V 5 -t "$P/dev-a/ack" -m forged-own-ack-v5
pub_ok     crashgate -r -t "$P/dev-a/consent" -m consent-a-1
pub_denied dev-a -q 1 -r -t "$P/dev-a/consent" -m forged-own-consent
pub_denied dev-a -q 1 -r -V 5 -t "$P/dev-a/consent" -m forged-own-consent-v5
pub_denied dev-b -q 1 -r -t "$P/dev-a/consent" -m forged-consent-by-b
pub_denied dev-a -q 1 -r -t "$P/dev-b/consent" -m forged-consent-for-b
pub_ok     crashgate -t "$P/dev-a/ack" -m ack-a-1
pub_ok     crashgate -r -t "$P/dev-b/consent" -m consent-b-1

got=$(drain dev-a cg-dev-a 2 "crashgate/v1/#")
expect "dev-a must read exactly its own consent and ack, from the gateway only" \
"$P/dev-a/consent consent-a-1
$P/dev-a/ack ack-a-1" "$got"

got=$(drain dev-b cg-dev-b 2 "crashgate/v1/#")
expect "dev-b must read exactly its own ack and consent, from the gateway only" \
"$P/dev-b/ack ack-b-1
$P/dev-b/consent consent-b-1" "$got"

# The retained consent a device reads after a reboot is still the gateway's.
got=$(cg_sub dev-a -t "$P/dev-a/consent" -v -C 1 -W 10 || true)
expect "retained consent of dev-a" "$P/dev-a/consent consent-a-1" "$got"
got=$(cg_sub dev-a -t "$P/dev-b/consent" -t "$P/dev-a/consent" -v -C 1 -W 10 || true)
expect "dev-a must not read dev-b's retained consent" "$P/dev-a/consent consent-a-1" "$got"
cg_log "acks/consent: devices cannot forge them or read other devices'"

# ---------------------------------------------------------------------------
if ! command -v openssl >/dev/null 2>&1; then
  cg_log "SKIP part 2 (TLS): openssl CLI not installed"
  cg_pass "ACL enforced on the plain listener (TLS part skipped)"
fi
cg_log "part 2: TLS listener, certificate identities"
cg_stop_broker
cg_start_broker --tls --require-cert
H=(-h localhost -p "$CG_BROKER_PORT" --cafile "$CG_T/certs/ca.crt")

refused "${H[@]}"                                   # no client certificate
refused "${H[@]}" -u dev-a -P pw-dev-a              # password instead of a certificate
cg_log "clients without a certificate are refused"

open_session crashgate cg-gw-tls "$P/+/chunk" "$P/+/hello"
open_session dev-b cg-dev-b-tls "crashgate/v1/#"

pub_ok     dev-a -t "$P/dev-a/chunk" -m a-tls-1
pub_denied dev-a -q 1 -t "$P/dev-b/chunk" -m forged-b-tls
# The CN is the identity: a username claimed in CONNECT changes nothing.
pub_denied dev-a -q 1 -u dev-b -P pw-dev-b -t "$P/dev-b/chunk" -m forged-b-tls-username
pub_denied dev-a -q 1 -u crashgate -t "$P/dev-b/ack" -m forged-ack-tls-username
pub_ok     crashgate -t "$P/dev-b/ack" -m ack-b-tls
pub_ok     dev-a -t "$P/dev-a/chunk" -m a-tls-end

got=$(drain crashgate cg-gw-tls 2 "$P/+/chunk" "$P/+/hello")
expect "gateway over TLS must get exactly dev-a's own chunks" \
"$P/dev-a/chunk a-tls-1
$P/dev-a/chunk a-tls-end" "$got"
got=$(drain dev-b cg-dev-b-tls 1 "crashgate/v1/#")
expect "dev-b over TLS must get only the gateway's ack" "$P/dev-b/ack ack-b-tls" "$got"

cg_pass "ACL enforced on plain and TLS listeners"
