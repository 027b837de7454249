//! The Aeron peer of `mdbench udp` (cargo feature `aeron`): the same one-way measurements
//! as mdi's, through Aeron's C client and an embedded C media driver (rusteron).
//!
//! Publisher on core 0, subscriber on core 1, both busy-polling, as mdi's writer+sender
//! and receiver+reader are. The driver runs in this process; its threading mode is the
//! `driver` field of the RESULT line. On two cores the fastest setting measured is the
//! shared mode (one driver thread) with the yield idle strategy: dedicated mode's three
//! driver threads, or a spinning driver, compete with the two benchmark threads (p50
//! 10 µs dedicated vs 2.7 µs shared-yield). For the same reason the Aeron publisher and
//! subscriber yield while they wait, where mdi's spin: that favours Aeron here, never mdi.

use std::ffi::CString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use rusteron_client::{Aeron, AeronContext, AeronPublication, AeronSubscription, Handlers};
use rusteron_media_driver::bindings::aeron_threading_mode_enum;
use rusteron_media_driver::testing::EmbeddedDriver;

use crate::harness::{Latency, histogram, now_ns, pin};

const STREAM_ID: i32 = 1001;
const FRAGMENT_LIMIT: usize = 256;
/// Sequence number of the warm-up message (never counted).
const WARM_UP: u64 = u64::MAX;
/// Every wait in the peer is bounded by this.
const DEADLINE: Duration = Duration::from_secs(120);

/// The driver's threading mode and idle strategy (for the RESULT line).
pub const DRIVER_MODE: &str = "shared-yield";

/// What one Aeron run measured.
pub struct AeronOutcome {
    pub latency: Histogram<u64>,
    pub delivered: u64,
    pub elapsed_ns: u64,
}

fn cerr(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow!("aeron: {e:?}")
}

fn launch_driver() -> Result<EmbeddedDriver> {
    EmbeddedDriver::launch_with(|context| {
        // Aeron's own environment variables (AERON_THREADING_MODE, AERON_*_IDLE_STRATEGY)
        // still override, for trying other settings.
        if std::env::var_os("AERON_THREADING_MODE").is_none() {
            context.set_threading_mode(aeron_threading_mode_enum::AERON_THREADING_MODE_SHARED)?;
        }
        if std::env::var_os("AERON_SHARED_IDLE_STRATEGY").is_none() {
            context.set_shared_idle_strategy(c"yield")?;
        }
        context.set_term_buffer_sparse_file(false)?;
        Ok(())
    })
    .map_err(cerr)
    .context("launch the embedded Aeron media driver")
}

fn client(dir: &str) -> Result<Aeron> {
    let context = AeronContext::new().map_err(cerr)?;
    let dir = CString::new(dir)?;
    context.set_dir(&dir).map_err(cerr)?;
    context.set_pre_touch_mapped_memory(true).map_err(cerr)?;
    let aeron = Aeron::new(&context).map_err(cerr)?;
    aeron.start().map_err(cerr)?;
    Ok(aeron)
}

fn channel(port: u16) -> Result<CString> {
    Ok(CString::new(format!(
        "aeron:udp?endpoint=127.0.0.1:{port}|term-length=64m"
    ))?)
}

