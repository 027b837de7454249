"""The last hour of a stream's history (what its ring still holds) to Parquet, one
file per record kind, decimals exact.

    python history_to_parquet.py --out DIR [--stream ticks] [--shm-dir DIR] [--minutes 60]
"""

import argparse
import datetime as dt
from pathlib import Path

import mdi

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True, type=Path)
ap.add_argument("--stream", default="ticks")
ap.add_argument("--shm-dir", default=None)
ap.add_argument("--minutes", type=float, default=60)
args = ap.parse_args()

start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=args.minutes)
args.out.mkdir(parents=True, exist_ok=True)
for kind in ("trade", "quote", "kline"):
    df = mdi.read(args.stream, shm_dir=args.shm_dir, kinds=kind, start=start)
    if df.height == 0:
        continue
    path = args.out / f"{args.stream}-{kind}.parquet"
    df.write_parquet(path, compression="zstd")
    print(f"{path}: {df.height} rows")
