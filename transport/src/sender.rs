//! Serving rings over reliable UDP: one socket per channel, one [`Sender`] state machine
//! per stream on it, each reading its ring like any reader.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::batch::SendBatch;
use crate::clock::MonoClock;
use crate::loss::LossGenerator;
use crate::socket::bind_sender;
use crate::status;
use mdi_protocol::ring::{RingReader, ShmDir, StartAt};
use mdi_protocol::time::{MonoNs, WallNs};
use mdi_protocol::udp::frame::{Frame, MAX_MTU};
use mdi_protocol::udp::{
    Channel, FrameOpener, FrameSealer, OpenError, ReceiverInfo, Sender, SenderConfig,
    SenderCounters, TRAILER_LEN,
};

/// Datagrams (NAKs, STATUS, strays) handled per turn of the sender's loop.
const MAX_RECEIVED_PER_TURN: usize = 256;

/// Setting up a UDP sender failed.
#[derive(Debug, thiserror::Error)]
pub enum UdpServeError {
    /// A socket operation failed.
    #[error("{channel}: {source}")]
    Socket {
        /// The channel.
        channel: String,
        /// The error.
        source: io::Error,
    },
    /// A ring could not be opened for serving.
    #[error("stream {stream:?}: {source}")]
    Ring {
        /// The stream name.
        stream: String,
        /// The error.
        source: mdi_protocol::ring::ReaderOpenError,
    },
}

/// How a [`UdpSender`] behaves beyond the defaults of [`SenderConfig`].
#[derive(Debug, Clone)]
pub struct UdpSenderOptions {
    /// After close, NAKs are answered this long before END.
    pub linger: Duration,
    /// Drop this share of sent datagrams (loss generator), with this seed.
    pub debug_drop_rate: f64,
    /// Seed of the loss generator.
    pub debug_seed: u64,
}

impl Default for UdpSenderOptions {
    fn default() -> Self {
        Self {
            linger: Duration::from_secs(1),
            debug_drop_rate: 0.0,
            debug_seed: 1,
        }
    }
}

/// What one served stream did.
#[derive(Debug, Clone)]
pub struct StreamStats {
    /// The stream name.
    pub stream: String,
    /// The sender's counters.
    pub counters: SenderCounters,
    /// Receivers heard from recently: (receiver id, what it reported).
    pub receivers: Vec<(u64, ReceiverInfo)>,
}

/// Serves streams of a shm directory on one channel.
#[derive(Debug)]
pub struct UdpSender {
    channel: Channel,
    socket: UdpSocket,
    destination: SocketAddr,
    senders: Vec<(String, Sender<RingReader>)>,
    loss: LossGenerator,
    clock: MonoClock,
    buf: Vec<u8>,
    /// Frames on their way out (`sendmmsg`); what a full socket buffer refused stays
    /// here, in order, and goes first on the next poll.
    out: SendBatch,
    /// Where the counters for `mdstat` go, and when they were last written.
    shm: ShmDir,
    status_at: Option<Instant>,
    /// How it was set up (for streams opened anew).
    options: UdpSenderOptions,
    /// Datagrams whose tag did not verify under the channel's key (dropped).
    bad_tags: u64,
    /// Datagrams of a keyed channel seen before (dropped).
    replayed: u64,
    /// Seals what this sender sends and opens what it receives, on a keyed channel.
    keys: Option<(FrameSealer, FrameOpener)>,
}

/// 16 bytes from the operating system's random source: a party's instance id on a keyed
/// channel (its nonces are unique under the key derived from it).
pub(crate) fn random_instance() -> io::Result<[u8; 16]> {
    use ring::rand::SecureRandom;
    let mut instance = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut instance)
        .map_err(|_| io::Error::other("the operating system's random source failed"))?;
    Ok(instance)
}

/// A random 32-bit number, different per call (session ids), without a dependency.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (random ^ (random >> 32)) as u32
}

