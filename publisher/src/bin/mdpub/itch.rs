//! ITCH 5.0: `mdpub replay --feed itch` (pcap or plain file, sockets or DPDK) and
//! `mdpub run` with an `[itch]` config (live multicast with re-requests).

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::cli::*;
use crate::live::*;
use crate::replay::*;
use crate::serve::*;
use anyhow::{Context, Result, bail};
use mdi_transport::wall_clock_ns;

/// The ITCH session clock of `YYYY-MM-DD` (its midnight in New York).
pub(crate) fn session_of(date: &str) -> Result<mdi_publisher::itch::feed::SessionClock> {
    mdi_publisher::itch::feed::SessionClock::parse(date)
        .with_context(|| format!("{date:?} is not a date: use YYYY-MM-DD"))
}

/// The ITCH session going on now (today in New York).
pub(crate) fn session_today() -> Result<mdi_publisher::itch::feed::SessionClock> {
    mdi_publisher::itch::feed::SessionClock::at(wall_clock_ns())
        .context("the clock is outside the time-zone data's range")
}

/// Where an ITCH replay reads.
pub(crate) enum Source {
    /// Frames of a pcap (read by mdpub or by DPDK).
    Frames(Box<dyn mdi_publisher::itch::replay::FrameSource + Send>),
    /// A plain ITCH file.
    File(Box<dyn std::io::BufRead + Send>),
}

#[cfg(feature = "dpdk")]
pub(crate) fn dpdk_replay_source(
    args: &Replay,
) -> Result<Box<dyn mdi_publisher::itch::replay::FrameSource + Send>> {
    use mdi_publisher::itch::dpdk::{DpdkConfig, DpdkPort, replay_eal_args};
    let mut eal_args = replay_eal_args(&args.input);
    eal_args.extend(
        args.dpdk_eal
            .iter()
            .flat_map(|a| a.split_whitespace().map(String::from)),
    );
    let port = DpdkPort::open(&DpdkConfig {
        eal_args,
        port: Some("net_pcap0".into()),
        ..DpdkConfig::default()
    })?;
    if !port.has_timestamps() {
        eprintln!(
            "mdpub: DPDK's net_pcap gives no capture times here: frames are stamped on receipt"
        );
    }
    // net_pcap returns nothing once the file is read
    Ok(Box::new(
        port.end_when_idle(std::time::Duration::from_millis(200)),
    ))
}

#[cfg(not(feature = "dpdk"))]
pub(crate) fn dpdk_replay_source(
    _: &Replay,
) -> Result<Box<dyn mdi_publisher::itch::replay::FrameSource + Send>> {
    bail!(
        "--backend dpdk needs an mdpub built with the `dpdk` feature (cargo build --features dpdk; needs libdpdk-dev)"
    )
}

