//! Replaying an ITCH feed from a file: a pcap of the MoldUDP64 multicast (through any
//! [`FrameSource`]: the pcap reader, or DPDK's `net_pcap` device), or a plain ITCH file
//! (length-prefixed messages, no MoldUDP64).

use std::io::Read;
use std::net::SocketAddrV4;

use mdi_protocol::ring::WriteError;

use super::feed::ItchFeed;
use mdi_itch::message::FileMessages;
use mdi_itch::mold::{Session, SessionConfig, SessionCounters};
use mdi_itch::pcap::{Frame, PcapError, PcapReader};
use mdi_protocol::time::MonoNs;

/// Where raw frames come from (Ethernet first).
pub trait FrameSource {
    /// The next frame, valid until the next call; `None` at the end.
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError>;
}

/// A frame source failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The pcap file.
    #[error(transparent)]
    Pcap(#[from] PcapError),
    /// The receive backend.
    #[error("{0}")]
    Backend(String),
}

impl<R: Read> FrameSource for PcapReader<R> {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        Ok(PcapReader::next_frame(self)?)
    }
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading the input.
    #[error(transparent)]
    Frames(#[from] FrameError),
    /// Reading a plain ITCH file.
    #[error("reading the ITCH file: {0}")]
    Io(#[from] std::io::Error),
    /// Writing the rings.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// What a replay read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayCounts {
    /// Frames read.
    pub frames: u64,
    /// Frames that were not UDP to the feed's group and port (skipped).
    pub other_frames: u64,
    /// The MoldUDP64 session's counters.
    pub session: SessionCounters,
    /// Plain files: bytes at the end that are not a whole message (0 for pcaps).
    pub bad_tail: u64,
    /// Stopped before the end.
    pub interrupted: bool,
}

/// Replays the MoldUDP64 datagrams among `frames` (those sent to `group`, if given) into
/// `feed`. `pace(capture_ns)` is called before each frame and returns the receive time
/// to stamp, or `None` to stop. No request server answers a replay: a gap is held for
/// 1 ms of capture time (reordering), then reported lost with its exact size.
pub fn replay_frames(
    frames: &mut dyn FrameSource,
    group: Option<SocketAddrV4>,
    feed: &mut ItchFeed,
    mut pace: impl FnMut(i64) -> Option<i64>,
) -> Result<ReplayCounts, ReplayError> {
    let mut session = Session::new(SessionConfig {
        request_timeout_ns: 1_000_000,
        max_retries: 0,
        ..SessionConfig::default()
    });
    let mut counts = ReplayCounts::default();
    let mut failed = None;
    let mut last_receive = 0;
    // the session's clock in a replay is the capture's, kept monotone (captures reorder)
    let mut session_now = MonoNs(0);
    while let Some(frame) = frames.next_frame()? {
        counts.frames += 1;
        feed.date_from(frame.time_ns);
        let Some(receive_ns) = pace(frame.time_ns) else {
            counts.interrupted = true;
            break;
        };
        last_receive = receive_ns;
        let Some(datagram) = frame
            .datagram()
            .filter(|d| group.is_none_or(|g| g == d.destination))
        else {
            counts.other_frames += 1;
            continue;
        };
        let mut take = |output: mdi_itch::mold::Output<'_>| {
            if failed.is_none()
                && let Err(e) = feed.on_output(receive_ns, output)
            {
                failed = Some(e);
            }
        };
        session_now = session_now.max(MonoNs(frame.time_ns.max(0).cast_unsigned()));
        session.on_timer(session_now, &mut take);
        session.on_packet(session_now, datagram.payload, &mut take);
        if let Some(e) = failed.take() {
            return Err(e.into());
        }
        feed.end_packet(receive_ns)?;
    }
    // the end: what is still missing will not come
    session.finish(&mut |output| {
        if failed.is_none()
            && let Err(e) = feed.on_output(last_receive, output)
        {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    feed.end_packet(last_receive)?;
    if !counts.interrupted {
        // the candles the session completed are final now
        feed.close_candles_before(feed.latest_exchange_ns())?;
    }
    counts.session = session.counters();
    Ok(counts)
}

/// Replays a plain ITCH file (NASDAQ's length-prefixed messages) into `feed`: message
/// `n` gets venue sequence `n` (from 1); each message is its own packet.
pub fn replay_file(
    mut input: impl Read,
    feed: &mut ItchFeed,
    mut pace: impl FnMut() -> Option<i64>,
) -> Result<ReplayCounts, ReplayError> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    let mut counts = ReplayCounts::default();
    for (message, seq) in FileMessages::new(&bytes).zip(1u64..) {
        let Some(receive_ns) = pace() else {
            counts.interrupted = true;
            break;
        };
        match message {
            Ok(message) => {
                feed.on_message(receive_ns, seq, message)?;
                feed.end_packet(receive_ns)?;
            }
            Err(e) => {
                tracing::warn!("{e}");
                counts.bad_tail = (bytes.len() - e.offset) as u64;
            }
        }
    }
    if !counts.interrupted {
        feed.close_candles_before(feed.latest_exchange_ns())?;
    }
    Ok(counts)
}
