//! `mdpub`: mdi's publisher. Built so far: `mdpub serve` (rings of a shm directory over
//! reliable UDP) and `mdpub replay` (Binance history files into rings, served over UDP
//! while they are written). The live venue adapters come next.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};
use mdi_protocol::udp::Channel;
use mdi_publisher::capture::{CaptureWriter, looks_like_capture, parse_line, replay_capture};
use mdi_publisher::demo;
use mdi_publisher::kline::Interval;
use mdi_publisher::normalize::{InstrumentSpec, KlineSource, Normalizer, NormalizerConfig, Rings};
use mdi_publisher::replay::{HistoryFormat, open_input, replay_history};
use mdi_transport::sender::{ServeUntil, UdpSender, UdpSenderOptions, serve};
use mdi_transport::wall_clock_ns;

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
struct Serving {
    /// Shared-memory directory of the rings.
    #[arg(long, env = "MDI_SHM_DIR", value_name = "DIR", default_value = mdi_protocol::ring::DEFAULT_SHM_DIR)]
    shm_dir: std::path::PathBuf,
    /// Channel to serve on, repeatable: udp://GROUP:PORT?iface=ADDR&ttl=N or udp://HOST:PORT.
    #[arg(long = "udp", value_name = "URI", value_parser = parse_channel)]
    channels: Vec<Channel>,
    /// After the end, keep answering NAKs this long before sending END.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    linger_ms: u64,
    /// Drop this share of sent datagrams (0.0–1.0), for loss-repair tests and demos.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    debug_drop_rate: f64,
    /// Seed of the loss generator.
    #[arg(long, value_name = "N", default_value_t = 1)]
    debug_seed: u64,
}

impl Serving {
    fn senders(&self, streams: &[String]) -> Result<Vec<UdpSender>> {
        let options = UdpSenderOptions {
            linger: Duration::from_millis(self.linger_ms),
            debug_drop_rate: self.debug_drop_rate,
            debug_seed: self.debug_seed,
        };
        let shm = ShmDir::new(&self.shm_dir);
        self.channels
            .iter()
            .map(|channel| {
                UdpSender::new(*channel, &shm, streams, &options)
                    .with_context(|| format!("serving on {channel}"))
            })
            .collect()
    }
}

#[derive(Debug, clap::Args)]
struct Serve {
    /// Streams to serve (ring names); default: every ring in the shm directory.
    #[arg(value_name = "STREAM")]
    streams: Vec<String>,
    #[command(flatten)]
    serving: Serving,
    /// Exit (with linger and END) once every served ring's writer has exited and all its
    /// records are sent.
    #[arg(long)]
    until_writers_exit: bool,
    /// Exit (with linger and END) after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
}

