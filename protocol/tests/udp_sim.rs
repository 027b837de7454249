//! Deterministic simulation of the reliable-UDP sender and receivers, quinn style: real
//! rings on both ends, a virtual clock that jumps to the next wake-up, and a seeded
//! network that loses, delays, reorders and duplicates datagrams. Every scenario ends
//! with each replica equal to the source — same positions, sequences and bytes — or with
//! an exact loss report.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{
    ReadEvent, ReplicaWriter, RingOptions, RingReader, RingWriter, ShmDir, StartAt,
};
use mdi_protocol::udp::frame::{Frame, FrameWriter};
use mdi_protocol::udp::{Receiver, ReceiverConfig, ReceiverEvent, Sender, SenderConfig};

const MS: u64 = 1_000_000;

/// Seeds `base..base + n`, with `n` from `MDI_SIM_SEEDS` (default `default`) for longer
/// explorations.
fn seeds(base: u64, default: u64) -> std::ops::Range<u64> {
    let n = std::env::var("MDI_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    base..base + n
}
const US: u64 = 1_000;

/// splitmix64: the simulation's only source of randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// One direction of one link.
#[derive(Debug, Clone, Copy)]
struct Link {
    latency: u64,
    /// Extra random delay up to this (reorders datagrams).
    jitter: u64,
    loss: f64,
    duplicate: f64,
    /// Probability that a loss starts a burst of this many more losses.
    burst: (f64, u32),
}

impl Link {
    fn clean() -> Self {
        Self {
            latency: 20 * US,
            jitter: 0,
            loss: 0.0,
            duplicate: 0.0,
            burst: (0.0, 0),
        }
    }

    fn lossy(loss: f64) -> Self {
        Self {
            loss,
            ..Self::clean()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum To {
    Sender,
    Receiver(usize),
}

/// A datagram on its way: (arrival time, send order, destination, bytes).
type InFlight = (u64, u64, To, Vec<u8>);

/// A record as read back: (position, seq, kind, body).
type Seen = (u64, u64, u16, Vec<u8>);

struct Network {
    rng: Rng,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    burst_left: Vec<u32>,
    /// Receivers whose downlink drops everything until this time.
    outage_until: Vec<u64>,
    /// Per receiver: when it has processed everything queued for it (see
    /// `Scenario::service`).
    busy_until: Vec<u64>,
    service: u64,
    /// Per receiver: when each datagram queued for it (not handled yet) reached its
    /// host, in order — the receiver has a backlog while the first is in the past.
    queued: Vec<std::collections::VecDeque<u64>>,
    /// Datagrams a receiver's queue holds at most (its socket buffer); more are lost.
    queue_limit: usize,
    /// Per receiver: stream bytes of the DATA frames lost on its way to it.
    lost_data: Vec<Vec<(u64, u64)>>,
}

impl Network {
    fn send(&mut self, now: u64, to: To, link: Link, bytes: &[u8], lane: usize) {
        if let To::Receiver(i) = to
            && now < self.outage_until[i]
        {
            return;
        }
        if self.burst_left[lane] > 0 {
            self.burst_left[lane] -= 1;
            if let To::Receiver(i) = to {
                self.lost_data[i].extend(data_range(bytes));
            }
            return;
        }
        if self.rng.chance(link.loss) {
            if self.rng.chance(link.burst.0) {
                self.burst_left[lane] = link.burst.1;
            }
            if let To::Receiver(i) = to {
                self.lost_data[i].extend(data_range(bytes));
            }
            return;
        }
        let copies = if self.rng.chance(link.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = now + link.latency + self.rng.below(link.jitter + 1);
            if let To::Receiver(i) = to
                && self.service > 0
            {
                if self.queued[i].len() >= self.queue_limit {
                    // the socket buffer is full
                    self.lost_data[i].extend(data_range(bytes));
                    continue;
                }
                // one queue per receiver, served one datagram per `service` ns
                let wire = at;
                at = at.max(self.busy_until[i] + self.service);
                self.busy_until[i] = at;
                self.queued[i].push_back(wire);
            }
            self.order += 1;
            self.in_flight
                .push(Reverse((at, self.order, to, bytes.to_vec())));
        }
    }

    fn next_arrival(&self) -> Option<u64> {
        self.in_flight.peek().map(|Reverse((at, ..))| *at)
    }
}

struct Scenario {
    seed: u64,
    receivers: usize,
    multicast: bool,
    down: Link,
    up: Link,
    records: u64,
    /// Virtual time between records.
    interval: u64,
    capacity: u64,
    /// Receiver i joins after this many records.
    join_after: Vec<u64>,
    /// (receiver, from record, to record): its downlink is dead meanwhile.
    outage: Option<(usize, u64, u64)>,
    /// Restart the publisher (writer and sender) after this many records.
    restart_after: Option<u64>,
    /// Every n-th record is this large (fragmented), if set.
    big_every: Option<(u64, usize)>,
    /// Throw forged datagrams at every receiver after every n-th sender frame.
    forge_every: Option<u64>,
    /// The sender's linger after close (ns).
    linger: u64,
    /// The sender's retransmit rate cap.
    retransmit_rate: u64,
    /// The sender forgets a receiver not heard from for this long (ns).
    receiver_timeout: u64,
    /// Each receiver takes this long per datagram (ns): at full speed a backlog builds
    /// in its socket queue, and repairs wait behind it, as with a real process.
    service: u64,
    /// With `service`: datagrams a receiver's socket buffer holds.
    queue_limit: usize,
}

impl Scenario {
    fn new(seed: u64) -> Self {
        Self {
            seed,
            receivers: 1,
            multicast: false,
            down: Link::clean(),
            up: Link::clean(),
            records: 3_000,
            interval: 5 * US,
            capacity: 1 << 20,
            join_after: Vec::new(),
            outage: None,
            restart_after: None,
            big_every: None,
            forge_every: None,
            linger: 1_000 * MS,
            retransmit_rate: 100_000_000,
            receiver_timeout: 2_000 * MS,
            service: 0,
            queue_limit: usize::MAX,
        }
    }
}

struct Outcome {
    /// Per receiver: records lost (unrecoverable), as events reported.
    lost: Vec<u64>,
    source: tempfile::TempDir,
    replicas: Vec<tempfile::TempDir>,
    counters: Vec<mdi_protocol::udp::ReceiverCounters>,
    sender_retransmit_bytes: u64,
    /// Holes the receivers filled, releasing the records held back behind them.
    repairs: u64,
    /// The longest any record took from its append to the source ring to being
    /// readable in a replica (virtual ns).
    max_delay_ns: u64,
    /// From the sender's close to its last END (virtual ns).
    lingered_ns: u64,
    /// Stream bytes in DATA frames lost on the way to at least one receiver (a byte lost
    /// by several counts once; lost again on a retransmission, again).
    union_lost_bytes: u64,
}

fn body(i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (i.wrapping_mul(31) as u8) ^ (k as u8))
        .collect()
}

fn sender_config(session_id: u32, source: &RingReader, epoch: u64, s: &Scenario) -> SenderConfig {
    let mut config = SenderConfig::new(session_id, 1, "ticks", source, epoch, 42);
    config.linger_ns = s.linger;
    config.retransmit_bytes_per_s = s.retransmit_rate;
    config.receiver_timeout_ns = s.receiver_timeout;
    config
}

fn run(s: &Scenario) -> Outcome {
    let source_dir = tempfile::tempdir().unwrap();
    let src = ShmDir::new(source_dir.path());
    let options = RingOptions::default().capacity(s.capacity);
    let mut writer = RingWriter::create(&src, "ticks", &options).unwrap();
    let reader = RingReader::open(&src, "ticks", StartAt::Earliest).unwrap();
    let mut sender = Sender::new(sender_config(100, &reader, writer.epoch(), s), reader, 0);
    let mut session = 100u32;

    let replica_dirs: Vec<_> = (0..s.receivers)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let mut sinks: Vec<ReplicaWriter> = replica_dirs
        .iter()
        .map(|d| ReplicaWriter::create(&ShmDir::new(d.path()), "ticks", &options, 7).unwrap())
        .collect();
    let mut receivers: Vec<Option<Receiver>> = (0..s.receivers).map(|_| None).collect();
    let mut ended = vec![false; s.receivers];
    let mut lost = vec![0u64; s.receivers];
    let mut net = Network {
        rng: Rng(s.seed),
        in_flight: BinaryHeap::new(),
        order: 0,
        burst_left: vec![0; 2 * s.receivers + 1],
        outage_until: vec![0; s.receivers],
        busy_until: vec![0; s.receivers],
        queued: vec![std::collections::VecDeque::new(); s.receivers],
        queue_limit: s.queue_limit,
        service: s.service,
        lost_data: vec![Vec::new(); s.receivers],
    };
    // (end position, append time) of every record, to measure delivery delays.
    let mut appended: Vec<(u64, u64)> = Vec::new();
    let mut repairs = 0u64;
    let mut max_delay_ns = 0u64;

    let mut now = 0u64;
    let mut frames_sent = 0u64;
    let mut written = 0u64;
    let mut next_write = 0u64;
    let mut closed = false;
    let mut closed_at = 0u64;
    for step in 0..5_000_000u64 {
        // The publisher.
        while written < s.records && next_write <= now {
            let len = match s.big_every {
                Some((n, big)) if written % n == n - 1 => big,
                _ => 8 + (written % 120) as usize,
            };
            writer
                .append(RecordKind::APPLICATION_FIRST, &body(written, len))
                .unwrap();
            appended.push((writer.position().get(), now.max(next_write)));
            written += 1;
            next_write += s.interval;
            if Some(written) == s.restart_after {
                // Publisher restart: new writer epoch on the same ring, new sender session.
                drop(writer);
                writer = RingWriter::create(&src, "ticks", &options).unwrap();
                let reader = RingReader::open(&src, "ticks", StartAt::Latest).unwrap();
                session += 1;
                sender = Sender::new(
                    sender_config(session, &reader, writer.epoch(), s),
                    reader,
                    now,
                );
            }
            if let Some((r, from, to)) = s.outage {
                if written == from {
                    net.outage_until[r] = u64::MAX;
                }
                if written == to {
                    net.outage_until[r] = 0;
                }
            }
        }
        if written == s.records && !closed {
            closed = true;
            closed_at = now;
            sender.close(now);
        }
        for (i, receiver) in receivers.iter_mut().enumerate() {
            let join_at = s.join_after.get(i).copied().unwrap_or(0);
            if receiver.is_none() && written >= join_at {
                *receiver = Some(Receiver::new(
                    ReceiverConfig::new(1000 + i as u64, 1, s.multicast),
                    now,
                ));
            }
        }
        // Everything due now.
        while let Some(frame) = sender.poll_transmit(now) {
            let frame = frame.to_vec();
            for r in 0..s.receivers {
                net.send(now, To::Receiver(r), s.down, &frame, r);
            }
            frames_sent += 1;
            if let Some(n) = s.forge_every
                && frames_sent.is_multiple_of(n)
            {
                for r in 0..s.receivers {
                    for forged in forgeries(&frame, session, &mut net.rng) {
                        net.order += 1;
                        net.in_flight.push(Reverse((
                            now + 10 * US,
                            net.order,
                            To::Receiver(r),
                            forged,
                        )));
                    }
                }
            }
        }
        for (i, receiver) in receivers.iter_mut().enumerate() {
            let Some(receiver) = receiver else { continue };
            receiver.handle_timeout(now, &mut sinks[i]);
            // as a driver that read its socket until it was empty, or not
            receiver.set_backlog(net.queued[i].front().is_some_and(|&wire| wire <= now));
            while let Some(frame) = receiver.poll_transmit(now) {
                let frame = frame.to_vec();
                net.send(now, To::Sender, s.up, &frame, s.receivers + i);
            }
            while let Some(event) = receiver.poll_event() {
                match event {
                    ReceiverEvent::Ended { .. } => ended[i] = true,
                    ReceiverEvent::Lost { from_seq, to_seq } => lost[i] += to_seq - from_seq,
                    ReceiverEvent::NewRing { .. } => panic!("same ring throughout"),
                    _ => {}
                }
            }
        }
        if ended.iter().all(|&e| e) && sender.is_closed() {
            break;
        }
        if step == 4_999_999 {
            let states: Vec<_> = receivers
                .iter()
                .map(|r| r.as_ref().map(|r| (r.position(), r.counters())))
                .collect();
            panic!(
                "simulation did not finish (livelock?) at {now} ns: ended {ended:?}, sender closed {} at {} {:?}, receivers {states:?}",
                sender.is_closed(),
                sender.position(),
                sender.counters()
            );
        }
        // Jump to the next thing that happens.
        let mut next = net.next_arrival().unwrap_or(u64::MAX);
        if let Some(t) = sender.poll_timeout() {
            next = next.min(t.get());
        }
        for receiver in receivers.iter().flatten() {
            if let Some(t) = receiver.poll_timeout() {
                next = next.min(t.get());
            }
        }
        if written < s.records {
            next = next.min(next_write);
        }
        now = next.max(now + 1);
        while let Some(Reverse((at, ..))) = net.in_flight.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, _, to, bytes)) = net.in_flight.pop().unwrap();
            match to {
                To::Sender => sender.handle_datagram(now, &bytes),
                To::Receiver(i) => {
                    if s.service > 0 {
                        net.queued[i].pop_front();
                    }
                    if let Some(receiver) = &mut receivers[i] {
                        if receiver.position().is_none() {
                            // not joined yet (its SETUP was lost): what it cannot take
                            // is lost to it, to be resent like any loss
                            net.lost_data[i].extend(data_range(&bytes));
                        }
                        let before = receiver.position().unwrap_or(0);
                        receiver.handle_datagram(now, &bytes, &mut sinks[i]);
                        let after = receiver.position().unwrap_or(0);
                        if after > before {
                            // more delivered than this datagram carried: a hole was filled
                            // and what waited behind it released
                            if after - before > bytes.len() as u64 {
                                repairs += 1;
                            }
                            // the oldest record this delivery made readable
                            let first = appended.partition_point(|&(end, _)| end <= before);
                            if let Some(&(end, at)) = appended.get(first)
                                && end <= after
                            {
                                max_delay_ns = max_delay_ns.max(now.saturating_sub(at));
                            }
                        }
                    }
                }
            }
        }
    }
    let counters = receivers
        .iter()
        .map(|r| r.as_ref().unwrap().counters())
        .collect();
    Outcome {
        lost,
        source: source_dir,
        replicas: replica_dirs,
        counters,
        sender_retransmit_bytes: sender.counters().retransmit_bytes,
        repairs,
        max_delay_ns,
        lingered_ns: now - closed_at,
        union_lost_bytes: union_bytes(net.lost_data),
    }
}

