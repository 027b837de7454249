"""Live 1-minute candles of one symbol in a polars DataFrame: the open candle updates
as the publisher publishes it, final ones stay; printed every few seconds.

    python live_candles.py --symbol BTCUSDT [--shm-dir DIR] [--seconds N]
"""

import argparse
import time

import polars as pl

import mdi

ap = argparse.ArgumentParser()
ap.add_argument("--symbol", required=True)
ap.add_argument("--interval", default="1m")
ap.add_argument("--shm-dir", default=None)
ap.add_argument("--seconds", type=float, default=None, help="stop after this long")
args = ap.parse_args()

sub = mdi.Subscriber("klines", shm_dir=args.shm_dir, symbols=args.symbol, kinds="kline")
candles = None
until = None if args.seconds is None else time.monotonic() + args.seconds
shown = time.monotonic()
while until is None or time.monotonic() < until:
    batch = sub.poll_batch()
    batch = batch.filter(pl.col("interval") == args.interval)
    if batch.height:
        # the latest version of each candle wins (an open candle is published again and
        # again; a late trade may correct a final one: a higher revision)
        candles = pl.concat([candles, batch]) if candles is not None else batch
        candles = candles.unique(subset=["open_time_ms"], keep="last").sort("open_time_ms")
    if candles is not None and time.monotonic() - shown >= 2:
        shown = time.monotonic()
        print(
            candles.select("open_time_ms", "open", "high", "low", "close", "volume",
                           "trades", "closed").tail(5),
            flush=True,
        )
    time.sleep(0.1)
print(f"{0 if candles is None else candles.height} candles of {args.symbol} {args.interval}")
