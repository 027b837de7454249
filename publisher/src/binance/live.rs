//! The live Binance feed: combined-stream WebSocket connections over TLS, REST depth
//! snapshots, and everything that keeps them flowing into the [`Normalizer`].
//!
//! - Streams are split into connections of at most 1024 streams (Binance's limit), given
//!   in the URL (no SUBSCRIBE messages, so the 5 messages/s limit is never approached).
//! - Server pings are answered with pongs echoing the payload (tungstenite queues the
//!   pong and sends it with the next read).
//! - A connection that drops is replaced with exponential backoff and jitter; the feed is
//!   reported down (FeedStatus, K-lines flagged) until data flows again.
//! - Before a connection reaches its maximum age (Binance closes at 24 h) or when the
//!   server announces `serverShutdown`, a second connection is opened. Its frames are
//!   held back while the old one goes on; once the new one has delivered for
//!   `rollover_overlap`, the old one is closed, its last frames are taken, and then the
//!   held-back frames — which overlap them — go through the normalizer, which drops what
//!   it has already seen by venue id. Nothing is lost, nothing doubled, and ids never go
//!   backwards on the way in.
//! - Order books wanting a snapshot get one from `GET /api/v3/depth` (one request per
//!   symbol in flight, retried with backoff).
//! - Everything received can be written to a capture ([`CaptureWriter`]) for replay.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::binance::capture::CaptureWriter;
use crate::binance::normalize::{Normalizer, NormalizerCounters};
use mdi_transport::wall_clock_ns;

/// Binance's stream limit per connection.
pub const MAX_STREAMS_PER_CONNECTION: usize = 1024;

/// How to reach Binance and what to subscribe to.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// WebSocket base, e.g. `wss://stream.binance.com:9443` (or a local test server).
    pub ws_base: String,
    /// REST base, e.g. `https://api.binance.com`.
    pub rest_base: String,
    /// Stream names, e.g. `btcusdt@trade`, `btcusdt@depth@100ms`.
    pub streams: Vec<String>,
    /// Open a replacement connection when one is this old (Binance's limit is 24 h).
    pub max_connection_age: Duration,
    /// First reconnect delay; doubles up to `reconnect_max`, with ±50 % jitter.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// A connection attempt (TCP + TLS + upgrade) gives up after this long.
    pub connect_timeout: Duration,
    /// No frame for this long: the connection is taken as dead and replaced.
    pub idle_timeout: Duration,
    /// How long a replacement connection must have delivered before the old one is
    /// closed (the two overlap by at least this much).
    pub rollover_overlap: Duration,
    /// Depth snapshot size (`limit`).
    pub snapshot_limit: u32,
    /// An extra trusted CA certificate (PEM), for test servers and TLS proxies.
    pub extra_ca: Option<PathBuf>,
    /// Ask for microsecond timestamps (`timeUnit=MICROSECOND`).
    pub microseconds: bool,
    /// A connection whose events arrive more than this late (receive − event time)…
    pub lag_limit: Duration,
    /// …for this long is reported lagging (FeedStatus `lagging`, then `caught_up`).
    pub lag_sustain: Duration,
    /// Write the feed's counters for `mdstat` (`<dir>/<ticks>.feed`) about once a second
    /// to this directory; `None`: not at all.
    pub status_dir: Option<PathBuf>,
}

impl LiveConfig {
    /// Binance spot's public endpoints for `streams`.
    pub fn binance(streams: Vec<String>) -> Self {
        Self {
            ws_base: "wss://stream.binance.com:9443".into(),
            rest_base: "https://api.binance.com".into(),
            streams,
            max_connection_age: Duration::from_secs(23 * 3600 + 50 * 60),
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            rollover_overlap: Duration::from_secs(1),
            snapshot_limit: 5000,
            extra_ca: None,
            microseconds: false,
            lag_limit: Duration::from_secs(2),
            lag_sustain: Duration::from_secs(5),
            status_dir: None,
        }
    }
}

