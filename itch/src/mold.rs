//! MoldUDP64: the packets that carry ITCH, and the receiving session (sans-IO: it takes
//! packets and `now`, and says what to deliver and what to re-request).
//!
//! A packet is a 20-byte header — session (10 ASCII bytes), the sequence number of its
//! first message (u64 BE), a message count (u16 BE) — then that many message blocks, each
//! a u16 BE length and the message. A count of 0 is a heartbeat (the sequence is the
//! next one to come); 0xFFFF ends the session. A re-request sent to the venue's request
//! server is a header alone: session, first sequence wanted, how many.
//!
//! [`Session`] delivers messages once and in order. A packet ahead of the next expected
//! sequence opens a gap: it is kept (up to a bound), the missing range is re-requested,
//! and the request is repeated after a timeout; when the retries run out the range is
//! reported lost with its exact size and delivery goes on after it. Packets of another
//! session, duplicates and malformed packets are counted and dropped.

use std::collections::BTreeMap;

use mdi_protocol::time::MonoNs;

/// Header length.
pub const HEADER_LEN: usize = 20;
/// The message count that ends a session.
pub const END_OF_SESSION: u16 = 0xFFFF;

/// A session name: 10 ASCII bytes, space-padded.
pub type SessionId = [u8; 10];

/// A session id from text (space-padded, cut at 10 bytes).
pub fn session_id(name: &str) -> SessionId {
    let mut id = [b' '; 10];
    for (o, b) in id.iter_mut().zip(name.bytes()) {
        *o = b;
    }
    id
}

/// Why a packet is not MoldUDP64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoldError {
    /// Shorter than the header.
    #[error("MoldUDP64 packet of {0} bytes is shorter than its 20-byte header")]
    Short(usize),
    /// The message blocks do not match the count.
    #[error("MoldUDP64 packet says {count} messages but its blocks end after {found}")]
    Truncated {
        /// Messages the header announces.
        count: u16,
        /// Whole blocks found.
        found: u16,
    },
    /// The sequence numbers would run past 2^64.
    #[error("MoldUDP64 packet's sequence {0} overflows with its message count")]
    SequenceOverflow(u64),
    /// Bytes after the last block.
    #[error("MoldUDP64 packet has {0} bytes after its last message")]
    Trailing(usize),
}

/// A parsed packet: header fields and its message bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Session.
    pub session: SessionId,
    /// Sequence number of the first message (of the next one, for a heartbeat or end).
    pub sequence: u64,
    /// Message count; 0 heartbeat, [`END_OF_SESSION`] end.
    pub count: u16,
    blocks: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Parses and checks a packet (every block within bounds, none missing or extra).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, MoldError> {
        if bytes.len() < HEADER_LEN {
            return Err(MoldError::Short(bytes.len()));
        }
        let mut session = [0; 10];
        session.copy_from_slice(&bytes[..10]);
        let sequence = u64::from_be_bytes(bytes[10..18].try_into().unwrap_or([0; 8]));
        let count = u16::from_be_bytes([bytes[18], bytes[19]]);
        let packet = Self {
            session,
            sequence,
            count,
            blocks: &bytes[HEADER_LEN..],
        };
        let carried = if count == END_OF_SESSION { 0 } else { count };
        if sequence.checked_add(u64::from(carried) + 1).is_none() {
            return Err(MoldError::SequenceOverflow(sequence));
        }
        let mut at = 0usize;
        for found in 0..carried {
            let rest = &packet.blocks[at..];
            if rest.len() < 2 {
                return Err(MoldError::Truncated { count, found });
            }
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            if rest.len() < 2 + len {
                return Err(MoldError::Truncated { count, found });
            }
            at += 2 + len;
        }
        if at != packet.blocks.len() {
            return Err(MoldError::Trailing(packet.blocks.len() - at));
        }
        Ok(packet)
    }

    /// The messages, in order (their sequence numbers are `sequence`, `sequence + 1`, …).
    pub fn messages(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut rest = self.blocks;
        std::iter::from_fn(move || {
            if rest.len() < 2 {
                return None;
            }
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let message = rest.get(2..2 + len)?;
            rest = &rest[2 + len..];
            Some(message)
        })
    }

    /// Messages carried (0 for heartbeats and end of session).
    pub fn message_count(&self) -> u64 {
        if self.count == END_OF_SESSION {
            0
        } else {
            u64::from(self.count)
        }
    }
}

