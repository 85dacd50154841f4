//! The KPI window engine against the naive oracle of `docs/windows.md` (`cxpulse-oracle`).
//!
//! The oracle (crate `cxpulse-oracle`, written from the doc alone) never looks at panes, tiers
//! or incremental state: it classifies each record by its own source's floor (rejected /
//! duplicate / accepted, late), derives every contribution `(x, series, what)` from the final
//! set of accepted events (cases, closed-loop dues behind the partition's touchpoint floor),
//! counts the pane updates of every window (the row version), and recomputes every window up
//! to the last frontier with plain loops. The engine's latest row per (window, end, channel,
//! segment) must equal that recomputation, KPI values and mergeable parts alike, and every
//! non-empty window up to the frontier must have been emitted.
//!
//! Parts:
//! * property tests over random 1–3-partition streams spread over 1–3 days (both sources per
//!   partition, survey sources lagging their touchpoints by up to 4 h, late events, events
//!   beyond their source's floor, exact duplicates and same-id redeliveries, case joins with
//!   replies before the open and several opens per case, folded segments, closed-loop
//!   follow-ups), in UTC and with a non-zero local offset (+3:30 / −5:30); every advance is
//!   checked as it happens (watermark, frontier, grid, versions never decreasing);
//! * `checkpoint_restore_is_invisible`: checkpoint + restore at random points (and other
//!   advance points) changes nothing;
//! * `replay_interleaving_is_invisible`: another interleaving of a partition's two sources
//!   changes nothing;
//! * hand-computed known-answer scenarios (`kat_*`).
//!
//! A failing property prints the differing rows and fields and, for a small input, the full
//! list of calls; the oracle properties also delta-debug the first failing input (≤ 1 min)
//! into a short list of calls. `PROPTEST_CASES`, `PROPTEST_MAX_SHRINK_TIME` (ms) and
//! `PROPTEST_MAX_SHRINK_ITERS` override the defaults (64 cases for the oracle properties, 32
//! for the checkpoint and interleaving ones, 1 min of shrinking).

use cxpulse_core::kpi::KpiSnapshot;
use cxpulse_core::window::{Tier, WindowSpec};
use cxpulse_core::{
    Amount, Channel, CxEvent, EngineConfig, EngineStats, IngestOutcome, KpiEngine, KpiRow, Millis,
    SurveyMetric, SurveyResponse, TooLate, TouchpointEvent, TouchpointKind, DAY_MS, HOUR_MS,
    MINUTE_MS,
};
use cxpulse_oracle::{
    diff_row, diff_states, floor_local, fmt_time as fmt_t, Counts, Input, Oracle,
};
use proptest::prelude::*;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Event builders and configuration
// ---------------------------------------------------------------------------------------------

/// 2024-03-30T00:00:00Z (19 812 days after the epoch).
const EPOCH_2024_03_30: Millis = 19_812 * DAY_MS;
const QUARTER_MS: Millis = 15_000;

#[allow(clippy::too_many_arguments)]
fn touch(
    id: &str,
    t: Millis,
    customer: &str,
    segment: &str,
    channel: Channel,
    kind: TouchpointKind,
    case_id: Option<&str>,
    amount: Option<(i64, &str)>,
) -> CxEvent {
    CxEvent::Touchpoint(TouchpointEvent {
        event_id: id.to_string(),
        occurred_at: t,
        customer_id: customer.to_string(),
        segment: segment.to_string(),
        channel,
        touchpoint: "journey".to_string(),
        kind,
        case_id: case_id.map(str::to_string),
        amount: amount.map(|(units, _)| Amount::from_units(units)),
        currency: amount.map(|(_, c)| c.to_string()),
        attributes: Vec::new(),
    })
}

fn survey(
    id: &str,
    t: Millis,
    customer: &str,
    segment: &str,
    channel: Channel,
    metric: SurveyMetric,
    score: i32,
) -> CxEvent {
    CxEvent::Survey(SurveyResponse {
        response_id: id.to_string(),
        submitted_at: t,
        customer_id: customer.to_string(),
        segment: segment.to_string(),
        channel,
        touchpoint: "survey".to_string(),
        metric,
        score,
        comment: None,
        language: None,
        case_id: None,
    })
}

#[derive(Clone, Debug)]
struct Knobs {
    horizon_min: i64,
    ttl_min: i64,
    follow_min: i64,
    max_segments: usize,
    preset: bool,
    offset_min: i32,
}

/// Small windows and horizons so that they matter at the scale of the generated streams. The
/// 2-day window slides every 30 min (not every minute) to keep the debug-mode run time down.
/// The 150-minute window reads minutes older than the horizon (frozen) before its first
/// full hour, through blocks, and one or two hours through a body.
fn config(k: &Knobs) -> EngineConfig {
    EngineConfig {
        windows: vec![
            WindowSpec::new("1h", HOUR_MS, Tier::Minute, MINUTE_MS),
            WindowSpec::new("150m", 150 * MINUTE_MS, Tier::Minute, 5 * MINUTE_MS),
            WindowSpec::new("3h", 3 * HOUR_MS, Tier::Hour, 5 * MINUTE_MS),
            WindowSpec::new("2d", 2 * DAY_MS, Tier::Day, 30 * MINUTE_MS),
        ],
        calendar_days: true,
        utc_offset_minutes: k.offset_min,
        allowed_lateness_ms: 2 * MINUTE_MS,
        correction_horizon_ms: k.horizon_min * MINUTE_MS,
        // No idleness in these tests: `now` grows by 1 per call.
        idle_timeout_ms: i64::MAX / 4,
        max_segments: k.max_segments,
        preset_segments: if k.preset {
            vec!["gov".to_string()]
        } else {
            Vec::new()
        },
        case_ttl_ms: k.ttl_min * MINUTE_MS,
        response_target_ms: HOUR_MS,
        follow_up_deadline_ms: k.follow_min * MINUTE_MS,
        // Everything else (e.g. `max_ends_per_advance: None`, every end is emitted) as default.
        ..EngineConfig::default()
    }
}

