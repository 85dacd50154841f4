//! Prints decode + aggregate throughput for 1, 4 (default) and 8 windows, best of 3 runs.
//!
//! `cargo run --release -p cxpulse-bench --bin throughput [events] [events_per_second]`
//!
//! By default the engine starts empty: the measured stream covers a few minutes of event
//! time, so every window of an hour or more holds the same panes. `HISTORY_DAYS=d` (with
//! `HISTORY_RATE`, events/s, default 2) first feeds `d` days of history, untimed, so that
//! each window holds its own panes (steady state); each run then starts from a copy of
//! that engine, with one new window end per `advance` at most (`max_ends_per_advance`).
use cxpulse_bench::{encoded_traffic, engine_config, run, run_on, with_history, Profile};
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
    let env_f64 = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok());
    let history_days = env_f64("HISTORY_DAYS").unwrap_or(0.0);
    let history_rate = env_f64("HISTORY_RATE").unwrap_or(2.0);
    if history_days > 0.0 {
        println!("after {history_days} days of history at {history_rate} events/s");
    }
    let mut results = Vec::new();
    for windows in counts {
        let warm = (history_days > 0.0).then(|| {
            let t = Instant::now();
            let defaults = engine_config(windows);
            let cfg = cxpulse_core::EngineConfig {
                max_ends_per_advance: Some(1),
                // `BODY_MIB`: memory for cached window bodies (default: the engine's).
                window_body_bytes: env_f64("BODY_MIB")
                    .map_or(defaults.window_body_bytes, |m| (m * 1048576.0) as usize),
                ..defaults
            };
            let engine = with_history(&profile, cfg, history_days, history_rate);
            eprintln!(
                "history for {windows} windows: {:.0} s",
                t.elapsed().as_secs_f64()
            );
            engine
        });
        let mut best = f64::MAX;
        let mut summary = None;
        for _ in 0..3 {
            let engine = warm.clone();
            let t = Instant::now();
            let (engine, s) = match engine {
                Some(engine) => run_on(engine, &records, 10_000),
                None => run(&records, engine_config(windows), 10_000),
            };
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
