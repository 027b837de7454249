"""Market data from mdi ring logs, in Python.

Live records as light objects with exact decimals, and history as polars DataFrames,
read straight from the publisher's shared memory (or a UDP channel)::

    import mdi

    for rec in mdi.Subscriber(["ticks"], kinds=["trade"]):
        print(rec.symbol, rec.price, rec.qty, rec.side)

    df = mdi.read("klines", kinds=["kline"], symbols=["BTCUSDT"])

Field names are those of ``mdtail --format jsonl`` (``docs/formats/mdtail.md``).
Prices, quantities and volumes are ``decimal.Decimal`` on objects (``<name>_f64`` gives
a float) and polars ``Decimal`` with the instrument's scale in DataFrames.

Events that are not records — records lost (``lost``: the writer lapped the reader,
with the exact range), a writer restart (``restarted``: a new epoch), a writer gone
(``writer_gone``), a ring replaced (``replaced``) — come as records of their own kind
from ``next()`` and iteration, and from ``take_notices()`` after ``poll_batch`` and
``read``, which also warn with :class:`LossWarning` on loss.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import warnings
from typing import Iterable, Optional, Sequence, Union

from . import _native
from ._native import ArrowBatch, Record, record_kinds

__all__ = [
    "ArrowBatch",
    "LossWarning",
    "Record",
    "Subscriber",
    "read",
    "record_kinds",
]
__version__ = _native.__version__

Start = Union[str, int, _dt.datetime]
End = Union[int, _dt.datetime, None]


class LossWarning(UserWarning):
    """Records were lost while reading (the writer lapped the reader, or a UDP replica
    could not repair a gap): the message gives the stream and the exact range."""


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def _time_ns(t: _dt.datetime) -> int:
    """A datetime as ns since the Unix epoch (a naive one is UTC), exactly."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _start(start: Start):
    if isinstance(start, _dt.datetime):
        return None, _time_ns(start)
    if isinstance(start, bool) or not isinstance(start, (str, int)):
        raise TypeError(
            f"start={start!r}: expected 'latest', 'earliest', a sequence number or a datetime"
        )
    return start, None


def _list(value, name: str) -> Optional[list]:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Iterable):
        raise TypeError(f"{name}={value!r}: expected a string or a list of strings")
    return list(value)


def _frame(batch: ArrowBatch):
    import polars as pl

    return pl.DataFrame(batch)


