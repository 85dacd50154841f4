//! The KPI window engine: turns a stream of validated CX events into "window updated" rows.
//!
//! Per source partition it keeps: the panes of every series, the ids it has seen (to count a
//! redelivered event once), the support cases being joined (contact opened → first reply →
//! resolved) and the detractors waiting for a follow-up. Events of one customer always come
//! from one partition (the input is keyed by customer), so every join is partition-local and
//! a partition's state can move to another instance on its own.
//!
//! Semantics (see `docs/windows.md` for the full contract):
//! * A partition has two sources (its touchpoints and its survey responses). An event is
//!   **accepted** when its event time is at or after its own source's `watermark − horizon`;
//!   accepted events behind that watermark are **late** and correct already-emitted windows
//!   (re-emitted with a higher version). Older events are **rejected** and handed back.
//!   What a partition counts depends only on its own records, so replays are exact; the job
//!   watermark (minimum over sources) only decides when windows are emitted.
//! * [`KpiEngine::advance`] emits, for every rolling window kind and every window end on its
//!   grid up to the watermark, one row per group key with data, for the grouping sets
//!   (channel, segment), (channel, all), (all, segment) and (all, all); and one row per
//!   closed local calendar day.

use crate::events::{
    Channel, CxEvent, Millis, SurveyMetric, TouchpointEvent, TouchpointKind, DAY_MS, HOUR_MS,
    MINUTE_MS,
};
use crate::expiry::{ExpiryQueue, MinuteBuckets};
use crate::kpi::{KpiSnapshot, KpiState, NpsGroup};
use crate::segments::{SegmentGuard, SegmentId, ALL_LABEL};
use crate::settled::{join, words, SettledCases};
use crate::watermark::{PartitionId, WatermarkTracker};
use crate::window::{
    Mergeable, PaneRef, PaneStore, Retention, SeriesId, Tier, TimeGrid, WindowConfigError,
    WindowSpec, BLOCK_MS, DAY_WINDOW_NAME,
};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::sync::Arc;
use thiserror::Error;

/// Engine settings. All durations in milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    pub windows: Vec<WindowSpec>,
    /// Also emit tumbling local calendar days (window kind `day`).
    pub calendar_days: bool,
    /// Local time for pane and day alignment: a fixed UTC offset in minutes.
    pub utc_offset_minutes: i32,
    /// Watermark = highest event time − this.
    pub allowed_lateness_ms: Millis,
    /// How far behind the watermark an event may still correct windows.
    pub correction_horizon_ms: Millis,
    /// A partition silent for this long (processing time) stops holding the watermark back.
    pub idle_timeout_ms: Millis,
    /// At most this many distinct segments; the rest fold into `other`.
    pub max_segments: usize,
    /// Segments admitted up front (count toward `max_segments`).
    pub preset_segments: Vec<String>,
    /// Support cases are joined for at most this long after they were opened.
    pub case_ttl_ms: Millis,
    /// Target for first response and resolution ("answered within 24 h").
    pub response_target_ms: Millis,
    /// A detractor counts as followed up when an outbound contact comes within this time.
    pub follow_up_deadline_ms: Millis,
    /// Remember written panes for [`KpiEngine::take_changed_panes`] (a sink persists them).
    pub persist_panes: bool,
    /// When the frontier jumps by more window ends than this in one `advance` (catching up
    /// after downtime, replaying history), only the latest this-many ends are emitted.
    /// `None`: every end.
    pub max_ends_per_advance: Option<usize>,
    /// Memory (per partition) for cached window bodies: the merged hours and days of long
    /// windows, so that evaluating a window does not merge them again at every end (see
    /// `docs/incremental-evaluation.md`). 0 disables them; results do not depend on it.
    /// Many windows over many busy series want far more than the default (see
    /// `docs/benchmarks.md`, session 12): `engine.window_body_mib` in the job's config.
    pub window_body_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            windows: WindowSpec::defaults(),
            calendar_days: true,
            utc_offset_minutes: 0,
            allowed_lateness_ms: 2 * MINUTE_MS,
            correction_horizon_ms: HOUR_MS,
            idle_timeout_ms: 30_000,
            max_segments: 200,
            preset_segments: Vec::new(),
            case_ttl_ms: 7 * DAY_MS,
            response_target_ms: DAY_MS,
            follow_up_deadline_ms: DAY_MS,
            persist_panes: false,
            max_ends_per_advance: None,
            window_body_bytes: 32 << 20,
        }
    }
}

/// Invalid engine settings.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EngineConfigError {
    #[error(transparent)]
    Window(#[from] WindowConfigError),
    #[error("`{field}` must be {rule} (got {value})")]
    Out {
        field: &'static str,
        rule: &'static str,
        value: i64,
    },
}

impl EngineConfig {
    pub fn validate(&self) -> Result<(), EngineConfigError> {
        TimeGrid::new(self.utc_offset_minutes)?;
        if self.windows.is_empty() && !self.calendar_days {
            return Err(WindowConfigError::NoWindows.into());
        }
        let mut names = FxHashSet::default();
        for w in &self.windows {
            w.validate()?;
            if !names.insert(w.name.as_str()) {
                return Err(WindowConfigError::DuplicateName(w.name.clone()).into());
            }
        }
        let checks: [(&'static str, i64, i64, &'static str); 6] = [
            ("allowed_lateness", self.allowed_lateness_ms, 0, ">= 0"),
            ("correction_horizon", self.correction_horizon_ms, 0, ">= 0"),
            ("idle_timeout", self.idle_timeout_ms, 1, ">= 1 ms"),
            ("case_ttl", self.case_ttl_ms, 1, ">= 1 ms"),
            ("response_target", self.response_target_ms, 1, ">= 1 ms"),
            (
                "follow_up_deadline",
                self.follow_up_deadline_ms,
                1,
                ">= 1 ms",
            ),
        ];
        for (field, value, min, rule) in checks {
            if value < min {
                return Err(EngineConfigError::Out { field, rule, value });
            }
        }
        if self.preset_segments.len() > self.max_segments {
            return Err(EngineConfigError::Out {
                field: "preset_segments",
                rule: "no more than max_segments entries",
                value: i64::try_from(self.preset_segments.len()).unwrap_or(i64::MAX),
            });
        }
        Ok(())
    }
}

/// A grouping-set key: `None` stands for "all".
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct GroupKey {
    pub channel: Option<Channel>,
    pub segment: Option<SegmentId>,
}

impl std::hash::Hash for GroupKey {
    /// One word per key: this is hashed four times per event.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let channel = self.channel.map_or(0xFF, |c| c as u64);
        let segment = self.segment.map_or(0xFFFF_FFFF, u64::from);
        state.write_u64(channel << 32 | segment);
    }
}

impl GroupKey {
    /// The four grouping sets an event of (channel, segment) contributes to.
    fn grouping_sets(channel: Channel, segment: SegmentId) -> [GroupKey; 4] {
        [
            GroupKey {
                channel: Some(channel),
                segment: Some(segment),
            },
            GroupKey {
                channel: Some(channel),
                segment: None,
            },
            GroupKey {
                channel: None,
                segment: Some(segment),
            },
            GroupKey {
                channel: None,
                segment: None,
            },
        ]
    }
}

/// Why an event was not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("event time {event_time} ms is more than the correction horizon ({horizon_ms} ms) behind the watermark {watermark} ms")]
pub struct TooLate {
    pub event_time: Millis,
    pub watermark: Millis,
    pub horizon_ms: Millis,
}

/// What happened to one ingested event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Counted. `late` when it was behind the watermark (it corrects emitted windows).
    Accepted { late: bool },
    /// Same id seen before on this partition: counted once already.
    Duplicate,
    /// Beyond the correction horizon: not counted; the caller routes it (dead letter).
    Rejected(TooLate),
}

/// One emitted window value, ready to be upserted by a sink on
/// (window, end, channel, segment) keeping the highest `version`.
#[derive(Clone, Debug, Serialize)]
pub struct KpiRow {
    /// `None`: merged over every partition of this engine; `Some(p)`: partition `p`'s part.
    pub partition: Option<PartitionId>,
    pub window: Arc<str>,
    pub start: Millis,
    pub end: Millis,
    #[serde(serialize_with = "serialize_channel")]
    pub channel: Option<Channel>,
    #[serde(serialize_with = "serialize_segment")]
    pub segment: Option<Arc<str>>,
    pub watermark: Millis,
    pub version: u64,
    pub kpis: KpiSnapshot,
    /// The mergeable parts behind `kpis` (for sinks that store partial aggregates). Shared
    /// by the rows of windows with the same content (a longer window whose extra span holds
    /// no contribution of the series takes the shorter window's row).
    #[serde(skip)]
    pub state: Arc<KpiState>,
}

impl KpiRow {
    pub fn channel_label(&self) -> &str {
        self.channel.map_or(ALL_LABEL, Channel::as_str)
    }

    pub fn segment_label(&self) -> &str {
        self.segment.as_deref().unwrap_or(ALL_LABEL)
    }
}

fn serialize_channel<S: Serializer>(c: &Option<Channel>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.map_or(ALL_LABEL, Channel::as_str))
}

fn serialize_segment<S: Serializer>(c: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.as_deref().unwrap_or(ALL_LABEL))
}

/// One persisted pane: a partition's mergeable parts for one (channel, segment) and period.
#[derive(Clone, Debug)]
pub struct PaneRecord {
    pub partition: PartitionId,
    pub tier: Tier,
    pub start: Millis,
    pub channel: Channel,
    pub segment: Arc<str>,
    pub state: KpiState,
}

