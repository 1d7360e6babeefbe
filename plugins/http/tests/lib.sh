# shellcheck shell=bash
# Shared by plugins/http/tests/test_http.sh and plugins/sentry/tests/test_sentry.sh.
#
# Environment (set by ctest from the plugins' CMakeLists.txt):
#   CG_DRIVE     the driver binary (plugins/http/tests/drive.c)
#   CG_PLUGIN    the plugin .so under test, in ${CG_PLUGIN_BUILD_DIR}
#   CG_TEST_TMP  scratch root (default /tmp); each run gets a fresh dir below it
#   CG_KEEP=1    keep that dir after the run
#
# Network only on 127.0.0.1; every wait is bounded; the server this starts is
# killed on exit.

T_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
T_NAME=${T_NAME:-$(basename "${0%.sh}")}
T_SERVER_PID=
T_PIDS=()
T_CASES=0

t_log() { printf '[%s %s] %s\n' "$T_NAME" "$(date +%H:%M:%S)" "$*" >&2; }

t_fail() {
  printf 'FAIL: %s: %s\n' "$T_NAME" "$*" >&2
  local f
  for f in "${T_OUT:-/nonexistent}".out "${T_OUT:-/nonexistent}".err "${T:-/nonexistent}/server.log"; do
    if [[ -s $f ]]; then
      printf -- '--- %s (last lines) ---\n' "$f" >&2
      tail -n 20 "$f" >&2
    fi
  done
  [[ ${CG_KEEP:-0} == 1 || -z ${T:-} ]] || printf '(rerun with CG_KEEP=1 to keep %s)\n' "$T" >&2
  exit 1
}

t_skip() {
  printf 'SKIP: %s: %s\n' "$T_NAME" "$*"
  exit 77
}

t_pass() {
  printf 'PASS: %s: %d cases\n' "$T_NAME" "$T_CASES"
  exit 0
}

t__cleanup() {
  local rc=$?
  set +e
  local pid i
  for pid in "${T_PIDS[@]}"; do
    kill "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [[ ${CG_KEEP:-0} == 1 ]]; then
    t_log "kept $T"
  else
    rm -rf "$T"
  fi
  exit "$rc"
}

# t_setup: strict mode, tools present (else skip), temp dir $T, cleanup trap,
# no proxy between the plugin and 127.0.0.1.
t_setup() {
  set -euo pipefail
  local c
  for c in python3 timeout cmp; do
    command -v "$c" >/dev/null 2>&1 || t_skip "not installed: $c"
  done
  [[ -n ${CG_DRIVE:-} && -x $CG_DRIVE ]] || t_fail "CG_DRIVE is not an executable (run through ctest)"
  [[ -n ${CG_PLUGIN:-} && -f $CG_PLUGIN ]] || t_fail "CG_PLUGIN is not a file: ${CG_PLUGIN:-}"
  local root=${CG_TEST_TMP:-/tmp}
  mkdir -p "$root"
  T=$(mktemp -d "$root/$T_NAME.XXXXXX")
  trap t__cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
  export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
  t_log "temp dir $T"
}

# t_server [server.py args...]: start the server, wait (10 s at most) for its
# port; sets PORT, REQ (the request directory), CONTROL.
t_server() {
  REQ=$T/req
  CONTROL=$T/control
  : >"$CONTROL"
  python3 "$T_DIR/server.py" --dir "$REQ" --port-file "$T/port" --control "$CONTROL" "$@" \
    >>"$T/server.log" 2>&1 &
  T_SERVER_PID=$!
  T_PIDS+=("$T_SERVER_PID")
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -s $T/port ]] && break
    kill -0 "$T_SERVER_PID" 2>/dev/null || t_fail "server.py exited at start"
    sleep 0.1
  done
  [[ -s $T/port ]] || t_fail "server.py wrote no port within 10 s"
  PORT=$(<"$T/port")
  t_log "server on 127.0.0.1:$PORT"
}

