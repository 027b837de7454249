//! The sending side of one stream: serves a ring's stream to receivers, answers NAKs from
//! the ring itself, and never waits for any receiver.
//!
//! Sans-IO: the driver calls [`Sender::handle_datagram`] for every datagram from a
//! receiver, then [`Sender::poll_transmit`] until it returns `None` (sending each frame
//! to the channel), and sleeps until [`Sender::poll_timeout`] or until the ring has new
//! records. `now` is monotonic nanoseconds from any fixed origin, never decreasing.

use std::collections::HashMap;

use zerocopy::byteorder::little_endian::{U32, U64};

use super::frame::{
    DATA_HEADER_LEN, FLAG_END_SEEN, FLAG_ENDED, FLAG_REPEAT, FLAG_SETUP_REQUEST, Frame,
    FrameWriter, MAX_NAK_BYTES, SetupBody, UnavailableBody, encode_stream_name,
};
use super::retransmit::{Asked, RetransmitPool};
use crate::ring::{Position, RawRead, RingReader};
use crate::time::MonoNs;

/// Where a sender reads the stream it serves: a ring (the retransmit buffer is the ring).
pub trait StreamSource {
    /// Whole raw records from `position` (see [`RingReader::read_raw`]).
    fn read_raw(&mut self, position: u64, max_bytes: usize, out: &mut Vec<u8>) -> RawRead;
    /// The oldest retained record (position, sequence), if any.
    fn earliest(&mut self) -> Option<(u64, u64)>;
    /// Position after the last committed record, and the next sequence number.
    fn tail(&mut self) -> (u64, u64);
    /// True if a record starts at `position` (retransmissions start only there).
    fn is_record_boundary(&mut self, position: u64) -> bool;
    /// Where a new session starts serving (position, sequence): the start of the current
    /// writer epoch if the ring still holds it, so its epoch record is replicated too.
    fn session_start(&mut self) -> (u64, u64) {
        self.tail()
    }
}

impl StreamSource for RingReader {
    // The wire and the state machines carry positions and sequences as the u64 they are
    // in a frame; the ring's typed API is converted here.
    fn read_raw(&mut self, position: u64, max_bytes: usize, out: &mut Vec<u8>) -> RawRead {
        RingReader::read_raw(self, Position(position), max_bytes, out)
    }

    fn earliest(&mut self) -> Option<(u64, u64)> {
        RingReader::earliest(self).map(|(p, s)| (p.get(), s.get()))
    }

    fn tail(&mut self) -> (u64, u64) {
        let (p, s) = RingReader::tail(self);
        (p.get(), s.get())
    }

    fn is_record_boundary(&mut self, position: u64) -> bool {
        RingReader::is_record_boundary(self, Position(position))
    }

    fn session_start(&mut self) -> (u64, u64) {
        let info = self.info();
        match StreamSource::earliest(self) {
            Some((earliest, _)) if info.epoch_start_position >= earliest => {
                (info.epoch_start_position, info.epoch_start_seq)
            }
            Some(earliest) => earliest,
            None => StreamSource::tail(self),
        }
    }
}

