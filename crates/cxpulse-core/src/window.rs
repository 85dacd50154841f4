//! Time panes and rolling windows, generic over any mergeable state.
//!
//! Events update exactly one **minute pane** per series. When the emission frontier passes
//! the end of an hour (a local calendar day), that hour's minute panes are rolled up into
//! an **hour pane** (its hours into a **day pane**). A rolling window `[start, end)` is then
//! answered by merging the few coarsest panes that tile it: minutes at the ragged edges,
//! hours next to them, whole days in the middle. The cost per event therefore does not
//! depend on how many windows there are or how long they are; the cost per window
//! evaluation is bounded by ~60 + 23 + 23 + 60 + (days) merges.
//!
//! A window of length `L` with tail resolution `r` evaluated at `end` covers
//! `[ceil_r(end − L), end)`: it never reaches further back than its nominal length, and is
//! at most one `r` shorter. Rows carry their real `start`, so nothing is hidden.
//!
//! All alignment is in local time given by a fixed UTC offset (whole minutes), so calendar
//! days start at local midnight.

use crate::events::{Millis, DAY_MS, HOUR_MS, MINUTE_MS};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::Hash;
use thiserror::Error;

/// A partial aggregate that can be combined with another of its kind. `merge` must be
/// associative and commutative, and `Default` its identity.
pub trait Mergeable: Clone + Default {
    fn merge(&mut self, other: &Self);
    /// True when the state holds nothing (a window made only of empty panes is not emitted).
    fn is_empty(&self) -> bool;
    /// Called once on every pane written since the last reads, before panes are read
    /// (e.g. to fold buffered sketch inserts). Must not change the value.
    fn prepare(&mut self) {}
}

/// Why a pane is in the change set.
const NEEDS_PREPARE: u8 = 1;
const NEEDS_PERSIST: u8 = 2;

/// Pane granularities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Minute,
    Hour,
    Day,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Minute, Tier::Hour, Tier::Day];

    pub fn len_ms(self) -> Millis {
        match self {
            Tier::Minute => MINUTE_MS,
            Tier::Hour => HOUR_MS,
            Tier::Day => DAY_MS,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Errors in a window configuration.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum WindowConfigError {
    #[error("UTC offset {0} minutes is outside -14h..=+14h")]
    BadUtcOffset(i32),
    #[error("window `{name}`: {problem}")]
    BadWindow { name: String, problem: String },
    #[error("window name `{0}` is used twice")]
    DuplicateName(String),
    #[error("no windows configured")]
    NoWindows,
}

/// Local-time alignment of panes: a fixed UTC offset in whole minutes (no DST).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeGrid {
    offset_ms: Millis,
}

impl TimeGrid {
    pub fn new(utc_offset_minutes: i32) -> Result<Self, WindowConfigError> {
        if !(-14 * 60..=14 * 60).contains(&utc_offset_minutes) {
            return Err(WindowConfigError::BadUtcOffset(utc_offset_minutes));
        }
        Ok(TimeGrid {
            offset_ms: Millis::from(utc_offset_minutes) * MINUTE_MS,
        })
    }

    /// Start of the `len`-long local period containing `t`.
    pub fn floor(&self, t: Millis, len: Millis) -> Millis {
        (t + self.offset_ms).div_euclid(len) * len - self.offset_ms
    }

    /// Smallest period boundary at or after `t`.
    pub fn ceil(&self, t: Millis, len: Millis) -> Millis {
        let f = self.floor(t, len);
        if f == t {
            t
        } else {
            f + len
        }
    }

    pub fn floor_tier(&self, t: Millis, tier: Tier) -> Millis {
        self.floor(t, tier.len_ms())
    }
}

/// One rolling window kind, e.g. "24h".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    pub name: String,
    pub length_ms: Millis,
    /// Granularity of the window's start (see the module docs).
    pub tail: Tier,
    /// Evaluation step: windows end on multiples of this (whole minutes).
    pub slide_ms: Millis,
}

