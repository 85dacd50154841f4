//! Shared fixtures for the cxpulse benchmarks: realistic Avro-encoded traffic, and the
//! decode → validate → aggregate loop as the stream job runs it (emitting windows and taking
//! the changed panes at each flush).

use cxpulse::commands::run::BATCH_ADVANCE_SPAN_MS;
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
    /// Window rows emitted.
    pub rows: usize,
    /// Changed panes taken for the sink.
    pub panes: usize,
    /// Times the windows were emitted (`advance`).
    pub advances: usize,
    /// Rows of the largest advance, and the bytes their states hold (`KpiState::approx_bytes`,
    /// a state shared by several rows counted once): what a sink holds at once.
    pub largest_advance_rows: usize,
    pub largest_advance_bytes: usize,
}

/// When the loop emits windows (`KpiEngine::advance`) and takes the changed panes for the
/// sink, as `cxpulse run` does at each flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cadence {
    /// As `cxpulse run` with its defaults advances: at each tick (`clickhouse.batch_interval`,
    /// 1 s), counted as `records_per_tick` records (the records of one second at the rate
    /// measured), and when `batch_rows` rows wait for the sink (`clickhouse.batch_rows`:
    /// survey responses and dead letters) while the watermark is
    /// [`cxpulse::commands::run::BATCH_ADVANCE_SPAN_MS`] or more ahead of the last emitted
    /// end (otherwise such a batch is only written, which costs the engine nothing). The
    /// records are a backlog, all in Kafka when the run starts (catching up after an
    /// outage): processing time starts at the last arrival and runs one second per
    /// `records_per_tick` records.
    Job {
        batch_rows: usize,
        records_per_tick: usize,
    },
    /// Every `n` records (one Kafka poll batch): far more often than the job, a stress case.
    /// Processing time is each record's arrival (traffic processed as it comes).
    EveryRecords(usize),
}

impl Cadence {
    /// The job's defaults, with one tick per 1,000,000 records (1 s at the target rate).
    pub const JOB: Cadence = Cadence::Job {
        batch_rows: 50_000,
        records_per_tick: 1_000_000,
    };
}

/// Decodes, validates and aggregates every record, emitting windows at `cadence`.
pub fn run(
    records: &[EncodedRecord],
    cfg: EngineConfig,
    cadence: Cadence,
) -> (KpiEngine, RunSummary) {
    run_on(
        KpiEngine::new(cfg).expect("valid engine config"),
        records,
        cadence,
    )
}

/// How often [`with_history`] advances. The job advances every second; the history emits
/// only the last end of each window, and every ten minutes keeps its build short while
/// each advance still freezes and forgets what lies behind it. (Panes written since the
/// last advance stay hot, flagged for the sink: rarer advances would leave hours of
/// freezing to the measured run.)
pub const HISTORY_ADVANCE_MS: Millis = 10 * MINUTE_MS;

/// How often [`with_layered_history`] advances in the layers before the last one.
pub const BACKFILL_ADVANCE_MS: Millis = 6 * HOUR_MS;

/// An engine that has seen `days` of history before `profile`'s start, at
/// `events_per_second` (same segments, another seed, nothing late or repeated), advanced
/// every [`HISTORY_ADVANCE_MS`] of event time, its changed panes taken after each advance
/// as the job's sink takes them. So every window holds its own panes, and the panes and the
/// cases, follow-ups and bodies behind the frontier are frozen, expired and dropped as in
/// steady state (not left for the measured run to do).
pub fn with_history(
    profile: &Profile,
    cfg: EngineConfig,
    days: f64,
    events_per_second: f64,
) -> KpiEngine {
    with_layered_history(profile, cfg, &[(days, events_per_second)])
}

/// [`with_history`] in layers `(days, events/s)`, oldest first, ending at `profile`'s
/// start: e.g. four weeks at a light rate, then a day at the stream's own rate, so that
/// every window up to 28 days holds panes of its own (a longer window is then not the
/// copy of a shorter one's row) without building four weeks at the full rate. Layers
/// before the last advance every [`BACKFILL_ADVANCE_MS`] (each advance evaluates every
/// window of every series once: every ten minutes over four weeks with eight windows
/// took longer than an hour); the last one every [`HISTORY_ADVANCE_MS`].
pub fn with_layered_history(
    profile: &Profile,
    cfg: EngineConfig,
    layers: &[(f64, f64)],
) -> KpiEngine {
    let mut engine = KpiEngine::new(cfg).expect("valid engine config");
    let spans: Vec<Millis> = layers
        .iter()
        .map(|(days, _)| (days * DAY_MS as f64) as Millis)
        .collect();
    let mut start = profile.start - spans.iter().sum::<Millis>();
    let mut next_advance = start + HISTORY_ADVANCE_MS;
    for (i, (&(_, events_per_second), span)) in layers.iter().zip(&spans).enumerate() {
        let end = start + span;
        let every = if i + 1 == layers.len() {
            HISTORY_ADVANCE_MS
        } else {
            BACKFILL_ADVANCE_MS
        };
        let layer = Profile {
            events_per_second,
            seed: profile.seed ^ 0x5eed ^ ((i as u64) << 32),
            start,
            ..*profile
        };
        let gen_cfg = GeneratorConfig {
            late_share: 0.0,
            duplicate_share: 0.0,
            ..generator_config(&layer)
        };
        for d in Generator::new(gen_cfg).expect("valid generator config") {
            if d.event.event_time() >= end || d.arrival >= end {
                break;
            }
            engine.ingest(0, &d.event, d.arrival);
            if d.arrival >= next_advance {
                engine.advance(d.arrival);
                engine.take_changed_panes(0);
                next_advance = d.arrival + every;
            }
        }
        start = end;
    }
    engine.advance(profile.start);
    engine.take_changed_panes(0);
    engine
}

