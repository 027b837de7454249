//! `mdpub replay` of Binance captures and history files, paced.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::cli::*;
use crate::itch::*;
use crate::serve::*;
use anyhow::{Context, Result, bail};
use mdi_publisher::binance::capture::{looks_like_capture, replay_capture};
use mdi_publisher::binance::history::{HistoryFormat, replay_history};
use mdi_publisher::binance::normalize::{
    InstrumentSpec, KlineSource, Normalizer, NormalizerConfig,
};
use mdi_publisher::input::open_input;
use mdi_transport::wall_clock_ns;

/// What the input holds, resolved.
pub(crate) enum Input {
    History(HistoryFormat),
    Capture,
}

pub(crate) fn input_kind(args: &Replay, file_name: &str) -> Result<Input> {
    Ok(match args.format {
        InputFormat::AggTrades => Input::History(HistoryFormat::AggTrades),
        InputFormat::Trades => Input::History(HistoryFormat::Trades),
        InputFormat::Capture => Input::Capture,
        InputFormat::Auto => {
            if let Some(format) = HistoryFormat::from_file_name(file_name) {
                return Ok(Input::History(format));
            }
            let mut first = String::new();
            open_input(&args.input)
                .with_context(|| format!("opening {}", args.input.display()))?
                .read_line(&mut first)
                .with_context(|| format!("reading {}", args.input.display()))?;
            if looks_like_capture(&first) {
                Input::Capture
            } else {
                Input::History(HistoryFormat::from_header(&first).with_context(|| {
                    format!(
                        "cannot tell what {} holds from its name or first line: give --format agg-trades, trades or capture",
                        args.input.display()
                    )
                })?)
            }
        }
    })
}

pub(crate) use mdi_transport::cli::Pacer;

/// A replay whose input is larger than its ring overwrites its own start: said, with
/// the remedy, unless an archive keeps everything. (A record takes about what its line
/// or frame does; a compressed input's size is not known up front.)
pub(crate) fn warn_if_it_will_not_fit(
    input_bytes: Option<u64>,
    ring_bytes: u64,
    archived: bool,
    input: &std::path::Path,
) {
    if let Some(bytes) = input_bytes
        && bytes > ring_bytes
        && !archived
    {
        eprintln!(
            "mdpub: warning: {} ({} MiB) will not fit the rings ({} MiB): readers that start after the replay see only its end — give --archive DIR to keep every record, or --capacity",
            input.display(),
            bytes >> 20,
            ring_bytes >> 20
        );
    }
}

pub(crate) fn run_replay(args: &Replay) -> Result<()> {
    if args.feed == Feed::Itch {
        return run_itch_replay(args);
    }
    let file_name = args
        .input
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let kind = input_kind(args, file_name)?;
    let (input, read, size) = mdi_publisher::input::open_input_counted(&args.input)
        .with_context(|| format!("opening {}", args.input.display()))?;
    // a bar with rate and ETA on a terminal, a line every 5 s otherwise
    let _progress = mdi_transport::cli::Progress::start(
        format!("mdpub: replaying {}", args.input.display()),
        read,
        size,
    );
    let options = args.ring_options();
    warn_if_it_will_not_fit(
        size,
        args.capacity,
        args.serving.archive.is_some(),
        &args.input,
    );
    let stop = interrupt_flag()?;
    let mut pacer = Pacer::new(args.speed);
    let mut config = NormalizerConfig {
        intervals: args.intervals.clone(),
        ..NormalizerConfig::default()
    };
    eprintln!(
        "mdpub: replaying {} into {}",
        args.input.display(),
        args.serving.shm_dir.display()
    );
    let started = Instant::now();
    let kline_source = std::cell::Cell::new(config.kline_source);
    let ((skipped, interrupted, counters), senders) = match kind {
        Input::History(format) => {
            let symbol = match &args.symbol {
                Some(symbol) => symbol.clone(),
                None => match file_name.split_once('-') {
                    Some((symbol, _)) if !symbol.is_empty() => symbol.to_owned(),
                    _ => bail!(
                        "cannot tell the symbol from the file name {file_name:?}: give --symbol"
                    ),
                },
            };
            let (pe, qe) = (args.price_exponent, args.qty_exponent);
            config.instruments = vec![InstrumentSpec {
                symbol,
                price_exponent: pe,
                qty_exponent: qe,
            }];
            config.kline_source = match format {
                HistoryFormat::AggTrades => KlineSource::AggTrade,
                HistoryFormat::Trades => KlineSource::Trade,
            };
            kline_source.set(config.kline_source);
            // history: final candles only
            config.kline_update_ms = None;
            write_and_serve(
                &args.serving,
                (&options, &options),
                &stop,
                |rings, archive| {
                    let mut normalizer = Normalizer::new(config, rings, wall_clock_ns)?;
                    let counts = replay_history(input, format, &mut normalizer, 0, pe, qe, |t| {
                        pacer.wait_for(t);
                        archive.wait(&stop);
                        (!stop.load(Ordering::Relaxed)).then(wall_clock_ns)
                    })?;
                    Ok((counts.malformed, counts.interrupted, normalizer.counters()))
                },
            )?
        }
        Input::Capture => {
            config.kline_source = args.kline_source.resolve(|| {
                open_input(&args.input)
                    .and_then(mdi_publisher::binance::capture::has_agg_trades)
                    .unwrap_or(false)
            });
            kline_source.set(config.kline_source);
            if let Some(symbol) = &args.symbol {
                config.instruments = vec![InstrumentSpec {
                    symbol: symbol.clone(),
                    price_exponent: args.price_exponent,
                    qty_exponent: args.qty_exponent,
                }];
            }
            write_and_serve(
                &args.serving,
                (&options, &options),
                &stop,
                |rings, archive| {
                    let mut normalizer = Normalizer::new(config, rings, wall_clock_ns)?;
                    let counts = replay_capture(input, &mut normalizer, |t| {
                        pacer.wait_for(t);
                        archive.wait(&stop);
                        !stop.load(Ordering::Relaxed)
                    })?;
                    let counters = normalizer.counters();
                    Ok((
                        counts.bad_lines + counters.malformed,
                        counts.interrupted,
                        counters,
                    ))
                },
            )?
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "mdpub: {} trades, {} klines, {} records in all; {} malformed lines or frames skipped, {} venue-id gaps ({} missing) in {seconds:.2} s ({:.0} trades/s){}",
        counters.trades,
        counters.klines,
        counters.records,
        skipped,
        counters.gaps,
        counters.missing,
        counters.trades as f64 / seconds.max(1e-9),
        if interrupted {
            " — interrupted: open candles left open"
        } else {
            ""
        }
    );
    if counters.trades > 0 && counters.kline_trades == 0 && !args.intervals.is_empty() {
        eprintln!(
            "mdpub: warning: no {} in the input, so no K-lines were built from its {} trades \
             (--kline-source {})",
            match kline_source.get() {
                KlineSource::Trade => "raw trades (@trade)",
                KlineSource::AggTrade => "aggTrades (@aggTrade)",
            },
            counters.trades,
            match kline_source.get() {
                KlineSource::Trade => "aggtrade, or auto",
                KlineSource::AggTrade => "trade, or auto",
            }
        );
    }
    report_senders(&senders);
    Ok(())
}
