//! Shared test helpers: realistic engine output from the deterministic generator.

#![allow(dead_code)]

use cxpulse_core::{EngineConfig, KpiEngine, KpiRow, Millis, ValidationPolicy, MINUTE_MS};
use cxpulse_gen::{Generator, GeneratorConfig};

/// FNV-1a: a stable customer → partition routing for tests.
pub fn partition_of(customer: &str, partitions: u32) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in customer.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(partitions)) as i32
}

/// Output of one engine run.
pub struct Run {
    pub rows: Vec<KpiRow>,
    pub last_now: Millis,
}

/// Feeds `minutes` of generated traffic (`rate` events/s) into one engine per entry of
/// `owned` (the partitions each engine owns, out of `partitions`), advancing every 30 s of
/// processing time and once more at the end with every partition idle.
pub fn run_engines(
    seed: u64,
    rate: f64,
    minutes: i64,
    partitions: u32,
    owned: &[Vec<i32>],
) -> Vec<Run> {
    let cfg = GeneratorConfig {
        seed,
        events_per_second: rate,
        ..GeneratorConfig::default()
    };
    let start = cfg.start;
    let end = start + minutes * MINUTE_MS;
    let mut engines: Vec<KpiEngine> = owned
        .iter()
        .map(|_| KpiEngine::new(EngineConfig::default()).unwrap())
        .collect();
    let mut runs: Vec<Run> = owned
        .iter()
        .map(|_| Run {
            rows: Vec::new(),
            last_now: start,
        })
        .collect();
    let policy = ValidationPolicy::default();
    let mut next_advance = start + 30_000;
    for d in Generator::new(cfg).unwrap() {
        if d.arrival > end {
            break;
        }
        let now = d.arrival;
        if now >= next_advance {
            for (e, r) in engines.iter_mut().zip(runs.iter_mut()) {
                r.rows.extend(e.advance(now));
            }
            next_advance += 30_000;
        }
        d.event.validate(now, &policy).unwrap();
        let p = partition_of(d.event.customer_id(), partitions);
        for (i, e) in engines.iter_mut().enumerate() {
            if owned[i].contains(&p) {
                e.ingest(p, &d.event, now);
                runs[i].last_now = now;
            }
        }
    }
    let final_now = end + 10 * MINUTE_MS;
    for (e, r) in engines.iter_mut().zip(runs.iter_mut()) {
        r.rows.extend(e.advance(final_now));
        r.last_now = final_now;
    }
    runs
}
