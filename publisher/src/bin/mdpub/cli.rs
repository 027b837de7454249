//! The command line: subcommands, their arguments and value parsers.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use mdi_protocol::ring::RingOptions;
use mdi_protocol::udp::Channel;
use mdi_publisher::binance::normalize::KlineSource;
use mdi_publisher::kline::Interval;
use mdi_transport::wall_clock_ns;

#[derive(Debug, Parser)]
#[command(
    name = "mdpub",
    version,
    about = "mdi publisher: venue feeds into ring logs, served over reliable UDP",
    after_help = "Exit status:\n  0  done (a replay's end, --duration) or stopped by SIGTERM/SIGINT, rings closed cleanly\n  1  an error, said on stderr (configuration, input file, ring refused, socket) or bad arguments"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Log as text for people (colour on a terminal) or one JSON object per line;
    /// warnings and info are shown unless `RUST_LOG` says otherwise.
    #[arg(long, value_name = "FORMAT", default_value = "text", global = true)]
    pub(crate) log_format: mdi_transport::cli::LogFormat,
    /// Serve Prometheus metrics of the rings this command writes or serves on
    /// http://ADDR/metrics (e.g. 127.0.0.1:9464): rings, registered readers, UDP and
    /// feed counters, read at scrape time.
    #[arg(long, value_name = "ADDR", global = true)]
    pub(crate) metrics: Option<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve rings of a shm directory over reliable UDP (multicast or unicast) until
    /// interrupted; on exit, linger answering NAKs, then send END.
    Serve(Serve),
    /// Replay a capture (`mdpub record`) or a Binance history file (data.binance.vision
    /// aggTrades or trades CSV; plain, .zip or .zst) through the live path into the
    /// `ticks` and `klines` rings, and exit when done.
    Replay(Replay),
    /// Run the live Binance feed as a TOML config says (see config/example.toml): rings
    /// in the shm directory, served over UDP, until interrupted.
    Run(RunArgs),
    /// Run the live feed and write everything received to a capture (`.zst`: compressed)
    /// for `mdpub replay`.
    Record(RecordArgs),
    /// Play the bundled demo feed in a loop into the shm directory and serve it over UDP
    /// on loopback, so `mdtail` shows live-looking data without a network.
    Demo(Demo),
}

/// Where the rings are and how they are served over UDP (shared by the subcommands).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Serving {
    /// Shared-memory directory of the rings.
    #[arg(long, env = "MDI_SHM_DIR", value_name = "DIR", default_value = mdi_protocol::ring::DEFAULT_SHM_DIR)]
    pub(crate) shm_dir: std::path::PathBuf,
    /// Channel to serve on, repeatable: udp://GROUP:PORT?iface=ADDR&ttl=N or udp://HOST:PORT.
    #[arg(long = "udp", value_name = "URI", value_parser = parse_channel)]
    pub(crate) channels: Vec<Channel>,
    /// After the end, keep answering NAKs this long before sending END.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub(crate) linger_ms: u64,
    /// Drop this share of sent datagrams (0.0–1.0), for loss-repair tests and demos.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub(crate) debug_drop_rate: f64,
    /// Seed of the loss generator.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) debug_seed: u64,
    /// Record every record of the rings into this tick archive (a recorder thread
    /// behind them; live, the feed never waits for it; a replay at full speed waits
    /// when it falls half a ring behind, so nothing is lost).
    #[arg(long, value_name = "DIR")]
    pub(crate) archive: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Serve {
    /// Streams to serve (ring names); default: every ring in the shm directory.
    #[arg(value_name = "STREAM")]
    pub(crate) streams: Vec<String>,
    #[command(flatten)]
    pub(crate) serving: Serving,
    /// Exit (with linger and END) once every served ring's writer has exited and all its
    /// records are sent.
    #[arg(long)]
    pub(crate) until_writers_exit: bool,
    /// Exit (with linger and END) after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) duration: Option<f64>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Replay {
    /// The file: BTCUSDT-aggTrades-2024-01-01.csv (or .zip, .zst), a trades file, ...
    #[arg(long, value_name = "FILE")]
    pub(crate) input: PathBuf,
    /// What the file holds; auto tells it from the file name or its first line.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub(crate) format: InputFormat,
    /// The instrument's symbol; default for history files: the file name up to its first
    /// '-'. For a capture: only this symbol (default: every symbol in it).
    #[arg(long, value_name = "SYMBOL")]
    pub(crate) symbol: Option<String>,
    /// Price exponent (default: Binance's 8-decimal strings).
    #[arg(long, value_name = "N", default_value_t = -8, allow_negative_numbers = true)]
    pub(crate) price_exponent: i8,
    /// Quantity exponent.
    #[arg(long, value_name = "N", default_value_t = -8, allow_negative_numbers = true)]
    pub(crate) qty_exponent: i8,
    /// K-line intervals, comma-separated (Binance names).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "1s,1m,5m,15m,1h,1d", value_parser = parse_interval)]
    pub(crate) intervals: Vec<Interval>,
    /// Pace: max (as fast as possible), 1x (real time), Nx (N times real time).
    #[arg(long, value_name = "SPEED", default_value = "max", value_parser = parse_speed)]
    pub(crate) speed: Speed,
    /// Capacity of each ring in bytes (a power of two; memory is used as it fills).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    pub(crate) capacity: u64,
    /// Build K-lines of a capture from trades or aggTrades; auto: aggTrades when the
    /// capture has them, else trades (history files: their own).
    #[arg(long, value_enum, default_value_t = KlineSourceArg::Auto)]
    pub(crate) kline_source: KlineSourceArg,
    /// Continue existing rings in a new epoch instead of starting them afresh.
    #[arg(long)]
    pub(crate) append: bool,
    /// The venue feed the file holds: Binance (history, captures) or ITCH 5.0 (a pcap of
    /// its MoldUDP64 multicast, or a plain ITCH file).
    #[arg(long, value_enum, default_value_t = Feed::Binance)]
    pub(crate) feed: Feed,
    /// ITCH pcaps: how frames are received — read by mdpub (pcap), or through DPDK's
    /// net_pcap device (dpdk; a build with the `dpdk` feature).
    #[arg(long, value_enum, default_value_t = Backend::Pcap)]
    pub(crate) backend: Backend,
    /// ITCH pcaps: only datagrams to this group and port (default: every UDP datagram).
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) group: Option<std::net::SocketAddrV4>,
    /// ITCH with --backend dpdk: more EAL arguments (whitespace-separated), after mdpub's
    /// `-l 0 --no-huge --no-pci --no-shconf --no-telemetry -m 256 --vdev net_pcap0,rx_pcap=FILE`.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub(crate) dpdk_eal: Option<String>,
    /// ITCH: the session date (its times count from midnight), YYYY-MM-DD; default: the
    /// first frame's UTC date, or today for a plain ITCH file.
    #[arg(long, value_name = "DATE")]
    pub(crate) date: Option<String>,
    #[command(flatten)]
    pub(crate) serving: Serving,
}

