//! Reading streams the way a strategy wants to: a builder, one loop over several streams,
//! records decoded and resolved to symbols, and every gap, restart and writer exit as an
//! event — never silence.
//!
//! ```no_run
//! use std::time::Duration;
//! use mdi_subscriber::{Event, Record, Subscriber, TradeExt};
//!
//! # fn main() -> Result<(), mdi_subscriber::SubscribeError> {
//! let mut subscriber = Subscriber::builder()
//!     .stream("ticks")
//!     .symbols(["BTCUSDT"])
//!     .from_earliest()
//!     .open()?;
//! loop {
//!     let Some(event) = subscriber.next(Duration::from_secs(1))? else { continue };
//!     match event {
//!         Event::Record { record: Record::Trade(t), symbol, .. } => {
//!             println!("{symbol:?} {} @ {}", t.qty_decimal(), t.price_decimal());
//!         }
//!         Event::Lost { stream, count, .. } => eprintln!("{stream}: {count} records lost"),
//!         other => eprintln!("{other:?}"),
//!     }
//! }
//! # }
//! ```

use std::collections::HashSet;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use mdi_protocol::decimal::Decimal;
use mdi_protocol::records::{RecordError, RecordKind, RecordKinds, Trade};
use mdi_protocol::ring::{
    ReadEvent, ReaderOpenError, RegisterError, Registration, RingReader, ShmDir, StartAt,
    WaitStrategy, WriterState,
};
use mdi_protocol::view::{Record, RecordView};

#[cfg(feature = "udp")]
use mdi_transport::receiver::BackgroundReceiver;

use mdi_transport::wall_clock_ns;

/// Opening or reading streams failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// No stream was named and the shm directory has none.
    #[error("no streams in {0}")]
    NoStreams(PathBuf),
    /// Listing the shm directory failed.
    #[error("listing streams in {path}: {source}")]
    List {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No stream (or not every stream named) arrived on the UDP channels in time.
    #[cfg(feature = "udp")]
    #[error("no stream arrived on the UDP channels within {} s (is a publisher serving them?)", waited.as_secs())]
    NothingOnUdp {
        /// How long the subscriber waited.
        waited: Duration,
    },
    /// The UDP receiver could not start (the channel's address in use, ...).
    #[cfg(feature = "udp")]
    #[error("UDP: {0}")]
    Udp(mdi_transport::receiver::UdpReceiveError),
    /// Registering the reader failed (readers file not writable, all slots taken).
    #[error("registering on stream {stream:?}: {source}")]
    Register {
        /// The stream.
        stream: String,
        /// Why.
        source: RegisterError,
    },
    /// A stream could not be opened (missing, foreign or corrupt file, sequence gone).
    #[error("stream {stream:?}: {source}")]
    Open {
        /// The stream.
        stream: String,
        /// Why.
        source: ReaderOpenError,
    },
    /// A record in shared memory is corrupt (not a torn write: those are never seen).
    #[error("stream {stream:?}: {detail}")]
    Corrupt {
        /// The stream.
        stream: String,
        /// What the ring found.
        detail: String,
    },
}

/// Stream names and symbols as `&'static str`: each distinct one is stored once for the
/// life of the process (there are few), so events carry them without allocating or
/// reference counting.
pub fn intern(text: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(&known) = names.get(text) {
        return known;
    }
    let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// Exact decimal accessors for trades.
pub trait TradeExt {
    /// The price as an exact decimal.
    fn price_decimal(&self) -> Decimal;
    /// The quantity as an exact decimal.
    fn qty_decimal(&self) -> Decimal;
}

impl TradeExt for Trade {
    fn price_decimal(&self) -> Decimal {
        Decimal::new(self.price, self.price_exponent)
    }

    fn qty_decimal(&self) -> Decimal {
        Decimal::new(self.qty, self.qty_exponent)
    }
}

/// What a subscriber delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A record, with the symbol its instrument id stands for (`None` if the stream has
    /// not shown the instrument's definition).
    Record {
        /// The stream.
        stream: &'static str,
        /// Its sequence number in the stream.
        seq: u64,
        /// The record.
        record: Record,
        /// The instrument's symbol.
        symbol: Option<&'static str>,
    },
    /// Records `from_seq..to_seq` of `stream` will never be delivered (the writer lapped
    /// this reader, or a replica could not repair a gap): exactly `count` records.
    Lost {
        /// The stream.
        stream: &'static str,
        /// First lost sequence.
        from_seq: u64,
        /// One past the last.
        to_seq: u64,
        /// `to_seq - from_seq`.
        count: u64,
    },
    /// The stream's writer restarted (a new epoch): records after this are the new
    /// writer's.
    Restarted {
        /// The stream.
        stream: &'static str,
        /// The new epoch.
        epoch: u64,
        /// The epoch before.
        previous_epoch: u64,
        /// The new writer's process id.
        writer_pid: u32,
    },
    /// The stream's writer is gone: closed cleanly, or died. Reported once; reading goes
    /// on (a new writer starts a new epoch).
    WriterGone {
        /// The stream.
        stream: &'static str,
        /// Closed or dead.
        state: WriterState,
    },
    /// The ring file was replaced by a new ring of the same name; reading continues in
    /// the new one from its start.
    Replaced {
        /// The stream.
        stream: &'static str,
    },
}

