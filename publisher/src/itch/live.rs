//! Receiving a live ITCH feed: the MoldUDP64 multicast through a socket (the group
//! joined on a chosen interface) or through DPDK, gaps re-requested from the
//! venue's request server (unicast), everything into an [`ItchFeed`].
//!
//! The feed arrives on a socket bound to the group's own address (so no unicast datagram
//! reaches it) or through DPDK. Re-requests go out through a unicast socket of their own,
//! and the answers that come back to it are taken only from the configured request
//! server: anything else is counted (`foreign_answers`) and dropped, so a stray or forged
//! datagram cannot inject messages.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mdi_protocol::ring::WriteError;

use super::feed::ItchFeed;
use mdi_itch::mold::{Output, Session, SessionConfig, SessionCounters, header_only};
#[cfg(feature = "dpdk")]
use mdi_itch::pcap::udp_datagram;

/// Where and how to receive.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// The feed's multicast group and port.
    pub group: SocketAddrV4,
    /// The local interface address to join the group on (`0.0.0.0`: the kernel's choice).
    pub interface: Ipv4Addr,
    /// The venue's re-request server; `None`: gaps are waited out, then reported lost.
    pub request_server: Option<SocketAddr>,
    /// The MoldUDP64 session's settings (timeouts, retries, …).
    pub session: SessionConfig,
    /// Spin on the receive instead of sleeping in it (lowest latency, a whole core).
    pub busy_poll: bool,
    /// Stop after the session's end-of-session packet (else only when told to stop).
    pub stop_at_end: bool,
}

impl LiveConfig {
    /// Receives `group` on any interface, no request server, stopping at the session end.
    pub fn new(group: SocketAddrV4) -> Self {
        Self {
            group,
            interface: Ipv4Addr::UNSPECIFIED,
            request_server: None,
            session: SessionConfig::default(),
            busy_poll: false,
            stop_at_end: true,
        }
    }
}

/// Why live receive stopped.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// Opening or using a socket.
    #[error("{what}: {source}")]
    Socket {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Writing the rings.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// DPDK.
    #[cfg(feature = "dpdk")]
    #[error(transparent)]
    Dpdk(#[from] super::dpdk::DpdkError),
}

fn socket_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LiveError {
    let what = what.into();
    move |source| LiveError::Socket { what, source }
}

/// What a live run saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveCounters {
    /// Datagrams received (feed and answers).
    pub datagrams: u64,
    /// Frames that were not UDP to the group (DPDK: parsed and skipped).
    pub other_frames: u64,
    /// Re-requests sent.
    pub requests_sent: u64,
    /// Re-requests the socket refused.
    pub request_errors: u64,
    /// Datagrams on the re-request socket from elsewhere than the request server
    /// (dropped).
    pub foreign_answers: u64,
    /// The MoldUDP64 session.
    pub session: SessionCounters,
}

/// The receive side.
#[derive(Debug)]
pub enum Receiver {
    /// A UDP socket joined to the group, and a socket for re-requests.
    Socket(UdpSocket, UdpSocket),
    /// A DPDK port (frames filtered on the group in user space) and a socket for
    /// re-requests.
    #[cfg(feature = "dpdk")]
    Dpdk(Box<super::dpdk::DpdkPort>, UdpSocket),
}

/// A UDP socket bound to the group's address and port and joined to the group on
/// `interface` (mdi's one socket policy: `mdi_transport::socket::join_group_only`).
pub fn multicast_socket(group: SocketAddrV4, interface: Ipv4Addr) -> Result<UdpSocket, LiveError> {
    mdi_transport::socket::join_group_only(group, interface)
        .map_err(socket_error(format!("receiving {group} on {interface}")))
}

/// The unicast socket re-requests go out through and their answers come back to.
fn request_socket() -> Result<UdpSocket, LiveError> {
    let requests = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .map_err(socket_error("binding the re-request socket"))?;
    requests
        .set_nonblocking(true)
        .map_err(socket_error("O_NONBLOCK"))?;
    Ok(requests)
}

impl Receiver {
    /// A socket receiver for `config`.
    pub fn socket(config: &LiveConfig) -> Result<Self, LiveError> {
        Ok(Self::Socket(
            multicast_socket(config.group, config.interface)?,
            request_socket()?,
        ))
    }

    /// A DPDK receiver: `port` gives the frames; re-requests go through a kernel socket.
    #[cfg(feature = "dpdk")]
    pub fn dpdk(port: super::dpdk::DpdkPort) -> Result<Self, LiveError> {
        Ok(Self::Dpdk(Box::new(port), request_socket()?))
    }

    fn request_socket(&self) -> &UdpSocket {
        match self {
            Self::Socket(_, socket) => socket,
            #[cfg(feature = "dpdk")]
            Self::Dpdk(_, socket) => socket,
        }
    }
}

