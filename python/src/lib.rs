//! `mdi._native`: the subscriber SDK for Python. Records as light objects (fields
//! turned into Python values when read) or as Arrow columns for polars; waits with the
//! GIL released, in slices, so that Ctrl-C interrupts them. The Python package `mdi`
//! (`python/mdi/`) wraps it: see its docstrings and `python/README.md`.

mod columns;
mod record;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mdi_subscriber::fields::with_fields;
use mdi_subscriber::mdi_protocol::records::{RecordKind, RecordKinds};
use mdi_subscriber::mdi_protocol::ring::{ReaderOpenError, RingFileError};
use mdi_subscriber::{Mark, SubscribeError, Subscriber, ViewEvent, WaitStrategy};
use pyo3::exceptions::{
    PyConnectionError, PyFileNotFoundError, PyOSError, PyRuntimeError, PyStopIteration,
    PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyList;

use columns::{ArrowBatch, Columns, Layout};
use record::{Item, PyRecord};

/// How long one wait lasts with the GIL released before signals (Ctrl-C) are checked.
const WAIT_SLICE: Duration = Duration::from_millis(50);
/// Records a `read` of one ring has left from which it reads in two threads.
const SPLIT_MIN: u64 = 1 << 17;
/// Records taken from each stream per poll when filling the object queue.
const QUEUE_BATCH: usize = 256;

/// A subscriber error as the Python exception a user expects: a missing ring or shm
/// directory is `FileNotFoundError` (naming it), a corrupt or foreign one `ValueError`
/// (saying what is wrong), nothing on a UDP channel `TimeoutError`.
fn py_error(e: SubscribeError) -> PyErr {
    let text = e.to_string();
    match &e {
        SubscribeError::NoStreams(_) => PyFileNotFoundError::new_err(text),
        SubscribeError::List { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(text)
        }
        SubscribeError::List { .. } => PyOSError::new_err(text),
        SubscribeError::Open { source, .. } => match source {
            ReaderOpenError::File(RingFileError::NotFound { .. }) => {
                PyFileNotFoundError::new_err(text)
            }
            ReaderOpenError::File(RingFileError::Io { .. }) => PyOSError::new_err(text),
            _ => PyValueError::new_err(text),
        },
        SubscribeError::Corrupt { .. } => PyValueError::new_err(text),
        SubscribeError::Register { .. } => PyOSError::new_err(text),
        SubscribeError::NothingOnUdp { .. } => PyTimeoutError::new_err(text),
        SubscribeError::Udp(_) => PyConnectionError::new_err(text),
        #[allow(unreachable_patterns)]
        _ => PyRuntimeError::new_err(text),
    }
}

/// `["trade", "kline"]` as record kinds (plurals and `instrument` too).
fn parse_kinds(kinds: Option<Vec<String>>) -> PyResult<RecordKinds> {
    match kinds {
        None => Ok(RecordKinds::MARKET_DATA),
        Some(list) => list.join(",").parse().map_err(PyValueError::new_err),
    }
}

/// What one look at the streams found.
enum Polled {
    Item(Item),
    /// Nothing within the slice.
    Nothing,
    /// `follow=False` and everything there at the start has been read.
    End,
}

#[derive(Debug)]
struct Inner {
    subscriber: Option<Subscriber>,
    /// Records and events polled, not yet handed out as objects.
    queue: VecDeque<Item>,
    /// Events met by `poll_batch` / `read` (records go into the batch).
    notices: Vec<Item>,
    /// Records that did not decode (counted, skipped).
    undecodable: u64,
    /// `follow=False`: where the streams ended when the subscriber opened.
    end: Option<Mark>,
}

impl Inner {
    fn subscriber(&mut self) -> PyResult<&mut Subscriber> {
        self.subscriber
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("the subscriber is closed"))
    }

    /// Pops or polls the next item, waiting at most `slice`.
    fn next_item(&mut self, slice: Duration) -> PyResult<Polled> {
        let started = Instant::now();
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Ok(Polled::Item(item));
            }
            let Self {
                subscriber,
                queue,
                undecodable,
                end,
                ..
            } = self;
            let subscriber = subscriber
                .as_mut()
                .ok_or_else(|| PyValueError::new_err("the subscriber is closed"))?;
            subscriber
                .poll_views(QUEUE_BATCH, |event| match event {
                    ViewEvent::Record {
                        stream,
                        seq,
                        record,
                        symbol,
                    } => {
                        match with_fields(stream, seq.0, symbol, record, |head, fields| {
                            Item::record(head, fields, stream, symbol)
                        }) {
                            Ok(item) => queue.push_back(item),
                            Err(_) => *undecodable += 1,
                        }
                    }
                    ViewEvent::Notice(event) => queue.push_back(Item::notice(&event)),
                })
                .map_err(py_error)?;
            if !queue.is_empty() {
                continue;
            }
            if let Some(mark) = end
                && subscriber.reached(mark)
            {
                return Ok(Polled::End);
            }
            let elapsed = started.elapsed();
            if elapsed >= slice {
                return Ok(Polled::Nothing);
            }
            subscriber.wait(slice - elapsed);
        }
    }

    /// Polls what is there now into `columns` (events into `notices`), at most
    /// `max_records` per stream; with `end`, records at or past it are left out and the
    /// return value says a stream passed it.
    fn poll_columns(
        &mut self,
        columns: &mut Columns,
        max_records: usize,
        end: Option<End>,
    ) -> PyResult<(bool, usize)> {
        // objects already polled for `next` come first
        while let Some(item) = self.queue.pop_front() {
            if matches!(
                item.kind(),
                "lost" | "restarted" | "writer_gone" | "replaced"
            ) {
                self.notices.push(item);
            } else {
                columns::push_item(columns, &item);
            }
        }
        let Self {
            subscriber,
            notices,
            undecodable,
            ..
        } = self;
        let subscriber = subscriber
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("the subscriber is closed"))?;
        poll_into(subscriber, columns, max_records, end, notices, undecodable).map_err(py_error)
    }
}