/// The writers' positions at one moment ([`Subscriber::mark`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark(Vec<u64>);

/// What [`Subscriber::poll_views`] delivers: records as zero-copy views, everything
/// else as the [`Event`] [`Subscriber::poll`] would give.
#[derive(Debug, Clone)]
pub enum ViewEvent<'a> {
    /// A record, read in place; the view is valid during the callback only.
    Record {
        /// The stream.
        stream: &'static str,
        /// Its sequence number in the stream.
        seq: u64,
        /// The record.
        record: RecordView<'a>,
        /// The instrument's symbol (`None` if the stream has not shown its definition).
        symbol: Option<&'static str>,
    },
    /// Loss, restart, writer gone or ring replaced (never [`Event::Record`]).
    Notice(Event),
}

/// Builds a [`Subscriber`].
#[derive(Debug, Clone)]
pub struct SubscriberBuilder {
    shm_dir: Option<PathBuf>,
    streams: Vec<String>,
    start: StartAt,
    symbols: Option<Vec<String>>,
    kinds: RecordKinds,
    wait: WaitStrategy,
    register: Option<String>,
    #[cfg(feature = "udp")]
    udp: Vec<mdi_protocol::udp::Channel>,
}

impl SubscriberBuilder {
    /// The shared-memory directory (default: `$MDI_SHM_DIR`, else `/dev/shm/mdi`).
    #[must_use]
    pub fn shm_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.shm_dir = Some(dir.into());
        self
    }

    /// A stream to read (repeatable; none: every stream in the directory).
    #[must_use]
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.streams.push(name.into());
        self
    }

    /// Start at the oldest record still retained.
    #[must_use]
    pub fn from_earliest(mut self) -> Self {
        self.start = StartAt::Earliest;
        self
    }

    /// Start after the last committed record (the default): only new records.
    #[must_use]
    pub fn from_latest(mut self) -> Self {
        self.start = StartAt::Latest;
        self
    }

    /// Start at this sequence number (in every stream opened).
    #[must_use]
    pub fn from_sequence(mut self, seq: u64) -> Self {
        self.start = StartAt::Sequence(seq);
        self
    }

    /// Start at the first record published at or after this time (ns since the Unix
    /// epoch; [`StartAt::Time`]: found by binary search of the ring's index, the few
    /// records before it in their index stride read past, not delivered). The last of
    /// `from_*` called decides the start.
    #[must_use]
    pub fn from_time(mut self, time_ns: i64) -> Self {
        self.start = StartAt::Time(time_ns);
        self
    }

    /// Only these symbols (case-insensitive), resolved through the streams' instrument
    /// definitions.
    #[must_use]
    pub fn symbols<S: Into<String>>(mut self, symbols: impl IntoIterator<Item = S>) -> Self {
        self.symbols = Some(symbols.into_iter().map(Into::into).collect());
        self
    }

    /// Only these record kinds (default: [`RecordKinds::MARKET_DATA`]).
    #[must_use]
    pub fn kinds(mut self, kinds: RecordKinds) -> Self {
        self.kinds = kinds;
        self
    }

    /// How [`Subscriber::next`] waits: busy-spin, yield, or park (the default, 1 ms
    /// slices).
    #[must_use]
    pub fn wait(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Publish this reader's position, lag and losses under `name` in each stream's
    /// readers file, for `mdstat` (the ring itself stays read-only to it).
    #[must_use]
    pub fn register(mut self, name: impl Into<String>) -> Self {
        self.register = Some(name.into());
        self
    }

    /// Read a remote publisher over reliable UDP instead of the shm directory: a
    /// receiver on a thread of its own keeps replicas (loss repaired with NAKs) in a
    /// private directory, removed when the subscriber is dropped. Repeatable. Waits up to
    /// 10 s in [`Self::open`] for the streams (named, or any) to arrive.
    #[cfg(feature = "udp")]
    #[must_use]
    pub fn udp(mut self, channel: mdi_protocol::udp::Channel) -> Self {
        self.udp.push(channel);
        self
    }

    /// Opens every stream.
    pub fn open(self) -> Result<Subscriber, SubscribeError> {
        #[cfg(feature = "udp")]
        let udp = if self.udp.is_empty() {
            None
        } else {
            let receiver = BackgroundReceiver::start(&self.udp).map_err(SubscribeError::Udp)?;
            if !receiver.wait_for(&self.streams, UDP_JOIN_TIMEOUT) {
                return Err(SubscribeError::NothingOnUdp {
                    waited: UDP_JOIN_TIMEOUT,
                });
            }
            Some(receiver)
        };
        #[cfg(feature = "udp")]
        let shm = match &udp {
            Some(receiver) => ShmDir::new(receiver.dir()),
            None => ShmDir::resolve(self.shm_dir.as_deref()),
        };
        #[cfg(not(feature = "udp"))]
        let shm = ShmDir::resolve(self.shm_dir.as_deref());
        let names = if self.streams.is_empty() {
            let names = shm.streams().map_err(|source| SubscribeError::List {
                path: shm.path().to_owned(),
                source,
            })?;
            if names.is_empty() {
                return Err(SubscribeError::NoStreams(shm.path().to_owned()));
            }
            names
        } else {
            self.streams.clone()
        };
        let streams = names
            .into_iter()
            .map(|name| {
                let reader = RingReader::open(&shm, &name, self.start).map_err(|source| {
                    SubscribeError::Open {
                        stream: name.clone(),
                        source,
                    }
                })?;
                let registration = match &self.register {
                    Some(who) => Some(
                        Registration::claim(&shm, &name, who, wall_clock_ns()).map_err(
                            |source| SubscribeError::Register {
                                stream: name.clone(),
                                source,
                            },
                        )?,
                    ),
                    None => None,
                };
                Ok(StreamState {
                    name: intern(&name),
                    reader,
                    writer_gone: false,
                    registration,
                    lost: 0,
                    status_checked: None,
                    idle_polls: 0,
                })
            })
            .collect::<Result<Vec<_>, SubscribeError>>()?;
        // A subscriber that starts later than the earliest record still resolves the
        // symbols of what it reads: the definitions already in the ring are read first.
        let mut instruments = HashMap::default();
        for (index, state) in streams.iter().enumerate() {
            let first_delivered = match self.start {
                StartAt::Earliest => continue,
                StartAt::Sequence(seq) => seq,
                StartAt::Latest => state.reader.next_seq().unwrap_or(0),
                // the records read past before the time may define instruments too
                StartAt::Time(_) => state.reader.tail().1,
            };
            prime_instruments(&shm, index, state.name, first_delivered, &mut instruments);
        }
        Ok(Subscriber {
            shm,
            streams,
            symbols: self
                .symbols
                .map(|s| s.into_iter().map(|s| s.to_ascii_uppercase()).collect()),
            kinds: self.kinds,
            wait: self.wait,
            instruments,
            queue: VecDeque::new(),
            next_stream: 0,
            undecodable: 0,
            #[cfg(feature = "udp")]
            _udp: udp,
        })
    }
}

