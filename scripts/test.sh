#!/usr/bin/env bash
# README's test command: prepares the machine (scripts/prepare.sh installs what is
# missing: iproute2, nftables, cargo-nextest, cargo-deny), then formatting, lints
# (warnings are errors), the dependency policy, every test, the Python package's tests,
# the examples against the demo feed, and the loom model of the ring log's claim/commit protocol. `.ci/run` runs
# exactly this on a clean checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

started=$(date +%s)
step() { printf '\n==> %s (%s s)\n' "$*" "$(( $(date +%s) - started ))"; }

step "prepare the machine"
./scripts/prepare.sh tests

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# the SDK's optional parts: without UDP (a strategy that reads shm only), with tokio
cargo clippy -p mdi-subscriber --no-default-features --all-targets --locked -- -D warnings
cargo clippy -p mdi-subscriber --features tokio --all-targets --locked -- -D warnings
cargo clippy -p mdi-protocol --features schema-codegen --all-targets --locked -- -D warnings

step "cargo deny (bans, licenses, sources; deny.toml)"
cargo deny --log-level error check bans licenses sources

step "tests"
# the UDP fault soak runs on its own, after the rest, and then again starved of CPU (busy
# loops beside it): how it found the end-of-stream bugs of ADR 0018
cargo nextest run --workspace --locked --no-fail-fast \
    -E 'not test(replicas_survive_loss_bursts_kills_and_a_link_down_on_a_bridge)'
./scripts/udp-fault-soak.sh
./scripts/udp-fault-soak.sh --starved
cargo nextest run -p mdi-subscriber --features tokio --locked -E 'test(async)'
# the committed Cap'n Proto code is what the schema generates (ADR 0009)
cargo nextest run -p mdi-protocol --features schema-codegen --locked -E 'test(generated_code)'
cargo test --workspace --locked --doc

step "Python package: pip install ./python into .venv, then pytest"
# what a user runs (README); the tests drive the debug binaries built above
./.venv/bin/pip install --quiet ./python
cargo build --locked -p mdi-publisher -p mdi-tools -p mdi-archive-cli --bins
MDI_BIN_DIR="$PWD/target/debug" ./.venv/bin/python -m pytest -q python/tests

step "deployment files (systemd-analyze verify, the dashboard)"
./scripts/check-deploy.sh "$PWD/target/debug"

step "examples against the demo feed"
./scripts/run-examples.sh

step "loom model of the ring log (LOOM_MAX_PREEMPTIONS=2)"
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 \
    cargo test -p mdi-protocol --lib --release --locked --target-dir target/loom -- loom_

step "all passed"
echo "scripts/test.sh: all passed in $(( $(date +%s) - started )) s"
