//! A checkpoint written by an older build restores in this one and goes on to the same rows
//! as the uninterrupted engine of this build.
//!
//! `tests/fixtures/checkpoint-format1.bin` is the checkpoint of checkpoint format 1 (every pane
//! in full, settled cases named by their case id), written by the engine of commit `c9cb97c`
//! after the first [`CUT`] records of [`stream`]. To write it again, check out that commit,
//! copy this file into `crates/cxpulse-core/tests/` and run
//! `CXPULSE_WRITE_CHECKPOINT_FIXTURE=1 cargo test -p cxpulse-core --test checkpoint_compat`.
//!
//! The stream spans 10 hours over two partitions with every kind of state a checkpoint holds:
//! open, answered and settled cases, detractors waiting for a follow-up, purchases, late
//! records and redeliveries, more segments than admitted, and panes far behind the
//! correction horizon (which newer builds keep in a compact frozen form).

use cxpulse_core::window::{Tier, WindowSpec};
use cxpulse_core::{
    Amount, Channel, CxEvent, EngineConfig, KpiEngine, KpiRow, Millis, SurveyMetric,
    SurveyResponse, TouchpointEvent, TouchpointKind, DAY_MS, HOUR_MS, MINUTE_MS,
};
use std::collections::BTreeMap;

/// 2024-05-01T00:00:00Z.
const START: Millis = 19_844 * DAY_MS;
/// Records before the checkpoint.
const CUT: usize = 3_000;
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/checkpoint-format1.bin"
);

fn config() -> EngineConfig {
    EngineConfig {
        windows: vec![
            WindowSpec::new("1h", HOUR_MS, Tier::Minute, MINUTE_MS),
            WindowSpec::new("3h", 3 * HOUR_MS, Tier::Hour, 5 * MINUTE_MS),
            WindowSpec::new("2d", 2 * DAY_MS, Tier::Day, 30 * MINUTE_MS),
        ],
        calendar_days: true,
        allowed_lateness_ms: 2 * MINUTE_MS,
        correction_horizon_ms: 30 * MINUTE_MS,
        idle_timeout_ms: i64::MAX / 4,
        max_segments: 3,
        case_ttl_ms: 3 * HOUR_MS,
        response_target_ms: HOUR_MS,
        follow_up_deadline_ms: HOUR_MS,
        ..EngineConfig::default()
    }
}

/// A small deterministic generator (a 64-bit LCG), so that the stream never changes with
/// the project's event generator.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// (partition, record) in arrival order: ~10 h of event time, one record every ~6 s.
fn stream() -> Vec<(i32, CxEvent)> {
    let mut rng = Lcg(20_241_123);
    let segments = ["retail", "smb", "enterprise", "gov", "edu"];
    let channels = [Channel::Web, Channel::Chat, Channel::Phone, Channel::Email];
    let mut out: Vec<(i32, CxEvent)> = Vec::new();
    let mut t = START;
    for i in 0..6_000u64 {
        t += 3_000 + rng.below(6_000) as Millis;
        let partition = (i % 2) as i32;
        let customer = format!("c{}", rng.below(400));
        let segment = segments[rng.below(segments.len() as u64) as usize].to_string();
        let channel = channels[rng.below(channels.len() as u64) as usize];
        // 3 % arrive up to 20 min late (some beyond the watermark, none beyond the horizon).
        let at = if rng.below(100) < 3 {
            t - rng.below(20 * MINUTE_MS as u64) as Millis
        } else {
            t
        };
        let touch = |kind: TouchpointKind, case_id: Option<String>, amount: Option<i64>| {
            CxEvent::Touchpoint(TouchpointEvent {
                event_id: format!("e{i}"),
                occurred_at: at,
                customer_id: customer.clone(),
                segment: segment.clone(),
                channel,
                touchpoint: "journey".to_string(),
                kind,
                case_id,
                amount: amount.map(Amount::from_units),
                currency: amount.map(|_| "EUR".to_string()),
                attributes: Vec::new(),
            })
        };
        let survey = |metric: SurveyMetric, score: i32| {
            CxEvent::Survey(SurveyResponse {
                response_id: format!("r{i}"),
                submitted_at: at,
                customer_id: customer.clone(),
                segment: segment.clone(),
                channel,
                touchpoint: "survey".to_string(),
                metric,
                score,
                comment: Some("خیلی خوب بود — très bien".to_string()),
                language: Some("fa".to_string()),
                case_id: None,
            })
        };
        let kpi_event = |rng: &mut Lcg| match rng.below(14) {
            0..=4 => touch(TouchpointKind::Visit, None, None),
            5..=6 => touch(
                TouchpointKind::Purchase,
                None,
                Some(1 + rng.below(500) as i64),
            ),
            7 => touch(TouchpointKind::OutboundContact, None, None),
            8..=10 => survey(SurveyMetric::Nps, rng.below(11) as i32),
            11..=12 => survey(SurveyMetric::Csat, 1 + rng.below(5) as i32),
            _ => survey(SurveyMetric::Ces, 1 + rng.below(7) as i32),
        };
        // Case k spans records 10k … 10k + 9: opened, then (mostly) answered and resolved.
        // Records 10k + 2 and 10k + 6 may open and answer case k − 100 again (~100 min
        // before, long settled): its tombstone ignores them until the case TTL.
        let case = |k: u64| Some(format!("case-{k}"));
        let event = match i % 10 {
            0 => touch(TouchpointKind::ContactOpened, case(i / 10), None),
            4 if rng.below(5) > 0 => touch(TouchpointKind::AgentReplied, case(i / 10), None),
            8 if rng.below(5) > 0 => touch(TouchpointKind::CaseResolved, case(i / 10), None),
            2 if i >= 1_000 && rng.below(2) == 0 => {
                touch(TouchpointKind::ContactOpened, case(i / 10 - 100), None)
            }
            6 if i >= 1_000 && rng.below(2) == 0 => {
                touch(TouchpointKind::AgentReplied, case(i / 10 - 100), None)
            }
            _ => kpi_event(&mut rng),
        };
        out.push((partition, event.clone()));
        // 1 % are delivered twice.
        if rng.below(100) == 0 {
            out.push((partition, event));
        }
    }
    out
}

