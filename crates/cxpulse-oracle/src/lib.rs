//! # cxpulse-oracle: the window contract, recomputed naively
//!
//! Everything here is written from `docs/windows.md` alone, never from the engine's code: no
//! panes, tiers, rollups, dirty ranges or incremental state. From the raw records as they
//! were delivered it
//!
//! 1. classifies each record (accepted / late / duplicate / rejected) by its own **source**'s
//!    floor (`max_s − allowed_lateness − correction_horizon`), de-duplicates per source and
//!    event-time minute, and runs the segment guard over the accepted records;
//! 2. derives every contribution `(x, channel, segment, what)` from the *final* set of accepted
//!    events: the events themselves, case first-response / resolution durations, closed-loop
//!    dues (a detractor is due when its deadline lies behind its partition's final touchpoint
//!    watermark, closed when an accepted outbound contact of the customer lies in
//!    `[t, t + follow_up_deadline]`);
//! 3. sums the contributions of every window (rolling windows and calendar days) and grouping
//!    set (channel, segment), (channel, all), (all, segment), (all, all) with plain loops.
//!
//! The result is the *final* value of every row: what the latest version of each
//! (window, end, channel, segment) must hold after the last `advance`, for every window end
//! on the grid up to a frontier. [`KpiParts`] holds a row's mergeable parts in plain form
//! (counts, sums, the exact list of durations, the set of customers);
//! [`KpiParts::to_state`] builds the engine's [`KpiState`] from them the documented way
//! (DDSketch `add` per duration, HyperLogLog `insert` of each customer id), and
//! [`diff_state`] / [`diff_snapshot`] compare observed parts or derived KPI values with them
//! and list every difference readably.
//!
//! ## Versions
//! A row's `version` is the number of pane *updates* in its window (docs: "every
//! contribution (and every retraction) is one update of the pane it lands in"). The oracle
//! counts, per series: one update per accepted event (everything an event contributes at its
//! own time `t` is one contribution), one per due detractor and one more if it is closed
//! (both at the deadline, in whatever order the engine learnt them), and for cases one per
//! added and one per retracted duration. Cases are replayed in the order of their
//! partition's touchpoint source: after each accepted case event the case's first-response
//! (resolution) contribution is recomputed from the case's events so far; when it changed
//! (time, series, duration or target flag), the old one is retracted and the new one added. This count is [`KpiParts::updates`].
//!
//! ## What the caller describes
//! [`Input`] is the list of records in the order the engine received them (partition,
//! event). Only the order *within each source* (a partition's touchpoints, its survey
//! responses) matters for acceptance and contributions; the order *across* sources matters
//! only for the segment guard (new segment names are admitted in arrival order), see
//! [`Oracle::segments_depend_on_interleaving`]. [`Input::from_sources`] builds an input from
//! per-source lists.
//!
//! The job watermark depends on processing time (idle sources); [`Oracle::watermark_after`]
//! gives it for the case where no source is idle, every source is active from its first
//! record on and nothing is assigned without delivering. End-to-end tests with real clocks
//! pass the engine's frontier to [`Oracle::rows`] instead.
//!
//! ## Example
//! ```
//! use cxpulse_core::{Channel, CxEvent, EngineConfig, TouchpointEvent, TouchpointKind};
//! use cxpulse_oracle::{Input, Oracle};
//!
//! let visit = |id: &str, t: i64| CxEvent::Touchpoint(TouchpointEvent {
//!     event_id: id.into(), occurred_at: t, customer_id: "c1".into(), segment: "smb".into(),
//!     channel: Channel::Web, touchpoint: "home".into(), kind: TouchpointKind::Visit,
//!     case_id: None, amount: None, currency: None, attributes: Vec::new(),
//! });
//! let mut input = Input::new();
//! input.push(0, visit("a", 600_000));
//! input.push(0, visit("b", 900_000));
//! let cfg = EngineConfig::default();
//! let oracle = Oracle::new(&cfg, &input);
//! let rows = oracle.expected_rows(oracle.frontier().unwrap());
//! let row = rows.iter().find(|(k, _)| &*k.window == "1h" && k.end == 660_000
//!     && k.channel.is_none() && k.segment.is_none()).unwrap();
//! assert_eq!(row.1.touchpoints, 1);
//! ```

use cxpulse_core::kpi::{KpiSnapshot, KpiState, ResponseTimeSnapshot, ResponseTimeTally};
use cxpulse_core::window::{Tier, DAY_WINDOW_NAME};
use cxpulse_core::{
    Channel, Currency, CxEvent, EngineConfig, IngestOutcome, KpiRow, Millis, SurveyMetric, TooLate,
    TouchpointKind, DAY_MS, HOUR_MS, MINUTE_MS,
};
use cxpulse_sketch::Hll;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// A source partition number (a Kafka partition of the co-partitioned topics).
pub type PartitionId = i32;

/// z₀.₉₇₅, the 95 % two-sided normal quantile (docs: "z = 1.959964 (≈ 1.96)").
pub const Z_95: f64 = 1.959_963_984_540_054;

/// The label of the "all" member of a grouping set.
pub const ALL: &str = "all";

/// The segment every folded name is counted under.
pub const OTHER: &str = "other";

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

/// `floor(t, len) = (t + off)·div_euclid(len)·len − off` (docs, "Time").
pub fn floor_local(t: Millis, len: Millis, off_ms: Millis) -> Millis {
    (t + off_ms).div_euclid(len) * len - off_ms
}

/// The smallest multiple of `len` (local time) at or after `t`.
pub fn ceil_local(t: Millis, len: Millis, off_ms: Millis) -> Millis {
    let f = floor_local(t, len, off_ms);
    if f == t {
        t
    } else {
        f + len
    }
}

fn tier_ms(t: Tier) -> Millis {
    match t {
        Tier::Minute => MINUTE_MS,
        Tier::Hour => HOUR_MS,
        Tier::Day => DAY_MS,
    }
}

/// `t` as `d<days since epoch> hh:mm:ss.mmmZ`, for messages.
pub fn fmt_time(t: Millis) -> String {
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

// ---------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------

/// The two sources of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// The partition's touchpoint events.
    Touchpoints,
    /// The partition's survey responses.
    Surveys,
}

impl Source {
    /// The source an event comes from.
    pub fn of(event: &CxEvent) -> Source {
        match event {
            CxEvent::Touchpoint(_) => Source::Touchpoints,
            CxEvent::Survey(_) => Source::Surveys,
        }
    }
}

/// Records in the order the engine received them.
#[derive(Clone, Debug, Default)]
pub struct Input {
    records: Vec<(PartitionId, CxEvent)>,
}