impl WindowSpec {
    pub fn new(name: &str, length_ms: Millis, tail: Tier, slide_ms: Millis) -> Self {
        WindowSpec {
            name: name.to_string(),
            length_ms,
            tail,
            slide_ms,
        }
    }

    /// The default rolling windows: 1 h, 24 h, 7 d and 28 d, each sliding every minute.
    pub fn defaults() -> Vec<WindowSpec> {
        vec![
            WindowSpec::new("1h", HOUR_MS, Tier::Minute, MINUTE_MS),
            WindowSpec::new("24h", DAY_MS, Tier::Hour, MINUTE_MS),
            WindowSpec::new("7d", 7 * DAY_MS, Tier::Hour, MINUTE_MS),
            WindowSpec::new("28d", 28 * DAY_MS, Tier::Day, MINUTE_MS),
        ]
    }

    pub fn validate(&self) -> Result<(), WindowConfigError> {
        let bad = |problem: &str| WindowConfigError::BadWindow {
            name: self.name.clone(),
            problem: problem.to_string(),
        };
        if self.name.is_empty() || self.name == DAY_WINDOW_NAME {
            return Err(bad("the name must be non-empty and not the reserved `day`"));
        }
        if self.slide_ms <= 0 || self.slide_ms % MINUTE_MS != 0 {
            return Err(bad("slide must be a positive whole number of minutes"));
        }
        if self.length_ms < self.tail.len_ms() {
            return Err(bad("length must be at least one tail period"));
        }
        if self.length_ms % MINUTE_MS != 0 {
            return Err(bad("length must be a whole number of minutes"));
        }
        if self.length_ms > 400 * DAY_MS {
            return Err(bad("length above 400 days is not supported"));
        }
        Ok(())
    }

    /// Start of the window that ends at `end`.
    pub fn start_for(&self, grid: &TimeGrid, end: Millis) -> Millis {
        grid.ceil(end - self.length_ms, self.tail.len_ms())
    }

    /// Window ends on this window's grid (multiples of the slide, local time) in `(after, upto]`.
    pub fn ends_in(
        &self,
        grid: &TimeGrid,
        after: Millis,
        upto: Millis,
    ) -> impl Iterator<Item = Millis> {
        let first = grid.floor(after, self.slide_ms) + self.slide_ms;
        let slide = self.slide_ms;
        (0..)
            .map(move |i| first + i * slide)
            .take_while(move |t| *t <= upto)
    }
}

/// Name of the tumbling calendar-day window kind.
pub const DAY_WINDOW_NAME: &str = "day";

/// One pane: its state and why it is in the store's change list.
#[derive(Clone, Debug, Default)]
struct Pane<S> {
    state: S,
    flags: u8,
}

/// The panes of one series (one group key) in the three tiers.
#[derive(Clone, Debug)]
pub struct PaneSeries<S> {
    tiers: [BTreeMap<Millis, Pane<S>>; 3],
}

impl<S> Default for PaneSeries<S> {
    fn default() -> Self {
        PaneSeries {
            tiers: [BTreeMap::new(), BTreeMap::new(), BTreeMap::new()],
        }
    }
}

impl<S: Mergeable> PaneSeries<S> {
    pub fn is_empty(&self) -> bool {
        self.tiers.iter().all(BTreeMap::is_empty)
    }

    pub fn pane_count(&self, tier: Tier) -> usize {
        self.tiers[tier.index()].len()
    }

    pub fn panes(&self, tier: Tier) -> impl Iterator<Item = (Millis, &S)> {
        self.tiers[tier.index()].iter().map(|(t, p)| (*t, &p.state))
    }

    fn merge_tier_range(&self, tier: Tier, from: Millis, to: Millis, acc: &mut S) -> usize {
        let mut merged = 0;
        if from < to {
            for p in self.tiers[tier.index()].range(from..to).map(|(_, p)| p) {
                acc.merge(&p.state);
                merged += 1;
            }
        }
        merged
    }

