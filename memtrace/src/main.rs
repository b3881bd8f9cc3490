use std::process::ExitCode;

use clap::Parser as _;
use memtrace::{
    cli::{Cli, Command},
    error::exit_code_for,
    generate, overview, report, session, sockets,
};

fn main() -> ExitCode {
    // Usage errors exit with 2 (clap's convention), --help/--version with 0.
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Trace(args) => session::run_trace(args),
        Command::Report(args) => report::run_report(args),
        Command::Overview(args) => overview::run_overview(args),
        Command::Sockets(args) => sockets::run_sockets(args),
        Command::Generate(args) => generate::generate(&args.out_dir).map(|files| {
            for f in files {
                println!("{}", f.display());
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("memtrace: error: {err:#}");
            exit_code_for(&err)
        }
    }
}