#[derive(Debug, clap::Args)]
struct Replay {
    /// The file: BTCUSDT-aggTrades-2024-01-01.csv (or .zip, .zst), a trades file, ...
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// What the file holds; auto tells it from the file name or its first line.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    format: InputFormat,
    /// The instrument's symbol; default for history files: the file name up to its first
    /// '-'. For a capture: only this symbol (default: every symbol in it).
    #[arg(long, value_name = "SYMBOL")]
    symbol: Option<String>,
    /// Price exponent (default: Binance's 8-decimal strings).
    #[arg(long, value_name = "N", default_value_t = -8, allow_negative_numbers = true)]
    price_exponent: i8,
    /// Quantity exponent.
    #[arg(long, value_name = "N", default_value_t = -8, allow_negative_numbers = true)]
    qty_exponent: i8,
    /// K-line intervals, comma-separated (Binance names).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "1s,1m,5m,15m,1h,1d", value_parser = parse_interval)]
    intervals: Vec<Interval>,
    /// Pace: max (as fast as possible), 1x (real time), Nx (N times real time).
    #[arg(long, value_name = "SPEED", default_value = "max", value_parser = parse_speed)]
    speed: Speed,
    /// Capacity of each ring in bytes (a power of two; memory is used as it fills).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    capacity: u64,
    /// Build K-lines of a capture from trades or aggTrades (history files: their own).
    #[arg(long, value_enum, default_value_t = KlineSourceArg::Trade)]
    kline_source: KlineSourceArg,
    /// Continue existing rings in a new epoch instead of starting them afresh.
    #[arg(long)]
    append: bool,
    /// The venue feed the file holds: Binance (history, captures) or ITCH 5.0 (a pcap of
    /// its MoldUDP64 multicast, or a plain ITCH file).
    #[arg(long, value_enum, default_value_t = Feed::Binance)]
    feed: Feed,
    /// ITCH pcaps: how frames are received — read by mdpub (pcap), or through DPDK's
    /// net_pcap device (dpdk; a build with the `dpdk` feature).
    #[arg(long, value_enum, default_value_t = Backend::Pcap)]
    backend: Backend,
    /// ITCH pcaps: only datagrams to this group and port (default: every UDP datagram).
    #[arg(long, value_name = "ADDR:PORT")]
    group: Option<std::net::SocketAddrV4>,
    /// ITCH with --backend dpdk: more EAL arguments (whitespace-separated), after mdpub's
    /// `-l 0 --no-huge --no-pci --no-shconf --no-telemetry -m 256 --vdev net_pcap0,rx_pcap=FILE`.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    dpdk_eal: Option<String>,
    /// ITCH: the session date (its times count from midnight), YYYY-MM-DD; default: the
    /// first frame's UTC date, or today for a plain ITCH file.
    #[arg(long, value_name = "DATE")]
    date: Option<String>,
    #[command(flatten)]
    serving: Serving,
}

impl Replay {
    /// The rings a replay writes: `--capacity`, fresh unless `--append`, filled as used.
    fn ring_options(&self) -> RingOptions {
        RingOptions::default()
            .capacity(self.capacity)
            .fresh(!self.append)
            .prefault(false)
            .now_ns(wall_clock_ns())
    }
}

/// A venue feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Feed {
    /// Binance.
    Binance,
    /// NASDAQ TotalView-ITCH 5.0 over MoldUDP64.
    Itch,
}

/// How ITCH frames are received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// Read the pcap file.
    Pcap,
    /// DPDK (net_pcap virtual device for files).
    Dpdk,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Shared-memory directory (default: the config's shm_dir, else /dev/shm/mdi).
    #[arg(long, env = "MDI_SHM_DIR", value_name = "DIR")]
    shm_dir: Option<PathBuf>,
    /// Also serve on this channel (repeatable; added to the config's).
    #[arg(long = "udp", value_name = "URI", value_parser = parse_channel)]
    channels: Vec<Channel>,
    /// Also write everything received to this capture file.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Stop after this many seconds (default: until interrupted).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
}

#[derive(Debug, clap::Args)]
struct RecordArgs {
    #[command(flatten)]
    run: RunArgs,
    /// The capture file (`.zst`: zstd-compressed).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
struct Demo {
    #[command(flatten)]
    serving: Serving,
    /// Do not serve over UDP (default: unicast on udp://127.0.0.1:40456).
    #[arg(long, conflicts_with = "channels")]
    no_udp: bool,
    /// Pace: 1x (real time), Nx, or max.
    #[arg(long, value_name = "SPEED", default_value = "1x", value_parser = parse_speed)]
    speed: Speed,
    /// Stop after this many seconds (default: until interrupted).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Write the demo capture to FILE and exit (how the bundled one is made).
    #[arg(long, value_name = "FILE", hide = true)]
    write_capture: Option<PathBuf>,
}

/// `--kline-source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KlineSourceArg {
    /// Raw trades (`@trade`).
    Trade,
    /// Aggregate trades (`@aggTrade`).
    AggTrade,
}