/// The stream range a DATA frame carries, if it is one.
fn data_range(datagram: &[u8]) -> Option<(u64, u64)> {
    match Frame::parse(datagram) {
        Ok(Frame::Data(data)) => {
            let header = data.body.header;
            let start = header.position.get() + u64::from(header.fragment_offset.get());
            Some((start, start + data.body.payload.len() as u64))
        }
        _ => None,
    }
}

/// Bytes lost by at least one receiver: each receiver's losses merged in time order of
/// their occurrence per receiver, ranges lost by several receivers at once counted once.
/// A range lost, repaired and lost again by one receiver counts twice (two losses).
fn union_bytes(lost: Vec<Vec<(u64, u64)>>) -> u64 {
    // per receiver, the k-th loss of a range is the pair (range, k); the union over
    // receivers of these sets
    let mut all = std::collections::BTreeSet::new();
    for per_receiver in lost {
        let mut seen = std::collections::HashMap::<(u64, u64), u32>::new();
        for range in per_receiver {
            let k = seen.entry(range).or_default();
            *k += 1;
            all.insert((range, *k));
        }
    }
    // ranges of one occurrence level may still overlap (different frame cuts): merge
    let mut total = 0;
    let mut by_level = std::collections::BTreeMap::<u32, Vec<(u64, u64)>>::new();
    for ((start, end), k) in all {
        by_level.entry(k).or_default().push((start, end));
    }
    for (_, mut ranges) in by_level {
        ranges.sort_unstable();
        let mut cursor = 0;
        for (start, end) in ranges {
            let start = start.max(cursor);
            if end > start {
                total += end - start;
                cursor = end;
            }
        }
    }
    total
}

