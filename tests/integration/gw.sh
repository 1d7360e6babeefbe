# shellcheck shell=bash
# Gateway helpers for integration tests, on top of lib.sh: a configuration
# for the test broker, crashgated started/stopped/killed, crashgate-send and
# crashgatectl with the right options.
#
#   cg_gw_config [YAML...]  write $CG_T/gw.yaml (extra top-level YAML appended;
#                           CG_GW_LIMITS / CG_GW_MQTT_EXTRA add keys to those sections;
#                           CG_GW_POLICY replaces the default policy: every device
#                           in one consenting group, region US, a file upstream)
#   cg_gw_start             start crashgated, wait until it has subscribed
#   cg_gw_stop              SIGTERM and wait (bounded)
#   cg_gw_kill              SIGKILL
#   cg_send DEVICE FILE [crashgate-send options...]
#   cg_consent DEVICE       the device's retained consent signal, as crashgate-send --consent
#   cg_ctl ARGS...          crashgatectl --data-dir $CG_T/gw ...
#   cg_start_http_server    the plugins' test HTTP server on a free loopback port:
#                           sets CG_HTTP_PORT, CG_HTTP_REQ (one file per request),
#                           CG_HTTP_CONTROL (JSON lines: the next answers; empty: 200)

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CG_GW_PID=
CG_GW_RUNS=0

cg_gw_default_policy() {
  cat <<YAML
default_region: US
regions:
  US: { upstreams: [ { name: us-files, kind: file, path: "$CG_T/outbox-us" } ] }
groups:
  - { name: everyone, devices: ["*"], crash_dumps: enabled }
YAML
}

cg_gw_config() {
  local tls=""
  if ((CG__BROKER_TLS)); then
    tls="
  tls:
    ca_file: $CG_T/certs/ca.crt"
    if ((CG__BROKER_REQUIRE_CERT)); then
      tls+="
    cert_file: $CG_T/certs/crashgate.crt
    key_file: $CG_T/certs/crashgate.key"
    fi
  fi
  local auth="
  username: crashgate
  password_file: $CG_T/crashgate.pw"
  ((CG__BROKER_REQUIRE_CERT)) && auth=""
  cat >"$CG_T/gw.yaml" <<YAML
gateway:
  id: it-gw
  data_dir: $CG_T/gw
  ${CG_GW_GATEWAY_EXTRA:-}
mqtt:
  uri: "$CG_BROKER_URI"
  client_id: crashgate-it
  reconnect_min: 1s
  reconnect_max: 2s${auth}${tls}
  ${CG_GW_MQTT_EXTRA:-}
limits:
  max_open_dumps_per_device: 8
  ${CG_GW_LIMITS:-}
${CG_GW_POLICY:-$(cg_gw_default_policy)}
$*
YAML
}

cg_gw_start() {
  [[ -f $CG_T/gw.yaml ]] || cg_gw_config
  CG_GW_RUNS=$((CG_GW_RUNS + 1))
  local log=$CG_T/gw.$CG_GW_RUNS.log
  "$CG_BIN/crashgated" -c "$CG_T/gw.yaml" ${CG_GW_ARGS:-} 2>"$log" &
  CG_GW_PID=$!
  cg_track_pid "$CG_GW_PID"
  # A fresh store must see its subscription granted; a restart resumes the
  # persistent session as soon as it is connected.
  local ready="subscribed to"
  [[ -d $CG_T/gw/store ]] && ready="connected to"
  cg_wait_for --timeout 20 grep -q "$ready" "$log" ||
    { tail -20 "$log" >&2; cg_fail "crashgated did not subscribe (log $log)"; }
}

cg_gw_log() {
  echo "$CG_T/gw.$CG_GW_RUNS.log"
}

cg_gw_stop() {
  [[ -n $CG_GW_PID ]] || return 0
  kill -TERM "$CG_GW_PID" 2>/dev/null || true
  local i
  for ((i = 0; i < 200; i++)); do
    kill -0 "$CG_GW_PID" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$CG_GW_PID" 2>/dev/null && cg_fail "crashgated did not stop within 10 s of SIGTERM"
  local rc=0
  wait "$CG_GW_PID" 2>/dev/null || rc=$?
  CG_GW_PID=
  # A clean stop exits 0; under the sanitizers a leak or UB report does not.
  ((rc == 0)) || { tail -30 "$(cg_gw_log)" >&2; cg_fail "crashgated exited $rc after SIGTERM"; }
}

cg_gw_kill() {
  [[ -n $CG_GW_PID ]] || return 0
  kill -KILL "$CG_GW_PID" 2>/dev/null || true
  wait "$CG_GW_PID" 2>/dev/null || true
  CG_GW_PID=
}

cg_send() {
  local dev=$1 file=$2
  shift 2
  local auth=(--password-file "$CG_T/$dev.pw")
  local tls=()
  if ((CG__BROKER_TLS)); then
    tls=(--cafile "$CG_T/certs/ca.crt")
    if ((CG__BROKER_REQUIRE_CERT)); then
      tls+=(--cert "$CG_T/certs/$dev.crt" --key "$CG_T/certs/$dev.key")
      auth=()
    fi
  fi
  timeout 300 "$CG_BIN/crashgate-send" --uri "$CG_BROKER_URI" --device "$dev" "${auth[@]}" "${tls[@]}" "$@" "$file"
}

# cg_consent DEVICE: print the device's retained consent signal
# ("enabled=... group=... issued_at=... valid_for=..."); exit 0/4/6 as crashgate-send.
cg_consent() {
  local dev=$1
  timeout 60 "$CG_BIN/crashgate-send" --uri "$CG_BROKER_URI" --device "$dev" \
    --password-file "$CG_T/$dev.pw" --timeout 5 --consent
}

cg_start_http_server() {
  CG_HTTP_REQ=$CG_T/requests CG_HTTP_CONTROL=$CG_T/control
  mkdir -p "$CG_HTTP_REQ"
  : >"$CG_HTTP_CONTROL"
  python3 "$CG_SRC/plugins/http/tests/server.py" --dir "$CG_HTTP_REQ" --port-file "$CG_T/http.port" \
    --control "$CG_HTTP_CONTROL" --lifetime 250 &
  cg_track_pid $!
  cg_wait_for --timeout 10 test -s "$CG_T/http.port" || cg_fail "the test HTTP server did not start"
  CG_HTTP_PORT=$(cat "$CG_T/http.port")
}

cg_ctl() {
  timeout 60 "$CG_BIN/crashgatectl" --data-dir "$CG_T/gw" "$@"
}

# cg_random_file PATH SIZE : SIZE bytes of random data.
cg_random_file() {
  head -c "$2" /dev/urandom >"$1"
}

# cg_assert_stored DEVICE DUMP_ID FILE : the store holds exactly FILE's bytes.
cg_assert_stored() {
  local out=$CG_T/download.$1.$2
  cg_ctl download "$1/$2" -o "$out" || cg_fail "dump $1/$2 is not in the store"
  cmp -s "$out" "$3" || cg_fail "dump $1/$2 differs from $3"
  rm -f "$out"
}