impl Input {
    /// No records.
    pub fn new() -> Input {
        Input::default()
    }

    /// Appends one record (received after every record pushed before).
    pub fn push(&mut self, partition: PartitionId, event: CxEvent) {
        self.records.push((partition, event));
    }

    /// Records in arrival order.
    pub fn from_arrivals(records: impl IntoIterator<Item = (PartitionId, CxEvent)>) -> Input {
        Input {
            records: records.into_iter().collect(),
        }
    }

    /// Per-source lists, each in its source's order. The arrival order across sources is
    /// taken as list after list, in the order given; it only matters for the segment guard
    /// (see [`Oracle::segments_depend_on_interleaving`]).
    ///
    /// # Panics
    /// When a list holds an event of the other source.
    pub fn from_sources(
        sources: impl IntoIterator<Item = (PartitionId, Source, Vec<CxEvent>)>,
    ) -> Input {
        let mut input = Input::new();
        for (p, source, events) in sources {
            for ev in events {
                assert_eq!(
                    Source::of(&ev),
                    source,
                    "event {} is not from the {source:?} source of partition {p}",
                    ev.id()
                );
                input.push(p, ev);
            }
        }
        input
    }

    /// The records, in arrival order.
    pub fn records(&self) -> &[(PartitionId, CxEvent)] {
        &self.records
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Acceptance
// ---------------------------------------------------------------------------------------------

/// What the contract says happens to one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Counted; `late` when behind its source's watermark `wm_s`.
    Accepted { late: bool },
    /// Same id, same event-time minute, already accepted from the same source.
    Duplicate,
    /// Before its source's floor: `t < floor_s = wm_s − correction_horizon`.
    Rejected {
        /// The source watermark `wm_s` as it stood before the record.
        watermark: Millis,
    },
}

impl Outcome {
    /// The engine's [`IngestOutcome`] for this outcome of an event with time `event_time`.
    pub fn to_ingest(self, event_time: Millis, cfg: &EngineConfig) -> IngestOutcome {
        match self {
            Outcome::Accepted { late } => IngestOutcome::Accepted { late },
            Outcome::Duplicate => IngestOutcome::Duplicate,
            Outcome::Rejected { watermark } => IngestOutcome::Rejected(TooLate {
                event_time,
                watermark,
                horizon_ms: cfg.correction_horizon_ms,
            }),
        }
    }
}

/// Totals over all records (the engine's `EngineStats` counters of the same names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub accepted: u64,
    pub late: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Accepted events whose segment name was counted under `other` (including `all`).
    pub folded: u64,
}

/// The per-source clock after all records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceClock {
    /// Highest accepted event time (`max_s`).
    pub max: Option<Millis>,
    /// `wm_s = max_s − allowed_lateness`.
    pub watermark: Option<Millis>,
    /// `floor_s = wm_s − correction_horizon`.
    pub floor: Option<Millis>,
}

// ---------------------------------------------------------------------------------------------
// Contributions
// ---------------------------------------------------------------------------------------------

/// What one contribution adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What {
    /// An accepted event at its own time: its customer, and its touchpoint or survey parts.
    Event {
        /// Index into [`Oracle::customer_names`].
        customer: u32,
        kind: EventParts,
    },
    FirstResponse {
        ms: Millis,
        within: bool,
    },
    Resolution {
        ms: Millis,
        within: bool,
    },
    /// A due detractor (at its deadline).
    ClosedLoop {
        closed: bool,
    },
}

/// The non-customer parts of an event's contribution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventParts {
    Touch {
        purchase: bool,
        contact: bool,
        /// (currency text, amount in 1/10 000) of a purchase with both set.
        revenue: Option<(String, i64)>,
    },
    Nps(i32),
    Csat(i32),
    Ces(i32),
    /// A survey of a metric the contract does not count (only its customer counts).
    OtherSurvey,
}

/// One contribution at time `x` to the series (channel, segment) and its grouping sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contribution {
    pub x: Millis,
    pub partition: PartitionId,
    pub channel: Channel,
    /// The segment label after the guard.
    pub segment: Arc<str>,
    pub what: What,
}

/// A grouping-set key: `None` stands for "all".
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub channel: Option<Channel>,
    pub segment: Option<Arc<str>>,
}

impl GroupKey {
    fn sets(channel: Channel, segment: &Arc<str>) -> [GroupKey; 4] {
        [
            GroupKey {
                channel: Some(channel),
                segment: Some(segment.clone()),
            },
            GroupKey {
                channel: Some(channel),
                segment: None,
            },
            GroupKey {
                channel: None,
                segment: Some(segment.clone()),
            },
            GroupKey {
                channel: None,
                segment: None,
            },
        ]
    }

    /// `web`, `all`, …
    pub fn channel_label(&self) -> &str {
        self.channel.map_or(ALL, Channel::as_str)
    }

    /// `smb`, `other`, `all`, …
    pub fn segment_label(&self) -> &str {
        self.segment.as_deref().unwrap_or(ALL)
    }
}

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

/// One row's identity: (window, end, channel, segment) plus the window's start.
///
/// Ordered by window name, end, channel, segment, start.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    /// The rolling window's name, or `day`.
    pub window: Arc<str>,
    pub end: Millis,
    pub channel: Option<Channel>,
    pub segment: Option<Arc<str>>,
    pub start: Millis,
}

impl RowKey {
    /// The key of an emitted row.
    pub fn of(row: &KpiRow) -> RowKey {
        RowKey {
            window: row.window.clone(),
            end: row.end,
            channel: row.channel,
            segment: row.segment.clone(),
            start: row.start,
        }
    }

    /// A key from labels as stored by a sink (`all` for the "all" member; channel labels
    /// are [`Channel::as_str`]).
    pub fn from_labels(
        window: &str,
        start: Millis,
        end: Millis,
        channel: &str,
        segment: &str,
    ) -> RowKey {
        RowKey {
            window: Arc::from(window),
            end,
            channel: (channel != ALL).then(|| Channel::from_symbol(channel)),
            segment: (segment != ALL).then(|| Arc::from(segment)),
            start,
        }
    }

    /// `web`, `all`, …
    pub fn channel_label(&self) -> &str {
        self.channel.map_or(ALL, Channel::as_str)
    }

    /// `smb`, `other`, `all`, …
    pub fn segment_label(&self) -> &str {
        self.segment.as_deref().unwrap_or(ALL)
    }
}

