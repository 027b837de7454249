#!/usr/bin/env bash
# The benchmark peers, each behind a feature of mdi-benches so a default build compiles
# neither: `iceoryx2` (mdbench ring) and `aeron` (mdbench udp; builds Aeron's C client
# and media driver from source). Prepares the machine for Aeron (clang, libclang,
# libbsd, libuuid, CMake >= 3.30), lints both features and runs their tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/prepare.sh aeron
cargo clippy -p mdi-benches --features aeron,iceoryx2 --all-targets --locked -- -D warnings
cargo nextest run -p mdi-benches --features aeron,iceoryx2 --locked \
    -E 'test(aeron) | test(ring_scenarios)'
