//! `mdfeedsim`: a synthetic NASDAQ TotalView-ITCH 5.0 feed on MoldUDP64 — a stock
//! directory, then adds, cancels, executions, replaces and deletes across many symbols —
//! written as a pcap of the multicast it would send, or sent live to a multicast group
//! with a re-request server answering gaps.

use std::io::BufWriter;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use mdi_itch::pcap::{PcapWriter, udp_frame};
use mdi_itch::sim::{SOURCE, SimConfig, messages, packets};
use mdi_itch::venue::{self, VenueConfig};

#[derive(Debug, Parser)]
#[command(
    name = "mdfeedsim",
    version,
    about = "Generate a synthetic ITCH 5.0 feed over MoldUDP64",
    after_help = "Examples:\n  mdfeedsim --out day.pcap --messages 1000000 --symbols 50 --seed 7\n  mdpub replay --feed itch --input day.pcap\n\n  # live, inside a network namespace (never onto a real network):\n  mdfeedsim --send --group 233.54.12.1:26400 --iface 127.0.0.1 --serve 127.0.0.1:26401 --rate 20000\n\nExit status:\n  0  done\n  1  an error (the output file, the socket) or bad arguments"
)]
struct Cli {
    /// Write the feed as a pcap file (Ethernet/IPv4/UDP frames to --group).
    #[arg(
        long,
        value_name = "FILE.pcap",
        required_unless_present = "send",
        conflicts_with = "send"
    )]
    out: Option<PathBuf>,
    /// Send the feed live to --group from --iface (TTL 1), answering re-requests on
    /// --serve; run it inside a network namespace.
    #[arg(long)]
    send: bool,
    /// Live: the interface address multicast leaves from.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    iface: Ipv4Addr,
    /// Live: the request server's address (MoldUDP64 re-requests, unicast).
    #[arg(long, value_name = "ADDR:PORT")]
    serve: Option<SocketAddrV4>,
    /// Live: packets per second (0: as fast as the socket takes them).
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    rate: u64,
    /// Live: keep answering re-requests (and repeating the end of session) this long
    /// after the last packet.
    #[arg(long, value_name = "MS", default_value_t = 2_000)]
    linger_ms: u64,
    /// Order messages (after the stock directory).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    messages: u64,
    /// Stocks (SIM0, SIM1, …).
    #[arg(long, value_name = "K", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    symbols: u16,
    /// Seed: the same seed gives the same feed.
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,
    /// The multicast group and port the frames are addressed to.
    #[arg(long, value_name = "ADDR:PORT", default_value = "233.54.12.1:26400")]
    group: SocketAddrV4,
    /// Leave out every Nth packet (a gapped capture; live: repaired by re-requests).
    #[arg(long, value_name = "N")]
    drop_every: Option<u64>,
}

fn main() {
    let cli: Cli = mdi_transport::cli::parse_args();
    if let Err(error) = run(&cli) {
        eprintln!("mdfeedsim: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> Result<()> {
    if !cli.group.ip().is_multicast() {
        bail!("{} is not a multicast group", cli.group);
    }
    let config = SimConfig {
        messages: cli.messages,
        symbols: cli.symbols,
        seed: cli.seed,
        ..SimConfig::default()
    };
    let messages = messages(&config);
    let packets = packets(&config, &messages);
    let Some(out) = &cli.out else {
        return send(cli, &config, &packets);
    };
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut pcap = PcapWriter::new(BufWriter::with_capacity(1 << 20, file))?;
    // frames stamped 2 µs apart from 2024-01-02T14:30:00Z (09:30 New York)
    let mut time_ns: i64 = 1_704_205_800_000_000_000;
    let mut written = 0u64;
    for (index, (_, packet)) in packets.iter().enumerate() {
        time_ns += 2_000;
        if cli
            .drop_every
            .is_some_and(|n| n > 0 && (index as u64 + 1).is_multiple_of(n))
        {
            continue;
        }
        pcap.write_frame(time_ns, &udp_frame(SOURCE, cli.group, packet))?;
        written += 1;
    }
    pcap.finish()?;
    eprintln!(
        "mdfeedsim: {} messages in {} MoldUDP64 packets ({written} written) to {}",
        messages.len(),
        packets.len(),
        out.display()
    );
    Ok(())
}

fn send(cli: &Cli, config: &SimConfig, packets: &[(u64, Vec<u8>)]) -> Result<()> {
    if !cli.iface.is_loopback() {
        eprintln!(
            "mdfeedsim: sending multicast from {} — make sure this is a test network (a namespace), not a real one",
            cli.iface
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    let venue_config = VenueConfig {
        group: cli.group,
        interface: cli.iface,
        request_server: cli.serve,
        rate: cli.rate,
        drop_every: cli.drop_every,
        linger: Duration::from_millis(cli.linger_ms),
        ttl: 1,
    };
    eprintln!(
        "mdfeedsim: sending {} MoldUDP64 packets to {} from {}{}",
        packets.len(),
        cli.group,
        cli.iface,
        cli.serve
            .map(|s| format!(", re-requests on {s}"))
            .unwrap_or_default()
    );
    let counters = venue::run(&venue_config, config.session, packets, &stop)?;
    eprintln!(
        "mdfeedsim: {} packets sent, {} left out; {} re-requests answered ({} packets), {} ignored",
        counters.sent,
        counters.dropped,
        counters.answered,
        counters.answer_packets,
        counters.ignored
    );
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