class Subscriber(_native.Subscriber):
    """Reads streams (rings) of a publisher: ``for rec in sub`` yields records.

    Args:
        streams: stream names (``"ticks"``, ``["ticks", "klines"]``); ``None``: every
            stream in the shm directory (or on the UDP channel).
        shm_dir: the publisher's shm directory (default ``$MDI_SHM_DIR``, else
            ``/dev/shm/mdi``).
        symbols: only these symbols (case-insensitive).
        kinds: only these record kinds (``trade``, ``quote``, ``book``, ``kline``,
            ``status``, ``instrument``); default: all but ``instrument``.
        start: ``"latest"`` (default: new records only), ``"earliest"`` (the oldest
            retained), a sequence number, or a ``datetime`` (the first record published
            at or after it; naive means UTC).
        udp: a channel URI (``"udp://239.1.1.1:40456?interface=..."``) or a list: read
            a remote publisher over reliable UDP instead of shared memory.
        wait: ``"park"`` (default: sleep on the ring, no CPU while idle), ``"yield"`` or
            ``"spin"`` (lowest latency, burns a core).
        follow: ``False`` ends iteration (and ``read``) at what the streams held when
            the subscriber opened.
        archive: a tick archive directory (``mdarchive record --archive DIR``): a start
            the ring no longer holds is read from the archive, then the live ring, by
            sequence — no gap, no duplicate; what neither holds is a ``lost`` event.

    Raises:
        FileNotFoundError: a stream (or the shm directory) does not exist; the message
            names it.
        ValueError: a ring file is corrupt or foreign (the message says what is wrong),
            or an argument is invalid.
        TimeoutError: nothing arrived on the UDP channel in 10 s.
    """

    def __new__(
        cls,
        streams: Union[str, Sequence[str], None] = None,
        shm_dir: Optional[str] = None,
        symbols: Union[str, Sequence[str], None] = None,
        kinds: Union[str, Sequence[str], None] = None,
        start: Start = "latest",
        udp: Union[str, Sequence[str], None] = None,
        wait: str = "park",
        follow: bool = True,
        archive: Optional[str] = None,
    ):
        start, start_ns = _start(start)
        return super().__new__(
            cls,
            _list(streams, "streams"),
            None if shm_dir is None else str(shm_dir),
            _list(symbols, "symbols"),
            _list(kinds, "kinds"),
            start,
            start_ns,
            _list(udp, "udp"),
            wait,
            follow,
            # a subscriber that reads what is there once maps ring pages as it reads them
            follow,
            None if archive is None else str(archive),
        )

    def __init__(self, *args, **kwargs):
        # everything happened in __new__ (the native part opens the streams)
        pass

    def poll_batch(self, max_records: int = 65_536):
        """What is there now — at most ``max_records`` records per stream — as a polars
        DataFrame, one row per record (without waiting). Events go to
        ``take_notices()``; loss also warns (:class:`LossWarning`)."""
        frame = _frame(self._poll_batch(max_records))
        self._warn_loss()
        return frame

    def arrow_batch(self, max_records: int = 65_536) -> ArrowBatch:
        """Like ``poll_batch``, as an Arrow batch (``pyarrow.table(batch)`` takes it
        without a copy, through the Arrow PyCapsule interface)."""
        batch = self._poll_batch(max_records)
        self._warn_loss()
        return batch

    def _warn_loss(self):
        lost = [n for n in self._pending_notices() if n.kind == "lost"]
        for n in lost:
            warnings.warn(
                f"{n.stream}: {n.count} records lost (seq {n.from_seq}..{n.to_seq})",
                LossWarning,
                stacklevel=3,
            )

    def _pending_notices(self):
        # keep them for take_notices(), but look at the new ones
        notices = self.take_notices()
        self.__dict__.setdefault("_kept", []).extend(notices)
        return notices

    def take_notices(self) -> list:
        """Events met by ``poll_batch`` and ``read`` since the last call."""
        kept = self.__dict__.pop("_kept", [])
        return kept + list(super().take_notices())

    def __aiter__(self):
        return self

    async def __anext__(self) -> Record:
        """``async for rec in sub``: waits in a worker thread (the GIL released), so
        the event loop runs on."""
        loop = asyncio.get_running_loop()
        # records that are there come without a wait, but the loop gets a turn now and
        # then, so that a busy stream does not starve other tasks
        served = self.__dict__.get("_served", 0) + 1
        self.__dict__["_served"] = served
        if served % 256 == 0:
            await asyncio.sleep(0)
        while True:
            rec = self.next(timeout=0)
            if rec is None:
                rec = await loop.run_in_executor(None, self.next, 0.1)
            if rec is not None:
                return rec
            if self._ended():
                raise StopAsyncIteration

    def _ended(self) -> bool:
        return self._at_end()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def read(
    stream: Union[str, Sequence[str]],
    shm_dir: Optional[str] = None,
    kinds: Union[str, Sequence[str], None] = None,
    symbols: Union[str, Sequence[str], None] = None,
    start: Start = "earliest",
    end: End = None,
    udp: Union[str, Sequence[str], None] = None,
    archive: Optional[str] = None,
):
    """What a stream holds, as a polars DataFrame: one row per record, columns named as
    ``mdtail --format jsonl`` names the fields (``kind``, ``symbol``, ``instrument_id``,
    ``stream``, ...), decimals as polars ``Decimal`` with the instrument's scale.

    Args:
        stream: the stream (or a list of streams).
        kinds: record kinds (default: all but ``instrument``); with one kind the
            columns are that kind's fields.
        start: ``"earliest"`` (default), ``"latest"``, a sequence number or a datetime.
        end: stop before this sequence number, or before the first record published at
            or after this datetime; ``None``: at what the stream holds now.
        archive: a tick archive directory (``mdarchive record --archive DIR``): a start
            older than the ring holds is read from it, then the ring, by sequence.

    Loss while reading (a writer lapping the reader) warns with :class:`LossWarning`.
    """
    sub = Subscriber(
        stream,
        shm_dir=shm_dir,
        symbols=symbols,
        kinds=kinds,
        start=start,
        udp=udp,
        follow=False,
        archive=archive,
    )
    try:
        if isinstance(end, _dt.datetime):
            batch = sub._read_to_end(end_time_ns=_time_ns(end))
        elif end is None:
            batch = sub._read_to_end()
        elif isinstance(end, int) and not isinstance(end, bool):
            batch = sub._read_to_end(end_seq=end)
        else:
            raise TypeError(f"end={end!r}: expected a sequence number, a datetime or None")
        for n in sub.take_notices():
            if n.kind == "lost":
                warnings.warn(
                    f"{n.stream}: {n.count} records lost (seq {n.from_seq}..{n.to_seq})",
                    LossWarning,
                    stacklevel=2,
                )
        return _frame(batch)
    finally:
        sub.close()
