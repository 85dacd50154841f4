//! `KpiEngine::unemitted_span`: how far an advance would move the emitted frontier (the job
//! advances on a full batch between ticks only when it is large).

use cxpulse_core::{
    Channel, CxEvent, EngineConfig, KpiEngine, Millis, TouchpointEvent, TouchpointKind, DAY_MS,
    MINUTE_MS,
};

/// 2024-05-01T00:00:00Z.
const START: Millis = 19_844 * DAY_MS;

fn visit(id: u32, at: Millis) -> CxEvent {
    CxEvent::Touchpoint(TouchpointEvent {
        event_id: format!("e{id}"),
        occurred_at: at,
        customer_id: format!("c{id}"),
        segment: "smb".to_string(),
        channel: Channel::Web,
        touchpoint: "home".to_string(),
        kind: TouchpointKind::Visit,
        case_id: None,
        amount: None,
        currency: None,
        attributes: Vec::new(),
    })
}

#[test]
fn unemitted_span_is_the_watermark_ahead_of_the_last_emitted_end() {
    let cfg = EngineConfig::default();
    let lateness = cfg.allowed_lateness_ms;
    let mut engine = KpiEngine::new(cfg).expect("default config is valid");
    let now = START + DAY_MS;
    // No data, no watermark: nothing to emit.
    assert_eq!(engine.unemitted_span(now), 0);
    engine.ingest(0, &visit(1, START + 30 * MINUTE_MS), now);
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
    engine.ingest(0, &visit(2, START + 55 * MINUTE_MS), now);
    assert_eq!(engine.unemitted_span(now), 25 * MINUTE_MS);
    engine.advance(now);
    assert_eq!(engine.unemitted_span(now), 0);
}
