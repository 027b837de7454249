#!/usr/bin/env bash
# The benchmark peers, each behind a feature of mdi-benches so a default build compiles
# none: `iceoryx2` (mdbench ring), `aeron` (mdbench udp; builds Aeron's C client and
# media driver from source) and `rocksdb` (mdbench archive; Debian's librocksdb).
# Prepares the machine for them (clang, libclang, libbsd, libuuid, CMake >= 3.30,
# librocksdb-dev), lints the features and runs their tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/prepare.sh aeron rocksdb
cargo clippy -p mdi-benches --features aeron,iceoryx2,rocksdb --all-targets --locked -- -D warnings
cargo nextest run -p mdi-benches --features aeron,iceoryx2,rocksdb --locked \
    -E 'test(aeron) | test(ring_scenarios) | test(rocksdb)'