/// Polls what is there now from `subscriber` into `columns` (events into `notices`, the
/// records that do not decode counted), at most `max_records` per stream; with `end`,
/// records at or past it are left out and the first value returned says a stream
/// passed it; the second is what was delivered.
fn poll_into(
    subscriber: &mut Subscriber,
    columns: &mut Columns,
    max_records: usize,
    end: Option<End>,
    notices: &mut Vec<Item>,
    undecodable: &mut u64,
) -> Result<(bool, usize), SubscribeError> {
    let mut passed = false;
    let delivered = subscriber.poll_views(max_records, |event| match event {
        ViewEvent::Record {
            stream,
            seq,
            record,
            symbol,
        } => {
            if let Some(end) = end
                && end.reached(seq.0, record.ts_publish_ns())
            {
                passed = true;
                return;
            }
            if !columns.push_view(stream, seq.0, symbol, record) {
                *undecodable += 1;
            }
        }
        ViewEvent::Notice(event) => notices.push(Item::notice(&event)),
    })?;
    Ok((passed, delivered))
}

/// Where `read` stops: before this sequence number, or before the first record
/// published at or after this time.
#[derive(Debug, Clone, Copy)]
enum End {
    Seq(u64),
    TimeNs(i64),
}

impl End {
    fn reached(self, seq: u64, published_ns: i64) -> bool {
        match self {
            Self::Seq(end) => seq >= end,
            Self::TimeNs(end) => published_ns >= end,
        }
    }
}

/// The second half of a long `read`, read into columns of its own by a thread (the
/// first half is read by the caller): [`Subscriber::split_half`].
struct SecondHalf {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<HalfRead, SubscribeError>>>,
}

/// What the second half read: its rows, its events, the records that did not decode.
type HalfRead = (Columns, Vec<Item>, u64);

impl SecondHalf {
    /// Reads `subscriber` up to `mark`, stopping before sequence `until`.
    fn start(
        mut subscriber: Subscriber,
        layout: Arc<Layout>,
        mark: Mark,
        until: Option<u64>,
    ) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut columns = Columns::new(layout, 1 << 16);
            let mut notices = Vec::new();
            let mut undecodable = 0;
            let mut passed = false;
            let end = until.map(End::Seq);
            while !passed && !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let polled = poll_into(
                    &mut subscriber,
                    &mut columns,
                    1 << 16,
                    end,
                    &mut notices,
                    &mut undecodable,
                )?;
                passed = polled.0 || subscriber.reached(&mark);
            }
            Ok((columns, notices, undecodable))
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// What the thread read, once it is done.
    fn finish(mut self) -> PyResult<HalfRead> {
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(read)) => read.map_err(py_error),
            _ => Err(PyRuntimeError::new_err(
                "the thread reading the second half failed",
            )),
        }
    }
}