impl fmt::Display for RowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}, {}) {}/{}",
            self.window,
            fmt_time(self.start),
            fmt_time(self.end),
            self.channel_label(),
            self.segment_label()
        )
    }
}

/// Durations of one kind in a window, exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durations {
    /// Every duration (ms), sorted.
    pub ms: Vec<Millis>,
    /// How many met the response target.
    pub within_target: u64,
}

/// A row's mergeable parts, in plain form: what a [`KpiState`] holds, exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KpiParts {
    /// Updates of the panes of this window (the row's `version`; see the crate docs).
    pub updates: u64,
    /// Number of contributions in the window (not a KPI; diagnostics).
    pub contributions: u64,
    pub touchpoints: u64,
    pub contacts: u64,
    pub purchases: u64,
    /// Currency → (sum in 1/10 000, number of amounts).
    pub revenue: BTreeMap<String, (i128, u64)>,
    pub promoters: u64,
    pub passives: u64,
    pub detractors: u64,
    pub csat_n: u64,
    pub csat_satisfied: u64,
    pub ces_n: u64,
    pub ces_sum: i64,
    pub ces_easy: u64,
    pub first_response: Durations,
    pub resolution: Durations,
    pub due: u64,
    pub closed: u64,
    /// Distinct customer ids, sorted.
    pub customers: Vec<Arc<str>>,
}

impl KpiParts {
    /// True when nothing ever landed in the window: no contribution and no update (no row is
    /// emitted for it). A window whose updates net out (a retracted first response) has a
    /// row with all-zero parts, which replaces the one emitted before.
    pub fn is_empty(&self) -> bool {
        self.contributions == 0 && self.updates == 0
    }

    /// The engine's [`KpiState`] built from these parts the documented way: counts and sums
    /// copied, one DDSketch `add` per duration, one HyperLogLog `insert` per customer id.
    /// Revenue lines whose currency is not a valid ISO code are left out.
    pub fn to_state(&self) -> KpiState {
        let mut s = KpiState {
            updates: self.updates,
            touchpoints: self.touchpoints,
            contacts: self.contacts,
            purchases: self.purchases,
            ..KpiState::default()
        };
        s.nps.promoters = self.promoters;
        s.nps.passives = self.passives;
        s.nps.detractors = self.detractors;
        s.csat.n = self.csat_n;
        s.csat.satisfied = self.csat_satisfied;
        s.ces.n = self.ces_n;
        s.ces.sum = u64::try_from(self.ces_sum).unwrap_or_default();
        s.ces.easy = self.ces_easy;
        for (c, (units, count)) in &self.revenue {
            if let Some(cur) = Currency::parse(c) {
                s.revenue.add_line(cur, *units, *count);
            }
        }
        let tally = |d: &Durations| {
            (!d.ms.is_empty()).then(|| {
                let mut t = ResponseTimeTally::default();
                for ms in &d.ms {
                    t.sketch.add(*ms);
                }
                t.within_target = d.within_target;
                Box::new(t)
            })
        };
        s.first_response = tally(&self.first_response);
        s.resolution = tally(&self.resolution);
        s.closed_loop.due = self.due;
        s.closed_loop.closed = self.closed;
        for c in &self.customers {
            s.customers.insert(c.as_bytes());
        }
        s
    }

