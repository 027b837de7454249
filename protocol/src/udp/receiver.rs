//! The receiving side of one stream: rebuilds a replica of the sender's ring — same
//! positions, same sequence numbers — and repairs loss with NAKs.
//!
//! Sans-IO: the driver calls [`Receiver::handle_datagram`] for every datagram of the
//! stream, then [`Receiver::poll_transmit`] until `None` (sending each frame to the
//! sender), drains [`Receiver::poll_event`], and sleeps until [`Receiver::poll_timeout`].
//! Records go straight into the [`ReplicaSink`]. `now` is monotonic nanoseconds.

use std::collections::{BTreeMap, VecDeque};

use zerocopy::FromBytes;
use zerocopy::byteorder::little_endian::U64;

use super::frame::{
    DataBody, FLAG_END_SEEN, FLAG_ENDED, FLAG_REPEAT, FLAG_SETUP_REQUEST, Frame, FrameWriter,
    MAX_CAPACITY, MAX_NAK_BYTES, MAX_POSITION, StatusBody,
};
use super::gaps::{Gaps, RepairRtt};
use crate::ring::{
    AppendError, Position, RECORD_HEADER_LEN, RecordHeader, ReplicaWriter, Seq, align_record,
};
use crate::time::MonoNs;

/// Where a receiver writes the replica: a ring created with
/// [`ReplicaWriter::create`] and the source's capacity.
pub trait ReplicaSink {
    /// Writes a raw record at its source position (see [`ReplicaWriter::append_raw`]).
    fn append_raw(&mut self, position: u64, record: &[u8]) -> Result<u64, AppendError>;
    /// The stream continues at `position` with sequence `next_seq`.
    fn skip_to(&mut self, position: u64, next_seq: u64);
    /// The replica's position (where the next record goes).
    fn position(&self) -> u64;
    /// The sequence number of the replica's next record.
    fn next_seq(&self) -> u64;
}

impl ReplicaSink for ReplicaWriter {
    // The state machine works in the wire's u64 positions and sequences.
    fn append_raw(&mut self, position: u64, record: &[u8]) -> Result<u64, AppendError> {
        ReplicaWriter::append_raw(self, Position(position), record).map(Seq::get)
    }

    fn skip_to(&mut self, position: u64, next_seq: u64) {
        ReplicaWriter::skip_to(self, Position(position), Seq(next_seq));
    }

    fn position(&self) -> u64 {
        ReplicaWriter::position(self).get()
    }

    fn next_seq(&self) -> u64 {
        ReplicaWriter::next_seq(self).get()
    }
}

/// How a receiver behaves.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// This receiver's id (random per receiver), reported in NAK and STATUS.
    pub receiver_id: u64,
    /// The stream to receive.
    pub stream_id: u32,
    /// Multicast: NAKs wait a random delay (so many receivers do not all NAK at once);
    /// unicast: they go out after `nak_delay_ns`.
    pub multicast: bool,
    /// Delay before the first NAK of a gap (unicast), or its upper bound (multicast) (ns).
    pub nak_delay_ns: u64,
    /// A NAK not answered within the retransmission timeout is sent again; before any
    /// repair round trip was measured the timeout is this (ns). Each repeat doubles it,
    /// up to 16×.
    pub nak_retry_ns: u64,
    /// The retransmission timeout is never shorter than this (ns)…
    pub nak_retry_min_ns: u64,
    /// …and a repeat never waits longer than this (ns).
    pub nak_retry_max_ns: u64,
    /// Repairs asked for and on their way come to at most this many bytes; more of a
    /// large loss is asked for as they arrive (they share the socket buffer with live
    /// data).
    pub nak_budget_bytes: u64,
    /// STATUS goes out this often (ns).
    pub status_interval_ns: u64,
    /// …and whenever the highest position seen moved this far since the last one
    /// (bytes): the sender's flow control window moves on these.
    pub status_progress_bytes: u64,
    /// Seed of the multicast NAK back-off.
    pub seed: u64,
    /// After END, holes not repaired for this long are given up as lost (ns): the
    /// sender has stopped answering, and a receiver must not wait forever.
    pub end_grace_ns: u64,
}

