//! `mdtail`: print the records of ring-log streams — as a table, JSON lines or CSV, with
//! exact decimals — following them live or up to the end of what is there.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use mdi_protocol::ring::{ReadEvent, RingReader, ShmDir, StartAt, WriterState};
use mdi_tools::tail::{Format, KindFilter, Printer};

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
    /// Only these symbols (comma-separated, case-insensitive), resolved through the
    /// instrument definitions in the streams.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    symbol: Vec<String>,
    /// Only these kinds: trade,quote,book,kline,status,instrument (default: all but
    /// instrument).
    #[arg(long, value_name = "LIST", value_parser = KindFilter::parse)]
    kind: Option<KindFilter>,
    /// Where to start: earliest, latest, or seq:N.
    #[arg(long, value_name = "WHERE", default_value = "latest", value_parser = parse_start)]
    from: StartAt,
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

fn parse_start(text: &str) -> Result<StartAt, String> {
    match text {
        "earliest" => Ok(StartAt::Earliest),
        "latest" => Ok(StartAt::Latest),
        _ => match text.strip_prefix("seq:").map(str::parse::<u64>) {
            Some(Ok(seq)) => Ok(StartAt::Sequence(seq)),
            _ => Err(format!(
                "{text:?} is not a start: use earliest, latest or seq:N"
            )),
        },
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
    reader: RingReader,
    /// `--no-follow`: the tail position when mdtail started.
    end: u64,
    done: bool,
}

fn run(cli: &Cli) -> Result<()> {
    let shm = ShmDir::new(&cli.shm_dir);
    if !cli.shm_dir.is_dir() {
        bail!(
            "no shm directory {} (is a publisher running? choose one with --shm-dir or MDI_SHM_DIR)",
            cli.shm_dir.display()
        );
    }
    let names = if cli.streams.is_empty() {
        let names = shm
            .streams()
            .with_context(|| format!("listing streams in {}", cli.shm_dir.display()))?;
        if names.is_empty() {
            bail!("no streams in {}", cli.shm_dir.display());
        }
        names
    } else {
        cli.streams.clone()
    };
    let follow = !cli.no_follow;
    let mut tails = names
        .iter()
        .map(|name| {
            let reader = RingReader::open(&shm, name, cli.from)
                .with_context(|| format!("opening stream {name:?}"))?;
            let end = reader.tail().0;
            Ok(Tail {
                name: name.clone(),
                reader,
                end,
                done: false,
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
    while !stop.load(Ordering::Relaxed) {
        let mut delivered = 0;
        for tail in tails.iter_mut().filter(|t| !t.done) {
            let mut failed = None;
            let name = tail.name.as_str();
            let polled = tail.reader.poll(1024, |event| {
                if failed.is_some() || printer.counts().printed >= limit {
                    return;
                }
                match event {
                    ReadEvent::Record(r) => {
                        if let Err(e) = printer.record(name, r.seq, r.kind, r.body) {
                            failed = Some(e);
                        }
                    }
                    ReadEvent::Lost { from_seq, to_seq } => eprintln!(
                        "mdtail: {name}: {} records lost (sequences {from_seq}..{to_seq}): the writer lapped this reader",
                        to_seq - from_seq
                    ),
                    ReadEvent::EpochStarted {
                        epoch,
                        previous_epoch,
                        writer_pid,
                        ..
                    } if previous_epoch != 0 => eprintln!(
                        "mdtail: {name}: stream restarted: epoch {epoch} (was {previous_epoch}), writer pid {writer_pid}"
                    ),
                    ReadEvent::EpochStarted { .. } => {}
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
            std::thread::sleep(Duration::from_millis(1));
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

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