    /// The counts on one line (for messages).
    pub fn brief(&self) -> String {
        format!(
            "updates {} touchpoints {} contacts {} purchases {} revenue {:?} nps {}/{}/{} csat {}/{} \
             ces n {} sum {} easy {} frt {:?} ({} within) res {:?} ({} within) due {} closed {} \
             customers {}",
            self.updates,
            self.touchpoints,
            self.contacts,
            self.purchases,
            self.revenue,
            self.promoters,
            self.passives,
            self.detractors,
            self.csat_satisfied,
            self.csat_n,
            self.ces_n,
            self.ces_sum,
            self.ces_easy,
            self.first_response.ms,
            self.first_response.within_target,
            self.resolution.ms,
            self.resolution.within_target,
            self.due,
            self.closed,
            self.customers.len()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------------------------------

/// One window kind on the grid.
#[derive(Clone, Debug)]
struct WindowKind {
    name: Arc<str>,
    length: Millis,
    tail: Millis,
    slide: Millis,
    /// The calendar day: `[end − 1 day, end)`.
    day: bool,
}

impl WindowKind {
    fn start(&self, end: Millis, off: Millis) -> Millis {
        if self.day {
            end - DAY_MS
        } else {
            ceil_local(end - self.length, self.tail, off)
        }
    }
}

/// Contributions and updates of one grouping-set key, sorted by time.
#[derive(Clone, Debug, Default)]
struct Series {
    /// (x, index into `Oracle::contributions`), sorted by x.
    contributions: Vec<(Millis, usize)>,
    /// Times of the updates, sorted.
    updates: Vec<Millis>,
}

/// The naive recomputation of the contract over one [`Input`]. See the crate docs.
#[derive(Clone, Debug)]
pub struct Oracle {
    cfg: EngineConfig,
    off: Millis,
    outcomes: Vec<Outcome>,
    labels: Vec<Option<Arc<str>>>,
    counts: Counts,
    watermark_after: Vec<Option<Millis>>,
    clocks: BTreeMap<(PartitionId, Source), SourceClock>,
    /// Distinct accepted segment names that are not `other` or `all`, and whether the
    /// guard had room for all of them.
    segment_names: BTreeSet<String>,
    folds_possible: bool,
    customers: Vec<Arc<str>>,
    contributions: Vec<Contribution>,
    series: BTreeMap<GroupKey, Series>,
    windows: Vec<WindowKind>,
}

impl Oracle {
    /// Classifies every record of `input` and derives every contribution.
    pub fn new(cfg: &EngineConfig, input: &Input) -> Oracle {
        let off = i64::from(cfg.utc_offset_minutes) * MINUTE_MS;
        let mut o = Oracle {
            cfg: cfg.clone(),
            off,
            outcomes: Vec::with_capacity(input.len()),
            labels: vec![None; input.len()],
            counts: Counts::default(),
            watermark_after: Vec::with_capacity(input.len()),
            clocks: BTreeMap::new(),
            segment_names: BTreeSet::new(),
            folds_possible: false,
            customers: Vec::new(),
            contributions: Vec::new(),
            series: BTreeMap::new(),
            windows: Vec::new(),
        };
        for w in &cfg.windows {
            o.windows.push(WindowKind {
                name: Arc::from(w.name.as_str()),
                length: w.length_ms,
                tail: tier_ms(w.tail),
                slide: w.slide_ms,
                day: false,
            });
        }
        if cfg.calendar_days {
            o.windows.push(WindowKind {
                name: Arc::from(DAY_WINDOW_NAME),
                length: DAY_MS,
                tail: DAY_MS,
                slide: DAY_MS,
                day: true,
            });
        }
        o.classify(input);
        o.derive(input);
        o
    }

    // -- part 1: acceptance ------------------------------------------------------------------

    fn classify(&mut self, input: &Input) {
        let cfg = &self.cfg;
        let (lateness, horizon) = (cfg.allowed_lateness_ms, cfg.correction_horizon_ms);
        // Highest accepted time per source; sources known (delivered a record) so far.
        let mut max: BTreeMap<(PartitionId, Source), Option<Millis>> = BTreeMap::new();
        let mut ids: HashSet<(PartitionId, Source, String, Millis)> = HashSet::new();
        let mut w: Option<Millis> = None;
        // The segment guard: presets, then new names in arrival order of accepted events.
        let mut admitted: Vec<String> = Vec::new();
        for name in &cfg.preset_segments {
            if name != ALL
                && name != OTHER
                && !admitted.contains(name)
                && admitted.len() < cfg.max_segments
            {
                admitted.push(name.clone());
            }
        }
        let mut interned: HashMap<String, Arc<str>> = HashMap::new();
        let mut intern = |s: &str| {
            interned
                .entry(s.to_string())
                .or_insert_with(|| Arc::from(s))
                .clone()
        };
        for (i, (p, ev)) in input.records.iter().enumerate() {
            let source = (*p, Source::of(ev));
            let m = *max.entry(source).or_insert(None);
            let t = ev.event_time();
            let wm = m.map(|m| m - lateness);
            let outcome = if wm.is_some_and(|wm| t < wm - horizon) {
                Outcome::Rejected {
                    watermark: wm.unwrap_or_default(),
                }
            } else if !ids.insert((
                source.0,
                source.1,
                ev.id().to_string(),
                floor_local(t, MINUTE_MS, 0),
            )) {
                Outcome::Duplicate
            } else {
                Outcome::Accepted {
                    late: wm.is_some_and(|wm| t < wm),
                }
            };
            match outcome {
                Outcome::Rejected { .. } => self.counts.rejected += 1,
                Outcome::Duplicate => self.counts.duplicates += 1,
                Outcome::Accepted { late } => {
                    self.counts.accepted += 1;
                    self.counts.late += u64::from(late);
                    let name = ev.segment();
                    if name != ALL && name != OTHER {
                        self.segment_names.insert(name.to_string());
                    }
                    let label = if name == OTHER || admitted.iter().any(|a| a == name) {
                        name.to_string()
                    } else if name != ALL && admitted.len() < cfg.max_segments {
                        admitted.push(name.to_string());
                        name.to_string()
                    } else {
                        self.counts.folded += 1;
                        if name != ALL {
                            self.folds_possible = true;
                        }
                        OTHER.to_string()
                    };
                    self.labels[i] = Some(intern(&label));
                    max.insert(source, Some(m.map_or(t, |m| m.max(t))));
                    // W: min over (active = known) sources of wm_s; undefined while a known
                    // source has no accepted event; never decreases.
                    if max.values().all(Option::is_some) {
                        let min = max.values().flatten().min().copied();
                        if let Some(min) = min {
                            let cand = min - lateness;
                            w = Some(w.map_or(cand, |w| w.max(cand)));
                        }
                    }
                }
            }
            self.outcomes.push(outcome);
            self.watermark_after.push(w);
        }
        self.clocks = max
            .into_iter()
            .map(|(k, m)| {
                let watermark = m.map(|m| m - lateness);
                (
                    k,
                    SourceClock {
                        max: m,
                        watermark,
                        floor: watermark.map(|w| w - horizon),
                    },
                )
            })
            .collect();
    }

    // -- part 2: contributions ---------------------------------------------------------------

    fn derive(&mut self, input: &Input) {
        let cfg = self.cfg.clone();
        let recs = &input.records;
        let accepted: Vec<usize> = (0..recs.len())
            .filter(|&i| matches!(self.outcomes[i], Outcome::Accepted { .. }))
            .collect();
        let label = |i: usize| {
            self.labels[i]
                .clone()
                .expect("accepted events have a label")
        };
        let mut customer_ids: HashMap<&str, u32> = HashMap::new();
        let mut contributions = Vec::new();
        // Updates: (x, channel, segment).
        let mut updates: Vec<(Millis, Channel, Arc<str>)> = Vec::new();

        // Every accepted event at its own time.
        for &i in &accepted {
            let (p, ev) = &recs[i];
            let next = customer_ids.len() as u32;
            let customer = *customer_ids.entry(ev.customer_id()).or_insert_with(|| {
                self.customers.push(Arc::from(ev.customer_id()));
                next
            });
            let kind = match ev {
                CxEvent::Touchpoint(e) => {
                    let purchase = e.kind == TouchpointKind::Purchase;
                    EventParts::Touch {
                        purchase,
                        contact: e.kind == TouchpointKind::ContactOpened,
                        revenue: match (purchase, &e.amount, &e.currency) {
                            (true, Some(a), Some(c)) => Some((c.clone(), a.units)),
                            _ => None,
                        },
                    }
                }
                CxEvent::Survey(r) => match r.metric {
                    SurveyMetric::Nps => EventParts::Nps(r.score),
                    SurveyMetric::Csat => EventParts::Csat(r.score),
                    SurveyMetric::Ces => EventParts::Ces(r.score),
                    SurveyMetric::Unknown => EventParts::OtherSurvey,
                },
            };
            contributions.push(Contribution {
                x: ev.event_time(),
                partition: *p,
                channel: ev.channel(),
                segment: label(i),
                what: What::Event { customer, kind },
            });
            updates.push((ev.event_time(), ev.channel(), label(i)));
        }

        // Cases per (partition, case id), replayed in touchpoint-source order.
        let tp = |i: usize| match &recs[i].1 {
            CxEvent::Touchpoint(e) => Some(e),
            CxEvent::Survey(_) => None,
        };
        type Dur = (Millis, Channel, Arc<str>, Millis, bool);
        // The (first response, resolution) of a case from its members so far.
        let case_value = |members: &[usize]| -> [Option<Dur>; 2] {
            let open = members
                .iter()
                .copied()
                .filter(|&i| tp(i).is_some_and(|e| e.kind == TouchpointKind::ContactOpened))
                .min_by(|&a, &b| {
                    let (a, b) = (tp(a).expect("touchpoint"), tp(b).expect("touchpoint"));
                    (a.occurred_at, &a.event_id).cmp(&(b.occurred_at, &b.event_id))
                });
            let Some(open) = open else {
                return [None, None];
            };
            let oe = tp(open).expect("touchpoint");
            [TouchpointKind::AgentReplied, TouchpointKind::CaseResolved].map(|kind| {
                let first = members
                    .iter()
                    .filter_map(|&i| tp(i))
                    .filter(|e| e.kind == kind && e.occurred_at >= oe.occurred_at)
                    .map(|e| e.occurred_at)
                    .min()?;
                let ms = first - oe.occurred_at;
                (ms <= cfg.case_ttl_ms).then(|| {
                    (
                        first,
                        oe.channel,
                        label(open),
                        ms,
                        ms <= cfg.response_target_ms,
                    )
                })
            })
        };
        // Per (partition, case id): its accepted events so far, and their contributions.
        type CaseSoFar = (Vec<usize>, [Option<Dur>; 2]);
        let mut cases: BTreeMap<(PartitionId, &str), CaseSoFar> = BTreeMap::new();
        for &i in &accepted {
            let Some(e) = tp(i) else { continue };
            let (true, Some(case)) = (e.kind.needs_case_id(), e.case_id.as_deref()) else {
                continue;
            };
            let entry = cases.entry((recs[i].0, case)).or_default();
            entry.0.push(i);
            let now = case_value(&entry.0);
            for (before, after) in entry.1.iter().zip(&now) {
                if before != after {
                    // The old contribution is retracted, the new one added: one update each.
                    for (x, ch, seg, _, _) in before.iter().chain(after) {
                        updates.push((*x, *ch, seg.clone()));
                    }
                }
            }
            entry.1 = now;
        }
        for ((p, _), (_, value)) in &cases {
            for (k, d) in value.iter().enumerate() {
                if let Some((x, channel, segment, ms, within)) = d {
                    contributions.push(Contribution {
                        x: *x,
                        partition: *p,
                        channel: *channel,
                        segment: segment.clone(),
                        what: if k == 0 {
                            What::FirstResponse {
                                ms: *ms,
                                within: *within,
                            }
                        } else {
                            What::Resolution {
                                ms: *ms,
                                within: *within,
                            }
                        },
                    });
                }
            }
        }

        // Closed loop: every accepted NPS detractor whose deadline lies behind its partition's
        // final touchpoint watermark is due; closed when an accepted outbound contact of the
        // same customer (same partition) lies in [t, deadline]. Due is one update, closed
        // another, whatever came first.
        for &i in &accepted {
            let (p, CxEvent::Survey(r)) = &recs[i] else {
                continue;
            };
            if r.metric != SurveyMetric::Nps || r.score > 6 {
                continue;
            }
            let deadline = r.submitted_at + cfg.follow_up_deadline_ms;
            let watermark_t = self
                .clocks
                .get(&(*p, Source::Touchpoints))
                .and_then(|c| c.watermark);
            if watermark_t.is_none_or(|w| deadline >= w) {
                continue;
            }
            let closed = accepted.iter().any(|&j| match &recs[j] {
                (q, CxEvent::Touchpoint(e)) => {
                    q == p
                        && e.kind == TouchpointKind::OutboundContact
                        && e.customer_id == r.customer_id
                        && (r.submitted_at..=deadline).contains(&e.occurred_at)
                }
                _ => false,
            });
            if closed {
                updates.push((deadline, r.channel, label(i)));
            }
            contributions.push(Contribution {
                x: deadline,
                partition: *p,
                channel: r.channel,
                segment: label(i),
                what: What::ClosedLoop { closed },
            });
            updates.push((deadline, r.channel, label(i)));
        }

        // Index per grouping-set key.
        let mut series: BTreeMap<GroupKey, Series> = BTreeMap::new();
        for (ci, c) in contributions.iter().enumerate() {
            for k in GroupKey::sets(c.channel, &c.segment) {
                series.entry(k).or_default().contributions.push((c.x, ci));
            }
        }
        for (x, ch, seg) in &updates {
            for k in GroupKey::sets(*ch, seg) {
                series.entry(k).or_default().updates.push(*x);
            }
        }
        for s in series.values_mut() {
            s.contributions.sort_unstable();
            s.updates.sort_unstable();
        }
        self.contributions = contributions;
        self.series = series;
    }

    // -- accessors ---------------------------------------------------------------------------

    /// The configuration this oracle was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The outcome of every record, in input order.
    pub fn outcomes(&self) -> &[Outcome] {
        &self.outcomes
    }

    /// The segment label (after the guard) of every accepted record.
    pub fn segment_label(&self, record: usize) -> Option<&Arc<str>> {
        self.labels.get(record).and_then(Option::as_ref)
    }

    /// Totals over all records.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Every source that delivered a record, with its final clock.
    pub fn sources(&self) -> &BTreeMap<(PartitionId, Source), SourceClock> {
        &self.clocks
    }

    /// The job watermark `W` right after record `record` (no idle sources; every source
    /// active from its first record on).
    pub fn watermark_after(&self, record: usize) -> Option<Millis> {
        self.watermark_after.get(record).copied().flatten()
    }

    /// The final job watermark (as [`Oracle::watermark_after`]).
    pub fn watermark(&self) -> Option<Millis> {
        self.watermark_after.last().copied().flatten()
    }

    /// `F = floor(W, 1 minute)` for the final watermark.
    pub fn frontier(&self) -> Option<Millis> {
        self.watermark()
            .map(|w| floor_local(w, MINUTE_MS, self.off))
    }

    /// True when the segment guard had to fold a name into `other` although another
    /// arrival order across sources could have admitted it: only then do the labels (and so
    /// the rows) depend on how the sources were interleaved.
    pub fn segments_depend_on_interleaving(&self) -> bool {
        self.folds_possible
    }

    /// Distinct segment names of accepted events (without `other` and `all`).
    pub fn segment_names(&self) -> &BTreeSet<String> {
        &self.segment_names
    }

    /// Customer ids, indexed by [`What::Event::customer`].
    pub fn customer_names(&self) -> &[Arc<str>] {
        &self.customers
    }

    /// Every contribution of the final set of accepted events.
    pub fn contributions(&self) -> &[Contribution] {
        &self.contributions
    }

    /// Window kinds in configuration order, then `day`: (name, is on the slide grid of end).
    pub fn window_names(&self) -> Vec<Arc<str>> {
        self.windows.iter().map(|w| w.name.clone()).collect()
    }

    /// True when `end` lies on the grid of the window named `window`, and the start that
    /// the window ending there has.
    pub fn window_start(&self, window: &str, end: Millis) -> Option<Millis> {
        let w = self.windows.iter().find(|w| &*w.name == window)?;
        (floor_local(end, w.slide, self.off) == end).then(|| w.start(end, self.off))
    }

    // -- part 3: windows ---------------------------------------------------------------------

    /// The parts of `[start, end)` for one grouping-set key.
    pub fn window(&self, key: &GroupKey, start: Millis, end: Millis) -> KpiParts {
        match self.series.get(key) {
            Some(s) => self.sum(s, start, end),
            None => KpiParts::default(),
        }
    }

    fn sum(&self, s: &Series, start: Millis, end: Millis) -> KpiParts {
        let lo = s.contributions.partition_point(|c| c.0 < start);
        let hi = s.contributions.partition_point(|c| c.0 < end);
        let mut p = KpiParts {
            updates: (s.updates.partition_point(|x| *x < end)
                - s.updates.partition_point(|x| *x < start)) as u64,
            ..KpiParts::default()
        };
        let mut customers: Vec<u32> = Vec::new();
        for &(_, ci) in &s.contributions[lo..hi] {
            p.contributions += 1;
            match &self.contributions[ci].what {
                What::Event { customer, kind } => {
                    customers.push(*customer);
                    match kind {
                        EventParts::Touch {
                            purchase,
                            contact,
                            revenue,
                        } => {
                            p.touchpoints += 1;
                            p.purchases += u64::from(*purchase);
                            p.contacts += u64::from(*contact);
                            if let Some((cur, units)) = revenue {
                                let line = p.revenue.entry(cur.clone()).or_default();
                                line.0 += i128::from(*units);
                                line.1 += 1;
                            }
                        }
                        EventParts::Nps(s) => match s {
                            9..=10 => p.promoters += 1,
                            7..=8 => p.passives += 1,
                            _ => p.detractors += 1,
                        },
                        EventParts::Csat(s) => {
                            p.csat_n += 1;
                            p.csat_satisfied += u64::from((4..=5).contains(s));
                        }
                        EventParts::Ces(s) => {
                            p.ces_n += 1;
                            p.ces_sum += i64::from(*s);
                            p.ces_easy += u64::from((5..=7).contains(s));
                        }
                        EventParts::OtherSurvey => {}
                    }
                }
                What::FirstResponse { ms, within } => {
                    p.first_response.ms.push(*ms);
                    p.first_response.within_target += u64::from(*within);
                }
                What::Resolution { ms, within } => {
                    p.resolution.ms.push(*ms);
                    p.resolution.within_target += u64::from(*within);
                }
                What::ClosedLoop { closed } => {
                    p.due += 1;
                    p.closed += u64::from(*closed);
                }
            }
        }
        p.first_response.ms.sort_unstable();
        p.resolution.ms.sort_unstable();
        customers.sort_unstable();
        customers.dedup();
        p.customers = customers
            .into_iter()
            .map(|c| self.customers[c as usize].clone())
            .collect();
        p.customers.sort();
        p
    }

    /// Calls `f` for every row that must exist after the last `advance` of a run whose final
    /// frontier is `frontier`: every window (rolling, and `day` when configured) whose end
    /// lies on its grid at or before `frontier` and every grouping-set key with at least one
    /// contribution or update in it — with the row's final parts. Keys come in [`GroupKey`] order,
    /// then window kinds in configuration order, then ends ascending.
    pub fn for_each_row(&self, frontier: Millis, mut f: impl FnMut(&RowKey, &KpiParts)) {
        for (key, s) in &self.series {
            // Updates without a contribution (retractions) also make rows.
            let first = s.contributions.first().map(|c| c.0).into_iter();
            let first = first.chain(s.updates.first().copied()).min();
            let last = s.contributions.last().map(|c| c.0).into_iter();
            let last = last.chain(s.updates.last().copied()).max();
            let (Some(first), Some(last)) = (first, last) else {
                continue;
            };
            for w in &self.windows {
                // Ends after the first contribution whose window still reaches the last one.
                let mut end = floor_local(first, w.slide, self.off) + w.slide;
                while end <= frontier {
                    let start = w.start(end, self.off);
                    if start > last {
                        break;
                    }
                    let parts = self.sum(s, start, end);
                    if !parts.is_empty() {
                        let rk = RowKey {
                            window: w.name.clone(),
                            end,
                            channel: key.channel,
                            segment: key.segment.clone(),
                            start,
                        };
                        f(&rk, &parts);
                    }
                    end += w.slide;
                }
            }
        }
    }

    /// Every row [`Oracle::for_each_row`] visits, collected.
    pub fn expected_rows(&self, frontier: Millis) -> BTreeMap<RowKey, KpiParts> {
        let mut out = BTreeMap::new();
        self.for_each_row(frontier, |k, p| {
            out.insert(k.clone(), p.clone());
        });
        out
    }
}

/// The expected final rows of `input` up to `frontier` (see [`Oracle::for_each_row`]).
pub fn expected_rows(
    cfg: &EngineConfig,
    input: &Input,
    frontier: Millis,
) -> BTreeMap<RowKey, KpiParts> {
    Oracle::new(cfg, input).expected_rows(frontier)
}

// ---------------------------------------------------------------------------------------------
// Comparisons
// ---------------------------------------------------------------------------------------------

fn durations_of(t: &Option<Box<ResponseTimeTally>>) -> (Vec<(i32, u64)>, u64, u64) {
    match t {
        None => (Vec::new(), 0, 0),
        Some(t) => (
            t.sketch.buckets().collect(),
            t.sketch.zero_count(),
            t.within_target,
        ),
    }
}

/// Every difference between the expected parts and an observed [`KpiState`] (e.g. a row's
/// `state`, or parts read back from a sink), one readable line each; empty when equal.
///
/// Counts, sums, `updates` and revenue lines must be equal; the duration sketches must equal
/// sketches built by adding the expected durations (bucket for bucket: merging and retracting
/// are exact); the HyperLogLog must equal one built by inserting the expected customer ids
/// (register for register). `None` and an empty duration tally count as equal.
pub fn diff_state(expected: &KpiParts, observed: &KpiState) -> Vec<String> {
    let want = expected.to_state();
    let mut errs = diff_states(&want, observed);
    // Say what the sketches should have held, in the expected terms.
    for e in &mut errs {
        if e.starts_with("first_response") {
            e.push_str(&format!(
                " (expected durations {:?} ms)",
                expected.first_response.ms
            ));
        } else if e.starts_with("resolution") {
            e.push_str(&format!(
                " (expected durations {:?} ms)",
                expected.resolution.ms
            ));
        } else if e.starts_with("customers") {
            e.push_str(&format!(
                " (expected {} customers: {:?})",
                expected.customers.len(),
                expected.customers
            ));
        }
    }
    errs
}

/// Every difference between two [`KpiState`]s, one readable line each (`a` is called
/// "expected", `b` "got"); empty when they hold the same parts. `None` and an empty duration
/// tally count as equal; HyperLogLogs compare by register values.
pub fn diff_states(a: &KpiState, b: &KpiState) -> Vec<String> {
    let mut errs = Vec::new();
    macro_rules! eq {
        ($name:expr, $e:expr, $g:expr) => {
            if $e != $g {
                errs.push(format!("{}: expected {:?}, got {:?}", $name, $e, $g));
            }
        };
    }
    eq!("updates (version)", a.updates, b.updates);
    eq!("touchpoints", a.touchpoints, b.touchpoints);
    eq!("contacts", a.contacts, b.contacts);
    eq!("purchases", a.purchases, b.purchases);
    let lines = |s: &KpiState| -> Vec<(String, i128, u64)> {
        s.revenue
            .lines()
            .map(|(c, u, n)| (c.as_str().to_string(), u, n))
            .collect()
    };
    eq!("revenue", lines(a), lines(b));
    eq!(
        "nps (promoters, passives, detractors)",
        (a.nps.promoters, a.nps.passives, a.nps.detractors),
        (b.nps.promoters, b.nps.passives, b.nps.detractors)
    );
    eq!(
        "csat (satisfied, n)",
        (a.csat.satisfied, a.csat.n),
        (b.csat.satisfied, b.csat.n)
    );
    eq!(
        "ces (n, sum, easy)",
        (a.ces.n, a.ces.sum, a.ces.easy),
        (b.ces.n, b.ces.sum, b.ces.easy)
    );
    for (name, x, y) in [
        ("first_response", &a.first_response, &b.first_response),
        ("resolution", &a.resolution, &b.resolution),
    ] {
        let (xb, xz, xw) = durations_of(x);
        let (yb, yz, yw) = durations_of(y);
        if (&xb, xz) != (&yb, yz) {
            errs.push(format!(
                "{name} sketch: expected {} durations (zero bucket {xz}, buckets {xb:?}), got {} \
                 (zero bucket {yz}, buckets {yb:?})",
                xz + xb.iter().map(|b| b.1).sum::<u64>(),
                yz + yb.iter().map(|b| b.1).sum::<u64>(),
            ));
        }
        eq!(format!("{name}.within_target"), xw, yw);
    }
    eq!(
        "closed_loop (due, closed)",
        (a.closed_loop.due, a.closed_loop.closed),
        (b.closed_loop.due, b.closed_loop.closed)
    );
    if a.customers != b.customers {
        let regs = |h: &Hll| h.register_pairs().count();
        errs.push(format!(
            "customers HyperLogLog: expected {} non-zero registers (estimate {}), got {} \
             (estimate {})",
            regs(&a.customers),
            a.customers.estimate(),
            regs(&b.customers),
            b.customers.estimate()
        ));
    }
    errs
}

fn approx(a: Option<f64>, b: Option<f64>, tol: f64) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= tol,
        _ => false,
    }
}

/// The Wilson score interval (95 %) for `successes` out of `n`, clamped to [0, 1].
pub fn wilson(successes: u64, n: u64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let (z, nf) = (Z_95, n as f64);
    let p = successes as f64 / nf;
    let denom = 1.0 + z * z / nf;
    let center = (p + z * z / (2.0 * nf)) / denom;
    let half = z / denom * (p * (1.0 - p) / nf + z * z / (4.0 * nf * nf)).sqrt();
    Some(((center - half).max(0.0), (center + half).min(1.0)))
}

fn check_durations(
    field: &str,
    exp: &Durations,
    got: &ResponseTimeSnapshot,
    errs: &mut Vec<String>,
) {
    let n = exp.ms.len() as u64;
    if got.n != n {
        errs.push(format!("{field}.n: expected {n}, got {}", got.n));
    }
    if got.within_target != exp.within_target {
        errs.push(format!(
            "{field}.within_target: expected {}, got {}",
            exp.within_target, got.within_target
        ));
    }
    let share = (n > 0).then(|| exp.within_target as f64 / n as f64);
    if !approx(share, got.within_target_share, 1e-9) {
        errs.push(format!(
            "{field}.within_target_share: expected {share:?}, got {:?}",
            got.within_target_share
        ));
    }
    for (q_pct, name, value) in [
        (50, "p50_ms", got.p50_ms),
        (90, "p90_ms", got.p90_ms),
        (99, "p99_ms", got.p99_ms),
    ] {
        if exp.ms.is_empty() {
            if value.is_some() {
                errs.push(format!(
                    "{field}.{name}: expected None (no durations), got {value:?}"
                ));
            }
            continue;
        }
        // The exact order statistic of rank floor(q·(n−1)), in integer arithmetic.
        let rank = (q_pct * (exp.ms.len() - 1)) / 100;
        let exact = exp.ms[rank].max(0) as f64;
        let ok = match value {
            None => false,
            Some(v) if exact == 0.0 => v == 0.0,
            Some(v) => (v - exact).abs() <= 0.01 * exact * (1.0 + 1e-9),
        };
        if !ok {
            errs.push(format!(
                "{field}.{name}: expected {exact} ms ±1 % (rank {rank} of {:?}), got {value:?}",
                exp.ms
            ));
        }
    }
}

/// Every difference between the expected parts and an emitted row's derived KPI values, one
/// readable line each. Counts must be equal; derived values (NPS score and margin of error,
/// CSAT share and Wilson interval, CES mean and easy share, within-target shares,
/// closed-loop rate) within 1e-9 of the docs' formulas; quantiles within 1 % of the exact
/// order statistic of rank `floor(q·(n−1))`; the distinct customer count within
/// max(2 %, 1) of the exact count.
pub fn diff_snapshot(exp: &KpiParts, k: &KpiSnapshot) -> Vec<String> {
    let mut errs = Vec::new();
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
        (
            Some(100.0 * (exp.promoters as f64 - exp.detractors as f64) / nf),
            Some(Z_95 * 100.0 * (((p + d) - (p - d) * (p - d)).max(0.0) / nf).sqrt()),
        )
    };
    close!("nps.score", score, k.nps.score);
    close!("nps.margin_of_error", moe, k.nps.margin_of_error);
    eq!("csat.n", exp.csat_n, k.csat.n);
    eq!("csat.satisfied", exp.csat_satisfied, k.csat.satisfied);
    let share = (exp.csat_n > 0).then(|| exp.csat_satisfied as f64 / exp.csat_n as f64);
    close!("csat.share", share, k.csat.share);
    let (lo, hi) = wilson(exp.csat_satisfied, exp.csat_n).unzip();
    close!("csat.wilson_low", lo, k.csat.wilson_low);
    close!("csat.wilson_high", hi, k.csat.wilson_high);
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
    check_durations(
        "first_response",
        &exp.first_response,
        &k.first_response,
        &mut errs,
    );
    check_durations("resolution", &exp.resolution, &k.resolution, &mut errs);
    eq!("closed_loop.due", exp.due, k.closed_loop.due);
    eq!("closed_loop.closed", exp.closed, k.closed_loop.closed);
    close!(
        "closed_loop.rate",
        (exp.due > 0).then(|| exp.closed as f64 / exp.due as f64),
        k.closed_loop.rate
    );
    let distinct = exp.customers.len() as u64;
    let tol = (0.02 * distinct as f64).max(1.0);
    if (k.customers as f64 - distinct as f64).abs() > tol {
        errs.push(format!(
            "customers: expected {distinct} (±{tol}), got {}",
            k.customers
        ));
    }
    errs
}