    /// Merges everything in `[from, to)` (minute-aligned) into `acc`, using the coarsest
    /// closed panes that tile the range. Hours and days inside the range must be closed.
    /// Returns how many panes were merged.
    pub fn merge_range_into(
        &self,
        grid: &TimeGrid,
        from: Millis,
        to: Millis,
        acc: &mut S,
    ) -> usize {
        if from >= to {
            return 0;
        }
        let a1 = grid.ceil(from, HOUR_MS);
        let b1 = grid.floor(to, HOUR_MS);
        if a1 >= b1 {
            return self.merge_tier_range(Tier::Minute, from, to, acc);
        }
        let mut merged = self.merge_tier_range(Tier::Minute, from, a1, acc);
        merged += self.merge_tier_range(Tier::Minute, b1, to, acc);
        let a2 = grid.ceil(a1, DAY_MS);
        let b2 = grid.floor(b1, DAY_MS);
        if a2 >= b2 {
            return merged + self.merge_tier_range(Tier::Hour, a1, b1, acc);
        }
        merged += self.merge_tier_range(Tier::Hour, a1, a2, acc);
        merged += self.merge_tier_range(Tier::Hour, b2, b1, acc);
        merged + self.merge_tier_range(Tier::Day, a2, b2, acc)
    }
}

/// Which periods of each coarse tier are already rolled up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Closed {
    /// Every hour ending at or before this is closed (rolled up from minutes).
    hours_until: Option<Millis>,
    /// Every day ending at or before this is closed (rolled up from hours).
    days_until: Option<Millis>,
}

/// How long each tier's panes are kept behind the emission frontier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub minute_ms: Millis,
    pub hour_ms: Millis,
    pub day_ms: Millis,
}

impl Retention {
    /// The retention a set of windows needs, given how far back corrections may reach.
    pub fn for_windows(
        windows: &[WindowSpec],
        calendar_days: bool,
        correction_horizon_ms: Millis,
    ) -> Retention {
        let longest = |tier: Tier| {
            windows
                .iter()
                .filter(|w| w.tail == tier)
                .map(|w| w.length_ms)
                .max()
                .unwrap_or(0)
        };
        // Ends re-evaluated after a correction reach back `horizon` behind the frontier;
        // their windows reach back one window length further. Head edges use the finer tiers
        // for up to one coarser period.
        let h = correction_horizon_ms + MINUTE_MS;
        let days_needed = if calendar_days { DAY_MS } else { 0 };
        Retention {
            minute_ms: longest(Tier::Minute).max(HOUR_MS) + h + HOUR_MS,
            hour_ms: longest(Tier::Hour).max(longest(Tier::Minute)).max(DAY_MS) + h + DAY_MS,
            day_ms: longest(Tier::Day)
                .max(longest(Tier::Hour))
                .max(longest(Tier::Minute))
                .max(days_needed)
                + h
                + DAY_MS,
        }
    }
}

/// Pane series by group key, with rollup and eviction.
#[derive(Clone, Debug)]
pub struct PaneStore<K, S> {
    grid: TimeGrid,
    series: FxHashMap<K, PaneSeries<S>>,
    closed: Closed,
    /// Panes whose flags went from clear to set since the lists were last drained.
    changed: Vec<(K, Tier, Millis)>,
    /// Whether written panes are remembered for [`PaneStore::take_changed`].
    track_persist: bool,
}

impl<K: Hash + Eq + Copy, S: Mergeable> PaneStore<K, S> {
    pub fn new(grid: TimeGrid) -> Self {
        PaneStore {
            grid,
            series: FxHashMap::default(),
            closed: Closed::default(),
            changed: Vec::new(),
            track_persist: false,
        }
    }

    /// Remember written panes for [`PaneStore::take_changed`] (sinks that persist panes).
    pub fn with_persistence(mut self, on: bool) -> Self {
        self.track_persist = on;
        self
    }