/// Datagrams an attacker or a broken host could send, built from a real frame: another
/// session, positions far ahead, truncations, a corrupted length, garbage.
fn forgeries(real: &[u8], session: u32, rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut w = FrameWriter::new(1408, session + 1000, 1);
    let mut records = Vec::new();
    let header = mdi_protocol::ring::RecordHeader {
        len: 24,
        kind: 0x8000,
        flags: 0,
        seq: 7,
    };
    records.extend_from_slice(zerocopy::IntoBytes::as_bytes(&header));
    records.extend_from_slice(&[0xee; 8]);
    let mut out = vec![
        // Unknown session, plausible position.
        w.data(0, 32, &records).to_vec(),
        w.heartbeat(1 << 40).to_vec(),
    ];
    let mut right = FrameWriter::new(1408, session, 1);
    // The right session, positions far beyond anything real.
    out.push(right.data(1 << 50, (1 << 50) + 32, &records).to_vec());
    out.push(
        right
            .fragment(1 << 50, (1 << 50) + 4096, 4096, 0, &records)
            .to_vec(),
    );
    // Truncations and a corrupted length of a real frame.
    let cut = 1 + rng.below(real.len() as u64 - 1) as usize;
    out.push(real[..cut].to_vec());
    let mut bad_len = real.to_vec();
    bad_len[4] ^= 0x08;
    out.push(bad_len);
    out.push((0..rng.below(64)).map(|_| rng.next() as u8).collect());
    out
}

