//! `mdpub demo`: the bundled capture looped through the live path.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::cli::*;
use crate::replay::*;
use crate::serve::*;
use anyhow::{Context, Result};
use mdi_protocol::ring::RingOptions;
use mdi_publisher::binance::capture::{CaptureWriter, parse_line, replay_capture};
use mdi_publisher::binance::normalize::{Normalizer, NormalizerConfig};
use mdi_transport::wall_clock_ns;

/// The demo's channel when none is given: unicast on loopback.
pub(crate) const DEMO_CHANNEL: &str = "udp://127.0.0.1:40456";

pub(crate) fn run_demo(args: &Demo) -> Result<()> {
    if let Some(path) = &args.write_capture {
        let mut out =
            CaptureWriter::create(path).with_context(|| format!("creating {}", path.display()))?;
        mdi_publisher::binance::demo::generate(
            mdi_publisher::binance::demo::SEED,
            mdi_publisher::binance::demo::SECONDS,
            mdi_publisher::binance::demo::START_NS,
            &mut out,
        )
        .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("mdpub: wrote the demo capture to {}", path.display());
        return Ok(());
    }
    let lines =
        mdi_publisher::binance::demo::bundled_lines().context("reading the bundled capture")?;
    let looper = mdi_publisher::binance::demo::Looper::new(&lines);
    let mut serving = args.serving.clone();
    if serving.channels.is_empty() && !args.no_udp {
        serving
            .channels
            .push(parse_channel(DEMO_CHANNEL).map_err(anyhow::Error::msg)?);
    }
    let options = RingOptions::default().fresh(true).now_ns(wall_clock_ns());
    let stop = interrupt_flag()?;
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    eprintln!(
        "mdpub: demo feed (synthetic BTCUSDT and ETHUSDT, looped) into {} — watch it with: mdtail --shm-dir {}",
        serving.shm_dir.display(),
        serving.shm_dir.display()
    );
    let pass_ns = i64::try_from(mdi_publisher::binance::demo::SECONDS).unwrap_or(0) * 1_000_000_000;
    let speed = args.speed;
    let ((passes, counters), senders) =
        write_and_serve(&serving, (&options, &options), &stop, |rings, _archive| {
            let mut normalizer =
                Normalizer::new(NormalizerConfig::default(), rings, wall_clock_ns)?;
            let start = wall_clock_ns();
            let mut pacer = Pacer::new(speed);
            let mut pass = 0u64;
            'passes: loop {
                // this pass's times: the capture moved to now (1x) or to its pace
                let shift = start - mdi_publisher::binance::demo::START_NS
                    + i64::try_from(pass).unwrap_or(0) * pass_ns;
                for line in &lines {
                    if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        break 'passes;
                    }
                    let Some(moved) = looper.line(line, pass, shift) else {
                        continue;
                    };
                    let Some(parsed) = parse_line(&moved) else {
                        continue;
                    };
                    let t = parsed.receive_ns();
                    pacer.wait_for(t);
                    replay_capture(moved.as_bytes(), &mut normalizer, |_| true)?;
                }
                pass += 1;
            }
            Ok((pass, normalizer.counters()))
        })?;
    eprintln!(
        "mdpub: demo done: {passes} passes, {} trades, {} klines, {} records",
        counters.trades, counters.klines, counters.records
    );
    report_senders(&senders);
    Ok(())
}
