"""Print trades as they happen: symbol, side, quantity at price (exact decimals).

    python print_trades.py [--shm-dir DIR] [--symbol BTCUSDT] [--seconds N]
"""

import argparse
import time

import mdi

ap = argparse.ArgumentParser()
ap.add_argument("--shm-dir", default=None)
ap.add_argument("--symbol", action="append", default=None)
ap.add_argument("--seconds", type=float, default=None, help="stop after this long")
args = ap.parse_args()

until = None if args.seconds is None else time.monotonic() + args.seconds
with mdi.Subscriber("ticks", shm_dir=args.shm_dir, symbols=args.symbol, kinds="trade") as sub:
    while until is None or time.monotonic() < until:
        rec = sub.next(timeout=0.5)
        if rec is None:
            continue
        if rec.is_event:
            print(f"-- {rec.kind}: {rec.as_dict()}")
            continue
        print(f"{rec.symbol:<10} {rec.side:<4} {rec.qty} @ {rec.price}", flush=True)
