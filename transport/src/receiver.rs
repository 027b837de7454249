//! The reliable-UDP receiver on real sockets: [`UdpReceiver`] joins a channel and keeps
//! one replica ring per stream — same names, positions and sequence numbers as the
//! sender's rings — and [`BackgroundReceiver`] runs one on a thread for a subscriber.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use mdi_protocol::records::SCHEMA_ID;
use mdi_protocol::ring::{AppendError, ReplicaWriter, RingOptions, ShmDir};
use mdi_protocol::udp::frame::{Frame, MAX_MTU, decode_stream_name};
use mdi_protocol::udp::{
    Channel, FrameOpener, FrameSealer, OpenError, Receiver, ReceiverConfig, ReceiverCounters,
    ReceiverEvent, ReplicaSink,
};

use crate::clock::MonoClock;
use crate::loss::LossGenerator;
use crate::socket::bind_receiver;
use crate::{batch, status};
use mdi_protocol::time::{MonoNs, WallNs};

/// Setting up or running a UDP receiver failed.
#[derive(Debug, thiserror::Error)]
pub enum UdpReceiveError {
    /// A socket operation failed.
    #[error("{channel}: {source}")]
    Socket {
        /// The channel.
        channel: String,
        /// The error.
        source: io::Error,
    },
}

/// How a [`UdpReceiver`] behaves.
#[derive(Debug, Clone)]
pub struct UdpReceiverOptions {
    /// This receiver's id, reported to senders (random per process by default).
    pub receiver_id: u64,
    /// Drop this share of received datagrams (loss generator), with this seed.
    pub debug_drop_rate: f64,
    /// Seed of the loss generator and NAK back-off.
    pub debug_seed: u64,
    /// File mode etc. of the replica rings (capacity comes from the sender).
    pub ring_options: RingOptions,
    /// Only these streams (by name) are replicated; `None`: every stream on the channel.
    pub accept_streams: Option<Vec<String>>,
    /// A SETUP asking for a larger replica than this (bytes) is refused.
    pub max_capacity: u64,
    /// Streams tracked at most (each stream id seen takes an entry); frames for more are
    /// counted and dropped.
    pub max_streams: usize,
}

/// Largest replica a receiver makes unless told otherwise: 1 GiB.
pub const DEFAULT_MAX_CAPACITY: u64 = 1 << 30;
/// Streams a receiver tracks at most unless told otherwise.
pub const DEFAULT_MAX_STREAMS: usize = 64;

impl Default for UdpReceiverOptions {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let pid = u64::from(std::process::id());
        // A random id without a dependency: std's per-process random hasher keys.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            receiver_id: random ^ pid,
            debug_drop_rate: 0.0,
            debug_seed: pid,
            // Not prefaulted: a replica is created on the receive path, when its SETUP
            // arrives, and faulting in a 64 MiB ring took 0.14-0.19 s (strace of mdrecv,
            // MAP_POPULATE) in which the socket was not read and overflowed. Its memory
            // is reserved all the same (ADR 0010); pages are mapped as records arrive.
            ring_options: RingOptions::default().prefault(false),
            accept_streams: None,
            max_capacity: DEFAULT_MAX_CAPACITY,
            max_streams: DEFAULT_MAX_STREAMS,
        }
    }
}

/// What one received stream looks like.
#[derive(Debug, Clone)]
pub struct ReceiverStreamStats {
    /// The stream name.
    pub stream: String,
    /// The replica is complete below this position (None before joining).
    pub position: Option<u64>,
    /// Highest position known to exist; above `position` means a gap being repaired.
    pub high_water: Option<u64>,
    /// The state machine's counters.
    pub counters: ReceiverCounters,
    /// The smoothed repair round trip, ns (0 until a repair was measured).
    pub repair_rtt_ns: u64,
}

/// One stream of a channel: its state machine and replica.
#[derive(Debug)]
struct Stream {
    receiver: Receiver,
    replica: Option<ReplicaWriter>,
    name: Option<String>,
    ended: bool,
    /// Where the followed session's SETUP came from: its other frames must come from
    /// there, and NAKs and STATUS go there — while it is heard ([`SOURCE_SILENCE`]).
    source: Option<SocketAddr>,
    /// When a frame from `source` last arrived.
    heard: MonoNs,
}

/// A stream's source pins it while heard: frames from elsewhere are dropped (counted as
/// foreign) until the source has been silent this long or has ended the stream. Then
/// another sender — the publisher restarted elsewhere — is followed: a new session of
/// the same ring continues the replica, a new ring replaces it.
pub const SOURCE_SILENCE: std::time::Duration = std::time::Duration::from_secs(2);