/// (position, seq, kind, body) from `start` to the end, and the number reported lost.
fn contents(dir: &std::path::Path, start: StartAt) -> (Vec<Seen>, u64) {
    let mut reader = RingReader::open(&ShmDir::new(dir), "ticks", start).unwrap();
    let mut out = Vec::new();
    let mut lost = 0;
    while !reader.caught_up() {
        reader
            .poll(1024, |e| match e {
                ReadEvent::Record(r) => {
                    out.push((r.position.get(), r.seq.get(), r.kind.0, r.body.to_vec()))
                }
                ReadEvent::EpochStarted { seq, epoch, .. } => {
                    out.push((0, seq.get(), 1, epoch.to_le_bytes().to_vec()))
                }
                ReadEvent::Lost { from_seq, to_seq } => lost += to_seq - from_seq,
            })
            .unwrap();
    }
    (out, lost)
}

/// Every replica holds exactly the source's records from where it started.
fn assert_identical(outcome: &Outcome) {
    let (source, _) = contents(outcome.source.path(), StartAt::Earliest);
    for (i, replica) in outcome.replicas.iter().enumerate() {
        let (records, lost) = contents(replica.path(), StartAt::Earliest);
        assert_eq!(lost, 0, "replica {i} reported loss");
        assert_eq!(outcome.lost[i], 0);
        let first = records.first().expect("replica has records").1;
        let expected: Vec<_> = source.iter().filter(|r| r.1 >= first).cloned().collect();
        assert_eq!(records.len(), expected.len(), "replica {i} record count");
        assert!(records == expected, "replica {i} differs from the source");
    }
}

