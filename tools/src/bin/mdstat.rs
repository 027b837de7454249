//! `mdstat`: every stream of a shm directory — writer alive or not, epoch, capacity,
//! positions, rates — and the readers registered on it with their lag, as a table or
//! JSON; `--watch` refreshes.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use mdi_protocol::ring::ShmDir;
use mdi_tools::stat::{sample, to_json, to_table};

#[derive(Debug, Parser)]
#[command(
    name = "mdstat",
    version,
    about = "Status of mdi streams: writers, positions, rates, registered readers and their lag"
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
}

use mdi_transport::wall_clock_ns as now_ns;

fn main() {
    let cli = Cli::parse();
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
