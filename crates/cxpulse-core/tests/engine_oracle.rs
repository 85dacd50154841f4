//! The KPI window engine against a naive oracle written from `docs/windows.md` alone.
//!
//! The oracle never looks at panes, tiers or incremental state: it replays the watermark
//! rules over the list of raw events to classify each one (rejected / duplicate / accepted),
//! derives every contribution `(x, series, what)` from the final set of accepted events
//! (cases, closed-loop dues), and recomputes every window that must have been emitted with
//! plain loops. The engine's latest row version per (window, end, channel, segment) must equal
//! that recomputation.
//!
//! Two parts:
//! * property tests over random 1–3-partition streams spread over 1–3 days (late events,
//!   events beyond the horizon, exact duplicates and same-id redeliveries, case joins with
//!   replies before the open and several opens per case, folded segments, closed-loop
//!   follow-ups), in UTC and with a non-zero local offset (+3:30 / −5:30);
//! * hand-computed known-answer scenarios (`kat_*`).
//!
//! A failing property prints the differing rows and fields and, for a small minimized input,
//! the full list of calls. `PROPTEST_CASES`, `PROPTEST_MAX_SHRINK_TIME` (ms) and
//! `PROPTEST_MAX_SHRINK_ITERS` override the defaults (64 cases, 1 min of shrinking); the first
//! failing input is also delta-debugged (≤ 1 min) into a short list of calls.