#[test]
fn lossless_unicast_replicates_exactly() {
    let outcome = run(&Scenario::new(1));
    assert_identical(&outcome);
    assert_eq!(outcome.sender_retransmit_bytes, 0);
}

#[test]
fn unicast_repairs_loss_from_1_to_30_percent() {
    for (seed, loss) in (0..4u64).flat_map(|k| {
        [
            (20 + k, 0.01),
            (30 + k, 0.05),
            (40 + k, 0.15),
            (50 + k, 0.30),
        ]
    }) {
        let mut s = Scenario::new(seed);
        s.down = Link::lossy(loss);
        s.up = Link::lossy(loss);
        let outcome = run(&s);
        assert_identical(&outcome);
        assert!(outcome.counters[0].naks > 0, "loss {loss}: no NAK sent");
    }
}

#[test]
fn multicast_three_receivers_with_independent_loss_reordering_and_duplicates() {
    for seed in seeds(700, 8) {
        multicast_three_receivers(seed);
    }
}

fn multicast_three_receivers(seed: u64) {
    let mut s = Scenario::new(seed);
    s.receivers = 3;
    s.multicast = true;
    s.down = Link {
        latency: 30 * US,
        jitter: 40 * US,
        loss: 0.05,
        duplicate: 0.05,
        burst: (0.1, 6),
    };
    s.up = Link::lossy(0.05);
    let outcome = run(&s);
    assert_identical(&outcome);
    // The scenario exercised reordering and duplicates (one receiver may see no
    // duplicate, e.g. when it joined through a lost SETUP and buffered everything).
    let counters = &outcome.counters;
    assert!(counters.iter().all(|c| c.buffered > 0), "{counters:?}");
    assert!(counters.iter().any(|c| c.duplicates > 0), "{counters:?}");
    let total: u64 = outcome.counters.iter().map(|c| c.naks).sum();
    assert!(total > 0);
    assert!(outcome.repairs > 0);
    // Loss must not become long tail latency: at 5 % loss with bursts (and 5 % of the
    // NAKs lost) no record waits more than a few repair rounds. 300 seeds: worst 8.8 ms;
    // a back-off kept across holes (fixed) gave 82 ms.
    eprintln!(
        "seed {seed}: worst delivery delay {} µs",
        outcome.max_delay_ns / US
    );
    assert!(
        outcome.max_delay_ns <= 20 * MS,
        "seed {seed}: a record took {} µs to reach a replica",
        outcome.max_delay_ns / US
    );
}