    fn mark(
        changed: &mut Vec<(K, Tier, Millis)>,
        pane: &mut Pane<S>,
        key: K,
        tier: Tier,
        start: Millis,
        flags: u8,
    ) {
        if pane.flags == 0 {
            changed.push((key, tier, start));
        }
        pane.flags |= flags;
    }

    pub fn grid(&self) -> &TimeGrid {
        &self.grid
    }

    /// Applies `update` to the minute pane holding `t` and to the closed hour/day panes that
    /// hold it, so every coarse pane stays the merge of its finer panes.
    pub fn apply(&mut self, key: K, t: Millis, mut update: impl FnMut(&mut S)) {
        let grid = self.grid;
        let closed = self.closed;
        let flags = NEEDS_PREPARE | if self.track_persist { NEEDS_PERSIST } else { 0 };
        let series = self.series.entry(key).or_default();
        let minute = grid.floor(t, MINUTE_MS);
        let pane = series.tiers[Tier::Minute.index()]
            .entry(minute)
            .or_default();
        update(&mut pane.state);
        Self::mark(&mut self.changed, pane, key, Tier::Minute, minute, flags);
        let hour = grid.floor(t, HOUR_MS);
        if closed.hours_until.is_some_and(|c| hour + HOUR_MS <= c) {
            let pane = series.tiers[Tier::Hour.index()].entry(hour).or_default();
            update(&mut pane.state);
            Self::mark(&mut self.changed, pane, key, Tier::Hour, hour, flags);
        }
        let day = grid.floor(t, DAY_MS);
        if closed.days_until.is_some_and(|c| day + DAY_MS <= c) {
            let pane = series.tiers[Tier::Day.index()].entry(day).or_default();
            update(&mut pane.state);
            Self::mark(&mut self.changed, pane, key, Tier::Day, day, flags);
        }
    }

    /// Rolls up every hour and day that ends at or before `frontier`.
    pub fn close_through(&mut self, frontier: Millis) {
        let grid = self.grid;
        let hours_to = grid.floor(frontier, HOUR_MS);
        let hours_from = self.closed.hours_until.unwrap_or(Millis::MIN);
        if hours_to > hours_from {
            let persist = if self.track_persist { NEEDS_PERSIST } else { 0 };
            for (key, series) in self.series.iter_mut() {
                let [minutes, hours, _] = &mut series.tiers;
                for (t, p) in minutes.range(hours_from..hours_to) {
                    let hour = grid.floor(*t, HOUR_MS);
                    let pane = hours.entry(hour).or_default();
                    pane.state.merge(&p.state);
                    if persist != 0 {
                        Self::mark(&mut self.changed, pane, *key, Tier::Hour, hour, persist);
                    }
                }
            }
            self.closed.hours_until = Some(hours_to);
        }
        let days_to = grid.floor(frontier, DAY_MS);
        let days_from = self.closed.days_until.unwrap_or(Millis::MIN);
        if days_to > days_from {
            let persist = if self.track_persist { NEEDS_PERSIST } else { 0 };
            for (key, series) in self.series.iter_mut() {
                let [_, hours, days] = &mut series.tiers;
                for (t, p) in hours.range(days_from..days_to) {
                    let day = grid.floor(*t, DAY_MS);
                    let pane = days.entry(day).or_default();
                    pane.state.merge(&p.state);
                    if persist != 0 {
                        Self::mark(&mut self.changed, pane, *key, Tier::Day, day, persist);
                    }
                }
            }
            self.closed.days_until = Some(days_to);
        }
    }

    /// Drops panes that ended at least `retention` before `frontier`, and empty series.
    pub fn evict(&mut self, frontier: Millis, retention: &Retention) {
        let cut = [
            frontier - retention.minute_ms,
            frontier - retention.hour_ms,
            frontier - retention.day_ms,
        ];
        self.series.retain(|_, series| {
            for tier in Tier::ALL {
                let map = &mut series.tiers[tier.index()];
                // Keep panes whose end is after the cut: start > cut - len.
                let keep_from = cut[tier.index()] - tier.len_ms() + 1;
                if map.keys().next().is_some_and(|first| *first < keep_from) {
                    *map = map.split_off(&keep_from);
                }
            }
            !series.is_empty()
        });
    }