/// Appends a packet of `messages` starting at `sequence` to `out`.
pub fn write_packet(out: &mut Vec<u8>, session: &SessionId, sequence: u64, messages: &[&[u8]]) {
    out.extend_from_slice(session);
    out.extend_from_slice(&sequence.to_be_bytes());
    let count = u16::try_from(messages.len()).unwrap_or(END_OF_SESSION - 1);
    out.extend_from_slice(&count.to_be_bytes());
    for m in messages.iter().take(usize::from(count)) {
        let len = u16::try_from(m.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&m[..usize::from(len)]);
    }
}

/// A header-only packet: heartbeat (`count` 0), end of session ([`END_OF_SESSION`]), or a
/// re-request for `count` messages from `sequence`.
pub fn header_only(session: &SessionId, sequence: u64, count: u16) -> [u8; HEADER_LEN] {
    let mut out = [0; HEADER_LEN];
    out[..10].copy_from_slice(session);
    out[10..18].copy_from_slice(&sequence.to_be_bytes());
    out[18..].copy_from_slice(&count.to_be_bytes());
    out
}

/// A re-request as the request server receives it: a header alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The session.
    pub session: SessionId,
    /// First sequence wanted.
    pub sequence: u64,
    /// How many.
    pub count: u16,
}

impl Request {
    /// Parses a request (exactly [`HEADER_LEN`] bytes).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let header: &[u8; HEADER_LEN] = bytes.try_into().ok()?;
        let mut session = [0; 10];
        session.copy_from_slice(&header[..10]);
        let mut sequence = [0; 8];
        sequence.copy_from_slice(&header[10..18]);
        Some(Self {
            session,
            sequence: u64::from_be_bytes(sequence),
            count: u16::from_be_bytes([header[18], header[19]]),
        })
    }
}

/// The venue's side of re-requests (sans-IO): keeps the session's messages and answers a
/// request (a header-only packet: session, first sequence, count) with packets that carry
/// them, each at most `max_packet` bytes. What is unknown is not answered; a request for
/// another session, or one that does not parse, gets nothing.
#[derive(Debug)]
pub struct RequestServer {
    session: SessionId,
    /// Message `n` (sequence n + 1).
    messages: Vec<Vec<u8>>,
    max_packet: usize,
    /// Requests answered, and ignored.
    answered: u64,
    ignored: u64,
}

impl RequestServer {
    /// A server for `session` whose messages start at sequence 1.
    pub fn new(session: SessionId, max_packet: usize) -> Self {
        Self {
            session,
            messages: Vec::new(),
            max_packet: max_packet.max(HEADER_LEN + 2 + 64),
            answered: 0,
            ignored: 0,
        }
    }

    /// Keeps the next message (its sequence: the count kept so far, plus one).
    pub fn push(&mut self, message: &[u8]) {
        self.messages.push(message.to_vec());
    }

    /// Messages kept: the highest sequence a request can get.
    pub fn len(&self) -> u64 {
        self.messages.len() as u64
    }

    /// True before the first message.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// (answered, ignored) requests.
    pub fn counters(&self) -> (u64, u64) {
        (self.answered, self.ignored)
    }

    /// Answers `request`: calls `send` with each packet.
    pub fn answer(&mut self, request: &[u8], mut send: impl FnMut(&[u8])) {
        let Some(asked) = Request::parse(request) else {
            self.ignored += 1;
            return;
        };
        let first = usize::try_from(asked.sequence).unwrap_or(usize::MAX);
        if asked.session != self.session
            || asked.count == END_OF_SESSION
            || first == 0
            || first > self.messages.len()
        {
            self.ignored += 1;
            return;
        }
        self.answered += 1;
        let end = (first - 1)
            .saturating_add(usize::from(asked.count))
            .min(self.messages.len());
        let mut packet = Vec::with_capacity(self.max_packet);
        let mut at = first - 1;
        while at < end {
            let mut size = HEADER_LEN;
            let mut stop = at;
            while stop < end
                && (stop == at || size + 2 + self.messages[stop].len() <= self.max_packet)
            {
                size += 2 + self.messages[stop].len();
                stop += 1;
            }
            let refs: Vec<&[u8]> = self.messages[at..stop].iter().map(Vec::as_slice).collect();
            packet.clear();
            write_packet(&mut packet, &self.session, at as u64 + 1, &refs);
            send(&packet);
            at = stop;
        }
    }
}