fn describe(ev: &CxEvent) -> String {
    match ev {
        CxEvent::Touchpoint(e) => format!(
            "{} t={} cust={} seg={} ch={} {}{}{}",
            e.event_id,
            fmt_t(e.occurred_at),
            e.customer_id,
            e.segment,
            e.channel,
            e.kind,
            e.case_id
                .as_deref()
                .map(|c| format!(" case={c}"))
                .unwrap_or_default(),
            match (&e.amount, &e.currency) {
                (Some(a), Some(c)) => format!(" {a} {c}"),
                _ => String::new(),
            }
        ),
        CxEvent::Survey(r) => format!(
            "{} t={} cust={} seg={} ch={} {}={}",
            r.response_id,
            fmt_t(r.submitted_at),
            r.customer_id,
            r.segment,
            r.channel,
            r.metric,
            r.score
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The schedule of calls
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// `ingest` of stream[i]; ingests come in stream order.
    Ingest(usize),
    Advance,
    /// `checkpoint()`, then go on with `KpiEngine::restore` of those bytes at a fresh `now`.
    Restore,
}

/// A stream in arrival order: (partition, event).
type Stream = Vec<(i32, CxEvent)>;

/// One ingest per stream index, in order, with an advance after every `gaps[k]` ingests
/// (cycling) and at the end.
fn schedule_for(len: usize, gaps: &[u8]) -> Vec<Step> {
    let mut schedule = Vec::with_capacity(len + len / 4 + 1);
    let mut gaps = gaps.iter().cycle();
    let mut left = *gaps.next().expect("at least one gap");
    for i in 0..len {
        schedule.push(Step::Ingest(i));
        left -= 1;
        if left == 0 {
            schedule.push(Step::Advance);
            left = *gaps.next().expect("cycle");
        }
    }
    schedule.push(Step::Advance);
    schedule
}

// ---------------------------------------------------------------------------------------------
// Driving the engine
// ---------------------------------------------------------------------------------------------

/// Interned (window, end, channel, segment): no allocation per emitted row.
type RowKey = (u8, Millis, Option<Channel>, Option<u16>);

struct Names {
    windows: Vec<String>,
    segments: Vec<Arc<str>>,
}

impl Names {
    fn new(cfg: &EngineConfig) -> Names {
        let mut windows: Vec<String> = cfg.windows.iter().map(|w| w.name.clone()).collect();
        windows.push("day".to_string());
        Names {
            windows,
            segments: Vec::new(),
        }
    }

    fn window(&self, name: &str) -> Option<u8> {
        self.windows.iter().position(|w| w == name).map(|i| i as u8)
    }

    fn find_segment(&self, name: &str) -> Option<u16> {
        self.segments
            .iter()
            .position(|s| &**s == name)
            .map(|i| i as u16)
    }

    fn intern_segment(&mut self, name: &Arc<str>) -> u16 {
        self.find_segment(name).unwrap_or_else(|| {
            self.segments.push(name.clone());
            (self.segments.len() - 1) as u16
        })
    }

    fn show(&self, k: &RowKey) -> String {
        format!(
            "{} end {} {}/{}",
            self.windows[usize::from(k.0)],
            fmt_t(k.1),
            k.2.map_or("all", Channel::as_str),
            k.3.map_or("all", |s| &*self.segments[usize::from(s)])
        )
    }
}

/// The latest emitted version of one (window, end, channel, segment).
#[derive(Clone, Debug)]
struct RowRec {
    row: KpiRow,
    /// Some version of this key had content.
    ever_nonzero: bool,
}

struct Run {
    outcomes: Vec<Option<IngestOutcome>>,
    names: Names,
    /// The latest version per key (boxed: cheap rehashing).
    rows: HashMap<RowKey, Box<RowRec>>,
    /// The engine's counters, summed over its generations (a restored engine counts afresh).
    counts: Counts,
    errors: Vec<String>,
}

fn is_zero(k: &KpiSnapshot) -> bool {
    k.touchpoints == 0
        && k.nps.n == 0
        && k.csat.n == 0
        && k.ces.n == 0
        && k.contacts == 0
        && k.first_response.n == 0
        && k.resolution.n == 0
        && k.closed_loop.due == 0
        && k.closed_loop.closed == 0
        && k.purchases == 0
        && k.revenue.is_empty()
        && k.customers == 0
}

fn add_stats(counts: &mut Counts, s: &EngineStats) {
    counts.accepted += s.accepted;
    counts.late += s.late;
    counts.duplicates += s.duplicates;
    counts.rejected += s.rejected_too_late;
    counts.folded += s.segments_folded;
}

/// Runs the engine over `schedule`, checking every advance as it happens: each row carries
/// the job watermark `W` (from the oracle's acceptance replay), ends on its window's grid at or
/// before `F = floor(W, 1 min)` with the right start, appears once per advance, and its
/// version never decreases from one emission of a (window, end, key) to the next (an equal
/// version must come with identical content).
fn drive(cfg: &EngineConfig, stream: &Stream, schedule: &[Step], oracle: &Oracle) -> Run {
    let mut engine = KpiEngine::new(cfg.clone()).expect("valid config");
    let mut run = Run {
        outcomes: vec![None; stream.len()],
        names: Names::new(cfg),
        rows: HashMap::default(),
        counts: Counts::default(),
        errors: Vec::new(),
    };
    let mut now: Millis = 0;
    let mut next_ingest = 0usize;
    let mut adv = 0usize;
    let mut seen: HashSet<RowKey> = HashSet::default();
    for step in schedule {
        now += 1;
        match *step {
            Step::Ingest(i) => {
                assert_eq!(i, next_ingest, "ingests come in stream order");
                next_ingest += 1;
                let (p, ev) = &stream[i];
                run.outcomes[i] = Some(engine.ingest(*p, ev, now));
            }
            Step::Restore => {
                add_stats(&mut run.counts, &engine.stats());
                let bytes = engine.checkpoint();
                now += 1_000_000;
                match KpiEngine::restore(cfg.clone(), &bytes, now) {
                    Ok(restored) => engine = restored,
                    Err(e) => {
                        run.errors.push(format!(
                            "restore of a {}-byte checkpoint failed: {e}",
                            bytes.len()
                        ));
                        engine = KpiEngine::new(cfg.clone()).expect("valid config");
                    }
                }
            }
            Step::Advance => {
                let rows = engine.advance(now);
                adv += 1;
                let w = next_ingest
                    .checked_sub(1)
                    .and_then(|i| oracle.watermark_after(i));
                if engine.watermark() != w {
                    run.errors.push(format!(
                        "advance #{adv}: job watermark {:?}, expected {:?}",
                        engine.watermark().map(fmt_t),
                        w.map(fmt_t)
                    ));
                }
                let f = w.map(|w| floor_local(w, MINUTE_MS, 0));
                seen.clear();
                for r in rows {
                    let Some(wi) = run.names.window(&r.window) else {
                        run.errors
                            .push(format!("advance #{adv}: unknown window {:?}", r.window));
                        continue;
                    };
                    let key: RowKey = (
                        wi,
                        r.end,
                        r.channel,
                        r.segment.as_ref().map(|s| run.names.intern_segment(s)),
                    );
                    if Some(r.watermark) != w {
                        run.errors.push(format!(
                            "advance #{adv}: row {} carries watermark {} but W = {:?}",
                            run.names.show(&key),
                            fmt_t(r.watermark),
                            w.map(fmt_t)
                        ));
                    }
                    if f.is_none_or(|f| r.end > f) {
                        run.errors.push(format!(
                            "advance #{adv}: row {} ends after the frontier {:?}",
                            run.names.show(&key),
                            f.map(fmt_t)
                        ));
                    }
                    let start = oracle.window_start(&r.window, r.end);
                    if start != Some(r.start) {
                        run.errors.push(format!(
                            "advance #{adv}: row {} starts at {} but the window ending there \
                             starts at {:?} (None: not on the slide grid)",
                            run.names.show(&key),
                            fmt_t(r.start),
                            start.map(fmt_t)
                        ));
                    }
                    if !seen.insert(key) {
                        run.errors.push(format!(
                            "advance #{adv}: row {} emitted twice in one advance",
                            run.names.show(&key)
                        ));
                    }
                    let nonzero = !is_zero(&r.kpis);
                    let mut ever = nonzero;
                    if let Some(prev) = run.rows.get(&key) {
                        ever |= prev.ever_nonzero;
                        let p = &prev.row;
                        if r.version < p.version {
                            run.errors.push(format!(
                                "advance #{adv}: row {} version went down from {} to {}",
                                run.names.show(&key),
                                p.version,
                                r.version
                            ));
                        } else if r.version == p.version {
                            let mut diffs = diff_states(&p.state, &r.state);
                            if p.kpis != r.kpis {
                                diffs.push(format!("kpis {:?} → {:?}", p.kpis, r.kpis));
                            }
                            if !diffs.is_empty() {
                                run.errors.push(format!(
                                    "advance #{adv}: row {} re-emitted with the same version {} \
                                     but other content: {}",
                                    run.names.show(&key),
                                    r.version,
                                    diffs.join("; ")
                                ));
                            }
                        }
                    }
                    run.rows.insert(
                        key,
                        Box::new(RowRec {
                            row: r,
                            ever_nonzero: ever,
                        }),
                    );
                }
            }
        }
    }
    add_stats(&mut run.counts, &engine.stats());
    run
}

// ---------------------------------------------------------------------------------------------
// Comparison with the oracle
// ---------------------------------------------------------------------------------------------

/// Runs engine and oracle over one stream; returns every discrepancy, readable, and the run.
fn check(cfg: &EngineConfig, stream: &Stream, schedule: &[Step]) -> (Vec<String>, Run) {
    let oracle = Oracle::new(cfg, &Input::from_arrivals(stream.iter().cloned()));
    check_with(cfg, stream, schedule, &oracle)
}

fn check_with(
    cfg: &EngineConfig,
    stream: &Stream,
    schedule: &[Step],
    oracle: &Oracle,
) -> (Vec<String>, Run) {
    let run = drive(cfg, stream, schedule, oracle);
    let mut errs = run.errors.clone();

    // Outcomes, one per event, and the counters.
    for (i, got) in run.outcomes.iter().enumerate() {
        let Some(got) = got else {
            continue;
        };
        let exp = oracle.outcomes()[i].to_ingest(stream[i].1.event_time(), cfg);
        if exp != *got {
            errs.push(format!(
                "outcome of stream[{i}] p{} {}: expected {exp:?}, got {got:?}",
                stream[i].0,
                describe(&stream[i].1)
            ));
        }
    }
    if run.counts != *oracle.counts() {
        errs.push(format!(
            "stats: expected {:?}, got {:?}",
            oracle.counts(),
            run.counts
        ));
    }

    // Every window up to the last frontier: the latest version equals the recomputation,
    // and every non-empty one was emitted.
    let mut matched: HashSet<RowKey> = HashSet::default();
    if let Some(f) = oracle.frontier() {
        oracle.for_each_row(f, |k, exp| {
            let wi = run.names.window(&k.window).expect("configured window");
            let seg = match &k.segment {
                None => Some(None),
                Some(name) => run.names.find_segment(name).map(Some),
            };
            let got = seg.and_then(|seg| {
                let rk: RowKey = (wi, k.end, k.channel, seg);
                matched.insert(rk);
                run.rows.get(&rk)
            });
            match got {
                None => errs.push(format!(
                    "missing row {k}: the oracle has {} contributions ({})",
                    exp.contributions,
                    exp.brief()
                )),
                Some(got) => {
                    let diffs = diff_row(k, exp, &got.row);
                    if !diffs.is_empty() {
                        errs.push(format!(
                            "row {k} v{}: {}",
                            got.row.version,
                            diffs.join("; ")
                        ));
                    }
                }
            }
        });
    }
    let mut extra: Vec<(&RowKey, &Box<RowRec>)> = run
        .rows
        .iter()
        .filter(|(k, _)| !matched.contains(*k))
        .collect();
    extra.sort_by(|a, b| a.0.cmp(b.0));
    for (k, r) in extra {
        if !is_zero(&r.row.kpis) {
            errs.push(format!(
                "row {} (start {}, v{}): the oracle window is empty but the latest version has \
                 content {}",
                run.names.show(k),
                fmt_t(r.row.start),
                r.row.version,
                brief(&r.row.kpis)
            ));
        } else if !r.ever_nonzero {
            errs.push(format!(
                "row {}: an empty row was emitted for a key that never had content",
                run.names.show(k)
            ));
        }
    }
    (errs, run)
}

/// (window, end, channel, segment name) → the latest row with content, for ends ≤ `max_end`.
fn final_rows(run: &Run, max_end: Millis) -> BTreeMap<(String, Millis, String, String), &KpiRow> {
    run.rows
        .values()
        .map(|r| &r.row)
        .filter(|r| r.end <= max_end && !is_zero(&r.kpis))
        .map(|r| {
            (
                (
                    r.window.to_string(),
                    r.end,
                    r.channel_label().to_string(),
                    r.segment_label().to_string(),
                ),
                r,
            )
        })
        .collect()
}

/// The final latest rows (with content, ending at or before `max_end`) of two runs over the
/// same input must be identical: same start, version, KPI values and parts.
fn compare_runs(a: &Run, b: &Run, max_end: Millis, name_a: &str, name_b: &str) -> Vec<String> {
    let (ra, rb) = (final_rows(a, max_end), final_rows(b, max_end));
    let mut errs = Vec::new();
    let keys: BTreeSet<_> = ra.keys().chain(rb.keys()).collect();
    for k in keys {
        let show = || format!("{} end {} {}/{}", k.0, fmt_t(k.1), k.2, k.3);
        match (ra.get(k), rb.get(k)) {
            (Some(x), Some(y)) => {
                let mut d = Vec::new();
                if (x.start, x.version) != (y.start, y.version) {
                    d.push(format!(
                        "(start, version) {:?} vs {:?}",
                        (x.start, x.version),
                        (y.start, y.version)
                    ));
                }
                d.extend(diff_states(&x.state, &y.state));
                if x.kpis != y.kpis {
                    d.push(format!("kpis {} vs {}", brief(&x.kpis), brief(&y.kpis)));
                }
                if !d.is_empty() {
                    errs.push(format!(
                        "row {} differs ({name_a} = expected, {name_b} = got): {}",
                        show(),
                        d.join("; ")
                    ));
                }
            }
            (Some(x), None) => errs.push(format!(
                "row {} (v{}) only in the {name_a} run: {}",
                show(),
                x.version,
                brief(&x.kpis)
            )),
            (None, Some(y)) => errs.push(format!(
                "row {} (v{}) only in the {name_b} run: {}",
                show(),
                y.version,
                brief(&y.kpis)
            )),
            (None, None) => unreachable!("a key of one of the maps"),
        }
    }
    errs
}

/// The counts of a snapshot, on one line.
fn brief(k: &KpiSnapshot) -> String {
    format!(
        "touchpoints {} contacts {} purchases {} revenue lines {} nps n {} csat n {} ces n {} \
         frt n {} res n {} due {} closed {} customers {}",
        k.touchpoints,
        k.contacts,
        k.purchases,
        k.revenue.len(),
        k.nps.n,
        k.csat.n,
        k.ces.n,
        k.first_response.n,
        k.resolution.n,
        k.closed_loop.due,
        k.closed_loop.closed,
        k.customers
    )
}

fn report(cfg: &EngineConfig, stream: &Stream, schedule: &[Step], errs: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{} discrepancies; first ones:", errs.len());
    for e in errs.iter().take(12) {
        let _ = writeln!(s, "  - {e}");
    }
    if stream.len() <= 150 {
        let _ = writeln!(
            s,
            "config: horizon {} min, ttl {} min, follow-up {} min, max_segments {}, preset {:?}, offset {} min",
            cfg.correction_horizon_ms / MINUTE_MS,
            cfg.case_ttl_ms / MINUTE_MS,
            cfg.follow_up_deadline_ms / MINUTE_MS,
            cfg.max_segments,
            cfg.preset_segments,
            cfg.utc_offset_minutes
        );
        let _ = writeln!(s, "calls:");
        for step in schedule {
            let _ = match *step {
                Step::Ingest(i) => {
                    writeln!(s, "  ingest p{} {}", stream[i].0, describe(&stream[i].1))
                }
                Step::Advance => writeln!(s, "  advance"),
                Step::Restore => writeln!(s, "  checkpoint + restore"),
            };
        }
    }
    s
}
// ---------------------------------------------------------------------------------------------
// Random streams
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Arrival {
    /// Arrives `jitter_s` seconds after its event time (beyond the 2 min lateness sometimes).
    OnTime { jitter_s: u16 },
    /// Arrives late by a fraction (‰) of [3 min, 2·horizon + 20 min]: inside or beyond the horizon.
    Late { permille: u16 },
}

/// A time offset for case events and follow-ups.
#[derive(Clone, Debug)]
enum Offset {
    /// ‰ of the kind's range.
    Uniform(u16),
    Zero,
    MinusQuarter,
    /// Exactly the limit (case TTL / follow-up deadline).
    Limit,
    LimitPlusQuarter,
    /// Exactly the response target (1 h).
    Target,
    TargetPlusQuarter,
}

#[derive(Clone, Copy, Debug)]
enum CaseWhat {
    Open,
    Reply,
    Resolve,
}

#[derive(Clone, Debug)]
enum KindSpec {
    Visit,
    OtherKind,
    /// A visit carrying an amount: not revenue (only purchases are).
    VisitWithAmount {
        units: i64,
        currency: u8,
    },
    Purchase {
        amount: Option<(i64, u8)>,
    },
    Outbound,
    /// A case event of case `case` (0 or 1) of the customer, at the case's anchor + `offset`:
    /// opens in [0, TTL] (so a case may get a second open, before or after it settled),
    /// replies / resolutions in [−40 min, TTL + 2 h].
    Case {
        case: u8,
        what: CaseWhat,
        offset: Offset,
    },
    Survey {
        metric: u8,
        score: u8,
    },
    /// An NPS detractor plus an outbound contact of the same customer at `delta`.
    NpsFollowUp {
        score: i32,
        delta: Offset,
    },
}

#[derive(Clone, Debug)]
struct Spec {
    customer: u8,
    kind: KindSpec,
    minute: u16,
    quarter: u8,
    channel: u8,
    segment: u8,
    arrival: Arrival,
    /// Re-send the event this many minutes (of arrival) later; the second number shifts the
    /// copy's event time by that many 15 s steps (0: an exact duplicate; otherwise the same id
    /// in the same or another event-time minute).
    duplicate: Option<(u16, i8)>,
}

#[derive(Clone, Debug)]
struct Scenario {
    partitions: u8,
    customers: u8,
    channels: u8,
    span_min: u16,
    base_shift_min: u16,
    salt: u16,
    horizon_min: i64,
    ttl_min: i64,
    follow_min: i64,
    max_segments: usize,
    preset: bool,
    /// Per partition: the survey source arrives this many minutes behind its event times
    /// (on top of the usual jitter), so it lags the partition's touchpoint source.
    survey_lag_min: Vec<u16>,
    /// Every partition's survey source also delivers a first record at `base`, so it is known
    /// (and holds the job watermark back) from the start. Otherwise a survey source first
    /// appears whenever its first response arrives, possibly long after the job watermark
    /// passed its event times.
    survey_header: bool,
    /// 50–400 slots; shrinking empties slots (`None`) to get below 50 events.
    specs: Vec<Option<Spec>>,
    gaps: Vec<u8>,
}

const CHANNELS: [Channel; 4] = [Channel::Web, Channel::Phone, Channel::Chat, Channel::Email];
const SEGMENTS: [&str; 10] = [
    "retail",
    "retail",
    "smb",
    "smb",
    "enterprise",
    "gov",
    "startup",
    "edu",
    "all",
    "other",
];
const CURRENCIES: [&str; 3] = ["EUR", "USD", "JPY"];

fn offset_strategy() -> impl Strategy<Value = Offset> {
    prop_oneof![
        6 => (0u16..=1000).prop_map(Offset::Uniform),
        2 => Just(Offset::Zero),
        1 => Just(Offset::MinusQuarter),
        1 => Just(Offset::Limit),
        1 => Just(Offset::LimitPlusQuarter),
        1 => Just(Offset::Target),
        1 => Just(Offset::TargetPlusQuarter),
    ]
}

fn kind_strategy() -> impl Strategy<Value = KindSpec> {
    let what = prop_oneof![
        2 => Just(CaseWhat::Open),
        3 => Just(CaseWhat::Reply),
        2 => Just(CaseWhat::Resolve),
    ];
    prop_oneof![
        5 => Just(KindSpec::Visit),
        1 => Just(KindSpec::OtherKind),
        1 => (0i64..2_000_000, 0u8..3).prop_map(|(units, currency)| KindSpec::VisitWithAmount { units, currency }),
        3 => proptest::option::weighted(0.85, (-20_000i64..100_000_000, 0u8..2))
            .prop_map(|amount| KindSpec::Purchase { amount }),
        2 => Just(KindSpec::Outbound),
        7 => (0u8..2, what, offset_strategy()).prop_map(|(case, what, offset)| KindSpec::Case { case, what, offset }),
        5 => (0u8..3, any::<u8>()).prop_map(|(metric, score)| KindSpec::Survey { metric, score }),
        2 => (0i32..=6, offset_strategy()).prop_map(|(score, delta)| KindSpec::NpsFollowUp { score, delta }),
    ]
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    let arrival = prop_oneof![
        17 => (0u16..=200).prop_map(|jitter_s| Arrival::OnTime { jitter_s }),
        3 => (0u16..=1000).prop_map(|permille| Arrival::Late { permille }),
    ];
    (
        0u8..64,
        kind_strategy(),
        0u16..4320,
        0u8..4,
        0u8..4,
        0u8..10,
        arrival,
        proptest::option::weighted(
            0.08,
            (1u16..=180, prop_oneof![6 => Just(0i8), 1 => -8i8..=8]),
        ),
    )
        .prop_map(
            |(customer, kind, minute, quarter, channel, segment, arrival, duplicate)| Spec {
                customer,
                kind,
                minute,
                quarter,
                channel,
                segment,
                arrival,
                duplicate,
            },
        )
}

fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    (
        (
            1u8..=3,
            3u8..=24,
            2u8..=4,
            1440u16..=4320,
            0u16..1440,
            any::<u16>(),
        ),
        (
            prop_oneof![Just(30i64), Just(60), Just(90)],
            prop_oneof![Just(120i64), Just(180), Just(240)],
            prop_oneof![Just(60i64), Just(120)],
            2usize..=3,
            any::<bool>(),
            proptest::collection::vec(prop_oneof![3 => Just(0u16), 1 => 20u16..=240], 3),
            any::<bool>(),
        ),
        proptest::collection::vec(proptest::option::weighted(0.999, spec_strategy()), 50..=400),
        proptest::collection::vec(1u8..=50, 1..=8),
    )
        .prop_map(
            |(
                (partitions, customers, channels, span_min, base_shift_min, salt),
                (
                    horizon_min,
                    ttl_min,
                    follow_min,
                    max_segments,
                    preset,
                    survey_lag_min,
                    survey_header,
                ),
                specs,
                gaps,
            )| Scenario {
                partitions,
                customers: customers.max(partitions),
                channels,
                span_min,
                base_shift_min,
                salt,
                horizon_min,
                ttl_min,
                follow_min,
                max_segments,
                preset,
                survey_lag_min,
                survey_header,
                specs,
                gaps,
            },
        )
}

fn knobs(sc: &Scenario, offset_min: i32) -> Knobs {
    Knobs {
        horizon_min: sc.horizon_min,
        ttl_min: sc.ttl_min,
        follow_min: sc.follow_min,
        max_segments: sc.max_segments,
        preset: sc.preset,
        offset_min,
    }
}

/// Builds the arrival-ordered stream and the call schedule of a scenario.
fn build(sc: &Scenario, cfg: &EngineConfig) -> (Stream, Vec<Step>) {
    let base = EPOCH_2024_03_30 + i64::from(sc.base_shift_min) * MINUTE_MS + 17 * QUARTER_MS;
    let span = i64::from(sc.span_min);
    let p_count = i64::from(sc.partitions);
    let customers = i64::from(sc.customers);
    let partition_of = |c: i64| (c % p_count) as i32;
    let cust_name = |c: i64| format!("cust{c}");
    let ttl = cfg.case_ttl_ms;
    let follow = cfg.follow_up_deadline_ms;
    let target = cfg.response_target_ms;
    let horizon = cfg.correction_horizon_ms;
    let scaled = |permille: u16, lo: i64, hi: i64| {
        let q = (lo + (hi - lo) * i64::from(permille) / 1000) / QUARTER_MS;
        q * QUARTER_MS
    };
    let offset_ms = |o: &Offset, lo: i64, hi: i64, limit: i64| match o {
        Offset::Uniform(p) => scaled(*p, lo, hi),
        Offset::Zero => 0,
        Offset::MinusQuarter => -QUARTER_MS,
        Offset::Limit => limit,
        Offset::LimitPlusQuarter => limit + QUARTER_MS,
        Offset::Target => target,
        Offset::TargetPlusQuarter => target + QUARTER_MS,
    };

    // (arrival key, sequence, partition, event)
    let mut items: Vec<(Millis, usize, i32, CxEvent)> = Vec::new();
    let mut seq = 0usize;
    let mut push =
        |items: &mut Vec<(Millis, usize, i32, CxEvent)>, key: Millis, p: i32, ev: CxEvent| {
            items.push((key, seq, p, ev));
            seq += 1;
        };
    for (i, s) in sc.specs.iter().enumerate() {
        let Some(s) = s else {
            continue;
        };
        // Case events come from the first 8 customers only, so that cases get several events.
        let c = match s.kind {
            KindSpec::Case { .. } => i64::from(s.customer) % customers.min(8),
            _ => i64::from(s.customer) % customers,
        };
        let cust = cust_name(c);
        let p = partition_of(c);
        let ch = CHANNELS[usize::from(s.channel % sc.channels)];
        let seg = SEGMENTS[usize::from(s.segment)];
        let t = base + (i64::from(s.minute) % span) * MINUTE_MS + i64::from(s.quarter) * QUARTER_MS;
        let id = format!("e{i}");
        let mut events: Vec<CxEvent> = Vec::new();
        match &s.kind {
            KindSpec::Visit => events.push(touch(
                &id,
                t,
                &cust,
                seg,
                ch,
                TouchpointKind::Visit,
                None,
                None,
            )),
            KindSpec::OtherKind => events.push(touch(
                &id,
                t,
                &cust,
                seg,
                ch,
                TouchpointKind::Other,
                None,
                None,
            )),
            KindSpec::VisitWithAmount { units, currency } => events.push(touch(
                &id,
                t,
                &cust,
                seg,
                ch,
                TouchpointKind::Visit,
                None,
                Some((*units, CURRENCIES[usize::from(*currency)])),
            )),
            KindSpec::Purchase { amount } => events.push(touch(
                &id,
                t,
                &cust,
                seg,
                ch,
                TouchpointKind::Purchase,
                None,
                amount.map(|(u, cur)| (u, CURRENCIES[usize::from(cur)])),
            )),
            KindSpec::Outbound => events.push(touch(
                &id,
                t,
                &cust,
                seg,
                ch,
                TouchpointKind::OutboundContact,
                None,
                None,
            )),
            KindSpec::Case { case, what, offset } => {
                // All events of one case cluster around a per-case anchor.
                let h = (c as u64 * 7_919 + u64::from(*case) * 104_729 + u64::from(sc.salt) * 31)
                    .wrapping_mul(2_654_435_761)
                    % 1_000_003;
                let anchor = base + (h as i64 % span) * MINUTE_MS;
                let (kind, at) = match what {
                    CaseWhat::Open => (
                        TouchpointKind::ContactOpened,
                        anchor + offset_ms(offset, 0, ttl, 0),
                    ),
                    CaseWhat::Reply => (
                        TouchpointKind::AgentReplied,
                        anchor + offset_ms(offset, -40 * MINUTE_MS, ttl + 2 * HOUR_MS, ttl),
                    ),
                    CaseWhat::Resolve => (
                        TouchpointKind::CaseResolved,
                        anchor + offset_ms(offset, -40 * MINUTE_MS, ttl + 2 * HOUR_MS, ttl),
                    ),
                };
                let case_id = format!("{cust}-case{case}");
                events.push(touch(&id, at, &cust, seg, ch, kind, Some(&case_id), None));
            }
            KindSpec::Survey { metric, score } => {
                let (m, s) = match metric {
                    0 => (SurveyMetric::Nps, i32::from(*score % 11)),
                    1 => (SurveyMetric::Csat, 1 + i32::from(*score % 5)),
                    _ => (SurveyMetric::Ces, 1 + i32::from(*score % 7)),
                };
                events.push(survey(&id, t, &cust, seg, ch, m, s));
            }
            KindSpec::NpsFollowUp { score, delta } => {
                events.push(survey(&id, t, &cust, seg, ch, SurveyMetric::Nps, *score));
                let at = t + offset_ms(delta, -15 * MINUTE_MS, follow + 30 * MINUTE_MS, follow);
                let ch2 = CHANNELS[usize::from((s.channel + 1) % sc.channels)];
                events.push(touch(
                    &format!("e{i}f"),
                    at,
                    &cust,
                    seg,
                    ch2,
                    TouchpointKind::OutboundContact,
                    None,
                    None,
                ));
            }
        }
        for ev in events {
            let et = ev.event_time();
            let lag = match ev {
                CxEvent::Survey(_) => i64::from(sc.survey_lag_min[p as usize]) * MINUTE_MS,
                CxEvent::Touchpoint(_) => 0,
            };
            let key = lag
                + match s.arrival {
                    Arrival::OnTime { jitter_s } => et + i64::from(jitter_s) * 1000,
                    Arrival::Late { permille } => {
                        et + scaled(permille, 3 * MINUTE_MS, 2 * horizon + 20 * MINUTE_MS)
                    }
                };
            if let Some((delay, shift)) = s.duplicate {
                let mut copy = ev.clone();
                match &mut copy {
                    CxEvent::Touchpoint(e) => e.occurred_at += i64::from(shift) * QUARTER_MS,
                    CxEvent::Survey(r) => r.submitted_at += i64::from(shift) * QUARTER_MS,
                }
                push(&mut items, key + i64::from(delay) * MINUTE_MS, p, copy);
            }
            push(&mut items, key, p, ev);
        }
    }
    items.sort_by_key(|(key, seq, _, _)| (*key, *seq));

    // Every partition's touchpoint source first delivers one on-time event at `base` (and, with
    // `survey_header`, its survey source too).
    let mut stream: Stream = (0..sc.partitions)
        .map(|p| {
            let c = i64::from(p);
            (
                p as i32,
                touch(
                    &format!("h{p}"),
                    base,
                    &cust_name(c),
                    "retail",
                    Channel::Web,
                    TouchpointKind::Visit,
                    None,
                    None,
                ),
            )
        })
        .collect();
    if sc.survey_header {
        for p in 0..sc.partitions {
            let c = i64::from(p);
            let csat = survey(
                &format!("hs{p}"),
                base,
                &cust_name(c),
                "retail",
                Channel::Web,
                SurveyMetric::Csat,
                4,
            );
            stream.push((i32::from(p), csat));
        }
    }
    stream.extend(items.into_iter().map(|(_, _, p, ev)| (p, ev)));

    let schedule = schedule_for(stream.len(), &sc.gaps);
    (stream, schedule)
}

/// 64 cases per property and at most 1 min of shrinking, unless the usual `PROPTEST_CASES` /
/// `PROPTEST_MAX_SHRINK_TIME` / `PROPTEST_MAX_SHRINK_ITERS` environment variables say otherwise.
fn pt_config() -> ProptestConfig {
    pt_config_cases(64)
}

/// `cases` cases (unless `PROPTEST_CASES` says otherwise), 1 min of shrinking.
fn pt_config_cases(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    if std::env::var_os("PROPTEST_MAX_SHRINK_TIME").is_none() {
        c.max_shrink_time = 60_000;
    }
    if std::env::var_os("PROPTEST_MAX_SHRINK_ITERS").is_none() {
        c.max_shrink_iters = 100_000;
    }
    c.failure_persistence = None;
    c
}

fn check_scenario(sc: &Scenario, offset_min: i32) -> Result<(), TestCaseError> {
    let cfg = config(&knobs(sc, offset_min));
    let (stream, schedule) = build(sc, &cfg);
    let (errs, _) = check(&cfg, &stream, &schedule);
    if errs.is_empty() {
        return Ok(());
    }
    // The first failing input of this property (thread) is also delta-debugged into a short
    // list of calls; every failure message (so also proptest's final one) carries it.
    let minimized = MINIMIZED.with(|m| {
        m.borrow_mut()
            .get_or_insert_with(|| minimize(&cfg, &stream, &schedule, &errs))
            .clone()
    });
    Err(TestCaseError::fail(format!(
        "{}\n{minimized}",
        report(&cfg, &stream, &schedule, &errs)
    )))
}

thread_local! {
    static MINIMIZED: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The kinds of discrepancy an error message names (to keep delta debugging on one bug).
fn kinds(e: &str) -> Vec<&'static str> {
    const KINDS: [&str; 27] = [
        "outcome of",
        "job watermark",
        "restore",
        "updates (version)",
        "stats:",
        "missing row",
        "starts at",
        "oracle window is empty",
        "never had content",
        "version",
        "watermark",
        "frontier",
        "twice",
        "start:",
        "touchpoints:",
        "contacts:",
        "purchases:",
        "revenue",
        "nps.",
        "csat.",
        "ces.",
        "first_response.",
        "resolution.",
        "closed_loop.",
        "customers:",
        "unknown window",
        "row ",
    ];
    KINDS.into_iter().filter(|k| e.contains(k)).collect()
}

/// Delta debugging over the calls (ingest / advance) of a failing stream: removes chunks of
/// calls while a discrepancy of the same kind as the first one remains. At most 60 s.
fn minimize(cfg: &EngineConfig, stream: &Stream, schedule: &[Step], errs: &[String]) -> String {
    /// An ingest (partition, event), or `Err(step)` for an advance or a restore.
    type Call = Result<(i32, CxEvent), Step>;
    fn to_stream(calls: &[Call]) -> (Stream, Vec<Step>) {
        let mut stream = Vec::new();
        let mut steps = Vec::new();
        for c in calls {
            match c {
                Ok((p, e)) => {
                    steps.push(Step::Ingest(stream.len()));
                    stream.push((*p, e.clone()));
                }
                Err(step) => steps.push(*step),
            }
        }
        if steps.last() != Some(&Step::Advance) {
            steps.push(Step::Advance);
        }
        (stream, steps)
    }
    let started = std::time::Instant::now();
    let wanted: Vec<&str> = kinds(&errs[0])
        .into_iter()
        .filter(|k| *k != "row ")
        .collect();
    let fails = |calls: &[Call]| {
        let (s, st) = to_stream(calls);
        check(cfg, &s, &st)
            .0
            .iter()
            .any(|e| kinds(e).iter().any(|k| wanted.contains(k)))
    };
    let mut calls: Vec<Call> = schedule
        .iter()
        .map(|s| match *s {
            Step::Ingest(i) => Ok(stream[i].clone()),
            other => Err(other),
        })
        .collect();
    let mut parts = 2usize;
    while calls.len() >= 2 && started.elapsed().as_secs() < 60 {
        let chunk = calls.len().div_ceil(parts);
        let mut removed = false;
        let mut from = 0;
        while from < calls.len() && started.elapsed().as_secs() < 60 {
            let mut candidate = calls.clone();
            candidate.drain(from..(from + chunk).min(calls.len()));
            if fails(&candidate) {
                calls = candidate;
                removed = true;
                parts = (parts - 1).max(2);
                break;
            }
            from += chunk;
        }
        if !removed {
            if parts >= calls.len() {
                break;
            }
            parts = (parts * 2).min(calls.len());
        }
    }
    let (s, st) = to_stream(&calls);
    let (errs, _) = check(cfg, &s, &st);
    format!(
        "delta-debugged reproduction of the first failing input ({} calls, {:?}; kinds {wanted:?}):\n{}",
        st.len(),
        started.elapsed(),
        report(cfg, &s, &st, &errs)
    )
}

proptest! {
    #![proptest_config(pt_config())]

    /// UTC: every emitted row's latest version equals the naive recomputation.
    #[test]
    fn engine_matches_oracle_utc(sc in scenario_strategy()) {
        check_scenario(&sc, 0)?;
    }

    /// The same with a non-zero local offset (+3:30 or −5:30): minutes, hours and days are
    /// aligned in local time.
    #[test]
    fn engine_matches_oracle_local_offset(
        sc in scenario_strategy(),
        offset in prop_oneof![Just(210i32), Just(-330i32)],
    ) {
        check_scenario(&sc, offset)?;
    }
}

/// `schedule` with a checkpoint + restore inserted before each position `cuts[k]` ‰ of the
/// way through it.
fn with_restores(schedule: &[Step], cuts: &[u16]) -> Vec<Step> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| schedule.len() * usize::from(*c) / 1000)
        .collect();
    at.sort_unstable();
    let mut out = Vec::with_capacity(schedule.len() + at.len());
    let mut cut = at.iter().peekable();
    for (i, step) in schedule.iter().enumerate() {
        while cut.next_if(|c| **c == i).is_some() {
            out.push(Step::Restore);
        }
        out.push(*step);
    }
    out
}

