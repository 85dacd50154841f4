//! Prints decode + aggregate throughput for 1, 4 (default) and 8 windows, best of 3 runs.
//!
//! `cargo run --release -p cxpulse-bench --bin throughput [events] [events_per_second]`
use cxpulse_bench::{encoded_traffic, engine_config, run, Profile};
use std::time::Instant;

// The allocator of the `cxpulse` binary, so that the figures are the job's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut profile = Profile::large();
    let mut args = std::env::args().skip(1);
    if let Some(n) = args.next().and_then(|a| a.parse().ok()) {
        profile.events = n;
    }
    if let Some(r) = args.next().and_then(|a| a.parse().ok()) {
        profile.events_per_second = r;
    }
    let records = encoded_traffic(&profile);
    println!(
        "{} records, {} segments x 7 channels, {} events/s of event time",
        records.len(),
        profile.segments,
        profile.events_per_second
    );
    // `WINDOWS=1,8` measures only those window counts (e.g. under a profiler).
    let counts: Vec<usize> = std::env::var("WINDOWS")
        .ok()
        .map(|v| v.split(',').filter_map(|w| w.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 4, 8]);
    let mut results = Vec::new();
    for windows in counts {
        let mut best = f64::MAX;
        let mut summary = None;
        for _ in 0..3 {
            let t = Instant::now();
            let (engine, s) = run(&records, engine_config(windows), 10_000);
            best = best.min(t.elapsed().as_secs_f64());
            summary = Some((s, engine.stats()));
        }
        let rate = records.len() as f64 / best;
        if let Some((s, stats)) = summary {
            println!(
                "{windows} windows: {rate:>10.0} events/s  ({best:.3} s; accepted {}, dup {}, rows {}, series {})",
                s.accepted, s.duplicates, s.rows, stats.series
            );
        }
        results.push((windows, rate));
    }
    let rate_of = |n: usize| results.iter().find(|(w, _)| *w == n).map(|(_, r)| *r);
    if let (Some(one), Some(eight)) = (rate_of(1), rate_of(8)) {
        println!("throughput ratio 1 window / 8 windows: {:.2}x", one / eight);
    }
}