/// The owned event for a view event; `None` if the record does not copy out (counted
/// as undecodable by the caller).
fn owned(event: ViewEvent<'_>) -> Option<Event> {
    match event {
        ViewEvent::Record {
            stream,
            seq,
            record,
            symbol,
        } => Record::from_view(record).ok().map(|record| Event::Record {
            stream,
            seq,
            record,
            symbol,
        }),
        ViewEvent::Notice(event) => Some(event),
    }
}

/// Reads the instrument definitions retained in `stream`'s ring before sequence
/// `first_delivered` (bounded by the ring's size: one pass at memory speed).
fn prime_instruments(
    shm: &ShmDir,
    index: usize,
    stream: &str,
    first_delivered: u64,
    instruments: &mut HashMap<(usize, u32), &'static str, IdHash>,
) {
    let Ok(mut scan) = RingReader::open(shm, stream, StartAt::Earliest) else {
        return;
    };
    while scan.next_seq().is_some_and(|next| next < first_delivered) {
        let polled = scan.poll(4096, |event| {
            if let ReadEvent::Record(r) = event
                && r.seq < first_delivered
                && r.kind == RecordKind::INSTRUMENT_DEFINITION
            {
                let _ = RecordView::open(r.kind, r.body, |view| {
                    if let RecordView::Instrument(d) = view
                        && let Ok(symbol) = d.symbol()
                    {
                        instruments.insert((index, d.get_instrument_id()), intern(symbol));
                    }
                });
            }
        });
        if !matches!(polled, Ok(n) if n > 0) {
            break;
        }
    }
}