/// The same events, each source in its own order, interleaved another way: `mode` 0 puts
/// every survey response first, 1 every touchpoint first, 2 takes the next record from the
/// source `pattern` (cycling) names, falling back to the other when one is exhausted.
fn reinterleave(stream: &Stream, mode: u8, pattern: &[bool]) -> Stream {
    let (mut tp, mut sv): (Vec<_>, Vec<_>) = stream
        .iter()
        .cloned()
        .partition(|(_, e)| matches!(e, CxEvent::Touchpoint(_)));
    match mode {
        0 => sv.into_iter().chain(tp).collect(),
        1 => tp.into_iter().chain(sv).collect(),
        _ => {
            tp.reverse();
            sv.reverse();
            let mut out = Vec::with_capacity(stream.len());
            let mut pat = pattern.iter().cycle();
            while !(tp.is_empty() && sv.is_empty()) {
                let from_surveys = *pat.next().expect("non-empty pattern");
                let next = if from_surveys {
                    sv.pop().or_else(|| tp.pop())
                } else {
                    tp.pop().or_else(|| sv.pop())
                };
                out.extend(next);
            }
            out
        }
    }
}

fn fail_with(
    cfg: &EngineConfig,
    stream: &Stream,
    schedule: &[Step],
    errs: &[String],
) -> Result<(), TestCaseError> {
    if errs.is_empty() {
        return Ok(());
    }
    Err(TestCaseError::fail(report(cfg, stream, schedule, errs)))
}