impl ReceiverConfig {
    /// Defaults: unicast NAK after 50 µs; multicast within 0–250 µs; repeat after the
    /// measured repair round trip (2 ms before one is measured, at least 100 µs);
    /// STATUS every 100 ms.
    pub fn new(receiver_id: u64, stream_id: u32, multicast: bool) -> Self {
        Self {
            receiver_id,
            stream_id,
            multicast,
            nak_delay_ns: if multicast { 250_000 } else { 50_000 },
            nak_retry_ns: 2_000_000,
            nak_retry_min_ns: 100_000,
            nak_retry_max_ns: 500_000_000,
            nak_budget_bytes: 512 << 10,
            status_interval_ns: 100_000_000,
            status_progress_bytes: 256 << 10,
            seed: receiver_id,
            end_grace_ns: 1_000_000_000,
        }
    }
}

/// What happened to the stream, for the application and monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverEvent {
    /// Joined a sender's session.
    Joined {
        /// Session id.
        session_id: u32,
        /// Source ring epoch.
        epoch: u64,
        /// Position the replica continues from.
        position: u64,
    },
    /// A new session of the same source ring (the publisher restarted): the replica
    /// continues; the source's epoch record follows in the stream.
    NewSession {
        /// The new session id.
        session_id: u32,
        /// Source ring epoch.
        epoch: u64,
    },
    /// A different source ring (recreated, other capacity): the replica must be replaced
    /// before this session can be followed.
    NewRing {
        /// The new session id.
        session_id: u32,
        /// The new ring's id.
        ring_id: u64,
        /// Its capacity.
        capacity: u64,
    },
    /// Sequences `from_seq..to_seq` could not be repaired (older than the sender retains).
    Lost {
        /// First lost sequence.
        from_seq: u64,
        /// One past the last.
        to_seq: u64,
    },
    /// The sender ended the stream and the replica is complete up to its end.
    Ended {
        /// Final position.
        position: u64,
    },
}

/// A receiver's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverCounters {
    /// Records written to the replica.
    pub records: u64,
    /// DATA frames that arrived in order.
    pub in_order: u64,
    /// DATA frames that arrived ahead of a gap and were buffered.
    pub buffered: u64,
    /// DATA frames already in the replica (duplicates, late retransmits).
    pub duplicates: u64,
    /// Gaps opened: data arrived beyond everything seen so far, or the sender's tail did.
    pub gaps: u64,
    /// Bytes missing when those gaps opened (what this receiver lost the first time).
    pub gap_bytes: u64,
    /// NAKs that repeated an earlier one (its repair did not come in time).
    pub nak_repeats: u64,
    /// NAKs sent.
    pub naks: u64,
    /// Records reported lost (unrecoverable).
    pub lost_records: u64,
    /// Datagrams that were not frames.
    pub malformed: u64,
    /// Frames of another session, or for this stream but out of any sane range.
    pub rejected: u64,
}

#[derive(Debug)]
struct Session {
    session_id: u32,
    ring_id: u64,
    capacity: u64,
    /// The replica is complete below this position.
    frontier: u64,
    /// Sequence of the record at the frontier, once known.
    next_seq: Option<u64>,
    /// Highest position known to exist.
    high_water: u64,
    /// Frames ahead of the frontier: position → (next position, raw records).
    ahead: BTreeMap<u64, (u64, Vec<u8>)>,
    /// Bytes held in `ahead` (at most the capacity).
    ahead_bytes: u64,
    /// What is missing below the high-water mark, each gap with its NAK schedule.
    gaps: Gaps,
    /// Large records being reassembled: position → assembly.
    fragments: BTreeMap<u64, Assembly>,
    /// END's final position and sequence.
    end: Option<(u64, u64)>,
    ended_reported: bool,
    /// When the frontier last moved, and where it was then.
    progress_ns: u64,
    progress_frontier: u64,
}

impl Session {
    /// A position this session could have sent: within two rings of the frontier (the
    /// sender holds one ring; a receiver that far behind is told what it lost).
    fn plausible(&self, position: u64) -> bool {
        position
            <= self
                .frontier
                .saturating_add(self.capacity.saturating_mul(2))
    }

    /// A DATA frame's `next` after content ending at `end`: the same, or the start of
    /// the ring's next lap (padding where a record did not fit before the end).
    fn continues_at(&self, end: u64, next: u64) -> bool {
        next == end
            || (next > end && next.is_multiple_of(self.capacity) && next - end < self.capacity)
    }

    /// An end of the stream at `final_position`: not before anything the session sent.
    fn plausible_end(&self, final_position: u64) -> bool {
        final_position >= self.high_water && self.plausible(final_position)
    }
}

#[derive(Debug)]
struct Assembly {
    next_position: u64,
    bytes: Vec<u8>,
    have: Vec<bool>,
    missing: usize,
}