/// [`diff_snapshot`] and [`diff_state`] of an emitted row, plus its `start` and `version`.
pub fn diff_row(key: &RowKey, exp: &KpiParts, row: &KpiRow) -> Vec<String> {
    let mut errs = Vec::new();
    if row.start != key.start {
        errs.push(format!(
            "start: expected {}, got {}",
            fmt_time(key.start),
            fmt_time(row.start)
        ));
    }
    if row.version != exp.updates {
        errs.push(format!(
            "version: expected {} (updates in the window), got {}",
            exp.updates, row.version
        ));
    }
    errs.extend(diff_snapshot(exp, &row.kpis));
    errs.extend(diff_state(exp, &row.state));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxpulse_core::{Amount, SurveyResponse, TouchpointEvent};

    fn tp(id: &str, t: Millis, kind: TouchpointKind, case: Option<&str>) -> CxEvent {
        CxEvent::Touchpoint(TouchpointEvent {
            event_id: id.into(),
            occurred_at: t,
            customer_id: "c1".into(),
            segment: "smb".into(),
            channel: Channel::Phone,
            touchpoint: "support".into(),
            kind,
            case_id: case.map(str::to_string),
            amount: None,
            currency: None,
            attributes: Vec::new(),
        })
    }

    fn cfg() -> EngineConfig {
        EngineConfig {
            correction_horizon_ms: 30 * MINUTE_MS,
            ..EngineConfig::default()
        }
    }

    const H: Millis = HOUR_MS;

    #[test]
    fn acceptance_is_per_source() {
        let nps = |id: &str, t: Millis| {
            CxEvent::Survey(SurveyResponse {
                response_id: id.into(),
                submitted_at: t,
                customer_id: "c1".into(),
                segment: "smb".into(),
                channel: Channel::Web,
                touchpoint: "survey".into(),
                metric: SurveyMetric::Nps,
                score: 10,
                comment: None,
                language: None,
                case_id: None,
            })
        };
        let mut input = Input::new();
        input.push(0, tp("a", 10 * H, TouchpointKind::Visit, None));
        // 08:00 is far behind the touchpoint floor, but the survey source has none yet.
        input.push(0, nps("s1", 8 * H));
        input.push(0, tp("b", 8 * H, TouchpointKind::Visit, None));
        input.push(0, nps("s1", 8 * H));
        let o = Oracle::new(&cfg(), &input);
        assert_eq!(
            o.outcomes(),
            &[
                Outcome::Accepted { late: false },
                Outcome::Accepted { late: false },
                Outcome::Rejected {
                    watermark: 10 * H - 2 * MINUTE_MS
                },
                Outcome::Duplicate,
            ]
        );
        // W was 09:58 with the touchpoint source alone; min(09:58, 07:58) would move it back,
        // and W never decreases.
        assert_eq!(o.watermark_after(0), Some(10 * H - 2 * MINUTE_MS));
        assert_eq!(o.watermark(), Some(10 * H - 2 * MINUTE_MS));
    }

    #[test]
    fn case_versions_count_retractions() {
        let mut input = Input::new();
        input.push(0, tp("o", 10 * H, TouchpointKind::ContactOpened, Some("k")));
        input.push(
            0,
            tp(
                "r2",
                10 * H + 30 * MINUTE_MS,
                TouchpointKind::AgentReplied,
                Some("k"),
            ),
        );
        input.push(
            0,
            tp(
                "r1",
                10 * H + 20 * MINUTE_MS,
                TouchpointKind::AgentReplied,
                Some("k"),
            ),
        );
        let o = Oracle::new(&cfg(), &input);
        let all = GroupKey {
            channel: None,
            segment: None,
        };
        let p = o.window(&all, 10 * H, 11 * H);
        // 3 events, FRT 30 min added, retracted, FRT 20 min added.
        assert_eq!(p.updates, 6);
        assert_eq!(p.first_response.ms, vec![20 * MINUTE_MS]);
        assert_eq!(p.touchpoints, 3);
        assert_eq!(p.contacts, 1);
        let state = p.to_state();
        assert!(diff_state(&p, &state).is_empty());
        let mut other = state.clone();
        other.touchpoints += 1;
        assert_eq!(diff_state(&p, &other).len(), 1);
        assert_eq!(diff_snapshot(&p, &state.snapshot()), Vec::<String>::new());
    }

    #[test]
    fn revenue_parts_round_trip() {
        let mut input = Input::new();
        let mut ev = tp("p", 10 * H, TouchpointKind::Purchase, None);
        if let CxEvent::Touchpoint(e) = &mut ev {
            e.amount = Some(Amount::from_units(12_3400));
            e.currency = Some("EUR".into());
        }
        input.push(0, ev);
        let o = Oracle::new(&cfg(), &input);
        let rows = o.expected_rows(12 * H);
        let (k, p) = rows
            .iter()
            .find(|(k, _)| &*k.window == "1h" && k.channel.is_none() && k.segment.is_none())
            .expect("a row");
        assert_eq!(k.end, 10 * H + MINUTE_MS);
        assert_eq!(p.revenue.get("EUR"), Some(&(12_3400, 1)));
        assert!(diff_snapshot(p, &p.to_state().snapshot()).is_empty());
    }
}