/// The body of `checkpoint_restore_is_invisible`.
fn checkpoint_case(
    sc: &Scenario,
    offset: i32,
    cuts: &[u16],
    other_gaps: Option<&[u8]>,
) -> Result<(), TestCaseError> {
    let cfg = config(&knobs(sc, offset));
    let (stream, plain) = build(sc, &cfg);
    let oracle = Oracle::new(&cfg, &Input::from_arrivals(stream.iter().cloned()));
    let base = match other_gaps {
        Some(g) => schedule_for(stream.len(), g),
        None => plain.clone(),
    };
    let interrupted = with_restores(&base, cuts);
    let (mut errs, restored) = check_with(&cfg, &stream, &interrupted, &oracle);
    let uninterrupted = drive(&cfg, &stream, &plain, &oracle);
    let f = oracle.frontier().unwrap_or(Millis::MIN);
    errs.extend(compare_runs(
        &uninterrupted,
        &restored,
        f,
        "uninterrupted",
        "restored",
    ));
    fail_with(&cfg, &stream, &interrupted, &errs)
}

proptest! {
    #![proptest_config(pt_config_cases(32))]

    /// Checkpointing the engine and continuing from `KpiEngine::restore` (at a fresh
    /// processing time), one to four times, with the same or other `advance` points than the
    /// uninterrupted run, is invisible: the final latest rows equal the uninterrupted
    /// engine's (start, version, KPI values and parts) and the oracle's, and every outcome
    /// is the oracle's.
    #[test]
    fn checkpoint_restore_is_invisible(
        sc in scenario_strategy(),
        offset in prop_oneof![Just(0i32), Just(210i32), Just(-330i32)],
        cuts in proptest::collection::vec(0u16..1000, 1..=4),
        other_gaps in proptest::option::of(proptest::collection::vec(1u8..=50, 1..=8)),
    ) {
        checkpoint_case(&sc, offset, &cuts, other_gaps.as_deref())?;
    }

    /// Replays of one partition are exact whatever the interleaving of its two sources:
    /// the same touchpoints and survey responses (each source in the same order) fed in
    /// another interleaving give the same final latest rows (start, version, KPI values and
    /// parts) up to the lower of the two final frontiers, and each run matches the oracle.
    /// (Enough segment room for every name: the guard admits names in arrival order, so
    /// folding would legitimately depend on the interleaving.)
    #[test]
    fn replay_interleaving_is_invisible(
        sc in scenario_strategy(),
        mode in 0u8..3,
        pattern in proptest::collection::vec(any::<bool>(), 1..=16),
        other_gaps in proptest::collection::vec(1u8..=50, 1..=8),
    ) {
        let mut sc = sc;
        sc.partitions = 1;
        sc.max_segments = 8;
        let cfg = config(&knobs(&sc, 0));
        let (a, schedule_a) = build(&sc, &cfg);
        let b = reinterleave(&a, mode, &pattern);
        let schedule_b = schedule_for(b.len(), &other_gaps);
        let oracle_a = Oracle::new(&cfg, &Input::from_arrivals(a.iter().cloned()));
        let oracle_b = Oracle::new(&cfg, &Input::from_arrivals(b.iter().cloned()));
        prop_assert!(!oracle_b.segments_depend_on_interleaving());
        let (errs_a, run_a) = check_with(&cfg, &a, &schedule_a, &oracle_a);
        let (errs_b, run_b) = check_with(&cfg, &b, &schedule_b, &oracle_b);
        let f = match (oracle_a.frontier(), oracle_b.frontier()) {
            (Some(x), Some(y)) => x.min(y),
            _ => Millis::MIN,
        };
        let mut errs: Vec<String> = errs_b
            .into_iter()
            .map(|e| format!("other interleaving vs oracle: {e}"))
            .collect();
        errs.extend(compare_runs(&run_a, &run_b, f, "first interleaving", "other interleaving"));
        fail_with(&cfg, &a, &schedule_a, &errs_a)?;
        // (The calls shown are the other interleaving's.)
        fail_with(&cfg, &b, &schedule_b, &errs)?;
    }
}
// ---------------------------------------------------------------------------------------------
// Known-answer scenarios (hand-computed)
// ---------------------------------------------------------------------------------------------