/// Hashing for (stream index, instrument id) keys: small integers chosen by the
/// publisher; a multiply is enough and SipHash costs more than the lookup.
#[derive(Debug, Clone, Copy, Default)]
struct IdHash;

#[derive(Debug, Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0 ^ n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

/// How long opening a subscriber over UDP waits for its streams to arrive.
#[cfg(feature = "udp")]
const UDP_JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often an idle stream's writer is looked at.
const STATUS_EVERY: Duration = Duration::from_millis(20);

struct StreamState {
    name: &'static str,
    reader: RingReader,
    writer_gone: bool,
    registration: Option<Registration>,
    /// Records lost so far (published with the registration).
    lost: u64,
    /// When the writer's state was last looked at (a system call: not on every idle
    /// poll of a busy-spinning reader).
    status_checked: Option<Instant>,
    /// Polls that found nothing (paces the writer-state checks).
    idle_polls: u32,
}

impl std::fmt::Debug for StreamState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamState")
            .field("name", &self.name)
            .field("position", &self.reader.position())
            .finish_non_exhaustive()
    }
}

/// Reads one or more streams. See the module docs.
#[derive(Debug)]
pub struct Subscriber {
    shm: ShmDir,
    streams: Vec<StreamState>,
    symbols: Option<Vec<String>>,
    kinds: RecordKinds,
    wait: WaitStrategy,
    /// (stream, instrument id) → symbol. Ids are per publisher, so per stream here.
    instruments: HashMap<(usize, u32), &'static str, IdHash>,
    queue: VecDeque<Event>,
    next_stream: usize,
    undecodable: u64,
    /// The UDP receiver keeping the replicas read (dropped last).
    #[cfg(feature = "udp")]
    _udp: Option<BackgroundReceiver>,
}

impl Subscriber {
    /// A builder (reads `$MDI_SHM_DIR` or `/dev/shm/mdi` unless told otherwise).
    pub fn builder() -> SubscriberBuilder {
        SubscriberBuilder {
            shm_dir: None,
            streams: Vec::new(),
            start: StartAt::Latest,
            symbols: None,
            kinds: RecordKinds::MARKET_DATA,
            wait: WaitStrategy::Park {
                timeout: Duration::from_millis(1),
            },
            register: None,
            #[cfg(feature = "udp")]
            udp: Vec::new(),
        }
    }

    /// The streams read, in order.
    pub fn streams(&self) -> impl Iterator<Item = &str> {
        self.streams.iter().map(|s| s.name)
    }

    /// Records of mdi kinds that did not decode (counted and skipped).
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Delivers what is there now — at most `max_records` records per stream, plus any
    /// events — to `on_event`, without blocking; returns the number of events delivered.
    /// Records are copied out of the ring into owned values; [`Self::poll_views`] reads
    /// them in place instead.
    pub fn poll(
        &mut self,
        max_records: usize,
        mut on_event: impl FnMut(Event),
    ) -> Result<usize, SubscribeError> {
        let mut delivered = 0;
        while let Some(event) = self.queue.pop_front() {
            on_event(event);
            delivered += 1;
        }
        let mut undecodable = 0;
        for index in 0..self.streams.len() {
            delivered += self.poll_stream(index, max_records, &mut |event| match owned(event) {
                Some(event) => on_event(event),
                None => undecodable += 1,
            })?;
        }
        self.undecodable += undecodable;
        Ok(delivered)
    }

