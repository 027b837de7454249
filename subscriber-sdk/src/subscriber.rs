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

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mdi_protocol::decimal::Decimal;
use mdi_protocol::records::{
    BookUpdate, FeedStatus, InstrumentDefinition, Kline, Quote, RecordError, RecordKind, Trade,
    decode,
};
use mdi_protocol::ring::{
    ReadEvent, ReaderOpenError, RegisterError, Registration, RingReader, ShmDir, StartAt,
    WaitStrategy, WriterState,
};

fn wall_clock_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

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

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A trade.
    Trade(Trade),
    /// Best bid and offer.
    Quote(Quote),
    /// Book levels (deltas or a snapshot).
    Book(BookUpdate),
    /// A K-line.
    Kline(Kline),
    /// Feed health.
    Status(FeedStatus),
    /// An instrument definition.
    Instrument(InstrumentDefinition),
}

impl Record {
    fn kind(&self) -> Kinds {
        match self {
            Self::Trade(_) => Kinds::TRADE,
            Self::Quote(_) => Kinds::QUOTE,
            Self::Book(_) => Kinds::BOOK,
            Self::Kline(_) => Kinds::KLINE,
            Self::Status(_) => Kinds::STATUS,
            Self::Instrument(_) => Kinds::INSTRUMENT,
        }
    }

    /// The instrument the record is about (0: the whole feed).
    pub fn instrument_id(&self) -> u32 {
        match self {
            Self::Trade(r) => r.instrument_id,
            Self::Quote(r) => r.instrument_id,
            Self::Book(r) => r.instrument_id,
            Self::Kline(r) => r.instrument_id,
            Self::Status(r) => r.instrument_id,
            Self::Instrument(r) => r.instrument_id,
        }
    }

    fn decode(kind: RecordKind, body: &[u8]) -> Option<Result<Self, RecordError>> {
        Some(match kind {
            RecordKind::TRADE => decode(body).map(Self::Trade),
            RecordKind::QUOTE => decode(body).map(Self::Quote),
            RecordKind::BOOK_UPDATE => decode(body).map(Self::Book),
            RecordKind::KLINE => decode(body).map(Self::Kline),
            RecordKind::FEED_STATUS => decode(body).map(Self::Status),
            RecordKind::INSTRUMENT_DEFINITION => decode(body).map(Self::Instrument),
            _ => return None,
        })
    }
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

/// Which record kinds a subscriber delivers (a bit set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    /// Trades.
    pub const TRADE: Self = Self(1);
    /// Quotes.
    pub const QUOTE: Self = Self(2);
    /// Book updates.
    pub const BOOK: Self = Self(4);
    /// K-lines.
    pub const KLINE: Self = Self(8);
    /// Feed status.
    pub const STATUS: Self = Self(16);
    /// Instrument definitions.
    pub const INSTRUMENT: Self = Self(32);
    /// Every market-data kind (not instrument definitions, which are used to resolve
    /// symbols either way).
    pub const MARKET_DATA: Self = Self(31);
    /// Everything.
    pub const ALL: Self = Self(63);

    /// Both sets.
    #[must_use]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// True if `other` is in the set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// What a subscriber delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A record, with the symbol its instrument id stands for (`None` if the stream has
    /// not shown the instrument's definition).
    Record {
        /// The stream.
        stream: String,
        /// Its sequence number in the stream.
        seq: u64,
        /// The record.
        record: Record,
        /// The instrument's symbol.
        symbol: Option<String>,
    },
    /// Records `from_seq..to_seq` of `stream` will never be delivered (the writer lapped
    /// this reader, or a replica could not repair a gap): exactly `count` records.
    Lost {
        /// The stream.
        stream: String,
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
        stream: String,
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
        stream: String,
        /// Closed or dead.
        state: WriterState,
    },
    /// The ring file was replaced by a new ring of the same name; reading continues in
    /// the new one from its start.
    Replaced {
        /// The stream.
        stream: String,
    },
}

