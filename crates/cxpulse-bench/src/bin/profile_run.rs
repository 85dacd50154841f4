//! A fixed workload for instruction-count profiling (`valgrind --tool=callgrind
//! --toggle-collect='*cxpulse_bench::run*'`): immune to machine load.
//!
//! `profile_run [events] [windows] [events_per_second]`
use cxpulse_bench::{encoded_traffic, engine_config, run, Cadence, Profile};

// The allocator of the `cxpulse` binary, so that the figures are the job's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    cxpulse::allocator::configure();
    let mut args = std::env::args().skip(1);
    let mut profile = Profile::large();
    profile.events = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let windows = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    if let Some(r) = args.next().and_then(|a| a.parse().ok()) {
        profile.events_per_second = r;
    }
    let records = encoded_traffic(&profile);
    let (engine, summary) = run(&records, engine_config(windows), Cadence::JOB);
    println!("{summary:?} series={}", engine.stats().series);
}