/// The sender of stream `name` (id `stream_id`) from `start`, in a new session.
fn open_stream(
    shm: &ShmDir,
    name: &str,
    stream_id: u32,
    start: StartAt,
    channel: &Channel,
    options: &UdpSenderOptions,
) -> Result<Sender<RingReader>, UdpServeError> {
    let reader = RingReader::open(shm, name, start).map_err(|source| UdpServeError::Ring {
        stream: name.to_owned(),
        source,
    })?;
    let info = reader.info();
    let session_id = random_u32() ^ stream_id;
    let mut config = SenderConfig::new(
        session_id,
        stream_id,
        name,
        &reader,
        info.epoch,
        info.created_ns.cast_unsigned(),
    );
    config.linger_ns = u64::try_from(options.linger.as_nanos()).unwrap_or(u64::MAX);
    if channel.key.is_some() {
        // the seal rides in the datagram: frames are that much shorter
        config.mtu -= TRAILER_LEN;
    }
    Ok(Sender::new(config, reader, MonoNs(0)))
}

impl Drop for UdpSender {
    fn drop(&mut self) {
        for (name, _) in &self.senders {
            status::remove(self.shm.path(), name, "udp-send");
        }
    }
}

impl UdpSender {
    /// Serves `streams` (ring names in `shm`) on `channel`, stream ids 1, 2, … in order.
    pub fn new(
        channel: Channel,
        shm: &ShmDir,
        streams: &[String],
        options: &UdpSenderOptions,
    ) -> Result<Self, UdpServeError> {
        let (socket, destination) =
            bind_sender(&channel).map_err(|source| UdpServeError::Socket {
                channel: channel.to_string(),
                source,
            })?;
        socket
            .set_nonblocking(true)
            .map_err(|source| UdpServeError::Socket {
                channel: channel.to_string(),
                source,
            })?;
        let keys = match channel.key {
            None => None,
            Some(key) => {
                let instance = random_instance().map_err(|source| UdpServeError::Socket {
                    channel: channel.to_string(),
                    source,
                })?;
                Some((key.sealer(instance), key.opener()))
            }
        };
        let clock = MonoClock::start();
        let mut senders = Vec::new();
        for (i, name) in streams.iter().enumerate() {
            let stream_id = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let sender = open_stream(shm, name, stream_id, StartAt::Latest, &channel, options)?;
            senders.push((name.clone(), sender));
        }
        Ok(Self {
            loss: LossGenerator::new(options.debug_drop_rate, options.debug_seed),
            channel,
            socket,
            destination,
            senders,
            clock,
            buf: vec![0; MAX_MTU],
            out: SendBatch::new(),
            shm: shm.clone(),
            status_at: None,
            options: options.clone(),
            bad_tags: 0,
            replayed: 0,
            keys,
        })
    }

    fn now_ns(&self) -> MonoNs {
        self.clock.now()
    }