impl Drop for SecondHalf {
    /// An interrupted read (Ctrl-C) stops the thread and waits for it.
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads streams of a publisher (the `mdi.Subscriber` class builds on it).
#[pyclass(module = "mdi._native", name = "Subscriber", subclass)]
struct PySubscriber {
    inner: Mutex<Inner>,
    layout: Arc<Layout>,
    streams: Vec<String>,
}

impl PySubscriber {
    fn lock(&self) -> PyResult<MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| PyRuntimeError::new_err("a reader of this subscriber panicked"))
    }

    /// The next item, waiting up to `timeout` (`None`: forever) with the GIL released,
    /// in slices between which signals are checked (Ctrl-C raises KeyboardInterrupt).
    fn next_polled(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<Polled> {
        // what is already queued comes without releasing the GIL
        if let Ok(mut inner) = self.inner.try_lock()
            && let Some(item) = inner.queue.pop_front()
        {
            return Ok(Polled::Item(item));
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let slice = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(WAIT_SLICE),
                None => WAIT_SLICE,
            };
            let polled = py.detach(|| self.lock()?.next_item(slice))?;
            match polled {
                Polled::Nothing => {}
                other => return Ok(other),
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Polled::Nothing);
            }
        }
    }
}

#[pymethods]
impl PySubscriber {
    #[new]
    #[pyo3(signature = (
        streams = None,
        shm_dir = None,
        symbols = None,
        kinds = None,
        start = None,
        start_time_ns = None,
        udp = None,
        wait = "park",
        follow = true,
        prefault = true,
        archive = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        streams: Option<Vec<String>>,
        shm_dir: Option<PathBuf>,
        symbols: Option<Vec<String>>,
        kinds: Option<Vec<String>>,
        start: Option<Bound<'_, PyAny>>,
        start_time_ns: Option<i64>,
        udp: Option<Vec<String>>,
        wait: &str,
        follow: bool,
        prefault: bool,
        archive: Option<PathBuf>,
    ) -> PyResult<Self> {
        let kinds = parse_kinds(kinds)?;
        let mut builder = Subscriber::builder().kinds(kinds).prefault(prefault);
        if let Some(dir) = shm_dir {
            builder = builder.shm_dir(dir);
        }
        if let Some(dir) = archive {
            builder = builder.archive(dir);
        }
        for stream in streams.iter().flatten() {
            builder = builder.stream(stream.clone());
        }
        if let Some(symbols) = symbols {
            builder = builder.symbols(symbols);
        }
        builder = match (start, start_time_ns) {
            (_, Some(ns)) => builder.from_time(ns),
            (None, None) => builder.from_latest(),
            (Some(start), None) => {
                if let Ok(seq) = start.extract::<u64>() {
                    builder.from_sequence(seq)
                } else {
                    match start.extract::<String>()?.as_str() {
                        "latest" => builder.from_latest(),
                        "earliest" => builder.from_earliest(),
                        other => {
                            return Err(PyValueError::new_err(format!(
                                "start={other:?}: expected \"latest\", \"earliest\", a sequence number or a datetime"
                            )));
                        }
                    }
                }
            }
        };
        builder = builder.wait(match wait {
            "spin" => WaitStrategy::BusySpin,
            "yield" => WaitStrategy::Yield,
            "park" => WaitStrategy::Park {
                timeout: Duration::from_millis(1),
            },
            other => {
                return Err(PyValueError::new_err(format!(
                    "wait={other:?}: expected \"park\" (the default), \"yield\" or \"spin\""
                )));
            }
        });
        for uri in udp.iter().flatten() {
            let channel = mdi_subscriber::Channel::parse(uri)
                .map_err(|e| PyValueError::new_err(format!("udp={uri:?}: {e}")))?;
            builder = builder.udp(channel);
        }
        // opening may wait (up to 10 s for UDP streams): without the GIL
        let subscriber = py.detach(|| builder.open()).map_err(py_error)?;
        let end = (!follow).then(|| subscriber.mark());
        let streams = subscriber.streams().map(str::to_owned).collect();
        Ok(Self {
            inner: Mutex::new(Inner {
                subscriber: Some(subscriber),
                queue: VecDeque::new(),
                notices: Vec::new(),
                undecodable: 0,
                end,
            }),
            layout: Arc::new(Layout::new(kinds)),
            streams,
        })
    }

    /// The streams read, in order.
    #[getter]
    fn streams(&self) -> Vec<String> {
        self.streams.clone()
    }

    /// Records that did not decode (counted and skipped).
    #[getter]
    fn undecodable(&self) -> PyResult<u64> {
        let inner = self.lock()?;
        let sdk = inner.subscriber.as_ref().map_or(0, Subscriber::undecodable);
        Ok(inner.undecodable + sdk)
    }

    /// The next record or event, waiting up to `timeout` seconds (`None`: until one
    /// comes); `None` when the timeout passed (or, with `follow=False`, at the end).
    /// The GIL is released while waiting; Ctrl-C interrupts.
    #[pyo3(signature = (timeout = None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<PyRecord>> {
        let timeout = timeout
            .map(|t| {
                Duration::try_from_secs_f64(t.max(0.0))
                    .map_err(|e| PyValueError::new_err(format!("timeout={t}: {e}")))
            })
            .transpose()?;
        Ok(match self.next_polled(py, timeout)? {
            Polled::Item(item) => Some(PyRecord::new(item)),
            Polled::Nothing | Polled::End => None,
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<PyRecord> {
        match self.next_polled(py, None)? {
            Polled::Item(item) => Ok(PyRecord::new(item)),
            Polled::Nothing | Polled::End => Err(PyStopIteration::new_err(())),
        }
    }

    /// What is there now — at most `max_records` records per stream — as Arrow columns
    /// (records only: events go to `take_notices()`). Does not wait.
    #[pyo3(signature = (max_records = 65_536))]
    fn _poll_batch(&self, py: Python<'_>, max_records: usize) -> PyResult<ArrowBatch> {
        let layout = Arc::clone(&self.layout);
        let batch = py.detach(|| {
            let mut inner = self.lock()?;
            let mut columns = Columns::new(layout, max_records.min(1 << 20));
            // a poll reads what one copy out of the ring holds (records the filters leave
            // out among them): polled again until the batch is full or the streams are
            // read up to their writers — within a slice, for a writer faster than this
            let deadline = Instant::now() + WAIT_SLICE;
            while columns.len() < max_records {
                let room = max_records - columns.len();
                inner.poll_columns(&mut columns, room, None)?;
                if inner.subscriber()?.caught_up() || Instant::now() >= deadline {
                    break;
                }
            }
            Ok::<_, PyErr>(columns.finish(false))
        })?;
        Ok(ArrowBatch::new(batch))
    }

    /// Everything up to the end of the streams as they were at opening (`follow=False`)
    /// or now, stopping before sequence `end_seq` or the first record published at
    /// `end_time_ns`, as Arrow columns (events to `take_notices()`).
    #[pyo3(signature = (end_seq = None, end_time_ns = None))]
    fn _read_to_end(
        &self,
        py: Python<'_>,
        end_seq: Option<u64>,
        end_time_ns: Option<i64>,
    ) -> PyResult<ArrowBatch> {
        let end = match (end_seq, end_time_ns) {
            (Some(seq), _) => Some(End::Seq(seq)),
            (None, Some(ns)) => Some(End::TimeNs(ns)),
            (None, None) => None,
        };
        let single = self.streams.len() == 1;
        let mark = {
            let mut inner = self.lock()?;
            match inner.end.clone() {
                Some(mark) => mark,
                None => inner.subscriber()?.mark(),
            }
        };
        // A long read of one ring goes twice as fast in two threads: the second half is
        // read by a second subscriber in a thread of its own, this one stops before it.
        let mut end = end;
        let mut second = None;
        if single && !matches!(end, Some(End::TimeNs(_))) {
            let mut inner = self.lock()?;
            if inner.queue.is_empty()
                && let Some((middle, other)) = inner.subscriber()?.split_half(&mark, SPLIT_MIN)
            {
                let until = match end {
                    Some(End::Seq(seq)) => Some(seq),
                    _ => None,
                };
                if until.is_none_or(|seq| seq > middle.0) {
                    end = Some(End::Seq(middle.0));
                    second = Some(SecondHalf::start(
                        other,
                        Arc::clone(&self.layout),
                        mark.clone(),
                        until,
                    ));
                }
            }
        }
        let mut columns = Columns::new(Arc::clone(&self.layout), 1 << 16);
        loop {
            let done = py.detach(|| {
                let mut inner = self.lock()?;
                // bounded per call, so that signals are checked between calls
                let deadline = Instant::now() + WAIT_SLICE;
                loop {
                    let (passed, _) = inner.poll_columns(&mut columns, 1 << 16, end)?;
                    if inner.subscriber()?.reached(&mark) || (passed && single) {
                        return Ok::<_, PyErr>(true);
                    }
                    if Instant::now() >= deadline {
                        return Ok(false);
                    }
                }
            })?;
            if done {
                break;
            }
            py.check_signals()?;
        }
        if let Some(second) = second {
            let (rows, notices, undecodable) = py.detach(|| second.finish())?;
            columns.append(rows);
            let mut inner = self.lock()?;
            inner.notices.extend(notices);
            inner.undecodable += undecodable;
        }
        Ok(ArrowBatch::new(columns.finish(true)))
    }

    /// The events (`lost`, `restarted`, `writer_gone`, `replaced`) met by `poll_batch`
    /// and `read` since the last call, as records.
    fn take_notices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let notices = std::mem::take(&mut self.lock()?.notices);
        PyList::new(py, notices.into_iter().map(PyRecord::new))
    }

    /// True with `follow=False` once everything there at opening has been handed out.
    fn _at_end(&self) -> PyResult<bool> {
        let mut inner = self.lock()?;
        let Inner {
            subscriber,
            queue,
            end,
            ..
        } = &mut *inner;
        Ok(match (end, subscriber) {
            (Some(mark), Some(s)) => queue.is_empty() && s.reached(mark),
            _ => false,
        })
    }

    /// Closes the streams (the subscriber reads nothing after).
    fn close(&self) -> PyResult<()> {
        let subscriber = self.lock()?.subscriber.take();
        drop(subscriber);
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!("<mdi.Subscriber streams={:?}>", self.streams)
    }
}

