//! State size with ~1,000 channel × segment series after 28+ days of event time.
//!
//! `cargo run --release -p cxpulse-bench --bin state_size [events_per_second] [days] [--generator-only]`
//!
//! Streams generated events straight into the engine (default windows, incl. 28 d, and
//! calendar days), advancing and taking the changed panes every 100,000 events
//! (`ADVANCE_EVERY` overrides; the stream job does so once a second, see
//! `cxpulse_bench::Cadence::JOB`), and prints the engine's pane counts, the
//! approximate bytes held in panes, the heap the engine holds (live allocations counted by
//! this binary's allocator, after the generator is dropped) and the process's resident
//! memory (VmRSS/VmHWM, which include the generator's pending follow-up events).
use cxpulse_bench::{body_bytes_from_env, engine_config, generator_config, Profile};
use cxpulse_core::window::Tier;
use cxpulse_core::{IngestOutcome, KpiEngine, DAY_MS};
use cxpulse_gen::Generator;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The highest `LIVE` seen.
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

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
    // `--generator-only`: the same stream without an engine (what the generator itself holds).
    let generator_only = args.next().as_deref() == Some("--generator-only");
    // Records between two `advance` calls (the stream job advances once a second).
    let advance_every: u64 = std::env::var("ADVANCE_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
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
    // `BODY_MIB`: memory for cached window bodies (default: the engine's).
    let cfg = cxpulse_core::EngineConfig {
        window_body_bytes: body_bytes_from_env(cfg.window_body_bytes),
        ..cfg
    };
    let mut engine = KpiEngine::new(cfg).expect("valid config");
    let rss_before = status_kib("VmRSS:").unwrap_or(0);
    let heap_before = LIVE.load(Ordering::Relaxed);
    let t = Instant::now();
    let (mut n, mut accepted, mut rows, mut panes_taken) = (0u64, 0u64, 0u64, 0u64);
    let mut generator = Generator::new(gen_cfg).expect("valid generator config");
    for d in generator.by_ref() {
        if d.arrival > start + days * DAY_MS {
            break;
        }
        n += 1;
        if generator_only {
            if n % 5_000_000 == 0 {
                eprintln!(
                    "{n} events, day {:.1}, heap {:.0} MiB",
                    (d.arrival - start) as f64 / DAY_MS as f64,
                    mib(LIVE.load(Ordering::Relaxed))
                );
            }
            continue;
        }
        if let IngestOutcome::Accepted { .. } = engine.ingest(0, &d.event, d.arrival) {
            accepted += 1;
        }
        if n % advance_every == 0 {
            let out = engine.advance(d.arrival);
            rows += out.len() as u64;
            // As the job hands them to its sink.
            panes_taken += engine.take_changed_panes(0).len() as u64;
        }
        if n % 1_000_000 == 0 {
            eprintln!(
                "{n} events, day {:.1}, heap {:.0} MiB (peak {:.0} MiB), rss {} MiB",
                (d.arrival - start) as f64 / DAY_MS as f64,
                mib(LIVE.load(Ordering::Relaxed)),
                mib(PEAK.load(Ordering::Relaxed)),
                status_kib("VmRSS:").unwrap_or(0) / 1024
            );
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let heap_with_generator = LIVE.load(Ordering::Relaxed);
    drop(generator);
    let heap_engine = LIVE.load(Ordering::Relaxed).saturating_sub(heap_before);
    let s = engine.stats();
    let pane_bytes = engine.pane_bytes();
    println!("{rate} events/s of event time for {days} days: {n} events ({accepted} accepted) in {elapsed:.0} s, {rows} rows, {panes_taken} pane updates for the sink");
    println!(
        "series {} | panes: minute {}, hour {}, day {} ({} frozen) | open cases {} | follow-up customers {} | remembered ids {}",
        s.series,
        s.minute_panes,
        s.hour_panes,
        s.day_panes,
        Tier::ALL
            .into_iter()
            .map(|t| engine.frozen_pane_count(t))
            .sum::<usize>(),
        s.open_cases,
        s.follow_up_customers,
        s.dedup_ids
    );
    println!("approx. bytes in panes: {:.1} MiB", mib(pane_bytes));
    let b = engine.state_bytes();
    println!(
        "approx. state by part: hot panes {:.1} MiB, frozen panes {:.1} MiB, window bodies {:.1} MiB, ids {:.1} MiB, cases {:.1} MiB, follow-ups {:.1} MiB (total {:.1} MiB)",
        mib(b.hot_panes),
        mib(b.frozen_panes),
        mib(b.bodies),
        mib(b.ids),
        mib(b.cases),
        mib(b.follow_ups),
        mib(b.total())
    );
    println!(
        "engine heap (live allocations, generator dropped): {:.1} MiB (with the generator: {:.1} MiB; peak of the run {:.1} MiB)",
        mib(heap_engine),
        mib(heap_with_generator.saturating_sub(heap_before)),
        mib(PEAK.load(Ordering::Relaxed))
    );
    println!(
        "process RSS: {} MiB (before: {} MiB), peak {} MiB",
        status_kib("VmRSS:").unwrap_or(0) / 1024,
        rss_before / 1024,
        status_kib("VmHWM:").unwrap_or(0) / 1024
    );
}