/// Receives into `feed` until `stop` is set (or the session ends, if so configured);
/// `clock` gives receive times.
pub fn run(
    config: &LiveConfig,
    receiver: &mut Receiver,
    feed: &mut ItchFeed,
    stop: &AtomicBool,
    clock: fn() -> i64,
) -> Result<LiveCounters, LiveError> {
    let mut session = Session::new(config.session.clone());
    let mut counters = LiveCounters::default();
    let mut failed: Option<WriteError> = None;
    let mut buffer = vec![0u8; 65_536];
    let mut answer_buffer = vec![0u8; 65_536];
    let mut answers = Answers::default();
    match receiver {
        Receiver::Socket(socket, _) => {
            if config.busy_poll {
                socket.set_nonblocking(true)
            } else {
                // wakes at least every millisecond for timers and `stop`
                socket.set_read_timeout(Some(Duration::from_millis(1)))
            }
            .map_err(socket_error("setting the receive mode"))?;
        }
        #[cfg(feature = "dpdk")]
        Receiver::Dpdk(..) => {}
    }
    // re-requests go out (and answers come back) through a handle of their own
    let requests = receiver
        .request_socket()
        .try_clone()
        .map_err(socket_error("cloning the re-request socket"))?;
    // the session's timers run on a monotonic clock; receive times on the wall clock
    let session_clock = mdi_transport::clock::MonoClock::start();
    while !stop.load(Ordering::Relaxed) {
        if config.stop_at_end && session.ended() {
            break;
        }
        let now = clock();
        let tick = session_clock.now();
        // one packet's outputs: deliver, re-request
        let requests = &requests;
        let mut take = |output: Output<'_>| {
            if let Output::Request {
                session,
                seq,
                count,
            } = output
                && let Some(server) = config.request_server
            {
                match requests.send_to(&header_only(&session, seq, count), server) {
                    Ok(_) => counters.requests_sent += 1,
                    Err(e) => {
                        counters.request_errors += 1;
                        tracing::warn!(%server, "MoldUDP64 re-request not sent: {e}");
                    }
                }
            }
            if failed.is_none()
                && let Err(e) = feed.on_output(now, output)
            {
                failed = Some(e);
            }
        };
        session.on_timer(tick, &mut take);
        match receiver {
            Receiver::Socket(socket, _) => match socket.recv(&mut buffer) {
                Ok(n) => {
                    counters.datagrams += 1;
                    session.on_packet(tick, &buffer[..n], &mut take);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(socket_error("receiving")(e)),
            },
            #[cfg(feature = "dpdk")]
            Receiver::Dpdk(port, _) => {
                let group = config.group;
                port.poll(now, |frame| {
                    match udp_datagram(frame.data).filter(|d| d.destination == group) {
                        Some(datagram) => {
                            counters.datagrams += 1;
                            session.on_packet(tick, datagram.payload, &mut take);
                        }
                        None => counters.other_frames += 1,
                    }
                });
            }
        }
        // answers come only to requests: no syscall per turn while nothing is missing (a
        // late answer waits in the socket and is dropped as a duplicate)
        if session.in_gap() {
            receive_answers(
                requests,
                config.request_server,
                &mut answer_buffer,
                &mut answers,
                |packet| session.on_packet(tick, packet, &mut take),
            )?;
        }
        if let Some(e) = failed.take() {
            return Err(e.into());
        }
        feed.end_packet(now)?;
    }
    if session.ended() {
        // the session's last candles are final: no trade can still come
        feed.close_candles_before(feed.latest_exchange_ns())?;
    }
    counters.session = session.counters();
    counters.datagrams += answers.datagrams;
    counters.foreign_answers = answers.foreign;
    Ok(counters)
}

/// What came to the re-request socket.
#[derive(Debug, Default)]
struct Answers {
    datagrams: u64,
    /// Not from the request server: dropped.
    foreign: u64,
}

/// Takes what waits on the re-request socket (at most a batch, so the feed keeps
/// flowing): answers from `server` go to `on_answer`; datagrams from anywhere else are
/// counted and dropped.
fn receive_answers(
    requests: &UdpSocket,
    server: Option<SocketAddr>,
    buffer: &mut [u8],
    answers: &mut Answers,
    mut on_answer: impl FnMut(&[u8]),
) -> Result<(), LiveError> {
    for _ in 0..ANSWERS_PER_TURN {
        match requests.recv_from(buffer) {
            Ok((n, from)) => {
                answers.datagrams += 1;
                if Some(from) == server {
                    on_answer(&buffer[..n]);
                } else {
                    answers.foreign += 1;
                    if answers.foreign.is_power_of_two() {
                        tracing::warn!(
                            %from,
                            refused = answers.foreign,
                            "datagram on the re-request socket not from the request server: dropped"
                        );
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                break;
            }
            Err(e) => return Err(socket_error("receiving re-request answers")(e)),
        }
    }
    Ok(())
}

/// Re-request answers taken per loop turn at most.
const ANSWERS_PER_TURN: usize = 64;
