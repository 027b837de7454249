#!/usr/bin/env bash
# Every decoder of outside input, fuzzed briefly: scripts/fuzz.sh [SECONDS per target]
# (default 20). cargo-fuzz wants nightly; RUSTC_BOOTSTRAP=1 stands in on stable.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
./scripts/prepare.sh fuzz
for target in $(cd fuzz && cargo fuzz list); do
    echo "==> fuzz $target (${seconds} s)"
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$seconds")
done
