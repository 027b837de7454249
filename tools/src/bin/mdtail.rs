//! `mdtail`: print the records of ring-log streams — as a table, JSON lines or CSV, with
//! exact decimals — following them live or up to the end of what is there.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use mdi_protocol::ring::{Seq, StartAt, WaitStrategy, WriterState};
use mdi_protocol::view::RecordView;
use mdi_subscriber::{Event, RecordKind, RecordKinds, SubscribeError, Subscriber, ViewEvent};
use mdi_tools::tail::{DEFAULT_KINDS, Format, Printer, Stats};

use mdi_transport::wall_clock_ns as wall_ns;

#[derive(Debug, Parser)]
#[command(
    name = "mdtail",
    version,
    about = "Print the records of mdi streams (ring logs in shared memory)",
    after_help = "Examples:\n  mdtail                                  every stream, live, as a table\n  mdtail klines --from earliest --no-follow --format jsonl\n  mdtail ticks --symbol BTCUSDT --kind trade --count 10\n  mdtail klines --archive /var/lib/mdi/archive --from time:2024-01-01 --to time:2024-01-02\n\nExit status:\n  0  done (--no-follow, --count), interrupted, or its output closed (mdtail | head)\n  1  an error: no such stream or shm directory, a corrupt ring, bad arguments"
)]
struct Cli {
    /// Log as text for people (colour on a terminal) or one JSON object per line;
    /// warnings and info are shown unless `RUST_LOG` says otherwise.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: mdi_transport::cli::LogFormat,
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
    #[arg(long, value_name = "LIST", value_parser = mdi_tools::tail::parse_kinds)]
    kind: Option<RecordKinds>,
    /// Where to start: earliest, latest, seq:N, or time:T (the first record published at or
    /// after T: 2024-01-01T00:00:00Z, an offset like +09:00, or a date; no offset: UTC).
    #[arg(long, value_name = "WHERE", default_value = "latest", value_parser = parse_start)]
    from: From,
    /// Read history from this tick archive (`mdarchive record --archive ADIR`): a start
    /// older than the ring holds is read from the archive, then the live ring follows
    /// by sequence, no gap, no duplicate.
    #[arg(long, env = "MDI_ARCHIVE_DIR", value_name = "ADIR")]
    archive: Option<PathBuf>,
    /// Stop after this record: seq:N (its sequence number) or time:T (the last record
    /// published at or before T).
    #[arg(long, value_name = "WHERE", value_parser = parse_end)]
    to: Option<End>,
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
    /// Comma-separated values of one kind of record (--kind), a header row first.
    Csv,
}

/// Where mdtail starts: a ring position, or the first record at or after a time.
#[derive(Debug, Clone, Copy)]
enum From {
    Ring(StartAt),
    Time(i64),
}

/// Where mdtail stops (`--to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Seq(u64),
    Time(i64),
}

impl End {
    /// The record is past the end.
    fn passed(self, seq: Seq, publish_ns: i64) -> bool {
        match self {
            Self::Seq(last) => seq.0 > last,
            Self::Time(last) => publish_ns > last,
        }
    }
}

fn parse_end(text: &str) -> Result<End, String> {
    match parse_start(text)? {
        From::Ring(StartAt::Sequence(Seq(seq))) => Ok(End::Seq(seq)),
        From::Time(ns) => Ok(End::Time(ns)),
        _ => Err(format!("{text:?} is not an end: use seq:N or time:T")),
    }
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
                    .map(|s| From::Ring(StartAt::Sequence(Seq(s))))
                    .map_err(|_| {
                        format!("{text:?} is not a start: seq:N wants a sequence number")
                    });
            }
            if let Some(time) = text.strip_prefix("time:") {
                return mdi_tools::tail::parse_utc(time)
                    .map(From::Time)
                    .ok_or_else(|| {
                        format!(
                            "{text:?} is not a start: time: wants a valid time like 2024-01-01T00:00:00Z (an offset like +09:00, a date, or an epoch number with its unit: 1704067200s, …ms, …us, …ns)"
                        )
                    });
            }
            Err(format!(
                "{text:?} is not a start: use earliest, latest, seq:N or time:T"
            ))
        }
    }
}

