//! Building a [`Subscriber`]: streams, start, filters, wait, registration, UDP.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use mdi_protocol::records::{RecordKind, RecordKinds};
use mdi_protocol::ring::{ReadEvent, Registration, RingReader, Seq, ShmDir, StartAt, WaitStrategy};
use mdi_protocol::view::RecordView;

#[cfg(feature = "udp")]
use mdi_transport::receiver::BackgroundReceiver;

use super::*;
use mdi_protocol::time::WallNs;
use mdi_transport::clock::wall_now;

/// How long opening a subscriber over UDP waits for its streams to arrive.
#[cfg(feature = "udp")]
pub(super) const UDP_JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a [`Subscriber`].
#[derive(Debug, Clone)]
pub struct SubscriberBuilder {
    pub(super) shm_dir: Option<PathBuf>,
    pub(super) streams: Vec<String>,
    pub(super) start: StartAt,
    pub(super) symbols: Option<Vec<String>>,
    pub(super) kinds: RecordKinds,
    pub(super) wait: WaitStrategy,
    pub(super) register: Option<String>,
    pub(super) prefault: bool,
    pub(super) archive: Option<PathBuf>,
    #[cfg(feature = "udp")]
    pub(super) udp: Vec<mdi_protocol::udp::Channel>,
    /// The definitions before the start are read at the first poll, not at opening
    /// ([`Subscriber::split_half`]: in the thread that reads).
    pub(super) prime_at_first_poll: bool,
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
    pub fn from_sequence(mut self, seq: impl Into<Seq>) -> Self {
        self.start = StartAt::Sequence(seq.into());
        self
    }

    /// Start at the first record published at or after this time (ns since the Unix
    /// epoch; [`StartAt::Time`]: found by binary search of the ring's index, the few
    /// records before it in their index stride read past, not delivered). The last of
    /// `from_*` called decides the start.
    #[must_use]
    pub fn from_time(mut self, time: impl Into<WallNs>) -> Self {
        self.start = StartAt::Time(time.into());
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

    /// Map each ring's pages in when it is opened (the default: no page fault while
    /// reading), or, with `false`, as they are read — for a one-pass read of history in
    /// a large ring, where mapping it all would cost more than the read.
    #[must_use]
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
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
    /// Reads history from the tick archive in `dir` (`mdarchive record --archive DIR`):
    /// a start the ring no longer holds — the earliest, a sequence or a time — is read
    /// from the archive, and the subscriber moves onto the live ring (or UDP replica)
    /// where the archive ends, by sequence: no gap, no duplicate. What neither holds is
    /// an [`Event::Lost`] with the exact range (gap markers the recorder wrote, or
    /// records the ring overwrote that no recorder archived within
    /// [`super::ARCHIVE_GRACE`]). A stream without an archive is read from its ring.
    #[must_use]
    pub fn archive(mut self, dir: impl Into<PathBuf>) -> Self {
        self.archive = Some(dir.into());
        self
    }

    #[cfg(feature = "udp")]
    #[must_use]
    pub fn udp(mut self, channel: mdi_protocol::udp::Channel) -> Self {
        self.udp.push(channel);
        self
    }

    /// The archive reader stream `name` starts with, if it starts in history.
    fn history(&self, shm: &ShmDir, name: &str) -> Result<Option<FromArchive>, SubscribeError> {
        let Some(dir) = &self.archive else {
            return Ok(None);
        };
        let start = match self.start {
            StartAt::Latest => return Ok(None),
            StartAt::Earliest => mdi_archive::ArchiveStart::Earliest,
            StartAt::Sequence(seq) => {
                // the ring still holds it: no history needed
                if RingReader::open_with(shm, name, self.start, false).is_ok() {
                    return Ok(None);
                }
                mdi_archive::ArchiveStart::Sequence(seq.0)
            }
            StartAt::Time(WallNs(ns)) => mdi_archive::ArchiveStart::Time(ns),
        };
        match mdi_archive::ArchiveReader::open(dir, name, start) {
            Ok(reader) => Ok(Some(FromArchive {
                reader,
                start: self.start,
                overwritten_since: None,
            })),
            Err(mdi_archive::ArchiveReadError::NoArchive { .. }) => Ok(None),
            Err(source) => Err(SubscribeError::Archive {
                stream: name.to_owned(),
                source,
            }),
        }
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
                let archive = self.history(&shm, &name)?;
                let reader = RingReader::open_with(
                    &shm,
                    &name,
                    if archive.is_some() {
                        StartAt::Latest
                    } else {
                        self.start
                    },
                    self.prefault,
                )
                .map_err(|source| SubscribeError::Open {
                    stream: name.clone(),
                    source,
                })?;
                let registration = match &self.register {
                    Some(who) => Some(Registration::claim(&shm, &name, who, wall_now()).map_err(
                        |source| SubscribeError::Register {
                            stream: name.clone(),
                            source,
                        },
                    )?),
                    None => None,
                };
                Ok(StreamState {
                    name: intern(&name),
                    reader,
                    archived: archive.is_some()
                        || self
                            .archive
                            .as_ref()
                            .is_some_and(|dir| dir.join(&name).is_dir()),
                    archive,
                    writer_gone: false,
                    registration,
                    lost: 0,
                    status_checked: None,
                    idle_polls: 0,
                    lookahead: Lookahead::default(),
                })
            })
            .collect::<Result<Vec<_>, SubscribeError>>()?;
        // Symbols are resolved from the first record delivered: the definitions already in
        // the ring before the start are read first. Those after it (the publisher writes
        // them again at each state refresh, so a ring that wrapped still holds them, maybe
        // after the first records; ADR 0016) are looked ahead for when a record's
        // instrument is not known yet ([`Lookahead`]).
        let mut instruments = HashMap::default();
        let mut unprimed = Vec::new();
        for (index, state) in streams.iter().enumerate() {
            let first_delivered = match self.start {
                // read from the archive: the definitions the ring holds now (ids are
                // the publisher's, stable while it runs)
                _ if state.archive.is_some() => Some(state.reader.tail().1),
                // nothing comes before
                StartAt::Earliest => None,
                StartAt::Sequence(seq) => Some(seq),
                StartAt::Latest => state.reader.next_seq(),
                // the records read past before the time may define instruments too
                StartAt::Time(_) => Some(state.reader.tail().1),
            };
            match first_delivered {
                Some(first) if self.prime_at_first_poll => unprimed.push((index, first)),
                Some(first) => prime_instruments(&shm, index, state.name, first, &mut instruments),
                None => {}
            }
            if let (Some(dir), Some(_)) = (&self.archive, &state.archive) {
                prime_from_archive(dir, index, state.name, self.start, &mut instruments).map_err(
                    |source| SubscribeError::Archive {
                        stream: state.name.to_owned(),
                        source,
                    },
                )?;
            }
        }
        Ok(Subscriber {
            shm,
            streams,
            symbols: self
                .symbols
                .map(|s| s.into_iter().map(|s| s.to_ascii_uppercase()).collect()),
            kinds: self.kinds,
            wait: self.wait,
            prefault: self.prefault,
            archive: self.archive,
            instruments,
            unprimed,
            queue: VecDeque::new(),
            next_stream: 0,
            undecodable: 0,
            #[cfg(feature = "udp")]
            _udp: udp,
        })
    }
}