/// Setting up the live feed failed.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// TLS configuration (the extra CA file).
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The async runtime.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// Writing a ring.
    #[error("writing a ring: {0}")]
    Ring(#[from] mdi_protocol::ring::WriteError),
    /// Writing the capture.
    #[error("writing the capture: {0}")]
    Capture(std::io::Error),
    /// No streams to subscribe to.
    #[error("no streams configured")]
    NoStreams,
}

/// What the live feed did, beyond the normalizer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveCounters {
    /// Connections established.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Connections that dropped (not closed by us).
    pub disconnects: u64,
    /// Replacement connections opened before the old one was closed (age or
    /// `serverShutdown`).
    pub rollovers: u64,
    /// Pings received from the server (each answered with a pong).
    pub pings: u64,
    /// Binary or otherwise unusable WebSocket messages.
    pub other_messages: u64,
    /// REST snapshots fetched.
    pub snapshots: u64,
    /// REST snapshot requests that failed.
    pub snapshot_failures: u64,
    /// The largest lag of any connection (receive − event time, ms).
    pub max_lag_ms: i64,
    /// Times a connection was reported lagging.
    pub lagging_reports: u64,
    /// The normalizer's counters at the end.
    pub normalizer: NormalizerCounters,
}

/// Builds the TLS client configuration: the web PKI roots, plus `extra_ca` if given.
pub fn tls_config(
    extra_ca: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, LiveError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let file = std::fs::File::open(path)
            .map_err(|e| LiveError::Tls(format!("{}: {e}", path.display())))?;
        let mut added = 0;
        for cert in CertificateDer::pem_reader_iter(file) {
            let cert = cert.map_err(|e| LiveError::Tls(format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| LiveError::Tls(format!("{}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(LiveError::Tls(format!(
                "{}: no PEM certificate in it",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LiveError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// What connection tasks and snapshot fetches tell the feed loop.
enum Note {
    Connected {
        slot: usize,
        conn: u64,
    },
    ConnectFailed {
        slot: usize,
        conn: u64,
        reason: String,
    },
    Frame {
        slot: usize,
        conn: u64,
        receive_ns: i64,
        text: String,
    },
    Ping,
    Other,
    Closed {
        slot: usize,
        conn: u64,
        reason: String,
    },
    Snapshot {
        symbol: String,
        receive_ns: i64,
        body: Result<String, String>,
    },
}

/// One group of ≤ 1024 streams and its connections.
struct Slot {
    url: String,
    /// The connection whose frames we rely on.
    active: Option<Conn>,
    /// A replacement being opened (rollover) or reconnecting.
    pending: Option<Conn>,
    /// Consecutive failed attempts (for backoff).
    failures: u32,
    /// When the next attempt may start.
    retry_at: Option<Instant>,
    /// The slot lost its connection and has not had data since.
    down: bool,
    /// How late its frames arrive.
    lag: crate::pipeline::LagMeter,
}

struct Conn {
    id: u64,
    /// To be replaced now (the server announced its shutdown).
    retire: bool,
    opened: Instant,
    last_frame: Instant,
    /// A replacement's frames, held back until the old connection is closed.
    held: Vec<(i64, String)>,
    /// When a replacement first delivered.
    first_data: Option<Instant>,
    /// The old connection was told to close; the held frames go through once it has.
    switching: bool,
    close: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Conn {
    fn close(&mut self) {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
    }
}

/// Runs the live feed into `normalizer` until `stop` is set, recording everything to
/// `capture` if given. Blocks the calling thread (a single-threaded runtime inside).
pub fn run(
    config: &LiveConfig,
    normalizer: &mut Normalizer,
    mut capture: Option<&mut CaptureWriter>,
    stop: &AtomicBool,
) -> Result<LiveCounters, LiveError> {
    if config.streams.is_empty() {
        return Err(LiveError::NoStreams);
    }
    let tls = tls_config(config.extra_ca.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let agent = ureq::AgentBuilder::new()
        .tls_config(Arc::clone(&tls))
        .timeout(Duration::from_secs(10))
        .build();
    if let Some(capture) = capture.as_deref_mut() {
        let now = wall_clock_ns();
        for spec in normalizer.instrument_specs() {
            capture.instrument(now, &spec).map_err(LiveError::Capture)?;
        }
    }
    let mut counters = LiveCounters::default();
    let (notes, mut inbox) = mpsc::unbounded_channel::<Note>();
    let mut slots: Vec<Slot> = connection_urls(config)
        .into_iter()
        .map(|url| Slot {
            url,
            active: None,
            pending: None,
            failures: 0,
            retry_at: Some(Instant::now()),
            down: false,
            lag: crate::pipeline::LagMeter::default(),
        })
        .collect();
    let mut status_at = Instant::now();
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let lag_limits = (millis(config.lag_limit), millis(config.lag_sustain));
    let mut next_conn = 1u64;
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut snapshot_retry: HashMap<String, (u32, Instant)> = HashMap::new();
    let jitter_seed = wall_clock_ns().unsigned_abs();
    let result = runtime.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while !stop.load(Ordering::Relaxed) {
            let note = tokio::select! {
                note = inbox.recv() => note,
                _ = tick.tick() => None,
            };
            // this note and what else is queued, before the housekeeping below
            let mut next = note;
            while let Some(note) = next {
                handle_note(
                    note,
                    &mut slots,
                    normalizer,
                    capture.as_deref_mut(),
                    &mut counters,
                    &mut in_flight,
                    &mut snapshot_retry,
                    lag_limits,
                )?;
                next = inbox.try_recv().ok();
            }
            let now = Instant::now();
            normalizer.on_timer(wall_clock_ns())?;
            if now.duration_since(status_at) >= Duration::from_secs(1) {
                status_at = now;
                write_feed_status(config, normalizer, &slots, &counters);
            }
            for (index, slot) in slots.iter_mut().enumerate() {
                // connection lifecycle: first connect, reconnect, rollover, idle
                if slot
                    .active
                    .as_ref()
                    .is_some_and(|a| now.duration_since(a.last_frame) >= config.idle_timeout)
                {
                    tracing::warn!(
                        "{}: no frame for {:?}: reconnecting",
                        slot.url,
                        config.idle_timeout
                    );
                    if let Some(mut conn) = slot.active.take() {
                        conn.close();
                    }
                    counters.disconnects += 1;
                    mark_down(slot, normalizer, capture.as_deref_mut(), "idle timeout")?;
                }
                let wants_connection = slot.pending.is_none()
                    && slot.active.as_ref().is_none_or(|a| {
                        a.retire || now.duration_since(a.opened) >= config.max_connection_age
                    });
                if wants_connection && slot.retry_at.is_none() {
                    // the first attempt of a rollover goes at once; retries back off
                    let delay = if slot.active.is_some() && slot.failures == 0 {
                        Duration::ZERO
                    } else {
                        backoff(config, slot.failures, jitter_seed ^ next_conn)
                    };
                    slot.retry_at = Some(now + delay);
                }
                if wants_connection && slot.retry_at.is_some_and(|at| now >= at) {
                    slot.retry_at = None;
                    if slot.active.is_some() {
                        counters.rollovers += 1;
                    }
                    let conn = next_conn;
                    next_conn += 1;
                    let (close, closed) = tokio::sync::oneshot::channel();
                    slot.pending = Some(Conn {
                        id: conn,
                        retire: false,
                        opened: now,
                        last_frame: now,
                        held: Vec::new(),
                        first_data: None,
                        switching: false,
                        close: Some(close),
                    });
                    tokio::spawn(connection(
                        index,
                        conn,
                        slot.url.clone(),
                        Arc::clone(&tls),
                        config.connect_timeout,
                        notes.clone(),
                        closed,
                    ));
                }
                if let Some(pending) = &mut slot.pending
                    && !pending.switching
                    && pending
                        .first_data
                        .is_some_and(|at| now.duration_since(at) >= config.rollover_overlap)
                {
                    pending.switching = true;
                    if let Some(old) = slot.active.as_mut() {
                        old.close();
                    }
                }
            }
            // order books that want a snapshot
            for symbol in normalizer.wanting_snapshots() {
                if in_flight.contains(&symbol) {
                    continue;
                }
                if let Some(&(_, at)) = snapshot_retry.get(&symbol)
                    && now < at
                {
                    continue;
                }
                in_flight.insert(symbol.clone());
                let url = format!(
                    "{}/api/v3/depth?symbol={symbol}&limit={}",
                    config.rest_base.trim_end_matches('/'),
                    config.snapshot_limit
                );
                let agent = agent.clone();
                let notes = notes.clone();
                std::thread::spawn(move || {
                    let body = agent
                        .get(&url)
                        .call()
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.into_string().map_err(|e| e.to_string()));
                    let _ = notes.send(Note::Snapshot {
                        symbol,
                        receive_ns: wall_clock_ns(),
                        body,
                    });
                });
            }
        }
        Ok::<(), LiveError>(())
    });
    for slot in &mut slots {
        for mut conn in [slot.active.take(), slot.pending.take()]
            .into_iter()
            .flatten()
        {
            conn.close();
        }
    }
    result?;
    if let Some(capture) = capture {
        capture.flush().map_err(LiveError::Capture)?;
    }
    counters.normalizer = normalizer.counters();
    if let Some(dir) = &config.status_dir {
        mdi_transport::status::remove(dir, normalizer.rings().ticks.name(), "feed");
    }
    Ok(counters)
}

/// The combined-stream URL of each connection: at most 1024 streams each.
pub fn connection_urls(config: &LiveConfig) -> Vec<String> {
    config
        .streams
        .chunks(MAX_STREAMS_PER_CONNECTION)
        .map(|chunk| {
            format!(
                "{}/stream?streams={}{}",
                config.ws_base.trim_end_matches('/'),
                chunk.join("/"),
                if config.microseconds {
                    "&timeUnit=MICROSECOND"
                } else {
                    ""
                }
            )
        })
        .collect()
}

/// Instrument exponents for `symbols` from `GET /api/v3/exchangeInfo` (tick and step
/// sizes).
pub fn fetch_exchange_info(
    config: &LiveConfig,
    symbols: &[String],
) -> Result<Vec<crate::binance::normalize::InstrumentSpec>, String> {
    let tls = tls_config(config.extra_ca.as_deref()).map_err(|e| e.to_string())?;
    let agent = ureq::AgentBuilder::new()
        .tls_config(tls)
        .timeout(Duration::from_secs(10))
        .build();
    let list = symbols
        .iter()
        .map(|s| format!("%22{s}%22"))
        .collect::<Vec<_>>()
        .join(",");
    let url = format!(
        "{}/api/v3/exchangeInfo?symbols=%5B{list}%5D",
        config.rest_base.trim_end_matches('/')
    );
    let body = agent
        .get(&url)
        .call()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|e| e.to_string())?;
    crate::config::exponents_from_exchange_info(&body)
}

/// Exponential backoff with ±50 % jitter.
fn backoff(config: &LiveConfig, failures: u32, seed: u64) -> Duration {
    let base = config
        .reconnect_min
        .saturating_mul(1u32 << failures.min(16))
        .min(config.reconnect_max);
    let mut x = seed | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let factor = 0.5 + (x % 1_000) as f64 / 1_000.0;
    base.mul_f64(factor)
}

fn mark_down(
    slot: &mut Slot,
    normalizer: &mut Normalizer,
    capture: Option<&mut CaptureWriter>,
    reason: &str,
) -> Result<(), LiveError> {
    if slot.down {
        return Ok(());
    }
    slot.down = true;
    let now = wall_clock_ns();
    if let Some(capture) = capture {
        capture.feed_down(now, reason).map_err(LiveError::Capture)?;
    }
    normalizer.feed_down(now, reason)?;
    Ok(())
}

/// The lag of the frame just handed to `normalizer` on `slot`; a sustained lag, and the
/// end of one, become FeedStatus records.
fn lag(
    slot: &mut Slot,
    normalizer: &mut Normalizer,
    counters: &mut LiveCounters,
    receive_ns: i64,
    (limit_ms, sustain_ms): (i64, i64),
) -> Result<(), LiveError> {
    let Some(event_ns) = normalizer.frame_event_ns() else {
        return Ok(());
    };
    let change = slot.lag.observe(event_ns, receive_ns, limit_ms, sustain_ms);
    counters.max_lag_ms = counters.max_lag_ms.max(slot.lag.last_ms);
    if let Some(change) = change {
        if matches!(change, crate::pipeline::LagChange::Lagging(_)) {
            counters.lagging_reports += 1;
            tracing::warn!("{}: {change:?}", slot.url);
        }
        normalizer.lag_changed(receive_ns, change, &slot.url)?;
    }
    Ok(())
}

/// The feed's counters for `mdstat`: `<status_dir>/<ticks>.feed`.
fn write_feed_status(
    config: &LiveConfig,
    normalizer: &Normalizer,
    slots: &[Slot],
    counters: &LiveCounters,
) {
    let Some(dir) = &config.status_dir else {
        return;
    };
    let n = normalizer.counters();
    let mut lines: Vec<(String, String)> = [
        ("frames", n.frames),
        ("trades", n.trades),
        ("klines", n.klines),
        ("late_trades", n.late_trades),
        ("late_unplaced", n.late_unplaced),
        ("kline_corrections", n.kline_corrections),
        ("gaps", n.gaps),
        ("missing", n.missing),
        ("book_resyncs", n.book_resyncs),
        ("malformed", n.malformed),
        ("unknown_events", n.unknown_events),
        ("unknown_symbols", n.unknown_symbols),
        ("out_of_range", n.out_of_range),
        ("duplicates", n.duplicates),
        ("server_shutdowns", n.server_shutdowns),
        ("disconnects", counters.disconnects),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_string()))
    .collect();
    lines.push(("venue".to_owned(), "binance".to_owned()));
    for slot in slots {
        lines.push((
            "connection".to_owned(),
            format!(
                "{} lag_ms={} max_lag_ms={} lagging={}",
                slot.url,
                slot.lag.last_ms,
                slot.lag.max_ms,
                u8::from(slot.lag.lagging)
            ),
        ));
    }
    let stream = normalizer.rings().ticks.name();
    mdi_transport::status::write(dir, stream, "feed", &lines, wall_clock_ns());
}

/// The reason a connection task reports when we closed it.
const CLOSED_BY_US: &str = "closed by mdpub";

/// One frame through capture and normalizer; `serverShutdown` retires the connection.
fn frame(
    slot: &mut Slot,
    normalizer: &mut Normalizer,
    capture: Option<&mut CaptureWriter>,
    receive_ns: i64,
    text: &str,
) -> Result<(), LiveError> {
    if let Some(capture) = capture {
        capture
            .frame(receive_ns, text)
            .map_err(LiveError::Capture)?;
    }
    let before = normalizer.counters().server_shutdowns;
    normalizer.on_frame(receive_ns, text)?;
    if normalizer.counters().server_shutdowns > before
        && slot.pending.is_none()
        && let Some(active) = slot.active.as_mut()
    {
        tracing::info!("{}: serverShutdown: opening a replacement", slot.url);
        active.retire = true;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn handle_note(
    note: Note,
    slots: &mut [Slot],
    normalizer: &mut Normalizer,
    mut capture: Option<&mut CaptureWriter>,
    counters: &mut LiveCounters,
    in_flight: &mut HashSet<String>,
    snapshot_retry: &mut HashMap<String, (u32, Instant)>,
    lag_limits: (i64, i64),
) -> Result<(), LiveError> {
    match note {
        Note::Connected { slot, conn } => {
            counters.connects += 1;
            tracing::info!("{}: connected (connection {conn})", slots[slot].url);
        }
        Note::ConnectFailed { slot, conn, reason } => {
            counters.connect_failures += 1;
            let s = &mut slots[slot];
            if s.pending.as_ref().is_some_and(|p| p.id == conn) {
                s.pending = None;
                s.failures += 1;
            }
            tracing::warn!("{}: connection failed: {reason}", s.url);
            if s.active.is_none() {
                mark_down(s, normalizer, capture, &reason)?;
            }
        }
        Note::Frame {
            slot,
            conn,
            receive_ns,
            text,
        } => {
            let s = &mut slots[slot];
            let now = Instant::now();
            if let Some(pending) = s.pending.as_mut().filter(|p| p.id == conn) {
                pending.last_frame = now;
                if s.active.is_some() {
                    // a replacement: held back until the old connection is closed
                    pending.first_data.get_or_insert(now);
                    pending.held.push((receive_ns, text));
                    return Ok(());
                }
                // a reconnect: it becomes the active connection at once
                let fresh = s.pending.take().expect("checked");
                s.active = Some(fresh);
                s.failures = 0;
            } else if let Some(active) = s.active.as_mut().filter(|a| a.id == conn) {
                active.last_frame = now;
            }
            if s.down {
                s.down = false;
                if let Some(capture) = capture.as_deref_mut() {
                    capture.feed_up(receive_ns).map_err(LiveError::Capture)?;
                }
                normalizer.feed_up(receive_ns)?;
            }
            frame(s, normalizer, capture, receive_ns, &text)?;
            lag(s, normalizer, counters, receive_ns, lag_limits)?;
        }
        Note::Ping => counters.pings += 1,
        Note::Other => counters.other_messages += 1,
        Note::Closed { slot, conn, reason } => {
            let s = &mut slots[slot];
            if s.active.as_ref().is_some_and(|a| a.id == conn) {
                s.active = None;
                if let Some(mut fresh) =
                    s.pending.take_if(|p| p.switching || p.first_data.is_some())
                {
                    // rollover done: the old connection's frames are all in; now the
                    // replacement's held-back ones (the overlap is dropped as duplicates)
                    let held = std::mem::take(&mut fresh.held);
                    fresh.switching = false;
                    fresh.first_data = None;
                    s.active = Some(fresh);
                    s.failures = 0;
                    for (receive_ns, text) in held {
                        frame(s, normalizer, capture.as_deref_mut(), receive_ns, &text)?;
                        lag(s, normalizer, counters, receive_ns, lag_limits)?;
                    }
                    if reason != CLOSED_BY_US {
                        tracing::info!("{}: old connection ended: {reason}", s.url);
                    }
                    return Ok(());
                }
                if reason == CLOSED_BY_US {
                    return Ok(());
                }
                counters.disconnects += 1;
                tracing::warn!("{}: connection lost: {reason}", s.url);
                if s.pending.is_none() {
                    mark_down(s, normalizer, capture, &reason)?;
                }
            } else if s.pending.as_ref().is_some_and(|p| p.id == conn) {
                s.pending = None;
                s.failures += 1;
                counters.disconnects += 1;
                if s.active.is_none() {
                    mark_down(s, normalizer, capture, &reason)?;
                }
            }
        }
        Note::Snapshot {
            symbol,
            receive_ns,
            body,
        } => {
            in_flight.remove(&symbol);
            match body {
                Ok(body) => {
                    counters.snapshots += 1;
                    snapshot_retry.remove(&symbol);
                    if let Some(capture) = capture {
                        capture
                            .snapshot(receive_ns, &symbol, &body)
                            .map_err(LiveError::Capture)?;
                    }
                    normalizer.on_snapshot(receive_ns, &symbol, &body)?;
                }
                Err(reason) => {
                    counters.snapshot_failures += 1;
                    let entry = snapshot_retry
                        .entry(symbol.clone())
                        .or_insert((0, Instant::now()));
                    entry.0 += 1;
                    let delay = Duration::from_millis(250).saturating_mul(1 << entry.0.min(7));
                    entry.1 = Instant::now() + delay;
                    tracing::warn!(
                        "depth snapshot for {symbol} failed ({reason}); retrying in {delay:?}"
                    );
                }
            }
        }
    }
    Ok(())
}

/// One WebSocket connection: connects, forwards what arrives, answers pings, ends when
/// told to close or when the server goes away.
async fn connection(
    slot: usize,
    conn: u64,
    url: String,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    notes: mpsc::UnboundedSender<Note>,
    mut close: tokio::sync::oneshot::Receiver<()>,
) {
    let connector = tokio_tungstenite::Connector::Rustls(tls);
    let attempt =
        tokio_tungstenite::connect_async_tls_with_config(url.as_str(), None, true, Some(connector));
    let mut socket = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok((socket, _response))) => socket,
        Ok(Err(e)) => {
            let _ = notes.send(Note::ConnectFailed {
                slot,
                conn,
                reason: e.to_string(),
            });
            return;
        }
        Err(_) => {
            let _ = notes.send(Note::ConnectFailed {
                slot,
                conn,
                reason: format!("no connection within {timeout:?}"),
            });
            return;
        }
    };
    let _ = notes.send(Note::Connected { slot, conn });
    let reason = loop {
        tokio::select! {
            _ = &mut close => {
                let _ = socket.close(None).await;
                break CLOSED_BY_US.to_owned();
            }
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let receive_ns = wall_clock_ns();
                    if notes.send(Note::Frame { slot, conn, receive_ns, text: text.as_str().to_owned() }).is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Ping(_))) => {
                    // tungstenite has queued the pong (echoing the payload): send it now
                    let _ = socket.flush().await;
                    let _ = notes.send(Note::Ping);
                }
                Some(Ok(Message::Pong(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    break frame.map_or_else(|| "closed by the server".to_owned(), |f| format!("closed by the server: {} {}", f.code, f.reason));
                }
                Some(Ok(_)) => {
                    let _ = notes.send(Note::Other);
                }
                Some(Err(e)) => break e.to_string(),
                None => break "connection ended".to_owned(),
            }
        }
    };
    let _ = notes.send(Note::Closed { slot, conn, reason });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_split_at_binances_limit() {
        let streams: Vec<String> = (0..1030).map(|i| format!("s{i}usdt@trade")).collect();
        let mut config = LiveConfig::binance(streams);
        config.ws_base = "wss://example.test/".into();
        config.microseconds = true;
        let urls = connection_urls(&config);
        assert_eq!(urls.len(), 2);
        let count = |url: &str| url.split_once("streams=").unwrap().1.split('/').count();
        assert_eq!((count(&urls[0]), count(&urls[1])), (1024, 6));
        assert!(
            urls[0].starts_with("wss://example.test/stream?streams=s0usdt@trade/s1usdt@trade/")
        );
        assert!(urls[1].ends_with("s1029usdt@trade&timeUnit=MICROSECOND"));
    }

    #[test]
    fn reconnect_delays_grow_with_jitter_and_a_cap() {
        let config = LiveConfig::binance(vec!["x@trade".into()]);
        for seed in 0..50 {
            let first = backoff(&config, 0, seed);
            assert!(first >= config.reconnect_min / 2 && first <= config.reconnect_min * 3 / 2);
            let late = backoff(&config, 30, seed);
            assert!(late >= config.reconnect_max / 2 && late <= config.reconnect_max * 3 / 2);
        }
        let spread: std::collections::HashSet<_> =
            (0..50).map(|s| backoff(&config, 3, s)).collect();
        assert!(spread.len() > 10, "jittered");
    }
}