    /// Like [`Self::poll`], but records are zero-copy views of the bytes read from the
    /// ring: only the fields asked for are read, nothing is allocated. A view lives for
    /// the call of `on_event` it is given to.
    ///
    /// ```no_run
    /// use mdi_subscriber::{RecordView, Subscriber, ViewEvent};
    ///
    /// # fn main() -> Result<(), mdi_subscriber::SubscribeError> {
    /// let mut subscriber = Subscriber::builder().stream("ticks").open()?;
    /// let mut notional = 0.0;
    /// subscriber.poll_views(1024, |event| match event {
    ///     ViewEvent::Record { record: RecordView::Trade(t), .. } => {
    ///         notional += t.price().to_f64() * t.qty().to_f64();
    ///     }
    ///     ViewEvent::Record { .. } => {}
    ///     ViewEvent::Notice(notice) => eprintln!("{notice:?}"),
    /// })?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn poll_views(
        &mut self,
        max_records: usize,
        mut on_event: impl FnMut(ViewEvent<'_>),
    ) -> Result<usize, SubscribeError> {
        let mut delivered = 0;
        while let Some(event) = self.queue.pop_front() {
            on_event(ViewEvent::Notice(event));
            delivered += 1;
        }
        for index in 0..self.streams.len() {
            delivered += self.poll_stream(index, max_records, &mut on_event)?;
        }
        Ok(delivered)
    }