/// Reads the instrument definitions retained in `stream`'s ring before sequence
/// `first_delivered` (bounded by the ring's size: one pass at memory speed).
pub(super) fn prime_instruments(
    shm: &ShmDir,
    index: usize,
    stream: &str,
    first_delivered: Seq,
    instruments: &mut HashMap<(usize, u32), &'static str, IdHash>,
) {
    // one pass over part of the ring: its pages mapped as read
    if let Ok(mut scan) = RingReader::open_with(shm, stream, StartAt::Earliest, false) {
        read_definitions(
            &mut scan,
            index,
            Some(first_delivered),
            |_| false,
            instruments,
        );
    }
}

/// Reads the instrument definitions `scan` comes to, before sequence `until` or to the
/// end of what is there, or until `found(instruments)` says so (asked every 4096
/// records).
pub(super) fn read_definitions(
    scan: &mut RingReader,
    index: usize,
    until: Option<Seq>,
    mut found: impl FnMut(&HashMap<(usize, u32), &'static str, IdHash>) -> bool,
    instruments: &mut HashMap<(usize, u32), &'static str, IdHash>,
) {
    loop {
        let Some(next) = scan.next_seq() else { return };
        if until.is_some_and(|until| next >= until) || found(instruments) {
            return;
        }
        let polled = scan.poll(4096, |event| {
            if let ReadEvent::Record(r) = event
                && until.is_none_or(|until| r.seq < until)
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
            return;
        }
    }
}

/// How far back of a start in the archive definitions are looked for: more than the
/// publisher's state refresh period (1 s of stream time, ADR 0016).
const ARCHIVE_PRIME_NS: i64 = 3_000_000_000;

/// Reads the instrument definitions archived in the few seconds of stream time before
/// `start` (the publisher writes them again every second, so a start anywhere in
/// history resolves its symbols from the first record).
fn prime_from_archive(
    dir: &std::path::Path,
    index: usize,
    stream: &str,
    start: StartAt,
    instruments: &mut HashMap<(usize, u32), &'static str, IdHash>,
) -> Result<(), mdi_archive::ArchiveReadError> {
    use mdi_archive::{ArchiveReader, ArchiveStart};
    // where the start is, in sequence and time
    let (start_seq, start_ns) = match start {
        StartAt::Earliest | StartAt::Latest => return Ok(()),
        StartAt::Time(WallNs(ns)) => (None, ns),
        StartAt::Sequence(seq) => {
            let mut at = ArchiveReader::open(dir, stream, ArchiveStart::Sequence(seq.0))?;
            let mut time = None;
            at.poll(|r| {
                time = Some(r.publish_ns);
                false
            })?;
            let Some(ns) = time else { return Ok(()) };
            (Some(seq.0), ns)
        }
    };
    let mut reader = ArchiveReader::open(
        dir,
        stream,
        ArchiveStart::Time(start_ns.saturating_sub(ARCHIVE_PRIME_NS)),
    )?;
    let mut done = false;
    // bounded: the reader stops at the archive's end
    while !done {
        let n = reader.poll(|r| {
            if start_seq.map_or(r.publish_ns >= start_ns, |s| r.seq >= s) {
                done = true;
                return false;
            }
            if r.kind == RecordKind::INSTRUMENT_DEFINITION.0 {
                let _ = RecordView::open(RecordKind(r.kind), r.body, |record| {
                    if let RecordView::Instrument(d) = record
                        && let Ok(symbol) = d.symbol()
                    {
                        instruments.insert((index, d.get_instrument_id()), intern(symbol));
                    }
                });
            }
            true
        })?;
        if n == 0 {
            break;
        }
    }
    Ok(())
}
