//! `mdstat`: every stream of a shm directory — writer alive or not, epoch, capacity,
//! positions, rates — and the readers registered on it with their lag, as a table or
//! JSON; `--watch` refreshes.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use mdi_protocol::ring::ShmDir;
use mdi_tools::stat::{Limits, check, sample, to_json, to_table};

#[derive(Debug, Parser)]
#[command(
    name = "mdstat",
    version,
    about = "Status of mdi streams: writers, positions, rates, registered readers and their lag",
    after_help = "Exit status:\n  \
        0  printed (with --check: every stream healthy)\n  \
        1  mdstat itself failed (no shm directory, bad arguments)\n  \
        With --check, the most serious problem found:\n  \
        2  a writer is dead, closed or stale (heartbeat older than --max-age)\n  \
        3  a stream is unreadable (missing, corrupt, foreign), or there is none\n  \
        4  a UDP replica lost records it could not repair (more than --max-lost)\n  \
        5  a registered reader lags more than --max-lag records\n  \
        6  an archive recorder died, or lags more than --max-archive-lag records"
)]
struct Cli {
    /// Streams to show (default: every stream in the shm directory).
    #[arg(value_name = "STREAM")]
    streams: Vec<String>,
    /// Shared-memory directory of the rings.
    #[arg(long, env = "MDI_SHM_DIR", value_name = "DIR", default_value = mdi_protocol::ring::DEFAULT_SHM_DIR)]
    shm_dir: PathBuf,
    /// One JSON document (per refresh with --watch) instead of the table.
    #[arg(long)]
    json: bool,
    /// Refresh until interrupted.
    #[arg(long)]
    watch: bool,
    /// Rates are measured over this long (and --watch refreshes this often).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    interval_ms: u64,
    /// A health probe (systemd, Kubernetes): check every stream once, print one line per
    /// problem, exit with the code of the most serious (see below); 0 when healthy.
    #[arg(long, conflicts_with_all = ["watch", "json"])]
    check: bool,
    /// With --check: a registered reader further behind than this many records is a
    /// problem (default: lag is not checked).
    #[arg(long, value_name = "RECORDS", requires = "check")]
    max_lag: Option<u64>,
    /// With --check: a writer whose heartbeat is older than this many seconds is stale.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5.0,
        requires = "check"
    )]
    max_age: f64,
    /// Serve Prometheus metrics of the streams on http://ADDR/metrics until interrupted
    /// (read from shared memory at each scrape), instead of printing.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["watch", "json", "check"])]
    serve: Option<std::net::SocketAddr>,
    /// With --check: a UDP replica may have lost this many records and still be healthy.
    #[arg(long, value_name = "RECORDS", default_value_t = 0, requires = "check")]
    max_lost: u64,
    /// With --check: a tick archive's recorder further behind its ring than this many
    /// records is a problem (a recorder that died always is).
    #[arg(long, value_name = "RECORDS", requires = "check")]
    max_archive_lag: Option<u64>,
}

use mdi_transport::wall_clock_ns as now_ns;

fn main() {
    // bad arguments exit 1 (clap's own code, 2, is a health code here)
    let cli: Cli = mdi_transport::cli::parse_args();
    if let Err(error) = run(&cli) {
        if error.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        }) {
            return;
        }
        eprintln!("mdstat: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> Result<()> {
    if !cli.shm_dir.is_dir() {
        bail!(
            "no shm directory {} (is a publisher running? choose one with --shm-dir or MDI_SHM_DIR)",
            cli.shm_dir.display()
        );
    }
    let dir = ShmDir::new(&cli.shm_dir);
    if let Some(addr) = cli.serve {
        let server = mdi_transport::metrics::serve(addr, cli.shm_dir.clone(), cli.streams.clone())?;
        eprintln!("mdstat: metrics on http://{}/metrics", server.addr());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, std::sync::Arc::clone(&stop))?;
        }
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        return Ok(());
    }
    if cli.check {
        let now = sample(&dir, &cli.streams)?;
        let doc = to_json(&dir, &now, &now, Duration::ZERO, now_ns());
        let limits = Limits {
            max_lag_records: cli.max_lag,
            max_age_ms: (cli.max_age.max(0.0) * 1e3) as u64,
            max_lost: cli.max_lost,
            max_archive_lag: cli.max_archive_lag,
        };
        let problems = check(&doc, &limits);
        let mut stdout = std::io::stdout().lock();
        for (_, line) in &problems {
            writeln!(stdout, "{line}")?;
        }
        let Some((worst, _)) = problems.first() else {
            let n = doc["streams"].as_array().map_or(0, Vec::len);
            writeln!(stdout, "healthy: {n} streams")?;
            return Ok(());
        };
        stdout.flush()?;
        std::process::exit(worst.exit_code());
    }
    let interval = Duration::from_millis(cli.interval_ms.max(1));
    let mut before = sample(&dir, &cli.streams)?;
    let mut taken = Instant::now();
    loop {
        std::thread::sleep(interval);
        let after = sample(&dir, &cli.streams)?;
        let elapsed = taken.elapsed();
        taken = Instant::now();
        let doc = to_json(&dir, &before, &after, elapsed, now_ns());
        let mut stdout = std::io::stdout().lock();
        if cli.json {
            writeln!(stdout, "{doc}")?;
        } else {
            if cli.watch {
                // clear the screen and go home, as watch(1) does
                write!(stdout, "\x1b[2J\x1b[H")?;
            }
            write!(stdout, "{}", to_table(&doc))?;
        }
        stdout.flush()?;
        if after.is_empty() && !cli.watch {
            bail!("no streams in {}", cli.shm_dir.display());
        }
        for s in &after {
            if let Err(e) = &s.info {
                eprintln!("mdstat: {}: {e}", s.name);
            }
        }
        if !cli.watch {
            return Ok(());
        }
        before = after;
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
