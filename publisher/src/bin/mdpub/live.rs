//! `mdpub run` / `mdpub record`: the live feeds a TOML config names.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::cli::*;
use crate::itch::*;
use crate::serve::*;
use anyhow::{Context, Result, bail};
use mdi_protocol::ring::RingOptions;
use mdi_publisher::binance::capture::CaptureWriter;
use mdi_publisher::binance::normalize::Normalizer;
use mdi_transport::wall_clock_ns;

/// Where `mdpub run` serves: the config's channels plus `--udp`, its shm directory
/// unless `--shm-dir`.
pub(crate) fn live_serving(
    args: &RunArgs,
    config: &mdi_publisher::config::Config,
) -> Result<Serving> {
    let mut channels = config.udp.parsed_channels().map_err(anyhow::Error::msg)?;
    channels.extend(args.channels.iter().copied());
    Ok(Serving {
        shm_dir: args
            .shm_dir
            .clone()
            .or_else(|| config.shm_dir.clone())
            .unwrap_or_else(|| mdi_protocol::ring::DEFAULT_SHM_DIR.into()),
        channels,
        linger_ms: config.udp.linger_ms.unwrap_or(1000),
        debug_drop_rate: 0.0,
        debug_seed: 1,
        archive: args.archive.clone(),
    })
}

/// The interrupt flag, also set after `--duration`.
pub(crate) fn live_stop(args: &RunArgs) -> Result<Arc<AtomicBool>> {
    let stop = interrupt_flag()?;
    if let Some(seconds) = args.duration {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(seconds));
            stop.store(true, Ordering::Relaxed);
        });
    }
    Ok(stop)
}

/// The `ticks` and `klines` rings' options of a live config.
pub(crate) fn live_rings(config: &mdi_publisher::config::Config) -> (RingOptions, RingOptions) {
    let now = wall_clock_ns();
    (
        RingOptions::default()
            .capacity(config.streams.ticks_capacity)
            .now_ns(now),
        RingOptions::default()
            .capacity(config.streams.klines_capacity)
            .now_ns(now),
    )
}

pub(crate) fn run_live(args: &RunArgs, record: Option<&std::path::Path>) -> Result<()> {
    let config = mdi_publisher::config::Config::load(&args.config)?;
    if let Some(itch) = &config.itch {
        if record.is_some() {
            bail!(
                "mdpub record captures the Binance feed; capture an ITCH multicast with tcpdump (a pcap replays with mdpub replay --feed itch)"
            );
        }
        return run_itch_live(args, &config, itch);
    }
    let mut live = config.live();
    let missing = config.symbols_without_exponents();
    let exchange_info =
        if config.binance.as_ref().is_some_and(|b| b.exchange_info) && !missing.is_empty() {
            match mdi_publisher::binance::live::fetch_exchange_info(&live, &missing) {
                Ok(specs) => specs,
                Err(e) => {
                    eprintln!(
                        "mdpub: exchangeInfo failed ({e}); {} at Binance's 8-decimal exponents",
                        missing.join(", ")
                    );
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
    let normalizer_config = config.normalizer(&exchange_info);
    let serving = live_serving(args, &config)?;
    // the feed's counters (late trades, lag) for mdstat, next to the rings
    live.status_dir = Some(serving.shm_dir.clone());
    let mut capture = match record {
        Some(path) => Some(
            CaptureWriter::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => None,
    };
    let stop = live_stop(args)?;
    let (ticks, klines) = live_rings(&config);
    eprintln!(
        "mdpub: {} streams from {} into {}",
        live.streams.len(),
        live.ws_base,
        serving.shm_dir.display()
    );
    let (counters, senders) =
        write_and_serve(&serving, (&ticks, &klines), &stop, |rings, _archive| {
            let mut normalizer = Normalizer::new(normalizer_config, rings, wall_clock_ns)?;
            Ok(mdi_publisher::binance::live::run(
                &live,
                &mut normalizer,
                capture.as_mut(),
                &stop,
            )?)
        })?;
    let n = counters.normalizer;
    eprintln!(
        "mdpub: {} frames, {} records ({} trades, {} klines); {} connects, {} disconnects, {} rollovers, {} pings; {} malformed, {} unknown events, {} duplicates, {} gaps ({} missing), {} snapshots; {} trades arrived after their candle was final ({} candles corrected, {} trades in no candle); lag up to {} ms, {} times lagging",
        n.frames,
        n.records,
        n.trades,
        n.klines,
        counters.connects,
        counters.disconnects,
        counters.rollovers,
        counters.pings,
        n.malformed,
        n.unknown_events,
        n.duplicates,
        n.gaps,
        n.missing,
        counters.snapshots,
        n.late_trades,
        n.kline_corrections,
        n.late_unplaced,
        counters.max_lag_ms,
        counters.lagging_reports
    );
    report_senders(&senders);
    Ok(())
}
