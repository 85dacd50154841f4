//! Shared fixtures for the cxpulse benchmarks: realistic Avro-encoded traffic, and the
//! decode → validate → aggregate loop exactly as the stream job runs it per poll batch.

use cxpulse_avro::{Decoder, Encoder, RecordKind, SchemaRegistry};
use cxpulse_core::window::{Tier, WindowSpec};
use cxpulse_core::{CxEvent, EngineConfig, IngestOutcome, KpiEngine, Millis, ValidationPolicy};
use cxpulse_core::{DAY_MS, HOUR_MS, MINUTE_MS};
use cxpulse_gen::{Generator, GeneratorConfig};

/// One encoded record as it comes off Kafka.
pub struct EncodedRecord {
    pub kind: RecordKind,
    pub payload: Vec<u8>,
    /// Processing time at which it arrives.
    pub arrival: Millis,
}

/// Traffic shape of a benchmark.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    pub events: usize,
    /// Distinct segments (× 7 channels = series).
    pub segments: usize,
    /// Events per second of event time.
    pub events_per_second: f64,
    pub seed: u64,
    /// Event time of the first event.
    pub start: Millis,
}

impl Profile {
    /// ~1,000 channel × segment series, 2,000 events per second of event time.
    pub fn large() -> Profile {
        Profile {
            events: 300_000,
            segments: 143,
            events_per_second: 2_000.0,
            seed: 7,
            start: GeneratorConfig::default().start,
        }
    }
}

pub fn generator_config(p: &Profile) -> GeneratorConfig {
    GeneratorConfig {
        seed: p.seed,
        start: p.start,
        events_per_second: p.events_per_second,
        customers: 2_000_000,
        segments: (0..p.segments).map(|i| format!("segment-{i:03}")).collect(),
        ..GeneratorConfig::default()
    }
}

/// Generates and encodes (Confluent wire format) a profile's traffic.
pub fn encoded_traffic(p: &Profile) -> Vec<EncodedRecord> {
    let encoder = Encoder::confluent();
    Generator::new(generator_config(p))
        .expect("valid generator config")
        .take(p.events)
        .map(|d| {
            let kind = match d.event {
                CxEvent::Touchpoint(_) => RecordKind::Touchpoint,
                CxEvent::Survey(_) => RecordKind::Survey,
            };
            EncodedRecord {
                kind,
                payload: encoder.to_vec(&d.event).expect("generated events encode"),
                arrival: d.arrival,
            }
        })
        .collect()
}

/// The default windows, or `n` windows (1 ≤ n ≤ 8) from 1 h to 28 d.
pub fn windows(n: usize) -> Vec<WindowSpec> {
    let all = [
        ("1h", HOUR_MS, Tier::Minute),
        ("28d", 28 * DAY_MS, Tier::Day),
        ("24h", DAY_MS, Tier::Hour),
        ("7d", 7 * DAY_MS, Tier::Hour),
        ("4h", 4 * HOUR_MS, Tier::Minute),
        ("12h", 12 * HOUR_MS, Tier::Hour),
        ("3d", 3 * DAY_MS, Tier::Hour),
        ("14d", 14 * DAY_MS, Tier::Day),
    ];
    all.iter()
        .take(n)
        .map(|(name, len, tier)| WindowSpec::new(name, *len, *tier, MINUTE_MS))
        .collect()
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    pub invalid: usize,
    pub rows: usize,
}

/// Decodes, validates and aggregates every record, advancing every `batch` records
/// (a Kafka poll batch).
pub fn run(records: &[EncodedRecord], cfg: EngineConfig, batch: usize) -> (KpiEngine, RunSummary) {
    run_on(
        KpiEngine::new(cfg).expect("valid engine config"),
        records,
        batch,
    )
}

/// An engine that has seen `days` of history before `profile`'s start, at
/// `events_per_second` (same segments, another seed, nothing late or repeated), advanced
/// every 6 h of event time. So every window holds its own panes, as in steady state.
pub fn with_history(
    profile: &Profile,
    cfg: EngineConfig,
    days: f64,
    events_per_second: f64,
) -> KpiEngine {
    let mut engine = KpiEngine::new(cfg).expect("valid engine config");
    let span = (days * DAY_MS as f64) as Millis;
    let history = Profile {
        events_per_second,
        seed: profile.seed ^ 0x5eed,
        start: profile.start - span,
        ..*profile
    };
    let gen_cfg = GeneratorConfig {
        late_share: 0.0,
        duplicate_share: 0.0,
        ..generator_config(&history)
    };
    let mut next_advance = history.start + 6 * HOUR_MS;
    for d in Generator::new(gen_cfg).expect("valid generator config") {
        if d.event.event_time() >= profile.start || d.arrival >= profile.start {
            break;
        }
        engine.ingest(0, &d.event, d.arrival);
        if d.arrival >= next_advance {
            engine.advance(d.arrival);
            next_advance += 6 * HOUR_MS;
        }
    }
    engine.advance(profile.start);
    engine
}

/// [`run`] on an engine that may hold state already.
pub fn run_on(
    mut engine: KpiEngine,
    records: &[EncodedRecord],
    batch: usize,
) -> (KpiEngine, RunSummary) {
    let decoder = Decoder::new(SchemaRegistry::new());
    let policy = ValidationPolicy::default();
    let mut s = RunSummary::default();
    // One reusable event per record kind: decoding allocates nothing once warm.
    let mut touchpoint = CxEvent::Touchpoint(empty_touchpoint());
    let mut survey = CxEvent::Survey(empty_survey());
    for (i, r) in records.iter().enumerate() {
        let scratch = match r.kind {
            RecordKind::Touchpoint => &mut touchpoint,
            RecordKind::Survey => &mut survey,
        };
        match decoder.decode_validated_into(r.kind, &r.payload, r.arrival, &policy, scratch) {
            Ok(()) => match engine.ingest(0, scratch, r.arrival) {
                IngestOutcome::Accepted { .. } => s.accepted += 1,
                IngestOutcome::Duplicate => s.duplicates += 1,
                IngestOutcome::Rejected(_) => s.rejected += 1,
            },
            Err(_) => s.invalid += 1,
        }
        if (i + 1) % batch == 0 {
            s.rows += engine.advance(r.arrival).len();
        }
    }
    if let Some(last) = records.last() {
        s.rows += engine.advance(last.arrival).len();
    }
    (engine, s)
}

fn empty_touchpoint() -> cxpulse_core::TouchpointEvent {
    cxpulse_core::TouchpointEvent {
        event_id: String::new(),
        occurred_at: 0,
        customer_id: String::new(),
        segment: String::new(),
        channel: cxpulse_core::Channel::Unknown,
        touchpoint: String::new(),
        kind: cxpulse_core::TouchpointKind::Other,
        case_id: None,
        amount: None,
        currency: None,
        attributes: Vec::new(),
    }
}

fn empty_survey() -> cxpulse_core::SurveyResponse {
    cxpulse_core::SurveyResponse {
        response_id: String::new(),
        submitted_at: 0,
        customer_id: String::new(),
        segment: String::new(),
        channel: cxpulse_core::Channel::Unknown,
        touchpoint: String::new(),
        metric: cxpulse_core::SurveyMetric::Unknown,
        score: 0,
        comment: None,
        language: None,
        case_id: None,
    }
}

/// Engine configuration with `n` rolling windows (defaults otherwise).
pub fn engine_config(n_windows: usize) -> EngineConfig {
    EngineConfig {
        windows: windows(n_windows),
        max_segments: 1_000,
        ..EngineConfig::default()
    }
}