/// Builds a [`Subscriber`].
#[derive(Debug, Clone)]
pub struct SubscriberBuilder {
    shm_dir: Option<PathBuf>,
    streams: Vec<String>,
    start: StartAt,
    symbols: Option<Vec<String>>,
    kinds: Kinds,
    wait: WaitStrategy,
    register: Option<String>,
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

    /// Only these symbols (case-insensitive), resolved through the streams' instrument
    /// definitions.
    #[must_use]
    pub fn symbols<S: Into<String>>(mut self, symbols: impl IntoIterator<Item = S>) -> Self {
        self.symbols = Some(symbols.into_iter().map(Into::into).collect());
        self
    }

    /// Only these record kinds (default: [`Kinds::MARKET_DATA`]).
    #[must_use]
    pub fn kinds(mut self, kinds: Kinds) -> Self {
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

    /// Opens every stream.
    pub fn open(self) -> Result<Subscriber, SubscribeError> {
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
                    name,
                    reader,
                    writer_gone: false,
                    registration,
                    lost: 0,
                })
            })
            .collect::<Result<Vec<_>, SubscribeError>>()?;
        // A subscriber that starts later than the earliest record still resolves the
        // symbols of what it reads: the definitions already in the ring are read first.
        let mut instruments = HashMap::new();
        for (index, state) in streams.iter().enumerate() {
            let first_delivered = match self.start {
                StartAt::Earliest => continue,
                StartAt::Sequence(seq) => seq,
                StartAt::Latest => state.reader.next_seq().unwrap_or(0),
            };
            prime_instruments(&shm, index, &state.name, first_delivered, &mut instruments);
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
        })
    }
}

/// Reads the instrument definitions retained in `stream`'s ring before sequence
/// `first_delivered` (bounded by the ring's size: one pass at memory speed).
fn prime_instruments(
    shm: &ShmDir,
    index: usize,
    stream: &str,
    first_delivered: u64,
    instruments: &mut HashMap<(usize, u32), String>,
) {
    let Ok(mut scan) = RingReader::open(shm, stream, StartAt::Earliest) else {
        return;
    };
    while scan.next_seq().is_some_and(|next| next < first_delivered) {
        let polled = scan.poll(4096, |event| {
            if let ReadEvent::Record(r) = event
                && r.seq < first_delivered
                && r.kind == RecordKind::INSTRUMENT_DEFINITION
                && let Ok(d) = decode::<InstrumentDefinition>(r.body)
            {
                instruments.insert((index, d.instrument_id), d.symbol);
            }
        });
        if !matches!(polled, Ok(n) if n > 0) {
            break;
        }
    }
}

struct StreamState {
    name: String,
    reader: RingReader,
    writer_gone: bool,
    registration: Option<Registration>,
    /// Records lost so far (published with the registration).
    lost: u64,
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
    kinds: Kinds,
    wait: WaitStrategy,
    /// (stream, instrument id) → symbol. Ids are per publisher, so per stream here.
    instruments: HashMap<(usize, u32), String>,
    queue: VecDeque<Event>,
    next_stream: usize,
    undecodable: u64,
}

impl Subscriber {
    /// A builder (reads `$MDI_SHM_DIR` or `/dev/shm/mdi` unless told otherwise).
    pub fn builder() -> SubscriberBuilder {
        SubscriberBuilder {
            shm_dir: None,
            streams: Vec::new(),
            start: StartAt::Latest,
            symbols: None,
            kinds: Kinds::MARKET_DATA,
            wait: WaitStrategy::Park {
                timeout: Duration::from_millis(1),
            },
            register: None,
        }
    }

    /// The streams read, in order.
    pub fn streams(&self) -> impl Iterator<Item = &str> {
        self.streams.iter().map(|s| s.name.as_str())
    }