/// Fragments are tracked in 8-byte units.
const FRAGMENT_UNIT: usize = 8;

/// The receiver state machine for one stream.
#[derive(Debug)]
pub struct Receiver {
    config: ReceiverConfig,
    session: Option<Session>,
    writer: FrameWriter,
    /// Ask the sender for SETUP in the next STATUS.
    want_setup: bool,
    /// The repair round trip, learnt across sessions.
    rtt: RepairRtt,
    /// Datagrams are waiting that this receiver has not handled yet (the driver says).
    backlog: bool,
    next_status_ns: u64,
    /// The high-water mark the last STATUS reported.
    status_high_water: u64,
    rng: u64,
    events: VecDeque<ReceiverEvent>,
    counters: ReceiverCounters,
}

impl Receiver {
    /// A receiver that has not joined a session yet (it asks for SETUP in its STATUS).
    pub fn new(config: ReceiverConfig, now: impl Into<MonoNs>) -> Self {
        let now_ns = now.into().get();
        let writer = FrameWriter::new(256, 0, config.stream_id);
        Self {
            rng: config.seed | 1,
            config,
            session: None,
            writer,
            want_setup: true,
            rtt: RepairRtt::default(),
            backlog: false,
            next_status_ns: now_ns,
            status_high_water: 0,
            events: VecDeque::new(),
            counters: ReceiverCounters::default(),
        }
    }

    /// Handles one datagram; records go into `sink`.
    pub fn handle_datagram(
        &mut self,
        now: impl Into<MonoNs>,
        datagram: &[u8],
        sink: &mut impl ReplicaSink,
    ) {
        let now_ns = now.into().get();
        let frame = match Frame::parse(datagram) {
            Ok(frame) => frame,
            Err(_) => {
                self.counters.malformed += 1;
                return;
            }
        };
        match frame {
            Frame::Setup(setup) if setup.stream_id == self.config.stream_id => {
                self.handle_setup(now_ns, setup.session_id, setup.body, sink);
                if setup.flags & FLAG_ENDED != 0
                    && let Some(session) = &mut self.session
                    && session.session_id == setup.session_id
                {
                    // The stream ended, perhaps while we followed an older session (its
                    // final sequence is not in SETUP: keep one END gave, if any).
                    let final_position = setup.body.tail_position.get();
                    let final_seq = session.end.map_or(0, |(_, seq)| seq);
                    if session.plausible_end(final_position) {
                        session.end = Some((final_position, final_seq));
                        self.raise_high_water(final_position, now_ns);
                    } else {
                        self.counters.rejected += 1;
                    }
                    self.after_progress(now_ns);
                }
                return;
            }
            Frame::Setup(_) => return,
            _ => {}
        }
        let (session_id, stream_id) = match &frame {
            Frame::Data(f) => (f.session_id, f.stream_id),
            Frame::Heartbeat(f) => (f.session_id, f.stream_id),
            Frame::Unavailable(f) => (f.session_id, f.stream_id),
            Frame::End(f) => (f.session_id, f.stream_id),
            _ => {
                self.counters.rejected += 1;
                return;
            }
        };
        let Some(session) = &self.session else {
            // Not joined: ask for SETUP at once.
            self.want_setup = true;
            self.next_status_ns = self.next_status_ns.min(now_ns);
            return;
        };
        if stream_id != self.config.stream_id || session_id != session.session_id {
            self.counters.rejected += 1;
            if stream_id == self.config.stream_id {
                // Perhaps a new session whose SETUP we missed: ask for it now.
                self.want_setup = true;
                self.next_status_ns = self.next_status_ns.min(now_ns);
            }
            return;
        }
        match frame {
            Frame::Data(data) => {
                let header = data.body.header;
                let position = header.position.get();
                let next = header.next_position.get();
                let fragment = data.body.is_fragment(data.flags);
                // what the frame carries ends here; `next` may only skip the padding at
                // the end of a lap — an empty frame cannot move the stream anywhere
                let content = if fragment {
                    u64::from(header.record_len.get())
                } else {
                    data.body.payload.len() as u64
                };
                if let Some(session) = &self.session
                    && session.session_id == session_id
                    && !session.continues_at(position.saturating_add(content), next)
                {
                    self.counters.rejected += 1;
                    return;
                }
                if fragment {
                    self.handle_fragment(now_ns, *header, data.body.payload, sink);
                } else {
                    self.handle_records(now_ns, position, next, data.body.payload, sink);
                }
            }
            Frame::Heartbeat(heartbeat) => {
                let tail = heartbeat.body.tail_position.get();
                if let Some(session) = &self.session
                    && session.plausible(tail)
                {
                    self.raise_high_water(tail, now_ns);
                }
            }
            Frame::Unavailable(unavailable) => {
                let from = unavailable.body.from_position.get();
                let resume = unavailable.body.resume_position.get();
                let resume_seq = unavailable.body.resume_seq.get();
                self.handle_unavailable(now_ns, from, resume, resume_seq, sink);
            }
            Frame::End(end) => {
                if let Some(session) = &mut self.session {
                    let final_position = end.body.final_position.get();
                    tracing::debug!(
                        stream_id = self.config.stream_id,
                        final_position,
                        frontier = session.frontier,
                        gaps = session.gaps.len(),
                        "END"
                    );
                    if session.plausible_end(final_position) {
                        session.end = Some((final_position, end.body.final_seq.get()));
                        if session.ended_reported {
                            // a repeat: the sender has not heard that we saw it
                            self.next_status_ns = self.next_status_ns.min(now_ns);
                        }
                        self.raise_high_water(final_position, now_ns);
                    } else {
                        // an end below what the session already sent: forged or corrupt;
                        // taking it would end the replica short
                        self.counters.rejected += 1;
                    }
                }
            }
            _ => {}
        }
        self.after_progress(now_ns);
    }

