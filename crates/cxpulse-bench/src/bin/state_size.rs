//! State size with ~1,000 channel × segment series after 28+ days of event time.
//!
//! `cargo run --release -p cxpulse-bench --bin state_size [events_per_second] [days]`
//!
//! Streams generated events straight into the engine (default windows, incl. 28 d, and
//! calendar days), advancing every 100,000 events, and prints the engine's pane counts, the
//! approximate bytes held in panes, and the process's resident memory (VmRSS/VmHWM).
use cxpulse_bench::{engine_config, generator_config, Profile};
use cxpulse_core::{IngestOutcome, KpiEngine, DAY_MS};
use cxpulse_gen::Generator;
use std::time::Instant;

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rate: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20.0);
    let days: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(29);
    let profile = Profile {
        events: usize::MAX,
        events_per_second: rate,
        ..Profile::large()
    };
    let gen_cfg = generator_config(&profile);
    let start = gen_cfg.start;
    // Replaying 28 days: emit only the latest window end per advance (state is unaffected).
    let cfg = cxpulse_core::EngineConfig {
        max_ends_per_advance: Some(1),
        ..engine_config(4)
    };
    let mut engine = KpiEngine::new(cfg).expect("valid config");
    let rss_before = status_kib("VmRSS:").unwrap_or(0);
    let t = Instant::now();
    let (mut n, mut accepted, mut rows) = (0u64, 0u64, 0u64);
    for d in Generator::new(gen_cfg).expect("valid generator config") {
        if d.arrival > start + days * DAY_MS {
            break;
        }
        if let IngestOutcome::Accepted { .. } = engine.ingest(0, &d.event, d.arrival) {
            accepted += 1;
        }
        n += 1;
        if n % 100_000 == 0 {
            rows += engine.advance(d.arrival).len() as u64;
        }
        if n % 5_000_000 == 0 {
            eprintln!(
                "{n} events, day {:.1}, rss {} MiB",
                (d.arrival - start) as f64 / DAY_MS as f64,
                status_kib("VmRSS:").unwrap_or(0) / 1024
            );
        }
    }
    let s = engine.stats();
    let pane_bytes = engine.pane_bytes();
    println!("{rate} events/s of event time for {days} days: {n} events ({accepted} accepted) in {:.0} s, {rows} rows", t.elapsed().as_secs_f64());
    println!(
        "series {} | panes: minute {}, hour {}, day {} | open cases {} | follow-up customers {} | remembered ids {}",
        s.series, s.minute_panes, s.hour_panes, s.day_panes, s.open_cases, s.follow_up_customers, s.dedup_ids
    );
    println!(
        "approx. bytes in panes: {:.1} MiB",
        pane_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "process RSS: {} MiB (before: {} MiB), peak {} MiB",
        status_kib("VmRSS:").unwrap_or(0) / 1024,
        rss_before / 1024,
        status_kib("VmHWM:").unwrap_or(0) / 1024
    );
}
