#!/usr/bin/env bash
# Builds and runs the subscriber SDK's examples against the demo feed (part of the test
# command; CI runs it). Everything is bounded in time and cleaned up.
set -euo pipefail
cd "$(dirname "$0")/.."

shm=$(mktemp -d /dev/shm/mdi-examples.XXXXXX)
port=$(( 41000 + RANDOM % 2000 ))
demo_pid=""
cleanup() {
    [ -n "$demo_pid" ] && kill "$demo_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$shm"
}
trap cleanup EXIT

cargo build --locked --bin mdpub -p mdi-publisher
cargo build --locked -p mdi-subscriber --examples
bin=target/debug
export MDI_SHM_DIR="$shm"

"$bin/mdpub" demo --speed 5x --duration 30 --udp "udp://127.0.0.1:$port" 2>"$shm/demo.log" &
demo_pid=$!
sleep 1

echo "==> example udp_subscribe_with_recovery"
out=$(timeout 30 "$bin/examples/udp_subscribe_with_recovery" "udp://127.0.0.1:$port" 4)
echo "$out"
grep -q "ticks: .* 0 lost for good" <<<"$out"
grep -q "trades read from the replica, 0 records lost" <<<"$out"

echo "==> example shm_subscribe"
out=$(timeout 30 "$bin/examples/shm_subscribe" 2)
echo "$out" | tail -2
grep -q "BTCUSDT .*mid .*vwap" <<<"$out"

echo "==> example book_keeping (a late joiner: every book whole within the refresh period)"
out=$(timeout 30 "$bin/examples/book_keeping" 3)
echo "$out" | tail -3
grep -q "BTCUSDT book whole" <<<"$out"
grep -q "^BTCUSDT bid [0-9.]* ask [0-9.]* | bids [0-9]" <<<"$out"

echo "==> example replay_from_seq"
out=$(timeout 30 "$bin/examples/replay_from_seq" ticks 5 3)
echo "$out"
[ "$(grep -c '^#[0-9]* ETHUSDT\|^#[0-9]* BTCUSDT' <<<"$out")" -eq 3 ]
echo "examples ran"