/// Approximate heap bytes of the engine's state by part ([`KpiEngine::state_bytes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StateBytes {
    /// Writable panes (within the correction horizon).
    pub hot_panes: usize,
    /// Frozen panes (compact, read-only).
    pub frozen_panes: usize,
    /// Remembered event ids (duplicate detection).
    pub ids: usize,
    /// Support cases being joined, and settled ones kept until their TTL.
    pub cases: usize,
    /// Detractors waiting for a follow-up, outbound contacts, deadlines.
    pub follow_ups: usize,
    /// Cached window bodies (see [`crate::window::PaneStore::ensure_body`]).
    pub bodies: usize,
}

impl StateBytes {
    pub fn total(&self) -> usize {
        self.hot_panes + self.frozen_panes + self.ids + self.cases + self.follow_ups + self.bodies
    }
}

/// Counters of the engine's life so far, and its current size.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    pub accepted: u64,
    pub late: u64,
    pub duplicates: u64,
    pub rejected_too_late: u64,
    pub segments_folded: u64,
    pub rows_emitted: u64,
    pub corrections_emitted: u64,
    pub cases_expired_unanswered: u64,
    pub series: usize,
    pub minute_panes: usize,
    pub hour_panes: usize,
    pub day_panes: usize,
    pub open_cases: usize,
    pub follow_up_customers: usize,
    pub dedup_ids: usize,
}

/// The opening contact of a case: earliest by (time, event id).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct CaseOpen {
    at: Millis,
    event_id: Box<str>,
    key: (Channel, SegmentId),
}

impl CaseOpen {
    /// The open of a case checkpointed under its hash: its event id no longer matters.
    fn without_event_id(at: Millis, key: (Channel, SegmentId)) -> CaseOpen {
        CaseOpen {
            at,
            event_id: Box::from(""),
            key,
        }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct CaseState {
    /// Open, first reply and resolution all lie behind `W − horizon`: nothing acceptable can
    /// change this case any more, so its details are dropped and later events of the same
    /// case id are ignored (they must not start a new case) until `open + case_ttl` passes.
    settled: bool,
    open: Option<CaseOpen>,
    /// Sorted reply times.
    replies: Vec<Millis>,
    /// Sorted resolution times.
    resolutions: Vec<Millis>,
}

/// A duration attributed to a pane: (pane time, series, duration, within target).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TimedDuration {
    at: Millis,
    key: (Channel, SegmentId),
    duration: Millis,
    within_target: bool,
}

impl TimedDuration {
    /// The duration from a case's open to its first reply or resolution `first` (at or after
    /// the open), attributed to `first`'s pane; `None` beyond the case TTL.
    fn between(
        open_at: Millis,
        key: (Channel, SegmentId),
        first: Option<Millis>,
        cfg: &EngineConfig,
    ) -> Option<TimedDuration> {
        let at = first?;
        let duration = at - open_at;
        (duration <= cfg.case_ttl_ms).then_some(TimedDuration {
            at,
            key,
            duration,
            within_target: duration <= cfg.response_target_ms,
        })
    }
}

/// A case whose open lies behind the touchpoint floor (`W − horizon`) and that is not yet
/// settled (its first reply or resolution is missing or still ahead of the floor). Its open
/// can no longer change — an earlier open would be rejected as too late — so the open's
/// event id and the replies and resolutions before it no longer matter: only the first
/// reply and the first resolution at or after the open do. Kept under the case id's hash
/// ([`id_hash`]) in 32 bytes instead of the case's strings and lists (`docs/windows.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AgedCase {
    open_at: Millis,
    key: (Channel, SegmentId),
    /// The first reply at or after the open, [`AgedCase::NONE`] if there is none yet.
    first_reply: Millis,
    /// The first resolution at or after the open, [`AgedCase::NONE`] if there is none yet.
    first_resolution: Millis,
}

impl AgedCase {
    /// "None yet" for `first_reply` and `first_resolution` (a `Millis` sentinel keeps the
    /// entry at 32 bytes; an `Option` would make it 48).
    const NONE: Millis = Millis::MAX;

    /// The aged form of `case`, if it has an open.
    fn of(case: &CaseState) -> Option<AgedCase> {
        let open = case.open.as_ref()?;
        let first =
            |times: &[Millis]| CaseState::first_at_or_after(times, open.at).unwrap_or(Self::NONE);
        Some(AgedCase {
            open_at: open.at,
            key: open.key,
            first_reply: first(&case.replies),
            first_resolution: first(&case.resolutions),
        })
    }

    fn get(t: Millis) -> Option<Millis> {
        (t != Self::NONE).then_some(t)
    }

    fn first_response(&self, cfg: &EngineConfig) -> Option<TimedDuration> {
        TimedDuration::between(self.open_at, self.key, Self::get(self.first_reply), cfg)
    }

    fn resolution(&self, cfg: &EngineConfig) -> Option<TimedDuration> {
        TimedDuration::between(
            self.open_at,
            self.key,
            Self::get(self.first_resolution),
            cfg,
        )
    }

    /// Records an accepted event of the case at `t`. Accepted events lie at or after the
    /// floor, hence after the open: an open cannot be earlier, a reply or resolution can
    /// only become the first one.
    fn record(&mut self, kind: TouchpointKind, t: Millis) {
        debug_assert!(t > self.open_at, "accepted events lie after an aged open");
        let first = match kind {
            TouchpointKind::AgentReplied => &mut self.first_reply,
            TouchpointKind::CaseResolved => &mut self.first_resolution,
            _ => return,
        };
        if t >= self.open_at {
            *first = (*first).min(t);
        }
    }

    /// [`CaseState::is_expired`] for an aged case.
    fn is_expired(&self, floor: Millis, cfg: &EngineConfig) -> bool {
        self.open_at + cfg.case_ttl_ms < floor
    }

    /// The earliest time the floor must pass for the case to expire or settle: it is
    /// expired or settled exactly when this lies before the floor.
    fn due(&self, cfg: &EngineConfig) -> Millis {
        let settles = self.first_reply.max(self.first_resolution);
        self.open_at.saturating_add(cfg.case_ttl_ms).min(settles)
    }

    /// True when its first reply and first resolution both lie behind the floor: nothing
    /// acceptable can change it any more ([`CaseState::is_final`] for an open behind the
    /// floor that has not expired).
    fn is_settled(&self, floor: Millis) -> bool {
        self.first_reply < floor && self.first_resolution < floor
    }

    /// The checkpoint entry of an aged case (format 3): its open without event id, at most
    /// one reply and one resolution.
    fn entry(hash: u128, aged: &AgedCase) -> (String, CaseState) {
        hashed_entry(
            hash,
            CaseState {
                settled: false,
                open: Some(CaseOpen::without_event_id(aged.open_at, aged.key)),
                replies: Self::get(aged.first_reply).into_iter().collect(),
                resolutions: Self::get(aged.first_resolution).into_iter().collect(),
            },
        )
    }
}

/// The aged cases of a partition by id hash, each queued under its [`AgedCase::due`] time,
/// so that an eviction looks only at the cases that settle or expire (not at a week of them).
#[derive(Clone, Debug, Default)]
struct AgedCases {
    cases: FxHashMap<u128, AgedCase>,
    due: MinuteBuckets<[u64; 2]>,
}

/// A case's first response and resolution (what it contributes).
type CaseDurations = (Option<TimedDuration>, Option<TimedDuration>);

impl AgedCases {
    fn insert(&mut self, hash: u128, aged: AgedCase, cfg: &EngineConfig) {
        self.due.push(aged.due(cfg), words(hash));
        self.cases.insert(hash, aged);
    }

    /// Records an accepted event at `t` of the case with id hash `hash`, if that case is
    /// aged: its contributions before and after.
    fn record(
        &mut self,
        hash: u128,
        kind: TouchpointKind,
        t: Millis,
        cfg: &EngineConfig,
    ) -> Option<(CaseDurations, CaseDurations)> {
        let aged = self.cases.get_mut(&hash)?;
        let (due, before) = (
            aged.due(cfg),
            (aged.first_response(cfg), aged.resolution(cfg)),
        );
        aged.record(kind, t);
        let now_due = aged.due(cfg);
        if now_due < due {
            self.due.push(now_due, words(hash));
        }
        Some((before, (aged.first_response(cfg), aged.resolution(cfg))))
    }

    /// Removes every case that the floor made expired or settled, handing each to `left`
    /// with its hash and whether it settled (else it expired).
    fn forget(
        &mut self,
        floor: Millis,
        cfg: &EngineConfig,
        mut left: impl FnMut(u128, &AgedCase, bool),
    ) {
        let cases = &mut self.cases;
        self.due.drain_before(floor, |words| {
            let hash = join(words);
            let aged = cases.get(&hash)?;
            let expired = aged.is_expired(floor, cfg);
            if expired || aged.is_settled(floor) {
                left(hash, aged, !expired);
                cases.remove(&hash);
                return None;
            }
            Some(aged.due(cfg))
        });
    }

    fn len(&self) -> usize {
        self.cases.len()
    }

    fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }
}

impl CaseState {
    fn first_at_or_after(times: &[Millis], t: Millis) -> Option<Millis> {
        let i = times.partition_point(|x| *x < t);
        times.get(i).copied()
    }

    fn duration_to(&self, times: &[Millis], cfg: &EngineConfig) -> Option<TimedDuration> {
        let open = self.open.as_ref()?;
        TimedDuration::between(
            open.at,
            open.key,
            Self::first_at_or_after(times, open.at),
            cfg,
        )
    }

    fn first_response(&self, cfg: &EngineConfig) -> Option<TimedDuration> {
        self.duration_to(&self.replies, cfg)
    }