impl Replay {
    /// The rings a replay writes: `--capacity`, fresh unless `--append`, filled as used.
    pub(crate) fn ring_options(&self) -> RingOptions {
        RingOptions::default()
            .capacity(self.capacity)
            .fresh(!self.append)
            .prefault(false)
            .now_ns(wall_clock_ns())
    }
}

/// A venue feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Feed {
    /// Binance.
    Binance,
    /// NASDAQ TotalView-ITCH 5.0 over MoldUDP64.
    Itch,
}

/// How ITCH frames are received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Backend {
    /// Read the pcap file.
    Pcap,
    /// DPDK (net_pcap virtual device for files).
    Dpdk,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// Shared-memory directory (default: the config's shm_dir, else /dev/shm/mdi).
    #[arg(long, env = "MDI_SHM_DIR", value_name = "DIR")]
    pub(crate) shm_dir: Option<PathBuf>,
    /// Record every record of the rings into this tick archive (a recorder thread
    /// behind them; the feed never waits for it).
    #[arg(long, value_name = "DIR")]
    pub(crate) archive: Option<std::path::PathBuf>,
    /// Also serve on this channel (repeatable; added to the config's).
    #[arg(long = "udp", value_name = "URI", value_parser = parse_channel)]
    pub(crate) channels: Vec<Channel>,
    /// Also write everything received to this capture file.
    #[arg(long, value_name = "FILE")]
    pub(crate) record: Option<PathBuf>,
    /// Stop after this many seconds (default: until interrupted).
    #[arg(long, value_name = "SECONDS")]
    pub(crate) duration: Option<f64>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RecordArgs {
    #[command(flatten)]
    pub(crate) run: RunArgs,
    /// The capture file (`.zst`: zstd-compressed).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Demo {
    #[command(flatten)]
    pub(crate) serving: Serving,
    /// Do not serve over UDP (default: unicast on udp://127.0.0.1:40456).
    #[arg(long, conflicts_with = "channels")]
    pub(crate) no_udp: bool,
    /// Pace: 1x (real time), Nx, or max.
    #[arg(long, value_name = "SPEED", default_value = "1x", value_parser = parse_speed)]
    pub(crate) speed: Speed,
    /// Stop after this many seconds (default: until interrupted).
    #[arg(long, value_name = "SECONDS")]
    pub(crate) duration: Option<f64>,
    /// Write the demo capture to FILE and exit (how the bundled one is made).
    #[arg(long, value_name = "FILE", hide = true)]
    pub(crate) write_capture: Option<PathBuf>,
}

/// `--kline-source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum KlineSourceArg {
    /// AggTrades when the input has them, else raw trades.
    Auto,
    /// Raw trades (`@trade`).
    Trade,
    /// Aggregate trades (`@aggTrade`).
    AggTrade,
}

impl KlineSourceArg {
    /// The source; `auto` asks `has_agg_trades` (called only then).
    pub(crate) fn resolve(self, has_agg_trades: impl FnOnce() -> bool) -> KlineSource {
        match self {
            Self::Trade => KlineSource::Trade,
            Self::AggTrade => KlineSource::AggTrade,
            Self::Auto if has_agg_trades() => KlineSource::AggTrade,
            Self::Auto => KlineSource::Trade,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum InputFormat {
    /// From the file name (`-aggTrades-`, `-trades-`) or a header row.
    Auto,
    /// data.binance.vision aggTrades.
    AggTrades,
    /// data.binance.vision trades.
    Trades,
    /// A capture: `<receive ns> <frame>` lines, as `mdpub record` writes them.
    Capture,
}

pub(crate) use mdi_transport::cli::{Speed, parse_speed};

pub(crate) fn parse_interval(text: &str) -> Result<Interval, String> {
    Interval::parse(text).map_err(|e| e.to_string())
}

pub(crate) fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{text:?} is not a rate between 0 and 1")),
    }
}

pub(crate) fn parse_channel(uri: &str) -> Result<Channel, String> {
    Channel::parse(uri).map_err(|e| e.to_string())
}