/// 2024-05-01T00:00:00Z = 19 844 days · 86 400 000 ms.
const MAY1: Millis = 19_844 * DAY_MS;

fn at(h: i64, m: i64) -> Millis {
    MAY1 + h * HOUR_MS + m * MINUTE_MS
}

/// The known-answer tests list the rows they expect: the 1 h, 3 h and 2 d windows only.
fn kat_config() -> EngineConfig {
    let mut cfg = config(&Knobs {
        horizon_min: 30,
        ttl_min: 180,
        follow_min: 60,
        max_segments: 3,
        preset: false,
        offset_min: 0,
    });
    cfg.windows.retain(|w| w.name != "150m");
    cfg
}

fn visit(id: &str, t: Millis, cust: &str) -> CxEvent {
    touch(
        id,
        t,
        cust,
        "retail",
        Channel::Web,
        TouchpointKind::Visit,
        None,
        None,
    )
}

fn find<'a>(
    rows: &'a [KpiRow],
    window: &str,
    end: Millis,
    ch: &str,
    seg: &str,
) -> Option<&'a KpiRow> {
    rows.iter().find(|r| {
        &*r.window == window && r.end == end && r.channel_label() == ch && r.segment_label() == seg
    })
}

fn must<'a>(rows: &'a [KpiRow], window: &str, end: Millis, ch: &str, seg: &str) -> &'a KpiRow {
    find(rows, window, end, ch, seg)
        .unwrap_or_else(|| panic!("no row {window} end {} {ch}/{seg}", fmt_t(end)))
}

struct Kat {
    engine: KpiEngine,
    now: Millis,
}

impl Kat {
    fn new() -> Kat {
        Kat {
            engine: KpiEngine::new(kat_config()).expect("valid"),
            now: 0,
        }
    }
    fn ingest(&mut self, ev: &CxEvent) -> IngestOutcome {
        self.now += 1;
        self.engine.ingest(0, ev, self.now)
    }
    fn advance(&mut self) -> Vec<KpiRow> {
        self.now += 1;
        self.engine.advance(self.now)
    }
    /// Checkpoint, then continue with the restored engine at a much later `now`.
    fn restore(&mut self) {
        let bytes = self.engine.checkpoint();
        self.now += 1_000_000;
        self.engine = KpiEngine::restore(kat_config(), &bytes, self.now).expect("restorable");
    }
}

fn nps(id: &str, t: Millis, cust: &str, score: i32) -> CxEvent {
    survey(
        id,
        t,
        cust,
        "retail",
        Channel::Web,
        SurveyMetric::Nps,
        score,
    )
}

fn csat(id: &str, t: Millis, cust: &str, score: i32) -> CxEvent {
    survey(
        id,
        t,
        cust,
        "retail",
        Channel::Web,
        SurveyMetric::Csat,
        score,
    )
}

fn outbound(id: &str, cust: &str, t: Millis) -> CxEvent {
    touch(
        id,
        t,
        cust,
        "retail",
        Channel::Email,
        TouchpointKind::OutboundContact,
        None,
        None,
    )
}

fn rejected(t: Millis, watermark: Millis) -> IngestOutcome {
    IngestOutcome::Rejected(TooLate {
        event_time: t,
        watermark,
        horizon_ms: 30 * MINUTE_MS,
    })
}

/// (window, end) pairs, sorted as [`all_all_windows`] sorts them.
fn windows(list: &[(&str, Millis)]) -> Vec<(String, Millis)> {
    let mut v: Vec<(String, Millis)> = list.iter().map(|(w, e)| (w.to_string(), *e)).collect();
    v.sort();
    v
}

/// The ends `from, from + step, …, to` (minutes of the KAT day) of window `w`.
fn ends(
    w: &'static str,
    from: (i64, i64),
    to: (i64, i64),
    step_min: i64,
) -> Vec<(&'static str, Millis)> {
    let (a, b) = (at(from.0, from.1), at(to.0, to.1));
    (0..)
        .map(|i| a + i * step_min * MINUTE_MS)
        .take_while(|e| *e <= b)
        .map(|e| (w, e))
        .collect()
}

/// The (window, end) pairs of the (all, all) rows of one advance, sorted.
fn all_all_windows(rows: &[KpiRow]) -> Vec<(String, Millis)> {
    let mut got: Vec<(String, Millis)> = rows
        .iter()
        .filter(|r| r.channel.is_none() && r.segment.is_none())
        .map(|r| (r.window.to_string(), r.end))
        .collect();
    got.sort();
    got
}

#[test]
fn kat_late_event_corrects_emitted_1h_window() {
    let mut k = Kat::new();
    assert_eq!(
        k.ingest(&visit("a", at(9, 50), "c1")),
        IngestOutcome::Accepted { late: false }
    );
    // wm = W = 10:02 − 2 min = 10:00.
    assert_eq!(
        k.ingest(&visit("b", at(10, 2), "c1")),
        IngestOutcome::Accepted { late: false }
    );
    let r1 = k.advance();
    // First advance: F = 10:00, F_prev = the earliest minute holding data, 09:50: every window
    // ending in (09:50, 10:00] — 1h ends 09:51 ..= 10:00, 3h (5 min slide) 09:55 and 10:00,
    // 2d (30 min slide) 10:00; each holds the 09:50 visit only.
    let mut want = ends("1h", (9, 51), (10, 0), 1);
    want.extend([("3h", at(9, 55)), ("3h", at(10, 0)), ("2d", at(10, 0))]);
    assert_eq!(all_all_windows(&r1), windows(&want));
    let row = must(&r1, "1h", at(9, 51), "all", "all");
    assert_eq!(
        (row.start, row.kpis.touchpoints, row.version),
        (at(8, 51), 1, 1)
    );
    let row = must(&r1, "1h", at(10, 0), "all", "all");
    assert_eq!(
        (row.start, row.kpis.touchpoints, row.kpis.customers),
        (at(9, 0), 1, 1)
    );
    // 3h [ceil(07:00, h) = 07:00, 10:00); 2d [ceil(04-29 10:00, day) = 04-30 00:00, 10:00).
    let row3 = must(&r1, "3h", at(10, 0), "all", "all");
    assert_eq!((row3.start, row3.kpis.touchpoints), (at(7, 0), 1));
    let row2d = must(&r1, "2d", at(10, 0), "all", "all");
    assert_eq!((row2d.start, row2d.kpis.touchpoints), (MAY1 - DAY_MS, 1));

    // W = 10:22 − 2 = 10:20: 1h ends 10:01 ..= 10:20, 3h ends 10:05 ..= 10:20.
    assert_eq!(
        k.ingest(&visit("c", at(10, 22), "c2")),
        IngestOutcome::Accepted { late: false }
    );
    let r2 = k.advance();
    // 1h [09:06, 10:06): 09:50 and 10:02 → 2 touchpoints, 2 updates (the version).
    let row = must(&r2, "1h", at(10, 6), "all", "all");
    assert_eq!((row.kpis.touchpoints, row.version), (2, 2));
    // 3h [ceil(07:15, h) = 08:00, 10:15): 09:50 and 10:02.
    let r3h = must(&r2, "3h", at(10, 15), "all", "all");
    assert_eq!((r3h.start, r3h.kpis.touchpoints), (at(8, 0), 2));
    assert!(
        find(&r2, "1h", at(10, 0), "all", "all").is_none(),
        "10:00 was emitted already and nothing in it changed"
    );
    assert!(
        r2.iter().all(|r| &*r.window != "2d"),
        "10:30 is not reached"
    );
    let v_1020 = must(&r2, "1h", at(10, 20), "all", "all").version;
    assert_eq!(v_1020, 2);

    // A late visit at 10:05: wm = 10:20, 10:05 ≥ 10:20 − 30 min → accepted, late.
    assert_eq!(
        k.ingest(&visit("d", at(10, 5), "c3")),
        IngestOutcome::Accepted { late: true }
    );
    let r3 = k.advance();
    // 1h [09:06, 10:06) now holds 09:50, 10:02 and 10:05 → 3 touchpoints, 2 customers (c1, c3),
    // 3 updates.
    let row = must(&r3, "1h", at(10, 6), "all", "all");
    assert_eq!(
        (row.kpis.touchpoints, row.kpis.customers, row.version),
        (3, 2, 3)
    );
    // 1h [09:20, 10:20): 09:50, 10:02, 10:05 → 3 (10:22 is after the end); version 2 → 3.
    let row = must(&r3, "1h", at(10, 20), "all", "all");
    assert_eq!((row.kpis.touchpoints, row.version), (3, 3));
    assert!(row.version > v_1020);
    // Re-emitted for (all, all): every emitted window containing minute 10:05:
    //   1h ends 10:06 ..= 10:20 (ends ≤ 10:05 do not contain it), 3h ends 10:10, 10:15, 10:20;
    //   no 2d window containing it ends by F = 10:20.
    let mut want = ends("1h", (10, 6), (10, 20), 1);
    want.extend(ends("3h", (10, 10), (10, 20), 5));
    assert_eq!(all_all_windows(&r3), windows(&want));
    let s = k.engine.stats();
    assert_eq!(
        (s.accepted, s.late, s.duplicates, s.rejected_too_late),
        (4, 1, 0, 0)
    );
}

/// A longer window whose extra span holds no pane of the series takes the shorter window's
/// row and shares its state (the sink reads the same parts, no copy); one whose extra span
/// holds a pane gets a state of its own.
#[test]
fn kat_windows_covering_the_same_panes_share_one_state() {
    let mut k = Kat::new();
    k.ingest(&visit("a", at(9, 50), "c1"));
    k.ingest(&visit("b", at(10, 2), "c1"));
    let r1 = k.advance();
    // 1h [09:00, 10:00), 3h [07:00, 10:00), 2d [04-30, 10:00): each holds only 09:50.
    let one = must(&r1, "1h", at(10, 0), "all", "all");
    for window in ["3h", "2d"] {
        let longer = must(&r1, window, at(10, 0), "all", "all");
        assert!(Arc::ptr_eq(&one.state, &longer.state), "{window} copies 1h");
        assert_eq!(longer.kpis, longer.state.snapshot());
        assert_eq!(longer.kpis.touchpoints, 1);
    }

    let mut k = Kat::new();
    k.ingest(&visit("z", at(7, 30), "c0"));
    k.ingest(&visit("a", at(9, 50), "c1"));
    k.ingest(&visit("b", at(10, 2), "c1"));
    let r1 = k.advance();
    // 07:30 lies in the 3h and 2d windows ending 10:00, not in the 1h one.
    let one = must(&r1, "1h", at(10, 0), "all", "all");
    let three = must(&r1, "3h", at(10, 0), "all", "all");
    let two_days = must(&r1, "2d", at(10, 0), "all", "all");
    assert!(!Arc::ptr_eq(&one.state, &three.state));
    assert_eq!((one.kpis.touchpoints, three.kpis.touchpoints), (1, 2));
    assert_eq!(three.kpis, three.state.snapshot());
    // 2d's extra span over 3h holds no pane: it shares the 3h state.
    assert!(Arc::ptr_eq(&three.state, &two_days.state));
}