    fn handle_setup(
        &mut self,
        now_ns: u64,
        session_id: u32,
        setup: &super::frame::SetupBody,
        sink: &mut impl ReplicaSink,
    ) {
        let epoch = setup.epoch.get();
        let ring_id = setup.ring_id.get();
        let capacity = setup.capacity.get();
        let positions = [
            setup.initial_position.get(),
            setup.tail_position.get(),
            setup.retained_from.get(),
        ];
        if !(64..=MAX_CAPACITY).contains(&capacity) || positions.iter().any(|&p| p > MAX_POSITION) {
            // no ring is that small (positions are taken modulo it) or that large, and no
            // stream gets that far: forged or corrupt
            self.counters.rejected += 1;
            return;
        }
        self.want_setup = false;
        let tail = setup.tail_position.get();
        let joining = self.session.is_none();
        match &mut self.session {
            Some(session) if session.session_id == session_id => {}
            Some(session) if session.ring_id == ring_id && session.capacity == capacity => {
                // The publisher restarted on the same ring: same positions, go on; what
                // is missing is asked of the new session at once.
                session.session_id = session_id;
                session.end = None;
                session.ended_reported = false;
                session.gaps.ask_anew(now_ns);
                self.writer.set_session(session_id);
                self.events
                    .push_back(ReceiverEvent::NewSession { session_id, epoch });
            }
            Some(_) => {
                self.events.push_back(ReceiverEvent::NewRing {
                    session_id,
                    ring_id,
                    capacity,
                });
                return;
            }
            None => {
                // Replicate from where this session started, or on from the replica's own
                // position if it is further (a restarted receiver: the driver made sure the
                // replica is of this very source ring), with the replica's sequence — so
                // what the sender no longer holds is reported exactly.
                let initial = setup.initial_position.get();
                let (frontier, next_seq) = if sink.position() > initial {
                    (sink.position(), Some(sink.next_seq()))
                } else {
                    (initial, Some(setup.initial_seq.get()))
                };
                if sink.position() < frontier {
                    sink.skip_to(frontier, next_seq.unwrap_or(0));
                }
                self.session = Some(Session {
                    session_id,
                    ring_id,
                    capacity,
                    frontier,
                    next_seq,
                    high_water: frontier,
                    ahead: BTreeMap::new(),
                    ahead_bytes: 0,
                    gaps: Gaps::default(),
                    fragments: BTreeMap::new(),
                    end: None,
                    ended_reported: false,
                    progress_ns: now_ns,
                    progress_frontier: frontier,
                });
                self.writer.set_session(session_id);
                // the sender learns of this receiver now (its flow control counts it)
                self.next_status_ns = now_ns;
                self.status_high_water = frontier;
                self.events.push_back(ReceiverEvent::Joined {
                    session_id,
                    epoch,
                    position: frontier,
                });
            }
        }
        // what the session sent before this SETUP and we have not seen is a gap: a tail
        // within two rings of the frontier, or further if the sender says it no longer
        // holds the frontier (this receiver was lapped) and holds at most a ring
        let retained_from = setup.retained_from.get();
        if let Some(session) = &self.session
            && (session.plausible(tail)
                || (retained_from > session.frontier
                    && tail >= retained_from
                    && tail - retained_from <= session.capacity))
        {
            self.raise_high_water_as(tail, now_ns, joining);
        }
        self.after_progress(now_ns);
    }

