//! `KpiEngine::unemitted_span`: how far an advance would move the emitted frontier (the job
//! advances on a full batch between ticks only when it is large).

mod common;

use common::{visit, START};
use cxpulse_core::{EngineConfig, KpiEngine, Millis, DAY_MS, MINUTE_MS};

#[test]
fn unemitted_span_is_the_watermark_ahead_of_the_last_emitted_end() {
    let cfg = EngineConfig::default();
    let lateness = cfg.allowed_lateness_ms;
    let mut engine = KpiEngine::new(cfg).expect("default config is valid");
    let now = START + DAY_MS;
    // No data, no watermark: nothing to emit.
    assert_eq!(engine.unemitted_span(now), 0);
    engine.ingest(0, &visit(1, START + 30 * MINUTE_MS, 1), now);
    // Data but nothing emitted yet.
    assert_eq!(engine.unemitted_span(now), Millis::MAX);
    engine.advance(now);
    let frontier = engine.frontier().expect("advanced");
    assert_eq!(frontier, START + 28 * MINUTE_MS);
    assert_eq!(
        engine.unemitted_span(now),
        START + 30 * MINUTE_MS - lateness - frontier
    );
    // 25 minutes of event time later, before the next advance.
    engine.ingest(0, &visit(2, START + 55 * MINUTE_MS, 2), now);
    assert_eq!(engine.unemitted_span(now), 25 * MINUTE_MS);
    engine.advance(now);
    assert_eq!(engine.unemitted_span(now), 0);
}
