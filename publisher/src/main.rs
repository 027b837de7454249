//! `mdpub`: mdi's publisher. Built so far: `mdpub serve`, which serves rings in a shm
//! directory over reliable UDP (the venue adapters come with the publisher issue).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mdi_protocol::ring::ShmDir;
use mdi_protocol::udp::Channel;
use mdi_publisher::udp::{UdpSender, UdpSenderOptions};

#[derive(Debug, Parser)]
#[command(
    name = "mdpub",
    version,
    about = "mdi publisher: venue feeds into ring logs, served over reliable UDP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve rings of a shm directory over reliable UDP (multicast or unicast) until
    /// interrupted; on exit, linger answering NAKs, then send END.
    Serve(Serve),
}

#[derive(Debug, clap::Args)]
struct Serve {
    /// Streams to serve (ring names); default: every ring in the shm directory.
    #[arg(value_name = "STREAM")]
    streams: Vec<String>,
    /// Shared-memory directory of the rings.
    #[arg(long, env = "MDI_SHM_DIR", value_name = "DIR", default_value = mdi_protocol::ring::DEFAULT_SHM_DIR)]
    shm_dir: std::path::PathBuf,
    /// Channel to serve on, repeatable: udp://GROUP:PORT?iface=ADDR&ttl=N or udp://HOST:PORT.
    #[arg(long = "udp", value_name = "URI", required = true, value_parser = parse_channel)]
    channels: Vec<Channel>,
    /// After the end, keep answering NAKs this long before sending END.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    linger_ms: u64,
    /// Exit (with linger and END) once every served ring's writer has exited and all its
    /// records are sent.
    #[arg(long)]
    until_writers_exit: bool,
    /// Exit (with linger and END) after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Drop this share of sent datagrams (0.0–1.0), for loss-repair tests and demos.
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    debug_drop_rate: f64,
    /// Seed of the loss generator.
    #[arg(long, value_name = "N", default_value_t = 1)]
    debug_seed: u64,
}

fn parse_channel(uri: &str) -> Result<Channel, String> {
    Channel::parse(uri).map_err(|e| e.to_string())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(serve) => run_serve(&serve),
    };
    if let Err(error) = result {
        eprintln!("mdpub: {error:#}");
        std::process::exit(1);
    }
}

fn run_serve(args: &Serve) -> Result<()> {
    if !(0.0..=1.0).contains(&args.debug_drop_rate) {
        bail!("--debug-drop-rate must be between 0 and 1");
    }
    let shm = ShmDir::new(&args.shm_dir);
    let streams = if args.streams.is_empty() {
        shm.streams()
            .with_context(|| format!("listing rings in {}", args.shm_dir.display()))?
    } else {
        args.streams.clone()
    };
    if streams.is_empty() {
        bail!(
            "no rings to serve in {} (is the publisher writing there?)",
            args.shm_dir.display()
        );
    }
    let options = UdpSenderOptions {
        linger: Duration::from_millis(args.linger_ms),
        debug_drop_rate: args.debug_drop_rate,
        debug_seed: args.debug_seed,
    };
    let mut senders = args
        .channels
        .iter()
        .map(|channel| {
            UdpSender::new(*channel, &shm, &streams, &options)
                .with_context(|| format!("serving on {channel}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    eprintln!(
        "mdpub: serving {} on {}",
        streams.join(", "),
        args.channels
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let started = Instant::now();
    let mut closing = false;
    let mut last_check = Instant::now();
    loop {
        let mut busy = false;
        for sender in &mut senders {
            busy |= sender
                .poll()
                .with_context(|| format!("serving on {}", sender.channel()))?;
        }
        if !closing {
            let expired = args
                .duration
                .is_some_and(|d| started.elapsed().as_secs_f64() >= d);
            let writers_gone =
                args.until_writers_exit && last_check.elapsed() >= Duration::from_millis(20) && {
                    last_check = Instant::now();
                    !senders.iter_mut().any(UdpSender::has_work)
                };
            if stop.load(Ordering::Relaxed) || expired || writers_gone {
                closing = true;
                senders.iter_mut().for_each(UdpSender::close);
            }
        } else if senders.iter().all(UdpSender::is_closed) {
            break;
        }
        if !busy {
            let wait = senders
                .iter()
                .map(UdpSender::next_timeout)
                .min()
                .unwrap_or(Duration::from_millis(1))
                .min(Duration::from_micros(100));
            std::thread::sleep(wait);
        }
    }
    for sender in &senders {
        for mdi_publisher::udp::StreamStats {
            stream,
            counters,
            receivers,
        } in sender.stats()
        {
            eprintln!(
                "mdpub: {} {stream}: {} data frames, {} retransmitted ({} bytes), {} NAKs ({} coalesced), {} unavailable, {} receivers, {} dropped by the loss generator",
                sender.channel(),
                counters.data_frames,
                counters.retransmit_frames,
                counters.retransmit_bytes,
                counters.naks,
                counters.naks_coalesced,
                counters.unavailable,
                receivers.len(),
                sender.debug_dropped(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