    fn resolution(&self, cfg: &EngineConfig) -> Option<TimedDuration> {
        self.duration_to(&self.resolutions, cfg)
    }

    /// True when the case can be forgotten entirely: no acceptable event (at or after
    /// `floor`) can belong to it any more.
    fn is_expired(&self, floor: Millis, cfg: &EngineConfig) -> bool {
        match &self.open {
            Some(open) => open.at + cfg.case_ttl_ms < floor,
            None => self.is_final(floor, cfg),
        }
    }

    /// True when nothing that can still be accepted (at or after `floor`) can change it.
    fn is_final(&self, floor: Millis, cfg: &EngineConfig) -> bool {
        match &self.open {
            None => self
                .replies
                .iter()
                .chain(&self.resolutions)
                .all(|t| *t < floor),
            Some(open) => {
                if open.at >= floor {
                    return false;
                }
                if open.at + cfg.case_ttl_ms < floor {
                    return true;
                }
                let settled = |times: &[Millis]| {
                    Self::first_at_or_after(times, open.at).is_some_and(|t| t < floor)
                };
                settled(&self.replies) && settled(&self.resolutions)
            }
        }
    }
}

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct Detractor {
    at: Millis,
    key: (Channel, SegmentId),
    closed: bool,
    finalized: bool,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct FollowUps {
    /// Sorted outbound contact times.
    outbound: Vec<Millis>,
    detractors: Vec<Detractor>,
}

/// Everything the engine keeps for one source partition.
#[derive(Clone, Debug)]
struct PartitionState {
    panes: PaneStore<GroupKey, KpiState>,
    /// The pane series of the four grouping sets of each (channel, segment), indexed by
    /// `segment · 8 + channel` (a cache: rebuilt on demand).
    series_ids: Vec<[SeriesId; 4]>,
    /// Per source kind ([`SourceKind`]): seen event ids (128-bit hash), bucketed by
    /// event-time minute: a redelivered event carries its original event time, so it is
    /// looked up in its own minute's bucket; hot buckets stay small, and forgetting old ids
    /// drops whole buckets.
    seen: [BTreeMap<Millis, FxHashSet<u128>>; 2],
    /// Per source kind: the highest accepted event time. Acceptance, follow-up deadlines and
    /// forgetting depend only on these, so a partition's state is a function of its own
    /// records (whatever other partitions do, and whenever `advance` runs).
    max_time: [Option<Millis>; 2],
    /// Cases being joined (never `settled`: settling moves a case to `settled_cases`).
    cases: FxHashMap<Box<str>, CaseState>,
    /// Settled cases, kept until `open + case_ttl` so that their id is not a new case: the
    /// 128-bit hash of the case id ([`id_hash`]) and the open's event time. Nothing else of a
    /// settled case is ever read, so a tombstone takes 24 bytes (mostly in a sorted run)
    /// instead of the case's strings and lists.
    settled_cases: SettledCases,
    /// Unsettled cases whose open lies behind the touchpoint floor, by case id hash.
    aged_cases: AgedCases,
    follow_ups: FxHashMap<u64, FollowUps>,
    /// Pending follow-up deadlines: (deadline, customer hash).
    deadlines: ExpiryQueue<u64>,
    /// Customers by the time of each outbound contact: forgotten once the survey floor
    /// passes it (no detractor it could close can still come).
    outbound_due: ExpiryQueue<u64>,
    /// Customers by the deadline of each detractor that fell due: forgotten once the
    /// touchpoint floor passes it (no closing contact can still come).
    detractors_due: ExpiryQueue<u64>,
}

impl PartitionState {
    /// The source's own watermark: its highest accepted event time − allowed lateness.
    fn watermark(&self, kind: SourceKind, cfg: &EngineConfig) -> Option<Millis> {
        self.max_time[kind as usize].map(|m| m.saturating_sub(cfg.allowed_lateness_ms))
    }

    /// Events of `kind` before this are rejected: the source's own watermark − horizon.
    fn floor(&self, kind: SourceKind, cfg: &EngineConfig) -> Option<Millis> {
        self.watermark(kind, cfg)
            .map(|w| w.saturating_sub(cfg.correction_horizon_ms))
    }

    fn new(grid: TimeGrid, cfg: &EngineConfig) -> Self {
        PartitionState {
            panes: PaneStore::new(grid)
                .with_persistence(cfg.persist_panes)
                .with_body_budget(cfg.window_body_bytes),
            series_ids: Vec::new(),
            seen: [BTreeMap::new(), BTreeMap::new()],
            max_time: [None, None],
            cases: FxHashMap::default(),
            settled_cases: SettledCases::new(),
            aged_cases: AgedCases::default(),
            follow_ups: FxHashMap::default(),
            deadlines: ExpiryQueue::default(),
            outbound_due: ExpiryQueue::default(),
            detractors_due: ExpiryQueue::default(),
        }
    }
}

/// The two sources of a partition: its touchpoint topic and its survey topic (co-partitioned,
/// so one customer's touchpoints and responses share the partition number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SourceKind {
    Touchpoints = 0,
    Surveys = 1,
}

impl SourceKind {
    pub fn of(event: &CxEvent) -> SourceKind {
        match event {
            CxEvent::Touchpoint(_) => SourceKind::Touchpoints,
            CxEvent::Survey(_) => SourceKind::Surveys,
        }
    }

    /// The watermark source of `partition`'s topic of this kind.
    pub fn source(self, partition: PartitionId) -> PartitionId {
        partition.saturating_mul(2).saturating_add(self as i32)
    }
}

/// A body is cached for a range of at least this many hour and day panes, and a block for
/// at least this many minute panes (see [`crate::window::PaneStore::ensure_body`]): an
/// `advance` reads a head again for each hour of its ends, several times an hour, and
/// most of these panes are frozen (decoded at each read).
const MIN_BODY_PANES: usize = 2;

/// The ends of one window to evaluate for one group key in one `advance`: the first
/// `corrections` re-emit windows emitted before, the others are new.
struct WindowEnds {
    window: usize,
    ends: Vec<Millis>,
    corrections: usize,
}

/// Whether two window ends lie in the same hour (they then share a body and the minutes
/// before them: see [`KpiEngine::evaluate_key`]).
fn same_hour(grid: &TimeGrid, a: Millis, b: Millis) -> bool {
    grid.floor(a, HOUR_MS) == grid.floor(b, HOUR_MS)
}

/// How [`KpiEngine::evaluate_key`] gets the state of one window end.
#[derive(Clone, Copy)]
struct Planned {
    end: Millis,
    start: Millis,
    /// The row of a shorter window with the same end and the same state.
    taken: Option<usize>,
    /// The previous end of the window has the same start and lies in the same hour: this
    /// end's state is that one plus the minute panes between the two ends.
    extends: bool,
}

/// Part of a window's state (see [`KpiEngine::heads`]).
enum Head {
    /// The window before the hour that holds its end.
    Before(KpiState),
    /// The whole window.
    Whole(KpiState),
}

/// Pane updates plus the bookkeeping of which emitted windows they invalidate.
struct PaneWriter<'a> {
    panes: &'a mut PaneStore<GroupKey, KpiState>,
    series_ids: &'a mut Vec<[SeriesId; 4]>,
    grid: TimeGrid,
    /// Windows ending at or before this were emitted.
    frontier: Option<Millis>,
    dirty: &'a mut FxHashMap<GroupKey, (Millis, Millis)>,
}

impl PaneWriter<'_> {
    fn apply(
        &mut self,
        key: (Channel, SegmentId),
        t: Millis,
        mut update: impl FnMut(&mut KpiState),
    ) {
        let ids = self.series_ids(key);
        self.panes.apply_ids(&ids, t, |s| {
            s.updates += 1;
            update(s)
        });
        if self.frontier.is_some_and(|f| t < f) {
            let minute = self.grid.floor(t, MINUTE_MS);
            for k in GroupKey::grouping_sets(key.0, key.1) {
                let e = self.dirty.entry(k).or_insert((minute, minute));
                e.0 = e.0.min(minute);
                e.1 = e.1.max(minute);
            }
        }
    }

    /// The series of the four grouping sets of `key`.
    #[inline]
    fn series_ids(&mut self, key: (Channel, SegmentId)) -> [SeriesId; 4] {
        let slot = key.1 as usize * Channel::ALL.len() + key.0.index();
        if slot >= self.series_ids.len() {
            self.series_ids.resize(slot + 1, [SeriesId::MAX; 4]);
        }
        if self.series_ids[slot][0] == SeriesId::MAX {
            let panes = &mut *self.panes;
            self.series_ids[slot] =
                GroupKey::grouping_sets(key.0, key.1).map(|k| panes.series_id(k));
        }
        self.series_ids[slot]
    }

    /// Replaces a case's contribution to first-response (or resolution) times: retracts
    /// `before` and adds `after` when they differ.
    fn replace_duration(
        &mut self,
        before: Option<TimedDuration>,
        after: Option<TimedDuration>,
        first_response: bool,
    ) {
        if before == after {
            return;
        }
        fn tally(s: &mut KpiState, first_response: bool) -> &mut crate::kpi::ResponseTimeTally {
            if first_response {
                s.first_response_mut()
            } else {
                s.resolution_mut()
            }
        }
        if let Some(d) = before {
            self.apply(d.key, d.at, |s| {
                tally(s, first_response).retract(d.duration, d.within_target)
            });
        }
        if let Some(d) = after {
            self.apply(d.key, d.at, |s| {
                tally(s, first_response).add(d.duration, d.within_target)
            });
        }
    }
}

