#!/usr/bin/env bash
# Install what crashgate needs from Debian 12's packages, only what is missing.
# Used by demo.sh and test.sh; safe to run again.
set -euo pipefail
pkgs=(
  build-essential cmake pkg-config             # toolchain
  libpaho-mqtt-dev libcbor-dev librocksdb-dev  # MQTT client, CBOR, store
  libssl-dev libyaml-dev zlib1g-dev uthash-dev libjansson-dev
  libcurl4-openssl-dev libzstd-dev             # http and sentry output plugins
  libmicrohttpd-dev                            # admin endpoint, test HTTP servers
  mosquitto mosquitto-clients openssl python3  # broker and tools for demo and tests
  curl python3-prometheus-client               # admin endpoint tests (metrics parsed by Prometheus's parser)
  libcmocka-dev                                # unit tests
  clang libclang-rt-14-dev                     # fuzzing (libFuzzer)
  gdb                                          # gcore: the demo makes a real ELF core
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  ((EUID == 0)) || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
