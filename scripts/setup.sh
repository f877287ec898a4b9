#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian 12 packages zwire builds, tests and benchmarks with.
# Idempotent: packages already present are not touched, so a second run costs one dpkg query.
set -eu

BUILD_PKGS="meson ninja-build pkg-config gcc libdpdk-dev dpdk libnghttp2-dev libssl-dev \
  libprotobuf-c-dev protobuf-c-compiler protobuf-compiler libconfig-dev libcmocka-dev \
  libjansson-dev libhttp-parser-dev libxdp-dev libbpf-dev"
LAB_PKGS="iproute2 nftables iptables ethtool tcpdump iputils-ping curl openssl procps psmisc \
  python3 python3-h2 python3-grpcio python3-protobuf python3-cryptography nghttp2-proxy nghttp2-client socat \
  iperf3 wrk nginx-light xdp-tools stunnel4"

missing=""
for p in $BUILD_PKGS $LAB_PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "setup: missing packages:$missing (run as root to install them)" >&2
    exit 1
fi
echo "setup: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=300 update -qq
# shellcheck disable=SC2086
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $missing