    /// The sender has sent up to `to` (a frame's end, a tail it announced): what lies
    /// between the highest position seen so far and `to` is a new gap, NAKed after the
    /// first-NAK delay. Positions implausibly far ahead are refused by the callers.
    fn raise_high_water(&mut self, to: u64, now_ns: u64) {
        self.raise_high_water_as(to, now_ns, false);
    }

    /// [`Self::raise_high_water`]; `joining`: the gap is history from before this
    /// receiver joined.
    fn raise_high_water_as(&mut self, to: u64, now_ns: u64, joining: bool) {
        let delay = if self.config.multicast {
            // many receivers may see the same loss: spread their NAKs, so the first one's
            // retransmission (multicast) reaches the others before they ask
            self.random_below(self.config.nak_delay_ns.max(1))
        } else {
            self.config.nak_delay_ns
        };
        let Some(session) = &mut self.session else {
            return;
        };
        let from = session.high_water.max(session.frontier);
        if to > from {
            session
                .gaps
                .open(from, to, now_ns.saturating_add(delay), joining);
            self.counters.gaps += 1;
            self.counters.gap_bytes += to - from;
            tracing::trace!(stream_id = self.config.stream_id, from, to, "gap opened");
        }
        session.high_water = session.high_water.max(to);
    }

    /// `[start, end)` of the stream arrived (records, or a fragment's bytes): the gaps
    /// it covers close, and the high-water mark moves past it.
    fn arrived(&mut self, start: u64, end: u64, now_ns: u64) {
        let Some(session) = &mut self.session else {
            return;
        };
        session.high_water = session.high_water.max(end);
        session.gaps.set_repair_timeout(self.rtt.timeout_ns(
            self.config.nak_retry_ns,
            self.config.nak_retry_min_ns,
            self.config.nak_retry_max_ns,
        ));
        if let Some(sample) = session.gaps.fill(start, end, now_ns) {
            self.rtt.sample(sample);
        }
    }

    /// Whole records at `position`, continuing at `next`.
    fn handle_records(
        &mut self,
        now_ns: u64,
        position: u64,
        next: u64,
        payload: &[u8],
        sink: &mut impl ReplicaSink,
    ) {
        let Some(session) = &mut self.session else {
            return;
        };
        if next <= session.frontier {
            self.counters.duplicates += 1;
            return;
        }
        if position > session.frontier {
            if !session.plausible(position)
                || session.ahead_bytes + payload.len() as u64 > session.capacity
            {
                // Forged, from a sender far ahead of anything plausible, or more held
                // back than the ring could ever hold.
                self.counters.rejected += 1;
                return;
            }
            if session.ahead.contains_key(&position) {
                self.counters.duplicates += 1;
                return;
            }
            session.ahead_bytes += payload.len() as u64;
            session.ahead.insert(position, (next, payload.to_vec()));
            self.counters.buffered += 1;
            // a gap opens below `position` if it is beyond everything seen
            self.raise_high_water(position, now_ns);
            self.arrived(position, next, now_ns);
            return;
        }
        self.counters.in_order += 1;
        self.arrived(position, next, now_ns);
        let Some(session) = &mut self.session else {
            return;
        };
        Self::apply(
            session,
            &mut self.counters,
            &mut self.events,
            position,
            next,
            payload,
            sink,
        );
        // Drain what was buffered behind the gap.
        while let Some((&at, _)) = session.ahead.iter().next() {
            if at > session.frontier {
                break;
            }
            let (ahead_next, bytes) = session.ahead.remove(&at).unwrap_or_default();
            session.ahead_bytes -= bytes.len() as u64;
            if ahead_next > session.frontier {
                Self::apply(
                    session,
                    &mut self.counters,
                    &mut self.events,
                    at,
                    ahead_next,
                    &bytes,
                    sink,
                );
            }
        }
        session.gaps.settle_below(session.frontier, now_ns);
    }

