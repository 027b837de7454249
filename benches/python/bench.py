"""The Python package's benchmark (issue 23): records/s into Python objects and into
polars batches, against — in the same run, on the same records — what a user would
otherwise do: decode the Cap'n Proto bodies with pycapnp, or read `mdtail --format
jsonl` output with polars; and the one-way latency from the writer to `next()`.

    .venv/bin/python benches/python/bench.py [--quick] [--trades N]

Prints `RESULT scenario=... impl=... ...` lines like mdbench. Needs the package
installed in the venv (`pip install ./python`) and release binaries (`cargo build
--release -p mdi-publisher -p mdi-tools`, or `$MDI_BIN_DIR`)."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python" / "tests"))

import mdi  # noqa: E402
import polars as pl  # noqa: E402
from conftest import write_agg_trades  # noqa: E402


def binary(name: str) -> str:
    d = os.environ.get("MDI_BIN_DIR") or str(ROOT / "target" / "release")
    path = Path(d) / name
    if not path.exists():
        sys.exit(f"bench.py: {path} missing: cargo build --release -p mdi-publisher -p mdi-tools")
    return str(path)


def best(runs: int, f):
    """The fastest of `runs` timings of f() (what f returns is kept from the last)."""
    times, out = [], None
    for _ in range(runs):
        started = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - started)
    return min(times), out


def result(**fields) -> None:
    print("RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer records and runs")
    ap.add_argument("--trades", type=int, default=None)
    args = ap.parse_args()
    trades = args.trades or (300_000 if args.quick else 2_000_000)
    runs = 3 if args.quick else 5
    work = Path(tempfile.mkdtemp(prefix="mdi-pybench-", dir="/dev/shm"))
    try:
        csv = work / "BTCUSDT-aggTrades-2024-01-02.csv"
        # as busy as BTCUSDT: 40 ms apart on average (a state refresh a second, ADR 0016)
        write_agg_trades(csv, trades, max_gap_ms=80)
        shm = work / "shm"
        subprocess.run(
            [binary("mdpub"), "replay", "--input", str(csv), "--shm-dir", str(shm),
             "--capacity", str(1 << 30)],
            check=True, capture_output=True,
        )
        csv.unlink()

        # polars: the whole stream's trades as one DataFrame (`read` of a long ring reads
        # its second half in a second thread)
        t, df = best(runs, lambda: mdi.read("ticks", shm_dir=shm, kinds="trade"))
        n = df.height
        assert n == trades, (n, trades)
        result(scenario="python-read", impl="mdi-polars", records=n,
               msgs_per_s=f"{n / t:.0f}", ns_per_msg=f"{t / n * 1e9:.1f}")

        # polars batches as a live reader polls them: one thread, each batch dropped
        def polled():
            sub = mdi.Subscriber("ticks", shm_dir=shm, kinds="trade", start="earliest",
                                 follow=False)
            count = 0
            while (batch := sub.poll_batch(65_536)).height:
                count += batch.height
            return count

        t, count = best(runs, polled)
        assert count == n, (count, n)
        result(scenario="python-read", impl="mdi-polars-batches", records=n,
               msgs_per_s=f"{n / t:.0f}", ns_per_msg=f"{t / n * 1e9:.1f}")

        # Python objects, decimals made lazily (one attribute touched per record)
        def objects():
            sub = mdi.Subscriber("ticks", shm_dir=shm, kinds="trade", start="earliest",
                                 follow=False)
            count = 0
            for rec in sub:
                count += rec.instrument_id
            return count

        t, count = best(runs, objects)
        result(scenario="python-read", impl="mdi-objects", records=n,
               msgs_per_s=f"{n / t:.0f}", ns_per_msg=f"{t / n * 1e9:.1f}")

        # ... and reading the price as an exact Decimal on every record
        def objects_with_price():
            sub = mdi.Subscriber("ticks", shm_dir=shm, kinds="trade", start="earliest",
                                 follow=False)
            total = 0
            for rec in sub:
                if rec.kind == "trade":
                    total += rec.price.is_signed()
            return total

        t, _ = best(runs, objects_with_price)
        result(scenario="python-read", impl="mdi-objects-decimal-price", records=n,
               msgs_per_s=f"{n / t:.0f}", ns_per_msg=f"{t / n * 1e9:.1f}")

        # pycapnp: the same bodies decoded per record into Python values
        try:
            import capnp  # noqa: F401

            capnp.remove_import_hook()
            schema = capnp.load(str(ROOT / "protocol" / "schema" / "records.capnp"))
            bodies = [b for _, b in mdi._native.record_bodies("ticks", shm_dir=str(shm),
                                                                 kinds=["trade"])]
            assert len(bodies) == n

            def pycapnp():
                out = 0
                for body in bodies:
                    with schema.Trade.from_bytes(body) as t:
                        row = (t.instrumentId, t.price, t.priceExponent, t.qty, t.qtyExponent,
                               t.aggressor, t.tradeId, t.venueSeq, t.tsExchangeNs,
                               t.tsReceiveNs, t.tsPublishNs)
                        out += row[0]
                return out

            t, _ = best(runs, pycapnp)
            result(scenario="python-read", impl="pycapnp-decode", records=n,
                   msgs_per_s=f"{n / t:.0f}", ns_per_msg=f"{t / n * 1e9:.1f}")
        except ImportError:
            print("bench.py: pycapnp not installed: its peer line is missing", file=sys.stderr)

        # polars reading what mdtail --format jsonl writes
        jsonl = work / "ticks.jsonl"
        with open(jsonl, "wb") as out:
            subprocess.run(
                [binary("mdtail"), "ticks", "--shm-dir", str(shm), "--from", "earliest",
                 "--no-follow", "--format", "jsonl", "--kind", "trade"],
                check=True, stdout=out,
            )
        t, peer = best(runs, lambda: pl.read_ndjson(jsonl))
        assert peer.height == n
        result(scenario="python-read", impl="polars-read-ndjson", records=n,
               msgs_per_s=f"{n / t:.0f}", ns_per_msg=f"{t / n * 1e9:.1f}")
        jsonl.unlink()

        # latency: a live publisher, a spinning Python reader
        live = work / "live"
        demo = subprocess.Popen(
            [binary("mdpub"), "demo", "--shm-dir", str(live), "--no-udp", "--speed", "20x",
             "--duration", "30"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not (live / "ticks.ring").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            for wait in ("spin", "park"):
                sub = mdi.Subscriber("ticks", shm_dir=live, wait=wait)
                samples = []
                until = time.monotonic() + (3 if args.quick else 8)
                while time.monotonic() < until:
                    rec = sub.next(timeout=0.2)
                    now = time.time_ns()
                    if rec is not None and not rec.is_event:
                        samples.append(now - rec.ts_publish_ns)
                sub.close()
                samples.sort()
                if samples:
                    result(scenario="python-latency", impl=f"mdi-next-{wait}",
                           samples=len(samples),
                           p50_us=f"{samples[len(samples) // 2] / 1e3:.2f}",
                           p99_us=f"{samples[len(samples) * 99 // 100] / 1e3:.2f}")
        finally:
            demo.terminate()
            demo.wait(timeout=10)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