/// The first advance emits every window since the earliest data; a late event earlier than
/// all data seen then gets its windows emitted too (they were never emitted before).
#[test]
fn kat_late_event_before_all_data_at_first_advance_emits_its_windows() {
    let mut k = Kat::new();
    k.ingest(&visit("a", at(10, 0), "c1"));
    k.ingest(&visit("b", at(10, 10), "c1")); // W = 10:08
    let r1 = k.advance();
    // F = 10:08, F_prev = 10:00 (earliest data): 1h ends 10:01 ..= 10:08, 3h 10:05; no 2d end
    // (30 min grid) in (10:00, 10:08].
    let mut want = ends("1h", (10, 1), (10, 8), 1);
    want.push(("3h", at(10, 5)));
    assert_eq!(all_all_windows(&r1), windows(&want));
    // A late visit at 09:45 (≥ 10:08 − 30 min), before everything seen at the first advance.
    assert_eq!(
        k.ingest(&visit("c", at(9, 45), "c2")),
        IngestOutcome::Accepted { late: true }
    );
    let r2 = k.advance();
    // Every window ending by F = 10:08 that contains 09:45: 1h ends 09:46 ..= 10:08 (09:46 ..=
    // 10:00 never emitted before), 3h ends 09:50 ..= 10:05, and the 2d window ending 10:00
    // (never emitted before).
    let mut want = ends("1h", (9, 46), (10, 8), 1);
    want.extend(ends("3h", (9, 50), (10, 5), 5));
    want.push(("2d", at(10, 0)));
    assert_eq!(all_all_windows(&r2), windows(&want));
    let row = must(&r2, "1h", at(9, 46), "all", "all");
    assert_eq!(
        (row.start, row.kpis.touchpoints, row.version),
        (at(8, 46), 1, 1)
    );
    // [09:00, 10:00): 09:45 only; [09:08, 10:08): 09:45 and 10:00.
    assert_eq!(must(&r2, "1h", at(10, 0), "all", "all").kpis.touchpoints, 1);
    let row = must(&r2, "1h", at(10, 8), "all", "all");
    assert_eq!(
        (row.kpis.touchpoints, row.kpis.customers, row.version),
        (2, 2, 2)
    );
    let row = must(&r2, "2d", at(10, 0), "all", "all");
    assert_eq!((row.start, row.kpis.touchpoints), (MAY1 - DAY_MS, 1));
}

#[test]
fn kat_event_beyond_horizon_is_rejected() {
    let mut k = Kat::new();
    k.ingest(&visit("a", at(10, 0), "c1"));
    k.ingest(&visit("b", at(10, 22), "c1")); // wm = 10:20, horizon 30 min → floor 09:50.
    k.advance();
    let too_old = visit("old", at(9, 50) - 1, "c1");
    assert_eq!(k.ingest(&too_old), rejected(at(9, 50) - 1, at(10, 20)));
    // Exactly the floor is still accepted (late).
    assert_eq!(
        k.ingest(&visit("edge", at(9, 50), "c1")),
        IngestOutcome::Accepted { late: true }
    );
    let rows = k.advance();
    // [09:20, 10:20): 09:50 and 10:00 (the rejected 09:49:59.999 is not counted).
    let row = must(&rows, "1h", at(10, 20), "all", "all");
    assert_eq!((row.kpis.touchpoints, row.version), (2, 2));
    let s = k.engine.stats();
    assert_eq!((s.accepted, s.late, s.rejected_too_late), (3, 1, 1));
}

#[test]
fn kat_duplicate_counted_once() {
    let mut k = Kat::new();
    let purchase = touch(
        "p1",
        at(10, 0),
        "c1",
        "retail",
        Channel::Web,
        TouchpointKind::Purchase,
        None,
        Some((125_000, "EUR")),
    );
    assert_eq!(k.ingest(&purchase), IngestOutcome::Accepted { late: false });
    k.ingest(&visit("v", at(10, 5), "c1"));
    assert_eq!(
        k.ingest(&purchase),
        IngestOutcome::Duplicate,
        "same id, same source"
    );
    k.ingest(&visit("w", at(10, 12), "c1")); // wm = 10:10
    assert_eq!(
        k.ingest(&purchase),
        IngestOutcome::Duplicate,
        "late copy, still above the floor"
    );
    let rows = k.advance();
    // [09:10, 10:10): purchase 10:00 + visit 10:05 = 2 touchpoints, 1 purchase, 12.5000 EUR,
    // 2 updates.
    let row = must(&rows, "1h", at(10, 10), "all", "all");
    assert_eq!(
        (row.kpis.touchpoints, row.kpis.purchases, row.version),
        (2, 1, 2)
    );
    assert_eq!(row.kpis.revenue.len(), 1);
    assert_eq!(
        (
            row.kpis.revenue[0].currency.as_str(),
            row.kpis.revenue[0].amount.as_str(),
            row.kpis.revenue[0].count
        ),
        ("EUR", "12.5000", 1)
    );
    let s = k.engine.stats();
    assert_eq!((s.accepted, s.duplicates), (3, 2));
}

/// Ids are remembered per event-time minute until that minute is entirely below the
/// source's floor: a copy above the floor in a partly expired minute is still a duplicate.
/// The same id in another minute is a different event.
#[test]
fn kat_duplicate_in_partly_expired_minute() {
    let mut k = Kat::new();
    let x = visit("x", at(10, 0) + 45_000, "c1"); // 10:00:45
    assert_eq!(k.ingest(&x), IngestOutcome::Accepted { late: false });
    // wm = 10:32:30 − 2 min = 10:30:30; floor = 10:00:30: minute 10:00 is partly behind it.
    k.ingest(&visit("y", at(10, 32) + 30_000, "c1"));
    let r1 = k.advance(); // F = 10:30: 1h [09:30, 10:30) holds x only.
    assert_eq!(
        must(&r1, "1h", at(10, 30), "all", "all").kpis.touchpoints,
        1
    );
    // 10:00:45 ≥ 10:00:30: not rejected; same id, same minute, already accepted → duplicate.
    assert_eq!(k.ingest(&x), IngestOutcome::Duplicate);
    // A copy stamped 10:00:15 is behind the floor: rejected by rule 1.
    let mut early = x.clone();
    if let CxEvent::Touchpoint(e) = &mut early {
        e.occurred_at = at(10, 0) + 15_000;
    }
    assert!(matches!(k.ingest(&early), IngestOutcome::Rejected(_)));
    let r2 = k.advance();
    if let Some(row) = find(&r2, "1h", at(10, 30), "all", "all") {
        assert_eq!(row.kpis.touchpoints, 1, "x counted once");
    }
    // The same id stamped in another minute (10:05) is another event: accepted, late.
    let mut other_minute = x.clone();
    if let CxEvent::Touchpoint(e) = &mut other_minute {
        e.occurred_at = at(10, 5);
    }
    assert_eq!(
        k.ingest(&other_minute),
        IngestOutcome::Accepted { late: true }
    );
    let r3 = k.advance();
    let row = must(&r3, "1h", at(10, 30), "all", "all");
    assert_eq!((row.kpis.touchpoints, row.version), (2, 2));
    let s = k.engine.stats();
    assert_eq!((s.accepted, s.duplicates, s.rejected_too_late), (3, 1, 1));
}

#[test]
fn kat_case_join_retracts_first_response() {
    let mut k = Kat::new();
    let case = |id: &str, t: Millis, ch: Channel, kind: TouchpointKind| {
        touch(id, t, "c1", "smb", ch, kind, Some("case-1"), None)
    };
    k.ingest(&case(
        "open",
        at(10, 0),
        Channel::Phone,
        TouchpointKind::ContactOpened,
    ));
    // W = 09:58: F_prev = min(earliest data 10:00, F − 1 ms); the window ending 09:58 is empty.
    let r0 = k.advance();
    assert!(r0.is_empty());
    k.ingest(&case(
        "reply30",
        at(10, 30),
        Channel::Chat,
        TouchpointKind::AgentReplied,
    ));
    k.ingest(&visit("push", at(10, 40), "c9")); // W = 10:38
    let r1 = k.advance(); // ends 09:59 ..= 10:38
                          // [09:31, 10:31): open 10:00 and reply 10:30 → FRT 30 min at 10:30, in the open's series;
                          // 2 updates there (the open, the duration).
    let row = must(&r1, "1h", at(10, 31), "phone", "smb");
    assert_eq!(
        (row.kpis.contacts, row.kpis.first_response.n, row.version),
        (1, 1, 2)
    );
    let v1 = row.version;
    let p50 = row.kpis.first_response.p50_ms.expect("one duration");
    assert!(
        (p50 - 1_800_000.0).abs() <= 18_000.0,
        "30 min ±1 %, got {p50}"
    );
    assert_eq!(
        row.kpis.first_response.within_target, 1,
        "30 min ≤ 1 h target"
    );
    // The reply itself was on chat: its touchpoint is there, the duration is not.
    let chat = must(&r1, "1h", at(10, 31), "chat", "smb");
    assert_eq!((chat.kpis.touchpoints, chat.kpis.first_response.n), (1, 0));
    // [09:25, 10:25): the open only.
    assert_eq!(
        must(&r1, "1h", at(10, 25), "phone", "smb")
            .kpis
            .first_response
            .n,
        0
    );

    // A reply at 10:20 arrives later: 10:20 ≥ floor 10:08 → accepted (late). The first reply
    // becomes 10:20: the 30 min contribution at 10:30 is retracted, 20 min added at 10:20.
    assert_eq!(
        k.ingest(&case(
            "reply20",
            at(10, 20),
            Channel::Chat,
            TouchpointKind::AgentReplied
        )),
        IngestOutcome::Accepted { late: true }
    );
    let r2 = k.advance();
    // phone/smb [09:31, 10:31): open, +30 min, −30 min, +20 min = 4 updates.
    let row = must(&r2, "1h", at(10, 31), "phone", "smb");
    assert_eq!(row.kpis.first_response.n, 1, "retracted, not added twice");
    assert_eq!(
        row.version, 4,
        "version = updates in the window: the open, +30 min, −30 min, +20 min (the advance \
         before emitted version {v1} with the 30 min duration; an equal version must not carry \
         other content)"
    );
    let p50 = row.kpis.first_response.p50_ms.expect("one duration");
    assert!(
        (p50 - 1_200_000.0).abs() <= 12_000.0,
        "20 min ±1 %, got {p50}"
    );
    // [09:25, 10:25) now holds the 20 min response at 10:20 (open + duration: 2 updates).
    let row = must(&r2, "1h", at(10, 25), "phone", "smb");
    assert_eq!((row.kpis.first_response.n, row.version), (1, 2));
    // [09:38, 10:38) for (all, all): open 10:00 + replies 10:20, 10:30 = 3 touchpoints (the
    // 10:40 visit is outside), 1 contact, FRT n = 1; 3 events + 3 duration updates.
    let all = must(&r2, "1h", at(10, 38), "all", "all");
    assert_eq!(
        (
            all.kpis.touchpoints,
            all.kpis.contacts,
            all.kpis.first_response.n,
            all.version
        ),
        (3, 1, 1, 6)
    );
}

/// A case event of customer c1 (phone, smb).
fn phone_case(id: &str, t: Millis, kind: TouchpointKind, case_id: &str) -> CxEvent {
    touch(
        id,
        t,
        "c1",
        "smb",
        Channel::Phone,
        kind,
        Some(case_id),
        None,
    )
}