/// How a sender behaves.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// This sender instance (random per start).
    pub session_id: u32,
    /// The stream's id on the channel.
    pub stream_id: u32,
    /// Stream name, given to receivers for their replica.
    pub stream_name: String,
    /// Datagram size limit.
    pub mtu: usize,
    /// The source ring's epoch, creation time (its id) and capacity.
    pub epoch: u64,
    /// See [`SetupBody::ring_id`].
    pub ring_id: u64,
    /// See [`SetupBody::capacity`].
    pub capacity: u64,
    /// SETUP is repeated this often (ns), for late joiners.
    pub setup_interval_ns: u64,
    /// A HEARTBEAT goes out when nothing was sent for this long (ns).
    pub heartbeat_interval_ns: u64,
    /// A first NAK for a range retransmitted less than this long ago is absorbed: the
    /// retransmission is on its way to every receiver (ns). Repeats are answered.
    pub retransmit_linger_ns: u64,
    /// SETUP requested by receivers goes out at most this often (ns).
    pub setup_min_interval_ns: u64,
    /// Flow control, as Aeron's default ("max") multicast strategy: new records go out
    /// only up to this many bytes beyond the furthest any receiver heard from has
    /// reached (its STATUS high-water mark), so a sender reading a ring far ahead does
    /// not pour it into receivers' socket buffers faster than the fastest of them reads
    /// (the overflow would be loss to repair). A new session sends a window, then waits
    /// for its first receivers (they answer SETUP with STATUS as soon as their replicas
    /// exist) up to the receiver timeout; with no receiver heard from by then, there is
    /// no limit.
    /// The ring's writer never waits for this: a sender held back long enough is lapped
    /// by its source and says what was lost (UNAVAILABLE). `u64::MAX`: off.
    pub flow_window_bytes: u64,
    /// The most one NAK asks to be resent (bytes).
    pub max_nak_bytes: u64,
    /// Retransmissions are capped at this many bytes per second.
    pub retransmit_bytes_per_s: u64,
    /// After [`Sender::close`], NAKs are still answered for this long (ns).
    pub linger_ns: u64,
    /// A receiver not heard from for this long is forgotten (ns).
    pub receiver_timeout_ns: u64,
}

impl SenderConfig {
    /// Defaults for a stream: MTU 1408, SETUP every 100 ms, heartbeat after 1 ms idle,
    /// retransmitted ranges linger 50 ms, retransmits capped at 100 MB/s, SETUP on
    /// request at most every 1 ms, 1 s linger after close.
    pub fn new(
        session_id: u32,
        stream_id: u32,
        stream_name: &str,
        ring: &RingReader,
        epoch: u64,
        ring_id: u64,
    ) -> Self {
        Self {
            session_id,
            stream_id,
            stream_name: stream_name.to_owned(),
            mtu: super::frame::DEFAULT_MTU,
            epoch,
            ring_id,
            capacity: ring.capacity(),
            setup_interval_ns: 100_000_000,
            heartbeat_interval_ns: 1_000_000,
            retransmit_linger_ns: 50_000_000,
            setup_min_interval_ns: 1_000_000,
            flow_window_bytes: 1 << 20,
            max_nak_bytes: MAX_NAK_BYTES,
            retransmit_bytes_per_s: 100_000_000,
            linger_ns: 1_000_000_000,
            receiver_timeout_ns: 2_000_000_000,
        }
    }
}

/// What a sender knows of one receiver (from its STATUS frames), for monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverInfo {
    /// Its replica is complete below this position.
    pub position: u64,
    /// Highest position it has seen.
    pub high_water_mark: u64,
    /// Records it reported unrecoverable.
    pub lost_records: u64,
    /// When it was last heard from.
    pub last_seen_ns: u64,
    /// It saw END and has the whole stream (it needs no more END repeats).
    pub end_seen: bool,
}

/// A sender's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderCounters {
    /// DATA frames sent the first time.
    pub data_frames: u64,
    /// Payload bytes sent the first time.
    pub data_bytes: u64,
    /// DATA frames sent again for NAKs.
    pub retransmit_frames: u64,
    /// Payload bytes sent again for NAKs.
    pub retransmit_bytes: u64,
    /// NAKs received.
    pub naks: u64,
    /// NAKs absorbed: their range was queued already, or retransmitted within the
    /// linger.
    pub naks_coalesced: u64,
    /// NAKs refused: a range not starting on a record boundary of the stream (forged
    /// or corrupt), or empty.
    pub naks_refused: u64,
    /// UNAVAILABLE frames sent.
    pub unavailable: u64,
    /// Datagrams that were not valid frames for this stream.
    pub bad_frames: u64,
    /// Times the sender itself fell a whole ring behind its source.
    pub source_lapped: u64,
    /// Times new records waited for the receivers (flow control window full).
    pub flow_blocked: u64,
}