impl From<KlineSourceArg> for KlineSource {
    fn from(arg: KlineSourceArg) -> Self {
        match arg {
            KlineSourceArg::Trade => Self::Trade,
            KlineSourceArg::AggTrade => Self::AggTrade,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum InputFormat {
    /// From the file name (`-aggTrades-`, `-trades-`) or a header row.
    Auto,
    /// data.binance.vision aggTrades.
    AggTrades,
    /// data.binance.vision trades.
    Trades,
    /// A capture: `<receive ns> <frame>` lines, as `mdpub record` writes them.
    Capture,
}

/// How fast a replay runs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Speed {
    Max,
    Times(f64),
}

fn parse_speed(text: &str) -> Result<Speed, String> {
    if text == "max" {
        return Ok(Speed::Max);
    }
    match text.strip_suffix('x').map(str::parse::<f64>) {
        Some(Ok(n)) if n > 0.0 && n.is_finite() => Ok(Speed::Times(n)),
        _ => Err(format!(
            "{text:?} is not a speed: use max, 1x, or another multiple such as 10x or 0.5x"
        )),
    }
}

fn parse_interval(text: &str) -> Result<Interval, String> {
    Interval::parse(text).map_err(|e| e.to_string())
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{text:?} is not a rate between 0 and 1")),
    }
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
        Command::Serve(args) => run_serve(&args),
        Command::Replay(args) => run_replay(&args),
        Command::Demo(args) => run_demo(&args),
        Command::Run(args) => run_live(&args, args.record.as_deref()),
        Command::Record(args) => run_live(&args.run, Some(&args.out)),
    };
    if let Err(error) = result {
        eprintln!("mdpub: {error:#}");
        std::process::exit(1);
    }
}

fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

fn run_serve(args: &Serve) -> Result<()> {
    if args.serving.channels.is_empty() {
        bail!("nothing to serve on: give at least one --udp URI");
    }
    let shm = ShmDir::new(&args.serving.shm_dir);
    let streams = if args.streams.is_empty() {
        shm.streams()
            .with_context(|| format!("listing rings in {}", shm.path().display()))?
    } else {
        args.streams.clone()
    };
    if streams.is_empty() {
        bail!(
            "no rings to serve in {} (is the publisher writing there?)",
            shm.path().display()
        );
    }
    let mut senders = args.serving.senders(&streams)?;
    let stop = interrupt_flag()?;
    eprintln!(
        "mdpub: serving {} on {}",
        streams.join(", "),
        channel_list(&senders)
    );
    serve(
        &mut senders,
        &stop,
        ServeUntil {
            duration: args.duration.map(Duration::from_secs_f64),
            writers_exit: args.until_writers_exit,
        },
    )?;
    report_senders(&senders);
    Ok(())
}