    /// The panes written since the last call (still present; evicted ones are skipped), for
    /// sinks that persist panes ([`PaneStore::with_persistence`]). Keys are filtered by `keep`.
    pub fn take_changed(&mut self, mut keep: impl FnMut(&K) -> bool) -> Vec<(K, Tier, Millis, &S)> {
        self.prepare_reads();
        let mut persist = Vec::new();
        for (key, tier, start) in std::mem::take(&mut self.changed) {
            if let Some(pane) = self
                .series
                .get_mut(&key)
                .and_then(|series| series.tiers[tier.index()].get_mut(&start))
            {
                if pane.flags & NEEDS_PERSIST != 0 && keep(&key) {
                    persist.push((key, tier, start));
                }
                pane.flags = 0;
            }
        }
        let mut out: Vec<(K, Tier, Millis, &S)> = persist
            .into_iter()
            .filter_map(|(k, tier, start)| {
                let p = self.series.get(&k)?.tiers[tier.index()].get(&start)?;
                Some((k, tier, start, &p.state))
            })
            .collect();
        out.sort_unstable_by_key(|(_, tier, start, _)| (*tier, *start));
        out
    }

    /// Prepares every pane written since the last call for reading ([`Mergeable::prepare`]).
    pub fn prepare_reads(&mut self) {
        let series = &mut self.series;
        self.changed.retain(|(key, tier, start)| {
            let Some(pane) = series
                .get_mut(key)
                .and_then(|s| s.tiers[tier.index()].get_mut(start))
            else {
                return false;
            };
            if pane.flags & NEEDS_PREPARE != 0 {
                pane.state.prepare();
                pane.flags &= !NEEDS_PREPARE;
            }
            // Still needed for persistence?
            pane.flags != 0
        });
    }

    /// Inserts a pane as it was persisted (restore). Hour/day panes count as closed.
    pub fn restore_pane(&mut self, key: K, tier: Tier, start: Millis, state: &S) {
        let pane = self.series.entry(key).or_default().tiers[tier.index()]
            .entry(start)
            .or_default();
        pane.state.merge(state);
        pane.state.prepare();
    }

    /// After a restore: every hour/day ending at or before `frontier` is closed.
    pub fn mark_closed_through(&mut self, frontier: Millis) {
        self.closed.hours_until = Some(self.grid.floor(frontier, HOUR_MS));
        self.closed.days_until = Some(self.grid.floor(frontier, DAY_MS));
    }

    /// Merges `key`'s panes over `[from, to)` into `acc`; returns how many were merged.
    pub fn merge_range_into(&self, key: &K, from: Millis, to: Millis, acc: &mut S) -> usize {
        self.series.get(key).map_or(0, |series| {
            series.merge_range_into(&self.grid, from, to, acc)
        })
    }