use cxpulse_core::kpi::{KpiSnapshot, ResponseTimeSnapshot, Z95};
use cxpulse_core::window::{Tier, WindowSpec};
use cxpulse_core::{
    Amount, Channel, CxEvent, EngineConfig, EngineStats, IngestOutcome, KpiEngine, KpiRow, Millis,
    SurveyMetric, SurveyResponse, TooLate, TouchpointEvent, TouchpointKind, DAY_MS, HOUR_MS,
    MINUTE_MS,
};
use proptest::prelude::*;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::BTreeMap;
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
fn config(k: &Knobs) -> EngineConfig {
    EngineConfig {
        windows: vec![
            WindowSpec::new("1h", HOUR_MS, Tier::Minute, MINUTE_MS),
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

fn fmt_t(t: Millis) -> String {
    let day = t.div_euclid(DAY_MS);
    let r = t.rem_euclid(DAY_MS);
    format!(
        "{t} (d{day} {:02}:{:02}:{:02}.{:03}Z)",
        r / HOUR_MS,
        (r % HOUR_MS) / MINUTE_MS,
        (r % MINUTE_MS) / 1000,
        r % 1000
    )
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
// Local time (docs/windows.md "Time"), written out independently
// ---------------------------------------------------------------------------------------------

fn floor_local(t: Millis, len: Millis, off_ms: Millis) -> Millis {
    (t + off_ms).div_euclid(len) * len - off_ms
}

fn ceil_local(t: Millis, len: Millis, off_ms: Millis) -> Millis {
    let f = floor_local(t, len, off_ms);
    if f == t {
        t
    } else {
        f + len
    }
}

fn tier_len(t: Tier) -> Millis {
    match t {
        Tier::Minute => MINUTE_MS,
        Tier::Hour => HOUR_MS,
        Tier::Day => DAY_MS,
    }
}

// ---------------------------------------------------------------------------------------------
// The schedule of calls
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Ingest(usize),
    Advance,
}

/// A stream in arrival order: (partition, event).
type Stream = Vec<(i32, CxEvent)>;

// ---------------------------------------------------------------------------------------------
// Oracle, part 1: acceptance, watermarks, duplicates, segments
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    Accepted { late: bool },
    Duplicate,
    Rejected { watermark: Millis },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counts {
    accepted: u64,
    late: u64,
    duplicates: u64,
    rejected: u64,
    folded: u64,
}

struct Classified {
    /// Per stream index (every index is ingested exactly once).
    expect: Vec<Option<Expect>>,
    /// Segment label (after the guard) of every accepted stream index.
    seg_label: Vec<Option<String>>,
    /// Accepted stream indices in arrival order.
    accepted: Vec<usize>,
    /// The job watermark `W` as it stands at each `advance`, in call order.
    adv_w: Vec<Option<Millis>>,
    counts: Counts,
}

fn classify(cfg: &EngineConfig, stream: &Stream, schedule: &[Step]) -> Classified {
    let lateness = cfg.allowed_lateness_ms;
    let horizon = cfg.correction_horizon_ms;
    // Partitions that delivered a record (all active: no idleness) → highest accepted time.
    let mut max_p: BTreeMap<i32, Option<Millis>> = BTreeMap::new();
    let mut w: Option<Millis> = None;
    // Ids already accepted, per partition and event-time minute.
    let mut ids: HashSet<(i32, String, Millis)> = HashSet::default();
    // The segment guard: presets first, then new names of accepted events in arrival order.
    let mut admitted: Vec<String> = Vec::new();
    for name in &cfg.preset_segments {
        if name != "all"
            && name != "other"
            && !admitted.contains(name)
            && admitted.len() < cfg.max_segments
        {
            admitted.push(name.clone());
        }
    }
    let mut out = Classified {
        expect: vec![None; stream.len()],
        seg_label: vec![None; stream.len()],
        accepted: Vec::new(),
        adv_w: Vec::new(),
        counts: Counts::default(),
    };
    // W = min over active partitions of (max_p − lateness); undefined while an active partition
    // has no accepted event; never decreases.
    let recompute = |max_p: &BTreeMap<i32, Option<Millis>>, w: Option<Millis>| -> Option<Millis> {
        if max_p.is_empty() || max_p.values().any(Option::is_none) {
            return w;
        }
        let m = max_p.values().flatten().copied().min().expect("non-empty") - lateness;
        Some(w.map_or(m, |prev| prev.max(m)))
    };
    for step in schedule {
        match *step {
            Step::Ingest(i) => {
                let (p, ev) = &stream[i];
                max_p.entry(*p).or_insert(None);
                let t = ev.event_time();
                if let Some(wv) = w {
                    if t < wv - horizon {
                        out.expect[i] = Some(Expect::Rejected { watermark: wv });
                        out.counts.rejected += 1;
                        continue;
                    }
                }
                if !ids.insert((*p, ev.id().to_string(), t.div_euclid(MINUTE_MS))) {
                    out.expect[i] = Some(Expect::Duplicate);
                    out.counts.duplicates += 1;
                    continue;
                }
                let late = w.is_some_and(|wv| t < wv);
                out.expect[i] = Some(Expect::Accepted { late });
                out.counts.accepted += 1;
                out.counts.late += u64::from(late);
                let name = ev.segment();
                let label = if name == "other" || admitted.iter().any(|a| a == name) {
                    name.to_string()
                } else if name != "all" && admitted.len() < cfg.max_segments {
                    admitted.push(name.to_string());
                    name.to_string()
                } else {
                    out.counts.folded += 1;
                    "other".to_string()
                };
                out.seg_label[i] = Some(label);
                out.accepted.push(i);
                let m = max_p.get_mut(p).expect("inserted above");
                *m = Some(m.map_or(t, |x| x.max(t)));
                w = recompute(&max_p, w);
            }
            Step::Advance => {
                w = recompute(&max_p, w);
                out.adv_w.push(w);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Oracle, part 2: contributions
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum What {
    /// Every event: its customer (interned index).
    Customer(u32),
    Touch {
        purchase: bool,
        contact: bool,
        revenue: Option<(String, i64)>,
    },
    Nps(i32),
    Csat(i32),
    Ces(i32),
    FirstResponse {
        ms: i64,
        within: bool,
    },
    Resolution {
        ms: i64,
        within: bool,
    },
    ClosedLoop {
        closed: bool,
    },
}

#[derive(Clone, Debug)]
struct Contrib {
    x: Millis,
    channel: Channel,
    segment: String,
    what: What,
}

fn contributions(cfg: &EngineConfig, stream: &Stream, cl: &Classified) -> Vec<Contrib> {
    let mut customers: HashMap<String, u32> = HashMap::default();
    let mut out = Vec::new();
    let label = |i: usize| {
        cl.seg_label[i]
            .clone()
            .expect("accepted events have a label")
    };
    for &i in &cl.accepted {
        let ev = &stream[i].1;
        let n = customers.len() as u32;
        let cust = *customers.entry(ev.customer_id().to_string()).or_insert(n);
        let base = |what: What| Contrib {
            x: ev.event_time(),
            channel: ev.channel(),
            segment: label(i),
            what,
        };
        out.push(base(What::Customer(cust)));
        match ev {
            CxEvent::Touchpoint(e) => {
                let purchase = e.kind == TouchpointKind::Purchase;
                let revenue = match (purchase, &e.amount, &e.currency) {
                    (true, Some(a), Some(c)) => Some((c.clone(), a.units)),
                    _ => None,
                };
                out.push(base(What::Touch {
                    purchase,
                    contact: e.kind == TouchpointKind::ContactOpened,
                    revenue,
                }));
            }
            CxEvent::Survey(r) => out.push(base(match r.metric {
                SurveyMetric::Nps => What::Nps(r.score),
                SurveyMetric::Csat => What::Csat(r.score),
                SurveyMetric::Ces => What::Ces(r.score),
                SurveyMetric::Unknown => unreachable!("not generated"),
            })),
        }
    }

    // Cases, per (partition, case_id), from the final set of accepted events.
    let mut cases: BTreeMap<(i32, String), Vec<usize>> = BTreeMap::new();
    for &i in &cl.accepted {
        if let (p, CxEvent::Touchpoint(e)) = &stream[i] {
            if let (true, Some(c)) = (e.kind.needs_case_id(), &e.case_id) {
                cases.entry((*p, c.clone())).or_default().push(i);
            }
        }
    }
    let tp = |i: usize| match &stream[i].1 {
        CxEvent::Touchpoint(e) => e,
        CxEvent::Survey(_) => unreachable!(),
    };
    for members in cases.values() {
        let Some(&open) = members
            .iter()
            .filter(|&&i| tp(i).kind == TouchpointKind::ContactOpened)
            .min_by(|&&a, &&b| {
                (tp(a).occurred_at, &tp(a).event_id).cmp(&(tp(b).occurred_at, &tp(b).event_id))
            })
        else {
            continue;
        };
        let open_t = tp(open).occurred_at;
        for (kind, is_reply) in [
            (TouchpointKind::AgentReplied, true),
            (TouchpointKind::CaseResolved, false),
        ] {
            let first = members
                .iter()
                .map(|&i| tp(i))
                .filter(|e| e.kind == kind && e.occurred_at >= open_t)
                .map(|e| e.occurred_at)
                .min();
            if let Some(at) = first {
                let ms = at - open_t;
                if ms <= cfg.case_ttl_ms {
                    let within = ms <= cfg.response_target_ms;
                    out.push(Contrib {
                        x: at,
                        channel: tp(open).channel,
                        segment: label(open),
                        what: if is_reply {
                            What::FirstResponse { ms, within }
                        } else {
                            What::Resolution { ms, within }
                        },
                    });
                }
            }
        }
    }

    // Closed loop: every accepted NPS detractor whose deadline is behind the final watermark.
    let w_final = cl.adv_w.last().copied().flatten();
    for &i in &cl.accepted {
        let (p, CxEvent::Survey(r)) = &stream[i] else {
            continue;
        };
        if r.metric != SurveyMetric::Nps || r.score > 6 {
            continue;
        }
        let deadline = r.submitted_at + cfg.follow_up_deadline_ms;
        if w_final.is_none_or(|w| deadline >= w) {
            continue;
        }
        let closed = cl.accepted.iter().any(|&j| match &stream[j] {
            (q, CxEvent::Touchpoint(e)) => {
                q == p
                    && e.kind == TouchpointKind::OutboundContact
                    && e.customer_id == r.customer_id
                    && (r.submitted_at..=deadline).contains(&e.occurred_at)
            }
            _ => false,
        });
        out.push(Contrib {
            x: deadline,
            channel: r.channel,
            segment: label(i),
            what: What::ClosedLoop { closed },
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Oracle, part 3: window values
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct Agg {
    contributions: usize,
    touchpoints: u64,
    contacts: u64,
    purchases: u64,
    revenue: BTreeMap<String, (i128, u64)>,
    customers: u128,
    promoters: u64,
    passives: u64,
    detractors: u64,
    csat_n: u64,
    csat_satisfied: u64,
    ces_n: u64,
    ces_sum: u64,
    ces_easy: u64,
    frt: Vec<i64>,
    frt_within: u64,
    res: Vec<i64>,
    res_within: u64,
    due: u64,
    closed: u64,
}

impl Agg {
    fn add(&mut self, w: &What) {
        self.contributions += 1;
        match w {
            What::Customer(c) => self.customers |= 1u128 << c,
            What::Touch {
                purchase,
                contact,
                revenue,
            } => {
                self.touchpoints += 1;
                self.purchases += u64::from(*purchase);
                self.contacts += u64::from(*contact);
                if let Some((cur, units)) = revenue {
                    let line = self.revenue.entry(cur.clone()).or_default();
                    line.0 += i128::from(*units);
                    line.1 += 1;
                }
            }
            What::Nps(s) => match s {
                9..=10 => self.promoters += 1,
                7..=8 => self.passives += 1,
                _ => self.detractors += 1,
            },
            What::Csat(s) => {
                self.csat_n += 1;
                self.csat_satisfied += u64::from(*s >= 4);
            }
            What::Ces(s) => {
                self.ces_n += 1;
                self.ces_sum += *s as u64;
                self.ces_easy += u64::from(*s >= 5);
            }
            What::FirstResponse { ms, within } => {
                self.frt.push(*ms);
                self.frt_within += u64::from(*within);
            }
            What::Resolution { ms, within } => {
                self.res.push(*ms);
                self.res_within += u64::from(*within);
            }
            What::ClosedLoop { closed } => {
                self.due += 1;
                self.closed += u64::from(*closed);
            }
        }
    }
}

/// Every window the advances must have emitted: (window index, start, end); index
/// `cfg.windows.len()` is the calendar day.
fn expected_windows(cfg: &EngineConfig, frontiers: &[Millis]) -> Vec<(u8, Millis, Millis)> {
    let off = i64::from(cfg.utc_offset_minutes) * MINUTE_MS;
    let (Some(&first), Some(&last)) = (frontiers.first(), frontiers.last()) else {
        return Vec::new();
    };
    // Ends e on the slide grid with F_first − 1 ms < e ≤ F_last.
    let ends = |slide: Millis| {
        let mut v = Vec::new();
        let mut e = ceil_local(first, slide, off);
        while e <= last {
            v.push(e);
            e += slide;
        }
        v
    };
    let mut out = Vec::new();
    for (i, w) in cfg.windows.iter().enumerate() {
        for e in ends(w.slide_ms) {
            out.push((
                i as u8,
                ceil_local(e - w.length_ms, tier_len(w.tail), off),
                e,
            ));
        }
    }
    if cfg.calendar_days {
        for e in ends(DAY_MS) {
            out.push((cfg.windows.len() as u8, e - DAY_MS, e));
        }
    }
    out
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

#[derive(Clone, Debug)]
struct RowRec {
    start: Millis,
    version: u64,
    kpis: KpiSnapshot,
    /// Some version of this key had content.
    ever_nonzero: bool,
}

struct Run {
    outcomes: Vec<Option<IngestOutcome>>,
    names: Names,
    /// The latest version per key (boxed: cheap rehashing).
    rows: HashMap<RowKey, Box<RowRec>>,
    stats: EngineStats,
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

fn drive(cfg: &EngineConfig, stream: &Stream, schedule: &[Step], adv_w: &[Option<Millis>]) -> Run {
    let mut engine = KpiEngine::new(cfg.clone()).expect("valid config");
    let mut run = Run {
        outcomes: vec![None; stream.len()],
        names: Names::new(cfg),
        rows: HashMap::default(),
        stats: EngineStats::default(),
        errors: Vec::new(),
    };
    let mut now: Millis = 0;
    let mut last_version: Option<u64> = None;
    let mut adv = 0usize;
    let mut seen: HashSet<RowKey> = HashSet::default();
    for step in schedule {
        now += 1;
        match *step {
            Step::Ingest(i) => {
                let (p, ev) = &stream[i];
                run.outcomes[i] = Some(engine.ingest(*p, ev, now));
            }
            Step::Advance => {
                let rows = engine.advance(now);
                let w = adv_w[adv];
                adv += 1;
                let Some(first) = rows.first() else {
                    continue;
                };
                let v = first.version;
                if last_version.is_some_and(|lv| v <= lv) {
                    run.errors.push(format!(
                        "advance #{adv}: version {v} does not increase (previous advance had {last_version:?})"
                    ));
                }
                last_version = Some(v);
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
                    if r.version != v {
                        run.errors.push(format!(
                            "advance #{adv}: row {} has version {} but the advance uses {v}",
                            run.names.show(&key),
                            r.version
                        ));
                    }
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
                    if !seen.insert(key) {
                        run.errors.push(format!(
                            "advance #{adv}: row {} emitted twice in one advance (version {v})",
                            run.names.show(&key)
                        ));
                    }
                    let nonzero = !is_zero(&r.kpis);
                    let ever = nonzero || run.rows.get(&key).is_some_and(|o| o.ever_nonzero);
                    run.rows.insert(
                        key,
                        Box::new(RowRec {
                            start: r.start,
                            version: r.version,
                            kpis: r.kpis,
                            ever_nonzero: ever,
                        }),
                    );
                }
            }
        }
    }
    run.stats = engine.stats();
    run
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

fn approx(a: Option<f64>, b: Option<f64>, tol: f64) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= tol,
        _ => false,
    }
}

fn wilson(successes: u64, n: u64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let (z, nf) = (Z95, n as f64);
    let p = successes as f64 / nf;
    let denom = 1.0 + z * z / nf;
    let center = (p + z * z / (2.0 * nf)) / denom;
    let half = z / denom * (p * (1.0 - p) / nf + z * z / (4.0 * nf * nf)).sqrt();
    Some(((center - half).max(0.0), (center + half).min(1.0)))
}

fn check_durations(
    field: &str,
    exact: &[i64],
    within: u64,
    got: &ResponseTimeSnapshot,
    errs: &mut Vec<String>,
) {
    let n = exact.len() as u64;
    if got.n != n {
        errs.push(format!("{field}.n: expected {n}, got {}", got.n));
    }
    if got.within_target != within {
        errs.push(format!(
            "{field}.within_target: expected {within}, got {}",
            got.within_target
        ));
    }
    let share = (n > 0).then(|| within as f64 / n as f64);
    if !approx(share, got.within_target_share, 1e-9) {
        errs.push(format!(
            "{field}.within_target_share: expected {share:?}, got {:?}",
            got.within_target_share
        ));
    }
    let mut sorted = if exact.is_empty() {
        Vec::new()
    } else {
        exact.to_vec()
    };
    sorted.sort_unstable();
    for (q_pct, name, value) in [
        (50, "p50_ms", got.p50_ms),
        (90, "p90_ms", got.p90_ms),
        (99, "p99_ms", got.p99_ms),
    ] {
        if sorted.is_empty() {
            if value.is_some() {
                errs.push(format!(
                    "{field}.{name}: expected None (no durations), got {value:?}"
                ));
            }
            continue;
        }
        // Exact order statistic of rank floor(q·(n−1)), in integer arithmetic.
        let rank = (q_pct * (sorted.len() - 1)) / 100;
        let exact = sorted[rank] as f64;
        let ok = match value {
            None => false,
            Some(v) if exact == 0.0 => v == 0.0,
            Some(v) => (v - exact).abs() <= 0.01 * exact * (1.0 + 1e-9),
        };
        if !ok {
            errs.push(format!(
                "{field}.{name}: expected {exact} ms ±1 % (rank {rank} of {sorted:?}), got {value:?}"
            ));
        }
    }
}

fn compare_row(exp: &Agg, start: Millis, got: &RowRec) -> Vec<String> {
    let mut errs = Vec::new();
    let k = &got.kpis;
    macro_rules! eq {
        ($name:expr, $e:expr, $g:expr) => {
            if $e != $g {
                errs.push(format!("{}: expected {:?}, got {:?}", $name, $e, $g));
            }
        };
    }
    macro_rules! close {
        ($name:expr, $e:expr, $g:expr) => {
            if !approx($e, $g, 1e-9) {
                errs.push(format!("{}: expected {:?}, got {:?}", $name, $e, $g));
            }
        };
    }
    eq!("start", start, got.start);
    eq!("touchpoints", exp.touchpoints, k.touchpoints);
    eq!("contacts", exp.contacts, k.contacts);
    eq!("purchases", exp.purchases, k.purchases);
    if !exp.revenue.is_empty() || !k.revenue.is_empty() {
        let rev_exp: Vec<(String, String, u64)> = exp
            .revenue
            .iter()
            .map(|(c, (u, n))| {
                let sign = if *u < 0 { "-" } else { "" };
                let a = u.unsigned_abs();
                (
                    c.clone(),
                    format!("{sign}{}.{:04}", a / 10_000, a % 10_000),
                    *n,
                )
            })
            .collect();
        let rev_got: Vec<(String, String, u64)> = k
            .revenue
            .iter()
            .map(|l| (l.currency.clone(), l.amount.clone(), l.count))
            .collect();
        eq!("revenue", rev_exp, rev_got);
        for (line, (_, (units, _))) in k.revenue.iter().zip(&exp.revenue) {
            let v = *units as f64 / 10_000.0;
            if (line.value - v).abs() > 1e-9 * v.abs().max(1.0) {
                errs.push(format!(
                    "revenue[{}].value: expected {v}, got {}",
                    line.currency, line.value
                ));
            }
        }
    }
    // NPS.
    let n = exp.promoters + exp.passives + exp.detractors;
    eq!("nps.n", n, k.nps.n);
    eq!("nps.promoters", exp.promoters, k.nps.promoters);
    eq!("nps.passives", exp.passives, k.nps.passives);
    eq!("nps.detractors", exp.detractors, k.nps.detractors);
    let (score, moe) = if n == 0 {
        (None, None)
    } else {
        let nf = n as f64;
        let (p, d) = (exp.promoters as f64 / nf, exp.detractors as f64 / nf);
        // docs: 1.96·100·sqrt(((p+d) − (p−d)²)/n); "1.96" is the 95 % normal quantile, Z95.
        (
            Some(100.0 * (exp.promoters as f64 - exp.detractors as f64) / nf),
            Some(Z95 * 100.0 * (((p + d) - (p - d) * (p - d)).max(0.0) / nf).sqrt()),
        )
    };
    close!("nps.score", score, k.nps.score);
    close!("nps.margin_of_error", moe, k.nps.margin_of_error);
    // CSAT.
    eq!("csat.n", exp.csat_n, k.csat.n);
    eq!("csat.satisfied", exp.csat_satisfied, k.csat.satisfied);
    let share = (exp.csat_n > 0).then(|| exp.csat_satisfied as f64 / exp.csat_n as f64);
    close!("csat.share", share, k.csat.share);
    let (lo, hi) = wilson(exp.csat_satisfied, exp.csat_n).unzip();
    close!("csat.wilson_low", lo, k.csat.wilson_low);
    close!("csat.wilson_high", hi, k.csat.wilson_high);
    // CES.
    eq!("ces.n", exp.ces_n, k.ces.n);
    let nf = exp.ces_n as f64;
    close!(
        "ces.mean",
        (exp.ces_n > 0).then(|| exp.ces_sum as f64 / nf),
        k.ces.mean
    );
    close!(
        "ces.easy_share",
        (exp.ces_n > 0).then(|| exp.ces_easy as f64 / nf),
        k.ces.easy_share
    );
    // Response times.
    check_durations(
        "first_response",
        &exp.frt,
        exp.frt_within,
        &k.first_response,
        &mut errs,
    );
    check_durations(
        "resolution",
        &exp.res,
        exp.res_within,
        &k.resolution,
        &mut errs,
    );
    // Closed loop.
    eq!("closed_loop.due", exp.due, k.closed_loop.due);
    eq!("closed_loop.closed", exp.closed, k.closed_loop.closed);
    close!(
        "closed_loop.rate",
        (exp.due > 0).then(|| exp.closed as f64 / exp.due as f64),
        k.closed_loop.rate
    );
    // Customers: HyperLogLog, within max(2 %, 1) of the exact distinct count.
    let distinct = u64::from(exp.customers.count_ones());
    let tol = (0.02 * distinct as f64).max(1.0);
    if (k.customers as f64 - distinct as f64).abs() > tol {
        errs.push(format!(
            "customers: expected {distinct} (±{tol}), got {}",
            k.customers
        ));
    }
    errs
}

/// Runs engine and oracle over one stream; returns every discrepancy, readable.
fn check(cfg: &EngineConfig, stream: &Stream, schedule: &[Step]) -> Vec<String> {
    let cl = classify(cfg, stream, schedule);
    let run = drive(cfg, stream, schedule, &cl.adv_w);
    let mut errs = run.errors.clone();

    // (c) outcomes, one per event.
    for (i, (exp, got)) in cl.expect.iter().zip(&run.outcomes).enumerate() {
        let (Some(exp), Some(got)) = (exp, got) else {
            continue;
        };
        let ok = match (exp, got) {
            (Expect::Accepted { late: a }, IngestOutcome::Accepted { late: b }) => a == b,
            (Expect::Duplicate, IngestOutcome::Duplicate) => true,
            (Expect::Rejected { watermark }, IngestOutcome::Rejected(too_late)) => {
                *too_late
                    == TooLate {
                        event_time: stream[i].1.event_time(),
                        watermark: *watermark,
                        horizon_ms: cfg.correction_horizon_ms,
                    }
            }
            _ => false,
        };
        if !ok {
            errs.push(format!(
                "outcome of stream[{i}] {}: expected {exp:?}, got {got:?}",
                describe(&stream[i].1)
            ));
        }
    }
    let s = &run.stats;
    let got_counts = Counts {
        accepted: s.accepted,
        late: s.late,
        duplicates: s.duplicates,
        rejected: s.rejected_too_late,
        folded: s.segments_folded,
    };
    if got_counts != cl.counts {
        errs.push(format!(
            "stats: expected {:?}, got {got_counts:?}",
            cl.counts
        ));
    }

    // (a) + (b): every window up to the last frontier.
    let contribs = contributions(cfg, stream, &cl);
    type Key = (Option<Channel>, Option<String>);
    let mut by_key: HashMap<Key, Vec<&Contrib>> = HashMap::default();
    for c in &contribs {
        for k in [
            (Some(c.channel), Some(c.segment.clone())),
            (Some(c.channel), None),
            (None, Some(c.segment.clone())),
            (None, None),
        ] {
            by_key.entry(k).or_default().push(c);
        }
    }
    for v in by_key.values_mut() {
        v.sort_by_key(|c| c.x);
    }
    // (group key, its interned segment as the engine named it — `None` if the engine never
    // named it —, contributions sorted by x)
    type KeyEntry<'a> = (&'a Key, Option<Option<u16>>, &'a Vec<&'a Contrib>);
    let mut keys: Vec<KeyEntry> = by_key
        .iter()
        .map(|(k, list)| {
            let seg = match &k.1 {
                None => Some(None),
                Some(name) => run.names.find_segment(name).map(Some),
            };
            (k, seg, list)
        })
        .collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    let frontiers: Vec<Millis> = cl
        .adv_w
        .iter()
        .flatten()
        .map(|&w| floor_local(w, MINUTE_MS, 0))
        .collect();
    let windows = expected_windows(cfg, &frontiers);
    let window_set: HashSet<(u8, Millis)> = windows.iter().map(|(n, _, e)| (*n, *e)).collect();
    let mut matched: HashSet<RowKey> = HashSet::default();
    for &(wi, start, end) in &windows {
        for &(key, seg, list) in &keys {
            let lo = list.partition_point(|c| c.x < start);
            let hi = list.partition_point(|c| c.x < end);
            if lo == hi {
                continue;
            }
            let mut agg = Agg::default();
            for c in &list[lo..hi] {
                agg.add(&c.what);
            }
            let label = || {
                format!(
                    "{} [{}, {}) {}/{}",
                    run.names.windows[usize::from(wi)],
                    fmt_t(start),
                    fmt_t(end),
                    key.0.map_or("all", Channel::as_str),
                    key.1.as_deref().unwrap_or("all")
                )
            };
            let got = seg.and_then(|seg| {
                let rk: RowKey = (wi, end, key.0, seg);
                matched.insert(rk);
                run.rows.get(&rk)
            });
            match got {
                None => errs.push(format!(
                    "missing row {}: the oracle has {} contributions ({agg:?})",
                    label(),
                    agg.contributions
                )),
                Some(got) => {
                    let diffs = compare_row(&agg, start, got);
                    if !diffs.is_empty() {
                        errs.push(format!(
                            "row {} v{}: {}",
                            label(),
                            got.version,
                            diffs.join("; ")
                        ));
                    }
                }
            }
        }
    }
    let mut extra: Vec<(&RowKey, &Box<RowRec>)> = run
        .rows
        .iter()
        .filter(|(k, _)| !matched.contains(*k))
        .collect();
    extra.sort_by(|a, b| a.0.cmp(b.0));
    for (k, r) in extra {
        if !window_set.contains(&(k.0, k.1)) {
            errs.push(format!(
                "row {} (start {}, v{}) is not a window the advances should emit (ends before the \
                 first frontier or off-grid); content {}",
                run.names.show(k),
                fmt_t(r.start),
                r.version,
                brief(&r.kpis)
            ));
        } else if !is_zero(&r.kpis) {
            errs.push(format!(
                "row {} (start {}, v{}): the oracle window is empty but the latest version has \
                 content {}",
                run.names.show(k),
                fmt_t(r.start),
                r.version,
                brief(&r.kpis)
            ));
        } else if !r.ever_nonzero {
            errs.push(format!(
                "row {}: an empty row was emitted for a key that never had content",
                run.names.show(k)
            ));
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
            match *step {
                Step::Ingest(i) => {
                    let _ = writeln!(s, "  ingest p{} {}", stream[i].0, describe(&stream[i].1));
                }
                Step::Advance => {
                    let _ = writeln!(s, "  advance");
                }
            }
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
        ),
        proptest::collection::vec(proptest::option::weighted(0.999, spec_strategy()), 50..=400),
        proptest::collection::vec(1u8..=50, 1..=8),
    )
        .prop_map(
            |(
                (partitions, customers, channels, span_min, base_shift_min, salt),
                (horizon_min, ttl_min, follow_min, max_segments, preset),
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
            let key = match s.arrival {
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

    // Every partition first delivers one on-time event at `base`, so each partition's first
    // record is accepted (no partition is ever active without an accepted event).
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
    stream.extend(items.into_iter().map(|(_, _, p, ev)| (p, ev)));

    let mut schedule = Vec::with_capacity(stream.len() + stream.len() / 4 + 1);
    let mut gaps = sc.gaps.iter().cycle();
    let mut left = *gaps.next().expect("at least one gap");
    for i in 0..stream.len() {
        schedule.push(Step::Ingest(i));
        left -= 1;
        if left == 0 {
            schedule.push(Step::Advance);
            left = *gaps.next().expect("cycle");
        }
    }
    schedule.push(Step::Advance);
    (stream, schedule)
}

/// 64 cases per property and at most 1 min of shrinking, unless the usual `PROPTEST_CASES` /
/// `PROPTEST_MAX_SHRINK_TIME` / `PROPTEST_MAX_SHRINK_ITERS` environment variables say otherwise.
fn pt_config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 64;
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
    let errs = check(&cfg, &stream, &schedule);
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
    const KINDS: [&str; 24] = [
        "outcome of",
        "stats:",
        "missing row",
        "not a window",
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
    /// An ingest (partition, event), or `None` for an advance.
    type Call = Option<(i32, CxEvent)>;
    fn to_stream(calls: &[Call]) -> (Stream, Vec<Step>) {
        let mut stream = Vec::new();
        let mut steps = Vec::new();
        for c in calls {
            match c {
                Some((p, e)) => {
                    steps.push(Step::Ingest(stream.len()));
                    stream.push((*p, e.clone()));
                }
                None => steps.push(Step::Advance),
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
            .iter()
            .any(|e| kinds(e).iter().any(|k| wanted.contains(k)))
    };
    let mut calls: Vec<Call> = schedule
        .iter()
        .map(|s| match *s {
            Step::Ingest(i) => Some(stream[i].clone()),
            Step::Advance => None,
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
    let errs = check(cfg, &s, &st);
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

// ---------------------------------------------------------------------------------------------
// Known-answer scenarios (hand-computed)
// ---------------------------------------------------------------------------------------------

/// 2024-05-01T00:00:00Z = 19 844 days · 86 400 000 ms.
const MAY1: Millis = 19_844 * DAY_MS;

fn at(h: i64, m: i64) -> Millis {
    MAY1 + h * HOUR_MS + m * MINUTE_MS
}

fn kat_config() -> EngineConfig {
    config(&Knobs {
        horizon_min: 30,
        ttl_min: 180,
        follow_min: 60,
        max_segments: 3,
        preset: false,
        offset_min: 0,
    })
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
    // W = 10:02 − 2 min = 10:00.
    assert_eq!(
        k.ingest(&visit("b", at(10, 2), "c1")),
        IngestOutcome::Accepted { late: false }
    );
    let r1 = k.advance();
    // First advance: F = 10:00, F_prev = F − 1 ms → only windows ending at 10:00:
    //   1h [09:00, 10:00), 3h [ceil(07:00, h) = 07:00, 10:00), 2d (30 min slide)
    //   [ceil(04-29 10:00, day) = 04-30 00:00, 10:00); each holds the 09:50 visit only.
    let row = must(&r1, "1h", at(10, 0), "all", "all");
    assert_eq!(
        (row.start, row.kpis.touchpoints, row.kpis.customers),
        (at(9, 0), 1, 1)
    );
    let row3 = must(&r1, "3h", at(10, 0), "all", "all");
    assert_eq!((row3.start, row3.kpis.touchpoints), (at(7, 0), 1));
    let row2d = must(&r1, "2d", at(10, 0), "all", "all");
    assert_eq!((row2d.start, row2d.kpis.touchpoints), (MAY1 - DAY_MS, 1));
    assert!(r1.iter().all(|r| r.end == at(10, 0)));
    let v1 = row.version;

    // W = 10:22 − 2 = 10:20: 1h ends 10:01 ..= 10:20, 3h ends 10:05 ..= 10:20.
    assert_eq!(
        k.ingest(&visit("c", at(10, 22), "c2")),
        IngestOutcome::Accepted { late: false }
    );
    let r2 = k.advance();
    // 1h [09:06, 10:06): 09:50 and 10:02 → 2.
    assert_eq!(must(&r2, "1h", at(10, 6), "all", "all").kpis.touchpoints, 2);
    // 3h [ceil(07:15, h) = 08:00, 10:15): 09:50 and 10:02.
    let r3h = must(&r2, "3h", at(10, 15), "all", "all");
    assert_eq!((r3h.start, r3h.kpis.touchpoints), (at(8, 0), 2));
    assert!(
        find(&r2, "1h", at(10, 0), "all", "all").is_none(),
        "10:00 was emitted already"
    );
    assert!(
        r2.iter().all(|r| &*r.window != "2d"),
        "10:30 is not reached"
    );
    let v2 = r2[0].version;
    assert!(v2 > v1);

    // A late visit at 10:05: W = 10:20, 10:05 ≥ 10:20 − 30 min → accepted, late.
    assert_eq!(
        k.ingest(&visit("d", at(10, 5), "c3")),
        IngestOutcome::Accepted { late: true }
    );
    let r3 = k.advance();
    let v3 = r3[0].version;
    assert!(v3 > v2);
    // 1h [09:06, 10:06) now holds 09:50, 10:02 and 10:05 → 3 touchpoints, 2 customers (c1, c3).
    let row = must(&r3, "1h", at(10, 6), "all", "all");
    assert_eq!(
        (row.kpis.touchpoints, row.kpis.customers, row.version),
        (3, 2, v3)
    );
    // 1h [09:20, 10:20): 09:50, 10:02, 10:05 → 3 (10:22 is after the end).
    assert_eq!(
        must(&r3, "1h", at(10, 20), "all", "all").kpis.touchpoints,
        3
    );
    // Re-emitted for (all, all): every emitted window containing minute 10:05:
    //   1h ends 10:06 ..= 10:20 (15; ends ≤ 10:05 do not contain it), 3h ends 10:10, 10:15,
    //   10:20; no 2d window containing it was emitted (2d ended only at 10:00).
    let mut want: Vec<(String, Millis)> = (6..=20).map(|m| ("1h".to_string(), at(10, m))).collect();
    want.extend([10, 15, 20].map(|m| ("3h".to_string(), at(10, m))));
    want.sort();
    assert_eq!(all_all_windows(&r3), want);
    let s = k.engine.stats();
    assert_eq!(
        (s.accepted, s.late, s.duplicates, s.rejected_too_late),
        (4, 1, 0, 0)
    );
}

/// Corrections re-emit *already emitted* windows only: windows that end before the first
/// frontier were never emitted and must not appear because a late event touches them.
#[test]
fn kat_correction_does_not_emit_windows_before_the_first_frontier() {
    let mut k = Kat::new();
    k.ingest(&visit("a", at(10, 0), "c1"));
    k.ingest(&visit("b", at(10, 10), "c1")); // W = 10:08
    let r1 = k.advance();
    // First advance: F = 10:08, F_prev = 10:08 − 1 ms → only 1h [09:08, 10:08) (10:08 is on
    // neither the 5 min nor the 30 min grid).
    assert_eq!(all_all_windows(&r1), vec![("1h".to_string(), at(10, 8))]);
    // Late visit at 10:05 (≥ 10:08 − 30 min): it touches 1h windows ending 10:06 ..= 11:05, of
    // which only 10:08 was emitted.
    assert_eq!(
        k.ingest(&visit("c", at(10, 5), "c2")),
        IngestOutcome::Accepted { late: true }
    );
    let r2 = k.advance();
    let row = must(&r2, "1h", at(10, 8), "all", "all");
    assert_eq!(row.kpis.touchpoints, 2, "10:00 and 10:05");
    assert_eq!(all_all_windows(&r2), vec![("1h".to_string(), at(10, 8))]);
}

#[test]
fn kat_event_beyond_horizon_is_rejected() {
    let mut k = Kat::new();
    k.ingest(&visit("a", at(10, 0), "c1"));
    k.ingest(&visit("b", at(10, 22), "c1")); // W = 10:20, horizon 30 min → limit 09:50.
    k.advance();
    let too_old = visit("old", at(9, 50) - 1, "c1");
    assert_eq!(
        k.ingest(&too_old),
        IngestOutcome::Rejected(TooLate {
            event_time: at(9, 50) - 1,
            watermark: at(10, 20),
            horizon_ms: 30 * MINUTE_MS,
        })
    );
    // Exactly W − horizon is still accepted (late).
    assert_eq!(
        k.ingest(&visit("edge", at(9, 50), "c1")),
        IngestOutcome::Accepted { late: true }
    );
    let rows = k.advance();
    // [09:20, 10:20): 09:50 and 10:00 (the rejected 09:49:59.999 is not counted).
    assert_eq!(
        must(&rows, "1h", at(10, 20), "all", "all").kpis.touchpoints,
        2
    );
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
        "same id, same partition"
    );
    k.ingest(&visit("w", at(10, 12), "c1")); // W = 10:10
    assert_eq!(
        k.ingest(&purchase),
        IngestOutcome::Duplicate,
        "late copy, still inside the horizon"
    );
    let rows = k.advance();
    // [09:10, 10:10): purchase 10:00 + visit 10:05 = 2 touchpoints, 1 purchase, 12.5000 EUR.
    let row = must(&rows, "1h", at(10, 10), "all", "all");
    assert_eq!((row.kpis.touchpoints, row.kpis.purchases), (2, 1));
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

/// Ids are remembered per event-time minute until that minute is entirely below
/// `W − horizon`: a copy inside the horizon in a partly expired minute is still a duplicate.
/// The same id in another minute is a different event.
#[test]
fn kat_duplicate_in_partly_expired_minute() {
    let mut k = Kat::new();
    let x = visit("x", at(10, 0) + 45_000, "c1"); // 10:00:45
    assert_eq!(k.ingest(&x), IngestOutcome::Accepted { late: false });
    // W = 10:32:30 − 2 min = 10:30:30; W − horizon = 10:00:30: minute 10:00 is partly behind it.
    k.ingest(&visit("y", at(10, 32) + 30_000, "c1"));
    let r1 = k.advance(); // F = 10:30: 1h [09:30, 10:30) holds x only.
    assert_eq!(
        must(&r1, "1h", at(10, 30), "all", "all").kpis.touchpoints,
        1
    );
    // 10:00:45 ≥ 10:00:30: not rejected; same id, same minute, already accepted → duplicate.
    assert_eq!(k.ingest(&x), IngestOutcome::Duplicate);
    // A copy stamped 10:00:15 is behind W − horizon: rejected by rule 1.
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
    assert_eq!(
        must(&r3, "1h", at(10, 30), "all", "all").kpis.touchpoints,
        2
    );
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
    let r0 = k.advance(); // W = 09:58: nothing ends at 09:58 with content.
    assert!(r0.is_empty());
    k.ingest(&case(
        "reply30",
        at(10, 30),
        Channel::Chat,
        TouchpointKind::AgentReplied,
    ));
    k.ingest(&visit("push", at(10, 40), "c9")); // W = 10:38
    let r1 = k.advance(); // ends 09:59 ..= 10:38
                          // [09:31, 10:31): open 10:00 and reply 10:30 → FRT 30 min at 10:30, in the open's series.
    let row = must(&r1, "1h", at(10, 31), "phone", "smb");
    assert_eq!((row.kpis.contacts, row.kpis.first_response.n), (1, 1));
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

    // A reply at 10:20 arrives later: 10:20 ≥ W − 30 min = 10:08 → accepted (late). The first
    // reply becomes 10:20: the 30 min contribution at 10:30 is retracted, 20 min added at 10:20.
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
    assert!(r2[0].version > r1[0].version);
    let row = must(&r2, "1h", at(10, 31), "phone", "smb");
    assert_eq!(row.kpis.first_response.n, 1, "retracted, not added twice");
    let p50 = row.kpis.first_response.p50_ms.expect("one duration");
    assert!(
        (p50 - 1_200_000.0).abs() <= 12_000.0,
        "20 min ±1 %, got {p50}"
    );
    // [09:25, 10:25) now holds the 20 min response at 10:20.
    let row = must(&r2, "1h", at(10, 25), "phone", "smb");
    assert_eq!(row.kpis.first_response.n, 1);
    // [09:38, 10:38) for (all, all): open 10:00 + replies 10:20, 10:30 = 3 touchpoints (the
    // 10:40 visit is outside), 1 contact, FRT n = 1.
    let all = must(&r2, "1h", at(10, 38), "all", "all");
    assert_eq!(
        (
            all.kpis.touchpoints,
            all.kpis.contacts,
            all.kpis.first_response.n
        ),
        (3, 1, 1)
    );
}

/// A case keeps its first open for good: a second `contact_opened` of the same case, arriving
/// after the case's first reply and resolution are far behind the watermark, is one more
/// contact, not a new case; later replies / resolutions are not first ones and add nothing.
#[test]
fn kat_second_open_of_a_settled_case_is_not_a_new_case() {
    let mut k = Kat::new(); // horizon 30 min, case TTL 3 h, target 1 h
    let case = |id: &str, t: Millis, kind: TouchpointKind| {
        touch(
            id,
            t,
            "c1",
            "smb",
            Channel::Phone,
            kind,
            Some("case-7"),
            None,
        )
    };
    k.ingest(&case("open1", at(5, 0), TouchpointKind::ContactOpened));
    k.ingest(&case("reply1", at(5, 5), TouchpointKind::AgentReplied)); // FRT 5 min at 05:05
    k.ingest(&case("res1", at(5, 10), TouchpointKind::CaseResolved)); // resolution 10 min at 05:10
    k.ingest(&visit("v1", at(7, 10), "c9")); // W = 07:08, W − horizon = 06:38
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
    // 3h [06:00, 09:00), phone/smb: open2, reply2, res2 = 3 touchpoints, 1 contact. The case's
    // open is still 05:00 (smallest time), its first reply 05:05 and resolution 05:10: no
    // duration lies in this window.
    let row = must(&rows, "3h", at(9, 0), "phone", "smb");
    assert_eq!((row.kpis.touchpoints, row.kpis.contacts), (3, 1));
    assert_eq!(
        (row.kpis.first_response.n, row.kpis.resolution.n),
        (0, 0),
        "reply2 / res2 are not the case's first reply / resolution: {:?} / {:?}",
        row.kpis.first_response,
        row.kpis.resolution
    );
}

#[test]
fn kat_detractor_followed_up_in_time_or_not() {
    let mut k = Kat::new();
    let nps = |id: &str, cust: &str, score: i32| {
        survey(
            id,
            at(10, 0),
            cust,
            "retail",
            Channel::Web,
            SurveyMetric::Nps,
            score,
        )
    };
    let outbound = |id: &str, cust: &str, t: Millis| {
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
    };
    k.ingest(&nps("n1", "alice", 3)); // detractor, deadline 11:00
    k.ingest(&nps("n2", "bob", 6)); // detractor, deadline 11:00
    k.ingest(&nps("n3", "carol", 7)); // passive: no follow-up due
    k.advance(); // W = 09:58
    k.ingest(&outbound("o1", "alice", at(10, 40))); // in [10:00, 11:00] → closes n1
    k.ingest(&outbound("o2", "bob", at(11, 10))); // after bob's deadline
    let rows = k.advance(); // W = 11:08: both deadlines (11:00) are due.
                            // [10:01, 11:01) holds x = 11:00: due 2, closed 1 (alice), rate 0.5 — in the responses'
                            // series (web/retail), not the outbound contacts' (email).
    let row = must(&rows, "1h", at(11, 1), "web", "retail");
    assert_eq!(
        (row.kpis.closed_loop.due, row.kpis.closed_loop.closed),
        (2, 1)
    );
    assert_eq!(row.kpis.closed_loop.rate, Some(0.5));
    // [10:00, 11:00) does not contain 11:00.
    assert_eq!(
        must(&rows, "1h", at(11, 0), "all", "all")
            .kpis
            .closed_loop
            .due,
        0
    );
    let email = must(&rows, "1h", at(11, 1), "email", "retail");
    assert_eq!(email.kpis.closed_loop.due, 0);

    // Bob's follow-up at 10:50 arrives late (10:50 ≥ 11:08 − 30 min): a correction, closed 2.
    assert_eq!(
        k.ingest(&outbound("o3", "bob", at(10, 50))),
        IngestOutcome::Accepted { late: true }
    );
    let rows = k.advance();
    let row = must(&rows, "1h", at(11, 1), "web", "retail");
    assert_eq!(
        (row.kpis.closed_loop.due, row.kpis.closed_loop.closed),
        (2, 2)
    );
    assert_eq!(row.kpis.closed_loop.rate, Some(1.0));
    // NPS of that window (10:01..11:01) has no responses (all at 10:00); [10:00, 11:00) has 3:
    // 0 promoters, 1 passive, 2 detractors → NPS = 100·(0 − 2)/3 = −66.67.
    let all = must(&rows, "1h", at(11, 0), "all", "all");
    assert_eq!((all.kpis.nps.n, all.kpis.nps.detractors), (3, 2));
    assert!((all.kpis.nps.score.expect("n > 0") + 200.0 / 3.0).abs() < 1e-9);
}
