//! `mdpub`: mdi's publisher — venue feeds (Binance over WebSocket, ITCH 5.0 over
//! MoldUDP64) into ring logs, served over reliable UDP. One module per command:
//! [`serve`], [`replay`] (Binance history and captures), [`itch`] (ITCH replay and live),
//! [`live`] (`run`, `record`), [`demo`]; [`cli`] holds the argument schema.

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

fn main() {
    let cli: Cli = mdi_transport::cli::parse_args();
    mdi_transport::cli::init_logging(cli.log_format);
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