fn main() {
    let cli: Cli = mdi_transport::cli::parse_args();
    mdi_transport::cli::init_logging(cli.log_format);
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

/// A subscriber for what the command line asks: streams, symbols, kinds, a start, and
/// UDP channels (replicas in a private directory) or the local shm directory.
fn subscriber(
    cli: &Cli,
    streams: &[String],
    symbols: &[String],
    kinds: RecordKinds,
    from: From,
) -> Result<Subscriber> {
    let mut builder = Subscriber::builder().kinds(kinds).wait(WaitStrategy::Park {
        timeout: Duration::from_millis(1),
    });
    for stream in streams {
        builder = builder.stream(stream);
    }
    if !symbols.is_empty() {
        builder = builder.symbols(symbols);
    }
    builder = match from {
        From::Ring(StartAt::Earliest) => builder.from_earliest(),
        From::Ring(StartAt::Sequence(Seq(seq))) => builder.from_sequence(seq),
        From::Ring(_) => builder.from_latest(),
        From::Time(ns) => builder.from_time(ns),
    };
    if cli.channels.is_empty() {
        if !cli.shm_dir.is_dir() {
            bail!(
                "no shm directory {} (is a publisher running? choose one with --shm-dir or MDI_SHM_DIR)",
                cli.shm_dir.display()
            );
        }
        builder = builder.shm_dir(&cli.shm_dir);
    }
    for channel in &cli.channels {
        builder = builder.udp(*channel);
    }
    if let Some(dir) = &cli.archive {
        builder = builder.archive(dir);
    }
    builder.open().map_err(|e| match e {
        SubscribeError::Open { stream, source } => {
            anyhow::Error::new(source).context(format!("opening stream {stream:?}"))
        }
        other => other.into(),
    })
}

fn run(cli: &Cli) -> Result<()> {
    if let Some(symbol) = &cli.chart {
        return run_chart(cli, symbol);
    }
    // a CSV file has one header: one kind of record, or pandas and polars cannot read it
    if cli.format == FormatArg::Csv && cli.kind.is_none_or(|k| k.len() != 1) && !cli.stats {
        anyhow::bail!(
            "--format csv writes one kind of record (one header row, as pandas and polars read \
             it): name it with --kind trade|quote|book|kline|status|instrument"
        );
    }
    let mut subscriber = subscriber(
        cli,
        &cli.streams,
        &cli.symbol,
        // --stats counts every record unless told which kinds
        cli.kind.unwrap_or(if cli.stats {
            RecordKinds::ALL
        } else {
            DEFAULT_KINDS
        }),
        cli.from,
    )?;
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
    let mut printer = Printer::new(
        std::io::BufWriter::with_capacity(1 << 16, stdout.lock()),
        format,
        colour,
    );
    let limit = cli.count.unwrap_or(u64::MAX);
    let follow = !cli.no_follow;
    // --no-follow: what is there now
    let end = subscriber.mark();
    let interactive = format == Format::Table;
    let mut stats = cli.stats.then(|| Stats::new(subscriber.streams()));
    let mut stats_at = Instant::now();
    let mut done = false;
    // --to: the streams that passed their end
    let mut ended: std::collections::HashSet<&'static str> = std::collections::HashSet::new();
    let stream_count = subscriber.streams().count();
    while !stop.load(Ordering::Relaxed) && !done {
        let now_ns = wall_ns();
        let mut failed = None;
        let delivered = subscriber.poll_views(1024, |event| {
            if failed.is_some() || printer.printed() >= limit {
                return;
            }
            if let (
                Some(end),
                ViewEvent::Record {
                    stream,
                    seq,
                    record,
                    ..
                },
            ) = (cli.to, &event)
                && (ended.contains(stream) || end.passed(*seq, record.ts_publish_ns()))
            {
                ended.insert(stream);
                return;
            }
            match (event, stats.as_mut()) {
                (ViewEvent::Record { stream, record, .. }, Some(stats)) => {
                    stats.record(stream, record.ts_publish_ns(), now_ns);
                }
                (
                    ViewEvent::Record {
                        stream,
                        seq,
                        record,
                        symbol,
                    },
                    None,
                ) => {
                    if let Err(e) = printer.record(stream, seq, symbol, record) {
                        failed = Some(e);
                    }
                }
                (ViewEvent::Notice(notice), stats) => report(&notice, stats, follow),
            }
        });
        if let Some(e) = failed {
            return Err(e).context("writing the output");
        }
        let delivered = delivered.context("reading the streams")?;
        let finished = !follow && delivered == 0 && subscriber.reached(&end);
        done = finished || printer.printed() >= limit || ended.len() == stream_count;
        if let Some(stats) = stats.as_mut()
            && (stats_at.elapsed() >= Duration::from_secs(1) || finished)
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
        if delivered == 0 && !done {
            printer.flush().context("writing the output")?;
            subscriber.wait(Duration::from_millis(1));
        } else if interactive {
            printer.flush().context("writing the output")?;
        }
    }
    printer.flush().context("writing the output")?;
    let undecodable = printer.undecodable() + subscriber.undecodable();
    if undecodable > 0 {
        eprintln!("mdtail: {undecodable} records did not decode and were skipped");
    }
    std::io::stdout().flush().ok();
    Ok(())
}

/// Loss, restarts, replaced rings and (when following) writers that went away: on
/// standard error, or counted in `--stats`.
fn report(notice: &Event, stats: Option<&mut Stats>, follow: bool) {
    match (notice, stats) {
        (Event::Lost { stream, count, .. }, Some(stats)) => stats.lost(stream, *count),
        (Event::Restarted { stream, .. }, Some(stats)) => stats.restarted(stream),
        (
            Event::Lost {
                stream,
                from_seq,
                to_seq,
                count,
            },
            None,
        ) => eprintln!(
            "mdtail: {stream}: {count} records lost (sequences {from_seq}..{to_seq}): the writer lapped this reader, or the archive does not have them"
        ),
        (
            Event::Restarted {
                stream,
                epoch,
                previous_epoch,
                writer_pid,
            },
            None,
        ) => eprintln!(
            "mdtail: {stream}: stream restarted: epoch {epoch} (was {previous_epoch}), writer pid {writer_pid}"
        ),
        (Event::Replaced { stream }, _) => eprintln!(
            "mdtail: {stream}: the ring was replaced by a new one; reading it from its start"
        ),
        (Event::WriterGone { stream, state }, _) if follow => {
            let how = match state {
                WriterState::Dead => "died",
                _ => "closed",
            };
            eprintln!("mdtail: {stream}: the writer {how}; waiting for a new one");
        }
        _ => {}
    }
}

/// `--chart`: a live candlestick chart until q (or Esc, Ctrl-C).
fn run_chart(cli: &Cli, symbol: &str) -> Result<()> {
    use ratatui::crossterm::event::{self, Event as Input, KeyCode, KeyModifiers};
    use ratatui::widgets::{Block, Borders};

    if !std::io::stdout().is_terminal() {
        bail!("--chart draws in a terminal, and standard output is not one");
    }
    let interval = mdi_protocol::interval::Interval::parse(&cli.interval)?;
    let stream = cli.streams.first().map_or("klines", String::as_str);
    // the chart shows the history the ring holds, then follows
    let mut klines = subscriber(
        cli,
        &[stream.to_owned()],
        &[symbol.to_owned()],
        RecordKinds::only(RecordKind::KLINE),
        From::Ring(StartAt::Earliest),
    )?;
    let mut candles = mdi_tools::chart::Candles::new(interval.ms(), 1_000);
    let mut terminal = ratatui::init();
    let outcome = loop {
        let polled = klines.poll_views(65_536, |event| {
            if let ViewEvent::Record {
                record: RecordView::Kline(k),
                ..
            } = event
                && let Ok(k) = k.to_record()
            {
                candles.on_kline(&k);
            }
        });
        if let Err(e) = polled {
            break Err(anyhow::anyhow!("reading stream {stream:?}: {e}"));
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