/// UNAVAILABLE replies queued at most (distinct positions); NAKs beyond are refused.
const MAX_UNAVAILABLE: usize = 64;

/// The sender state machine for one stream. See the module docs for the driving loop.
#[derive(Debug)]
pub struct Sender<S> {
    config: SenderConfig,
    source: S,
    writer: FrameWriter,
    scratch: Vec<u8>,
    /// Next position to send live.
    sent: u64,
    initial: (u64, u64),
    next_setup_ns: u64,
    last_send_ns: u64,
    /// Ranges to retransmit, and those retransmitted lately.
    retransmits: RetransmitPool,
    last_setup_ns: u64,
    started_ns: u64,
    /// New records are waiting for the flow control window.
    flow_blocked: bool,
    unavailable: Vec<u64>,
    tokens: u64,
    tokens_at_ns: u64,
    /// A live record larger than a frame, going out fragment by fragment.
    live_fragment: Option<Fragmenting>,
    /// A retransmitted one: its fragments wait for the rate cap's tokens, while live
    /// data goes on.
    repair_fragment: Option<Fragmenting>,
    receivers: HashMap<u64, ReceiverInfo>,
    closing_since: Option<u64>,
    /// When the last NAK came: lingering lasts while receivers are still repairing.
    last_nak_ns: u64,
    first_end_ns: Option<u64>,
    ends_sent: u32,
    /// END went out and every receiver heard from saw it (or the wait for them ran out).
    closed: bool,
    counters: SenderCounters,
}

#[derive(Debug)]
struct Fragmenting {
    position: u64,
    next_position: u64,
    record: Vec<u8>,
    offset: usize,
}

/// END is sent at least this many times, `END_SPACING_NS` apart (receivers may lose
/// some, and losses come in bursts), and repeated on while a receiver heard from has not
/// said it saw END (STATUS flag `FLAG_END_SEEN`) — at most `receiver_timeout_ns` after
/// the first.
const END_REPEATS: u32 = 5;
const END_SPACING_NS: u64 = 10_000_000;

/// Lingering ends at the latest this many linger periods after close, however busy the
/// receivers still are with repairs.
const LINGER_STRETCH: u64 = 10;

impl<S: StreamSource> Sender<S> {
    /// A sender serving `source` from the start of its current epoch (or the oldest
    /// record retained) — receivers that join later NAK the history they want.
    pub fn new(config: SenderConfig, mut source: S, now: impl Into<MonoNs>) -> Self {
        let now_ns = now.into().get();
        let initial = source.session_start();
        let writer = FrameWriter::new(config.mtu, config.session_id, config.stream_id);
        let tokens = config.retransmit_bytes_per_s / 100;
        Self {
            sent: initial.0,
            initial,
            writer,
            scratch: Vec::with_capacity(config.mtu),
            next_setup_ns: now_ns,
            last_send_ns: now_ns,
            retransmits: RetransmitPool::default(),
            last_setup_ns: 0,
            started_ns: now_ns,
            flow_blocked: false,
            unavailable: Vec::new(),
            tokens,
            tokens_at_ns: now_ns,
            live_fragment: None,
            repair_fragment: None,
            receivers: HashMap::new(),
            closing_since: None,
            last_nak_ns: 0,
            first_end_ns: None,
            ends_sent: 0,
            closed: false,
            counters: SenderCounters::default(),
            config,
            source,
        }
    }

    fn max_payload(&self) -> usize {
        (self.config.mtu - DATA_HEADER_LEN) & !7
    }

