//! `mdtail`: print the records of ring-log streams — as a table, JSON lines or CSV, with
//! exact decimals — following them live or up to the end of what is there.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use mdi_protocol::ring::{ReadEvent, RingReader, ShmDir, StartAt, WaitStrategy, WriterState};
use mdi_tools::tail::{Format, KindFilter, Printer, Stats};

use mdi_subscriber::wall_clock_ns as wall_ns;

#[derive(Debug, Parser)]
#[command(
    name = "mdtail",
    version,
    about = "Print the records of mdi streams (ring logs in shared memory)",
    after_help = "Examples:\n  mdtail                                  every stream, live, as a table\n  mdtail klines --from earliest --no-follow --format jsonl\n  mdtail ticks --symbol BTCUSDT --kind trade --count 10"
)]
struct Cli {
    /// Streams to read (ring names); default: every stream in the shm directory.
    #[arg(value_name = "STREAM")]
    streams: Vec<String>,
    /// Shared-memory directory of the rings.
    #[arg(long, env = "MDI_SHM_DIR", value_name = "DIR", default_value = mdi_protocol::ring::DEFAULT_SHM_DIR)]
    shm_dir: PathBuf,
    /// Read a remote publisher over reliable UDP instead (repeatable):
    /// udp://GROUP:PORT?iface=ADDR or udp://HOST:PORT. Loss is repaired with NAKs.
    #[arg(long = "udp", value_name = "URI", value_parser = parse_channel)]
    channels: Vec<mdi_protocol::udp::Channel>,
    /// Only these symbols (comma-separated, case-insensitive), resolved through the
    /// instrument definitions in the streams.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    symbol: Vec<String>,
    /// Only these kinds: trade,quote,book,kline,status,instrument (default: all but
    /// instrument).
    #[arg(long, value_name = "LIST", value_parser = KindFilter::parse)]
    kind: Option<KindFilter>,
    /// Where to start: earliest, latest, seq:N, or time:ISO8601 (UTC; the first record at
    /// or after it).
    #[arg(long, value_name = "WHERE", default_value = "latest", value_parser = parse_start)]
    from: From,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Table)]
    format: FormatArg,
    /// Keep printing new records as they come (the default).
    #[arg(long, overrides_with = "no_follow")]
    follow: bool,
    /// Exit at the end of what is there now.
    #[arg(long)]
    no_follow: bool,
    /// Exit after printing this many records.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Instead of records: per stream, every second, records/s, gaps and records lost,
    /// restarts, and publish → read latency percentiles.
    #[arg(long, conflicts_with_all = ["format", "count"])]
    stats: bool,
    /// Instead of records: a live candlestick chart of SYMBOL's K-lines (needs a
    /// terminal; q quits).
    #[arg(long, value_name = "SYMBOL", conflicts_with_all = ["format", "count", "stats"])]
    chart: Option<String>,
    /// The chart's K-line interval (Binance names: 1s, 1m, 5m, ...).
    #[arg(
        long,
        value_name = "INTERVAL",
        default_value = "1m",
        requires = "chart"
    )]
    interval: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FormatArg {
    /// Aligned columns (colour on a terminal).
    Table,
    /// One JSON object per record.
    Jsonl,
    /// Comma-separated values, a header row per record kind.
    Csv,
}

/// Where mdtail starts: a ring position, or the first record at or after a time.
#[derive(Debug, Clone, Copy)]
enum From {
    Ring(StartAt),
    Time(i64),
}

fn parse_channel(uri: &str) -> Result<mdi_protocol::udp::Channel, String> {
    mdi_protocol::udp::Channel::parse(uri).map_err(|e| e.to_string())
}

fn parse_start(text: &str) -> Result<From, String> {
    match text {
        "earliest" => Ok(From::Ring(StartAt::Earliest)),
        "latest" => Ok(From::Ring(StartAt::Latest)),
        _ => {
            if let Some(seq) = text.strip_prefix("seq:") {
                return seq
                    .parse()
                    .map(|s| From::Ring(StartAt::Sequence(s)))
                    .map_err(|_| {
                        format!("{text:?} is not a start: seq:N wants a sequence number")
                    });
            }
            if let Some(time) = text.strip_prefix("time:") {
                return mdi_tools::tail::parse_utc(time)
                    .map(From::Time)
                    .ok_or_else(|| {
                        format!(
                            "{text:?} is not a start: time: wants UTC like 2024-01-01T00:00:00Z"
                        )
                    });
            }
            Err(format!(
                "{text:?} is not a start: use earliest, latest, seq:N or time:ISO8601"
            ))
        }
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => {}
        Err(error) if is_broken_pipe(&error) => {}
        Err(error) => {
            eprintln!("mdtail: {error:#}");
            std::process::exit(1);
        }
    }
}

/// A closed pipe (`mdtail | head`) ends mdtail quietly.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