/// A case keeps its first open for good: a second `contact_opened` of the same case, arriving
/// after the case's first reply and resolution are far behind the floor, is one more contact,
/// not a new case; later replies / resolutions are not first ones and add nothing.
#[test]
fn kat_second_open_of_a_settled_case_is_not_a_new_case() {
    let mut k = Kat::new(); // horizon 30 min, case TTL 3 h, target 1 h
    let case = |id: &str, t: Millis, kind: TouchpointKind| phone_case(id, t, kind, "case-7");
    k.ingest(&case("open1", at(5, 0), TouchpointKind::ContactOpened));
    k.ingest(&case("reply1", at(5, 5), TouchpointKind::AgentReplied)); // FRT 5 min at 05:05
    k.ingest(&case("res1", at(5, 10), TouchpointKind::CaseResolved)); // resolution 10 min at 05:10
    k.ingest(&visit("v1", at(7, 10), "c9")); // wm = 07:08, floor = 06:38
    k.advance();
    // Same case, opened again at 07:12 (2 h 12 min after the first open, inside the TTL).
    assert_eq!(
        k.ingest(&case("open2", at(7, 12), TouchpointKind::ContactOpened)),
        IngestOutcome::Accepted { late: false }
    );
    k.ingest(&case("reply2", at(7, 30), TouchpointKind::AgentReplied));
    k.ingest(&case("res2", at(8, 0), TouchpointKind::CaseResolved));
    k.ingest(&visit("v2", at(9, 2), "c9")); // W = 09:00
    let rows = k.advance();
    // 3h [06:00, 09:00), phone/smb: open2, reply2, res2 = 3 touchpoints, 1 contact, 3 updates.
    // The case's open is still 05:00 (smallest time), its first reply 05:05 and resolution
    // 05:10: no duration lies in this window.
    let row = must(&rows, "3h", at(9, 0), "phone", "smb");
    assert_eq!(
        (row.kpis.touchpoints, row.kpis.contacts, row.version),
        (3, 1, 3)
    );
    assert_eq!(
        (row.kpis.first_response.n, row.kpis.resolution.n),
        (0, 0),
        "reply2 / res2 are not the case's first reply / resolution: {:?} / {:?}",
        row.kpis.first_response,
        row.kpis.resolution
    );
}

/// Closed loop: detractors become due as soon as the partition's touchpoint floor passes their
/// deadline; a closing contact after that is behind the floor and rejected.
#[test]
fn kat_detractor_followed_up_in_time_or_not() {
    let mut k = Kat::new(); // follow-up deadline 60 min
    k.ingest(&nps("n1", at(10, 0), "alice", 3)); // detractor, deadline 11:00
    k.ingest(&nps("n2", at(10, 0), "bob", 6)); // detractor, deadline 11:00
    k.ingest(&nps("n3", at(10, 0), "carol", 7)); // passive: no follow-up due
    assert!(k.advance().is_empty()); // W = 09:58 (the survey source alone)
    k.ingest(&outbound("o1", "alice", at(10, 40))); // in [10:00, 11:00] → closes n1
    k.ingest(&outbound("o2", "bob", at(11, 10))); // after bob's deadline
                                                  // Touchpoint wm 11:38 > 11:00: both detractors are due now, at 11:00.
    k.ingest(&visit("v", at(11, 40), "dave"));
    k.ingest(&csat("s4", at(11, 40), "dave", 5)); // survey wm 11:38 → W = 11:38
    let rows = k.advance();
    // [10:01, 11:01) holds x = 11:00: due 2, closed 1 (alice), rate 0.5 — in the responses'
    // series (web/retail), not the outbound contacts' (email); one update per due detractor
    // and one per closed one.
    let row = must(&rows, "1h", at(11, 1), "web", "retail");
    assert_eq!(
        (
            row.kpis.closed_loop.due,
            row.kpis.closed_loop.closed,
            row.version
        ),
        (2, 1, 3)
    );
    assert_eq!(row.kpis.closed_loop.rate, Some(0.5));
    // [10:00, 11:00) does not contain 11:00; it holds the 3 responses and o1.
    let all = must(&rows, "1h", at(11, 0), "all", "all");
    assert_eq!((all.kpis.closed_loop.due, all.kpis.touchpoints), (0, 1));
    // 0 promoters, 1 passive, 2 detractors → NPS = 100·(0 − 2)/3 = −66.67.
    assert_eq!((all.kpis.nps.n, all.kpis.nps.detractors), (3, 2));
    assert!((all.kpis.nps.score.expect("n > 0") + 200.0 / 3.0).abs() < 1e-9);
    let email = must(&rows, "1h", at(11, 1), "email", "retail");
    assert_eq!(email.kpis.closed_loop.due, 0);

    // Bob's follow-up at 10:50 arrives now: behind the touchpoint floor (11:08) → rejected;
    // nothing changes.
    assert_eq!(
        k.ingest(&outbound("o3", "bob", at(10, 50))),
        rejected(at(10, 50), at(11, 38))
    );
    assert!(k.advance().is_empty());
}

/// A detractor falls due as soon as the touchpoint watermark passes its deadline, before the
/// windows that hold the deadline are emitted: falling due corrects nothing. A closing
/// contact that arrives later, late but inside the horizon, corrects the rows holding the
/// deadline (one more update), whatever the order of the two sources.
#[test]
fn kat_detractor_due_at_the_watermark_and_closed_by_a_late_contact() {
    let mut k = Kat::new(); // follow-up deadline 60 min, lateness 2 min, horizon 30 min
    k.ingest(&nps("n1", at(10, 0), "alice", 2)); // deadline 11:00
    k.ingest(&visit("v1", at(10, 30), "dave"));
    k.ingest(&csat("s1", at(10, 30), "dave", 4)); // W = 10:28
    k.advance();
    let corrections = k.engine.stats().corrections_emitted;
    // Touchpoint wm 11:01 > 11:00: due now, not closed; floor 10:31.
    k.ingest(&visit("v2", at(11, 3), "dave"));
    k.ingest(&csat("s2", at(11, 3), "dave", 5)); // W = 11:01
    let rows = k.advance();
    let row = must(&rows, "1h", at(11, 1), "web", "retail");
    assert_eq!(
        (row.kpis.closed_loop.due, row.kpis.closed_loop.closed),
        (1, 0)
    );
    // The deadline (11:00) was not behind the frontier (10:28) when it fell due.
    assert_eq!(k.engine.stats().corrections_emitted, corrections);
    let version = row.version;
    // Alice's follow-up at 10:45 arrives now: late, but after the floor (10:31) → accepted,
    // and it closes her detractor at 11:00.
    assert_eq!(
        k.ingest(&outbound("o1", "alice", at(10, 45))),
        IngestOutcome::Accepted { late: true }
    );
    // (due, closed, version) of the 1-hour window holding the deadline.
    let deadline_row = |rows: &[KpiRow]| {
        let row = must(rows, "1h", at(11, 1), "web", "retail");
        let loop_ = &row.kpis.closed_loop;
        (loop_.due, loop_.closed, row.version)
    };
    assert_eq!(deadline_row(&k.advance()), (1, 1, version + 1));
    assert!(k.engine.stats().corrections_emitted > corrections);
    // The same records with the contact first: the same row, the same version.
    let mut first = Kat::new();
    for ev in [
        nps("n1", at(10, 0), "alice", 2),
        visit("v1", at(10, 30), "dave"),
        csat("s1", at(10, 30), "dave", 4),
        outbound("o1", "alice", at(10, 45)),
        visit("v2", at(11, 3), "dave"),
        csat("s2", at(11, 3), "dave", 5),
    ] {
        first.ingest(&ev);
    }
    assert_eq!(deadline_row(&first.advance()), (1, 1, version + 1));
}

/// What a partition keeps for joins is forgotten exactly when its floor passes it: an
/// outbound contact once the survey floor passes it, a due detractor once the touchpoint
/// floor passes its deadline, an aged case once the floor passes its open + TTL (counted
/// when it was never answered). The engine looks only at what the floor passed (queues, not
/// sweeps), so these check that each queue holds every entry.
#[test]
fn kat_state_is_forgotten_once_the_floor_passes_it() {
    let mut k = Kat::new(); // lateness 2 min, horizon 30 min, case TTL 3 h, follow-up 60 min
    use TouchpointKind::{AgentReplied, CaseResolved, ContactOpened};
    k.ingest(&phone_case("a-open", at(5, 0), ContactOpened, "A")); // settles at once
    k.ingest(&phone_case("a-reply", at(5, 5), AgentReplied, "A"));
    k.ingest(&phone_case("a-res", at(5, 10), CaseResolved, "A"));
    k.ingest(&phone_case("b-open", at(5, 0), ContactOpened, "B")); // never answered
    k.ingest(&phone_case("c-open", at(5, 0), ContactOpened, "C")); // answered, never resolved
    k.ingest(&phone_case("c-reply", at(5, 20), AgentReplied, "C"));
    k.ingest(&phone_case("d-open", at(5, 0), ContactOpened, "D")); // resolved once aged
    k.ingest(&phone_case("d-reply", at(5, 5), AgentReplied, "D"));
    k.ingest(&nps("n-alice", at(5, 0), "alice", 2)); // deadline 06:00, closed at 05:30
    k.ingest(&outbound("o-alice", "alice", at(5, 30)));
    k.ingest(&nps("n-bob", at(5, 0), "bob", 4)); // deadline 06:00, never closed
    k.ingest(&outbound("o-carol", "carol", at(5, 0))); // no detractor
    let step = |k: &mut Kat, h: i64, m: i64| {
        k.ingest(&visit(&format!("v{h}:{m}"), at(h, m), "zed"));
        k.ingest(&csat(&format!("s{h}:{m}"), at(h, m), "zed", 5));
        k.advance();
        k.engine.stats()
    };
    // A restored engine rebuilds what it is to forget from the checkpoint (here: the
    // outbound contacts; below: the due detractors and the aged cases).
    k.restore();
    // Floors 05:59: the outbound contacts (05:00, 05:30) are behind the survey floor, the
    // deadlines (06:00) not yet behind the touchpoint floor: alice and bob are kept.
    assert_eq!(step(&mut k, 6, 31).follow_up_customers, 2);
    k.restore();
    // Floors 06:01: both detractors' deadlines are behind it.
    let s = step(&mut k, 6, 33);
    assert_eq!(s.follow_up_customers, 0);
    assert_eq!(s.cases_expired_unanswered, 0);
    // D's resolution (accepted: the floor is 06:01) settles it once the floor passes 07:30.
    assert_eq!(
        k.ingest(&phone_case("d-res", at(7, 30), CaseResolved, "D")),
        IngestOutcome::Accepted { late: false }
    );
    step(&mut k, 8, 2);
    // Floor 07:59: B and C (opened 05:00, TTL 3 h) are not expired yet.
    let before = step(&mut k, 8, 31);
    assert_eq!(before.cases_expired_unanswered, 0);
    // Floor 08:01: they expire; B was never answered.
    let after = step(&mut k, 8, 33);
    assert_eq!(after.cases_expired_unanswered, 1);
    assert!(
        before.open_cases >= after.open_cases + 2,
        "B and C are forgotten: {} -> {} cases",
        before.open_cases,
        after.open_cases
    );
}