impl Stream {
    /// Whether frames from `from` are this stream's to take now.
    fn takes_from(&self, from: Option<SocketAddr>, now: MonoNs) -> bool {
        let pinned = self.source.is_some()
            && !self.ended
            && now.since(self.heard) < SOURCE_SILENCE.as_nanos() as u64;
        !pinned || from == self.source
    }
}

impl Stream {
    fn new(options: &UdpReceiverOptions, channel: &Channel, stream_id: u32, now: MonoNs) -> Self {
        let config = ReceiverConfig {
            seed: options.debug_seed ^ u64::from(stream_id),
            ..ReceiverConfig::new(options.receiver_id, stream_id, channel.is_multicast())
        };
        Self {
            receiver: Receiver::new(config, now),
            replica: None,
            name: None,
            ended: false,
            source: None,
            heard: now,
        }
    }
}

/// A sink for frames that arrive before SETUP made a replica: never written to (an
/// unjoined receiver ignores everything but SETUP).
struct NoReplica;

impl ReplicaSink for NoReplica {
    fn append_raw(&mut self, position: u64, _record: &[u8]) -> Result<u64, AppendError> {
        Err(AppendError::BehindReplica {
            position,
            replica_position: u64::MAX,
        })
    }

    fn skip_to(&mut self, _position: u64, _next_seq: u64) {}

    fn position(&self) -> u64 {
        0
    }

    fn next_seq(&self) -> u64 {
        0
    }
}

/// A new directory for a background receiver's replicas: `/dev/shm/mdi-udp-<pid>-<n>-<random>`,
/// mode 0700, made here (never one that already exists, nor a link someone planted).
fn private_dir(n: u64) -> io::Result<std::path::PathBuf> {
    use std::hash::{BuildHasher, Hasher};
    use std::os::unix::fs::DirBuilderExt;
    let mut last = None;
    for _ in 0..16 {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let dir = std::path::PathBuf::from(format!(
            "/dev/shm/mdi-udp-{}-{n}-{random:016x}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free name")))
}

/// What happened on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    /// The stream name (from its SETUP).
    pub stream: String,
    /// What happened.
    pub event: ReceiverEvent,
}

/// Joins a channel and keeps a local replica ring of every stream on it, repairing loss
/// with NAKs. Drive it with [`UdpReceiver::poll`].
#[derive(Debug)]
pub struct UdpReceiver {
    channel: Channel,
    socket: UdpSocket,
    shm: ShmDir,
    options: UdpReceiverOptions,
    streams: HashMap<u32, Stream>,
    sender: Option<SocketAddr>,
    loss: LossGenerator,
    clock: MonoClock,
    /// Datagrams of the last receive (`recvmmsg`).
    batch: batch::RecvBatch,
    events: Vec<StreamEvent>,
    malformed: u64,
    /// NAK and STATUS datagrams the socket refused (counted, not fatal).
    send_errors: u64,
    /// Frames for a joined stream from an address other than its session's source.
    foreign: u64,
    /// Datagrams whose tag did not verify under the channel's key (dropped).
    bad_tags: u64,
    /// Datagrams of a keyed channel seen before (dropped).
    replayed: u64,
    /// A NAK or STATUS sealed, on its way out (keyed channels).
    sealed: Vec<u8>,
    /// Seals what this receiver sends and opens what it receives, on a keyed channel.
    keys: Option<(FrameSealer, FrameOpener)>,
    /// SETUPs refused: a stream not accepted, a capacity over the limit, or a replica
    /// that could not be made (bad name, a ring of that name whose writer lives...).
    setups_refused: u64,
    /// Frames for a new stream id when `max_streams` are tracked already.
    streams_refused: u64,
    nonblocking: bool,
    /// When the counters were last written for `mdstat` (ns of `origin`).
    status_at: MonoNs,
}

impl Drop for UdpReceiver {
    fn drop(&mut self) {
        for stream in self.streams.values() {
            if let Some(name) = &stream.name {
                status::remove(self.shm.path(), name, "udp-recv");
            }
        }
    }
}

