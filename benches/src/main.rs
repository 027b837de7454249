//! `mdbench`: mdi's end-to-end benchmark harness. Every scenario prints
//! `RESULT scenario=<name> impl=<mdi|peer> ...` lines, with peers measured in the same run.

#[cfg(feature = "aeron")]
mod aeron;
mod archive;
mod harness;
mod ingest;
#[cfg(feature = "iceoryx2")]
mod iox;
mod itch;
mod itch_rx;
mod ring;
#[cfg(feature = "rocksdb")]
mod rocksdb;
mod sdk;
mod udp;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "mdbench",
    version,
    about = "mdi benchmarks, side by side with their peers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ring log one-way latency and throughput vs iceoryx2, tokio broadcast, crossbeam and
    /// a cache-line floor; writer and readers in separate processes pinned to cores.
    Ring {
        /// Fewer messages per run: finishes in under a minute.
        #[arg(long)]
        quick: bool,
        /// Payload sizes in bytes.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "64,256,1024",
            value_name = "BYTES"
        )]
        sizes: Vec<usize>,
        /// Reader counts.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "1,2,3,4",
            value_name = "N"
        )]
        readers: Vec<usize>,
        /// Only these implementations (mdi, iceoryx2, tokio-broadcast, crossbeam, floor).
        #[arg(long = "impl", value_delimiter = ',', value_name = "NAME")]
        impls: Vec<String>,
        /// Data-region size of the mdi ring under test, in MiB (a power of two).
        #[arg(long, default_value_t = 256, value_name = "MIB")]
        ring_mib: u64,
        /// Messages per latency run and per throughput run (overrides --quick).
        #[arg(long, num_args = 2, value_names = ["LATENCY", "THROUGHPUT"])]
        messages: Option<Vec<u64>>,
    },
    /// Reliable UDP, ring to replica: one-way latency and throughput over loopback unicast
    /// and (root: inside a network namespace) multicast, against a raw UDP floor; repair
    /// under 1 % and 5 % loss.
    Udp {
        /// Fewer messages: finishes in under a minute.
        #[arg(long)]
        quick: bool,
        /// Internal: run the multicast scenarios here (inside the namespace made for them).
        #[arg(long, hide = true)]
        inside_netns: bool,
        /// Only these implementations (floor, mdi, aeron; aeron needs the `aeron` feature).
        #[arg(long = "impl", value_delimiter = ',', value_name = "NAME")]
        impls: Vec<String>,
    },
    /// Binance trade frames through decode → normalize → ring commit on one core
    /// (frames/s, frame → committed latency), serde_json and sonic-rs decoding side by
    /// side.
    Ingest {
        /// Fewer frames: a few seconds.
        #[arg(long)]
        quick: bool,
    },
    /// K-line aggregation: trades/s through the builder for six intervals.
    Kline {
        /// Fewer trades: a second or two.
        #[arg(long)]
        quick: bool,
    },
    /// ITCH 5.0 over MoldUDP64 on one core: session, decode, order books and ring
    /// commit (messages/s), and decode + books alone.
    Itch {
        /// Fewer messages: a second or two.
        #[arg(long)]
        quick: bool,
    },
    /// Receiving an ITCH multicast through a socket and through DPDK (`--features
    /// dpdk`) on the same traffic, between two network namespaces (needs root):
    /// packets/s flat out, latency paced.
    ItchRx {
        /// Fewer packets.
        #[arg(long)]
        quick: bool,
    },
    /// What the subscriber SDK adds to the raw ring reader: publish → read latency of
    /// the same records, side by side.
    Sdk {
        /// Fewer records: a couple of seconds.
        #[arg(long)]
        quick: bool,
    },
    /// The tick archive: records/s recorded from a ring into segments (64 B and 256 B,
    /// fsync none and periodic) against a raw sequential write of the same bytes, read
    /// back, and seek-by-time latency in a large synthetic archive.
    Archive {
        /// Fewer records and a 5 M-record seek archive: well under a minute.
        #[arg(long)]
        quick: bool,
        /// Where the segments go (a directory on disk; default: the temp directory).
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
        /// Only these parts (default: all).
        #[arg(long, value_delimiter = ',', value_parser = ["write", "seek", "export"])]
        only: Vec<String>,
    },
    /// Internal: a benchmark process started by another mdbench.
    #[command(hide = true)]
    Child {
        /// Role and its arguments.
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Ring {
            quick,
            sizes,
            readers,
            impls,
            messages,
            ring_mib,
        } => ring::run(&ring::RingBench {
            ring_capacity: ring_mib << 20,
            quick,
            messages: messages.map(|m| (m[0], m[1])),
            sizes,
            readers,
            impls,
        }),
        Command::Udp {
            quick,
            inside_netns,
            impls,
        } => udp::run(&udp::UdpBench {
            quick,
            inside_netns,
            impls,
        }),
        Command::Ingest { quick } => ingest::run_ingest(quick),
        Command::Kline { quick } => ingest::run_kline(quick),
        Command::Sdk { quick } => sdk::run(quick),
        Command::Itch { quick } => itch::run(quick),
        Command::ItchRx { quick } => itch_rx::run(quick),
        Command::Archive { quick, dir, only } => {
            archive::run(&archive::ArchiveBench { quick, dir, only })
        }
        Command::Child { args } => ring::child(&args),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