/// How a session receives.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Only this session; `None`: the first one seen.
    pub session: Option<SessionId>,
    /// The first sequence wanted; `None`: wherever the first packet starts (a late joiner
    /// does not re-request the day).
    pub start: Option<u64>,
    /// How long a re-request may go unanswered before it is sent again (ns of the
    /// session's monotonic clock).
    pub request_timeout_ns: u64,
    /// Re-requests per gap before the gap is declared lost.
    pub max_retries: u32,
    /// Messages asked for in one re-request.
    pub max_request_count: u16,
    /// Packets kept while a gap is open (beyond: dropped, and re-requested later).
    pub max_buffered_packets: usize,
    /// Bytes of those packets kept at most (a bound in memory, whatever the packets'
    /// sizes).
    pub max_buffered_bytes: usize,
    /// A packet starting more than this many sequences beyond the highest known is held
    /// aside, not trusted, until a second packet confirms the jump (starts within this
    /// many of where the first ends): one forged or corrupt packet far ahead would
    /// otherwise open a gap of its size — a re-request per real packet, a huge loss.
    pub max_jump: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            session: None,
            start: None,
            request_timeout_ns: 50_000_000,
            max_retries: 5,
            max_request_count: 1_000,
            max_buffered_packets: 100_000,
            max_buffered_bytes: 64 << 20,
            max_jump: 100_000,
        }
    }
}

/// What the session says to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output<'a> {
    /// A packet whose messages are about to be delivered (those from the next in order,
    /// each then as a [`Output::Message`]): a consumer may start on them early — the ITCH
    /// feed prefetches the orders they are about.
    Delivering(Packet<'a>),
    /// The next message, in order.
    Message {
        /// Its sequence number.
        seq: u64,
        /// Its bytes.
        message: &'a [u8],
    },
    /// Send this re-request (a header-only packet) to the request server.
    Request {
        /// The session.
        session: SessionId,
        /// First sequence wanted.
        seq: u64,
        /// How many.
        count: u16,
    },
    /// A gap opened: messages from `from_seq` are being re-requested.
    GapOpened {
        /// The first missing sequence.
        from_seq: u64,
        /// How many are missing, as far as is known now.
        count: u64,
    },
    /// The gap that was open is repaired.
    GapRepaired,
    /// These messages will never come (retries exhausted): exactly `count` from `from_seq`.
    Lost {
        /// First lost sequence.
        from_seq: u64,
        /// How many.
        count: u64,
    },
    /// The session ended, every message delivered.
    EndOfSession,
}

/// What a session saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Packets taken.
    pub packets: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Heartbeats.
    pub heartbeats: u64,
    /// Packets of another session (dropped).
    pub wrong_session: u64,
    /// Packets that did not parse (dropped).
    pub malformed: u64,
    /// Packets wholly delivered before (dropped).
    pub duplicates: u64,
    /// Gaps opened.
    pub gaps: u64,
    /// Re-requests sent.
    pub requests: u64,
    /// Messages lost for good.
    pub lost: u64,
    /// Packets dropped because the gap buffer was full.
    pub buffer_full: u64,
    /// Packets far ahead of the highest known sequence, held until a second packet
    /// confirmed the jump (forged, corrupt, or the first after a long outage).
    pub implausible: u64,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    sent_at: MonoNs,
    retries: u32,
    /// `next` when the request went out: progress past it asks for the rest at once.
    from: u64,
}

/// The receiving side of one MoldUDP64 session; see the module docs.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    session: Option<SessionId>,
    next: Option<u64>,
    /// One past the highest sequence known to exist.
    known_end: u64,
    /// Packets ahead of `next`, by first sequence.
    buffered: BTreeMap<u64, Vec<u8>>,
    /// Their bytes.
    buffered_bytes: usize,
    pending: Option<Pending>,
    /// The end-of-session packet's sequence, once seen.
    end_at: Option<u64>,
    ended: bool,
    /// A packet far ahead, held until another confirms the jump: (where it ends, bytes).
    suspect: Option<(u64, Vec<u8>)>,
    counters: SessionCounters,
}

