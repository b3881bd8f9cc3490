use std::process::ExitCode;

use clap::Parser as _;
use memtrace::{
    cli::{Cli, Command},
    error::exit_code_for,
    session,
};

fn main() -> ExitCode {
    // Usage errors exit with 2 (clap's convention), --help/--version with 0.
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Trace(args) => session::run_trace(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("memtrace: error: {err:#}");
            exit_code_for(&err)
        }
    }
}
