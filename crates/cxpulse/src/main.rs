//! The `cxpulse` command.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cxpulse::cli::Cli::parse();
    match cxpulse::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(cxpulse::exit_code(&err))
        }
    }
}