pub(crate) fn run_itch_replay(args: &Replay) -> Result<()> {
    use mdi_itch::pcap::PcapReader;
    use mdi_publisher::itch::feed::ItchFeed;
    use mdi_publisher::itch::replay::{replay_file, replay_frames};

    let (mut input, read, size) = mdi_publisher::input::open_input_counted(&args.input)
        .with_context(|| format!("opening {}", args.input.display()))?;
    // a bar with rate and ETA on a terminal, a line every 5 s otherwise
    let _progress = mdi_transport::cli::Progress::start(
        format!("mdpub: replaying {}", args.input.display()),
        read,
        size,
    );
    // a capture (pcap or pcapng, whatever its name) by its magic bytes, else ITCH itself
    let is_pcap = {
        let head = input
            .fill_buf()
            .with_context(|| format!("reading {}", args.input.display()))?;
        let first = head.get(..4).map(|b| [b[0], b[1], b[2], b[3]]);
        let is_capture = first.and_then(mdi_itch::pcap::capture_format).is_some();
        let named_so = args.input.to_string_lossy().contains(".pcap");
        if named_so && !is_capture {
            bail!(
                "{}: {}",
                args.input.display(),
                mdi_itch::pcap::PcapError::Magic(first.map_or(0, u32::from_le_bytes))
            );
        }
        is_capture
    };
    // a pcap of the multicast (read here or by DPDK), or a plain ITCH file
    let mut source = match args.backend {
        Backend::Dpdk => {
            let name = args.input.to_string_lossy();
            if !name.ends_with(".pcap") {
                bail!(
                    "--backend dpdk reads an uncompressed .pcap through DPDK's net_pcap device; {} is not one",
                    args.input.display()
                );
            }
            Source::Frames(dpdk_replay_source(args)?)
        }
        Backend::Pcap if is_pcap => Source::Frames(Box::new(
            PcapReader::new(input).with_context(|| format!("reading {}", args.input.display()))?,
        )),
        Backend::Pcap => Source::File(input),
    };
    // pcaps: the first frame's date unless given
    let session = args.date.as_deref().map(session_of).transpose()?;
    let options = args.ring_options();
    let stop = interrupt_flag()?;
    let mut pacer = Pacer::new(args.speed);
    eprintln!(
        "mdpub: replaying ITCH {} into {}",
        args.input.display(),
        args.serving.shm_dir.display()
    );
    let started = Instant::now();
    let (outcome, senders) = write_and_serve(
        &args.serving,
        (&options, &options),
        &stop,
        |rings, archive| match &mut source {
            Source::Frames(frames) => {
                let mut feed = ItchFeed::new(rings, session, wall_clock_ns);
                let counts = replay_frames(frames.as_mut(), args.group, &mut feed, |t| {
                    pacer.wait_for(t);
                    archive.wait(&stop);
                    (!stop.load(Ordering::Relaxed)).then(wall_clock_ns)
                })?;
                Ok((counts, feed.counters(), feed.books().counters()))
            }
            Source::File(input) => {
                let session = match session {
                    Some(session) => session,
                    None => session_today()?,
                };
                let mut feed = ItchFeed::new(rings, Some(session), wall_clock_ns);
                let counts = replay_file(input, &mut feed, || {
                    archive.wait(&stop);
                    (!stop.load(Ordering::Relaxed)).then(wall_clock_ns)
                })?;
                Ok((counts, feed.counters(), feed.books().counters()))
            }
        },
    )?;
    let (counts, feed, books) = outcome;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "mdpub: {} ITCH messages ({} malformed), {} trades, {} K-lines, {} book updates, {} quotes, {} records in all; {} MoldUDP64 packets, {} other frames, {} gaps, {} messages lost in {seconds:.2} s ({:.0} messages/s){}",
        feed.messages,
        feed.malformed,
        feed.trades,
        feed.klines,
        feed.book_updates,
        feed.quotes,
        feed.records,
        counts.session.packets,
        counts.other_frames,
        counts.session.gaps,
        feed.lost,
        feed.messages as f64 / seconds.max(1e-9),
        if counts.interrupted {
            " — interrupted"
        } else {
            ""
        }
    );
    if books.unknown_orders + books.oversized + books.duplicate_refs > 0 {
        eprintln!(
            "mdpub: order books: {} messages about unknown orders, {} executions or cancels larger than their order, {} reused order references (each counted and skipped)",
            books.unknown_orders, books.oversized, books.duplicate_refs
        );
    }
    if counts.bad_tail > 0 {
        eprintln!(
            "mdpub: the last {} bytes of the file are not a whole ITCH message",
            counts.bad_tail
        );
    }
    report_senders(&senders);
    Ok(())
}

