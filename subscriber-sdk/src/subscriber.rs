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

mod builder;
mod error;
mod event;
mod symbols;

pub use builder::SubscriberBuilder;
pub use error::SubscribeError;
use event::*;
pub use event::{Event, Mark, TradeExt, ViewEvent};
pub use symbols::intern;
use symbols::*;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use mdi_protocol::records::{RecordError, RecordKind, RecordKinds};
use mdi_protocol::ring::{
    ReadEvent, ReaderOpenError, Registration, RingReader, Seq, ShmDir, StartAt, WaitStrategy,
    WriterState,
};
use mdi_protocol::time::WallNs;
use mdi_protocol::view::RecordView;

#[cfg(feature = "udp")]
use mdi_transport::receiver::BackgroundReceiver;

use mdi_transport::clock::wall_now;

/// How often an idle stream's writer is looked at.
const STATUS_EVERY: Duration = Duration::from_millis(20);

struct StreamState {
    name: &'static str,
    /// The live ring (while `archive` is read: a reader at its end, replaced at the
    /// handover).
    reader: RingReader,
    /// Reading history from the archive until it reaches what the ring holds.
    archive: Option<FromArchive>,
    /// The stream has an archive to go back to when the ring laps this reader.
    archived: bool,
    writer_gone: bool,
    registration: Option<Registration>,
    /// Records lost so far (published with the registration).
    lost: u64,
    /// When the writer's state was last looked at (a system call: not on every idle
    /// poll of a busy-spinning reader).
    status_checked: Option<Instant>,
    /// Polls that found nothing (paces the writer-state checks).
    idle_polls: u32,
    /// Definitions looked for ahead of this reader.
    lookahead: Lookahead,
}

impl std::fmt::Debug for StreamState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamState")
            .field("name", &self.name)
            .field("position", &self.reader.position())
            .finish_non_exhaustive()
    }
}

/// A stream read from its archive first ([`SubscriberBuilder::archive`]).
#[derive(Debug)]
struct FromArchive {
    reader: mdi_archive::ArchiveReader,
    /// Where the subscriber started (the ring's start if the archive had nothing).
    start: StartAt,
    /// Since when the ring has no longer held where the archive ends (the recorder
    /// lags, or stopped).
    overwritten_since: Option<Instant>,
}

/// How long the subscriber waits for a recorder to archive what the ring no longer
/// holds before it says those records are lost and reads on from the ring's earliest.
pub const ARCHIVE_GRACE: Duration = Duration::from_secs(2);

/// Reads one or more streams. See the module docs.
#[derive(Debug)]
pub struct Subscriber {
    shm: ShmDir,
    streams: Vec<StreamState>,
    symbols: Option<Vec<String>>,
    kinds: RecordKinds,
    wait: WaitStrategy,
    /// Map ring pages at open ([`SubscriberBuilder::prefault`]).
    prefault: bool,
    /// The archive a lapped reader goes back to ([`SubscriberBuilder::archive`]).
    archive: Option<std::path::PathBuf>,
    /// (stream, instrument id) → symbol. Ids are per publisher, so per stream here.
    instruments: HashMap<(usize, u32), &'static str, IdHash>,
    /// Streams whose definitions before the first record delivered are still to be read
    /// (at the first poll).
    unprimed: Vec<(usize, Seq)>,
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
            prefault: true,
            archive: None,
            #[cfg(feature = "udp")]
            udp: Vec::new(),
            prime_at_first_poll: false,
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

    /// True when every stream has been read up to where its writer is now (nothing from
    /// an archive left to read, no event waiting).
    pub fn caught_up(&self) -> bool {
        self.queue.is_empty()
            && self
                .streams
                .iter()
                .all(|s| s.archive.is_none() && s.reader.caught_up())
    }

    /// True when every stream has been read up to `mark` (or to the end of a ring that
    /// was replaced since).
    pub fn reached(&self, mark: &Mark) -> bool {
        self.streams.iter().zip(&mark.0).all(|(s, &end)| {
            s.archive.is_none() && (s.reader.position() >= end || s.reader.caught_up())
        })
    }