    /// Records of mdi kinds that did not decode (counted and skipped).
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Delivers what is there now — at most `max_records` records per stream, plus any
    /// events — to `on_event`, without blocking; returns the number of events delivered.
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
        for index in 0..self.streams.len() {
            delivered += self.poll_stream(index, max_records, &mut on_event)?;
        }
        Ok(delivered)
    }

    /// The next event, waiting up to `timeout` (as the wait strategy says); `None` when
    /// nothing came.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Event>, SubscribeError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(Some(event));
            }
            let count = self.streams.len();
            for _ in 0..count {
                let index = self.next_stream;
                self.next_stream = (self.next_stream + 1) % count;
                let mut queue = std::mem::take(&mut self.queue);
                self.poll_stream(index, 64, &mut |e| queue.push_back(e))?;
                self.queue = queue;
                if let Some(event) = self.queue.pop_front() {
                    return Ok(Some(event));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            let wait = match self.wait {
                WaitStrategy::Park { timeout } => WaitStrategy::Park {
                    timeout: timeout.min(deadline.saturating_duration_since(Instant::now())),
                },
                other => other,
            };
            // one stream parks; with several, a short park keeps all of them in view
            if let Some(first) = self.streams.first_mut()
                && first.reader.wait(wait).is_err()
            {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    fn poll_stream(
        &mut self,
        index: usize,
        max_records: usize,
        on_event: &mut dyn FnMut(Event),
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
        let name = state.name.as_str();
        let mut lost_now = 0;
        let polled = state.reader.poll(max_records, |event| match event {
            ReadEvent::Record(r) => {
                let Some(decoded) = Record::decode(r.kind, r.body) else {
                    return;
                };
                let record = match decoded {
                    Ok(record) => record,
                    Err(_) => {
                        *undecodable += 1;
                        return;
                    }
                };
                if let Record::Instrument(d) = &record {
                    instruments.insert((index, d.instrument_id), d.symbol.clone());
                }
                if !kinds.contains(record.kind()) {
                    return;
                }
                let symbol = instruments.get(&(index, record.instrument_id())).cloned();
                if let Some(wanted) = symbols.as_ref() {
                    let feed_wide = matches!(&record, Record::Status(s) if s.instrument_id == 0);
                    let matches = symbol
                        .as_ref()
                        .is_some_and(|s| wanted.iter().any(|w| w.eq_ignore_ascii_case(s)));
                    if !feed_wide && !matches {
                        return;
                    }
                }
                delivered += 1;
                on_event(Event::Record {
                    stream: name.to_owned(),
                    seq: r.seq,
                    record,
                    symbol,
                });
            }
            ReadEvent::Lost { from_seq, to_seq } => {
                delivered += 1;
                lost_now += to_seq - from_seq;
                on_event(Event::Lost {
                    stream: name.to_owned(),
                    from_seq,
                    to_seq,
                    count: to_seq - from_seq,
                });
            }
            ReadEvent::EpochStarted {
                epoch,
                previous_epoch,
                writer_pid,
                ..
            } => {
                if previous_epoch != 0 {
                    delivered += 1;
                    on_event(Event::Restarted {
                        stream: name.to_owned(),
                        epoch,
                        previous_epoch,
                        writer_pid,
                    });
                }
            }
        });
        let polled = polled.map_err(|e| SubscribeError::Corrupt {
            stream: name.to_owned(),
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
        if polled == 0 && state.reader.caught_up() {
            match state.reader.writer_status(0).state {
                WriterState::Alive => state.writer_gone = false,
                gone @ (WriterState::Closed | WriterState::Dead) if !state.writer_gone => {
                    state.writer_gone = true;
                    delivered += 1;
                    on_event(Event::WriterGone {
                        stream: name.to_owned(),
                        state: gone,
                    });
                }
                WriterState::Superseded => {
                    let reader = RingReader::open(&self.shm, &state.name, StartAt::Earliest)
                        .map_err(|source| SubscribeError::Open {
                            stream: state.name.clone(),
                            source,
                        })?;
                    state.reader = reader;
                    state.writer_gone = false;
                    self.instruments.retain(|(stream, _), _| *stream != index);
                    delivered += 1;
                    on_event(Event::Replaced {
                        stream: state.name.clone(),
                    });
                }
                _ => {}
            }
        }
        Ok(delivered)
    }
}