pub(crate) fn run_itch_live(
    args: &RunArgs,
    config: &mdi_publisher::config::Config,
    itch: &mdi_publisher::config::ItchSection,
) -> Result<()> {
    use mdi_itch::mold::{SessionConfig, session_id};
    use mdi_publisher::itch::feed::ItchFeed;
    use mdi_publisher::itch::live::{self, LiveConfig, Receiver};

    let session = match &itch.date {
        Some(date) => session_of(date)?,
        None => session_today()?,
    };
    let live_config = LiveConfig {
        group: itch.group,
        interface: itch.interface,
        request_server: itch.request_server,
        session: SessionConfig {
            session: itch.session.as_deref().map(session_id),
            request_timeout_ns: itch.request_timeout_ms.saturating_mul(1_000_000),
            max_retries: itch.max_retries,
            start: itch.start_seq,
            ..SessionConfig::default()
        },
        busy_poll: itch.busy_poll,
        stop_at_end: itch.stop_at_end,
    };
    let serving = live_serving(args, config)?;
    let stop = live_stop(args)?;
    let (ticks, klines) = live_rings(config);
    eprintln!(
        "mdpub: ITCH from {} ({} backend{}) into {}",
        itch.group,
        itch.backend,
        itch.request_server
            .map(|s| format!(", re-requests to {s}"))
            .unwrap_or_default(),
        serving.shm_dir.display()
    );
    let started = Instant::now();
    let ((counters, feed, books), senders) =
        write_and_serve(&serving, (&ticks, &klines), &stop, |rings, _archive| {
            // opened on the writing thread: a DPDK port is polled where it was started
            let mut receiver = if itch.backend == "dpdk" {
                dpdk_live_receiver(itch)?
            } else {
                Receiver::socket(&live_config)?
            };
            let mut feed = ItchFeed::new(rings, Some(session), wall_clock_ns);
            let counters = live::run(&live_config, &mut receiver, &mut feed, &stop, wall_clock_ns)?;
            Ok((counters, feed.counters(), feed.books().counters()))
        })?;
    let seconds = started.elapsed().as_secs_f64();
    let s = counters.session;
    eprintln!(
        "mdpub: {} ITCH messages ({} malformed), {} trades, {} K-lines, {} book updates, {} quotes, {} records in all; {} datagrams, {} MoldUDP64 packets ({} duplicates, {} other session, {} malformed, {} far ahead held for confirmation), {} gaps, {} re-requests, {} datagrams not from the request server refused, {} messages lost in {seconds:.2} s",
        feed.messages,
        feed.malformed,
        feed.trades,
        feed.klines,
        feed.book_updates,
        feed.quotes,
        feed.records,
        counters.datagrams,
        s.packets,
        s.duplicates,
        s.wrong_session,
        s.malformed,
        s.implausible,
        s.gaps,
        counters.requests_sent,
        counters.foreign_answers,
        feed.lost,
    );
    if books.unknown_orders + books.oversized + books.duplicate_refs > 0 {
        eprintln!(
            "mdpub: order books: {} messages about unknown orders, {} executions or cancels larger than their order, {} reused order references (each counted and skipped)",
            books.unknown_orders, books.oversized, books.duplicate_refs
        );
    }
    report_senders(&senders);
    Ok(())
}

#[cfg(feature = "dpdk")]
pub(crate) fn dpdk_live_receiver(
    itch: &mdi_publisher::config::ItchSection,
) -> Result<mdi_publisher::itch::live::Receiver> {
    use mdi_publisher::itch::dpdk::{DpdkConfig, DpdkPort};
    let section = itch
        .dpdk
        .as_ref()
        .context("itch.backend is dpdk but there is no [itch.dpdk] section")?;
    let port = DpdkPort::open(&DpdkConfig {
        eal_args: section.eal_args.clone(),
        port: section.port.clone(),
        ..DpdkConfig::default()
    })?;
    eprintln!("mdpub: DPDK port {} ready", port.driver());
    Ok(mdi_publisher::itch::live::Receiver::dpdk(port)?)
}

#[cfg(not(feature = "dpdk"))]
pub(crate) fn dpdk_live_receiver(
    _: &mdi_publisher::config::ItchSection,
) -> Result<mdi_publisher::itch::live::Receiver> {
    bail!(
        "itch.backend = \"dpdk\" needs an mdpub built with the `dpdk` feature (cargo build --features dpdk; needs libdpdk-dev)"
    )
}