# t_answers JSON...: what the server answers to the next requests, in order
# (later requests get 200).
t_answers() {
  local tmp=$CONTROL.new
  : >"$tmp"
  local a
  for a in "$@"; do printf '%s\n' "$a" >>"$tmp"; done
  mv "$tmp" "$CONTROL"
}

# t_nreq: how many requests the server has recorded.
t_nreq() {
  local n=0 f
  for f in "$REQ"/[0-9][0-9][0-9][0-9].json; do
    [[ -e $f ]] && n=$((n + 1))
  done
  echo "$n"
}

# t_req N: the recorded request number N (1-based), without extension.
t_req() { printf '%s/%04d' "$REQ" "$1"; }

# t_case NAME: start a case; its driver output goes to $T/NAME.{out,err}.
t_case() {
  T_CASES=$((T_CASES + 1))
  T_OUT=$T/$1
  T_BEFORE=$(t_nreq)
  t_log "case $1"
}

# t_drive ARGS...: run the driver (120 s at most) on $CG_PLUGIN; sets
# STATUS, RETRY_MS, ELAPSED_MS, REASON from its last result line and RC.
t_drive() {
  RC=0
  timeout 120 "$CG_DRIVE" "$CG_PLUGIN" "$@" >"$T_OUT.out" 2>"$T_OUT.err" || RC=$?
  [[ $RC != 124 ]] || t_fail "the driver ran for more than 120 s"
  local line
  line=$(grep '^result ' "$T_OUT.out" | tail -n 1 || true)
  STATUS=$(sed -n 's/^result status=\([A-Z]*\) .*/\1/p' <<<"$line")
  RETRY_MS=$(sed -n 's/.* retry_after_ms=\([0-9]*\) .*/\1/p' <<<"$line")
  ELAPSED_MS=$(sed -n 's/.* elapsed_ms=\([0-9]*\) .*/\1/p' <<<"$line")
  REASON=$(sed -n 's/.* reason=\(.*\)$/\1/p' <<<"$line")
  RECORDS=$(grep '^records ' "$T_OUT.out" | tail -n 1 | cut -d' ' -f2 || true)
}

# t_records LIST: each record's own outcome from the last flush ("OK,DROP,-").
t_records() {
  [[ $RECORDS == "$1" ]] || t_fail "record outcomes $RECORDS, expected $1 (reason: $REASON)"
}

# t_expect STATUS [RETRY_MS]: the driver ran and the last flush had that result.
t_expect() {
  [[ $RC == 0 ]] || t_fail "driver exit $RC: $(head -c 300 "$T_OUT.out") $(tail -n 3 "$T_OUT.err")"
  [[ $STATUS == "$1" ]] || t_fail "status $STATUS, expected $1 (reason: $REASON)"
  if (($# > 1)); then
    [[ $RETRY_MS == "$2" ]] || t_fail "retry_after_ms $RETRY_MS, expected $2 (reason: $REASON)"
  fi
}

# t_expect_init_fail PATTERN: init refused with a message matching PATTERN.
t_expect_init_fail() {
  [[ $RC == 3 ]] || t_fail "driver exit $RC, expected 3 (init failed): $(head -c 300 "$T_OUT.out")"
  grep -Eq "^init failed: .*($1)" "$T_OUT.out" || t_fail "init message $(head -c 300 "$T_OUT.out") lacks /$1/"
}

# t_reason_has TEXT: the reason contains TEXT (fixed string).
t_reason_has() {
  [[ $REASON == *"$1"* ]] || t_fail "reason '$REASON' lacks '$1'"
}

# t_new_requests N: exactly N requests reached the server in this case.
t_new_requests() {
  local n=$(($(t_nreq) - T_BEFORE))
  ((n == $1)) || t_fail "$n requests reached the server, expected $1"
}

# t_no_leak SECRET: the secret appears in none of the case's output.
t_no_leak() {
  if grep -qF -- "$1" "$T_OUT.out" "$T_OUT.err"; then
    t_fail "a secret appears in the plugin's output"
  fi
}

# t_free_port: a loopback port nobody listens on (bound, then closed).
t_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
