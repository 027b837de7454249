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
