//! What every mdi binary does the same at start: its arguments' errors, its log. Behind the `cli` feature,
//! which only binaries enable — a library never installs a subscriber; a binary calls
//! [`init_logging`] once, first thing.
//!
//! - Warnings and info are shown by default; `RUST_LOG` overrides (`RUST_LOG=debug`,
//!   `RUST_LOG=mdi_transport=trace,warn`).
//! - Text for people, with colour only when stderr is a terminal (never in a file, a pipe
//!   or the journal; `NO_COLOR` turns it off there too), or one JSON object per line
//!   (`--log-format json`) for log collectors: `timestamp`, `level`, `target`, `fields`.
//! - Logs go to stderr: standard output stays the tools' data.

use std::io::IsTerminal;

/// How the log is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Lines for people (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("log format {other:?}: expected text or json")),
        }
    }
}

/// The command line as `P` says, or exit: 0 after `--help` / `--version`, 1 for bad
/// arguments (every binary documents its exit codes; clap's own 2 means something else
/// to some of them, e.g. `mdstat --check`).
pub fn parse_args<P: clap::Parser>() -> P {
    P::try_parse().unwrap_or_else(|e| {
        let _ = e.print();
        std::process::exit(i32::from(e.use_stderr()));
    })
}

/// The filter when `RUST_LOG` is not set.
pub const DEFAULT_LOG_FILTER: &str = "info";

/// Installs the process's log (see the module docs). Call once, before anything logs.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// What a progress counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes of an input (a replayed file).
    Bytes,
    /// Records (an archive's range, read for an export or a replay).
    Records,
}