    /// Writes the records of `payload` (at `position`) from the frontier on.
    fn apply(
        session: &mut Session,
        counters: &mut ReceiverCounters,
        events: &mut VecDeque<ReceiverEvent>,
        position: u64,
        next: u64,
        payload: &[u8],
        sink: &mut impl ReplicaSink,
    ) {
        let mut at = position;
        let mut offset = 0usize;
        while offset < payload.len() {
            let Ok((header, _)) = RecordHeader::read_from_prefix(&payload[offset..]) else {
                break;
            };
            let len = usize::try_from(align_record(u64::from(header.len))).unwrap_or(usize::MAX);
            let Some(record) = payload.get(offset..offset + len) else {
                break;
            };
            if at >= session.frontier {
                if let Some(expected) = session.next_seq
                    && header.seq > expected
                {
                    // The sender's own stream skipped (it was lapped by its source).
                    tracing::debug!(
                        at,
                        position,
                        frontier = session.frontier,
                        from_seq = expected,
                        to_seq = header.seq,
                        "the sender's stream skipped: records lost"
                    );
                    events.push_back(ReceiverEvent::Lost {
                        from_seq: expected,
                        to_seq: header.seq,
                    });
                    counters.lost_records += header.seq - expected;
                }
                if sink.append_raw(at, record).is_err() {
                    counters.rejected += 1;
                    return;
                }
                counters.records += 1;
                session.next_seq = Some(header.seq + 1);
                session.frontier = at + len as u64;
            }
            offset += len;
            at += len as u64;
        }
        if next > session.frontier {
            // Padding in the source after these records.
            sink.skip_to(next, session.next_seq.unwrap_or(0));
            session.frontier = next;
        }
        session.high_water = session.high_water.max(next);
    }

    fn handle_fragment(
        &mut self,
        now_ns: u64,
        header: DataBody,
        payload: &[u8],
        sink: &mut impl ReplicaSink,
    ) {
        let position = header.position.get();
        let next = header.next_position.get();
        let record_len = header.record_len.get() as usize;
        let offset = header.fragment_offset.get() as usize;
        let Some(session) = &mut self.session else {
            return;
        };
        if next <= session.frontier {
            self.counters.duplicates += 1;
            return;
        }
        if !session.plausible(position)
            || record_len as u64 > session.capacity
            || offset + payload.len() > record_len
        {
            self.counters.rejected += 1;
            return;
        }
        let assembly = session
            .fragments
            .entry(position)
            .or_insert_with(|| Assembly {
                next_position: next,
                bytes: vec![0; record_len],
                have: vec![false; record_len.div_ceil(FRAGMENT_UNIT)],
                missing: record_len.div_ceil(FRAGMENT_UNIT),
            });
        if assembly.bytes.len() != record_len {
            self.counters.rejected += 1;
            return;
        }
        assembly.bytes[offset..offset + payload.len()].copy_from_slice(payload);
        for unit in offset / FRAGMENT_UNIT..(offset + payload.len()).div_ceil(FRAGMENT_UNIT) {
            if !assembly.have[unit] {
                assembly.have[unit] = true;
                assembly.missing -= 1;
            }
        }
        let complete = assembly.missing == 0;
        // the fragment's own bytes arrived; what is below them and unseen is a gap
        let start = position + offset as u64;
        let end = start + payload.len() as u64;
        self.raise_high_water(start, now_ns);
        self.arrived(start, end, now_ns);
        if complete && let Some(session) = &mut self.session {
            let assembly = session.fragments.remove(&position).unwrap_or(Assembly {
                next_position: next,
                bytes: Vec::new(),
                have: Vec::new(),
                missing: 0,
            });
            self.handle_records(
                now_ns,
                position,
                assembly.next_position,
                &assembly.bytes,
                sink,
            );
        }
    }