    /// For reading one stream's ring up to `mark` in two threads: the sequence in the
    /// middle of what this subscriber has left to read, and a second subscriber (the same
    /// kinds and symbols) that reads from there; this one's reading is to stop before
    /// it. The second one reads the definitions before its start at its first poll, in
    /// the thread that polls it. `None` with fewer than `min_records` left, several
    /// streams, an archive or a UDP channel, or when the middle could not be opened.
    pub fn split_half(&self, mark: &Mark, min_records: u64) -> Option<(Seq, Subscriber)> {
        #[cfg(feature = "udp")]
        if self._udp.is_some() {
            return None;
        }
        let [state] = &self.streams[..] else {
            return None;
        };
        if self.archive.is_some() || state.archive.is_some() || !self.queue.is_empty() {
            return None;
        }
        let start = state.reader.next_seq()?;
        let end = state.reader.tail().1;
        if end.0.saturating_sub(start.0) < min_records
            || mark
                .0
                .first()
                .is_none_or(|&end| state.reader.position() >= end)
        {
            return None;
        }
        let middle = Seq(start.0 + (end.0 - start.0) / 2);
        let mut builder = Subscriber::builder()
            .shm_dir(self.shm.path())
            .stream(state.name)
            .kinds(self.kinds)
            .wait(self.wait)
            .prefault(self.prefault)
            .from_sequence(middle);
        if let Some(symbols) = &self.symbols {
            builder = builder.symbols(symbols.iter().cloned());
        }
        builder.prime_at_first_poll = true;
        Some((middle, builder.open().ok()?))
    }

    /// Reads the definitions of the streams opened to be primed at the first poll.
    fn prime(&mut self) {
        for (index, first) in std::mem::take(&mut self.unprimed) {
            let name = self.streams[index].name;
            builder::prime_instruments(&self.shm, index, name, first, &mut self.instruments);
        }
    }