    /// The next event, waiting up to `timeout` (as the wait strategy says); `None` when
    /// nothing came.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Event>, SubscribeError> {
        // the clock is read only while waiting, and then only every few spins: a busy
        // reader's loop stays a poll of the commit position
        let mut deadline: Option<Instant> = None;
        let mut idle = 0u32;
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(Some(event));
            }
            let count = self.streams.len();
            for _ in 0..count {
                let index = self.next_stream;
                self.next_stream = if index + 1 == count { 0 } else { index + 1 };
                // the first event goes straight to the caller; only what else the same
                // poll brings waits in the queue
                let mut first = None;
                let mut queue = std::mem::take(&mut self.queue);
                let mut undecodable = 0;
                self.poll_stream(index, 64, &mut |event| match owned(event) {
                    Some(e) if first.is_none() => first = Some(e),
                    Some(e) => queue.push_back(e),
                    None => undecodable += 1,
                })?;
                self.queue = queue;
                self.undecodable += undecodable;
                if first.is_some() {
                    return Ok(first);
                }
            }
            idle = idle.wrapping_add(1);
            let spinning = self.wait == WaitStrategy::BusySpin;
            if !spinning || idle.is_multiple_of(64) {
                let now = Instant::now();
                let deadline = *deadline.get_or_insert(now + timeout);
                if now >= deadline {
                    return Ok(None);
                }
                self.wait(deadline - now);
            } else {
                self.wait(timeout);
            }
        }
    }

    /// Waits — as the wait strategy says, at most `timeout` — for something new in the
    /// streams (for loops around [`Self::poll`] / [`Self::poll_views`]; [`Self::next`]
    /// waits by itself). May return early.
    pub fn wait(&mut self, timeout: Duration) {
        let wait = match self.wait {
            WaitStrategy::Park { timeout: park } => WaitStrategy::Park {
                timeout: park.min(timeout),
            },
            other => other,
        };
        // the busiest stream with a writer parks on its commit futex; with several, the
        // park is short enough to keep all of them in view
        let busiest = self
            .streams
            .iter_mut()
            .filter(|s| !s.writer_gone)
            .max_by_key(|s| s.reader.position());
        match (busiest, wait) {
            (Some(stream), _) => {
                if stream.reader.wait(wait).is_err() {
                    std::thread::sleep(Duration::from_micros(200).min(timeout));
                }
            }
            // no writer to wake a parked reader (a closed ring does not park): sleep
            // instead of spinning until a new writer starts
            (None, WaitStrategy::Park { timeout }) => std::thread::sleep(timeout),
            (None, other) => {
                if let Some(stream) = self.streams.first_mut() {
                    let _ = stream.reader.wait(other);
                }
            }
        }
    }

    /// Where every stream's writer is now; [`Self::reached`] says when reading has got
    /// there (a tool's "print what is there, then exit").
    pub fn mark(&self) -> Mark {
        Mark(self.streams.iter().map(|s| s.reader.tail().0).collect())
    }

    /// True when every stream has been read up to `mark` (or to the end of a ring that
    /// was replaced since).
    pub fn reached(&self, mark: &Mark) -> bool {
        self.streams
            .iter()
            .zip(&mark.0)
            .all(|(s, &end)| s.reader.position() >= end || s.reader.caught_up())
    }

    fn poll_stream(
        &mut self,
        index: usize,
        max_records: usize,
        on_event: &mut dyn FnMut(ViewEvent<'_>),
    ) -> Result<usize, SubscribeError> {
        let mut delivered = 0;
        let Self {
            streams,
            symbols,
            kinds,
            instruments,
            undecodable,
            ..
        } = self;
        let state = &mut streams[index];
        let name = state.name;
        let mut lost_now = 0;
        let polled = state.reader.poll(max_records, |event| match event {
            ReadEvent::Record(r) => {
                let opened = RecordView::open(r.kind, r.body, |record| {
                    if let RecordView::Instrument(d) = &record {
                        instruments.insert((index, d.get_instrument_id()), intern(d.symbol()?));
                    }
                    if !kinds.contains(record.kind()) {
                        return Ok(());
                    }
                    let instrument_id = record.instrument_id();
                    let symbol = instruments.get(&(index, instrument_id)).copied();
                    if let Some(wanted) = symbols.as_ref() {
                        let feed_wide =
                            matches!(record, RecordView::Status(_)) && instrument_id == 0;
                        let matches = symbol
                            .is_some_and(|s| wanted.iter().any(|w| w.eq_ignore_ascii_case(s)));
                        if !feed_wide && !matches {
                            return Ok(());
                        }
                    }
                    delivered += 1;
                    on_event(ViewEvent::Record {
                        stream: name,
                        seq: r.seq,
                        record,
                        symbol,
                    });
                    Ok::<(), RecordError>(())
                });
                // a record of an mdi kind that does not decode: counted and skipped
                if !matches!(opened, Ok(None | Some(Ok(())))) {
                    *undecodable += 1;
                }
            }
            ReadEvent::Lost { from_seq, to_seq } => {
                lost_now += to_seq - from_seq;
                let lost = Event::Lost {
                    stream: name,
                    from_seq,
                    to_seq,
                    count: to_seq - from_seq,
                };
                delivered += 1;
                on_event(ViewEvent::Notice(lost));
            }
            ReadEvent::EpochStarted {
                epoch,
                previous_epoch,
                writer_pid,
                ..
            } => {
                if previous_epoch != 0 {
                    let restarted = Event::Restarted {
                        stream: name,
                        epoch,
                        previous_epoch,
                        writer_pid,
                    };
                    delivered += 1;
                    on_event(ViewEvent::Notice(restarted));
                }
            }
        });
        let polled = polled.map_err(|e| SubscribeError::Corrupt {
            stream: name.to_string(),
            detail: format!("{e:?}"),
        })?;
        state.lost += lost_now;
        if let Some(registration) = &state.registration {
            registration.publish(
                state.reader.position(),
                state.reader.next_seq().unwrap_or(0),
                state.lost,
                wall_clock_ns(),
            );
        }
        // the clock is read every 256 idle polls only: a spinning reader's loop stays short
        if polled == 0 {
            state.idle_polls = state.idle_polls.wrapping_add(1);
        }
        let due = polled == 0
            && state.idle_polls % 256 == 1
            && state.reader.caught_up()
            && state
                .status_checked
                .is_none_or(|at| at.elapsed() >= STATUS_EVERY);
        if due {
            state.status_checked = Some(Instant::now());
            match state.reader.writer_status(0).state {
                WriterState::Alive => state.writer_gone = false,
                gone @ (WriterState::Closed | WriterState::Dead) if !state.writer_gone => {
                    state.writer_gone = true;
                    delivered += 1;
                    on_event(ViewEvent::Notice(Event::WriterGone {
                        stream: name,
                        state: gone,
                    }));
                }
                WriterState::Superseded => {
                    let reader = RingReader::open(&self.shm, state.name, StartAt::Earliest)
                        .map_err(|source| SubscribeError::Open {
                            stream: state.name.to_string(),
                            source,
                        })?;
                    state.reader = reader;
                    state.writer_gone = false;
                    self.instruments.retain(|(stream, _), _| *stream != index);
                    delivered += 1;
                    on_event(ViewEvent::Notice(Event::Replaced { stream: state.name }));
                }
                _ => {}
            }
        }
        Ok(delivered)
    }
}