    fn handle_unavailable(
        &mut self,
        now_ns: u64,
        from: u64,
        resume: u64,
        resume_seq: u64,
        sink: &mut impl ReplicaSink,
    ) {
        let Some(session) = &mut self.session else {
            return;
        };
        if from > session.frontier || resume <= session.frontier {
            return;
        }
        // a resume beyond anything the session announced, or more records lost than
        // the skipped bytes could hold: forged or corrupt
        let most_records = (resume - session.frontier) / RECORD_HEADER_LEN;
        if resume > session.high_water
            || session
                .next_seq
                .is_some_and(|expected| resume_seq.saturating_sub(expected) > most_records)
        {
            self.counters.rejected += 1;
            return;
        }
        if let Some(expected) = session.next_seq
            && resume_seq > expected
        {
            tracing::debug!(
                stream_id = self.config.stream_id,
                frontier = session.frontier,
                resume,
                from_seq = expected,
                to_seq = resume_seq,
                "records lost: not served from the frontier on"
            );
            self.events.push_back(ReceiverEvent::Lost {
                from_seq: expected,
                to_seq: resume_seq,
            });
            self.counters.lost_records += resume_seq - expected;
        }
        sink.skip_to(resume, resume_seq);
        session.frontier = resume;
        session.next_seq = Some(resume_seq);
        session.fragments.retain(|&at, _| at >= resume);
        session.gaps.settle_below(resume, now_ns);
        // Buffered frames that now continue the stream.
        let behind: Vec<u64> = session.ahead.range(..=resume).map(|(&k, _)| k).collect();
        let mut resumable = Vec::new();
        for at in behind {
            if let Some((next, bytes)) = session.ahead.remove(&at) {
                session.ahead_bytes -= bytes.len() as u64;
                if next > resume {
                    resumable.push((at, next, bytes));
                }
            }
        }
        for (at, next, bytes) in resumable {
            self.handle_records(now_ns, at, next, &bytes, sink);
        }
    }

    /// After any progress: report the end, note when the frontier last moved.
    fn after_progress(&mut self, now_ns: u64) {
        let Some(session) = &mut self.session else {
            return;
        };
        if let Some((end, _)) = session.end
            && session.frontier >= end
            && !session.ended_reported
        {
            session.ended_reported = true;
            self.events.push_back(ReceiverEvent::Ended {
                position: session.frontier,
            });
            // the sender repeats END until it hears that we saw it
            self.next_status_ns = self.next_status_ns.min(now_ns);
        }
        if session.frontier != session.progress_frontier {
            session.progress_frontier = session.frontier;
            session.progress_ns = now_ns;
        }
    }

