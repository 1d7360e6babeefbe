#!/usr/bin/env bash
# The demo: install what is missing, build, make sure a Mosquitto broker runs
# on 127.0.0.1:1883 (starting one with the shipped configuration and ACL if
# none is running), run crashgated on the example configuration, send a real
# crash dump as a simulated device, and list what the gateway stored.
# Everything it creates lives in ./.demo (delete it to start over).
set -euo pipefail
cd "$(dirname "$0")"
./install-deps.sh
echo "== building"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
bin=$PWD/build/gateway
# The output plugins the demo's upstream (a directory) needs.
export CRASHGATE_PLUGIN_DIR=$PWD/build/plugins
demo=$PWD/.demo
mkdir -p "$demo"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { local i; for ((i = 0; i < 100; i++)); do "$@" && return 0; sleep 0.1; done; return 1; }

password_file=""
device_auth=()
if port_open 1883; then
  echo "== a broker already runs on 127.0.0.1:1883: using it (anonymous logins)"
else
  echo "== starting Mosquitto on 127.0.0.1:1883 with config/mosquitto.conf and config/mosquitto.acl"
  mkdir -p "$demo/broker"
  (umask 077; head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$demo/crashgate.pw"
   head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$demo/demo-device-01.pw")
  mosquitto_passwd -b -c "$demo/passwd" crashgate "$(cat "$demo/crashgate.pw")" >/dev/null
  mosquitto_passwd -b "$demo/passwd" demo-device-01 "$(cat "$demo/demo-device-01.pw")" >/dev/null
  sed -e "s|^password_file .*|password_file $demo/passwd|" \
      -e "s|^acl_file .*|acl_file $PWD/config/mosquitto.acl|" \
      -e "s|^persistence_location .*|persistence_location $demo/broker/|" \
      config/mosquitto.conf >"$demo/mosquitto.conf"
  mosquitto -c "$demo/mosquitto.conf" >"$demo/mosquitto.log" 2>&1 &
  pids+=($!)
  wait_for port_open 1883 || { cat "$demo/mosquitto.log"; exit 1; }
  password_file=$demo/crashgate.pw
  device_auth=(--password-file "$demo/demo-device-01.pw")
fi

# The admin API: a free loopback port and a token of its own.
admin_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
[[ -s $demo/admin.token ]] || (umask 077; head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$demo/admin.token")
sed -e "s|@DATA_DIR@|$demo/data|" -e "s|@PORT@|1883|" -e "s|@PASSWORD_FILE@|$password_file|" \
  -e "s|@ADMIN_PORT@|$admin_port|" -e "s|@TOKEN_FILE@|$demo/admin.token|" \
  config/demo.yaml >"$demo/crashgate.yaml"
[[ -n $password_file ]] || sed -i '/password_file/d; /username/d' "$demo/crashgate.yaml"
echo "== starting crashgated (log: .demo/crashgated.log)"
"$bin/crashgated" -c "$demo/crashgate.yaml" 2>"$demo/crashgated.log" &
gw=$!
pids+=($gw)
wait_for grep -q "subscribed to" "$demo/crashgated.log" || { cat "$demo/crashgated.log"; exit 1; }

# A real crash dump: a Linux ELF core of a segfaulting program from the shared
# fixtures when they are beside this checkout, otherwise a real ELF core of a
# process on this machine (gcore).
dump=../shared/fixtures/elf-core/crash_segv.core
if [[ ! -f $dump ]]; then
  sleep 30 & victim=$!
  gcore -o "$demo/sleep" "$victim" >/dev/null 2>&1 || true
  kill "$victim" 2>/dev/null || true
  dump=$demo/sleep.$victim
  [[ -f $dump ]] || { echo "gcore could not make a core; using /bin/true as a raw dump"; dump=/bin/true; }
fi
echo "== device demo-device-01 sends $dump ($(stat -c %s "$dump") bytes) in 1 KiB chunks, shuffled"
"$bin/crashgate-send" --uri tcp://127.0.0.1:1883 --device demo-device-01 "${device_auth[@]}" \
  --chunk-size 1024 --shuffle --format 3 --fw-version demo-1.0 "$dump"

ctl=("$bin/crashgatectl" -c "$demo/crashgate.yaml")
echo "== crashgatectl health --ready (the admin API on 127.0.0.1:$admin_port)"
"${ctl[@]}" health --ready
echo "== crashgatectl list (over the admin API)"
"${ctl[@]}" list
echo "== crashgatectl show (newest) --json"
"$bin/crashgatectl" -c "$demo/crashgate.yaml" list --json | python3 -c '
import json, sys
rows = [d for d in json.load(sys.stdin) if "seq" in d]
print(max(rows, key=lambda d: d["seq"])["id"])' | xargs "${ctl[@]}" show --json
echo "== forwarded upstream (region US, the file plugin): batches in .demo/data/outbox"
for i in $(seq 1 50); do ls "$demo/data/outbox"/batch-*.cbor >/dev/null 2>&1 && break; sleep 0.2; done
ls -l "$demo/data/outbox" 2>/dev/null | tail -3
"${ctl[@]}" queue
echo "== a few of its Prometheus metrics (curl $admin_port/metrics with the token)"
curl -s -H "Authorization: Bearer $(cat "$demo/admin.token")" "http://127.0.0.1:$admin_port/metrics" |
  grep -E '^crashgate_(chunks_received_total|dumps_completed_total|store_bytes|upstream_dumps_delivered_total)' || true
kill -TERM "$gw"
wait "$gw" || true
echo "== done: the store is in .demo/data; run ./demo.sh again to send another dump"
