//! Shared test helpers: realistic engine output from the deterministic generator.

#![allow(dead_code)]

use cxpulse_core::{EngineConfig, KpiEngine, KpiRow, Millis, ValidationPolicy, MINUTE_MS};
use cxpulse_gen::{Generator, GeneratorConfig};
use cxpulse_metrics::KpiExporter;
use std::collections::BTreeMap;

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

/// The latest end per window kind among `rows`.
pub fn latest_ends(rows: &[KpiRow]) -> BTreeMap<String, Millis> {
    let mut out = BTreeMap::new();
    for r in rows {
        let e = out.entry(r.window.to_string()).or_insert(r.end);
        *e = (*e).max(r.end);
    }
    out
}

/// An exporter fed with `rows` up to the given end per window kind, in emission order.
pub fn exporter_up_to(rows: &[KpiRow], ends: &BTreeMap<String, Millis>) -> KpiExporter {
    let exporter = KpiExporter::default();
    let kept: Vec<KpiRow> = rows
        .iter()
        .filter(|r| ends.get(&*r.window).is_some_and(|e| r.end <= *e))
        .cloned()
        .collect();
    for chunk in kept.chunks(500) {
        exporter.observe(chunk);
    }
    exporter
}

/// Two instances owning partitions {0, 1} and {2, 3} of four, and one instance owning all
/// four, fed the same traffic; their exporters are cut at an end every one has emitted.
pub fn three_exporters(seed: u64, rate: f64, minutes: i64) -> [KpiExporter; 3] {
    let runs = run_engines(
        seed,
        rate,
        minutes,
        4,
        &[vec![0, 1], vec![2, 3], vec![0, 1, 2, 3]],
    );
    assert!(runs.iter().all(|r| !r.rows.is_empty()));
    let mut ends = latest_ends(&runs[2].rows);
    for run in &runs[..2] {
        for (w, e) in latest_ends(&run.rows) {
            let c = ends.entry(w).or_insert(e);
            *c = (*c).min(e);
        }
    }
    assert!(
        ends.contains_key("1h") && ends.contains_key("24h"),
        "{ends:?}"
    );
    [
        exporter_up_to(&runs[0].rows, &ends),
        exporter_up_to(&runs[1].rows, &ends),
        exporter_up_to(&runs[2].rows, &ends),
    ]
}