#[test]
fn late_joiner_replicates_history_from_the_session_start() {
    let mut s = Scenario::new(11);
    s.receivers = 2;
    s.multicast = true;
    s.join_after = vec![0, 2_000];
    s.down = Link::lossy(0.02);
    let outcome = run(&s);
    assert_identical(&outcome);
    let (a, _) = contents(outcome.replicas[0].path(), StartAt::Earliest);
    let (b, _) = contents(outcome.replicas[1].path(), StartAt::Earliest);
    assert_eq!(a, b, "the late joiner got the same history");
}

#[test]
fn records_larger_than_a_datagram_are_fragmented_and_reassembled() {
    for seed in seeds(1300, 8) {
        fragmented(seed);
    }
}

fn fragmented(seed: u64) {
    let mut s = Scenario::new(seed);
    s.big_every = Some((50, 5_000));
    s.down = Link {
        jitter: 30 * US,
        ..Link::lossy(0.05)
    };
    s.records = 1_500;
    let outcome = run(&s);
    assert_identical(&outcome);
}

#[test]
fn publisher_restart_continues_the_replica_with_a_new_epoch() {
    for seed in seeds(1700, 16) {
        publisher_restart(seed);
    }
}

fn publisher_restart(seed: u64) {
    let mut s = Scenario::new(seed);
    s.receivers = 2;
    s.multicast = true;
    s.restart_after = Some(1_500);
    s.down = Link::lossy(0.03);
    let outcome = run(&s);
    assert_identical(&outcome);
    let (records, _) = contents(outcome.replicas[0].path(), StartAt::Earliest);
    let epochs: Vec<u64> = records
        .iter()
        .filter(|r| r.2 == 1)
        .map(|r| u64::from_le_bytes(r.3[..8].try_into().unwrap()))
        .collect();
    assert_eq!(
        epochs,
        vec![1, 2],
        "seed {seed}: both epochs are in the replica"
    );
}