    pub fn series(&self, key: &K) -> Option<&PaneSeries<S>> {
        self.series.get(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.series.keys()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &PaneSeries<S>)> {
        self.series.iter()
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    pub fn pane_count(&self, tier: Tier) -> usize {
        self.series.values().map(|s| s.pane_count(tier)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain sum: enough to test tiling, rollup and eviction exactly.
    #[derive(Clone, Debug, Default, PartialEq)]
    struct Sum(i64);

    impl Mergeable for Sum {
        fn merge(&mut self, other: &Self) {
            self.0 += other.0;
        }
        fn is_empty(&self) -> bool {
            self.0 == 0
        }
    }

    const T0: Millis = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS;

    #[test]
    fn grid_aligns_to_local_time() {
        let tehran = TimeGrid::new(3 * 60 + 30).unwrap();
        // 20:30 UTC is local midnight at +03:30.
        let local_midnight = T0 + 20 * HOUR_MS + 30 * MINUTE_MS;
        assert_eq!(
            tehran.floor(local_midnight + 5 * HOUR_MS, DAY_MS),
            local_midnight
        );
        assert_eq!(
            tehran.ceil(local_midnight + 1, DAY_MS),
            local_midnight + DAY_MS
        );
        assert_eq!(tehran.ceil(local_midnight, DAY_MS), local_midnight);
        assert!(TimeGrid::new(15 * 60).is_err());
    }

    #[test]
    fn window_start_never_reaches_beyond_length() {
        let grid = TimeGrid::default();
        let w = WindowSpec::new("24h", DAY_MS, Tier::Hour, MINUTE_MS);
        let end = T0 + 10 * HOUR_MS + 17 * MINUTE_MS;
        assert_eq!(w.start_for(&grid, end), T0 - 13 * HOUR_MS);
        let ends: Vec<_> = w.ends_in(&grid, end, end + 3 * MINUTE_MS).collect();
        assert_eq!(
            ends,
            vec![end + MINUTE_MS, end + 2 * MINUTE_MS, end + 3 * MINUTE_MS]
        );
    }

    #[test]
    fn range_merge_over_closed_tiers_equals_plain_sum() {
        // One unit per minute over three days, value = minute index (distinct values).
        let grid = TimeGrid::default();
        let mut store: PaneStore<u8, Sum> = PaneStore::new(grid);
        let minutes = 3 * 24 * 60;
        for i in 0..minutes {
            store.apply(0, T0 + i * MINUTE_MS + 123, |s| s.0 += i + 1);
        }
        let frontier = T0 + minutes * MINUTE_MS;
        store.close_through(frontier);
        assert!(store.pane_count(Tier::Day) >= 3);
        for (from_min, to_min) in [
            (0, 1),
            (5, 200),
            (59, 61),
            (0, minutes),
            (61, minutes - 7),
            (1439, 2 * 1440 + 1),
        ] {
            let mut acc = Sum::default();
            store.merge_range_into(
                &0,
                T0 + from_min * MINUTE_MS,
                T0 + to_min * MINUTE_MS,
                &mut acc,
            );
            let expected: i64 = (from_min..to_min).map(|i| i + 1).sum();
            assert_eq!(acc.0, expected, "range {from_min}..{to_min}");
        }
    }

    #[test]
    fn late_update_into_closed_tiers_keeps_them_consistent() {
        let grid = TimeGrid::default();
        let mut store: PaneStore<u8, Sum> = PaneStore::new(grid);
        store.apply(0, T0 + 10 * MINUTE_MS, |s| s.0 += 1);
        store.close_through(T0 + DAY_MS + HOUR_MS);
        store.apply(0, T0 + 20 * MINUTE_MS, |s| s.0 += 10);
        let series = store.series(&0).unwrap();
        assert_eq!(series.panes(Tier::Hour).map(|(_, s)| s.0).sum::<i64>(), 11);
        assert_eq!(series.panes(Tier::Day).map(|(_, s)| s.0).sum::<i64>(), 11);
        let mut acc = Sum::default();
        store.merge_range_into(&0, T0, T0 + DAY_MS, &mut acc);
        assert_eq!(acc.0, 11);
    }

    #[test]
    fn eviction_drops_old_panes_and_empty_series() {
        let grid = TimeGrid::default();
        let mut store: PaneStore<u8, Sum> = PaneStore::new(grid);
        store.apply(0, T0, |s| s.0 += 1);
        store.apply(1, T0 + 3 * DAY_MS, |s| s.0 += 1);
        let frontier = T0 + 3 * DAY_MS + HOUR_MS;
        store.close_through(frontier);
        let retention = Retention {
            minute_ms: 2 * HOUR_MS,
            hour_ms: DAY_MS,
            day_ms: 2 * DAY_MS,
        };
        store.evict(frontier, &retention);
        assert!(
            store.series(&0).is_none(),
            "series 0 only had data 3 days ago"
        );
        assert_eq!(store.series(&1).unwrap().pane_count(Tier::Minute), 1);
    }
}
