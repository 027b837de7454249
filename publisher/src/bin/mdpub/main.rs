//! `mdpub`: mdi's publisher — venue feeds (Binance over WebSocket, ITCH 5.0 over
//! MoldUDP64) into ring logs, served over reliable UDP. One module per command:
//! [`serve`], [`replay`] (Binance history and captures), [`itch`] (ITCH replay and live),
//! [`live`] (`run`, `record`), [`demo`]; [`cli`] holds the argument schema.

mod archive;
mod cli;
mod demo;
mod itch;
mod live;
mod replay;
mod serve;

use crate::cli::*;
use crate::demo::*;
use crate::live::*;
use crate::replay::*;
use crate::serve::*;

/// `--metrics ADDR`, for the command to start once it knows its shm directory.
pub(crate) static METRICS_ADDR: std::sync::OnceLock<Option<std::net::SocketAddr>> =
    std::sync::OnceLock::new();

/// Starts the metrics endpoint of `--metrics` (if given) for the rings of `shm_dir`.
pub(crate) fn start_metrics(
    shm_dir: &std::path::Path,
) -> anyhow::Result<Option<mdi_transport::metrics::MetricsServer>> {
    use anyhow::Context;
    let Some(addr) = METRICS_ADDR.get().copied().flatten() else {
        return Ok(None);
    };
    let server = mdi_transport::metrics::serve(addr, shm_dir.to_owned(), Vec::new())
        .with_context(|| format!("serving metrics on {addr}"))?;
    eprintln!("mdpub: metrics on http://{}/metrics", server.addr());
    Ok(Some(server))
}

fn main() {
    let cli: Cli = mdi_transport::cli::parse_args();
    mdi_transport::cli::init_logging(cli.log_format);
    // every command's metrics endpoint (started where its shm dir is known)
    let _ = METRICS_ADDR.set(cli.metrics);
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

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