/// [`run`] on an engine that may hold state already.
pub fn run_on(
    mut engine: KpiEngine,
    records: &[EncodedRecord],
    cadence: Cadence,
) -> (KpiEngine, RunSummary) {
    let decoder = Decoder::new(SchemaRegistry::new());
    let policy = ValidationPolicy::default();
    let mut s = RunSummary::default();
    // One reusable event per record kind: decoding allocates nothing once warm.
    let mut touchpoint = CxEvent::Touchpoint(empty_touchpoint());
    let mut survey = CxEvent::Survey(empty_survey());
    // Rows waiting for the sink and records since the last advance.
    let (mut pending, mut since) = (0usize, 0usize);
    // Processing time when the `i`-th record (arriving at `arrival`) is read.
    let backlog_from = records.last().map_or(0, |r| r.arrival);
    let clock = |i: usize, arrival: Millis| match cadence {
        Cadence::Job {
            records_per_tick, ..
        } => backlog_from + (i as u64 * 1000 / records_per_tick.max(1) as u64) as Millis,
        Cadence::EveryRecords(_) => arrival,
    };
    let flush = |engine: &mut KpiEngine, s: &mut RunSummary, now: Millis| {
        let rows = engine.advance(now);
        if rows.len() > s.largest_advance_rows {
            s.largest_advance_rows = rows.len();
            let mut seen = std::collections::HashSet::new();
            s.largest_advance_bytes = rows
                .iter()
                .filter(|r| seen.insert(std::sync::Arc::as_ptr(&r.state)))
                .map(|r| r.state.approx_bytes())
                .sum();
        }
        s.rows += rows.len();
        s.panes += engine.take_changed_panes(0).len();
        s.advances += 1;
    };
    for (i, r) in records.iter().enumerate() {
        let now = clock(i, r.arrival);
        let scratch = match r.kind {
            RecordKind::Touchpoint => &mut touchpoint,
            RecordKind::Survey => &mut survey,
        };
        match decoder.decode_validated_into(r.kind, &r.payload, now, &policy, scratch) {
            Ok(()) => match engine.ingest(0, scratch, now) {
                IngestOutcome::Accepted { .. } => {
                    s.accepted += 1;
                    pending += usize::from(r.kind == RecordKind::Survey);
                }
                IngestOutcome::Duplicate => s.duplicates += 1,
                IngestOutcome::Rejected(_) => {
                    s.rejected += 1;
                    pending += 1;
                }
            },
            Err(_) => {
                s.invalid += 1;
                pending += 1;
            }
        }
        since += 1;
        let due = match cadence {
            Cadence::Job {
                batch_rows,
                records_per_tick,
            } => {
                // A full batch is written (nothing for the engine to do) and advances the
                // windows only when they are far behind the watermark.
                let batch = pending >= batch_rows;
                if batch {
                    pending = 0;
                }
                since >= records_per_tick
                    || (batch && engine.unemitted_span(now) >= BATCH_ADVANCE_SPAN_MS)
            }
            Cadence::EveryRecords(n) => since >= n,
        };
        if due {
            flush(&mut engine, &mut s, now);
            (pending, since) = (0, 0);
        }
    }
    flush(&mut engine, &mut s, clock(records.len(), backlog_from));
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

/// The memory for cached window bodies that the benches' `BODY_MIB` variable sets (MiB),
/// else `default`.
pub fn body_bytes_from_env(default: usize) -> usize {
    std::env::var("BODY_MIB")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(default, |mib| (mib * 1048576.0) as usize)
}

/// Engine configuration with `n` rolling windows (defaults otherwise), keeping the changed
/// panes for the sink as `cxpulse run` does.
pub fn engine_config(n_windows: usize) -> EngineConfig {
    EngineConfig {
        windows: windows(n_windows),
        max_segments: 1_000,
        persist_panes: true,
        ..EngineConfig::default()
    }
}