    /// Handles a datagram from a receiver (NAK or STATUS); anything else is counted.
    /// A closed sender ignores everything.
    pub fn handle_datagram(&mut self, now: impl Into<MonoNs>, datagram: &[u8]) {
        let now_ns = now.into().get();
        if self.is_closed() {
            return;
        }
        let frame = match Frame::parse(datagram) {
            Ok(frame) => frame,
            Err(_) => {
                self.counters.bad_frames += 1;
                return;
            }
        };
        match frame {
            Frame::Nak(nak)
                if nak.session_id == self.config.session_id
                    && nak.stream_id == self.config.stream_id =>
            {
                self.counters.naks += 1;
                self.last_nak_ns = now_ns;
                let start = nak.body.position.get();
                // a NAK asks for at most `max_nak_bytes`: a longer hole is asked for again
                // as the first part arrives, and no one NAK can resend the whole ring
                let length = u64::from(nak.body.length.get()).min(self.config.max_nak_bytes);
                let end = start.saturating_add(length).min(self.sent);
                if start >= end || start % 8 != 0 {
                    self.counters.naks_refused += 1;
                    return;
                }
                let retained = self.source.earliest().map_or(self.sent, |e| e.0);
                if start >= retained && !self.source.is_record_boundary(start) {
                    self.counters.naks_refused += 1;
                    return;
                }
                if start < retained {
                    // a bounded, distinct set: a flood of NAKs for old ranges costs at
                    // most MAX_UNAVAILABLE replies, never a growing queue
                    if self.unavailable.contains(&start) {
                        self.counters.naks_coalesced += 1;
                    } else if self.unavailable.len() < MAX_UNAVAILABLE {
                        self.unavailable.push(start);
                    } else {
                        self.counters.naks_refused += 1;
                    }
                    return;
                }
                match self
                    .retransmits
                    .ask(start, end, nak.flags & FLAG_REPEAT != 0)
                {
                    Asked::Queued => {}
                    Asked::Absorbed => self.counters.naks_coalesced += 1,
                    Asked::Full => self.counters.naks_refused += 1,
                }
            }
            Frame::Status(status) if status.stream_id == self.config.stream_id => {
                if status.flags & FLAG_SETUP_REQUEST != 0 {
                    // answered soon, but a flood of requests gets one SETUP per interval
                    let earliest = self
                        .last_setup_ns
                        .saturating_add(self.config.setup_min_interval_ns);
                    self.next_setup_ns = self.next_setup_ns.min(now_ns.max(earliest));
                }
                if status.session_id == self.config.session_id {
                    self.receivers.insert(
                        status.body.receiver_id.get(),
                        ReceiverInfo {
                            position: status.body.position.get(),
                            high_water_mark: status.body.high_water_mark.get(),
                            lost_records: status.body.lost_records.get(),
                            last_seen_ns: now_ns,
                            end_seen: status.flags & FLAG_END_SEEN != 0,
                        },
                    );
                }
            }
            _ => self.counters.bad_frames += 1,
        }
    }

    /// Stops sending new records: from now the sender lingers, answering NAKs, then sends
    /// END.
    pub fn close(&mut self, now: impl Into<MonoNs>) {
        let now_ns = now.into().get();
        if self.closing_since.is_none() {
            self.closing_since = Some(now_ns);
        }
    }

    /// When the next END is due. The first: as soon as every receiver heard from reports
    /// the whole stream and no retransmission is pending; while a receiver heard from
    /// (within `receiver_timeout_ns`) reports less than that, not before
    /// `LINGER_STRETCH` lingers after close — its NAKs may pause (held behind a backlog
    /// it works through, or still asking a previous session it followed until that fell
    /// silent) without its repair being over; otherwise once no NAK came for the linger
    /// period. Never later than `LINGER_STRETCH` lingers after close. Then every
    /// `END_SPACING_NS`.
    fn next_end_ns(&self) -> Option<u64> {
        let since = self.closing_since?;
        if self.closed {
            return None;
        }
        if let Some(first) = self.first_end_ns {
            return Some(first + u64::from(self.ends_sent) * END_SPACING_NS);
        }
        let linger = self.config.linger_ns;
        let latest = since.saturating_add(linger.saturating_mul(LINGER_STRETCH));
        let behind = self.receivers.values().any(|r| r.position < self.sent);
        let at = if self.receivers.is_empty() {
            since.max(self.last_nak_ns).saturating_add(linger)
        } else if behind {
            latest
        } else if self.retransmits.is_empty() {
            since
        } else {
            since.max(self.last_nak_ns).saturating_add(linger)
        };
        Some(at.min(latest))
    }

