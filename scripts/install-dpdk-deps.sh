#!/usr/bin/env bash
# What `cargo build --features dpdk` needs: DPDK 22.11 from Debian (libdpdk-dev, found
# with pkg-config; its drivers, net_pcap among them, come with the dpdk package), a C
# compiler for the shim, and libclang for bindgen.
set -euo pipefail

need_apt=()
for pkg in dpdk libdpdk-dev pkg-config clang libclang-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
echo "dpdk build dependencies ready: libdpdk $(pkg-config --modversion libdpdk)"