impl Session {
    /// A session receiving as `config` says.
    pub fn new(config: SessionConfig) -> Self {
        Self {
            session: config.session,
            next: config.start,
            known_end: config.start.unwrap_or(0),
            config,
            buffered: BTreeMap::new(),
            buffered_bytes: 0,
            pending: None,
            end_at: None,
            ended: false,
            suspect: None,
            counters: SessionCounters::default(),
        }
    }

    /// What was seen so far.
    pub fn counters(&self) -> SessionCounters {
        self.counters
    }

    /// The next sequence to deliver (`None` before the first packet).
    pub fn next_seq(&self) -> Option<u64> {
        self.next
    }

    /// The session's id (`None` before the first packet, unless configured).
    pub fn session(&self) -> Option<SessionId> {
        self.session
    }

    /// True once the end of session was reached with every message delivered.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// True while a gap is open.
    pub fn in_gap(&self) -> bool {
        self.pending.is_some()
    }

    /// Takes one packet, received at `now` (the session's monotonic clock: timers must
    /// not move with the wall clock).
    pub fn on_packet(&mut self, now: MonoNs, bytes: &[u8], out: &mut impl FnMut(Output<'_>)) {
        let packet = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(_) => {
                self.counters.malformed += 1;
                return;
            }
        };
        match self.session {
            Some(s) if s != packet.session => {
                self.counters.wrong_session += 1;
                return;
            }
            Some(_) => {}
            None => self.session = Some(packet.session),
        }
        let end = packet.sequence + packet.message_count();
        if let Some(next) = self.next {
            let horizon = self
                .known_end
                .max(next)
                .saturating_add(self.config.max_jump);
            if packet.sequence > horizon {
                match self.suspect.take() {
                    Some((suspect_end, held))
                        if packet.sequence >= suspect_end.saturating_sub(self.config.max_jump)
                            && packet.sequence
                                <= suspect_end.saturating_add(self.config.max_jump) =>
                    {
                        // two packets agree: the stream did jump; take the first, then this
                        self.known_end = self.known_end.max(suspect_end);
                        self.on_packet(now, &held, out);
                    }
                    Some(_) | None => {
                        // hold it; a previous suspect nobody confirmed is dropped, counted
                        self.counters.implausible += 1;
                        self.suspect = Some((end, bytes.to_vec()));
                        return;
                    }
                }
            }
        }
        self.counters.packets += 1;
        let next = *self.next.get_or_insert(packet.sequence);
        self.known_end = self.known_end.max(end);
        match packet.count {
            0 => self.counters.heartbeats += 1,
            END_OF_SESSION => self.end_at = Some(packet.sequence),
            _ => {}
        }
        if packet.message_count() > 0 {
            if end <= next {
                self.counters.duplicates += 1;
            } else if packet.sequence <= next {
                self.deliver(&packet, out);
            } else if self.buffered.len() < self.config.max_buffered_packets
                && self.buffered_bytes + bytes.len() <= self.config.max_buffered_bytes
            {
                if let Some(old) = self.buffered.insert(packet.sequence, bytes.to_vec()) {
                    self.buffered_bytes -= old.len();
                }
                self.buffered_bytes += bytes.len();
            } else {
                self.counters.buffer_full += 1;
            }
        }
        self.drain(out);
        self.after(now, out);
    }

