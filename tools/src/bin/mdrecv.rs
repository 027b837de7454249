//! `mdrecv`: join reliable-UDP channels and keep local replica rings of their streams —
//! same names, positions and sequence numbers as the publisher's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use mdi_protocol::ring::ShmDir;
use mdi_protocol::udp::{Channel, ReceiverEvent};
use mdi_transport::receiver::{UdpReceiver, UdpReceiverOptions};

#[derive(Debug, Parser)]
#[command(
    name = "mdrecv",
    version,
    about = "Join reliable-UDP channels and keep local replica rings",
    after_help = "Exit status:\n  0  stopped by SIGTERM/SIGINT, or (--until-end) every stream ended and repaired\n  1  an error (socket, shm directory, replica refused by the filesystem) or bad arguments\n  2  --timeout passed before every stream ended"
)]
struct Cli {
    /// Log as text for people (colour on a terminal) or one JSON object per line;
    /// warnings and info are shown unless `RUST_LOG` says otherwise.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: mdi_transport::cli::LogFormat,
    /// Serve Prometheus metrics of the replicas on http://ADDR/metrics (e.g.
    /// 127.0.0.1:9465): rings, UDP receive counters, read at scrape time.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Channel to join, repeatable: udp://GROUP:PORT?iface=ADDR&ttl=N or udp://HOST:PORT.
    #[arg(long = "udp", value_name = "URI", required = true, value_parser = parse_channel)]
    channels: Vec<Channel>,
    /// Where the replica rings go.
    #[arg(long, env = "MDI_SHM_DIR", value_name = "DIR", default_value = mdi_protocol::ring::DEFAULT_SHM_DIR)]
    shm_dir: std::path::PathBuf,
    /// Replicate only this stream (repeatable); default: every stream on the channel.
    /// SETUPs for others are refused and counted.
    #[arg(long = "stream", value_name = "NAME")]
    streams: Vec<String>,
    /// Refuse SETUPs asking for a replica larger than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = mdi_transport::receiver::DEFAULT_MAX_CAPACITY)]
    max_capacity: u64,
    /// Exit once every stream has ended (END) and been repaired to its end.
    #[arg(long)]
    until_end: bool,
    /// Give up (exit 2) if not done after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Drop this share of received datagrams (0.0–1.0), for loss-repair tests and demos.
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    debug_drop_rate: f64,
    /// Seed of the loss generator and NAK back-off.
    #[arg(long, value_name = "N", default_value_t = 1)]
    debug_seed: u64,
}

fn parse_channel(uri: &str) -> Result<Channel, String> {
    Channel::parse(uri).map_err(|e| e.to_string())
}

fn main() {
    let cli: Cli = mdi_transport::cli::parse_args();
    mdi_transport::cli::init_logging(cli.log_format);
    match run(&cli) {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("mdrecv: {error:#}");
            std::process::exit(1);
        }
    }
}

fn run(cli: &Cli) -> Result<i32> {
    if !(0.0..=1.0).contains(&cli.debug_drop_rate) {
        bail!("--debug-drop-rate must be between 0 and 1");
    }
    let shm = ShmDir::new(&cli.shm_dir);
    let options = UdpReceiverOptions {
        debug_drop_rate: cli.debug_drop_rate,
        debug_seed: cli.debug_seed,
        accept_streams: (!cli.streams.is_empty()).then(|| cli.streams.clone()),
        max_capacity: cli.max_capacity,
        ..UdpReceiverOptions::default()
    };
    let mut receivers = cli
        .channels
        .iter()
        .map(|channel| {
            UdpReceiver::new(*channel, shm.clone(), options.clone())
                .with_context(|| format!("joining {channel}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    eprintln!(
        "mdrecv: joined {}; replicas in {}",
        cli.channels
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        cli.shm_dir.display()
    );
    let _metrics = match cli.metrics {
        Some(addr) => {
            let server = mdi_transport::metrics::serve(addr, cli.shm_dir.clone(), Vec::new())
                .with_context(|| format!("serving metrics on {addr}"))?;
            eprintln!("mdrecv: metrics on http://{}/metrics", server.addr());
            Some(server)
        }
        None => None,
    };
    let started = Instant::now();
    let per_poll = Duration::from_millis(1);
    let code = loop {
        for receiver in &mut receivers {
            receiver.poll(per_poll)?;
            for event in receiver.take_events() {
                match &event.event {
                    ReceiverEvent::Lost { from_seq, to_seq } => eprintln!(
                        "mdrecv: {}: {} records lost (sequences {from_seq}..{to_seq}): older than the sender retains",
                        event.stream,
                        to_seq - from_seq
                    ),
                    other => eprintln!("mdrecv: {}: {other:?}", event.stream),
                }
            }
        }
        if cli.until_end && receivers.iter().all(UdpReceiver::all_ended) {
            break 0;
        }
        if stop.load(Ordering::Relaxed) {
            break 0;
        }
        if cli
            .timeout
            .is_some_and(|t| started.elapsed().as_secs_f64() >= t)
        {
            eprintln!("mdrecv: timed out before every stream ended");
            break 2;
        }
    };
    for receiver in &receivers {
        for mdi_transport::receiver::ReceiverStreamStats {
            stream,
            position,
            high_water,
            counters: c,
            ..
        } in receiver.stats()
        {
            let position = position.unwrap_or(0);
            // what is known to exist and not yet here: still being repaired
            let short = match high_water {
                Some(h) if h > position => {
                    format!(" ({} bytes short of the high-water mark {h})", h - position)
                }
                _ => String::new(),
            };
            eprintln!(
                "mdrecv: {stream}: position {position}{short}, {} records, {} gaps ({} bytes), {} NAKs ({} repeated), {} duplicates, {} lost, {} malformed, {} rejected, {} from foreign addresses, {} with a bad tag, {} dropped by the loss generator, {} sends failed",
                c.records,
                c.gaps,
                c.gap_bytes,
                c.naks,
                c.nak_repeats,
                c.duplicates,
                c.lost_records,
                c.malformed + receiver.malformed(),
                c.rejected,
                receiver.foreign(),
                receiver.bad_tags(),
                receiver.debug_dropped(),
                receiver.send_errors()
            );
        }
        if receiver.setups_refused() + receiver.streams_refused() > 0 {
            eprintln!(
                "mdrecv: {}: {} SETUPs refused (stream not accepted, too large, or no replica could be made), {} frames for streams beyond the limit",
                receiver.channel(),
                receiver.setups_refused(),
                receiver.streams_refused()
            );
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