#[test]
fn retention_exceeded_is_an_exact_loss_and_the_stream_goes_on() {
    for seed in seeds(1900, 4) {
        retention_exceeded(seed);
    }
}

fn retention_exceeded(seed: u64) {
    let mut s = Scenario::new(seed);
    s.capacity = 64 << 10;
    s.records = 6_000;
    // Receiver cut off while ~3 rings' worth of records go by.
    s.outage = Some((0, 1_000, 4_000));
    let outcome = run(&s);
    let (source, _) = contents(outcome.source.path(), StartAt::Earliest);
    let (replica, replica_lost) = contents(outcome.replicas[0].path(), StartAt::Earliest);
    assert!(
        outcome.lost[0] > 0,
        "the receiver must report the unrecoverable range"
    );
    // The replica's retained window equals the source's (same capacity, same positions).
    assert_eq!(replica.last(), source.last());
    let first = source.first().unwrap().1;
    let tail: Vec<_> = replica.iter().filter(|r| r.1 >= first).cloned().collect();
    assert_eq!(tail, source);
    let _ = replica_lost;
    // Exact: everything the receiver wrote plus what it reported lost is every sequence.
    let c = &outcome.counters[0];
    let epoch_records = 1;
    assert_eq!(c.records + c.lost_records, s.records + epoch_records);
    assert_eq!(c.lost_records, outcome.lost[0]);
}

#[test]
fn forged_and_truncated_datagrams_are_counted_and_harmless() {
    // Before joining, nothing touches the replica.
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let mut sink =
        ReplicaWriter::create(&shm, "ticks", &RingOptions::default().capacity(1 << 20), 7).unwrap();
    let mut receiver = Receiver::new(ReceiverConfig::new(1, 1, false), 0);
    let mut forged = FrameWriter::new(1408, 999, 1);
    receiver.handle_datagram(0, forged.heartbeat(1 << 40), &mut sink);
    receiver.handle_datagram(0, &[1, 2, 3], &mut sink);
    receiver.handle_datagram(0, &[0u8; 64], &mut sink);
    assert_eq!(receiver.counters().malformed, 2);
    assert_eq!(receiver.position(), None);
    assert_eq!(sink.position(), 0);

    // A lossy multicast run with forged datagrams thrown at every receiver throughout.
    let mut s = Scenario::new(23);
    s.receivers = 2;
    s.multicast = true;
    s.down = Link::lossy(0.05);
    s.forge_every = Some(5);
    let outcome = run(&s);
    assert_identical(&outcome);
    for c in &outcome.counters {
        assert!(c.malformed > 100 && c.rejected > 100, "{c:?}");
    }
}

#[test]
fn a_gap_the_sender_never_repairs_ends_as_an_exact_loss_not_a_stall() {
    // The receiver is cut off for a stretch that ends just before the sender closes; the
    // sender lingers only 1 ms with retransmits capped at 1 MB/s, and forgets a receiver
    // not heard from within 20 ms (its STATUS comes every 100 ms), so it neither waits
    // for it to catch up nor to see END: the hole is never fully repaired. After END and
    // a grace period the receiver gives up the hole, reports exactly what is missing,
    // and ends.
    let mut s = Scenario::new(29);
    s.records = 2_000;
    s.outage = Some((0, 500, 1_990));
    s.linger = MS;
    s.retransmit_rate = 1_000_000;
    s.receiver_timeout = 20 * MS;
    let outcome = run(&s);
    let c = &outcome.counters[0];
    assert!(outcome.lost[0] > 0, "{c:?}");
    assert_eq!(c.lost_records, outcome.lost[0]);
    assert_eq!(c.records + c.lost_records, s.records + 1, "{c:?}");
    let (source, _) = contents(outcome.source.path(), StartAt::Earliest);
    let (replica, replica_lost) = contents(outcome.replicas[0].path(), StartAt::Earliest);
    assert_eq!(
        replica_lost, outcome.lost[0],
        "replica readers see the same loss"
    );
    // Everything the replica holds is the source's, at the same positions.
    assert!(replica.iter().all(|r| source.contains(r)));
}