/// A detractor whose deadline already lies behind the touchpoint floor when it arrives (its
/// survey source lags) is due at once, and closed iff an accepted outbound contact of the
/// customer lies in [t, deadline] — however long ago that contact arrived.
#[test]
fn kat_detractor_arriving_after_its_deadline_passed_the_floor() {
    let mut k = Kat::new(); // follow-up deadline 60 min
    k.ingest(&outbound("o", "alice", at(10, 10)));
    k.ingest(&visit("v", at(12, 0), "eve")); // touchpoint wm 11:58, floor 11:28
    k.advance(); // W = 11:58 (the touchpoint source alone): windows up to 11:58 are emitted.
                 // The survey source's first records: accepted by their own (undefined, then 09:58) floor.
    assert_eq!(
        k.ingest(&nps("n1", at(10, 0), "alice", 3)),
        IngestOutcome::Accepted { late: false }
    );
    assert_eq!(
        k.ingest(&nps("n2", at(10, 5), "bob", 4)),
        IngestOutcome::Accepted { late: false }
    );
    let rows = k.advance();
    // alice: deadline 11:00 < 11:28 → due at once, closed by the 10:10 contact.
    // [10:01, 11:01) web/retail: n2 (10:05) and alice's due at 11:00.
    let row = must(&rows, "1h", at(11, 1), "web", "retail");
    assert_eq!(
        (
            row.kpis.nps.n,
            row.kpis.closed_loop.due,
            row.kpis.closed_loop.closed
        ),
        (1, 1, 1),
        "alice's detractor is due and closed"
    );
    // bob: deadline 11:05 < 11:28 → due, no contact → not closed. [10:06, 11:06): both dues.
    let row = must(&rows, "1h", at(11, 6), "web", "retail");
    assert_eq!(
        (row.kpis.closed_loop.due, row.kpis.closed_loop.closed),
        (2, 1)
    );
    assert_eq!(row.kpis.closed_loop.rate, Some(0.5));
}

/// The survey source of a partition lags far behind its touchpoint source: its events are
/// accepted or rejected by its own floor (not the touchpoints'), and it holds the job
/// watermark back.
#[test]
fn kat_survey_source_lagging_its_touchpoints() {
    let mut k = Kat::new(); // lateness 2 min, horizon 30 min
    assert_eq!(
        k.ingest(&visit("v1", at(10, 10), "c1")),
        IngestOutcome::Accepted { late: false }
    ); // W = 10:08
    let s1 = nps("s1", at(10, 0), "c2", 10);
    assert_eq!(k.ingest(&s1), IngestOutcome::Accepted { late: false });
    // Touchpoints run ahead: touchpoint wm 13:58, floor 13:28; W stays 10:08.
    k.ingest(&visit("v2", at(14, 0), "c1"));
    // Surveys far behind the touchpoint floor are still accepted by the survey floor.
    assert_eq!(
        k.ingest(&nps("s2", at(10, 30), "c3", 9)),
        IngestOutcome::Accepted { late: false }
    );
    assert_eq!(
        k.ingest(&csat("s3", at(11, 0), "c4", 5)),
        IngestOutcome::Accepted { late: false }
    ); // survey wm 10:58, floor 10:28; W = min(13:58, 10:58) = 10:58
    assert_eq!(
        k.ingest(&nps("s4", at(10, 20), "c5", 0)),
        rejected(at(10, 20), at(10, 58)),
        "below the survey floor"
    );
    assert_eq!(
        k.ingest(&nps("s5", at(10, 29), "c6", 8)),
        IngestOutcome::Accepted { late: true },
        "above the survey floor, behind the survey watermark"
    );
    assert_eq!(
        k.ingest(&visit("v3", at(10, 29), "c7")),
        rejected(at(10, 29), at(13, 58)),
        "the same time is below the touchpoint floor"
    );
    assert_eq!(
        k.ingest(&s1),
        rejected(at(10, 0), at(10, 58)),
        "a copy of s1, now below the survey floor: rule 1 first"
    );
    assert_eq!(
        k.ingest(&nps("s2", at(10, 30), "c3", 9)),
        IngestOutcome::Duplicate
    );
    let r1 = k.advance();
    assert_eq!(k.engine.watermark(), Some(at(10, 58)));
    assert!(r1.iter().all(|r| r.end <= at(10, 58)), "F = 10:58");
    // [09:31, 10:31): s1 10:00, v1 10:10, s5 10:29, s2 10:30 → 1 touchpoint, NPS 2 promoters
    // + 1 passive, 4 customers, 4 updates.
    let row = must(&r1, "1h", at(10, 31), "all", "all");
    assert_eq!(
        (
            row.kpis.touchpoints,
            row.kpis.nps.promoters,
            row.kpis.nps.passives,
            row.kpis.customers,
            row.version
        ),
        (1, 2, 1, 4, 4)
    );
    // The survey source catches up: W = 13:58.
    k.ingest(&csat("s6", at(14, 0), "c8", 2));
    let r2 = k.advance();
    assert_eq!(k.engine.watermark(), Some(at(13, 58)));
    // 3h [10:00, 13:00): s1, v1, s5, s2, s3.
    let row = must(&r2, "3h", at(13, 0), "all", "all");
    assert_eq!(
        (
            row.kpis.touchpoints,
            row.kpis.nps.n,
            row.kpis.csat.n,
            row.version
        ),
        (1, 3, 1, 5)
    );
    let s = k.engine.stats();
    assert_eq!(
        (s.accepted, s.late, s.duplicates, s.rejected_too_late),
        (7, 1, 1, 3)
    );
}

/// A restored engine remembers ids, floors and emitted windows.
#[test]
fn kat_checkpoint_restore_continues() {
    let mut k = Kat::new();
    let a = visit("a", at(10, 0), "c1");
    k.ingest(&a);
    k.ingest(&visit("b", at(10, 22), "c1")); // wm = 10:20, floor 09:50
    let r1 = k.advance();
    assert_eq!(
        must(&r1, "1h", at(10, 6), "all", "all").version,
        1,
        "[09:06, 10:06): a"
    );
    k.restore();
    assert_eq!(k.ingest(&a), IngestOutcome::Duplicate);
    assert_eq!(
        k.ingest(&visit("old", at(9, 49), "c1")),
        rejected(at(9, 49), at(10, 20))
    );
    assert_eq!(
        k.ingest(&visit("c", at(10, 5), "c2")),
        IngestOutcome::Accepted { late: true }
    );
    let r2 = k.advance();
    // Corrections of windows emitted before the restore: [09:06, 10:06) now a and c.
    let row = must(&r2, "1h", at(10, 6), "all", "all");
    assert_eq!(
        (row.kpis.touchpoints, row.kpis.customers, row.version),
        (2, 2, 2)
    );
    assert!(r2.iter().all(|r| r.end >= at(10, 6) && r.end <= at(10, 20)));
}

/// A survey source that first delivers after the job watermark passed its event times (or
/// comes back from idleness) is accepted by its own floor; the windows its events land in
/// are corrected with everything else they hold — including older data of the same minutes
/// and hours that the frontier passed long ago.
#[test]
fn kat_source_behind_the_frontier_corrects_with_all_data() {
    let mut k = Kat::new(); // lateness 2 min, horizon 30 min
    k.ingest(&visit("a", at(11, 28), "c0")); // touchpoints alone: W = 11:26
    assert_eq!(
        k.ingest(&csat("s1", at(8, 5) + 30_000, "c4", 3)),
        IngestOutcome::Accepted { late: false },
        "the survey source's first record"
    ); // survey wm 08:03:30, floor 07:33:30; W stays 11:26
    let r1 = k.advance(); // F = 11:26: every window since 08:05
    let row = must(&r1, "1h", at(8, 40), "all", "all");
    assert_eq!((row.kpis.csat.n, row.version), (1, 1));
    assert_eq!(
        k.ingest(&csat("s2", at(8, 39) + 45_000, "c11", 1)),
        IngestOutcome::Accepted { late: false },
        "above the survey floor and watermark"
    );
    let r2 = k.advance();
    // [07:40, 08:40): s1 (08:05:30) and s2 (08:39:45).
    let row = must(&r2, "1h", at(8, 40), "all", "all");
    assert_eq!(
        (row.kpis.csat.n, row.kpis.customers, row.version),
        (2, 2, 2),
        "{:?}",
        row.kpis.csat
    );
    // 3h [06:00, 08:40) likewise; the calendar day is not over.
    let row = must(&r2, "3h", at(8, 40), "all", "all");
    assert_eq!((row.kpis.csat.n, row.version), (2, 2));
}

/// An engine holding several partitions merges their panes into one row, so a partition's
/// panes are kept while another partition's source could still correct their windows:
/// here partition 0's survey source first delivers hours behind partition 1, and the
/// windows it corrects still hold partition 1's data (found by `checkpoint_restore_is_invisible`:
/// the re-emitted totals lost the other partition's minutes, with a lower version).
#[test]
fn kat_lagging_source_of_one_partition_corrects_with_the_others_data() {
    let mut k = Kat::new(); // lateness 2 min, horizon 30 min
    let on = |k: &mut Kat, partition: i32, ev: &CxEvent| {
        k.now += 1;
        k.engine.ingest(partition, ev, k.now)
    };
    // Partition 1: both sources, data at 06:00 and 11:28.
    on(&mut k, 1, &visit("p1a", at(6, 0), "c1"));
    on(&mut k, 1, &csat("p1s", at(6, 0) + 10_000, "c1", 5));
    on(&mut k, 1, &visit("p1b", at(11, 28), "c1"));
    on(&mut k, 1, &csat("p1t", at(11, 28), "c1", 5));
    // Partition 0: touchpoints only, so far.
    on(&mut k, 0, &visit("p0a", at(11, 28), "c2"));
    let r1 = k.advance(); // F = 11:26
    let row = must(&r1, "1h", at(6, 41), "all", "all");
    assert_eq!((row.kpis.csat.n, row.version), (1, 2));
    // Partition 0's survey source delivers its first record, 4 h 48 min behind.
    assert_eq!(
        on(&mut k, 0, &csat("p0s", at(6, 40), "c2", 2)),
        IngestOutcome::Accepted { late: false },
        "a source's first record"
    );
    let r2 = k.advance();
    // [05:41, 06:41): partition 1's visit and response at 06:00, partition 0's at 06:40.
    let row = must(&r2, "1h", at(6, 41), "all", "all");
    assert_eq!(
        (
            row.kpis.csat.n,
            row.kpis.csat.satisfied,
            row.kpis.touchpoints,
            row.version
        ),
        (2, 1, 1, 3),
        "{row:?}"
    );
}

/// A correction that leaves a window with nothing in it re-emits the window as an empty row
/// with a higher version, so that it replaces the row emitted before (found by
/// `replay_interleaving_is_invisible`: the emptied window was skipped, and the sink kept a
/// first-response duration that had moved to an earlier reply).
#[test]
fn kat_correction_that_empties_a_window_emits_an_empty_row() {
    let mut k = Kat::new(); // lateness 2 min, horizon 30 min
    let case = |id: &str, t: Millis, ch: Channel, kind: TouchpointKind| {
        touch(id, t, "c1", "smb", ch, kind, Some("case-1"), None)
    };
    k.ingest(&csat("s1", at(12, 0), "c4", 5)); // the survey source alone: W = 11:58
    k.advance();
    // The touchpoint source starts behind the frontier (its first record is accepted
    // whatever its time; then its own floor applies): its events correct emitted windows.
    k.ingest(&case(
        "open",
        at(10, 0),
        Channel::Phone,
        TouchpointKind::ContactOpened,
    ));
    k.ingest(&case(
        "r50",
        at(10, 50),
        Channel::Chat,
        TouchpointKind::AgentReplied,
    ));
    let r1 = k.advance();
    // phone/smb [10:45, 11:45): the 50 min first response at 10:50, not the open.
    let row = must(&r1, "1h", at(11, 45), "phone", "smb");
    assert_eq!(
        (row.kpis.contacts, row.kpis.first_response.n, row.version),
        (0, 1, 1)
    );
    assert!(matches!(
        k.ingest(&case(
            "r42",
            at(10, 42),
            Channel::Chat,
            TouchpointKind::AgentReplied
        )),
        IngestOutcome::Accepted { .. }
    ));
    let r2 = k.advance();
    // The first response moved to 10:42, out of [10:45, 11:45): −50 min there.
    let row = must(&r2, "1h", at(11, 45), "phone", "smb");
    assert_eq!((row.kpis.first_response.n, row.version), (0, 2));
    assert!(is_zero(&row.kpis), "{:?}", row.kpis);
    // [09:43, 10:43) holds the open and the 42 min response at 10:42.
    let row = must(&r2, "1h", at(10, 43), "phone", "smb");
    assert_eq!(
        (row.kpis.contacts, row.kpis.first_response.n, row.version),
        (1, 1, 2)
    );
}
