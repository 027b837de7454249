#!/usr/bin/env bash
# The DPDK receive backend (feature `dpdk`, links Debian's libdpdk 22.11). Prepares the
# machine, lints the feature and runs its tests: the same pcap through mdpub's reader
# and through DPDK's net_pcap device gives identical records.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/prepare.sh dpdk
cargo clippy -p mdi-publisher --features dpdk --all-targets --locked -- -D warnings
cargo nextest run -p mdi-publisher --features dpdk --locked -E 'test(dpdk)'
