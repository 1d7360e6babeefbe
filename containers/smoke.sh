#!/usr/bin/env bash
# Container smoke test (CI, as root): build the gateway image from
# containers/Dockerfile, run containers/compose.yaml (Mosquitto with the shipped
# config/mosquitto.conf and ACL beside the gateway), send one crash dump from a
# simulated device and check that the gateway stored it, that the admin API lists
# it, and that the image's HEALTHCHECK reports healthy.
#
# Self-contained: installs podman, runc, debootstrap, podman-compose and the
# dnsname CNI plugin when missing; points CONTAINERS_CONF at a file it writes
# (/etc is not touched); imports a debootstrap-made Debian 12 root file system as
# docker.io/library/debian:bookworm-slim when no such image exists (no registry
# is needed; the mirror is the one apt uses here); builds a broker image from it.
# Everything it starts is removed on exit, pass or fail; the base and broker
# images stay for the next run. Exit 0 on pass, 1 with the reason and the
# containers' logs on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
started=$SECONDS

BASE_IMAGE=docker.io/library/debian:bookworm-slim
BROKER_IMAGE=localhost/crashgate-smoke-mosquitto:bookworm
project=cgsmoke$$
GW_IMAGE=localhost/crashgate:$project
DEVICE=smoke-device-01
gw_ctr=${project}_gateway_1
mq_ctr=${project}_mosquitto_1
dev_ctr=${project}_device
net=${project}_default

say() { printf '== %s\n' "$*"; }
tmp=$(mktemp -d /tmp/crashgate-smoke.XXXXXX)
compose_up=0
failed_msg=""

fail() {
  failed_msg=$*
  exit 1
}