/// The raw records of a stream, oldest retained first, up to what it holds now (at most
/// `limit`): `(kind, body)` pairs, each body one flat Cap'n Proto message of
/// `docs/formats/records.capnp`'s struct for its kind — for tools that decode records
/// themselves (pycapnp, another language).
#[pyfunction]
#[pyo3(signature = (stream, shm_dir = None, kinds = None, limit = None))]
fn record_bodies<'py>(
    py: Python<'py>,
    stream: &str,
    shm_dir: Option<PathBuf>,
    kinds: Option<Vec<String>>,
    limit: Option<usize>,
) -> PyResult<Bound<'py, PyList>> {
    use mdi_subscriber::mdi_protocol::ring::{ReadEvent, RingReader, ShmDir, StartAt};
    let kinds = parse_kinds(kinds)?;
    let shm = ShmDir::resolve(shm_dir.as_deref());
    let mut reader = RingReader::open(&shm, stream, StartAt::Earliest).map_err(|source| {
        py_error(SubscribeError::Open {
            stream: stream.to_owned(),
            source,
        })
    })?;
    let (end, _) = reader.tail();
    let limit = limit.unwrap_or(usize::MAX);
    let mut bodies: Vec<(&'static str, Vec<u8>)> = Vec::new();
    while bodies.len() < limit && reader.position() < end && !reader.caught_up() {
        reader
            .poll(4_096, |event| {
                if let ReadEvent::Record(r) = event
                    && kinds.contains(r.kind)
                    && bodies.len() < limit
                {
                    bodies.push((r.kind.name(), r.body.to_vec()));
                }
            })
            .map_err(|e| PyValueError::new_err(format!("stream {stream:?}: {e}")))?;
    }
    PyList::new(
        py,
        bodies
            .into_iter()
            .map(|(kind, body)| (kind, pyo3::types::PyBytes::new(py, &body))),
    )
}

/// Record kinds by name, in the order of the columns.
#[pyfunction]
fn record_kinds() -> Vec<&'static str> {
    RecordKind::RECORDS.iter().map(|k| k.name()).collect()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySubscriber>()?;
    m.add_class::<PyRecord>()?;
    m.add_class::<ArrowBatch>()?;
    m.add_function(wrap_pyfunction!(record_kinds, m)?)?;
    m.add_function(wrap_pyfunction!(record_bodies, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
