//! Prints decode + aggregate throughput for 1, 4 (default) and 8 windows, best of 3 runs.
//!
//! `cargo run --release -p cxpulse-bench --bin throughput [events] [events_per_second]`
//!
//! By default the engine starts empty: the measured stream covers a few minutes of event
//! time, so every window of an hour or more holds the same panes. `HISTORY_DAYS=d` (with
//! `HISTORY_RATE`, events/s, default 2) first feeds `d` days of history, untimed, so that
//! each window holds its own panes (steady state); each run then starts from a copy of
//! that engine. `BACKFILL_DAYS=b` (with `BACKFILL_RATE`, default 20) puts `b` lighter days
//! before that history: `BACKFILL_DAYS=28 HISTORY_DAYS=0.25 HISTORY_RATE=2000` gives every
//! window up to 28 days panes of its own, and the last 6 hours the stream's own rate.
//!
//! Windows are emitted as `cxpulse run` emits them with its default settings
//! ([`Cadence::JOB`]): at each tick, once a second (counted as 1,000,000 records, one second
//! at the target rate), and with a full batch of 50,000 rows for the sink once the watermark
//! is 10 minutes ahead of the last emitted end. `CADENCE=n` emits every `n` records instead
//! (`CADENCE=10000`: every Kafka poll batch, the stress case of the earlier sessions).
use cxpulse_bench::{
    body_bytes_from_env, encoded_traffic, engine_config, run, run_on, with_layered_history,
    Cadence, Profile,
};
use std::time::Instant;

// The allocator of the `cxpulse` binary, so that the figures are the job's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    cxpulse::allocator::configure();
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
    // `BACKFILL_DAYS` (with `BACKFILL_RATE`, default 20 events/s) precede that history: a
    // light layer that gives every long window panes of its own.
    let backfill_days = env_f64("BACKFILL_DAYS").unwrap_or(0.0);
    let backfill_rate = env_f64("BACKFILL_RATE").unwrap_or(20.0);
    let layers: Vec<(f64, f64)> = [(backfill_days, backfill_rate), (history_days, history_rate)]
        .into_iter()
        .filter(|(days, _)| *days > 0.0)
        .collect();
    if backfill_days > 0.0 {
        println!("after {backfill_days} days at {backfill_rate} events/s, then:");
    }
    if history_days > 0.0 {
        println!("after {history_days} days of history at {history_rate} events/s");
    }
    let cadence = match std::env::var("CADENCE") {
        Ok(v) if !v.is_empty() && v != "job" => match v.parse::<usize>() {
            Ok(n) if n > 0 => Cadence::EveryRecords(n),
            _ => {
                eprintln!("CADENCE must be `job` or a positive number of records, not {v:?}");
                std::process::exit(2);
            }
        },
        _ => Cadence::JOB,
    };
    println!("windows emitted: {cadence:?}");
    let mut results = Vec::new();
    for windows in counts {
        let warm = (!layers.is_empty()).then(|| {
            let t = Instant::now();
            let defaults = engine_config(windows);
            let cfg = cxpulse_core::EngineConfig {
                // `BODY_MIB`: memory for cached window bodies (default: the engine's).
                window_body_bytes: body_bytes_from_env(defaults.window_body_bytes),
                ..defaults
            };
            // The history emits only the last end of each window per advance (fast); the
            // timed runs then emit every end, as the job does.
            let history_cfg = cxpulse_core::EngineConfig {
                max_ends_per_advance: Some(1),
                ..cfg
            };
            let mut engine = with_layered_history(&profile, history_cfg, &layers);
            engine.set_max_ends_per_advance(None);
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
                Some(engine) => run_on(engine, &records, cadence),
                None => run(&records, engine_config(windows), cadence),
            };
            best = best.min(t.elapsed().as_secs_f64());
            summary = Some((s, engine.stats(), engine.state_bytes()));
        }
        let rate = records.len() as f64 / best;
        if let Some((s, stats, bytes)) = summary {
            println!(
                "{windows} windows: {rate:>10.0} events/s  ({best:.3} s; accepted {}, dup {}, advances {}, rows {}, panes {}, series {}; largest advance {} rows, {:.0} MiB of states)",
                s.accepted,
                s.duplicates,
                s.advances,
                s.rows,
                s.panes,
                stats.series,
                s.largest_advance_rows,
                s.largest_advance_bytes as f64 / 1048576.0
            );
            let mib = |b: usize| b as f64 / 1048576.0;
            println!(
                "  state after the run: hot panes {:.0} MiB, frozen panes {:.0} MiB, window bodies {:.0} MiB, total {:.0} MiB",
                mib(bytes.hot_panes),
                mib(bytes.frozen_panes),
                mib(bytes.bodies),
                mib(bytes.total())
            );
        }
        results.push((windows, rate));
    }
    let rate_of = |n: usize| results.iter().find(|(w, _)| *w == n).map(|(_, r)| *r);
    if let (Some(one), Some(eight)) = (rate_of(1), rate_of(8)) {
        println!("throughput ratio 1 window / 8 windows: {:.2}x", one / eight);
    }
}
