//! The venue's side of a live MoldUDP64 feed, for `mdfeedsim` and tests: packets sent to
//! a multicast group at a chosen rate, re-requests answered from a unicast request
//! server, the end of session repeated while lingering (so a receiver that lost it
//! still learns where the session ends).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::mold::{Packet, RequestServer, SessionId};

/// How to send.
#[derive(Debug, Clone)]
pub struct VenueConfig {
    /// The multicast group and port.
    pub group: SocketAddrV4,
    /// The local interface address multicast leaves from.
    pub interface: Ipv4Addr,
    /// Where the request server listens (unicast); `None`: no re-requests answered.
    pub request_server: Option<SocketAddrV4>,
    /// Packets per second; 0: as fast as the socket takes them.
    pub rate: u64,
    /// Leave out every Nth packet (loss at the source; re-requests repair it).
    pub drop_every: Option<u64>,
    /// After the last packet, keep answering (and repeating the end) this long.
    pub linger: Duration,
    /// Multicast TTL (1: this network only).
    pub ttl: u32,
}

/// What the venue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VenueCounters {
    /// Packets sent to the group.
    pub sent: u64,
    /// Packets left out (`drop_every`).
    pub dropped: u64,
    /// Re-requests answered, and ignored (other session, unknown range, junk).
    pub answered: u64,
    /// Re-requests ignored.
    pub ignored: u64,
    /// Packets sent in answer.
    pub answer_packets: u64,
}

/// Why the venue stopped.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct VenueError {
    what: String,
    source: std::io::Error,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VenueError {
    let what = what.into();
    move |source| VenueError { what, source }
}

/// Sends `packets` (as [`crate::sim::packets`] makes them: the last one ends the session)
/// as `config` says, answering re-requests, until done (or `stop`).
pub fn run(
    config: &VenueConfig,
    session: SessionId,
    packets: &[(u64, Vec<u8>)],
    stop: &AtomicBool,
) -> Result<VenueCounters, VenueError> {
    let feed = mdi_transport::socket::multicast_sender(config.interface, config.ttl)
        .map_err(io("opening the feed socket"))?;
    let requests = match config.request_server {
        Some(address) => {
            let socket = UdpSocket::bind(address)
                .map_err(io(format!("binding the request server on {address}")))?;
            socket.set_nonblocking(true).map_err(io("O_NONBLOCK"))?;
            Some(socket)
        }
        None => None,
    };
    let mut server = RequestServer::new(session, 1_400);
    for (_, packet) in packets {
        if let Ok(parsed) = Packet::parse(packet) {
            parsed.messages().for_each(|m| server.push(m));
        }
    }
    let mut counters = VenueCounters::default();
    let mut buffer = [0u8; 64];
    let mut answer = |counters: &mut VenueCounters| -> Result<(), VenueError> {
        let Some(socket) = &requests else {
            return Ok(());
        };
        // bounded: at most 64 requests per call
        for _ in 0..64 {
            match socket.recv_from(&mut buffer) {
                Ok((n, from)) => {
                    let mut sent = Ok(());
                    server.answer(&buffer[..n], |p| {
                        counters.answer_packets += 1;
                        if sent.is_ok() {
                            sent = socket.send_to(p, from).map(|_| ());
                        }
                    });
                    sent.map_err(io(format!("answering {from}")))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(io("receiving re-requests")(e)),
            }
        }
        (counters.answered, counters.ignored) = server.counters();
        Ok(())
    };
    let started = Instant::now();
    let interval = (config.rate > 0).then(|| Duration::from_secs_f64(1.0 / config.rate as f64));
    for (index, (_, packet)) in packets.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            return Ok(counters);
        }
        if let Some(interval) = interval {
            let due = interval * u32::try_from(index).unwrap_or(u32::MAX);
            while started.elapsed() < due {
                answer(&mut counters)?;
                std::hint::spin_loop();
            }
        }
        let last = index + 1 == packets.len();
        if !last
            && config
                .drop_every
                .is_some_and(|n| n > 0 && (index as u64 + 1).is_multiple_of(n))
        {
            counters.dropped += 1;
            continue;
        }
        send(&feed, packet, config.group)?;
        counters.sent += 1;
        if index % 16 == 0 {
            answer(&mut counters)?;
        }
    }
    // linger: answer re-requests, repeat the end of session every 50 ms
    let end = Instant::now() + config.linger;
    let mut repeat = Instant::now();
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        answer(&mut counters)?;
        if repeat.elapsed() >= Duration::from_millis(50)
            && let Some((_, last)) = packets.last()
        {
            send(&feed, last, config.group)?;
            repeat = Instant::now();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(counters)
}

fn send(socket: &UdpSocket, packet: &[u8], group: SocketAddrV4) -> Result<(), VenueError> {
    // a full socket buffer is waited out, not dropped
    loop {
        match socket.send_to(packet, group) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => return Err(io(format!("sending to {group}"))(e)),
        }
    }
}
