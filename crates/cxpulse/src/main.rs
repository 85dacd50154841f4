//! The `cxpulse` command.

use clap::Parser;
use std::process::ExitCode;

// mimalloc instead of glibc's malloc: the engine allocates and frees window states (16 KiB
// registers of long windows) by the thousand per advance, which glibc hands back to the
// kernel and faults in again; see docs/benchmarks.md, "Allocator".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cxpulse::allocator::configure();
    let cli = cxpulse::cli::Cli::parse();
    match cxpulse::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(cxpulse::exit_code(&err))
        }
    }
}
