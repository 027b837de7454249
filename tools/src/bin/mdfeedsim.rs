//! `mdfeedsim`: a synthetic NASDAQ TotalView-ITCH 5.0 feed on MoldUDP64 — a stock
//! directory, then adds, cancels, executions, replaces and deletes across many symbols —
//! written as a pcap of the multicast it would send.

use std::io::BufWriter;
use std::net::SocketAddrV4;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use mdi_publisher::itch::pcap::{PcapWriter, udp_frame};
use mdi_publisher::itch::sim::{SOURCE, SimConfig, messages, packets};

#[derive(Debug, Parser)]
#[command(
    name = "mdfeedsim",
    version,
    about = "Generate a synthetic ITCH 5.0 feed over MoldUDP64",
    after_help = "Example:\n  mdfeedsim --out day.pcap --messages 1000000 --symbols 50 --seed 7\n  mdpub replay --feed itch --input day.pcap"
)]
struct Cli {
    /// Write the feed as a pcap file (Ethernet/IPv4/UDP frames to --group).
    #[arg(long, value_name = "FILE.pcap")]
    out: PathBuf,
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
    /// Leave out every Nth packet (a gapped capture, for testing gap reports).
    #[arg(long, value_name = "N")]
    drop_every: Option<u64>,
}

fn main() {
    let cli = Cli::parse();
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
    let file = std::fs::File::create(&cli.out)
        .with_context(|| format!("creating {}", cli.out.display()))?;
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
        cli.out.display()
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