    fn random_below(&mut self, bound: u64) -> u64 {
        // xorshift64*: deterministic per seed, enough to spread NAKs.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }

    /// The next frame for the sender (NAKs, STATUS), if any: a NAK for each gap whose
    /// NAK is due — every gap on its own schedule, so a new gap is asked for at once and
    /// a gap whose repair is on its way is not asked for again.
    pub fn poll_transmit(&mut self, now: impl Into<MonoNs>) -> Option<&[u8]> {
        let now_ns = now.into().get();
        let hold_repeats = self.backlog.then_some(self.config.nak_retry_max_ns);
        if let Some(session) = &mut self.session
            && let Some((start, gap)) =
                session
                    .gaps
                    .due(now_ns, hold_repeats, self.config.nak_budget_bytes)
        {
            // a gap inside a record being reassembled is asked for from the record's
            // start: retransmissions start on record boundaries
            let nak_start = session
                .fragments
                .range(..=start)
                .next_back()
                .filter(|(_, assembly)| start < assembly.next_position)
                .map_or(start, |(&at, _)| at);
            let length = (gap.end - nak_start)
                .min(MAX_NAK_BYTES)
                .min(self.config.nak_budget_bytes.max(8));
            let attempt = gap.naks + 1;
            let timeout = self.rtt.timeout_ns(
                self.config.nak_retry_ns,
                self.config.nak_retry_min_ns,
                self.config.nak_retry_max_ns,
            );
            let retry = (timeout << (attempt - 1).min(4)).min(self.config.nak_retry_max_ns);
            session.gaps.nak_sent(
                start,
                nak_start + length,
                now_ns,
                now_ns.saturating_add(retry),
            );
            if gap.naks > 0 {
                self.counters.nak_repeats += 1;
            }
            let flags = if gap.naks > 0 || gap.before_join {
                FLAG_REPEAT
            } else {
                0
            };
            self.counters.naks += 1;
            // at most MAX_NAK_BYTES: fits
            let length = u32::try_from(length).unwrap_or(u32::MAX);
            self.writer
                .nak(flags, self.config.receiver_id, nak_start, length);
            return Some(self.writer.frame());
        }
        let progressed = self.session.as_ref().is_some_and(|s| {
            s.high_water.saturating_sub(self.status_high_water) >= self.config.status_progress_bytes
        });
        if now_ns >= self.next_status_ns || progressed {
            self.next_status_ns = now_ns + self.config.status_interval_ns;
            let (position, high_water) = self
                .session
                .as_ref()
                .map_or((0, 0), |s| (s.frontier, s.high_water));
            self.status_high_water = high_water;
            let mut flags = if self.want_setup || self.session.is_none() {
                FLAG_SETUP_REQUEST
            } else {
                0
            };
            if self.session.as_ref().is_some_and(|s| s.ended_reported) {
                flags |= FLAG_END_SEEN;
            }
            self.writer.status(
                flags,
                &StatusBody {
                    receiver_id: U64::new(self.config.receiver_id),
                    position: U64::new(position),
                    high_water_mark: U64::new(high_water),
                    lost_records: U64::new(self.counters.lost_records),
                },
            );
            return Some(self.writer.frame());
        }
        None
    }

    /// When the receiver next has something to do.
    pub fn poll_timeout(&self) -> Option<MonoNs> {
        self.next_timeout().map(MonoNs)
    }

    fn next_timeout(&self) -> Option<u64> {
        let mut at = self.next_status_ns;
        if let Some(session) = &self.session {
            if let Some(due) = session.gaps.next_due_ns() {
                at = at.min(due);
            }
            if let Some((end, _)) = session.end
                && session.frontier < end
            {
                at = at.min(session.progress_ns + self.config.end_grace_ns);
            }
        }
        Some(at)
    }

    /// Time-driven work that touches the replica: after END, holes the sender has not
    /// repaired within `end_grace_ns` are given up — each reported as an exact `Lost` (the
    /// sequence after a hole is that of the next buffered record, or END's final one) —
    /// so the receiver ends instead of waiting forever. Call it when
    /// [`Self::poll_timeout`] is due (calling it more often is harmless).
    pub fn handle_timeout(&mut self, now: impl Into<MonoNs>, sink: &mut impl ReplicaSink) {
        let now_ns = now.into().get();
        let Some(session) = &self.session else {
            return;
        };
        let Some((end, final_seq)) = session.end else {
            return;
        };
        if session.frontier >= end
            || now_ns.saturating_sub(session.progress_ns) < self.config.end_grace_ns
        {
            return;
        }
        tracing::debug!(
            stream_id = self.config.stream_id,
            frontier = session.frontier,
            end,
            held_back = session.ahead.len(),
            "the stream ended and its holes were not repaired in time: giving them up"
        );
        // Each step jumps the frontier to the next buffered frame (or the end); bounded.
        for _ in 0..=session.ahead.len() {
            let Some(session) = &self.session else {
                return;
            };
            let frontier = session.frontier;
            if frontier >= end {
                break;
            }
            let (resume, resume_seq) = session
                .ahead
                .iter()
                .find(|(at, _)| **at > frontier)
                .map(|(&at, (_, bytes))| {
                    let seq =
                        RecordHeader::read_from_prefix(bytes).map_or(final_seq, |(h, _)| h.seq);
                    (at, seq)
                })
                .unwrap_or((end, final_seq));
            self.handle_unavailable(now_ns, frontier, resume.min(end), resume_seq, sink);
        }
        self.after_progress(now_ns);
    }

    /// The driver says whether many datagrams are waiting that it has not handed to
    /// [`Self::handle_datagram`] yet (its last read filled its batch) or not. While they wait, NAKs are not repeated: a repair arrives behind what
    /// was queued when it was asked for, so a receiver working through a backlog would
    /// otherwise ask again for what is already on its way — and each answer lengthens the
    /// backlog (a NAK storm). First NAKs of new gaps still go out at once. A repeat is
    /// held at most `nak_retry_max_ns`.
    pub fn set_backlog(&mut self, waiting: bool) {
        if self.backlog
            && !waiting
            && let Some(session) = &mut self.session
        {
            session.gaps.recheck();
        }
        self.backlog = waiting;
    }

    /// Smoothed repair round trip (NAK sent → repair processed, ns), 0 until measured.
    pub fn repair_rtt_ns(&self) -> u64 {
        self.rtt.smoothed_ns()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ReceiverEvent> {
        self.events.pop_front()
    }

    /// Highest position known to exist (None before joining): above the position, a gap.
    pub fn high_water(&self) -> Option<u64> {
        self.session.as_ref().map(|s| s.high_water)
    }

    /// The session followed (None before joining).
    pub fn session_id(&self) -> Option<u32> {
        self.session.as_ref().map(|s| s.session_id)
    }

    /// The replica is complete below this position (None before joining).
    pub fn position(&self) -> Option<u64> {
        self.session.as_ref().map(|s| s.frontier)
    }

    /// Counters.
    pub fn counters(&self) -> ReceiverCounters {
        self.counters
    }
}