/// One-way latency (`pace_ns` apart; 0 = flat out, for throughput) of `count` messages of
/// `size` bytes over loopback unicast, stamped at offer and taken at the subscriber's
/// fragment handler.
pub fn unicast(count: u64, size: usize, pace_ns: u64) -> Result<AeronOutcome> {
    let driver = launch_driver()?;
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = driver.dir().to_string();
    let subscribed = Arc::new(AtomicBool::new(false));
    let warmed = Arc::new(AtomicBool::new(false));

    let receiving = {
        let dir = dir.clone();
        let subscribed = subscribed.clone();
        let warmed = warmed.clone();
        std::thread::spawn(move || -> Result<AeronOutcome> {
            pin(1);
            let aeron = client(&dir)?;
            let subscription: AeronSubscription = aeron
                .async_add_subscription(&channel(port)?, STREAM_ID, Handlers::NONE, Handlers::NONE)
                .map_err(cerr)?
                .poll_blocking(Duration::from_secs(10))
                .map_err(cerr)?;
            subscribed.store(true, Ordering::Release);
            let mut hist = histogram();
            let mut delivered = 0u64;
            // elapsed from the first to the last message received, as mdi's pipeline
            let (mut first, mut last) = (0u64, 0u64);
            let deadline = Instant::now() + DEADLINE;
            while delivered < count {
                let fragments = subscription
                    .poll_fn(
                        |buffer, _header| {
                            if buffer.get(..8) == Some(&WARM_UP.to_le_bytes()) {
                                warmed.store(true, Ordering::Release);
                                return;
                            }
                            let now = now_ns();
                            let sent = buffer
                                .get(8..16)
                                .and_then(|b| b.try_into().ok())
                                .map_or(now, u64::from_le_bytes);
                            let _ = hist.record(now.saturating_sub(sent).max(1));
                            if delivered == 0 {
                                first = now;
                            }
                            delivered += 1;
                            last = now;
                        },
                        FRAGMENT_LIMIT,
                    )
                    .map_err(cerr)?;
                if fragments == 0 {
                    if Instant::now() > deadline {
                        break;
                    }
                    // the driver's threads share these two cores: give them the CPU
                    std::thread::yield_now();
                }
            }
            Ok(AeronOutcome {
                latency: hist,
                delivered,
                elapsed_ns: last.saturating_sub(first),
            })
        })
    };

    pin(0);
    let aeron = client(&dir)?;
    let publication: AeronPublication = aeron
        .async_add_publication(&channel(port)?, STREAM_ID)
        .map_err(cerr)?
        .poll_blocking(Duration::from_secs(10))
        .map_err(cerr)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(subscribed.load(Ordering::Acquire) && publication.is_connected()) {
        if Instant::now() > deadline {
            bail!("the Aeron subscription never connected");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut buf = vec![0u8; size];
    // Warm-up, as mdi's pipeline has: one message through, so connection setup (image
    // creation, the first status message) is not counted as latency.
    buf[..8].copy_from_slice(&WARM_UP.to_le_bytes());
    while !warmed.load(Ordering::Acquire) {
        match publication.offer(&buf) {
            Ok(_) => {
                while !warmed.load(Ordering::Acquire) && Instant::now() < deadline {
                    std::thread::yield_now();
                }
            }
            Err(e) if e.is_retryable() => std::thread::yield_now(),
            Err(e) => bail!("aeron warm-up offer: {e:?}"),
        }
        if Instant::now() > deadline {
            bail!("the Aeron warm-up message never arrived");
        }
    }
    let mut next = now_ns();
    let deadline = Instant::now() + DEADLINE;
    for i in 0..count {
        if pace_ns > 0 {
            while now_ns() < next {
                std::thread::yield_now();
            }
            next += pace_ns;
        }
        buf[..8].copy_from_slice(&i.to_le_bytes());
        loop {
            // stamped per attempt: time spent back-pressured is not counted as latency
            buf[8..16].copy_from_slice(&now_ns().to_le_bytes());
            match publication.offer(&buf) {
                Ok(_) => break,
                Err(e) if e.is_retryable() && Instant::now() < deadline => std::thread::yield_now(),
                Err(e) => bail!("aeron offer: {e:?}"),
            }
        }
    }
    let outcome = receiving
        .join()
        .map_err(|_| anyhow!("Aeron subscriber panicked"))??;
    drop(publication);
    drop(aeron);
    drop(driver);
    Ok(outcome)
}

impl AeronOutcome {
    pub fn latency(&self) -> Latency {
        Latency::of(&self.latency)
    }
}