/// Progress of a long job (a replay, an export) over a count that grows (bytes read,
/// records passed):
/// on a terminal a bar with rate and ETA, redrawn ten times a second; otherwise — a log
/// file, the journal — one line every `LINE_EVERY`. Reads the count on a thread of its
/// own: the job only adds to an atomic.
#[derive(Debug)]
pub struct Progress {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often a progress line is written when stderr is not a terminal.
pub const LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Progress {
    /// Shows the progress of `what` (`"replaying day.csv"`): `done` bytes of `total`
    /// (unknown for a compressed input: then the bytes and the rate alone).
    pub fn start(
        what: impl Into<String>,
        done: std::sync::Arc<std::sync::atomic::AtomicU64>,
        total: Option<u64>,
    ) -> Self {
        Self::start_counting(Unit::Bytes, what, done, total)
    }

    /// Shows the progress of `what` in `unit`s: `done` of `total` (or unknown).
    pub fn start_counting(
        unit: Unit,
        what: impl Into<String>,
        done: std::sync::Arc<std::sync::atomic::AtomicU64>,
        total: Option<u64>,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let what = what.into();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let terminal = std::io::stderr().is_terminal();
        let thread = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::Builder::new()
                .name("progress".into())
                .spawn(move || {
                    let started = std::time::Instant::now();
                    let bar = terminal.then(|| {
                        let (count, of, rate) = match unit {
                            Unit::Bytes => ("{bytes}", "{total_bytes}", "{bytes_per_sec}"),
                            Unit::Records => ("{human_pos} records", "{human_len}", "{per_sec}"),
                        };
                        let bar = match total {
                            Some(t) => indicatif::ProgressBar::new(t).with_style(
                                indicatif::ProgressStyle::with_template(&format!(
                                    "{{msg}} [{{bar:30}}] {count}/{of} {rate} ETA {{eta}}"
                                ))
                                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                                .progress_chars("=> "),
                            ),
                            None => indicatif::ProgressBar::new_spinner().with_style(
                                indicatif::ProgressStyle::with_template(&format!(
                                    "{{msg}} {count} {rate} {{elapsed}}"
                                ))
                                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                            ),
                        };
                        bar.set_message(what.clone());
                        bar
                    });
                    let mut last_line = started;
                    while !stop.load(Ordering::Relaxed) {
                        // (woken at once when the job ends: its end is not delayed)
                        std::thread::park_timeout(std::time::Duration::from_millis(100));
                        let n = done.load(Ordering::Relaxed);
                        match &bar {
                            Some(bar) => bar.set_position(n),
                            None if last_line.elapsed() >= LINE_EVERY => {
                                last_line = std::time::Instant::now();
                                eprintln!(
                                    "{}",
                                    progress_line(unit, &what, n, total, started.elapsed())
                                );
                            }
                            None => {}
                        }
                    }
                    if let Some(bar) = bar {
                        bar.finish_and_clear();
                    }
                })
                .ok()
        };
        Self { stop, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// `what: 45% (120.0 MB of 266.7 MB), 40.0 MB/s, ETA 4 s` (without a total: the count
/// and the rate); records as `1.2 M records of 2.7 M, 3.1 M/s`.
pub fn progress_line(
    unit: Unit,
    what: &str,
    done: u64,
    total: Option<u64>,
    elapsed: std::time::Duration,
) -> String {
    let (scale, name, per) = match unit {
        Unit::Bytes => (1e6, " MB", " MB/s"),
        Unit::Records => (1e6, " M records", " M records/s"),
    };
    let amount = |n: u64| n as f64 / scale;
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    match total {
        Some(t) if t > 0 => {
            let eta = (t.saturating_sub(done)) as f64 / rate.max(1.0);
            format!(
                "{what}: {:.0}% ({:.1}{name} of {:.1}{name}), {:.1}{per}, ETA {:.0} s",
                done as f64 * 100.0 / t as f64,
                amount(done),
                amount(t),
                rate / scale,
                eta
            )
        }
        _ => format!(
            "{what}: {:.1}{name}, {:.1}{per}",
            amount(done),
            rate / scale
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_has_percent_rate_and_eta() {
        let line = progress_line(
            Unit::Bytes,
            "replaying day.csv",
            50_000_000,
            Some(200_000_000),
            std::time::Duration::from_secs(5),
        );
        assert_eq!(
            line,
            "replaying day.csv: 25% (50.0 MB of 200.0 MB), 10.0 MB/s, ETA 15 s"
        );
        let unknown = progress_line(
            Unit::Bytes,
            "replaying day.csv.zst",
            3_000_000,
            None,
            std::time::Duration::from_secs(1),
        );
        assert_eq!(unknown, "replaying day.csv.zst: 3.0 MB, 3.0 MB/s");
        let records = progress_line(
            Unit::Records,
            "exporting ticks",
            1_500_000,
            Some(6_000_000),
            std::time::Duration::from_secs(1),
        );
        assert_eq!(
            records,
            "exporting ticks: 25% (1.5 M records of 6.0 M records), 1.5 M records/s, ETA 3 s"
        );
    }
}

/// How fast a replay runs: as fast as it can, or a multiple of the pace the records
/// happened at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as it can.
    Max,
    /// This many times as fast as it happened (1.0: as it happened).
    Times(f64),
}

/// `max`, `1x`, `10x`, `0.5x`.
pub fn parse_speed(text: &str) -> Result<Speed, String> {
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

/// Sleeps so that times `t` (ns, any clock) are replayed `speed` times as fast as they
/// happened, counted from the first one.
#[derive(Debug)]
pub struct Pacer {
    speed: Speed,
    origin: Option<(std::time::Instant, i64)>,
}

impl Pacer {
    /// A pacer at `speed`.
    pub fn new(speed: Speed) -> Self {
        Self {
            speed,
            origin: None,
        }
    }

    /// Returns when time `t` is due (at once at `Speed::Max`).
    pub fn wait_for(&mut self, t: i64) {
        let Speed::Times(factor) = self.speed else {
            return;
        };
        let (wall, first) = *self.origin.get_or_insert((std::time::Instant::now(), t));
        let due = std::time::Duration::from_secs_f64((t - first).max(0) as f64 / 1e9 / factor);
        let elapsed = wall.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}
