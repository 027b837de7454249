"""Fixtures: rings written by the real publisher (`mdpub replay` of a synthetic
data.binance.vision aggTrades day) and what `mdtail --format jsonl` prints of them.

The binaries come from `$MDI_BIN_DIR`, else the repository's `target/debug` or
`target/release` (scripts/test.sh builds them and sets it)."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def binary(name: str) -> str:
    dirs = [os.environ.get("MDI_BIN_DIR")] if os.environ.get("MDI_BIN_DIR") else []
    dirs += [ROOT / "target" / "debug", ROOT / "target" / "release"]
    for d in dirs:
        path = Path(d) / name
        if path.exists():
            return str(path)
    raise RuntimeError(
        f"{name} not found in {', '.join(map(str, dirs))}: build it first "
        "(cargo build --release -p mdi-publisher -p mdi-tools) or set MDI_BIN_DIR"
    )


def write_agg_trades(path: Path, trades: int, seed: int = 7, day_ms: int = 1_704_153_600_000,
                     max_gap_ms: int = 3_000):
    """A day of aggTrades as data.binance.vision writes them (8-decimal strings), up to
    `max_gap_ms` apart (BTCUSDT's are 40 ms apart on average)."""
    rng = random.Random(seed)
    t, price, trade_id = day_ms, 4_200_000_000_000, 100
    with open(path, "w") as f:
        for i in range(trades):
            t += rng.randint(0, max_gap_ms)
            price += rng.randint(-1_000, 1_000)
            n = rng.randint(1, 4)
            qty = rng.randint(1, 300_000_000)
            maker = "true" if rng.random() < 0.5 else "false"
            f.write(
                f"{500 + i},{price // 10**8}.{price % 10**8:08d},"
                f"{qty // 10**8}.{qty % 10**8:08d},{trade_id},{trade_id + n - 1},{t},{maker},true\n"
            )
            trade_id += n


def replay(shm: Path, csv: Path, *extra: str) -> None:
    subprocess.run(
        [binary("mdpub"), "replay", "--input", str(csv), "--shm-dir", str(shm), *extra],
        check=True,
        capture_output=True,
        timeout=120,
    )


def mdtail_jsonl(shm: Path, stream: str, *extra: str) -> list[dict]:
    out = subprocess.run(
        [binary("mdtail"), stream, "--shm-dir", str(shm), "--from", "earliest",
         "--no-follow", "--format", "jsonl", *extra],
        check=True,
        capture_output=True,
        timeout=120,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="session")
def replayed(tmp_path_factory):
    """A shm dir with `ticks` and `klines` from a replayed day of 30 000 aggTrades."""
    base = tmp_path_factory.mktemp("replayed")
    csv = base / "BTCUSDT-aggTrades-2024-01-02.csv"
    write_agg_trades(csv, 30_000)
    shm = base / "shm"
    replay(shm, csv)
    return shm