/// Whether a window state gets a row: when it holds anything, and also when its content
/// nets to nothing after a retraction (its update count says it changed), so that the
/// empty row replaces the one emitted before (a sink keeps the highest version).
fn has_row(state: &KpiState) -> bool {
    state.updates > 0 || !state.is_empty()
}

fn id_hash(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

fn customer_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// The rolling KPI window engine. Pure: the caller passes the processing clock in.
#[derive(Clone, Debug)]
pub struct KpiEngine {
    cfg: EngineConfig,
    grid: TimeGrid,
    retention: Retention,
    window_names: Vec<Arc<str>>,
    day_name: Arc<str>,
    watermarks: WatermarkTracker,
    segments: SegmentGuard,
    partitions: FxHashMap<PartitionId, PartitionState>,
    /// Windows ending at or before this have been emitted.
    frontier: Option<Millis>,
    /// Per series, the minute range touched behind the frontier since the last advance.
    dirty: FxHashMap<GroupKey, (Millis, Millis)>,
    version: u64,
    stats: EngineStats,
}

impl KpiEngine {
    pub fn new(cfg: EngineConfig) -> Result<Self, EngineConfigError> {
        cfg.validate()?;
        let grid = TimeGrid::new(cfg.utc_offset_minutes)?;
        let retention =
            Retention::for_windows(&cfg.windows, cfg.calendar_days, cfg.correction_horizon_ms);
        Ok(KpiEngine {
            grid,
            retention,
            window_names: cfg
                .windows
                .iter()
                .map(|w| Arc::from(w.name.as_str()))
                .collect(),
            day_name: Arc::from(DAY_WINDOW_NAME),
            watermarks: WatermarkTracker::new(cfg.allowed_lateness_ms, cfg.idle_timeout_ms),
            segments: SegmentGuard::new(cfg.max_segments, &cfg.preset_segments),
            partitions: FxHashMap::default(),
            frontier: None,
            dirty: FxHashMap::default(),
            version: 0,
            stats: EngineStats::default(),
            cfg,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The job watermark (None until every active partition delivered an event).
    pub fn watermark(&self) -> Option<Millis> {
        self.watermarks.current()
    }

    /// Windows ending at or before this have been emitted.
    pub fn frontier(&self) -> Option<Millis> {
        self.frontier
    }

    pub fn watermarks(&self) -> &WatermarkTracker {
        &self.watermarks
    }

    pub fn segments(&self) -> &SegmentGuard {
        &self.segments
    }

    /// Versions handed out so far; rows of the next advance carry a higher one.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// After a restart, continue versions above what a sink already stored.
    pub fn set_version_floor(&mut self, version: u64) {
        self.version = self.version.max(version);
    }

    /// Changes [`EngineConfig::max_ends_per_advance`], e.g. to lift the limit once a replay
    /// of history has caught up.
    pub fn set_max_ends_per_advance(&mut self, limit: Option<usize>) {
        self.cfg.max_ends_per_advance = limit;
    }

    /// A partition was assigned to this instance.
    pub fn assign_partition(&mut self, partition: PartitionId, now: Millis) {
        self.partitions
            .entry(partition)
            .or_insert_with(|| PartitionState::new(self.grid, &self.cfg));
        for kind in [SourceKind::Touchpoints, SourceKind::Surveys] {
            self.watermarks.assign(kind.source(partition), now);
        }
    }

    /// A partition was revoked: its state is dropped (its owner restores it elsewhere).
    pub fn revoke_partition(&mut self, partition: PartitionId) {
        self.partitions.remove(&partition);
        for kind in [SourceKind::Touchpoints, SourceKind::Surveys] {
            self.watermarks.revoke(kind.source(partition));
        }
    }

    /// Ingests one validated event from `partition` at processing time `now`.
    pub fn ingest(
        &mut self,
        partition: PartitionId,
        event: &CxEvent,
        now: Millis,
    ) -> IngestOutcome {
        let kind = SourceKind::of(event);
        let source = kind.source(partition);
        self.watermarks.touch(source, now);
        let t = event.event_time();
        let grid = self.grid;
        let state = self
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionState::new(grid, &self.cfg));
        // The source's own watermark decides, so replaying a partition always accepts the
        // same events.
        let watermark = state.watermark(kind, &self.cfg);
        if let (Some(w), Some(floor)) = (watermark, state.floor(kind, &self.cfg)) {
            if t < floor {
                self.stats.rejected_too_late += 1;
                return IngestOutcome::Rejected(TooLate {
                    event_time: t,
                    watermark: w,
                    horizon_ms: self.cfg.correction_horizon_ms,
                });
            }
        }
        let minute = grid.floor(t, MINUTE_MS);
        if !state.seen[kind as usize]
            .entry(minute)
            .or_default()
            .insert(id_hash(event.id()))
        {
            self.stats.duplicates += 1;
            return IngestOutcome::Duplicate;
        }
        let late = watermark.is_some_and(|w| t < w);
        let segment = self.segments.admit(event.segment());
        let key = (event.channel(), segment);
        let mut writer = PaneWriter {
            panes: &mut state.panes,
            series_ids: &mut state.series_ids,
            grid,
            frontier: self.frontier,
            dirty: &mut self.dirty,
        };
        let customer = customer_hash(event.customer_id());
        match event {
            CxEvent::Touchpoint(e) => {
                writer.apply(key, t, |s| {
                    s.touchpoints += 1;
                    s.customers.insert_hash(customer);
                    match e.kind {
                        TouchpointKind::Purchase => {
                            s.purchases += 1;
                            if let (Some(amount), Some(currency)) = (e.amount, e.currency_code()) {
                                s.revenue.add(currency, amount.units);
                            }
                        }
                        TouchpointKind::ContactOpened => s.contacts += 1,
                        _ => {}
                    }
                });
                match e.kind {
                    TouchpointKind::ContactOpened
                    | TouchpointKind::AgentReplied
                    | TouchpointKind::CaseResolved => {
                        Self::join_case(
                            &self.cfg,
                            &mut state.cases,
                            &state.settled_cases,
                            &mut state.aged_cases,
                            &mut writer,
                            e,
                            key,
                        );
                    }
                    TouchpointKind::OutboundContact => {
                        let follow = state.follow_ups.entry(customer).or_default();
                        let pos = follow.outbound.partition_point(|x| *x <= t);
                        follow.outbound.insert(pos, t);
                        state.outbound_due.push(t, customer);
                        let deadline = self.cfg.follow_up_deadline_ms;
                        for d in follow.detractors.iter_mut() {
                            if !d.closed && d.at <= t && t <= d.at + deadline {
                                d.closed = true;
                                if d.finalized {
                                    writer.apply(d.key, d.at + deadline, |s| {
                                        s.closed_loop.closed += 1
                                    });
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            CxEvent::Survey(r) => {
                writer.apply(key, t, |s| {
                    s.customers.insert_hash(customer);
                    match r.metric {
                        SurveyMetric::Nps => s.nps.add(r.score),
                        SurveyMetric::Csat => s.csat.add(r.score),
                        SurveyMetric::Ces => s.ces.add(r.score),
                        SurveyMetric::Unknown => {}
                    }
                });
                if r.metric == SurveyMetric::Nps && NpsGroup::of(r.score) == NpsGroup::Detractor {
                    let deadline = self.cfg.follow_up_deadline_ms;
                    let follow = state.follow_ups.entry(customer).or_default();
                    let i = follow.outbound.partition_point(|x| *x < t);
                    let closed = follow.outbound.get(i).is_some_and(|o| *o <= t + deadline);
                    follow.detractors.push(Detractor {
                        at: t,
                        key,
                        closed,
                        finalized: false,
                    });
                    state.deadlines.push(t + deadline, customer);
                }
            }
        }
        let max = &mut state.max_time[kind as usize];
        *max = Some(max.map_or(t, |m| m.max(t)));
        if let Some(watermark) = state.watermark(SourceKind::Touchpoints, &self.cfg) {
            Self::finalize_follow_ups(
                &self.cfg,
                state,
                self.grid,
                self.frontier,
                &mut self.dirty,
                watermark,
            );
        }
        self.stats.accepted += 1;
        if late {
            self.stats.late += 1;
        }
        self.watermarks.observe(source, t, now);
        self.watermarks.advance(now);
        IngestOutcome::Accepted { late }
    }

    fn join_case(
        cfg: &EngineConfig,
        cases: &mut FxHashMap<Box<str>, CaseState>,
        settled_cases: &SettledCases,
        aged_cases: &mut AgedCases,
        writer: &mut PaneWriter<'_>,
        e: &TouchpointEvent,
        key: (Channel, SegmentId),
    ) {
        let Some(case_id) = e.case_id.as_deref() else {
            return;
        };
        let case = match cases.get_mut(case_id) {
            Some(c) => c,
            None => {
                if !settled_cases.is_empty() || !aged_cases.is_empty() {
                    let hash = id_hash(case_id);
                    // A settled case ignores its later events until it expires.
                    if settled_cases.contains(hash) {
                        return;
                    }
                    if let Some((before, after)) =
                        aged_cases.record(hash, e.kind, e.occurred_at, cfg)
                    {
                        writer.replace_duration(before.0, after.0, true);
                        writer.replace_duration(before.1, after.1, false);
                        return;
                    }
                }
                cases.entry(Box::from(case_id)).or_default()
            }
        };
        if case.settled {
            return;
        }
        let before = (case.first_response(cfg), case.resolution(cfg));
        let t = e.occurred_at;
        match e.kind {
            TouchpointKind::ContactOpened => {
                let candidate = CaseOpen {
                    at: t,
                    event_id: Box::from(e.event_id.as_str()),
                    key,
                };
                let earlier = case
                    .open
                    .as_ref()
                    .is_none_or(|o| (candidate.at, &*candidate.event_id) < (o.at, &*o.event_id));
                if earlier {
                    case.open = Some(candidate);
                }
            }
            TouchpointKind::AgentReplied => {
                let pos = case.replies.partition_point(|x| *x <= t);
                case.replies.insert(pos, t);
            }
            TouchpointKind::CaseResolved => {
                let pos = case.resolutions.partition_point(|x| *x <= t);
                case.resolutions.insert(pos, t);
            }
            _ => return,
        }
        writer.replace_duration(before.0, case.first_response(cfg), true);
        writer.replace_duration(before.1, case.resolution(cfg), false);
    }

    /// Moves event time forward to the watermark at `now`: emits every window that became
    /// complete and re-emits the windows corrected by late events since the last call.
    pub fn advance(&mut self, now: Millis) -> Vec<KpiRow> {
        self.advance_until(now, None)
    }

    /// The job watermark at processing time `now` (recomputed; see `docs/windows.md`).
    pub fn watermark_at(&mut self, now: Millis) -> Option<Millis> {
        self.watermarks.advance(now)
    }

    /// Event time that an [`advance`](Self::advance) at `now` would move the frontier by:
    /// the watermark minus the last emitted end (`Millis::MAX` when nothing was emitted yet,
    /// `0` without a watermark). A job that advances less often than it reads (during a
    /// catch-up) bounds by it how many window ends one advance emits.
    pub fn unemitted_span(&mut self, now: Millis) -> Millis {
        match (self.watermarks.advance(now), self.frontier) {
            (None, _) => 0,
            (Some(_), None) => Millis::MAX,
            (Some(w), Some(f)) => w.saturating_sub(f).max(0),
        }
    }

    /// [`KpiEngine::advance`], emitting no window that ends after `limit`: several engines
    /// (one per partition) advanced with the same limit emit the same window ends, so
    /// their rows can be summed.
    pub fn advance_until(&mut self, now: Millis, limit: Option<Millis>) -> Vec<KpiRow> {
        let Some(watermark) = self.watermarks.advance(now) else {
            return Vec::new();
        };
        let watermark = limit.map_or(watermark, |l| watermark.min(l));
        let new_frontier = self.grid.floor(watermark, MINUTE_MS);
        let old_frontier = match self.frontier {
            Some(f) if f >= new_frontier && self.dirty.is_empty() => return Vec::new(),
            Some(f) => f,
            // The first frontier: every window since the earliest data is emitted, so what
            // is emitted never depends on when the first `advance` ran.
            None => self
                .earliest_minute()
                .map_or(new_frontier - 1, |m| m.min(new_frontier - 1)),
        };
        let new_frontier = new_frontier.max(old_frontier);
        let first_end = Millis::MIN;
        for p in self.partitions.values_mut() {
            p.panes.prepare_reads();
            p.panes.close_through(new_frontier);
        }
        self.version += 1;
        let mut rows = Vec::new();
        let keys = self.all_keys();
        let dirty = std::mem::take(&mut self.dirty);
        let mut by_length: Vec<usize> = (0..self.cfg.windows.len()).collect();
        by_length.sort_by_key(|&wi| self.cfg.windows[wi].length_ms);
        let mut plan: Vec<WindowEnds> = Vec::with_capacity(by_length.len());
        for key in &keys {
            plan.clear();
            for &wi in &by_length {
                let w = &self.cfg.windows[wi];
                let mut ends = Vec::new();
                // Corrections: emitted ends after the earliest touched minute whose window
                // still reaches the latest touched minute; then the new ends.
                if let Some((lo, hi)) = dirty.get(key) {
                    ends.extend(
                        w.ends_in(&self.grid, *lo, old_frontier).filter(|end| {
                            *end >= first_end && w.start_for(&self.grid, *end) <= *hi
                        }),
                    );
                }
                let corrections = ends.len();
                ends.extend(self.new_ends(w, old_frontier, new_frontier));
                plan.push(WindowEnds {
                    window: wi,
                    ends,
                    corrections,
                });
            }
            self.ensure_bodies(key, &plan, new_frontier - self.retention.freeze_ms);
            self.evaluate_key(key, &plan, watermark, &mut rows);
        }
        if self.cfg.calendar_days {
            self.emit_days(
                &keys,
                &dirty,
                first_end,
                old_frontier,
                new_frontier,
                watermark,
                &mut rows,
            );
        }
        self.stats.rows_emitted += rows.len() as u64;
        self.frontier = Some(new_frontier);
        if new_frontier > old_frontier {
            self.evict(new_frontier);
        }
        rows
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_days(
        &mut self,
        keys: &[GroupKey],
        dirty: &FxHashMap<GroupKey, (Millis, Millis)>,
        first_end: Millis,
        old_frontier: Millis,
        new_frontier: Millis,
        watermark: Millis,
        rows: &mut Vec<KpiRow>,
    ) {
        let first_new_day_end = self.grid.floor(old_frontier, DAY_MS) + DAY_MS;
        for key in keys {
            let mut day_ends: Vec<Millis> = Vec::new();
            if let Some((lo, hi)) = dirty.get(key) {
                let mut d = self.grid.floor(*lo, DAY_MS);
                while d <= *hi && d + DAY_MS <= old_frontier {
                    if d + DAY_MS >= first_end {
                        day_ends.push(d + DAY_MS);
                    }
                    d += DAY_MS;
                }
            }
            let mut end = first_new_day_end;
            while end <= new_frontier {
                if end > old_frontier {
                    day_ends.push(end);
                }
                end += DAY_MS;
            }
            for end in day_ends {
                if let Some(row) =
                    self.row(&self.day_name.clone(), key, end - DAY_MS, end, watermark)
                {
                    if end <= old_frontier {
                        self.stats.corrections_emitted += 1;
                    }
                    rows.push(row);
                }
            }
        }
    }

    /// The earliest minute holding data (any partition).
    fn earliest_minute(&self) -> Option<Millis> {
        let all = GroupKey {
            channel: None,
            segment: None,
        };
        self.partitions
            .values()
            .filter_map(|p| {
                let series = p.panes.series(&all)?;
                Tier::ALL
                    .into_iter()
                    .filter_map(|tier| series.panes(tier).next().map(|(t, _)| t))
                    .min()
            })
            .min()
    }

    fn all_keys(&self) -> Vec<GroupKey> {
        let mut keys: Vec<GroupKey> = if self.partitions.len() == 1 {
            self.partitions
                .values()
                .flat_map(|p| p.panes.keys().copied())
                .collect()
        } else {
            let set: FxHashSet<GroupKey> = self
                .partitions
                .values()
                .flat_map(|p| p.panes.keys().copied())
                .collect();
            set.into_iter().collect()
        };
        keys.sort_unstable();
        keys
    }

    /// The window ends of `w` in `(old, new]`, limited by `max_ends_per_advance`.
    fn new_ends(&self, w: &WindowSpec, old: Millis, new: Millis) -> Vec<Millis> {
        let mut ends: Vec<Millis> = w.ends_in(&self.grid, old, new).collect();
        if let Some(limit) = self.cfg.max_ends_per_advance {
            if ends.len() > limit {
                ends.drain(..ends.len() - limit);
            }
        }
        ends
    }

    /// Whether a window of `key` starting at `start` has the state of a shorter one ending
    /// at the same time and starting at `shorter_start`: its extra span holds no
    /// contribution.
    fn takes_shorter_row(&self, key: &GroupKey, start: Millis, shorter_start: Millis) -> bool {
        shorter_start >= start && !self.holds_pane_starting_in(key, start, shorter_start)
    }

    /// True when some partition holds a pane of `key` starting in `[from, to)` that may hold
    /// a contribution made in `[from, to)` (see
    /// [`crate::window::PaneSeries::holds_pane_starting_in`]).
    fn holds_pane_starting_in(&self, key: &GroupKey, from: Millis, to: Millis) -> bool {
        self.partitions
            .values()
            .filter_map(|p| p.panes.series(key))
            .any(|series| series.holds_pane_starting_in(from, to))
    }

    /// Merges `key`'s panes over `[from, to)` from every partition into `acc`.
    fn merge_range(&self, key: &GroupKey, from: Millis, to: Millis, acc: &mut KpiState) {
        if from < to {
            for p in self.partitions.values() {
                p.panes.merge_range_into(key, from, to, acc);
            }
        }
    }

    /// Merges `key`'s panes of one tier starting in `[from, to)` from every partition.
    fn merge_tier(&self, key: &GroupKey, tier: Tier, from: Millis, to: Millis, acc: &mut KpiState) {
        if from < to {
            for series in self.partitions.values().filter_map(|p| p.panes.series(key)) {
                series.merge_tier_range(tier, from, to, acc);
            }
        }
    }

    /// The merged state of `key` over `[start, end)` across partitions.
    pub fn window_state(&self, key: &GroupKey, start: Millis, end: Millis) -> KpiState {
        let mut acc = KpiState::default();
        self.merge_range(key, start, end, &mut acc);
        acc
    }

    /// Caches, in every partition, the bodies that [`KpiEngine::evaluate_key`] will read
    /// for `plan`: per window and hour of its ends, the hour-aligned part of the window of
    /// the last end in that hour that does not take a shorter window's row, and the whole
    /// blocks of the minutes before it that end by `frozen_until` (frozen minutes are
    /// decoded at each read; hot ones are cheaper to merge than to keep), when they hold
    /// enough panes (see [`crate::window::PaneStore::ensure_body`]).
    fn ensure_bodies(&mut self, key: &GroupKey, plan: &[WindowEnds], frozen_until: Millis) {
        let grid = self.grid;
        // Window end → start of the longest window so far ending there (as `evaluate_key`
        // tracks it): an end whose row is a shorter window's reads no head, so its window
        // needs no body for it (a young series, or one with gaps, would otherwise keep
        // bodies that repeat a shorter window's and are never read).
        let mut longest: FxHashMap<Millis, Millis> = FxHashMap::default();
        for WindowEnds { window, ends, .. } in plan {
            let w = &self.cfg.windows[*window];
            let read: Vec<(Millis, Millis)> = ends
                .iter()
                .map(|&end| (end, w.start_for(&grid, end)))
                .filter(|&(end, start)| {
                    let shorter = longest.insert(end, start);
                    !shorter.is_some_and(|s| self.takes_shorter_row(key, start, s))
                })
                .collect();
            for group in read.chunk_by(|a, b| same_hour(&grid, a.0, b.0)) {
                let Some(&(last, start)) = group.last() else {
                    continue;
                };
                let b1 = grid.floor(last, HOUR_MS);
                let a1 = grid.ceil(start, HOUR_MS);
                if a1 < b1 {
                    for p in self.partitions.values_mut() {
                        p.panes.ensure_body(key, a1, b1, MIN_BODY_PANES);
                    }
                }
                // The head of `last` reads the minutes [start, a1) (`heads`).
                let blocks = a1.min(b1).min(frozen_until);
                let mut block = grid.ceil(start, BLOCK_MS);
                while block + BLOCK_MS <= blocks {
                    for p in self.partitions.values_mut() {
                        p.panes
                            .ensure_body(key, block, block + BLOCK_MS, MIN_BODY_PANES);
                    }
                    block += BLOCK_MS;
                }
            }
        }
    }

    /// Emits the rows of `key` for every window and end of `plan` (windows shortest first,
    /// ends ascending).
    ///
    /// A window `[s, e)` with `s` before the hour `b1` that holds `e` is read as its *head*
    /// `[s, b1)` and the minutes `[b1, e)` of that hour. The minutes are the same for every
    /// window ending at `e`: they are merged once per end (each end's from the previous end
    /// of the same hour). The head is the body cached over its hour-aligned part (see
    /// [`KpiEngine::ensure_bodies`]) plus, for a window with a minute tail, the minutes
    /// before its first full hour; the heads of one window's ends in one hour are built
    /// backwards from the last one, one small range at a time. So a row costs about two
    /// merges, whatever the number and length of the windows. A window whose extra span
    /// (before the start of a shorter window with the same end) holds no contribution has
    /// the shorter window's state, and takes its row (young series, and series with gaps,
    /// skip most evaluations): every pane the longer window reads and the shorter one does
    /// not starts in that span (see [`KpiEngine::takes_shorter_row`]).
    fn evaluate_key(
        &mut self,
        key: &GroupKey,
        plan: &[WindowEnds],
        watermark: Millis,
        rows: &mut Vec<KpiRow>,
    ) {
        let grid = self.grid;
        // The minutes [b1, e) of every end e, ascending.
        let mut all_ends: Vec<Millis> = plan.iter().flat_map(|p| p.ends.iter().copied()).collect();
        all_ends.sort_unstable();
        all_ends.dedup();
        let mut minutes: Vec<KpiState> = Vec::with_capacity(all_ends.len());
        for (i, &end) in all_ends.iter().enumerate() {
            let b1 = grid.floor(end, HOUR_MS);
            // From the previous end's minutes when it lies in the same hour.
            let (mut acc, from) = match i.checked_sub(1) {
                Some(j) if all_ends[j] >= b1 => (minutes[j].clone(), all_ends[j]),
                _ => (KpiState::default(), b1),
            };
            self.merge_tier(key, Tier::Minute, from, end, &mut acc);
            minutes.push(acc);
        }
        // Every end of the plan is in `all_ends`.
        let minutes_at = |end: Millis| &minutes[all_ends.partition_point(|e| *e < end)];
        // Window end → (start, index in `rows`) of the longest window evaluated so far.
        let mut shorter_rows: FxHashMap<Millis, (Millis, usize)> = FxHashMap::default();
        for WindowEnds {
            window,
            ends,
            corrections,
        } in plan
        {
            // Per end: its start, the row of a shorter window to take, if any, and whether
            // it extends the previous end's state (same start, same hour).
            let mut planned: Vec<Planned> = Vec::with_capacity(ends.len());
            for &end in ends {
                let start = self.cfg.windows[*window].start_for(&grid, end);
                let taken = shorter_rows
                    .get(&end)
                    .and_then(|&(s, row)| self.takes_shorter_row(key, start, s).then_some(row));
                let extends = taken.is_none()
                    && planned
                        .last()
                        .is_some_and(|p| p.start == start && same_hour(&grid, p.end, end));
                planned.push(Planned {
                    end,
                    start,
                    taken,
                    extends,
                });
            }
            let evaluated: Vec<(Millis, Millis)> = planned
                .iter()
                .filter(|p| p.taken.is_none() && !p.extends)
                .map(|p| (p.end, p.start))
                .collect();
            let mut states = self.heads(key, &evaluated).into_iter();
            // The state of the previous end (row or not), which an extending end grows.
            let mut previous: Option<(Millis, KpiState)> = None;
            for (i, p) in planned.iter().enumerate() {
                let Planned {
                    end,
                    start,
                    taken,
                    extends,
                } = *p;
                let (state, kpis) = match taken {
                    // The same panes as a shorter window's row: its state, shared.
                    Some(row) => (Arc::clone(&rows[row].state), Some(rows[row].kpis.clone())),
                    None => {
                        let mut state = if extends {
                            // [start, e') ⊕ minutes [e', end): both in the hour of `end`.
                            let Some((from, mut state)) = previous.take() else {
                                continue;
                            };
                            self.merge_tier(key, Tier::Minute, from, end, &mut state);
                            state
                        } else {
                            let Some(head) = states.next() else { continue };
                            match head {
                                Head::Whole(state) => state,
                                Head::Before(mut state) => {
                                    let tail = minutes_at(end);
                                    if !tail.is_empty() || tail.updates > 0 {
                                        state.merge(tail);
                                    }
                                    state
                                }
                            }
                        };
                        // Recounts a histogram that merges left stale once, for this row
                        // and every end that extends it.
                        state.prepare();
                        (Arc::new(state), None)
                    }
                };
                if planned.get(i + 1).is_some_and(|next| next.extends) {
                    previous = Some((end, KpiState::clone(&state)));
                }
                if !has_row(&state) {
                    continue;
                }
                let kpis = kpis.unwrap_or_else(|| state.snapshot());
                if i < *corrections {
                    self.stats.corrections_emitted += 1;
                }
                shorter_rows.insert(end, (start, rows.len()));
                rows.push(self.make_row_with(
                    &self.window_names[*window],
                    key,
                    start,
                    end,
                    watermark,
                    state,
                    kpis,
                ));
            }
        }
    }

    /// The heads of the windows `(end, start)` (ascending, one window): for a window that
    /// starts before the hour holding its end, its part before that hour
    /// ([`Head::Before`]); for a shorter one, the whole window ([`Head::Whole`]).
    fn heads(&self, key: &GroupKey, windows: &[(Millis, Millis)]) -> Vec<Head> {
        let grid = self.grid;
        let mut out: Vec<Head> = Vec::with_capacity(windows.len());
        for group in windows.chunk_by(|a, b| same_hour(&grid, a.0, b.0)) {
            let Some(&(last_end, last_start)) = group.last() else {
                continue;
            };
            let b1 = grid.floor(last_end, HOUR_MS);
            if last_start >= b1 {
                // Shorter than the minutes of its hour: read whole.
                for &(end, start) in group {
                    let mut state = KpiState::default();
                    self.merge_range(key, start, end, &mut state);
                    out.push(Head::Whole(state));
                }
                continue;
            }
            // [s_m, b1), built from the last one backwards.
            let mut heads = vec![KpiState::default(); group.len()];
            let last = group.len() - 1;
            self.merge_range(key, last_start, b1, &mut heads[last]);
            for m in (0..last).rev() {
                let (head, tail) = heads.split_at_mut(m + 1);
                let mut acc = KpiState::default();
                self.merge_range(key, group[m].1, group[m + 1].1, &mut acc);
                // Content that nets to nothing still carries its updates (the version).
                if acc.is_empty() && acc.updates == 0 {
                    head[m] = tail[0].clone();
                } else {
                    acc.merge(&tail[0]);
                    head[m] = acc;
                }
            }
            out.extend(heads.into_iter().map(Head::Before));
        }
        out
    }

    fn row(
        &self,
        window: &Arc<str>,
        key: &GroupKey,
        start: Millis,
        end: Millis,
        watermark: Millis,
    ) -> Option<KpiRow> {
        let state = self.window_state(key, start, end);
        has_row(&state).then(|| self.make_row(window, key, start, end, watermark, state))
    }

    fn make_row(
        &self,
        window: &Arc<str>,
        key: &GroupKey,
        start: Millis,
        end: Millis,
        watermark: Millis,
        state: KpiState,
    ) -> KpiRow {
        let kpis = state.snapshot();
        self.make_row_with(window, key, start, end, watermark, Arc::new(state), kpis)
    }

    #[allow(clippy::too_many_arguments)]
    fn make_row_with(
        &self,
        window: &Arc<str>,
        key: &GroupKey,
        start: Millis,
        end: Millis,
        watermark: Millis,
        state: Arc<KpiState>,
        kpis: KpiSnapshot,
    ) -> KpiRow {
        KpiRow {
            partition: None,
            window: window.clone(),
            start,
            end,
            channel: key.channel,
            segment: key.segment.map(|s| self.segments.name(s).clone()),
            watermark,
            version: state.updates,
            kpis,
            state,
        }
    }

    /// Counts every detractor of `state` whose follow-up deadline lies behind `watermark`
    /// (the touchpoint source's own watermark) as due, and as closed if a contact closed it
    /// by now. The deadline then lies at or after the frontier (the job watermark does not
    /// pass a source's own unless that source went idle), so falling due re-emits no window.
    /// A closing contact accepted later (late, before the floor passes the deadline) still
    /// counts: see `ingest`.
    fn finalize_follow_ups(
        cfg: &EngineConfig,
        state: &mut PartitionState,
        grid: TimeGrid,
        frontier: Option<Millis>,
        dirty: &mut FxHashMap<GroupKey, (Millis, Millis)>,
        watermark: Millis,
    ) {
        let deadline = cfg.follow_up_deadline_ms;
        let mut writer = PaneWriter {
            panes: &mut state.panes,
            series_ids: &mut state.series_ids,
            grid,
            frontier,
            dirty,
        };
        while let Some((_, customer)) = state.deadlines.pop_before(watermark) {
            let Some(follow) = state.follow_ups.get_mut(&customer) else {
                continue;
            };
            for d in follow.detractors.iter_mut() {
                if !d.finalized && d.at + deadline < watermark {
                    d.finalized = true;
                    state.detractors_due.push(d.at + deadline, customer);
                    // Due and closed are one update each, whether the closing contact came
                    // before this or comes later (late): versions do not depend on the
                    // interleaving of the two sources.
                    writer.apply(d.key, d.at + deadline, |s| s.closed_loop.due += 1);
                    if d.closed {
                        writer.apply(d.key, d.at + deadline, |s| s.closed_loop.closed += 1);
                    }
                }
            }
        }
    }

    /// Drops state nothing acceptable can change any more.
    ///
    /// What a partition forgets depends only on its own sources' floors, never on the job
    /// watermark, so forgetting never changes what a later record of it does.
    fn evict(&mut self, frontier: Millis) {
        let deadline = self.cfg.follow_up_deadline_ms;
        let cfg = &self.cfg;
        let grid = self.grid;
        let mut expired_unanswered = 0;
        // Panes are kept for corrections relative to the slowest source of the engine (it may
        // lag the job watermark, e.g. a source that started late). Not only the partition's
        // own: a row merges the panes of every partition the engine holds, so a correction by
        // a lagging source of one partition re-emits windows that hold the others' panes too.
        // A source that has delivered nothing yet may still correct anything: until every
        // source of every partition has a watermark, no pane is forgotten (forgetting must not
        // depend on when `advance` ran). With one partition per engine (the stream job) this
        // is the partition's own sources.
        let every_source_started = self
            .partitions
            .values()
            .all(|state| state.max_time.iter().all(Option::is_some));
        let slowest = self
            .partitions
            .values()
            .flat_map(|state| state.max_time.iter().flatten())
            .map(|m| grid.floor(m.saturating_sub(cfg.allowed_lateness_ms), MINUTE_MS))
            .min();
        for state in self.partitions.values_mut() {
            if every_source_started {
                let keep_for = slowest.map_or(frontier, |s| s.min(frontier));
                state.panes.evict(keep_for, &self.retention);
            }
            for kind in [SourceKind::Touchpoints, SourceKind::Surveys] {
                if let Some(floor) = state.floor(kind, cfg) {
                    let keep_from = grid.floor(floor, MINUTE_MS);
                    let seen = &mut state.seen[kind as usize];
                    *seen = seen.split_off(&keep_from);
                }
            }
            let Some(tp_floor) = state.floor(SourceKind::Touchpoints, cfg) else {
                continue;
            };
            // Outbound contacts can close detractors up to `deadline` before them; detractors
            // still to come lie at or after the survey floor. Before the survey source has
            // delivered anything, any detractor may still come: keep every contact.
            let outbound_floor = state.floor(SourceKind::Surveys, cfg).unwrap_or(Millis::MIN);
            let floor = tp_floor;
            let ttl = cfg.case_ttl_ms;
            state.settled_cases.expire(floor.saturating_sub(ttl));
            let settled_cases = &mut state.settled_cases;
            let aged_cases = &mut state.aged_cases;
            aged_cases.forget(floor, cfg, |hash, aged, settled| {
                if settled {
                    settled_cases.insert(hash, aged.open_at);
                } else if aged.first_response(cfg).is_none() {
                    expired_unanswered += 1;
                }
            });
            state.cases.retain(|id, case| {
                if case.is_expired(floor, cfg) {
                    if !case.settled && case.open.is_some() && case.first_response(cfg).is_none() {
                        expired_unanswered += 1;
                    }
                    return false;
                }
                if !case.settled && case.is_final(floor, cfg) {
                    if let Some(open) = &case.open {
                        // Settled: only its open time matters from now on (it expires at
                        // open + TTL); until then its id is ignored.
                        settled_cases.insert(id_hash(id), open.at);
                        return false;
                    }
                }
                // Its open can no longer change: keep only what can (see `AgedCase`).
                if let Some(aged) = AgedCase::of(case).filter(|a| a.open_at < floor) {
                    aged_cases.insert(id_hash(id), aged, cfg);
                    return false;
                }
                true
            });
            let follow_ups = &mut state.follow_ups;
            let mut forget = |customer: u64| {
                let Some(f) = follow_ups.get_mut(&customer) else {
                    return;
                };
                f.outbound.retain(|t| *t >= outbound_floor);
                f.detractors
                    .retain(|d| !(d.finalized && d.at + deadline < floor));
                if f.outbound.is_empty() && f.detractors.is_empty() {
                    follow_ups.remove(&customer);
                }
            };
            while let Some((_, customer)) = state.outbound_due.pop_before(outbound_floor) {
                forget(customer);
            }
            while let Some((_, customer)) = state.detractors_due.pop_before(floor) {
                forget(customer);
            }
        }
        self.stats.cases_expired_unanswered += expired_unanswered;
    }

    /// Every (channel, segment) pane of `partition` written since the last call, in all
    /// tiers, with its full current state (a sink upserts them). Grouping-set panes are not
    /// returned: they are rebuilt from these on restore.
    pub fn take_changed_panes(&mut self, partition: PartitionId) -> Vec<PaneRecord> {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return Vec::new();
        };
        let segments = &self.segments;
        state
            .panes
            .take_changed(|k| k.channel.is_some() && k.segment.is_some())
            .into_iter()
            .filter_map(|(k, tier, start, s)| {
                Some(PaneRecord {
                    partition,
                    tier,
                    start,
                    channel: k.channel?,
                    segment: segments.name(k.segment?).clone(),
                    state: s.clone(),
                })
            })
            .collect()
    }

    /// Counters and current sizes.
    pub fn stats(&self) -> EngineStats {
        let mut s = self.stats.clone();
        s.segments_folded = self.segments.folded_events();
        s.series = self
            .partitions
            .values()
            .map(|p| p.panes.series_count())
            .sum();
        s.minute_panes = self.pane_count(Tier::Minute);
        s.hour_panes = self.pane_count(Tier::Hour);
        s.day_panes = self.pane_count(Tier::Day);
        s.open_cases = self
            .partitions
            .values()
            .map(|p| p.cases.len() + p.aged_cases.len() + p.settled_cases.len())
            .sum();
        s.follow_up_customers = self.partitions.values().map(|p| p.follow_ups.len()).sum();
        s.dedup_ids = self
            .partitions
            .values()
            .flat_map(|p| p.seen.iter().flat_map(|s| s.values()))
            .map(|b| b.len())
            .sum();
        s
    }

    /// How many panes of `tier` are frozen (compact, read-only: see [`crate::window::Freeze`]).
    pub fn frozen_pane_count(&self, tier: crate::window::Tier) -> usize {
        self.partitions
            .values()
            .map(|p| p.panes.frozen_count(tier))
            .sum()
    }

    fn pane_count(&self, tier: crate::window::Tier) -> usize {
        self.partitions
            .values()
            .map(|p| p.panes.pane_count(tier))
            .sum()
    }

    /// Approximate bytes of the engine's state by part (walks everything: for benchmarks).
    pub fn state_bytes(&self) -> StateBytes {
        use std::mem::size_of;
        // Heap blocks carry a header and are rounded up (glibc: 16-byte steps, 32 minimum).
        let block = |n: usize| {
            if n == 0 {
                0
            } else {
                (n + 8).max(32).next_multiple_of(16)
            }
        };
        let mut b = StateBytes::default();
        for p in self.partitions.values() {
            for (_, series) in p.panes.iter() {
                b.bodies += series
                    .bodies()
                    .map(|s| {
                        48 + block(size_of::<KpiState>()) + s.approx_bytes() - size_of::<KpiState>()
                    })
                    .sum::<usize>();
                for tier in Tier::ALL {
                    for (_, pane) in series.panes(tier) {
                        // The ring-buffer slot: start + pane handle.
                        let slot = 32;
                        match pane {
                            PaneRef::Hot(s) => {
                                b.hot_panes += slot
                                    + block(size_of::<KpiState>() + 8)
                                    + s.approx_bytes().saturating_sub(size_of::<KpiState>())
                            }
                            PaneRef::Frozen(f) => b.frozen_panes += slot + block(f.len()),
                        }
                    }
                }
            }
            for buckets in &p.seen {
                for ids in buckets.values() {
                    b.ids += 64 + ids.capacity() * (size_of::<u128>() + 1);
                }
            }
            b.cases += p.cases.capacity() * (size_of::<(Box<str>, CaseState)>() + 1)
                + p.settled_cases.heap_bytes()
                + p.aged_cases.cases.capacity() * (size_of::<(u128, AgedCase)>() + 1)
                + p.aged_cases.due.heap_bytes();
            for (id, case) in &p.cases {
                b.cases += block(id.len())
                    + block(case.replies.capacity() * 8)
                    + block(case.resolutions.capacity() * 8)
                    + case.open.as_ref().map_or(0, |o| block(o.event_id.len()));
            }
            b.follow_ups += p.follow_ups.capacity() * (size_of::<(u64, FollowUps)>() + 1)
                + p.deadlines.heap_bytes()
                + p.outbound_due.heap_bytes()
                + p.detractors_due.heap_bytes();
            for f in p.follow_ups.values() {
                b.follow_ups += block(f.outbound.capacity() * 8)
                    + block(f.detractors.capacity() * size_of::<Detractor>());
            }
        }
        b
    }

    /// Approximate bytes held in panes (walks every pane: for benchmarks and periodic gauges).
    pub fn pane_bytes(&self) -> usize {
        self.partitions
            .values()
            .flat_map(|p| p.panes.iter())
            .flat_map(|(_, series)| {
                Tier::ALL.into_iter().flat_map(move |tier| {
                    series.panes(tier).map(|(_, pane)| match pane {
                        PaneRef::Hot(s) => s.approx_bytes() + 48,
                        PaneRef::Frozen(f) => f.len() + 48,
                    })
                })
            })
            .sum()
    }
}

/// Everything a [`KpiEngine`] holds, in a form that survives a restart (see
/// [`KpiEngine::checkpoint`]). The configuration is not part of it: the same configuration
/// must be passed to [`KpiEngine::restore`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct EngineSnapshot {
    format: u32,
    /// Admitted segment names in id order, and how many events were folded into `other`.
    segments: Vec<String>,
    watermarks: crate::watermark::WatermarkSnapshot,
    frontier: Option<Millis>,
    dirty: Vec<(GroupKey, Millis, Millis)>,
    partitions: Vec<PartitionSnapshot>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct PartitionSnapshot {
    partition: PartitionId,
    panes: Vec<(GroupKey, crate::window::Tier, Millis, KpiState)>,
    seen: [Vec<(Millis, Vec<u128>)>; 2],
    max_time: [Option<Millis>; 2],
    cases: Vec<(String, CaseState)>,
    follow_ups: Vec<(u64, FollowUps)>,
    deadlines: Vec<(Millis, u64)>,
}

/// 2: settled cases are written as [`settled_entry`] (format 1, which named them by their
/// case id, is still read). 3: aged cases are written as [`AgedCase::entry`] (formats 1
/// and 2 hold none: their unsettled cases are all in full).
const SNAPSHOT_FORMAT: u32 = 3;

/// Prefix of the id under which a settled or aged case is checkpointed: NUL, then its id
/// hash in hex (no case id starts with NUL: ids are validated text).
const HASHED_ID_PREFIX: char = '\u{0}';

/// A case checkpointed under its id hash (settled since format 2, aged since format 3).
fn hashed_entry(hash: u128, case: CaseState) -> (String, CaseState) {
    (format!("{HASHED_ID_PREFIX}{hash:032x}"), case)
}

/// A settled case as a checkpoint entry (format 2): only its open time is meaningful.
fn settled_entry(hash: u128, open_at: Millis) -> (String, CaseState) {
    hashed_entry(
        hash,
        CaseState {
            settled: true,
            open: Some(CaseOpen::without_event_id(open_at, (Channel::Unknown, 0))),
            ..CaseState::default()
        },
    )
}

/// A checkpoint that cannot be restored.
#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("checkpoint is not readable: {0}")]
    Decode(#[from] postcard::Error),
    #[error(
        "checkpoint format {found} is not supported (this build reads 1 to {SNAPSHOT_FORMAT})"
    )]
    Format { found: u32 },
    #[error("checkpoint segment {0:?} is not admitted in the same order by this configuration (preset segments changed?)")]
    Segments(String),
    #[error("checkpoint holds a malformed settled or aged case entry {0:?}")]
    HashedCase(String),
    #[error(transparent)]
    Config(#[from] EngineConfigError),
}

impl KpiEngine {
    /// The engine's whole state as bytes: restoring them ([`KpiEngine::restore`]) and feeding
    /// the records that followed gives exactly the rows an uninterrupted engine gives.
    pub fn checkpoint(&mut self) -> Vec<u8> {
        for p in self.partitions.values_mut() {
            p.panes.prepare_reads();
        }
        let snapshot = EngineSnapshot {
            format: SNAPSHOT_FORMAT,
            segments: self
                .segments
                .names()
                .iter()
                .map(|n| n.to_string())
                .collect(),
            watermarks: self.watermarks.snapshot(),
            frontier: self.frontier,
            dirty: self
                .dirty
                .iter()
                .map(|(k, (lo, hi))| (*k, *lo, *hi))
                .collect(),
            partitions: self
                .partitions
                .iter()
                .map(|(id, p)| PartitionSnapshot {
                    partition: *id,
                    panes: p
                        .panes
                        .iter()
                        .flat_map(|(k, series)| {
                            Tier::ALL.into_iter().flat_map(move |tier| {
                                series
                                    .panes(tier)
                                    .map(move |(start, s)| (*k, tier, start, s.to_state()))
                            })
                        })
                        .collect(),
                    seen: [0, 1].map(|i| {
                        p.seen[i]
                            .iter()
                            .map(|(m, ids)| (*m, ids.iter().copied().collect()))
                            .collect()
                    }),
                    max_time: p.max_time,
                    cases: p
                        .cases
                        .iter()
                        .map(|(id, c)| (id.to_string(), c.clone()))
                        .chain(
                            p.settled_cases
                                .iter()
                                .map(|(hash, at)| settled_entry(hash, at)),
                        )
                        .chain(
                            p.aged_cases
                                .cases
                                .iter()
                                .map(|(hash, aged)| AgedCase::entry(*hash, aged)),
                        )
                        .collect(),
                    follow_ups: p.follow_ups.iter().map(|(c, f)| (*c, f.clone())).collect(),
                    deadlines: p.deadlines.iter().collect(),
                })
                .collect(),
        };
        // Serializing plain data into a Vec cannot fail.
        postcard::to_allocvec(&snapshot).unwrap_or_default()
    }

    /// An engine with `cfg` and the state of `checkpoint`, at processing time `now`.
    pub fn restore(
        cfg: EngineConfig,
        checkpoint: &[u8],
        now: Millis,
    ) -> Result<KpiEngine, CheckpointError> {
        let snapshot: EngineSnapshot = postcard::from_bytes(checkpoint)?;
        if !(1..=SNAPSHOT_FORMAT).contains(&snapshot.format) {
            return Err(CheckpointError::Format {
                found: snapshot.format,
            });
        }
        let mut engine = KpiEngine::new(cfg)?;
        for (i, name) in snapshot.segments.iter().enumerate() {
            if engine.segments.admit(name) as usize != i {
                return Err(CheckpointError::Segments(name.clone()));
            }
        }
        engine.watermarks.restore(&snapshot.watermarks, now);
        engine.frontier = snapshot.frontier;
        engine.dirty = snapshot
            .dirty
            .into_iter()
            .map(|(k, lo, hi)| (k, (lo, hi)))
            .collect();
        for p in snapshot.partitions {
            let mut state = PartitionState::new(engine.grid, &engine.cfg);
            for (key, tier, start, pane) in &p.panes {
                state.panes.restore_pane(*key, *tier, *start, pane);
            }
            if let Some(f) = engine.frontier {
                state.panes.mark_closed_through(f);
                // The checkpointed store evicted at most this much (its evictions kept the
                // panes for the slowest source, at or before the frontier).
                state.panes.mark_evicted_through(f, &engine.retention);
            }
            state.seen = p.seen.map(|buckets| {
                buckets
                    .into_iter()
                    .map(|(m, ids)| (m, ids.into_iter().collect()))
                    .collect()
            });
            state.max_time = p.max_time;
            for (id, c) in p.cases {
                let hashed = |min_format: u32| match id.strip_prefix(HASHED_ID_PREFIX) {
                    Some(hex) if snapshot.format >= min_format => u128::from_str_radix(hex, 16)
                        .map(Some)
                        .map_err(|_| CheckpointError::HashedCase(id.clone())),
                    _ => Ok(None),
                };
                if !c.settled {
                    if let Some(hash) = hashed(3)? {
                        let aged = AgedCase::of(&c)
                            .ok_or_else(|| CheckpointError::HashedCase(id.clone()))?;
                        state.aged_cases.insert(hash, aged, &engine.cfg);
                    } else {
                        state.cases.insert(id.into_boxed_str(), c);
                    }
                    continue;
                }
                let hash = hashed(2)?.unwrap_or_else(|| id_hash(&id));
                if let Some(open) = c.open {
                    state.settled_cases.insert(hash, open.at);
                }
            }
            state.follow_ups = p.follow_ups.into_iter().collect();
            state.deadlines = p.deadlines.into_iter().collect();
            // The forgetting queues are derived: every outbound contact, every detractor
            // that fell due (the others are under `deadlines`).
            let deadline = engine.cfg.follow_up_deadline_ms;
            for (customer, f) in &state.follow_ups {
                for t in &f.outbound {
                    state.outbound_due.push(*t, *customer);
                }
                for d in f.detractors.iter().filter(|d| d.finalized) {
                    state.detractors_due.push(d.at + deadline, *customer);
                }
            }
            engine.partitions.insert(p.partition, state);
        }
        Ok(engine)
    }
}