impl UdpReceiver {
    /// Writes each stream's counters for `mdstat` (`<stream>.udp-recv`).
    fn write_status(&self) {
        let now = crate::clock::wall_clock_ns();
        for s in self.stats() {
            let c = s.counters;
            let lines: Vec<(String, String)> = [
                ("channel", self.channel.to_string()),
                ("position", s.position.unwrap_or(0).to_string()),
                ("records", c.records.to_string()),
                ("gaps", c.gaps.to_string()),
                ("gap_bytes", c.gap_bytes.to_string()),
                ("repair_rtt_ns", s.repair_rtt_ns.to_string()),
                ("naks", c.naks.to_string()),
                ("nak_repeats", c.nak_repeats.to_string()),
                ("duplicates", c.duplicates.to_string()),
                ("lost_records", c.lost_records.to_string()),
                ("malformed", (c.malformed + self.malformed).to_string()),
                ("rejected", c.rejected.to_string()),
                ("foreign", self.foreign.to_string()),
                ("bad_tags", self.bad_tags.to_string()),
                ("replayed", self.replayed.to_string()),
                ("setups_refused", self.setups_refused.to_string()),
                ("streams_refused", self.streams_refused.to_string()),
                ("debug_dropped", self.debug_dropped().to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            status::write(self.shm.path(), &s.stream, "udp-recv", &lines, now);
        }
    }

    /// Binds the channel; replicas go to `shm`.
    pub fn new(
        channel: Channel,
        shm: ShmDir,
        options: UdpReceiverOptions,
    ) -> Result<Self, UdpReceiveError> {
        let socket = bind_receiver(&channel).map_err(|source| UdpReceiveError::Socket {
            channel: channel.to_string(),
            source,
        })?;
        let keys = match channel.key {
            None => None,
            Some(key) => {
                let instance =
                    crate::sender::random_instance().map_err(|source| UdpReceiveError::Socket {
                        channel: channel.to_string(),
                        source,
                    })?;
                Some((key.sealer(instance), key.opener()))
            }
        };
        Ok(Self {
            loss: LossGenerator::new(options.debug_drop_rate, options.debug_seed),
            channel,
            socket,
            shm,
            options,
            streams: HashMap::new(),
            sender: None,
            clock: MonoClock::start(),
            batch: batch::RecvBatch::new(),
            events: Vec::new(),
            malformed: 0,
            send_errors: 0,
            foreign: 0,
            bad_tags: 0,
            replayed: 0,
            sealed: vec![0; MAX_MTU],
            keys,
            setups_refused: 0,
            streams_refused: 0,
            nonblocking: false,
            status_at: MonoNs(0),
        })
    }

    fn now_ns(&self) -> MonoNs {
        self.clock.now()
    }

    /// Waits up to `max_wait` for a datagram (`Duration::ZERO`: does not wait, for
    /// busy-polling), handles it and everything then due (NAKs, STATUS); returns whether
    /// a datagram arrived.
    pub fn poll(&mut self, max_wait: Duration) -> Result<bool, UdpReceiveError> {
        let now = self.now_ns();
        if now.since(self.status_at) >= 1_000_000_000 {
            self.status_at = now;
            self.write_status();
            // the replicas' writer is this receiver: its heartbeat shows it is alive
            let wall = crate::clock::wall_clock_ns();
            for stream in self.streams.values_mut() {
                if let Some(replica) = stream.replica.as_mut() {
                    replica.heartbeat(WallNs(wall));
                }
            }
        }
        let busy = max_wait.is_zero();
        if busy != self.nonblocking {
            self.socket
                .set_nonblocking(busy)
                .map_err(|source| UdpReceiveError::Socket {
                    channel: self.channel.to_string(),
                    source,
                })?;
            self.nonblocking = busy;
        }
        let next = self
            .streams
            .values()
            .filter_map(|s| s.receiver.poll_timeout())
            .min()
            .map_or(max_wait, |at| {
                Duration::from_nanos(at.since(now)).min(max_wait)
            })
            .max(Duration::from_micros(10));
        let sock_err = |channel: &Channel, source| UdpReceiveError::Socket {
            channel: channel.to_string(),
            source,
        };
        if !busy {
            self.socket
                .set_read_timeout(Some(next))
                .map_err(|e| sock_err(&self.channel, e))?;
        }
        let mut batch = std::mem::take(&mut self.batch);
        let received = batch
            .recv(&self.socket, !busy)
            .map_err(|e| sock_err(&self.channel, e));
        let now = self.now_ns();
        for i in 0..batch.len() {
            if let Some((datagram, from)) = batch.get_mut(i)
                && !self.loss.drop_next(datagram.len())
            {
                match &mut self.keys {
                    None => self.handle(now, datagram, from),
                    Some((_, opener)) => match opener.open(datagram) {
                        Ok(frame) => self.handle(now, frame, from),
                        Err(OpenError::BadTag) => self.bad_tags += 1,
                        Err(OpenError::Replayed) => self.replayed += 1,
                    },
                }
            }
        }
        self.batch = batch;
        let received = received?;
        // A full batch means the socket is read behind what arrives (a backlog): a
        // repair NAKed earlier may be among what waits, so the state machines hold their
        // repeated NAKs until it is worked through. (One datagram waiting is no backlog:
        // holding repeats then delayed repair under steady traffic — mdbench udp's
        // multicast recovery p99 went from 2.1-2.8 ms to 5-10 ms with a peek instead.)
        let backlog = self.batch.was_full();
        for stream in self.streams.values_mut() {
            stream.receiver.set_backlog(backlog);
        }
        self.transmit(now).map_err(|e| sock_err(&self.channel, e))?;
        Ok(received > 0)
    }

    fn handle(&mut self, now: MonoNs, datagram: &[u8], from: Option<SocketAddr>) {
        let stream_id = match Frame::parse(datagram) {
            Ok(Frame::Setup(setup)) => {
                let stream_id = setup.stream_id;
                if !self.track(stream_id, now) {
                    return;
                }
                let Some(stream) = self.streams.get_mut(&stream_id) else {
                    return;
                };
                if !stream.takes_from(from, now) {
                    self.foreign += 1;
                    return;
                }
                let ring_id = setup.body.ring_id.get();
                let name = decode_stream_name(&setup.body.stream_name).unwrap_or("");
                let follows = match &stream.replica {
                    None => false,
                    Some(replica) if replica.source_ring_id() == ring_id => true,
                    Some(replica) => {
                        // the source ring was recreated (e.g. `mdpub replay` afresh): its
                        // positions start over, so a new replica replaces this one (its
                        // readers are told to reopen); the old one is closed first, so
                        // its writer lock is free for the new one
                        tracing::info!(
                            "{}: stream {name:?}: a new source ring (id {ring_id:#x}, was {:#x}) from {}: the replica is replaced",
                            self.channel,
                            replica.source_ring_id(),
                            from.map_or_else(|| "?".to_owned(), |a| a.to_string())
                        );
                        self.events.push(StreamEvent {
                            stream: stream.name.clone().unwrap_or_default(),
                            event: ReceiverEvent::NewRing {
                                session_id: setup.session_id,
                                ring_id,
                                capacity: setup.body.capacity.get(),
                            },
                        });
                        *stream = Stream::new(&self.options, &self.channel, stream_id, now);
                        false
                    }
                };
                if !follows {
                    match self.make_replica(name, setup.body.capacity.get(), ring_id) {
                        Ok(replica) => {
                            if let Some(stream) = self.streams.get_mut(&stream_id) {
                                stream.replica = Some(replica);
                                stream.name = Some(name.to_owned());
                            }
                        }
                        Err(reason) => {
                            // anyone can send a SETUP: a refusal is counted and said,
                            // never the end of the receiver
                            self.setups_refused += 1;
                            if self.setups_refused <= 5 {
                                tracing::warn!(
                                    "{}: SETUP for stream {name:?} from {} refused: {reason}",
                                    self.channel,
                                    from.map_or_else(|| "?".to_owned(), |a| a.to_string())
                                );
                            }
                            return;
                        }
                    }
                }
                stream_id
            }
            Ok(Frame::Data(f)) => f.stream_id,
            Ok(Frame::Heartbeat(f)) => f.stream_id,
            Ok(Frame::Unavailable(f)) => f.stream_id,
            Ok(Frame::End(f)) => f.stream_id,
            // Not for a receiver (NAK, STATUS from another receiver) or not a frame.
            Ok(_) => return,
            Err(_) => {
                self.malformed += 1;
                return;
            }
        };
        if !self.track(stream_id, now) {
            return;
        }
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return;
        };
        let setup = matches!(Frame::parse(datagram), Ok(Frame::Setup(_)));
        // A joined stream takes frames only from where its session's SETUP came from,
        // while that source is heard: a stray or forged frame from elsewhere is counted
        // and dropped — it neither reaches the replica nor moves where repair requests
        // go, nor switches the stream to another session. Once the source is silent (or
        // ended), frames from elsewhere are taken: the state machine asks their sender
        // for SETUP (STATUS goes there), and its session is followed.
        if !stream.takes_from(from, now) {
            self.foreign += 1;
            return;
        }
        if from == stream.source {
            stream.heard = now;
        } else if stream.source.is_some() && !setup {
            // the source is silent: whoever sends now is asked for SETUP
            stream.source = None;
            self.sender = from;
        }
        let session_before = stream.receiver.session_id();
        match &mut stream.replica {
            Some(replica) => stream.receiver.handle_datagram(now, datagram, replica),
            None => stream
                .receiver
                .handle_datagram(now, datagram, &mut NoReplica),
        }
        let session_after = stream.receiver.session_id();
        if setup
            && session_after.is_some()
            && (session_after != session_before || stream.source.is_none())
        {
            stream.source = from;
            stream.heard = now;
            stream.ended = false;
            // streams not joined yet ask the latest joined session's source for SETUP
            self.sender = from;
        }
        // Before any stream is joined, STATUS (asking for SETUP) goes to whoever sent the
        // first frame.
        if self.sender.is_none() {
            self.sender = from;
        }
    }

    /// Makes sure `stream_id` has an entry, unless `max_streams` are tracked already
    /// (then the frame is counted and dropped: a flood of stream ids cannot grow the
    /// map). False if it has none.
    fn track(&mut self, stream_id: u32, now: MonoNs) -> bool {
        if self.streams.contains_key(&stream_id) {
            return true;
        }
        if self.streams.len() >= self.options.max_streams {
            self.streams_refused += 1;
            return false;
        }
        let stream = Stream::new(&self.options, &self.channel, stream_id, now);
        self.streams.insert(stream_id, stream);
        true
    }

    /// The replica a SETUP asks for, if the policy allows it and it can be made.
    fn make_replica(
        &self,
        name: &str,
        capacity: u64,
        source_ring_id: u64,
    ) -> Result<ReplicaWriter, String> {
        if let Some(accepted) = &self.options.accept_streams
            && !accepted.iter().any(|a| a == name)
        {
            return Err("not a stream this receiver accepts".to_owned());
        }
        if capacity > self.options.max_capacity {
            return Err(format!(
                "capacity {capacity} bytes is over the limit of {} bytes",
                self.options.max_capacity
            ));
        }
        let options = self
            .options
            .ring_options
            .clone()
            .capacity(capacity)
            .schema_id(SCHEMA_ID)
            .replace_incompatible(true);
        ReplicaWriter::create(&self.shm, name, &options, source_ring_id).map_err(|e| e.to_string())
    }

    /// SETUPs refused (stream not accepted, capacity over the limit, replica not made).
    pub fn setups_refused(&self) -> u64 {
        self.setups_refused
    }

    /// Frames for new stream ids dropped because `max_streams` were tracked already.
    pub fn streams_refused(&self) -> u64 {
        self.streams_refused
    }

    /// Sends what the state machines have due and collects their events.
    fn transmit(&mut self, now: MonoNs) -> io::Result<()> {
        for stream in self.streams.values_mut() {
            if let Some(replica) = &mut stream.replica {
                stream.receiver.handle_timeout(now, replica);
            }
            while let Some(frame) = stream.receiver.poll_transmit(now) {
                if let Some(sender) = stream.source.or(self.sender) {
                    let datagram = match &mut self.keys {
                        None => frame,
                        Some((sealer, _)) => {
                            self.sealed[..frame.len()].copy_from_slice(frame);
                            let len = sealer.seal(&mut self.sealed, frame.len());
                            &self.sealed[..len]
                        }
                    };
                    // A NAK or STATUS that cannot go out is a lost datagram like any
                    // other (the state machine repeats NAKs): counted, never fatal.
                    let sent = match self.socket.send_to(datagram, sender) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                            self.socket.send_to(datagram, sender)
                        }
                        other => other,
                    };
                    if let Err(e) = sent {
                        self.send_errors += 1;
                        if self.send_errors <= 5 {
                            tracing::warn!(
                                "{}: sending to {sender}: {e} (counted as lost; repair retries)",
                                self.channel
                            );
                        }
                    }
                }
            }
            while let Some(event) = stream.receiver.poll_event() {
                if matches!(event, ReceiverEvent::Ended { .. }) {
                    stream.ended = true;
                }
                self.events.push(StreamEvent {
                    stream: stream.name.clone().unwrap_or_default(),
                    event,
                });
            }
        }
        Ok(())
    }

    /// Takes the events so far.
    pub fn take_events(&mut self) -> Vec<StreamEvent> {
        std::mem::take(&mut self.events)
    }

    /// True when at least one stream was seen and every stream ended and was repaired.
    pub fn all_ended(&self) -> bool {
        // streams refused (no replica) have nothing to end
        let mut replicated = self.streams.values().filter(|s| s.replica.is_some());
        replicated.clone().next().is_some() && replicated.all(|s| s.ended)
    }

    /// Per replicated stream: replica position, high-water mark, counters.
    pub fn stats(&self) -> Vec<ReceiverStreamStats> {
        self.streams
            .values()
            .filter_map(|s| Some((s.name.clone()?, s)))
            .map(|(stream, s)| ReceiverStreamStats {
                stream,
                position: s.receiver.position(),
                high_water: s.receiver.high_water(),
                counters: s.receiver.counters(),
                repair_rtt_ns: s.receiver.repair_rtt_ns(),
            })
            .collect()
    }

    /// Per stream, without allocating: (replica position, high-water mark); a high-water
    /// mark above the position is a gap being repaired.
    pub fn progress(&self) -> impl Iterator<Item = (Option<u64>, Option<u64>)> + '_ {
        self.streams
            .values()
            .map(|s| (s.receiver.position(), s.receiver.high_water()))
    }

    /// The channel received.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Datagrams that were not frames.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Frames for a joined stream that came from an address other than its session's
    /// source (counted and dropped).
    pub fn foreign(&self) -> u64 {
        self.foreign
    }

    /// Datagrams refused because their tag did not verify under the channel's key.
    pub fn bad_tags(&self) -> u64 {
        self.bad_tags
    }

    /// Datagrams of a keyed channel refused as replays.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }

    /// NAK and STATUS datagrams the socket refused to send (counted as lost).
    pub fn send_errors(&self) -> u64 {
        self.send_errors
    }

    /// Datagrams dropped by the loss generator.
    pub fn debug_dropped(&self) -> u64 {
        self.loss.dropped()
    }

    /// Bytes of the datagrams dropped by the loss generator.
    pub fn debug_dropped_bytes(&self) -> u64 {
        self.loss.dropped_bytes()
    }
}