# Bounded waits: wait_until SECONDS WHAT CMD... runs CMD every 0.5 s.
wait_until() {
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "timed out after ${limit}s waiting for $what"
    sleep 0.5
  done
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if ((rc != 0)); then
    echo "FAIL: ${failed_msg:-a command failed (exit $rc)}" >&2
    for c in "$mq_ctr" "$gw_ctr" "$dev_ctr"; do
      if podman container exists "$c" 2>/dev/null; then
        echo "---- logs of $c" >&2
        podman logs --tail 80 "$c" >&2 2>&1
      fi
    done
    [[ -s $tmp/dumps.json ]] && { echo "---- the last /v1/dumps answer" >&2; cat "$tmp/dumps.json" >&2; echo >&2; }
  fi
  if ((compose_up)); then
    (cd containers && timeout 120 podman-compose -p "$project" down >/dev/null 2>&1)
  fi
  for c in "$dev_ctr" "$gw_ctr" "$mq_ctr"; do
    if podman container exists "$c" 2>/dev/null; then
      timeout 60 podman rm -f -t 10 "$c" >/dev/null 2>&1
    fi
  done
  for v in "${project}_crashgate-data" "${project}_mosquitto-data"; do
    podman volume exists "$v" 2>/dev/null && podman volume rm -f "$v" >/dev/null 2>&1
  done
  podman network exists "$net" 2>/dev/null && podman network rm -f "$net" >/dev/null 2>&1
  podman image exists "$GW_IMAGE" 2>/dev/null && podman rmi -f "$GW_IMAGE" >/dev/null 2>&1
  # The build stage's images, and any untagged layers of the runtime stage.
  podman image prune -f --filter label=org.opencontainers.image.title=crashgate-build >/dev/null 2>&1
  podman image prune -f --filter label=org.opencontainers.image.title=crashgate >/dev/null 2>&1
  rm -rf "$tmp"
  if ((rc == 0)); then
    echo "container smoke test: PASS ($((SECONDS - started)) s)"
  else
    echo "container smoke test: FAIL ($((SECONDS - started)) s)" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'failed_msg="interrupted"; exit 130' INT TERM

# ---- tools --------------------------------------------------------------------
need=()
for p in podman runc debootstrap podman-compose golang-github-containernetworking-plugin-dnsname curl python3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  say "installing ${need[*]}"
  ((EUID == 0)) || fail "must run as root to install ${need[*]}"
  timeout 300 apt-get update -qq || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >"$tmp/apt.log" 2>&1 || { cat "$tmp/apt.log"; fail "apt-get install failed"; }
fi
((EUID == 0)) || fail "rootful podman is needed: run as root"

# The three settings this machine needs (shared/CONTAINERS.md): ulimits within the
# hard limits (no CAP_SYS_RESOURCE), runc (crun refuses hybrid cgroups),
# cgroupfs, and a file events log. Storage settings are left alone.
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
[[ $nofile == unlimited ]] && nofile=1048576
if [[ $nproc == unlimited ]] || ((nproc > 32768)); then nproc=32768; fi
cat >"$tmp/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF=$tmp/containers.conf

# ---- base image: Debian 12 from the mirror apt uses, no registry -----------------
# The first URIs: line of a stanza whose Suites: has no "-security" is the Debian
# mirror; the one with "-security" the security mirror.
mirrors() {
  local f=/etc/apt/sources.list.d/debian.sources
  if [[ -r $f ]]; then
    awk 'BEGIN { RS = ""; FS = "\n" }
         { u = ""; s = ""
           for (i = 1; i <= NF; i++) {
             if ($i ~ /^URIs:/) { u = $i; sub(/^URIs:[ \t]*/, "", u); sub(/[ \t].*/, "", u) }
             if ($i ~ /^Suites:/) s = $i }
           if (u == "") next
           if (s ~ /-security/) { if (sec == "") sec = u } else if (main == "") main = u }
         END { print main; print sec }' "$f"
  elif [[ -r /etc/apt/sources.list ]]; then
    awk '$1 == "deb" && $3 !~ /security/ && !m { m = $2 } $1 == "deb" && $3 ~ /security/ && !s { s = $2 }
         END { print m; print s }' /etc/apt/sources.list
  fi
}
if ! podman image exists "$BASE_IMAGE"; then
  { read -r mirror; read -r secmirror; } < <(mirrors)
  [[ -n ${mirror:-} ]] || fail "no Debian mirror in /etc/apt/sources.list.d/debian.sources"
  say "base image: debootstrap bookworm from $mirror"
  rootfs=$tmp/rootfs
  timeout 600 debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 ||
    { tail -20 "$tmp/debootstrap.log"; fail "debootstrap failed"; }
  {
    echo "deb $mirror bookworm main"
    echo "deb $mirror bookworm-updates main"
    [[ -n ${secmirror:-} ]] && echo "deb $secmirror bookworm-security main"
  } >"$rootfs/etc/apt/sources.list"
  # Slim like the registry's bookworm-slim, so that the measured image size is
  # what a user gets there: no documentation, manual pages or translations
  # (copyright files stay), and no package archives kept after apt runs.
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
    'path-exclude /usr/share/lintian/*' >"$rootfs/etc/dpkg/dpkg.cfg.d/slim"
  clean='rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true'
  printf '%s\n' "DPkg::Post-Invoke { \"$clean\"; };" "APT::Update::Post-Invoke { \"$clean\"; };" \
    'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' >"$rootfs/etc/apt/apt.conf.d/slim"
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/lintian/*
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/var/cache/debconf/*-old
  tar -C "$rootfs" -c . | timeout 300 podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null 2>&1 ||
    fail "podman import of the base image failed"
  rm -rf "$rootfs"
fi

# ---- broker image: Debian's mosquitto on the same base --------------------------
if ! podman image exists "$BROKER_IMAGE"; then
  say "broker image $BROKER_IMAGE"
  printf '%s\n' "FROM $BASE_IMAGE" \
    'RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto && rm -rf /var/lib/apt/lists/*' \
    >"$tmp/Dockerfile.mosquitto"
  timeout 600 podman build --pull=never -q -t "$BROKER_IMAGE" -f "$tmp/Dockerfile.mosquitto" "$tmp" >"$tmp/broker-build.log" 2>&1 ||
    fail "building the broker image failed"
fi

# ---- gateway image ------------------------------------------------------------
say "building the gateway image $GW_IMAGE"
t=$SECONDS
timeout 1200 podman build --pull=never --format docker --layers=false -t "$GW_IMAGE" \
  -f containers/Dockerfile . >"$tmp/build.log" 2>&1 || { tail -40 "$tmp/build.log"; fail "podman build failed"; }
size=$(podman image inspect --format '{{.Size}}' "$GW_IMAGE")
say "image built in $((SECONDS - t)) s: $size bytes ($((size / 1000000)) MB)"
# The HEALTHCHECK survived the build, and the plugins are where the daemon looks.
podman image inspect --format '{{json .Config.Healthcheck}}' "$GW_IMAGE" | grep -q '"health"' ||
  fail "the image has no HEALTHCHECK (built without --format docker?)"
timeout 60 podman run --rm --no-healthcheck --entrypoint /bin/sh "$GW_IMAGE" -ec \
  'test "$(id -u)" != 0
   for k in file http sentry mqtt; do test -f /usr/local/lib/crashgate/plugins/crashgate_out_$k.so; done
   grep -q /usr/local/lib/crashgate/plugins /usr/local/bin/crashgated' ||
  fail "image check: non-root user, plugins in /usr/local/lib/crashgate/plugins compiled in as the default"

# ---- secrets --------------------------------------------------------------------
secrets=$tmp/secrets
mkdir -m 0700 "$secrets"
rand() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
(umask 077
 rand >"$secrets/mqtt_password"
 rand >"$secrets/admin_token"
 rand >"$secrets/device_password")
# mosquitto_passwd ships with the broker image: no host broker needed.
timeout 60 podman run --rm -v "$secrets:/s" --entrypoint /bin/sh "$BROKER_IMAGE" -ec '
  mosquitto_passwd -b -c /s/mosquitto_passwd crashgate "$(cat /s/mqtt_password)"
  mosquitto_passwd -b /s/mosquitto_passwd '"$DEVICE"' "$(cat /s/device_password)"' >/dev/null ||
  fail "mosquitto_passwd failed"
# The gateway runs as uid 10001 (the image's user crashgate).
chown 10001:10001 "$secrets/mqtt_password" "$secrets/admin_token" "$secrets/device_password"
chmod 0400 "$secrets/mqtt_password" "$secrets/admin_token" "$secrets/device_password"
chmod 0600 "$secrets/mosquitto_passwd"

# ---- the stack ----------------------------------------------------------------------
admin_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mqtt_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export MQTT_IMAGE=$BROKER_IMAGE CRASHGATE_IMAGE=$GW_IMAGE CRASHGATE_SECRETS=$secrets \
  ADMIN_PORT=$admin_port MQTT_PORT=$mqtt_port MQTT_BIND=127.0.0.1
say "podman-compose -p $project up -d (admin on 127.0.0.1:$admin_port)"
compose_up=1
(cd containers && timeout 180 podman-compose -p "$project" up -d) >"$tmp/compose.log" 2>&1 ||
  { cat "$tmp/compose.log"; fail "podman-compose up failed"; }

token=$(cat "$secrets/admin_token")
api() { curl -fsS --max-time 5 -H "Authorization: Bearer $token" "http://127.0.0.1:$admin_port$1"; }
wait_until 60 "the admin endpoint's /healthz" curl -fsS --max-time 2 "http://127.0.0.1:$admin_port/healthz"
wait_until 60 "/readyz (the gateway connected to the broker)" api /readyz
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$admin_port/readyz")
[[ $code == 401 ]] || fail "/readyz without the token answered $code, not 401"
say "/readyz 200 with the token, 401 without"

# ---- a device sends a crash --------------------------------------------------------
# A real ELF core from the shared fixtures when they are beside the checkout,
# otherwise 200 KiB of random bytes (a raw dump).
dump=$src/../shared/fixtures/elf-core/crash_segv.core
if [[ -f $dump ]]; then
  cp "$dump" "$tmp/dump"
else
  head -c 204800 /dev/urandom >"$tmp/dump"
fi
chmod 0444 "$tmp/dump"
dump_size=$(stat -c %s "$tmp/dump")
say "device $DEVICE sends a $dump_size-byte dump through the broker (a container on the compose network)"
# The device is the image's crashgate-send in its own container on the stack's
# network: it reaches the broker by its service name, like a device on the site LAN.
timeout 120 podman run --rm --no-healthcheck --name "$dev_ctr" --network "$net" \
  -v "$tmp/dump:/dump:ro" -v "$secrets/device_password:/device_password:ro" \
  --entrypoint crashgate-send "$GW_IMAGE" \
  --uri tcp://mosquitto:1883 --device "$DEVICE" --password-file /device_password \
  --chunk-size 4096 --shuffle --fw-version smoke-1.0 --timeout 15 /dump >"$tmp/send.log" 2>&1 ||
  { rc=$?; cat "$tmp/send.log"; fail "crashgate-send exited $rc (0 = ack complete)"; }
grep -qi complete "$tmp/send.log" || { cat "$tmp/send.log"; fail "no 'complete' ack in crashgate-send's output"; }
say "ack complete"

# ---- the admin API lists it ---------------------------------------------------------
check_listed() {
  api "/v1/dumps?device=$DEVICE" >"$tmp/dumps.json" || return 1
  python3 - "$tmp/dumps.json" "$DEVICE" "$dump_size" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
rows = doc["dumps"]
ok = [d for d in rows if d.get("device") == sys.argv[2] and d.get("size") == int(sys.argv[3])]
sys.exit(0 if ok else 1)
EOF
}
wait_until 30 "the dump in /v1/dumps (device $DEVICE, size $dump_size)" check_listed
say "/v1/dumps lists it: $(head -c 300 "$tmp/dumps.json")"

# The file upstream wrote a batch into the data volume: the plugin was found.
wait_until 30 "a batch from the file upstream in /var/lib/crashgate/outbox" \
  timeout 10 podman exec "$gw_ctr" sh -c 'ls /var/lib/crashgate/outbox/batch-*'
say "forwarded to the file upstream (plugin loaded from the image's default plugin_dir)"

# crashgatectl in the container reads the same configuration and store.
timeout 30 podman exec "$gw_ctr" crashgatectl -c /etc/crashgate/crashgate.yaml list >"$tmp/ctl.log" 2>&1 &&
  grep -q "$DEVICE" "$tmp/ctl.log" || { cat "$tmp/ctl.log"; fail "crashgatectl list in the container does not show $DEVICE"; }
say "crashgatectl list in the container shows it"

# Published ports: the admin API on the host's loopback only.
ports=$(podman port "$gw_ctr")
[[ $ports == "8080/tcp -> 127.0.0.1:$admin_port" ]] || fail "admin port published as '$ports', not on 127.0.0.1 only"

# ---- HEALTHCHECK ---------------------------------------------------------------
# podman runs HEALTHCHECKs from systemd timers; without systemd (CI) they run
# only when asked, which is what `podman healthcheck run` does.
wait_until 60 "podman healthcheck run to pass" timeout 30 podman healthcheck run "$gw_ctr"
health=$(timeout 30 podman inspect --format '{{.State.Health.Status}}' "$gw_ctr" 2>/dev/null ||
         timeout 30 podman inspect --format '{{.State.Healthcheck.Status}}' "$gw_ctr")
[[ $health == healthy ]] || fail "health status is '$health', not healthy"
say "HEALTHCHECK: $health"

# ---- a clean stop -----------------------------------------------------------------
t=$SECONDS
timeout 60 podman stop -t 30 "$gw_ctr" >"$tmp/stop.log" 2>&1 || { cat "$tmp/stop.log"; fail "podman stop of the gateway failed"; }
code=$(timeout 30 podman inspect --format '{{.State.ExitCode}}' "$gw_ctr")
[[ $code == 0 ]] || fail "the gateway exited $code on SIGTERM, not 0"
say "gateway stopped cleanly on SIGTERM in $((SECONDS - t)) s"

say "image size: $size bytes ($((size / 1000000)) MB)"