    /// True once [`Self::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing_since.is_some()
    }

    /// True once END has been sent and seen by every receiver heard from — or they had
    /// `receiver_timeout_ns` to say so (the driver may drop the sender).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether END has gone out often enough: at least `END_REPEATS` times, and until
    /// every receiver heard from saw it or `receiver_timeout_ns` passed since the first.
    fn end_done(&self, now_ns: u64) -> bool {
        let Some(first) = self.first_end_ns else {
            return false;
        };
        self.ends_sent >= END_REPEATS
            && (self.receivers.values().all(|r| r.end_seen)
                || now_ns.saturating_sub(first) >= self.config.receiver_timeout_ns)
    }

    /// The next frame to send, if any: the datagram is in the returned slice. Nothing
    /// once closed (END sent).
    pub fn poll_transmit(&mut self, now: impl Into<MonoNs>) -> Option<&[u8]> {
        let now_ns = now.into().get();
        if self.is_closed() {
            return None;
        }
        self.refill(now_ns);
        self.retransmits
            .expire(now_ns, self.config.retransmit_linger_ns);
        self.receivers
            .retain(|_, r| now_ns.saturating_sub(r.last_seen_ns) < self.config.receiver_timeout_ns);
        if self.end_done(now_ns) {
            self.closed = true;
            return None;
        }
        let mtu = self.config.mtu as u64;
        let sent = if self.live_fragment.is_some() {
            self.next_fragment(false)
        } else if now_ns >= self.next_setup_ns {
            self.next_setup_ns = now_ns + self.config.setup_interval_ns;
            self.last_setup_ns = now_ns;
            self.setup();
            true
        } else if self.repair_fragment.is_some() && self.tokens >= mtu {
            self.next_fragment(true)
        } else if self.tokens >= mtu
            && let Some(from) = self.unavailable.pop()
        {
            self.send_unavailable(from);
            self.tokens = self.tokens.saturating_sub(self.writer.frame().len() as u64);
            true
        } else if self.repair_fragment.is_none() && self.retransmit(now_ns) {
            true
        } else if self.live(now_ns) {
            // Also while lingering: everything published before close is sent.
            true
        } else if self.next_end_ns().is_some_and(|at| now_ns >= at) {
            self.ends_sent += 1;
            self.first_end_ns.get_or_insert(now_ns);
            let (_, next_seq) = self.source.tail();
            self.writer.end(self.sent, next_seq);
            true
        } else {
            self.heartbeat_due(now_ns)
        };
        if !sent {
            return None;
        }
        self.last_send_ns = now_ns;
        Some(self.writer.frame())
    }

    fn heartbeat_due(&mut self, now_ns: u64) -> bool {
        if now_ns.saturating_sub(self.last_send_ns) >= self.config.heartbeat_interval_ns {
            self.writer.heartbeat(self.sent);
            true
        } else {
            false
        }
    }

    /// When the sender next has something to do regardless of new records.
    pub fn poll_timeout(&self) -> Option<MonoNs> {
        self.next_timeout().map(MonoNs)
    }

    fn next_timeout(&self) -> Option<u64> {
        let mut at = self
            .next_setup_ns
            .min(self.last_send_ns + self.config.heartbeat_interval_ns);
        let rate_limited = !self.retransmits.is_empty()
            || !self.unavailable.is_empty()
            || self.repair_fragment.is_some();
        if rate_limited && self.tokens < self.config.mtu as u64 {
            // Tokens for one datagram.
            let wait = (self.config.mtu as u64 * 1_000_000_000)
                .div_ceil(self.config.retransmit_bytes_per_s.max(1));
            at = at.min(self.tokens_at_ns + wait);
        }
        if self.is_closed() {
            return None;
        }
        if let Some(end_at) = self.next_end_ns() {
            at = at.min(end_at);
        }
        Some(at)
    }

    fn refill(&mut self, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.tokens_at_ns);
        let add =
            u128::from(elapsed) * u128::from(self.config.retransmit_bytes_per_s) / 1_000_000_000;
        if add > 0 {
            let cap = (self.config.retransmit_bytes_per_s / 100).max(self.config.mtu as u64 * 4);
            self.tokens = self
                .tokens
                .saturating_add(u64::try_from(add).unwrap_or(u64::MAX))
                .min(cap);
            self.tokens_at_ns = now_ns;
        }
    }

    fn setup(&mut self) {
        let (retained_from, _) = self.source.earliest().unwrap_or(self.initial);
        let body = SetupBody {
            epoch: U64::new(self.config.epoch),
            ring_id: U64::new(self.config.ring_id),
            capacity: U64::new(self.config.capacity),
            initial_position: U64::new(self.initial.0),
            initial_seq: U64::new(self.initial.1),
            retained_from: U64::new(retained_from),
            tail_position: U64::new(self.sent),
            mtu: U32::new(u32::try_from(self.config.mtu).unwrap_or(u32::MAX)),
            reserved: U32::new(0),
            stream_name: encode_stream_name(&self.config.stream_name).unwrap_or([0; 64]),
        };
        let flags = if self.ends_sent > 0 { FLAG_ENDED } else { 0 };
        self.writer.setup(flags, &body);
    }

    fn send_unavailable(&mut self, from: u64) {
        let (resume_position, resume_seq) = self.source.earliest().unwrap_or(self.source.tail());
        self.counters.unavailable += 1;
        self.writer.unavailable(&UnavailableBody {
            from_position: U64::new(from),
            resume_position: U64::new(resume_position),
            resume_seq: U64::new(resume_seq),
            reserved: U64::new(0),
        });
    }

    /// One retransmission, if one is pending and the rate cap allows it. Every frame
    /// of it — each fragment of a large record too — takes its bytes from the cap.
    fn retransmit(&mut self, now_ns: u64) -> bool {
        if self.tokens < self.config.mtu as u64 {
            return false;
        }
        let Some((start, end)) = self.retransmits.take_first() else {
            return false;
        };
        // Only what was asked for (at least one record): a full datagram from the hole's
        // start would resend records the receivers already have.
        let max = self
            .max_payload()
            .min(usize::try_from(end - start).unwrap_or(usize::MAX));
        self.scratch.clear();
        match self.source.read_raw(start, max, &mut self.scratch) {
            RawRead::Records { next_position } => {
                self.retransmits.resent(start, next_position, now_ns);
                self.retransmits.put_back(next_position, end);
                self.send_records(start, next_position, true);
                if self.repair_fragment.is_none() {
                    // (a fragmented record's frames take their tokens one by one)
                    self.tokens = self.tokens.saturating_sub(self.writer.frame().len() as u64);
                }
                true
            }
            RawRead::Skip { next_position } => {
                self.retransmits.resent(start, next_position, now_ns);
                self.retransmits.put_back(next_position, end);
                self.writer.data(start, next_position, &[]);
                self.tokens = self.tokens.saturating_sub(self.writer.frame().len() as u64);
                true
            }
            RawRead::Unavailable { .. } => {
                self.send_unavailable(start);
                self.tokens = self.tokens.saturating_sub(self.writer.frame().len() as u64);
                true
            }
            RawRead::Empty | RawRead::Corrupt(_) => false,
        }
    }

    /// New records from the source, if any.
    fn live(&mut self, now_ns: u64) -> bool {
        let furthest = self
            .receivers
            .values()
            .map(|r| r.high_water_mark)
            .max()
            .or_else(|| {
                // a young session: receivers may be setting up their replicas
                (now_ns.saturating_sub(self.started_ns) < self.config.receiver_timeout_ns)
                    .then_some(self.initial.0)
            });
        if let Some(furthest) = furthest
            && self.sent >= furthest.saturating_add(self.config.flow_window_bytes)
        {
            if !self.flow_blocked {
                self.flow_blocked = true;
                self.counters.flow_blocked += 1;
            }
            return false;
        }
        self.flow_blocked = false;
        let max = self.max_payload();
        self.scratch.clear();
        match self.source.read_raw(self.sent, max, &mut self.scratch) {
            RawRead::Records { next_position } => {
                let start = self.sent;
                self.sent = next_position;
                self.send_records(start, next_position, false);
                true
            }
            RawRead::Skip { next_position } => {
                let start = self.sent;
                self.sent = next_position;
                self.writer.data(start, next_position, &[]);
                true
            }
            RawRead::Unavailable {
                resume_position, ..
            } => {
                // The sender itself was lapped by its source: tell receivers what is gone.
                self.counters.source_lapped += 1;
                let from = self.sent;
                self.sent = resume_position;
                self.send_unavailable(from);
                true
            }
            RawRead::Empty | RawRead::Corrupt(_) => false,
        }
    }

    /// Sends the records in `scratch`, fragmenting a single record larger than a frame.
    fn send_records(&mut self, position: u64, next_position: u64, retransmit: bool) {
        let len = self.scratch.len() as u64;
        if self.scratch.len() > self.max_payload() {
            let fragmenting = Some(Fragmenting {
                position,
                next_position,
                record: std::mem::take(&mut self.scratch),
                offset: 0,
            });
            if retransmit {
                self.repair_fragment = fragmenting;
            } else {
                self.live_fragment = fragmenting;
            }
            self.next_fragment(retransmit);
            return;
        }
        if retransmit {
            self.counters.retransmit_frames += 1;
            self.counters.retransmit_bytes += len;
        } else {
            self.counters.data_frames += 1;
            self.counters.data_bytes += len;
        }
        self.writer.data(position, next_position, &self.scratch);
    }

    /// The next fragment of the live record, or of the retransmitted one.
    fn next_fragment(&mut self, retransmit: bool) -> bool {
        let max = self.max_payload();
        let slot = if retransmit {
            &mut self.repair_fragment
        } else {
            &mut self.live_fragment
        };
        let Some(f) = slot else {
            return false;
        };
        let end = (f.offset + max).min(f.record.len());
        let record_len = u32::try_from(f.record.len()).unwrap_or(u32::MAX);
        let offset = u32::try_from(f.offset).unwrap_or(u32::MAX);
        self.writer.fragment(
            f.position,
            f.next_position,
            record_len,
            offset,
            &f.record[f.offset..end],
        );
        let bytes = (end - f.offset) as u64;
        if retransmit {
            self.counters.retransmit_frames += 1;
            self.counters.retransmit_bytes += bytes;
            self.tokens = self
                .tokens
                .saturating_sub((DATA_HEADER_LEN as u64).saturating_add(bytes));
        } else {
            self.counters.data_frames += 1;
            self.counters.data_bytes += bytes;
        }
        f.offset = end;
        if f.offset == f.record.len() {
            let record = std::mem::take(&mut f.record);
            *slot = None;
            self.scratch = record;
        }
        true
    }

    /// Next position to send live.
    pub fn position(&self) -> u64 {
        self.sent
    }

    /// The receivers heard from recently, by receiver id.
    pub fn receivers(&self) -> &HashMap<u64, ReceiverInfo> {
        &self.receivers
    }

    /// Counters.
    pub fn counters(&self) -> SenderCounters {
        self.counters
    }

    /// The source, e.g. to read its state.
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }
}