/// Replicas of the streams on some channels, kept on a thread of its own in a private
/// shm directory, for as long as this value lives (the directory is removed on drop):
/// how a subscriber or `mdtail` reads a remote publisher in-process.
#[derive(Debug)]
pub struct BackgroundReceiver {
    dir: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), UdpReceiveError>>>,
}

impl BackgroundReceiver {
    /// Joins `channels`; replicas go to a new directory under `/dev/shm`.
    pub fn start(channels: &[Channel]) -> Result<Self, UdpReceiveError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = private_dir(NEXT.fetch_add(1, Ordering::Relaxed)).map_err(|source| {
            UdpReceiveError::Socket {
                channel: "the replicas' private directory in /dev/shm".into(),
                source,
            }
        })?;
        let shm = ShmDir::new(&dir);
        let mut receivers = channels
            .iter()
            .map(|c| UdpReceiver::new(*c, shm.clone(), UdpReceiverOptions::default()))
            .collect::<Result<Vec<_>, _>>()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::Builder::new()
                .name("mdi-udp-receiver".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        for receiver in &mut receivers {
                            receiver.poll(Duration::from_millis(1))?;
                            for event in receiver.take_events() {
                                tracing::info!("{}: {:?}", event.stream, event.event);
                            }
                        }
                    }
                    Ok(())
                })
                .map_err(|source| UdpReceiveError::Socket {
                    channel: "receiver thread".into(),
                    source,
                })?
        };
        Ok(Self {
            dir,
            stop,
            thread: Some(thread),
        })
    }

    /// Where the replicas are.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Waits up to `timeout` until `streams` (or, if empty, any stream) have replicas.
    pub fn wait_for(&self, streams: &[String], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let shm = ShmDir::new(&self.dir);
        loop {
            let present = shm.streams().unwrap_or_default();
            let ready = if streams.is_empty() {
                !present.is_empty()
            } else {
                streams.iter().all(|s| present.contains(s))
            };
            if ready {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for BackgroundReceiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Err(e)) => tracing::warn!("UDP receiver stopped: {e}"),
                Err(_) => tracing::warn!("UDP receiver thread panicked"),
                Ok(Ok(())) => {}
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The background receiver's directories are new, private and not guessable.
    #[test]
    fn private_dirs_are_new_unguessable_and_owner_only() {
        let a = private_dir(0).unwrap();
        let b = private_dir(0).unwrap();
        assert_ne!(a, b, "the same counter value still gives two names");
        for dir in [&a, &b] {
            let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
            std::fs::remove_dir(dir).unwrap();
        }
    }
}