#[test]
fn the_sender_lingers_while_receivers_repair_and_not_longer_than_needed() {
    // Cut off until just before the close, the receiver is still repairing when the
    // 20 ms linger is over (retransmits capped at 2 MB/s): the sender keeps answering
    // while NAKs come, and nothing is lost.
    let mut s = Scenario::new(31);
    s.records = 2_000;
    s.outage = Some((0, 500, 1_990));
    s.linger = 20 * MS;
    s.retransmit_rate = 2_000_000;
    let outcome = run(&s);
    assert_eq!(outcome.lost, [0], "{:?}", outcome.counters);
    assert!(outcome.lingered_ns > s.linger, "{}", outcome.lingered_ns);
    assert_identical(&outcome);
    // Everyone complete at close: END goes out without waiting for the linger (1 s).
    let mut s = Scenario::new(32);
    s.receivers = 3;
    s.multicast = true;
    let outcome = run(&s);
    assert!(outcome.lingered_ns < 500 * MS, "{}", outcome.lingered_ns);
    assert_identical(&outcome);
}

#[test]
fn loss_at_full_speed_costs_one_nak_per_gap_and_retransmits_little_more_than_was_lost() {
    for seed in seeds(2100, 6) {
        no_storm(seed);
    }
}

/// Issue 19's storm: two multicast receivers each losing 5 %, the publisher at full
/// speed, and receivers that take time per datagram — a backlog builds in their queues
/// and repairs wait behind it, so a NAK timer that does not learn the real repair time
/// NAKs the same holes again and again, and a sender that answers every repeat resends
/// the stream many times over.
fn no_storm(seed: u64) {
    let mut s = Scenario::new(seed);
    s.receivers = 2;
    s.multicast = true;
    s.records = 30_000;
    s.capacity = 16 << 20;
    s.interval = 500; // 2 M records/s: far faster than the receivers drain
    s.service = 15 * US;
    // a socket buffer holding the flow control window and the NAK budget (the
    // datagrams here carry one small record each)
    s.queue_limit = 20_000;
    s.down = Link::lossy(0.05);
    s.up = Link::lossy(0.05);
    let outcome = run(&s);
    assert_identical(&outcome);
    // on average over the receivers (one that joined through a lost SETUP asks for its
    // history in many pieces: more NAKs than gaps of its own)
    let gaps: u64 = outcome.counters.iter().map(|c| c.gaps).sum();
    let naks: u64 = outcome.counters.iter().map(|c| c.naks).sum();
    assert!(
        gaps > 100,
        "seed {seed}: too few gaps to judge: {:?}",
        outcome.counters
    );
    let per_gap = naks as f64 / gaps as f64;
    eprintln!("seed {seed}: {gaps} gaps, {per_gap:.2} NAKs per gap");
    assert!(
        per_gap <= 2.0,
        "seed {seed}: {per_gap:.2} NAKs per gap: {:?}",
        outcome.counters
    );
    let ratio = outcome.sender_retransmit_bytes as f64 / outcome.union_lost_bytes as f64;
    eprintln!(
        "seed {seed}: retransmitted {} bytes for {} lost: {ratio:.2}x",
        outcome.sender_retransmit_bytes, outcome.union_lost_bytes
    );
    assert!(
        ratio <= 1.5,
        "seed {seed}: retransmitted {ratio:.2}x the bytes lost"
    );
}
