"""An independent venue for mdpub's tests: a Python `websockets` server over TLS that
speaks Binance's combined-stream format (aggTrade frames) and misbehaves the way the
real one does when it lags (issue 20).

    ws_venue.py --cert C --key K --port-file F --log L --mode MODE --seconds N --seed S

Modes:
  all        a history of the last ~10 minutes, every frame sent at once on connect
  bursts     live trades, but every ~2 s the stream stalls 1-10 s and then delivers
             what it held, all at once
  reconnect  live trades; after 3 s the connection is dropped (no close frame) while
             trades go on for 2 s; the next connection first gets that backlog

Every trade sent is written to the log as a JSON line (the model the test compares the
candles with is built from it); `{"done": true}` marks the end of the history. The
connection then stays open, idle but for pings, until the client leaves.
"""

import argparse
import asyncio
import json
import random
import ssl
import time

import websockets


def now_ms():
    return time.time_ns() // 1_000_000


class Venue:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.next_id = 1000
        self.price = 8_300_000  # mantissa, exponent -2
        self.log = open(args.log, "w", encoding="utf-8")
        self.backlog = []  # frames held for the next connection
        self.backlog_complete = asyncio.Event()
        self.connections = 0
        self.done = False

    def trade(self, at_ms):
        """One aggTrade at `at_ms` (its event and trade time), logged."""
        self.price += self.rng.randint(-100, 100)
        qty = self.rng.randint(1, 500_000)  # exponent -5
        maker = self.rng.random() < 0.5
        agg = self.next_id
        self.next_id += 1
        first = agg * 3
        data = {
            "e": "aggTrade",
            "E": at_ms,
            "s": "BTCUSDT",
            "a": agg,
            "p": f"{self.price // 100}.{self.price % 100:02d}",
            "q": f"{qty // 100_000}.{qty % 100_000:05d}",
            "f": first,
            "l": first + 2,
            "T": at_ms,
            "m": maker,
            "M": True,
        }
        self.log.write(
            json.dumps(
                {"id": agg, "time": at_ms, "price": self.price, "qty": qty, "maker": maker}
            )
            + "\n"
        )
        self.log.flush()
        return json.dumps({"stream": "btcusdt@aggTrade", "data": data})

    def finish(self):
        if not self.done:
            self.done = True
            self.log.write(json.dumps({"done": True}) + "\n")
            self.log.flush()

    async def idle(self, ws):
        """Stay connected (the client's idle timeout is long), until it leaves."""
        try:
            await ws.wait_closed()
        except websockets.ConnectionClosed:
            pass

    async def gap(self):
        """The time between two trades: mostly tens of ms, sometimes a quiet second."""
        await asyncio.sleep(
            self.rng.choice([0.01, 0.02, 0.05, 0.1]) if self.rng.random() < 0.95 else 1.0
        )

    async def all_at_once(self, ws):
        end = now_ms() - 100
        start = end - 10 * 60_000
        times = sorted(self.rng.randint(start, end) for _ in range(3000))
        frames = [self.trade(t) for t in times]
        self.finish()
        for frame in frames:
            await ws.send(frame)
        await self.idle(ws)

    async def bursts(self, ws):
        stop = time.monotonic() + self.args.seconds
        held, release_at = [], None
        next_stall = time.monotonic() + 2
        while time.monotonic() < stop:
            frame = self.trade(now_ms())
            now = time.monotonic()
            if release_at is None and now >= next_stall:
                release_at = now + self.rng.uniform(1, 10)
            if release_at is not None:
                held.append(frame)
                if now >= release_at:
                    for f in held:
                        await ws.send(f)
                    held, release_at = [], None
                    next_stall = now + self.rng.uniform(1, 3)
            else:
                await ws.send(frame)
            await self.gap()
        for f in held:
            await ws.send(f)
        self.finish()
        await self.idle(ws)

    async def reconnect(self, ws):
        if self.connections == 1:
            drop_at = time.monotonic() + 3
            while time.monotonic() < drop_at:
                await ws.send(self.trade(now_ms()))
                await self.gap()
            # gone without a close frame (what was sent is flushed: the log says what
            # the client got); the venue trades on meanwhile
            ws.transport.close()
            resume = time.monotonic() + 2
            while time.monotonic() < resume:
                self.backlog.append(self.trade(now_ms()))
                await self.gap()
            self.backlog_complete.set()
            return
        # the reconnect comes sooner than the 2 s: the backlog is whole first
        await self.backlog_complete.wait()
        for frame in self.backlog:
            await ws.send(frame)
        self.backlog = []
        stop = time.monotonic() + max(self.args.seconds - 5, 1)
        while time.monotonic() < stop:
            await ws.send(self.trade(now_ms()))
            await self.gap()
        self.finish()
        await self.idle(ws)

    async def serve(self, ws, *_):
        self.connections += 1
        if self.done:
            return await self.idle(ws)
        mode = {"all": self.all_at_once, "bursts": self.bursts, "reconnect": self.reconnect}
        try:
            await mode[self.args.mode](ws)
        except websockets.ConnectionClosed:
            pass


async def main():
    parser = argparse.ArgumentParser()
    for name in ("--cert", "--key", "--port-file", "--log", "--mode"):
        parser.add_argument(name, required=True)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    venue = Venue(args)
    async with websockets.serve(venue.serve, "127.0.0.1", 0, ssl=context) as server:
        port = server.sockets[0].getsockname()[1]
        with open(args.port_file, "w", encoding="utf-8") as f:
            f.write(str(port))
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