/// Feeds `records` (processing time `now` + 1, + 2, …), advancing every 100 records and at
/// the end; returns every emitted row, and the last `now`.
fn feed(
    engine: &mut KpiEngine,
    records: &[(i32, CxEvent)],
    first_now: Millis,
) -> (Vec<KpiRow>, Millis) {
    let mut rows = Vec::new();
    let mut now = first_now;
    for (i, (partition, event)) in records.iter().enumerate() {
        now += 1;
        engine.ingest(*partition, event, now);
        if i % 100 == 99 || i + 1 == records.len() {
            now += 1;
            rows.extend(engine.advance(now));
        }
    }
    (rows, now)
}

/// A window of one group key: (window, start, end, channel, segment).
type WindowKey = (String, Millis, Millis, String, String);

/// The latest row of every window, as a sink that keeps the highest version holds them.
fn latest(rows: Vec<KpiRow>) -> BTreeMap<WindowKey, KpiRow> {
    let mut out: BTreeMap<WindowKey, KpiRow> = BTreeMap::new();
    for row in rows {
        let key = (
            row.window.to_string(),
            row.start,
            row.end,
            row.channel_label().to_string(),
            row.segment_label().to_string(),
        );
        if out.get(&key).is_none_or(|r| r.version <= row.version) {
            out.insert(key, row);
        }
    }
    out
}

fn row_text(row: &KpiRow) -> String {
    serde_json::to_string(row).unwrap_or_else(|e| format!("unserializable row: {e}"))
}

#[test]
fn format_1_checkpoint_restores_and_continues_like_the_uninterrupted_engine() {
    let records = stream();
    assert!(records.len() > CUT);
    let (before, after) = records.split_at(CUT);

    let mut uninterrupted = KpiEngine::new(config()).expect("valid config");
    let (rows_before, now) = feed(&mut uninterrupted, before, 0);
    assert!(!rows_before.is_empty());

    if std::env::var_os("CXPULSE_WRITE_CHECKPOINT_FIXTURE").is_some() {
        let bytes = uninterrupted.checkpoint();
        std::fs::write(FIXTURE, bytes).expect("fixture written");
    }
    let fixture = std::fs::read(FIXTURE).expect("the format-1 fixture is checked in");
    // postcard: the snapshot's first field is its format, a varint.
    assert_eq!(
        fixture.first(),
        Some(&1),
        "the fixture is a format-1 checkpoint"
    );

    let mut restored = KpiEngine::restore(config(), &fixture, now).expect("format 1 restores");
    let (expected, _) = feed(&mut uninterrupted, after, now);
    let (got, _) = feed(&mut restored, after, now);
    assert!(
        expected.len() > 100,
        "{} rows after the cut",
        expected.len()
    );
    // The format-1 build counted a follow-up deadline as due once the touchpoint floor passed
    // it, and a due, closed detractor as one update; this build counts it due at the
    // touchpoint watermark, due and closed as one update each. So the restored engine counts
    // the deadlines between the two as due after the cut, re-emitting the windows that hold
    // them, and its versions of windows holding a closed one counted before the cut are
    // lower, and those re-emitted carry a later watermark. What the windows hold ends the
    // same.
    assert!(
        got.len() >= expected.len(),
        "rows emitted after the restore"
    );
    let emitted_after: Vec<WindowKey> = latest(expected.clone()).into_keys().collect();
    let expected = latest(rows_before.into_iter().chain(expected).collect());
    let got = latest(got);
    let missing = emitted_after
        .iter()
        .filter(|k| !got.contains_key(*k))
        .count();
    assert_eq!(missing, 0, "windows not emitted after the restore");
    for (key, g) in &got {
        let Some(e) = expected.get(key) else {
            panic!("{key:?} emitted after the restore, never by the uninterrupted engine")
        };
        let without_version = |r: &KpiRow| {
            let mut state = (*r.state).clone();
            state.updates = 0;
            (r.kpis.clone(), state)
        };
        assert_eq!(
            without_version(g),
            without_version(e),
            "latest row of {key:?} after the restore:\n{}\n{}",
            row_text(g),
            row_text(e)
        );
        assert!(g.version <= e.version, "{key:?}");
    }
    let s = restored.stats();
    assert!(s.open_cases > 0, "the checkpoint held open cases");
}