    fn poll_stream(
        &mut self,
        index: usize,
        max_records: usize,
        on_event: &mut dyn FnMut(ViewEvent<'_>),
    ) -> Result<usize, SubscribeError> {
        if !self.unprimed.is_empty() {
            self.prime();
        }
        if self.streams[index].archive.is_some() {
            return self.poll_archive(index, max_records, on_event);
        }
        let mut delivered = 0;
        let Self {
            shm,
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
        // lapped with an archive to go back to: read on from there, not a loss
        let mut fell_behind: Option<Seq> = None;
        let archived = state.archived;
        let mut filter = Filter {
            index,
            name,
            symbols: symbols.as_deref(),
            kinds: *kinds,
            instruments,
            undecodable,
            last: None,
            lookahead: (shm, &mut state.lookahead),
        };
        let polled = state.reader.poll(max_records, |event| match event {
            _ if fell_behind.is_some() => {}
            ReadEvent::Record(r) => {
                delivered += filter.deliver(r.seq, r.kind, r.body, on_event);
            }
            ReadEvent::Lost { from_seq, .. } if archived => fell_behind = Some(from_seq),
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
        if let (Some(from), Some(dir)) = (fell_behind, &self.archive) {
            match mdi_archive::ArchiveReader::open(
                dir,
                name,
                mdi_archive::ArchiveStart::Sequence(from.0),
            ) {
                Ok(reader) => {
                    state.archive = Some(FromArchive {
                        reader,
                        start: StartAt::Sequence(from),
                        overwritten_since: None,
                    });
                }
                Err(source) => {
                    return Err(SubscribeError::Archive {
                        stream: name.to_string(),
                        source,
                    });
                }
            }
            return Ok(delivered);
        }
        if let Some(registration) = &state.registration {
            registration.publish(
                state.reader.position(),
                state.reader.next_seq().unwrap_or_default(),
                state.lost,
                wall_now(),
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
            match state.reader.writer_status(WallNs(0)).state {
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
                    let reader = RingReader::open_with(
                        &self.shm,
                        state.name,
                        StartAt::Earliest,
                        self.prefault,
                    )
                    .map_err(|source| SubscribeError::Open {
                        stream: state.name.to_string(),
                        source,
                    })?;
                    state.reader = reader;
                    state.archive = None;
                    state.writer_gone = false;
                    self.instruments.retain(|(stream, _), _| *stream != index);
                    state.lookahead.reset();
                    delivered += 1;
                    on_event(ViewEvent::Notice(Event::Replaced { stream: state.name }));
                }
                _ => {}
            }
        }
        Ok(delivered)
    }

    /// Reads the archive of stream `index` (a chunk at a time: up to about `max_records`
    /// records); at its end, moves onto the ring where the archive stops — by sequence,
    /// nothing missed, nothing twice — or, when the ring no longer holds that and the
    /// recorder has not archived it within [`ARCHIVE_GRACE`], says exactly what is lost.
    fn poll_archive(
        &mut self,
        index: usize,
        max_records: usize,
        on_event: &mut dyn FnMut(ViewEvent<'_>),
    ) -> Result<usize, SubscribeError> {
        let Self {
            shm,
            streams,
            symbols,
            kinds,
            instruments,
            undecodable,
            prefault,
            ..
        } = self;
        let state = &mut streams[index];
        let name = state.name;
        let phase = state.archive.as_mut().expect("reading the archive");
        let mut filter = Filter {
            index,
            name,
            symbols: symbols.as_deref(),
            kinds: *kinds,
            instruments,
            undecodable,
            last: None,
            lookahead: (shm, &mut state.lookahead),
        };
        let mut delivered = 0;
        let mut read = 0;
        while read < max_records.max(1) {
            let n = phase
                .reader
                .poll(|r| {
                    match r.gap_end() {
                        Some(end) => {
                            delivered += 1;
                            on_event(ViewEvent::Notice(Event::Lost {
                                stream: name,
                                from_seq: Seq(r.seq),
                                to_seq: Seq(end),
                                count: end - r.seq,
                            }));
                        }
                        None => {
                            delivered +=
                                filter.deliver(Seq(r.seq), RecordKind(r.kind), r.body, on_event);
                        }
                    }
                    true
                })
                .map_err(|source| SubscribeError::Archive {
                    stream: name.to_string(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            read += n;
        }
        if read > 0 {
            phase.overwritten_since = None;
            return Ok(delivered);
        }
        let at = phase
            .reader
            .next_seq()
            .map_or(phase.start, |seq| StartAt::Sequence(Seq(seq)));
        let open_error = |source| SubscribeError::Open {
            stream: name.to_string(),
            source,
        };
        match RingReader::open_with(shm, name, at, *prefault) {
            Ok(reader) => {
                state.reader = reader;
                state.archive = None;
            }
            Err(ReaderOpenError::SequenceOverwritten { requested, .. }) => {
                let since = *phase.overwritten_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= ARCHIVE_GRACE {
                    let reader = RingReader::open_with(shm, name, StartAt::Earliest, *prefault)
                        .map_err(open_error)?;
                    if let Some(next) = reader.next_seq()
                        && next.0 > requested
                    {
                        delivered += 1;
                        on_event(ViewEvent::Notice(Event::Lost {
                            stream: name,
                            from_seq: Seq(requested),
                            to_seq: next,
                            count: next.0 - requested,
                        }));
                    }
                    state.reader = reader;
                    state.archive = None;
                }
            }
            Err(source) => return Err(open_error(source)),
        }
        Ok(delivered)
    }
}

/// Decodes a record and delivers it if the subscriber's kinds and symbols take it
/// (definitions are learnt on the way); the same for ring and archive records.
struct Filter<'a> {
    index: usize,
    name: &'static str,
    symbols: Option<&'a [String]>,
    kinds: RecordKinds,
    instruments: &'a mut HashMap<(usize, u32), &'static str, IdHash>,
    undecodable: &'a mut u64,
    /// The last instrument met, its symbol and whether it is wanted (most records are
    /// of the instrument before them); a definition clears it.
    last: Option<(u32, Option<&'static str>, bool)>,
    /// Where an instrument met before its definition is looked for.
    lookahead: (&'a ShmDir, &'a mut Lookahead),
}

impl Filter<'_> {
    /// 1 if delivered, else 0.
    fn deliver(
        &mut self,
        seq: Seq,
        kind: RecordKind,
        body: &[u8],
        on_event: &mut dyn FnMut(ViewEvent<'_>),
    ) -> usize {
        let mut delivered = 0;
        let Self {
            index,
            name,
            symbols,
            kinds,
            instruments,
            undecodable,
            last,
            lookahead: (shm, lookahead),
        } = self;
        let opened = RecordView::open(kind, body, |record| {
            if let RecordView::Instrument(d) = &record {
                instruments.insert((*index, d.get_instrument_id()), intern(d.symbol()?));
                *last = None;
            }
            if !kinds.contains(record.kind()) {
                return Ok(());
            }
            let instrument_id = record.instrument_id();
            let (symbol, wanted) = match *last {
                Some((id, symbol, wanted)) if id == instrument_id => (symbol, wanted),
                _ => {
                    let symbol = match instruments.get(&(*index, instrument_id)) {
                        Some(&symbol) => Some(symbol),
                        None => {
                            lookahead.find(shm, (*index, name), instrument_id, seq, instruments)
                        }
                    };
                    let wanted = symbols.is_none_or(|wanted| {
                        symbol.is_some_and(|s| wanted.iter().any(|w| w.eq_ignore_ascii_case(s)))
                    });
                    *last = Some((instrument_id, symbol, wanted));
                    (symbol, wanted)
                }
            };
            // the whole feed's status (instrument 0) goes to every symbol's reader
            let feed_wide = matches!(record, RecordView::Status(_)) && instrument_id == 0;
            if !wanted && !feed_wide {
                return Ok(());
            }
            delivered = 1;
            on_event(ViewEvent::Record {
                stream: name,
                seq,
                record,
                symbol,
            });
            Ok::<(), RecordError>(())
        });
        // a record of an mdi kind that does not decode: counted and skipped
        if !matches!(opened, Ok(None | Some(Ok(())))) {
            **undecodable += 1;
        }
        delivered
    }
}