    /// Re-sends a re-request that timed out, or gives a gap up as lost after the retries.
    pub fn on_timer(&mut self, now: MonoNs, out: &mut impl FnMut(Output<'_>)) {
        let Some(pending) = self.pending else {
            return;
        };
        if now.since(pending.sent_at) < self.config.request_timeout_ns {
            return;
        }
        if pending.retries < self.config.max_retries {
            self.pending = Some(Pending {
                sent_at: now,
                retries: pending.retries + 1,
                from: self.next.unwrap_or(0),
            });
            self.request(out);
            return;
        }
        // give the gap up: exactly what is missing up to the next thing held or known
        let Some(next) = self.next else { return };
        let until = self.gap_end();
        if until > next {
            let count = until - next;
            self.counters.lost += count;
            out(Output::Lost {
                from_seq: next,
                count,
            });
            self.next = Some(until);
        }
        self.pending = None;
        self.drain(out);
        self.after(now, out);
    }

    /// The input has ended (a replay): every gap still open is reported lost now, with
    /// its exact size, and what was held after it delivered.
    pub fn finish(&mut self, out: &mut impl FnMut(Output<'_>)) {
        while let Some(next) = self.next {
            let until = self.gap_end();
            if until <= next {
                break;
            }
            self.counters.lost += until - next;
            out(Output::Lost {
                from_seq: next,
                count: until - next,
            });
            self.next = Some(until);
            self.drain(out);
        }
        self.pending = None;
        if !self.ended && self.end_at.is_some_and(|end| self.next >= Some(end)) {
            self.ended = true;
            out(Output::EndOfSession);
        }
    }

    /// Where the open gap ends: the first packet held, else the highest sequence known.
    fn gap_end(&self) -> u64 {
        self.buffered
            .first_key_value()
            .map_or(self.known_end, |(&seq, _)| seq)
    }

    fn deliver(&mut self, packet: &Packet<'_>, out: &mut impl FnMut(Output<'_>)) {
        let Some(mut next) = self.next else { return };
        out(Output::Delivering(*packet));
        for (seq, message) in (packet.sequence..).zip(packet.messages()) {
            if seq == next {
                out(Output::Message { seq, message });
                next += 1;
                self.counters.messages += 1;
            }
        }
        self.next = Some(next);
    }

    /// Delivers held packets that are now in order.
    fn drain(&mut self, out: &mut impl FnMut(Output<'_>)) {
        while let Some(entry) = self.buffered.first_entry() {
            let Some(next) = self.next else { return };
            if *entry.key() > next {
                return;
            }
            let bytes = entry.remove();
            self.buffered_bytes -= bytes.len();
            if let Ok(packet) = Packet::parse(&bytes)
                && packet.sequence + packet.message_count() > next
            {
                self.deliver(&packet, out);
            }
        }
    }

    /// After a packet or a timer: open, continue or close the gap; report the end.
    fn after(&mut self, now: MonoNs, out: &mut impl FnMut(Output<'_>)) {
        let Some(next) = self.next else { return };
        let gap = self.gap_end() > next;
        match (gap, self.pending) {
            (true, None) => {
                self.counters.gaps += 1;
                out(Output::GapOpened {
                    from_seq: next,
                    count: self.gap_end() - next,
                });
                self.pending = Some(Pending {
                    sent_at: now,
                    retries: 0,
                    from: next,
                });
                self.request(out);
            }
            // part of the gap came back (requests are bounded): ask for the rest now
            (true, Some(pending)) if next > pending.from => {
                self.pending = Some(Pending {
                    sent_at: now,
                    retries: 0,
                    from: next,
                });
                self.request(out);
            }
            (false, Some(_)) => {
                self.pending = None;
                out(Output::GapRepaired);
            }
            _ => {}
        }
        if !self.ended && !gap && self.end_at.is_some_and(|end| next >= end) {
            self.ended = true;
            out(Output::EndOfSession);
        }
    }

    fn request(&mut self, out: &mut impl FnMut(Output<'_>)) {
        let (Some(session), Some(next)) = (self.session, self.next) else {
            return;
        };
        let missing = self.gap_end().saturating_sub(next);
        let count = u16::try_from(missing.min(u64::from(self.config.max_request_count)))
            .unwrap_or(self.config.max_request_count);
        if count == 0 {
            return;
        }
        self.counters.requests += 1;
        out(Output::Request {
            session,
            seq: next,
            count,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: &str = "20261121A";

    fn packet(seq: u64, messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        write_packet(&mut out, &session_id(S), seq, messages);
        out
    }

    #[derive(Debug, Default)]
    struct Seen {
        messages: Vec<(u64, Vec<u8>)>,
        /// Packets announced: (sequence, messages delivered before the announcement).
        delivering: Vec<(u64, usize)>,
        requests: Vec<(u64, u16)>,
        lost: Vec<(u64, u64)>,
        ended: bool,
        repaired: u32,
    }

    impl Seen {
        fn take(&mut self) -> impl FnMut(Output<'_>) + '_ {
            |o| match o {
                Output::Delivering(p) => self.delivering.push((p.sequence, self.messages.len())),
                Output::Message { seq, message } => self.messages.push((seq, message.to_vec())),
                Output::Request { seq, count, .. } => self.requests.push((seq, count)),
                Output::Lost { from_seq, count } => self.lost.push((from_seq, count)),
                Output::EndOfSession => self.ended = true,
                Output::GapRepaired => self.repaired += 1,
                Output::GapOpened { .. } => {}
            }
        }
    }

    #[test]
    fn one_packet_far_ahead_opens_no_gap_until_a_second_confirms_the_jump() {
        let mut session = Session::new(SessionConfig::default());
        let mut seen = Seen::default();
        let now = MonoNs(0);
        for seq in 1..=10u64 {
            session.on_packet(now, &packet(seq, &[b"m"]), &mut seen.take());
        }
        // forged (or corrupt): a billion ahead
        session.on_packet(now, &packet(1_000_000_000, &[b"x"]), &mut seen.take());
        for seq in 11..=20u64 {
            session.on_packet(now, &packet(seq, &[b"m"]), &mut seen.take());
        }
        session.on_timer(MonoNs(10_000_000_000), &mut seen.take());
        assert!(
            seen.requests.is_empty(),
            "re-requested: {:?}",
            seen.requests
        );
        assert!(seen.lost.is_empty(), "lost: {:?}", seen.lost);
        assert_eq!(seen.messages.len(), 20);
        assert_eq!(session.counters().implausible, 1);
        // a real jump: two packets agree, the gap opens and is re-requested
        session.on_packet(now, &packet(500_000, &[b"a"]), &mut seen.take());
        assert!(seen.requests.is_empty());
        session.on_packet(now, &packet(500_001, &[b"b"]), &mut seen.take());
        assert_eq!(seen.requests.first().map(|r| r.0), Some(21));
    }

    #[test]
    fn packets_parse_and_refuse_bad_framing() {
        let p = packet(7, &[b"abc", b"", b"de"]);
        let parsed = Packet::parse(&p).unwrap();
        assert_eq!((parsed.sequence, parsed.count), (7, 3));
        assert_eq!(
            parsed.messages().collect::<Vec<_>>(),
            [&b"abc"[..], b"", b"de"]
        );
        assert_eq!(Packet::parse(&p[..5]), Err(MoldError::Short(5)));
        assert_eq!(
            Packet::parse(&p[..p.len() - 1]),
            Err(MoldError::Truncated { count: 3, found: 2 })
        );
        let mut extra = p.clone();
        extra.push(0);
        assert_eq!(Packet::parse(&extra), Err(MoldError::Trailing(1)));
        let late = packet(u64::MAX - 1, &[b"a", b"b"]);
        assert_eq!(
            Packet::parse(&late),
            Err(MoldError::SequenceOverflow(u64::MAX - 1))
        );
        let hb = header_only(&session_id(S), 10, 0);
        assert_eq!(Packet::parse(&hb).unwrap().message_count(), 0);
        let end = header_only(&session_id(S), 10, END_OF_SESSION);
        assert_eq!(Packet::parse(&end).unwrap().count, END_OF_SESSION);
    }

    #[test]
    fn a_gap_is_re_requested_repaired_and_delivered_in_order() {
        let mut session = Session::new(SessionConfig {
            start: Some(1),
            ..SessionConfig::default()
        });
        let mut seen = Seen::default();
        session.on_packet(MonoNs(0), &packet(1, &[b"1", b"2"]), &mut seen.take());
        session.on_packet(MonoNs(1), &packet(5, &[b"5"]), &mut seen.take());
        assert_eq!(seen.requests, [(3, 2)]);
        assert!(session.in_gap());
        // another session's packet and a duplicate change nothing
        let mut other = Vec::new();
        write_packet(&mut other, &session_id("OTHER"), 3, &[b"x", b"y"]);
        session.on_packet(MonoNs(2), &other, &mut seen.take());
        session.on_packet(MonoNs(2), &packet(1, &[b"1"]), &mut seen.take());
        // the retransmission
        session.on_packet(MonoNs(3), &packet(3, &[b"3", b"4"]), &mut seen.take());
        let order: Vec<u64> = seen.messages.iter().map(|m| m.0).collect();
        assert_eq!(order, [1, 2, 3, 4, 5]);
        // each packet delivered (not the duplicate) announced before its messages, the
        // held one too
        assert_eq!(seen.delivering, [(1, 0), (3, 2), (5, 4)]);
        assert_eq!(seen.repaired, 1);
        let c = session.counters();
        assert_eq!(
            (c.wrong_session, c.duplicates, c.gaps, c.requests),
            (1, 1, 1, 1)
        );
        session.on_packet(
            MonoNs(4),
            &header_only(&session_id(S), 6, END_OF_SESSION),
            &mut seen.take(),
        );
        assert!(seen.ended && session.ended());
    }

    #[test]
    fn an_unanswered_gap_is_retried_then_reported_lost_exactly() {
        let config = SessionConfig {
            start: Some(1),
            request_timeout_ns: 10,
            max_retries: 2,
            ..SessionConfig::default()
        };
        let mut session = Session::new(config);
        let mut seen = Seen::default();
        session.on_packet(MonoNs(0), &packet(1, &[b"1"]), &mut seen.take());
        // a heartbeat says 2..=9 exist
        session.on_packet(
            MonoNs(0),
            &header_only(&session_id(S), 10, 0),
            &mut seen.take(),
        );
        session.on_packet(MonoNs(0), &packet(10, &[b"10"]), &mut seen.take());
        for now in [5, 10, 15, 20, 30, 40] {
            session.on_timer(MonoNs(now), &mut seen.take());
        }
        assert_eq!(seen.requests, [(2, 8), (2, 8), (2, 8)]);
        assert_eq!(seen.lost, [(2, 8)]);
        assert_eq!(
            seen.messages.iter().map(|m| m.0).collect::<Vec<_>>(),
            [1, 10]
        );
        assert_eq!(session.counters().lost, 8);
        assert!(!session.in_gap());
    }

    #[test]
    fn a_lost_first_packet_is_re_requested_from_the_start_wanted() {
        // the first packet received starts at 3: with a start, 1..=2 are asked for
        let mut session = Session::new(SessionConfig {
            start: Some(1),
            ..SessionConfig::default()
        });
        let mut seen = Seen::default();
        session.on_packet(MonoNs(0), &packet(3, &[b"3"]), &mut seen.take());
        assert!(seen.messages.is_empty());
        assert_eq!(seen.requests, [(1, 2)]);
        session.on_packet(MonoNs(1), &packet(1, &[b"1", b"2"]), &mut seen.take());
        assert_eq!(
            seen.messages.iter().map(|m| m.0).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        // without one, the feed is joined where that packet starts (a late join)
        let mut late = Session::new(SessionConfig::default());
        let mut seen = Seen::default();
        late.on_packet(MonoNs(0), &packet(3, &[b"3"]), &mut seen.take());
        assert!(seen.requests.is_empty());
        assert_eq!(seen.messages.iter().map(|m| m.0).collect::<Vec<_>>(), [3]);
    }

    /// While a gap is open, packets ahead of it are held up to a bound in bytes (not
    /// only in packets): beyond it they are counted and dropped, the held ones delivered
    /// once the gap closes, and the bytes held go back to zero.
    #[test]
    fn packets_held_behind_a_gap_are_bounded_in_bytes() {
        let big = vec![b'x'; 1_000];
        let mut session = Session::new(SessionConfig {
            start: Some(1),
            max_buffered_bytes: 3_500,
            ..SessionConfig::default()
        });
        let mut seen = Seen::default();
        // 1 is missing; 2..=6 arrive, ~1 KB each: three fit in 3 500 bytes
        for seq in 2..=6u64 {
            session.on_packet(MonoNs(0), &packet(seq, &[&big]), &mut seen.take());
        }
        assert_eq!(session.counters().buffer_full, 2);
        assert!(session.buffered_bytes <= 3_500);
        // the gap is repaired: 1, then the three held (5 and 6 open the next gap)
        session.on_packet(MonoNs(1), &packet(1, &[b"1"]), &mut seen.take());
        assert_eq!(
            seen.messages.iter().map(|m| m.0).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(session.buffered_bytes, 0);
    }

    #[test]
    fn finishing_reports_every_open_gap_exactly() {
        let mut session = Session::new(SessionConfig {
            start: Some(1),
            ..SessionConfig::default()
        });
        let mut seen = Seen::default();
        for p in [
            packet(1, &[b"1"]),
            packet(3, &[b"3"]),
            packet(6, &[b"6", b"7"]),
        ] {
            session.on_packet(MonoNs(0), &p, &mut seen.take());
        }
        session.on_packet(
            MonoNs(0),
            &header_only(&session_id(S), 10, END_OF_SESSION),
            &mut seen.take(),
        );
        session.finish(&mut seen.take());
        assert_eq!(seen.lost, [(2, 1), (4, 2), (8, 2)]);
        assert_eq!(
            seen.messages.iter().map(|m| m.0).collect::<Vec<_>>(),
            [1, 3, 6, 7]
        );
        assert!(seen.ended);
        assert_eq!(session.counters().lost, 5);
    }

    #[test]
    fn the_request_server_answers_what_it_has_in_bounded_packets() {
        let mut server = RequestServer::new(session_id(S), 100);
        for i in 0..50u8 {
            server.push(&[i; 20]);
        }
        let mut got = Vec::new();
        server.answer(&header_only(&session_id(S), 45, 10), |p| {
            assert!(p.len() <= 100);
            let parsed = Packet::parse(p).unwrap();
            got.extend(
                parsed
                    .messages()
                    .zip(parsed.sequence..)
                    .map(|(m, seq)| (seq, m[0])),
            );
        });
        // 45..=50 exist (6 of the 10 asked for); message n is [n - 1; 20]
        assert_eq!(
            got,
            (45..=50).map(|s| (s, (s - 1) as u8)).collect::<Vec<_>>()
        );
        let mut sent = 0;
        for request in [
            header_only(&session_id("OTHER"), 1, 5),
            header_only(&session_id(S), 0, 5),
            header_only(&session_id(S), 51, 5),
            header_only(&session_id(S), 1, END_OF_SESSION),
        ] {
            server.answer(&request, |_| sent += 1);
        }
        server.answer(b"junk", |_| sent += 1);
        assert_eq!(sent, 0);
        assert_eq!(server.counters(), (1, 5));
    }

    proptest! {
        /// Any order, any duplication, any loss of the packets of a stream; with the lost
        /// ones answered by re-requests, the messages come out once each, in order.
        #[test]
        fn any_arrival_order_delivers_each_message_once_in_order(
            sizes in proptest::collection::vec(1usize..5, 1..40),
            order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..80),
            drop in proptest::collection::vec(any::<bool>(), 40),
        ) {
            let mut packets = Vec::new();
            let mut seq = 1u64;
            for size in &sizes {
                let messages: Vec<Vec<u8>> = (0..*size as u64).map(|i| (seq + i).to_be_bytes().to_vec()).collect();
                let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
                packets.push((seq, packet(seq, &refs)));
                seq += *size as u64;
            }
            let total = seq - 1;
            let mut session = Session::new(SessionConfig { start: Some(1), max_request_count: 3, ..SessionConfig::default() });
            let mut seen = Seen::default();
            // arrivals: some packets in a shuffled order (repeats allowed), some dropped
            for (i, pick) in order.iter().enumerate() {
                let (_, p) = &packets[pick.index(packets.len())];
                if !drop[i % drop.len()] {
                    session.on_packet(MonoNs(i as u64), p, &mut seen.take());
                }
            }
            for (_, p) in &packets {
                if !drop[0] { session.on_packet(MonoNs(100), p, &mut seen.take()); }
            }
            // the request server answers every request until nothing is missing
            let mut server = RequestServer::new(session_id(S), 0);
            for s in 1..=total {
                server.push(&s.to_be_bytes());
            }
            session.on_packet(MonoNs(200), &header_only(&session_id(S), total + 1, 0), &mut seen.take());
            for round in 0..1_000 {
                let Some(&(from, count)) = seen.requests.last() else { break };
                seen.requests.clear();
                let mut answers = Vec::new();
                server.answer(&header_only(&session_id(S), from, count), |p| answers.push(p.to_vec()));
                prop_assert!(!answers.is_empty());
                for answer in answers {
                    session.on_packet(MonoNs(300 + round), &answer, &mut seen.take());
                }
            }
            let delivered: Vec<u64> = seen.messages.iter().map(|(s, _)| *s).collect();
            prop_assert_eq!(delivered, (1..=total).collect::<Vec<_>>());
            for (s, m) in &seen.messages {
                prop_assert_eq!(m.as_slice(), &s.to_be_bytes()[..]);
            }
            prop_assert!(seen.lost.is_empty());
        }

        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = Packet::parse(&bytes) {
                prop_assert!(p.messages().count() as u64 <= p.message_count());
            }
            let mut session = Session::new(SessionConfig::default());
            session.on_packet(MonoNs(0), &bytes, &mut |_| {});
        }
    }
}
