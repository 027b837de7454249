#!/usr/bin/env bash
# The test suite: formatting, lints (warnings are errors), every test, and the loom
# model of the ring log's claim/commit protocol. This is README's test command and what
# .ci/run runs on a clean checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    cargo test --workspace --locked --doc
else
    echo "cargo-nextest not found; using cargo test"
    cargo test --workspace --locked --no-fail-fast
fi

step "examples against the demo feed"
./scripts/run-examples.sh

step "loom model of the ring log (LOOM_MAX_PREEMPTIONS=2)"
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 \
    cargo test -p mdi-protocol --lib --release --locked --target-dir target/loom -- loom_

step "all passed"
