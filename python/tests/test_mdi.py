"""The Python package against the real publisher and mdtail: records and DataFrames
equal `mdtail --format jsonl` record for record; loss, restarts and writer events
surface; Ctrl-C interrupts a wait; many threads read at once; bad paths and corrupt
files raise the exceptions users expect."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

import mdi
from conftest import binary, mdtail_jsonl, replay, write_agg_trades


def same(expected, actual) -> bool:
    """A jsonl value against the Python one: decimal strings exactly, levels as lists."""
    if isinstance(expected, str) and isinstance(actual, Decimal):
        return Decimal(expected).as_tuple() == actual.as_tuple()
    if isinstance(expected, list):
        return len(expected) == len(actual) and all(
            Decimal(p) == ap and Decimal(q) == aq for (p, q), (ap, aq) in zip(expected, actual)
        )
    return expected == actual and type(expected) is type(actual)


@pytest.mark.parametrize("stream", ["ticks", "klines"])
def test_records_as_objects_equal_mdtail_jsonl(replayed, stream):
    expected = mdtail_jsonl(replayed, stream)
    sub = mdi.Subscriber(stream, shm_dir=replayed, start="earliest", follow=False)
    everything = list(sub)
    # mdtail prints events on stderr: the writer closed its ring after the replay
    events = [r for r in everything if r.is_event]
    assert [(e.kind, e.state) for e in events] == [("writer_gone", "closed")]
    got = [r for r in everything if not r.is_event]
    assert len(expected) > 10_000
    assert len(got) == len(expected)
    for line, rec in zip(expected, got):
        assert list(line) == ["kind", "symbol", "instrument_id", *rec.fields]
        for key, value in line.items():
            assert same(value, getattr(rec, key)), (key, value, getattr(rec, key), line)
        d = rec.as_dict()
        assert list(d) == list(line)
    # floats for speed, next to the exact decimals
    trade = next(r for r in got if r.kind in ("trade", "kline"))
    name = "price" if trade.kind == "trade" else "close"
    assert getattr(trade, name + "_f64") == float(getattr(trade, name))
    with pytest.raises(AttributeError, match='no field "nonsense"'):
        trade.nonsense


@pytest.mark.parametrize("stream,kind", [("ticks", "trade"), ("klines", "kline")])
def test_read_equals_mdtail_jsonl_row_for_row(replayed, stream, kind):
    expected = mdtail_jsonl(replayed, stream, "--kind", kind)
    df = mdi.read(stream, shm_dir=replayed, kinds=[kind])
    assert isinstance(df, pl.DataFrame)
    assert df.columns == list(expected[0])
    assert df.height == len(expected)
    for line, row in zip(expected, df.iter_rows(named=True)):
        for key, value in line.items():
            # a column has one scale: a quote volume at its full scale (price + qty), which
            # mdtail trims where the digits are zero
            if key.endswith("quote_volume"):
                assert Decimal(value) == row[key], (key, value, row[key])
            else:
                assert same(value, row[key]), (key, value, row[key])
    # decimals are polars Decimals with the instrument's scale (-8 here)
    assert df.schema["price" if kind == "trade" else "open"] == pl.Decimal(38, 8)


def test_read_of_a_ring_has_the_columns_of_its_kinds(replayed):
    klines = mdi.read("klines", shm_dir=replayed)
    assert "price" not in klines.columns and "open" in klines.columns
    assert set(klines["kind"].unique()) == {"kline"}
    ticks = mdi.read("ticks", shm_dir=replayed)
    assert set(ticks["kind"].unique()) <= {"trade", "status"}
    assert "open" not in ticks.columns


def test_read_ranges_by_sequence_and_time(replayed):
    everything = mdi.read("ticks", shm_dir=replayed, kinds="trade")
    seqs = everything["seq"].to_list()
    part = mdi.read("ticks", shm_dir=replayed, kinds="trade", start=seqs[100], end=seqs[200])
    assert part["seq"].to_list() == seqs[100:200]
    t = everything["ts_publish_ns"][5_000]
    at = dt.datetime.fromtimestamp(t // 1_000_000_000, dt.timezone.utc) + dt.timedelta(
        microseconds=(t % 1_000_000_000) // 1_000
    )
    later = mdi.read("ticks", shm_dir=replayed, kinds="trade", start=at)
    assert later["ts_publish_ns"].min() >= (t // 1_000) * 1_000
    assert later.height < everything.height


def test_arrow_export_is_read_by_pyarrow(replayed):
    pa = pytest.importorskip("pyarrow")
    sub = mdi.Subscriber("klines", shm_dir=replayed, kinds="kline", start="earliest")
    batch = sub.arrow_batch(1_000)
    table = pa.table(batch)
    assert 0 < table.num_rows <= 1_000
    assert table.schema.field("open").type == pa.decimal128(38, 8)
    assert str(table.column("open")[0].as_py()) == mdtail_jsonl(replayed, "klines")[0]["open"]


def test_filters_by_symbol_and_kind(replayed):
    assert mdi.read("ticks", shm_dir=replayed, symbols=["btcusdt"], kinds="trade").height == 30_000
    assert mdi.read("ticks", shm_dir=replayed, symbols=["ETHUSDT"], kinds="trade").height == 0
    with pytest.raises(ValueError, match="unknown kind"):
        mdi.read("ticks", shm_dir=replayed, kinds=["trades", "bogus"])


def batches(stream, shm_dir, **kw) -> pl.DataFrame:
    """What `read` returns, read one batch at a time (one thread, never split)."""
    sub = mdi.Subscriber(stream, shm_dir=shm_dir, follow=False, **kw)
    parts = []
    while (part := sub.poll_batch(50_000)).height:
        parts.append(part)
    sub.close()
    return pl.concat(parts, how="diagonal_relaxed")


@pytest.mark.parametrize("capacity", [128 << 20, 32 << 20])
def test_a_long_read_in_two_threads_equals_one_read_batch_by_batch(tmp_path, capacity):
    """`read` of a long ring reads its second half in a thread of its own: every row
    once, in order, with its symbol — in a ring that wrapped too, whose second half
    begins long after the definitions the first records needed."""
    csv = tmp_path / "BTCUSDT-aggTrades-2024-01-02.csv"
    write_agg_trades(csv, 400_000)
    shm = tmp_path / "shm"
    # 128 MiB holds all of it; 32 MiB wraps (a ring's memory is reserved on disk here)
    replay(shm, csv, "--capacity", str(capacity))
    for kw in ({"kinds": "trade"}, {}, {"symbols": "BTCUSDT", "kinds": ["trade", "status"]}):
        whole = mdi.read("ticks", shm_dir=shm, **kw)
        # long enough to be split (131 072 records or more left)
        assert whole["seq"].max() - whole["seq"].min() > 2 * 131_072, kw
        # (`read` has the columns of the kinds it met; batches those of the kinds asked)
        one_by_one = batches("ticks", shm, start="earliest", **kw).select(whole.columns)
        assert whole.equals(one_by_one), kw
        assert whole["symbol"].null_count() == 0, kw
        seqs = whole["seq"]
        assert seqs.is_sorted() and seqs.n_unique() == whole.height, kw
    # a batch is filled up to max_records from what is there (not one copy's worth)
    sub = mdi.Subscriber("ticks", shm_dir=shm, kinds="trade", start="earliest", follow=False)
    assert sub.poll_batch(50_000).height == 50_000
    sub.close()
    # an end in either half, a start in the second
    seqs = whole["seq"].to_list()
    for start, end in ((seqs[0], seqs[1_000]), (seqs[0], seqs[-1_000]), (seqs[-50_000], None)):
        part = mdi.read("ticks", shm_dir=shm, start=start, end=end)
        assert part["seq"].to_list() == [s for s in seqs if s >= start and (end is None or s < end)]


def test_missing_ring_and_directory_raise_file_not_found(tmp_path, replayed):
    with pytest.raises(FileNotFoundError, match="nosuchstream"):
        mdi.Subscriber("nosuchstream", shm_dir=replayed)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        mdi.Subscriber(shm_dir=tmp_path / "nowhere")


def test_corrupt_and_foreign_rings_raise_value_error(tmp_path, replayed):
    shm = tmp_path / "shm"
    shm.mkdir()
    (shm / "junk.ring").write_bytes(b"this is not a ring" * 1000)
    with pytest.raises(ValueError, match="junk.ring"):
        mdi.Subscriber("junk", shm_dir=shm)
    # a real ring with its header damaged
    data = bytearray((replayed / "klines.ring").read_bytes()[: 1 << 16])
    data[0:8] = b"XXXXXXXX"
    (shm / "damaged.ring").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged.ring"):
        mdi.Subscriber("damaged", shm_dir=shm)


def test_loss_and_restart_surface_as_events(tmp_path):
    csv = tmp_path / "BTCUSDT-aggTrades-2024-01-03.csv"
    write_agg_trades(csv, 5_000, seed=3, day_ms=1_704_240_000_000)
    small, large = tmp_path / "small", tmp_path / "large"
    replay(small, csv, "--capacity", str(1 << 16))
    replay(large, csv, "--capacity", str(1 << 22))
    lapped = mdi.Subscriber("ticks", shm_dir=small, start="earliest")
    restarted = mdi.Subscriber("ticks", shm_dir=large, start="earliest")
    for sub in (lapped, restarted):
        first = sub.next(timeout=1)
        assert first is not None and not first.is_event
    # second writers continue the rings in new epochs; the small one laps its reader
    replay(small, csv, "--capacity", str(1 << 16), "--append")
    replay(large, csv, "--capacity", str(1 << 22), "--append")

    def events(sub):
        found = []
        while (rec := sub.next(timeout=0.5)) is not None:
            if rec.is_event:
                found.append(rec)
        return found

    lost = [e for e in events(lapped) if e.kind == "lost"]
    assert len(lost) == 1 and lost[0].stream == "ticks"
    assert lost[0].count == lost[0].to_seq - lost[0].from_seq > 1_000
    new_epoch = [e for e in events(restarted) if e.kind == "restarted"]
    assert len(new_epoch) == 1
    assert new_epoch[0].epoch > new_epoch[0].previous_epoch >= 1
    assert new_epoch[0].writer_pid > 0
    # the columnar path warns and keeps the events
    batched = mdi.Subscriber("ticks", shm_dir=small, start="earliest")
    batched.poll_batch(10)
    replay(small, csv, "--capacity", str(1 << 16), "--append")
    with pytest.warns(mdi.LossWarning, match="records lost"):
        batched.poll_batch(1_000_000)
    assert any(n.kind == "lost" for n in batched.take_notices())


def test_next_times_out_and_ctrl_c_interrupts_it(replayed, tmp_path):
    sub = mdi.Subscriber("klines", shm_dir=replayed, start="latest")
    # the replay's writer has closed the ring: said once
    assert sub.next(timeout=1).kind == "writer_gone"
    started = time.monotonic()
    assert sub.next(timeout=0.2) is None
    assert 0.15 < time.monotonic() - started < 5
    script = tmp_path / "wait.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, mdi
            sub = mdi.Subscriber("klines", shm_dir={str(replayed)!r}, start="latest")
            print("waiting", flush=True)
            try:
                while True:
                    sub.next()
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                sys.exit(7)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "waiting"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 7
        assert proc.stdout.read().strip() == "interrupted"
    finally:
        proc.kill()


def test_many_threads_read_at_once(replayed):
    expected = len(mdtail_jsonl(replayed, "ticks"))
    counts = []
    errors = []

    def own():
        try:
            sub = mdi.Subscriber("ticks", shm_dir=replayed, start="earliest", follow=False)
            counts.append(sum(1 for r in sub if not r.is_event))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=own) for _ in range(4)]
    # and two threads sharing one subscriber: every record once
    shared = mdi.Subscriber("ticks", shm_dir=replayed, start="earliest", follow=False)
    seen = [[], []]

    def share(i):
        try:
            while (rec := shared.next(timeout=0.2)) is not None:
                if not rec.is_event:
                    seen[i].append(rec.seq)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads += [threading.Thread(target=share, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert counts == [expected] * 4
    both = seen[0] + seen[1]
    assert len(both) == expected and len(set(both)) == expected


def test_async_for_reads_under_asyncio(replayed):
    async def main():
        sub = mdi.Subscriber("klines", shm_dir=replayed, start="earliest", follow=False)
        n = 0
        ticker = 0

        async def tick():
            nonlocal ticker
            while True:
                ticker += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(tick())
        async for rec in sub:
            n += not rec.is_event
        task.cancel()
        assert ticker > 10  # the event loop ran while the subscriber read
        return n

    assert asyncio.run(main()) == len(mdtail_jsonl(replayed, "klines"))


def test_live_batches_from_a_running_publisher(tmp_path):
    shm = tmp_path / "shm"
    demo = subprocess.Popen(
        [binary("mdpub"), "demo", "--shm-dir", str(shm), "--no-udp", "--speed", "20x",
         "--duration", "20"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not (shm / "ticks.ring").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        sub = mdi.Subscriber("ticks", shm_dir=shm, kinds=["trade", "quote"])
        rows = 0
        while rows < 100 and time.monotonic() < deadline:
            df = sub.poll_batch()
            assert set(df.columns) >= {"kind", "symbol", "price", "bid_price", "seq"}
            rows += df.height
            time.sleep(0.01)
        assert rows >= 100
        # live objects too, from a datetime start
        recent = mdi.Subscriber(
            "ticks", shm_dir=shm, start=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
        )
        assert recent.next(timeout=5) is not None
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=10)


def test_a_udp_channel_is_a_source(tmp_path):
    shm = tmp_path / "shm"
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    demo = subprocess.Popen(
        [binary("mdpub"), "demo", "--shm-dir", str(shm), "--udp", f"udp://127.0.0.1:{port}",
         "--speed", "20x", "--duration", "20"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        sub = mdi.Subscriber("ticks", udp=f"udp://127.0.0.1:{port}")
        rec = sub.next(timeout=10)
        assert rec is not None and rec.stream == "ticks"
        sub.close()
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=10)


def test_bad_arguments_are_refused(replayed):
    with pytest.raises(ValueError, match="start="):
        mdi.Subscriber("ticks", shm_dir=replayed, start="yesterday")
    with pytest.raises(ValueError, match="wait="):
        mdi.Subscriber("ticks", shm_dir=replayed, wait="hard")
    with pytest.raises(TypeError):
        mdi.Subscriber("ticks", shm_dir=replayed, start=1.5)
    sub = mdi.Subscriber("ticks", shm_dir=replayed)
    sub.close()
    with pytest.raises(ValueError, match="closed"):
        sub.next(timeout=0)


def test_the_examples_run_against_a_live_publisher(tmp_path):
    shm = tmp_path / "shm"
    demo = subprocess.Popen(
        [binary("mdpub"), "demo", "--shm-dir", str(shm), "--no-udp", "--speed", "30x",
         "--duration", "30"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    examples = Path(__file__).resolve().parents[1] / "examples"
    try:
        deadline = time.monotonic() + 10
        while not (shm / "klines.ring").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        symbols = []
        while not symbols and time.monotonic() < deadline:
            time.sleep(0.05)
            symbols = mdi.read("ticks", shm_dir=shm, kinds="instrument")["symbol"].to_list()
        symbol = symbols[0]

        def run(name, *args):
            return subprocess.run(
                [sys.executable, str(examples / name), "--shm-dir", str(shm), *args],
                check=True, capture_output=True, text=True, timeout=60,
            ).stdout

        trades = run("print_trades.py", "--seconds", "2")
        assert "@" in trades
        candles = run("live_candles.py", "--symbol", symbol, "--interval", "1s",
                      "--seconds", "4")
        assert f"candles of {symbol} 1s" in candles and not candles.startswith("0 candles")
        out = tmp_path / "parquet"
        run("history_to_parquet.py", "--out", str(out), "--minutes", "5")
        back = pl.read_parquet(out / "ticks-trade.parquet")
        assert back.height > 0 and back.schema["price"] == pl.Decimal(38, back.schema["price"].scale)
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=10)