struct Tail {
    name: String,
    /// `--from time:`: records before this are read past (instrument definitions are
    /// still taken), until the first at or after it.
    skip_before: Option<i64>,
    reader: RingReader,
    /// `--no-follow`: the tail position when mdtail started.
    end: u64,
    done: bool,
}

fn run(cli: &Cli) -> Result<()> {
    // over UDP: replicas in a private directory, read like local rings
    let udp = if cli.channels.is_empty() {
        None
    } else {
        let receiver = mdi_subscriber::udp::BackgroundReceiver::start(&cli.channels)
            .context("joining the UDP channels")?;
        if !receiver.wait_for(&cli.streams, Duration::from_secs(10)) {
            bail!(
                "no stream arrived on the UDP channels within 10 s (is a publisher serving them?)"
            );
        }
        Some(receiver)
    };
    let shm_path = udp.as_ref().map_or(cli.shm_dir.as_path(), |r| r.dir());
    let shm = ShmDir::new(shm_path);
    if !shm_path.is_dir() {
        bail!(
            "no shm directory {} (is a publisher running? choose one with --shm-dir or MDI_SHM_DIR)",
            cli.shm_dir.display()
        );
    }
    if let Some(symbol) = &cli.chart {
        return run_chart(cli, &shm, symbol);
    }
    let names = if cli.streams.is_empty() {
        let names = shm
            .streams()
            .with_context(|| format!("listing streams in {}", shm_path.display()))?;
        if names.is_empty() {
            bail!("no streams in {}", shm_path.display());
        }
        names
    } else {
        cli.streams.clone()
    };
    let follow = !cli.no_follow;
    let mut tails = names
        .iter()
        .map(|name| {
            let (start, skip_before) = match cli.from {
                From::Ring(start) => (start, None),
                From::Time(t) => (StartAt::Earliest, Some(t)),
            };
            let reader = RingReader::open(&shm, name, start)
                .with_context(|| format!("opening stream {name:?}"))?;
            let end = reader.tail().0;
            Ok(Tail {
                name: name.clone(),
                reader,
                end,
                done: false,
                skip_before,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let stdout = std::io::stdout();
    let format = match cli.format {
        FormatArg::Table => Format::Table,
        FormatArg::Jsonl => Format::Jsonl,
        FormatArg::Csv => Format::Csv,
    };
    let colour = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let symbols = (!cli.symbol.is_empty()).then(|| cli.symbol.clone());
    let mut printer = Printer::new(
        std::io::BufWriter::with_capacity(1 << 16, stdout.lock()),
        format,
        colour,
        cli.kind.unwrap_or(KindFilter::DEFAULT),
        symbols,
    );
    let limit = cli.count.unwrap_or(u64::MAX);
    let interactive = format == Format::Table;
    let mut stats = cli.stats.then(|| Stats::new(&names));
    let mut stats_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut delivered = 0;
        let now_ns = wall_ns();
        for (index, tail) in tails.iter_mut().enumerate().filter(|(_, t)| !t.done) {
            let mut failed = None;
            let name = tail.name.as_str();
            let skip_before = &mut tail.skip_before;
            let polled = tail.reader.poll(1024, |event| {
                if failed.is_some() || printer.counts().printed >= limit {
                    return;
                }
                if let (Some(from), ReadEvent::Record(r)) = (*skip_before, &event) {
                    match mdi_tools::tail::record_time_ns(r.kind, r.body) {
                        Some(t) if t >= from => *skip_before = None,
                        Some(_) => return,
                        // definitions: taken for symbols, not shown
                        None => {
                            let _ = printer.record(name, r.seq, r.kind, r.body);
                            return;
                        }
                    }
                }
                match (event, stats.as_mut()) {
                    (ReadEvent::Record(r), Some(stats)) => stats.record(index, r.kind, r.body, now_ns),
                    (ReadEvent::Record(r), None) => {
                        if let Err(e) = printer.record(name, r.seq, r.kind, r.body) {
                            failed = Some(e);
                        }
                    }
                    (ReadEvent::Lost { to_seq, from_seq }, Some(stats)) => {
                        stats.lost(index, to_seq - from_seq);
                    }
                    (ReadEvent::Lost { from_seq, to_seq }, None) => eprintln!(
                        "mdtail: {name}: {} records lost (sequences {from_seq}..{to_seq}): the writer lapped this reader",
                        to_seq - from_seq
                    ),
                    (ReadEvent::EpochStarted { previous_epoch, .. }, Some(stats)) => {
                        if previous_epoch != 0 {
                            stats.restarted(index);
                        }
                    }
                    (
                        ReadEvent::EpochStarted {
                            epoch,
                            previous_epoch,
                            writer_pid,
                            ..
                        },
                        None,
                    ) if previous_epoch != 0 => eprintln!(
                        "mdtail: {name}: stream restarted: epoch {epoch} (was {previous_epoch}), writer pid {writer_pid}"
                    ),
                    (ReadEvent::EpochStarted { .. }, None) => {}
                }
            });
            if let Some(e) = failed {
                return Err(e).context("writing the output");
            }
            let polled = polled.with_context(|| format!("reading stream {name:?}"))?;
            delivered += polled;
            if polled == 0
                && !follow
                && (tail.reader.position() >= tail.end || tail.reader.caught_up())
            {
                tail.done = true;
            }
        }
        if let Some(stats) = stats.as_mut()
            && (stats_at.elapsed() >= Duration::from_secs(1) || tails.iter().all(|t| t.done))
        {
            let report = stats.report(stats_at.elapsed());
            stats_at = Instant::now();
            let mut out = std::io::stdout().lock();
            if colour {
                write!(out, "\x1b[2J\x1b[H").context("writing the output")?;
            }
            write!(out, "{report}")
                .and_then(|()| out.flush())
                .context("writing the output")?;
        }
        if printer.counts().printed >= limit || tails.iter().all(|t| t.done) {
            break;
        }
        if delivered == 0 {
            printer.flush().context("writing the output")?;
            for tail in tails.iter_mut() {
                if tail.reader.writer_status(0).state == WriterState::Superseded {
                    eprintln!(
                        "mdtail: {}: the ring was replaced by a new one; reading it from its start",
                        tail.name
                    );
                    tail.reader = RingReader::open(&shm, &tail.name, StartAt::Earliest)
                        .with_context(|| format!("reopening stream {:?}", tail.name))?;
                }
            }
            // sleep until a commit (futex) on the busiest stream, at most 1 ms
            let busiest = tails
                .iter_mut()
                .filter(|t| !t.done)
                .max_by_key(|t| t.reader.position());
            let parked = busiest.is_some_and(|t| {
                t.reader
                    .wait(WaitStrategy::Park {
                        timeout: Duration::from_millis(1),
                    })
                    .is_ok()
            });
            if !parked {
                std::thread::sleep(Duration::from_millis(1));
            }
        } else if interactive {
            printer.flush().context("writing the output")?;
        }
    }
    printer.flush().context("writing the output")?;
    let undecodable = printer.counts().undecodable;
    if undecodable > 0 {
        eprintln!("mdtail: {undecodable} records did not decode and were skipped");
    }
    std::io::stdout().flush().ok();
    Ok(())
}

/// `--chart`: a live candlestick chart until q (or Esc, Ctrl-C).
fn run_chart(cli: &Cli, shm: &ShmDir, symbol: &str) -> Result<()> {
    use mdi_protocol::records::{InstrumentDefinition, Kline, RecordKind, decode};
    use ratatui::crossterm::event::{self, Event as Input, KeyCode, KeyModifiers};
    use ratatui::widgets::{Block, Borders};

    if !std::io::stdout().is_terminal() {
        bail!("--chart draws in a terminal, and standard output is not one");
    }
    let interval = mdi_protocol::interval::Interval::parse(&cli.interval)?;
    let stream = cli.streams.first().map_or("klines", String::as_str);
    let mut reader = RingReader::open(shm, stream, StartAt::Earliest)
        .with_context(|| format!("opening stream {stream:?}"))?;
    let mut instrument: Option<u32> = None;
    let mut candles = mdi_tools::chart::Candles::new(interval.ms(), 1_000);
    let mut terminal = ratatui::init();
    let outcome = loop {
        let polled = reader.poll(65_536, |event| {
            if let ReadEvent::Record(r) = event {
                if r.kind == RecordKind::INSTRUMENT_DEFINITION {
                    if let Ok(d) = decode::<InstrumentDefinition>(r.body)
                        && d.symbol.eq_ignore_ascii_case(symbol)
                    {
                        instrument = Some(d.instrument_id);
                    }
                } else if r.kind == RecordKind::KLINE
                    && let Ok(k) = decode::<Kline>(r.body)
                    && Some(k.instrument_id) == instrument
                {
                    candles.on_kline(&k);
                }
            }
        });
        if let Err(e) = polled {
            break Err(anyhow::anyhow!("reading stream {stream:?}: {e:?}"));
        }
        let title = format!(
            " {symbol} {interval} — {} — q quits ",
            candles
                .last_close()
                .map_or_else(|| "waiting for candles".to_owned(), |c| format!("last {c}"))
        );
        if let Err(e) = terminal.draw(|frame| {
            let block = Block::default().borders(Borders::ALL).title(title);
            let inner = block.inner(frame.area());
            frame.render_widget(block, frame.area());
            frame.render_widget(candles.widget(), inner);
        }) {
            break Err(e.into());
        }
        match event::poll(Duration::from_millis(200)) {
            Ok(true) => match event::read() {
                Ok(Input::Key(key))
                    if matches!(key.code, KeyCode::Char('q') | KeyCode::Esc)
                        || (key.code == KeyCode::Char('c')
                            && key.modifiers.contains(KeyModifiers::CONTROL)) =>
                {
                    break Ok(());
                }
                Ok(_) => {}
                Err(e) => break Err(e.into()),
            },
            Ok(false) => {}
            Err(e) => break Err(e.into()),
        }
    };
    ratatui::restore();
    outcome
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
