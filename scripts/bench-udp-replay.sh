#!/usr/bin/env bash
# Issue 19's target, as an operator would run it: `mdpub replay` of an aggTrades day
# (≈300 k records with K-lines) at full speed, served by multicast in a fresh network
# namespace to two `mdrecv`, each dropping 5 % of what it receives. RUNS runs (default
# 20); each must end with both replicas equal to the source, record for record.
# Prints one RESULT line per run and a summary:
#   naks_per_gap  NAK datagrams per gap, averaged over receivers and streams
#   retx_ratio    retransmitted bytes / bytes lost by the union of the receivers: the
#                 ranges each receiver found missing when a gap opened (its loss
#                 generator's drops and the kernel's overflows alike; the receivers log
#                 them at trace level), merged — a range both lost counts once. A
#                 retransmission lost again is resent again: the ratio cannot be 1.
# Needs root (a network namespace); exits 1 if any run fails.
set -euo pipefail
RUNS=${1:-20}
TRADES=${TRADES:-180000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
if [ "$(id -u)" != 0 ]; then
    echo "bench-udp-replay: needs root (a network namespace for multicast)" >&2
    exit 1
fi
[ -x "$BIN/mdpub" ] && [ -x "$BIN/mdrecv" ] && [ -x "$BIN/mdtail" ] ||
    cargo build --release -p mdi-publisher -p mdi-tools --manifest-path "$ROOT/Cargo.toml"
WORK=$(mktemp -d /tmp/mdi-bench-udp-replay.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
INPUT=$WORK/ETHUSDT-aggTrades-2024-05-01.csv
python3 - "$INPUT" "$TRADES" <<'EOF'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(n):
        f.write(f"{100+i},{3000+i%17}.{i%100:02},0.{1+i%9999:04},{10*i},{10*i+i%3},"
                f"{1714521600000+i*700},{'true' if i%2==0 else 'false'},true\n")
EOF

# One run inside the namespace: prints the publisher's and receivers' summaries.
cat > "$WORK/run-one.sh" <<'EOF'
#!/usr/bin/env bash
set -u
BIN=$1 INPUT=$2 DIR=$3 SEED=$4
ip link set lo up
ip route add 224.0.0.0/4 dev lo
G="udp://239.255.77.3:40125?iface=127.0.0.1"
for i in 0 1; do
    mkdir -p "$DIR/r$i"
    RUST_LOG=mdi_protocol::udp::receiver=trace timeout 150 "$BIN/mdrecv" --udp "$G" --until-end --timeout 120 --shm-dir "$DIR/r$i" \
        --debug-drop-rate 0.05 --debug-seed $((SEED * 2 + i)) 2> "$DIR/r$i.log" &
done
sleep 0.3
mkdir -p "$DIR/src"
START=$(date +%s.%N)
timeout 150 "$BIN/mdpub" replay --input "$INPUT" --shm-dir "$DIR/src" \
    --capacity 134217728 --udp "$G" 2> "$DIR/pub.log"
PUB=$?
wait
END=$(date +%s.%N)
echo "publisher_exit=$PUB seconds=$(python3 -c "print(round($END - $START, 2))")"
EOF
chmod +x "$WORK/run-one.sh"

failed=0
total_naks=0 total_gaps=0 total_retx=0 total_union=0
for run in $(seq 1 "$RUNS"); do
    DIR=$WORK/run$run
    mkdir -p "$DIR"
    out=$(unshare -n "$WORK/run-one.sh" "$BIN" "$INPUT" "$DIR" "$run")
    ok=1
    grep -q "publisher_exit=0" <<<"$out" || ok=0
    for i in 0 1; do
        grep -q "Ended" "$DIR/r$i.log" || ok=0
        for stream in ticks klines; do
            a=$("$BIN/mdtail" --shm-dir "$DIR/src" --from earliest --no-follow --format jsonl --kind trade,quote,book,kline,status,instrument "$stream" | md5sum)
            b=$("$BIN/mdtail" --shm-dir "$DIR/r$i" --from earliest --no-follow --format jsonl --kind trade,quote,book,kline,status,instrument "$stream" | md5sum)
            [ "$a" = "$b" ] || { ok=0; echo "run $run: replica $i of $stream differs" >&2; }
        done
    done
    # NAKs and gaps of each receiver, the union of the ranges they lost, bytes resent
    read -r naks gaps union retx records < <(python3 - "$DIR" <<'EOF'
import re, sys, pathlib
d = pathlib.Path(sys.argv[1])
naks = gaps = retx = records = 0
lost = {}  # stream id -> [(from, to)] of every receiver
for i in (0, 1):
    for line in (d / f"r{i}.log").read_text().splitlines():
        m = re.match(r"mdrecv: (\w+): position \d+, (\d+) records, (\d+) gaps \((\d+) bytes\), (\d+) NAKs", line)
        if m:
            naks += int(m.group(5)); gaps += int(m.group(3)); records += int(m.group(2))
        m = re.search(r"gap opened stream_id=(\d+) from=(\d+) to=(\d+)", line)
        if m:
            lost.setdefault(m.group(1), []).append((int(m.group(2)), int(m.group(3))))
union = 0
for ranges in lost.values():
    cursor = 0
    for a, b in sorted(ranges):
        a = max(a, cursor)
        if b > a:
            union += b - a
            cursor = b
for line in (d / "pub.log").read_text().splitlines():
    m = re.search(r"retransmitted \((\d+) bytes\)", line)
    if m:
        retx += int(m.group(1))
print(naks, gaps, union, retx, records // 2)
EOF
)
    secs=$(grep -o "seconds=[0-9.]*" <<<"$out" | cut -d= -f2)
    per_gap=$(python3 -c "print(f'{$naks/max($gaps,1):.2f}')")
    ratio=$(python3 -c "print(f'{$retx/max($union,1):.2f}')")
    echo "RESULT scenario=udp-replay-storm run=$run ok=$ok records=$records seconds=$secs gaps=$gaps naks=$naks naks_per_gap=$per_gap retransmit_bytes=$retx union_lost_bytes=$union retx_ratio=$ratio"
    [ "$ok" = 1 ] || failed=$((failed + 1))
    total_naks=$((total_naks + naks)); total_gaps=$((total_gaps + gaps))
    total_retx=$((total_retx + retx)); total_union=$((total_union + union))
    rm -rf "$DIR"
done
echo "RESULT scenario=udp-replay-storm runs=$RUNS complete=$((RUNS - failed)) naks_per_gap=$(python3 -c "print(f'{$total_naks/max($total_gaps,1):.2f}')") retx_ratio=$(python3 -c "print(f'{$total_retx/max($total_union,1):.2f}')")"
[ "$failed" = 0 ]