fn channel_list(senders: &[UdpSender]) -> String {
    senders
        .iter()
        .map(|s| s.channel().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn report_senders(senders: &[UdpSender]) {
    for sender in senders {
        for mdi_transport::sender::StreamStats {
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
}

/// What the input holds, resolved.
enum Input {
    History(HistoryFormat),
    Capture,
}

fn input_kind(args: &Replay, file_name: &str) -> Result<Input> {
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

/// Sleeps so that times `t` (ns, any clock) are replayed `speed` times as fast as they
/// happened, counted from the first one.
struct Pacer {
    speed: Speed,
    origin: Option<(Instant, i64)>,
}

impl Pacer {
    fn new(speed: Speed) -> Self {
        Self {
            speed,
            origin: None,
        }
    }

    fn wait_for(&mut self, t: i64) {
        let Speed::Times(factor) = self.speed else {
            return;
        };
        let (wall, first) = *self.origin.get_or_insert((Instant::now(), t));
        let due = Duration::from_secs_f64((t - first).max(0) as f64 / 1e9 / factor);
        let elapsed = wall.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

/// Creates the `ticks` and `klines` rings, runs `job` on them while the senders of
/// `serving` serve them (on a thread of their own), and returns when the job is done and
/// the senders have ended (linger, END).
fn write_and_serve<T: Send>(
    serving: &Serving,
    (ticks, klines): (&RingOptions, &RingOptions),
    stop: &AtomicBool,
    job: impl FnOnce(Rings) -> Result<T> + Send,
) -> Result<(T, Vec<UdpSender>)> {
    let shm = ShmDir::new(&serving.shm_dir);
    let rings = Rings {
        ticks: RingWriter::create(&shm, "ticks", ticks).context("creating ring ticks")?,
        klines: RingWriter::create(&shm, "klines", klines).context("creating ring klines")?,
    };
    let mut senders = serving.senders(&["ticks".to_owned(), "klines".to_owned()])?;
    if senders.is_empty() {
        return Ok((job(rings)?, senders));
    }
    eprintln!("mdpub: serving ticks, klines on {}", channel_list(&senders));
    let result = std::thread::scope(|scope| {
        let writing = scope.spawn(move || job(rings));
        let served = serve(
            &mut senders,
            stop,
            ServeUntil {
                duration: None,
                writers_exit: true,
            },
        );
        let result = writing
            .join()
            .map_err(|_| anyhow::anyhow!("the writing thread panicked"))?;
        served?;
        result
    })?;
    Ok((result, senders))
}

fn run_replay(args: &Replay) -> Result<()> {
    if args.feed == Feed::Itch {
        return run_itch_replay(args);
    }
    let file_name = args
        .input
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let kind = input_kind(args, file_name)?;
    let input =
        open_input(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    let options = args.ring_options();
    let stop = interrupt_flag()?;
    let mut pacer = Pacer::new(args.speed);
    let mut config = NormalizerConfig {
        intervals: args.intervals.clone(),
        kline_source: args.kline_source.into(),
        ..NormalizerConfig::default()
    };
    eprintln!(
        "mdpub: replaying {} into {}",
        args.input.display(),
        args.serving.shm_dir.display()
    );
    let started = Instant::now();
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
            // history: final candles only
            config.kline_update_ms = None;
            write_and_serve(&args.serving, (&options, &options), &stop, |rings| {
                let mut normalizer = Normalizer::new(config, rings, wall_clock_ns)?;
                let counts = replay_history(input, format, &mut normalizer, 0, pe, qe, |t| {
                    pacer.wait_for(t);
                    (!stop.load(Ordering::Relaxed)).then(wall_clock_ns)
                })?;
                Ok((counts.malformed, counts.interrupted, normalizer.counters()))
            })?
        }
        Input::Capture => {
            if let Some(symbol) = &args.symbol {
                config.instruments = vec![InstrumentSpec {
                    symbol: symbol.clone(),
                    price_exponent: args.price_exponent,
                    qty_exponent: args.qty_exponent,
                }];
            }
            write_and_serve(&args.serving, (&options, &options), &stop, |rings| {
                let mut normalizer = Normalizer::new(config, rings, wall_clock_ns)?;
                let counts = replay_capture(input, &mut normalizer, |t| {
                    pacer.wait_for(t);
                    !stop.load(Ordering::Relaxed)
                })?;
                let counters = normalizer.counters();
                Ok((
                    counts.bad_lines + counters.malformed,
                    counts.interrupted,
                    counters,
                ))
            })?
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
    report_senders(&senders);
    Ok(())
}

/// UTC midnight of `YYYY-MM-DD`, ns since the Unix epoch.
fn midnight_of(date: &str) -> Result<i64> {
    mdi_publisher::itch::feed::session_midnight(date)
        .with_context(|| format!("{date:?} is not a date: use YYYY-MM-DD"))
}

/// Where an ITCH replay reads.
enum Source {
    /// Frames of a pcap (read by mdpub or by DPDK).
    Frames(Box<dyn mdi_publisher::itch::replay::FrameSource + Send>),
    /// A plain ITCH file.
    File(Box<dyn std::io::BufRead + Send>),
}

#[cfg(feature = "dpdk")]
fn dpdk_replay_source(
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
    Ok(Box::new(port.end_when_idle(Duration::from_millis(200))))
}

#[cfg(not(feature = "dpdk"))]
fn dpdk_replay_source(
    _: &Replay,
) -> Result<Box<dyn mdi_publisher::itch::replay::FrameSource + Send>> {
    bail!(
        "--backend dpdk needs an mdpub built with the `dpdk` feature (cargo build --features dpdk; needs libdpdk-dev)"
    )
}

fn run_itch_replay(args: &Replay) -> Result<()> {
    use mdi_itch::pcap::PcapReader;
    use mdi_publisher::itch::feed::{ItchFeed, utc_midnight};
    use mdi_publisher::itch::replay::{replay_file, replay_frames};

    let is_pcap = args.input.to_str().is_some_and(|p| p.contains(".pcap"));
    let input =
        open_input(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
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
    let midnight = args.date.as_deref().map(midnight_of).transpose()?;
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
        |rings| match &mut source {
            Source::Frames(frames) => {
                let mut feed = ItchFeed::new(rings, midnight, wall_clock_ns);
                let counts = replay_frames(frames.as_mut(), args.group, &mut feed, |t| {
                    pacer.wait_for(t);
                    (!stop.load(Ordering::Relaxed)).then(wall_clock_ns)
                })?;
                Ok((counts, feed.counters(), feed.books().counters()))
            }
            Source::File(input) => {
                let today = utc_midnight(wall_clock_ns());
                let mut feed = ItchFeed::new(rings, Some(midnight.unwrap_or(today)), wall_clock_ns);
                let counts = replay_file(input, &mut feed, || {
                    (!stop.load(Ordering::Relaxed)).then(wall_clock_ns)
                })?;
                Ok((counts, feed.counters(), feed.books().counters()))
            }
        },
    )?;
    let (counts, feed, books) = outcome;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "mdpub: {} ITCH messages ({} malformed), {} trades, {} book updates, {} quotes, {} records in all; {} MoldUDP64 packets, {} other frames, {} gaps, {} messages lost in {seconds:.2} s ({:.0} messages/s){}",
        feed.messages,
        feed.malformed,
        feed.trades,
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

/// Where `mdpub run` serves: the config's channels plus `--udp`, its shm directory
/// unless `--shm-dir`.
fn live_serving(args: &RunArgs, config: &mdi_publisher::config::Config) -> Result<Serving> {
    let mut channels = config
        .udp
        .channels
        .iter()
        .map(|c| Channel::parse(c))
        .collect::<Result<Vec<_>, _>>()?;
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
    })
}

/// The interrupt flag, also set after `--duration`.
fn live_stop(args: &RunArgs) -> Result<Arc<AtomicBool>> {
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
fn live_rings(config: &mdi_publisher::config::Config) -> (RingOptions, RingOptions) {
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

fn run_live(args: &RunArgs, record: Option<&std::path::Path>) -> Result<()> {
    let config = mdi_publisher::config::Config::load(&args.config)?;
    if let Some(itch) = &config.itch {
        if record.is_some() {
            bail!(
                "mdpub record captures the Binance feed; capture an ITCH multicast with tcpdump (a pcap replays with mdpub replay --feed itch)"
            );
        }
        return run_itch_live(args, &config, itch);
    }
    let live = config.live();
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
    let (counters, senders) = write_and_serve(&serving, (&ticks, &klines), &stop, |rings| {
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
        "mdpub: {} frames, {} records ({} trades, {} klines); {} connects, {} disconnects, {} rollovers, {} pings; {} malformed, {} unknown events, {} duplicates, {} gaps ({} missing), {} snapshots",
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
        counters.snapshots
    );
    report_senders(&senders);
    Ok(())
}

fn run_itch_live(
    args: &RunArgs,
    config: &mdi_publisher::config::Config,
    itch: &mdi_publisher::config::ItchSection,
) -> Result<()> {
    use mdi_itch::mold::{SessionConfig, session_id};
    use mdi_publisher::itch::feed::{ItchFeed, utc_midnight};
    use mdi_publisher::itch::live::{self, LiveConfig, Receiver};

    let midnight = match &itch.date {
        Some(date) => midnight_of(date)?,
        None => utc_midnight(wall_clock_ns()),
    };
    let live_config = LiveConfig {
        group: itch.group,
        interface: itch.interface,
        request_server: itch.request_server,
        session: SessionConfig {
            session: itch.session.as_deref().map(session_id),
            request_timeout_ns: i64::try_from(itch.request_timeout_ms)
                .unwrap_or(i64::MAX / 1_000_000)
                .saturating_mul(1_000_000),
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
        write_and_serve(&serving, (&ticks, &klines), &stop, |rings| {
            // opened on the writing thread: a DPDK port is polled where it was started
            let mut receiver = if itch.backend == "dpdk" {
                dpdk_live_receiver(itch)?
            } else {
                Receiver::socket(&live_config)?
            };
            let mut feed = ItchFeed::new(rings, Some(midnight), wall_clock_ns);
            let counters = live::run(&live_config, &mut receiver, &mut feed, &stop, wall_clock_ns)?;
            Ok((counters, feed.counters(), feed.books().counters()))
        })?;
    let seconds = started.elapsed().as_secs_f64();
    let s = counters.session;
    eprintln!(
        "mdpub: {} ITCH messages ({} malformed), {} trades, {} book updates, {} quotes, {} records in all; {} datagrams, {} MoldUDP64 packets ({} duplicates, {} other session, {} malformed), {} gaps, {} re-requests, {} messages lost in {seconds:.2} s",
        feed.messages,
        feed.malformed,
        feed.trades,
        feed.book_updates,
        feed.quotes,
        feed.records,
        counters.datagrams,
        s.packets,
        s.duplicates,
        s.wrong_session,
        s.malformed,
        s.gaps,
        counters.requests_sent,
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
fn dpdk_live_receiver(
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
fn dpdk_live_receiver(
    _: &mdi_publisher::config::ItchSection,
) -> Result<mdi_publisher::itch::live::Receiver> {
    bail!(
        "itch.backend = \"dpdk\" needs an mdpub built with the `dpdk` feature (cargo build --features dpdk; needs libdpdk-dev)"
    )
}

/// The demo's channel when none is given: unicast on loopback.
const DEMO_CHANNEL: &str = "udp://127.0.0.1:40456";

fn run_demo(args: &Demo) -> Result<()> {
    if let Some(path) = &args.write_capture {
        let mut out =
            CaptureWriter::create(path).with_context(|| format!("creating {}", path.display()))?;
        demo::generate(demo::SEED, demo::SECONDS, demo::START_NS, &mut out)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("mdpub: wrote the demo capture to {}", path.display());
        return Ok(());
    }
    let lines = demo::bundled_lines().context("reading the bundled capture")?;
    let looper = demo::Looper::new(&lines);
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
    let pass_ns = i64::try_from(demo::SECONDS).unwrap_or(0) * 1_000_000_000;
    let speed = args.speed;
    let ((passes, counters), senders) =
        write_and_serve(&serving, (&options, &options), &stop, |rings| {
            let mut normalizer =
                Normalizer::new(NormalizerConfig::default(), rings, wall_clock_ns)?;
            let start = wall_clock_ns();
            let mut pacer = Pacer::new(speed);
            let mut pass = 0u64;
            'passes: loop {
                // this pass's times: the capture moved to now (1x) or to its pace
                let shift = start - demo::START_NS + i64::try_from(pass).unwrap_or(0) * pass_ns;
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

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