    /// Handles what arrived (NAKs, STATUS) and sends everything due; returns whether
    /// anything was received or sent. Never blocks.
    pub fn poll(&mut self) -> io::Result<bool> {
        if self
            .status_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            self.status_at = Some(Instant::now());
            self.write_status();
            self.follow_replaced_rings();
        }
        // Send first: a new record goes out before the receive syscall, which on an idle
        // socket finds nothing anyway; answers to what arrives go out right after.
        let mut busy = self.transmit()?;
        if self.receive()? {
            busy = true;
            self.transmit()?;
        }
        Ok(busy)
    }

    /// Handles the datagrams waiting on the socket, at most [`MAX_RECEIVED_PER_TURN`] (a
    /// flood of NAKs or strays must not keep the sender from its live data); returns
    /// whether there was any.
    fn receive(&mut self) -> io::Result<bool> {
        let mut busy = false;
        for _ in 0..MAX_RECEIVED_PER_TURN {
            match self.socket.recv_from(&mut self.buf) {
                Ok((len, _from)) => {
                    busy = true;
                    let now = self.now_ns();
                    let datagram = match &mut self.keys {
                        None => &self.buf[..len],
                        Some((_, opener)) => match opener.open(&mut self.buf[..len]) {
                            Ok(frame) => frame,
                            Err(OpenError::BadTag) => {
                                self.bad_tags += 1;
                                continue;
                            }
                            Err(OpenError::Replayed) => {
                                self.replayed += 1;
                                continue;
                            }
                        },
                    };
                    let stream_id = match Frame::parse(datagram) {
                        Ok(Frame::Nak(f)) => f.stream_id,
                        Ok(Frame::Status(f)) => f.stream_id,
                        _ => 0,
                    };
                    for (i, (_, sender)) in self.senders.iter_mut().enumerate() {
                        if stream_id == 0 || usize::try_from(stream_id).ok() == Some(i + 1) {
                            sender.handle_datagram(now, datagram);
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(busy)
    }

    /// Sends everything the senders have due; returns whether anything was.
    fn transmit(&mut self) -> io::Result<bool> {
        // Frames the socket refused last time go first: frames are never dropped for a
        // full socket buffer, the sender waits (its ring keeps the writer from waiting).
        let (socket, destination) = (&self.socket, self.destination);
        let mut busy = !self.out.is_empty();
        if busy && !self.out.flush(socket, destination)? {
            return Ok(true);
        }
        let now = self.now_ns();
        let (out, loss) = (&mut self.out, &mut self.loss);
        let mut sealer = self.keys.as_mut().map(|(sealer, _)| sealer);
        for (_, sender) in &mut self.senders {
            while let Some(frame) = sender.poll_transmit(now) {
                busy = true;
                if loss.drop_next(frame.len()) {
                    continue;
                }
                // the batch is flushed whenever full, so only an oversized frame is
                // refused — the state machines never build one
                if !out.push_sealed(frame, sealer.as_deref_mut()) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a {}-byte frame exceeds the datagram limit", frame.len()),
                    ));
                }
                if out.is_full() && !out.flush(socket, destination)? {
                    return Ok(true);
                }
            }
        }
        if !out.is_empty() {
            out.flush(socket, destination)?;
        }
        Ok(busy)
    }

    /// A served ring replaced by a new one of the same name (a publisher started afresh
    /// while this sender serves the directory): the stream is served anew from the new
    /// ring's first record, in a new session — its ring id tells receivers to replace
    /// their replicas. (A replaced ring can no longer be retransmitted from; receivers
    /// still repairing it are told so by the new session's SETUP.)
    fn follow_replaced_rings(&mut self) {
        for (i, (name, sender)) in self.senders.iter_mut().enumerate() {
            let replaced = sender.source_mut().writer_status(WallNs(0)).state
                == mdi_protocol::ring::WriterState::Superseded;
            if !replaced || sender.is_closing() {
                continue;
            }
            let stream_id = u32::try_from(i + 1).unwrap_or(u32::MAX);
            match open_stream(
                &self.shm,
                name,
                stream_id,
                StartAt::Earliest,
                &self.channel,
                &self.options,
            ) {
                Ok(fresh) => {
                    tracing::info!(
                        "{}: stream {name:?}: its ring was replaced; serving the new one",
                        self.channel
                    );
                    *sender = fresh;
                }
                Err(e) => tracing::warn!(
                    "{}: stream {name:?}: its ring was replaced, the new one cannot be opened: {e}",
                    self.channel
                ),
            }
        }
    }

    /// Writes each stream's counters and receivers for `mdstat` (`<stream>.udp-send`).
    fn write_status(&self) {
        let now = crate::clock::wall_clock_ns();
        let origin_ns = self.now_ns();
        for StreamStats {
            stream,
            counters: c,
            receivers,
        } in self.stats()
        {
            let mut lines: Vec<(String, String)> = [
                ("channel", self.channel.to_string()),
                ("data_frames", c.data_frames.to_string()),
                ("data_bytes", c.data_bytes.to_string()),
                ("retransmit_frames", c.retransmit_frames.to_string()),
                ("retransmit_bytes", c.retransmit_bytes.to_string()),
                ("naks", c.naks.to_string()),
                ("naks_coalesced", c.naks_coalesced.to_string()),
                ("naks_refused", c.naks_refused.to_string()),
                ("unavailable", c.unavailable.to_string()),
                ("flow_blocked", c.flow_blocked.to_string()),
                ("debug_dropped", self.loss.dropped().to_string()),
                ("bad_tags", self.bad_tags.to_string()),
                ("replayed", self.replayed.to_string()),
                ("receivers", receivers.len().to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            for (id, info) in receivers {
                lines.push((
                    "receiver".to_owned(),
                    format!(
                        "{id:016x} position={} lost={} seen_ms_ago={}",
                        info.position,
                        info.lost_records,
                        origin_ns.get().saturating_sub(info.last_seen_ns) / 1_000_000
                    ),
                ));
            }
            status::write(self.shm.path(), &stream, "udp-send", &lines, now);
        }
    }

    /// Bytes the slowest stream's sender is behind its ring's tail.
    pub fn lag_bytes(&mut self) -> u64 {
        self.senders
            .iter_mut()
            .map(|(_, s)| {
                let position = s.position();
                s.source_mut().tail().0.get().saturating_sub(position)
            })
            .max()
            .unwrap_or(0)
    }

    /// Stops serving new records: the senders linger answering NAKs, then send END.
    pub fn close(&mut self) {
        let now = self.now_ns();
        for (_, sender) in &mut self.senders {
            sender.close(now);
        }
    }

    /// True when every stream has sent END.
    pub fn is_closed(&self) -> bool {
        self.senders.iter().all(|(_, s)| s.is_closed())
    }

    /// How long until a sender has something to do regardless of new records.
    pub fn next_timeout(&self) -> Duration {
        let now = self.now_ns();
        self.senders
            .iter()
            .filter_map(|(_, s)| s.poll_timeout())
            .min()
            .map_or(Duration::from_millis(1), |at| {
                Duration::from_nanos(at.since(now))
            })
    }

    /// Per stream: counters and the receivers heard from (for `mdstat`-style reports).
    pub fn stats(&self) -> Vec<StreamStats> {
        self.senders
            .iter()
            .map(|(name, s)| StreamStats {
                stream: name.clone(),
                counters: s.counters(),
                receivers: s
                    .receivers()
                    .iter()
                    .map(|(id, info)| (*id, *info))
                    .collect(),
            })
            .collect()
    }

    /// True while some served ring still has a live writer, or records not yet sent.
    pub fn has_work(&mut self) -> bool {
        self.senders.iter_mut().any(|(_, s)| {
            let position = s.position();
            let source = s.source_mut();
            source.writer_status(WallNs(0)).state == mdi_protocol::ring::WriterState::Alive
                || source.tail().0.get() > position
        })
    }

    /// The address the sender sends from (and NAKs and STATUS come back to).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Datagrams refused because their tag did not verify under the channel's key.
    pub fn bad_tags(&self) -> u64 {
        self.bad_tags
    }

    /// Datagrams of a keyed channel refused as replays.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }

    /// The channel served.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Datagrams dropped by the loss generator.
    pub fn debug_dropped(&self) -> u64 {
        self.loss.dropped()
    }
}

/// When [`serve`] stops taking new records (and starts lingering). An interrupt always
/// stops it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeUntil {
    /// After this long.
    pub duration: Option<Duration>,
    /// Once every served ring's writer has exited and all its records are sent.
    pub writers_exit: bool,
}

/// Drives `senders` until `stop` is set or `until` says so, then closes them: they
/// linger answering NAKs and send END; returns when every one has ended.
pub fn serve(
    senders: &mut [UdpSender],
    stop: &AtomicBool,
    until: ServeUntil,
) -> Result<(), UdpServeError> {
    let started = Instant::now();
    let mut closing = false;
    let mut last_check = Instant::now();
    loop {
        let mut busy = false;
        for sender in senders.iter_mut() {
            busy |= sender.poll().map_err(|source| UdpServeError::Socket {
                channel: sender.channel().to_string(),
                source,
            })?;
        }
        if !closing {
            let expired = until.duration.is_some_and(|d| started.elapsed() >= d);
            let writers_gone =
                until.writers_exit && last_check.elapsed() >= Duration::from_millis(20) && {
                    last_check = Instant::now();
                    !senders.iter_mut().any(UdpSender::has_work)
                };
            if stop.load(Ordering::Relaxed) || expired || writers_gone {
                closing = true;
                senders.iter_mut().for_each(UdpSender::close);
            }
        } else if senders.iter().all(UdpSender::is_closed) {
            return Ok(());
        }
        if !busy {
            let wait = senders
                .iter()
                .map(UdpSender::next_timeout)
                .min()
                .unwrap_or(Duration::from_millis(1))
                .min(Duration::from_micros(100));
            std::thread::sleep(wait);
        }
    }
}
