"""The tick archive from Python's side: `mdarchive record` of a replayed day, then
`mdarchive export` to Parquet, read back by polars (lazily, hive partitions) and by
pyarrow — independent readers — equal row for row, exactly, to `mdtail --format
jsonl` of the ring."""

from __future__ import annotations

import subprocess
from decimal import Decimal
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from conftest import binary, mdtail_jsonl


def same(expected, actual) -> bool:
    """A jsonl value against the Parquet one: decimal strings exactly (value and
    scale of the instrument), levels as lists of dicts."""
    if isinstance(expected, str) and isinstance(actual, Decimal):
        return Decimal(expected) == actual
    if isinstance(expected, list):
        return len(expected) == len(actual) and all(
            Decimal(p) == a["price"] and Decimal(q) == a["qty"]
            for (p, q), a in zip(expected, actual)
        )
    return expected == actual and type(expected) is type(actual)


def mdarchive(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary("mdarchive"), *args], check=True, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def archived(replayed, tmp_path_factory):
    archive = tmp_path_factory.mktemp("archive") / "a"
    mdarchive("record", "--shm-dir", str(replayed), "--archive", str(archive), "--no-follow")
    return archive


@pytest.mark.parametrize("stream,kind", [("ticks", "trade"), ("klines", "kline")])
def test_parquet_export_equals_mdtail_jsonl_row_for_row(replayed, archived, tmp_path, stream, kind):
    expected = mdtail_jsonl(replayed, stream, "--kind", kind)
    assert len(expected) > 1000
    out = tmp_path / "export"
    mdarchive("export", "--archive", str(archived), "--stream", stream, "--kind", kind,
              "--out", str(out))
    files = sorted(out.rglob("*.parquet"))
    assert [f.relative_to(out).parts[:3] for f in files] == [
        (f"kind={kind}", "symbol=BTCUSDT", "date=2024-01-02")
    ]
    # polars reads it lazily, the partitions as columns
    lazy = pl.scan_parquet(out / "**" / "*.parquet", hive_partitioning=True)
    df = lazy.collect()
    assert df.height == len(expected)
    assert set(df.columns) == set(expected[0]) | {"date"}
    # 64-bit decimals (INT64 in Parquet) where every value fits, as prices always do
    assert df.schema["price" if kind == "trade" else "open"] == pl.Decimal(18, 8)
    for line, row in zip(expected, df.iter_rows(named=True)):
        for key, value in line.items():
            if key.endswith("quote_volume"):
                assert Decimal(value) == row[key], (key, value, row[key])
            else:
                assert same(value, row[key]), (key, value, row[key])
    # a filter is pushed down to the row groups' statistics: same rows as in memory
    last = expected[-1]["seq"]
    tail = sum(1 for line in expected if line["seq"] >= last - 9)
    assert lazy.filter(pl.col("seq") >= last - 9).collect().height == tail > 1


def test_one_file_for_one_table_read_by_pyarrow(replayed, archived, tmp_path):
    expected = mdtail_jsonl(replayed, "ticks", "--kind", "trade")
    out = tmp_path / "trades.parquet"
    mdarchive("export", "--archive", str(archived), "--stream", "ticks", "--kind", "trade",
              "--symbol", "btcusdt", "--out", str(out))
    table = pq.read_table(out)
    assert table.column_names == list(expected[0])
    rows = table.to_pylist()
    assert len(rows) == len(expected)
    for line, row in zip(expected, rows):
        for key, value in line.items():
            assert same(value, row[key]), (key, value, row[key])
    meta = pq.ParquetFile(out).metadata
    column = meta.row_group(0).column(table.column_names.index("price"))
    assert column.compression == "ZSTD"
    assert column.statistics is not None and column.statistics.has_min_max
    # prices as Parquet DECIMAL, exact
    assert str(table.schema.field("price").type) == "decimal128(18, 8)"


def test_a_range_of_several_tables_needs_a_directory(archived, tmp_path):
    out = tmp_path / "all.parquet"
    result = subprocess.run(
        [binary("mdarchive"), "export", "--archive", str(archived), "--stream", "ticks",
         "--kind", "trade,instrument", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert "give a directory" in result.stderr


def test_history_through_the_archive_equals_the_whole_ring(replayed, tmp_path):
    """The same day replayed into 64 KiB rings with `mdpub replay --archive`: read from
    the earliest record with `archive=`, the DataFrame equals what the large rings
    hold, row for row."""
    from conftest import replay, write_agg_trades
    import mdi

    csv = tmp_path / "BTCUSDT-aggTrades-2024-01-02.csv"
    write_agg_trades(csv, 30_000)
    small, archive = tmp_path / "shm", tmp_path / "archive"
    replay(small, csv, "--capacity", "65536", "--archive", str(archive))
    for stream, kind in [("ticks", "trade"), ("klines", "kline")]:
        expected = mdtail_jsonl(replayed, stream, "--kind", kind)
        ring_only = mdi.read(stream, shm_dir=small, kinds=[kind])
        assert ring_only.height < len(expected)
        df = mdi.read(stream, shm_dir=small, kinds=[kind], archive=archive)
        assert df.height == len(expected), stream
        for line, row in zip(expected, df.iter_rows(named=True)):
            for key in ("seq", "price" if kind == "trade" else "close", "venue_seq" if kind == "trade" else "open_time_ms"):
                if key in line:
                    assert same(line[key], row[key]), (key, line[key], row[key])


def test_an_export_over_several_days_is_partitioned_by_date_and_loses_nothing(tmp_path):
    """Four days of trades: one partition a day (each written once the next day is well
    under way, so memory holds about a day), every row once, equal to mdtail's jsonl."""
    from conftest import replay, write_agg_trades

    csv = tmp_path / "BTCUSDT-aggTrades-2024-01-02.csv"
    write_agg_trades(csv, 180_000)
    shm, archive = tmp_path / "shm", tmp_path / "archive"
    replay(shm, csv, "--archive", str(archive))
    expected = mdtail_jsonl(shm, "ticks", "--kind", "trade")
    out = tmp_path / "export"
    mdarchive("export", "--archive", str(archive), "--stream", "ticks", "--kind", "trade",
              "--out", str(out))
    dates = sorted({f.parent.name for f in out.rglob("*.parquet")})
    assert dates == [f"date=2024-01-0{d}" for d in range(2, 6)], dates
    df = (pl.scan_parquet(out / "**" / "*.parquet", hive_partitioning=True)
          .collect().sort("seq"))
    assert df.height == len(expected)
    assert df["seq"].to_list() == [line["seq"] for line in expected]
    for line, row in zip(expected[::97], df.gather_every(97).iter_rows(named=True)):
        for key, value in line.items():
            assert same(value, row[key]), (key, value, row[key])
