//! Which window bodies the engine caches: a window whose rows are a shorter window's (its
//! extra span holds no contribution, as in a young job) reads no head, so it keeps no body.

mod common;

use common::{visit, START};
use cxpulse_core::window::{Tier, WindowSpec};
use cxpulse_core::{EngineConfig, KpiEngine, Millis, DAY_MS, HOUR_MS, MINUTE_MS};

/// The bytes of bodies cached after `hours` of one visit a minute, advancing every 10
/// minutes, with `windows` (hour tails, sliding by the minute).
fn body_bytes(windows: &[Millis], hours: i64) -> usize {
    let cfg = EngineConfig {
        windows: windows
            .iter()
            .map(|&len| WindowSpec::new(&format!("{}h", len / HOUR_MS), len, Tier::Hour, MINUTE_MS))
            .collect(),
        ..EngineConfig::default()
    };
    let mut engine = KpiEngine::new(cfg).expect("valid windows");
    let mut rows = 0;
    for m in 0..hours * 60 {
        let at = START + m * MINUTE_MS;
        engine.ingest(0, &visit(m as u32, at, m as u32 % 500), at);
        if m % 10 == 9 {
            rows += engine.advance(at).len();
        }
    }
    assert!(rows > 0, "windows were emitted");
    engine.state_bytes().bodies
}

#[test]
fn a_window_taking_a_shorter_windows_rows_keeps_no_body() {
    // Five hours of data: a 6-hour window reads hour panes (and caches a body over them);
    // a 2-day window holds the same panes, so its rows are the 6-hour window's.
    let six_hours = body_bytes(&[6 * HOUR_MS], 5);
    assert!(six_hours > 0, "the 6-hour window caches bodies");
    assert_eq!(body_bytes(&[6 * HOUR_MS, 2 * DAY_MS], 5), six_hours);
    // Once the 2-day window holds panes the 6-hour one does not, it reads (and caches) its
    // own.
    assert!(body_bytes(&[6 * HOUR_MS, 2 * DAY_MS], 9) > body_bytes(&[6 * HOUR_MS], 9));
}
