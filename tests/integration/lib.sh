# shellcheck shell=bash
# Integration-test harness for crashgate: sourced by tests/integration/test_*.sh.
#
# Environment (set by ctest, see tests/CMakeLists.txt):
#   CG_BIN       build/gateway directory holding the binaries
#   CG_SRC       repository root (default: derived from this file's location)
#   CG_TEST_TMP  scratch root (default /tmp); each test gets a fresh dir below it
#   CG_KEEP=1    keep the test's temp dir (broker log, config, certs) after exit
#   CG_SKIP_RC   exit status of a skipped test (default 77, ctest SKIP_RETURN_CODE)
#
# Everything runs on 127.0.0.1/localhost, every wait is bounded, and every process a
# test starts through this library (or registers with cg_track_pid) is killed on exit.
#
# Call the functions directly, not in a $(...) subshell, except cg_free_port: they
# export variables and start background processes that must belong to the test shell.

CG_SRC=${CG_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CG_BIN=${CG_BIN:-$CG_SRC/build/gateway}
export CG_SRC CG_BIN

CG_NAME=${CG_NAME:-$(basename "${0%.sh}")}
CG__PIDS=()
CG__BROKER_TLS=0
CG__BROKER_REQUIRE_CERT=0

# ---------------------------------------------------------------------------
# Output and exit
# ---------------------------------------------------------------------------

# cg_log MSG... : progress line on stderr.
cg_log() {
  printf '[%s %s] %s\n' "$CG_NAME" "$(date +%H:%M:%S)" "$*" >&2
}

# cg_fail MSG... : print FAIL with the tail of the broker log, exit 1.
cg_fail() {
  printf 'FAIL: %s: %s\n' "$CG_NAME" "$*" >&2
  if [[ -n ${CG_T:-} && -s $CG_T/broker.log ]]; then
    printf -- '--- last lines of %s ---\n' "$CG_T/broker.log" >&2
    tail -n 30 "$CG_T/broker.log" >&2 || true
    printf -- '---\n' >&2
  fi
  [[ ${CG_KEEP:-0} == 1 ]] || printf '(rerun with CG_KEEP=1 to keep the temp dir)\n' >&2
  exit 1
}

# cg_pass MSG... : print PASS, exit 0.
cg_pass() {
  printf 'PASS: %s: %s\n' "$CG_NAME" "$*"
  exit 0
}

# cg_skip MSG... : print SKIP with the reason, exit $CG_SKIP_RC (77).
cg_skip() {
  printf 'SKIP: %s: %s\n' "$CG_NAME" "$*"
  exit "${CG_SKIP_RC:-77}"
}

# cg_require CMD... : skip the test unless every command is installed.
cg_require() {
  local c missing=()
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  ((${#missing[@]} == 0)) || cg_skip "not installed: ${missing[*]}"
}

# ---------------------------------------------------------------------------
# Setup, process tracking, cleanup
# ---------------------------------------------------------------------------

# cg_setup [CMD...] : strict mode, require CMD... (skip if missing), create the temp
# dir $CG_T, install the cleanup trap.
cg_setup() {
  set -euo pipefail
  cg_require timeout "$@"
  local root=${CG_TEST_TMP:-/tmp}
  mkdir -p "$root"
  CG_T=$(mktemp -d "$root/$CG_NAME.XXXXXX")
  export CG_T
  trap cg__cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  cg_log "temp dir $CG_T"
}

# cg_track_pid PID : kill PID when the test exits.
cg_track_pid() {
  CG__PIDS+=("$1")
}

# cg__untrack_pid PID : forget PID (it has exited; its number may be reused).
cg__untrack_pid() {
  local p keep=()
  for p in "${CG__PIDS[@]}"; do
    [[ $p == "$1" ]] || keep+=("$p")
  done
  CG__PIDS=("${keep[@]}")
}

# cg__stop_pid PID [SIGNAL] : signal a process and wait (bounded) until it is gone.
cg__stop_pid() {
  local pid=$1 sig=${2:-TERM} i
  kill -s "$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do            # up to 10 s
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    cg_log "pid $pid ignored SIG$sig for 10 s, sending SIGKILL"
    kill -s KILL "$pid" 2>/dev/null || true
  fi
  { wait "$pid"; } 2>/dev/null || true     # also silences bash's "Killed" notice
  cg__untrack_pid "$pid"
}

cg__cleanup() {
  local rc=$? pid
  set +e
  trap - EXIT INT TERM
  for pid in "${CG__PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill -s TERM "$pid" 2>/dev/null
  done
  for pid in "${CG__PIDS[@]}"; do
    cg__stop_pid "$pid" TERM
  done
  if [[ -n ${CG_T:-} && -d $CG_T ]]; then
    if [[ ${CG_KEEP:-0} == 1 ]]; then
      cg_log "kept $CG_T"
    else
      rm -rf -- "$CG_T"
    fi
  fi
  exit "$rc"
}

# ---------------------------------------------------------------------------
# Waiting and ports
# ---------------------------------------------------------------------------

# cg_wait_for [--timeout S] CMD... [--timeout S] : run CMD every 0.1 s until it
# succeeds; return 1 after S seconds (default 10). Use: cg_wait_for ... || cg_fail ...
cg_wait_for() {
  local timeout=10 args=()
  while (($#)); do
    if [[ $1 == --timeout ]]; then
      timeout=$2
      shift 2
    else
      args+=("$1")
      shift
    fi
  done
  local deadline=$((SECONDS + timeout))
  while :; do
    "${args[@]}" >/dev/null 2>&1 && return 0
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# cg_port_open PORT : true when something accepts TCP connections on 127.0.0.1:PORT.
cg_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# cg_free_port : print a TCP port on 127.0.0.1 that is free right now.
cg_free_port() {
  local p i
  if command -v python3 >/dev/null 2>&1 &&
    p=$(timeout 10 python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' 2>/dev/null) &&
    [[ $p =~ ^[0-9]+$ ]]; then
    echo "$p"
    return 0
  fi
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 30000))
    if ! cg_port_open "$p"; then
      echo "$p"
      return 0
    fi
  done
  echo "cg_free_port: no free port found" >&2
  return 1
}

# ---------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------

# cg_gen_certs DIR [DEVICE...] : EC P-256 test PKI valid for 2 days in DIR:
#   ca.crt/ca.key; server.crt/key (CN=localhost, SAN DNS:localhost, IP:127.0.0.1);
#   crashgate.crt/key and DEVICE.crt/key (CN = name, clientAuth), all signed by the CA.
cg_gen_certs() {
  local dir=$1 name
  shift
  command -v openssl >/dev/null 2>&1 || cg_skip "openssl CLI not installed"
  mkdir -p "$dir"
  (
    cd "$dir" || exit 1
    umask 077
    exec 2>>openssl.log
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key || exit 1
    openssl req -new -x509 -key ca.key -out ca.crt -days 2 -sha256 \
      -subj "/O=crashgate test/CN=crashgate test CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" || exit 1
    cg__leaf server localhost \
      "subjectAltName=DNS:localhost,IP:127.0.0.1" "extendedKeyUsage=serverAuth" || exit 1
    for name in crashgate "$@"; do
      cg__leaf "$name" "$name" "extendedKeyUsage=clientAuth" || exit 1
    done
    chmod 644 ./*.crt
    for name in server crashgate "$@"; do
      openssl verify -CAfile ca.crt "$name.crt" >/dev/null || exit 1
    done
  ) || cg_fail "cg_gen_certs failed, see $dir/openssl.log"
}

# cg__leaf FILE CN EXT... : key + CA-signed cert FILE.key/FILE.crt (run in the dir).
cg__leaf() {
  local file=$1 cn=$2
  shift 2
  openssl ecparam -name prime256v1 -genkey -noout -out "$file.key" || return 1
  openssl req -new -key "$file.key" -out "$file.csr" -subj "/O=crashgate test/CN=$cn" || return 1
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyAgreement" "$@" >"$file.ext"
  openssl x509 -req -in "$file.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -out "$file.crt" -days 2 -sha256 -extfile "$file.ext" || return 1
  rm -f "$file.csr" "$file.ext"
}

# ---------------------------------------------------------------------------
# Broker
# ---------------------------------------------------------------------------

# cg_start_broker [--tls] [--require-cert] [--port N]
#   Start Mosquitto with a config derived from the SHIPPED config/mosquitto.conf and
#   config/mosquitto.acl (override the sources with CG_BROKER_CONF / CG_BROKER_ACL):
#   only the `listener 1883 ...` line (-> 127.0.0.1:PORT), persistence_location
#   (-> $CG_T/broker, emptied first), password_file, acl_file, logging and `user`
#   are rewritten. Users: crashgate (random password in $CG_T/crashgate.pw) and each
#   id in $CG_DEVICES (password "pw-<id>", also in $CG_T/<id>.pw).
#   --tls            the listener speaks TLS with certs from cg_gen_certs in
#                    $CG_T/certs (generated for crashgate + $CG_DEVICES if absent)
#   --require-cert   clients must present a certificate; its CN is the username
#                    (require_certificate + use_identity_as_username, as shipped)
#   --port N         listen on N (default: a free port)
#   CG_BROKER_LOG_TYPE  log types (default "error warning notice information";
#                    "all" also logs every denied publish)
# Exports CG_BROKER_PORT, CG_BROKER_PID, CG_BROKER_URI, CG_BROKER_HOST, CG_BROKER_CONF_FILE.
cg_start_broker() {
  local port="" tls=0 reqcert=0
  while (($#)); do
    case $1 in
      --tls) tls=1 ;;
      --require-cert) reqcert=1 ;;
      --port) port=$2; shift ;;
      *) cg_fail "cg_start_broker: unknown option $1" ;;
    esac
    shift
  done
  ((reqcert == 0 || tls == 1)) || cg_fail "cg_start_broker: --require-cert needs --tls"
  [[ -n ${CG_T:-} ]] || cg_fail "cg_start_broker: call cg_setup first"
  cg_require mosquitto mosquitto_passwd
  [[ -z ${CG_BROKER_PID:-} ]] || cg_fail "cg_start_broker: a broker is already running"

  local src_conf=${CG_BROKER_CONF:-$CG_SRC/config/mosquitto.conf}
  local src_acl=${CG_BROKER_ACL:-$CG_SRC/config/mosquitto.acl}
  [[ -r $src_conf ]] || cg_fail "shipped broker config not found: $src_conf"
  [[ -r $src_acl ]] || cg_fail "shipped broker ACL not found: $src_acl"

  CG__BROKER_TLS=$tls
  CG__BROKER_REQUIRE_CERT=$reqcert
  if ((tls)) && [[ ! -f $CG_T/certs/ca.crt ]]; then
    # shellcheck disable=SC2086
    cg_gen_certs "$CG_T/certs" ${CG_DEVICES:-}
  fi

  # Users and passwords: secrets are written to files, never put in configs.
  local pwfile=$CG_T/passwd id
  rm -f "$pwfile"
  (umask 077; head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$CG_T/crashgate.pw")
  mosquitto_passwd -b -c "$pwfile" crashgate "$(cat "$CG_T/crashgate.pw")" >/dev/null ||
    cg_fail "mosquitto_passwd failed"
  for id in ${CG_DEVICES:-}; do
    (umask 077; printf 'pw-%s' "$id" >"$CG_T/$id.pw")
    mosquitto_passwd -b "$pwfile" "$id" "pw-$id" >/dev/null || cg_fail "mosquitto_passwd $id failed"
  done
  chmod 600 "$pwfile"
  cp "$src_acl" "$CG_T/mosquitto.acl"

  rm -rf "$CG_T/broker"
  mkdir -p "$CG_T/broker"

  local attempt
  for ((attempt = 1; attempt <= 3; attempt++)); do
    local p=${port:-$(cg_free_port)}
    cg__write_broker_conf "$src_conf" "$p"
    if cg__launch_broker; then
      return 0
    fi
    # Lost the race for a free port to another process: try another one.
    if [[ -n $port ]] || ! grep -q 'Address already in use' "$CG_T/broker.log"; then
      break
    fi
    cg_log "port $p taken meanwhile, retrying"
  done
  cg_fail "broker did not start (config $CG_BROKER_CONF_FILE)"
}

# cg__write_broker_conf SRC PORT : $CG_T/mosquitto.conf from the shipped SRC.
cg__write_broker_conf() {
  local src=$1 port=$2 conf=$CG_T/mosquitto.conf listener tlsopts="" t
  listener="listener $port 127.0.0.1"
  if ((CG__BROKER_TLS)); then
    # "\n" separates lines: awk -v expands escape sequences.
    tlsopts="cafile $CG_T/certs/ca.crt\\ncertfile $CG_T/certs/server.crt\\nkeyfile $CG_T/certs/server.key"
    if ((CG__BROKER_REQUIRE_CERT)); then
      tlsopts+="\\nrequire_certificate true\\nuse_identity_as_username true"
    fi
  fi
  {
    echo "# Generated by tests/integration/lib.sh from $src; do not edit."
    awk -v listener="$listener" -v tlsopts="$tlsopts" \
      -v pers="$CG_T/broker" -v pw="$CG_T/passwd" -v acl="$CG_T/mosquitto.acl" '
      /^[ \t]*listener[ \t]+1883([ \t]|$)/ {
        print listener; if (tlsopts != "") print tlsopts; n_listener++; next }
      /^[ \t]*persistence_location[ \t]/ { print "persistence_location " pers; n_pers++; next }
      /^[ \t]*password_file[ \t]/        { print "password_file " pw; n_pw++; next }
      /^[ \t]*acl_file[ \t]/             { print "acl_file " acl; n_acl++; next }
      /^[ \t]*(log_dest|log_type|user|pid_file|include_dir)[ \t]/ { next }
      { print }
      END {
        if (n_listener != 1 || n_pers != 1 || n_pw != 1 || n_acl != 1) {
          printf "shipped config must have exactly one each of: listener 1883, persistence_location, password_file, acl_file (found %d %d %d %d)\n", n_listener, n_pers, n_pw, n_acl > "/dev/stderr"
          exit 1
        }
      }' "$src" || cg_fail "cannot derive a test config from $src"
    echo
    echo "# Test overrides"
    echo "log_dest stderr"
    for t in ${CG_BROKER_LOG_TYPE:-error warning notice information}; do
      echo "log_type $t"
    done
    echo "user $(id -un)"
  } >"$conf"
  CG_BROKER_CONF_FILE=$conf
  CG_BROKER_PORT=$port
  CG_BROKER_HOST=127.0.0.1
  if ((CG__BROKER_TLS)); then
    CG_BROKER_HOST=localhost
    CG_BROKER_URI=ssl://localhost:$port
  else
    CG_BROKER_URI=tcp://127.0.0.1:$port
  fi
  export CG_BROKER_CONF_FILE CG_BROKER_PORT CG_BROKER_HOST CG_BROKER_URI
}

# cg__launch_broker : start mosquitto on the generated config, wait for its port.
cg__launch_broker() {
  [[ -z ${CG_BROKER_PID:-} ]] || cg_fail "broker already running (pid $CG_BROKER_PID)"
  if cg_port_open "$CG_BROKER_PORT"; then
    echo "Address already in use (port $CG_BROKER_PORT probed before start)" >>"$CG_T/broker.log"
    return 1
  fi
  echo "=== $(date +%H:%M:%S) mosquitto -c $CG_BROKER_CONF_FILE" >>"$CG_T/broker.log"
  mosquitto -c "$CG_BROKER_CONF_FILE" >>"$CG_T/broker.log" 2>&1 &
  local pid=$!
  cg_track_pid "$pid"
  local deadline=$((SECONDS + 10))
  while ! cg_port_open "$CG_BROKER_PORT"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      cg__untrack_pid "$pid"
      cg_log "mosquitto exited during start-up"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      cg__stop_pid "$pid" KILL
      cg_log "mosquitto did not accept connections on $CG_BROKER_PORT within 10 s"
      return 1
    fi
    sleep 0.05
  done
  CG_BROKER_PID=$pid
  export CG_BROKER_PID
  cg_log "broker pid $pid on $CG_BROKER_URI"
}

# cg_stop_broker : SIGTERM and wait; Mosquitto saves its persistence db on the way out.
cg_stop_broker() {
  [[ -n ${CG_BROKER_PID:-} ]] || return 0
  cg__stop_pid "$CG_BROKER_PID" TERM
  CG_BROKER_PID=
}

# cg_kill_broker : SIGKILL (a crash: only the last autosave survives).
cg_kill_broker() {
  [[ -n ${CG_BROKER_PID:-} ]] || return 0
  cg__stop_pid "$CG_BROKER_PID" KILL
  CG_BROKER_PID=
}

# cg_restart_broker : stop (SIGTERM) and start again on the same port, config, users
# and persistence directory, so sessions, queued and retained messages survive.
cg_restart_broker() {
  [[ -n ${CG_BROKER_CONF_FILE:-} ]] || cg_fail "cg_restart_broker: no broker was started"
  cg_stop_broker
  local i
  for ((i = 0; i < 3; i++)); do
    cg__launch_broker && return 0
    sleep 0.5
  done
  cg_fail "broker did not restart on port $CG_BROKER_PORT"
}

# ---------------------------------------------------------------------------
# MQTT clients (mosquitto_pub / mosquitto_sub against the test broker)
# ---------------------------------------------------------------------------

# cg_mqtt_opts USER : set the array CG_MQTT_OPTS to the connection options for USER
# ("crashgate", a device id, or "-" for anonymous): host, port, password or client
# certificate depending on how the broker was started.
cg_mqtt_opts() {
  local user=$1
  CG_MQTT_OPTS=(-h "$CG_BROKER_HOST" -p "$CG_BROKER_PORT")
  if ((CG__BROKER_TLS)); then
    CG_MQTT_OPTS+=(--cafile "$CG_T/certs/ca.crt")
    if ((CG__BROKER_REQUIRE_CERT)) && [[ $user != - ]]; then
      CG_MQTT_OPTS+=(--cert "$CG_T/certs/$user.crt" --key "$CG_T/certs/$user.key")
      return 0
    fi
  fi
  if [[ $user != - ]]; then
    CG_MQTT_OPTS+=(-u "$user" -P "$(cat "$CG_T/$user.pw")")
  fi
}

# cg_pub USER ARGS... : mosquitto_pub as USER (bounded to 15 s).
cg_pub() {
  local user=$1
  shift
  cg_mqtt_opts "$user"
  timeout 15 mosquitto_pub "${CG_MQTT_OPTS[@]}" "$@"
}

# cg_sub USER ARGS... : mosquitto_sub as USER (bounded to 30 s; pass -W/-C too).
cg_sub() {
  local user=$1
  shift
  cg_mqtt_opts "$user"
  timeout 30 mosquitto_sub "${CG_MQTT_OPTS[@]}" "$@"
}
