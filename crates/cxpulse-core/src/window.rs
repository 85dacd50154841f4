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
use std::collections::VecDeque;
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
    /// Approximate bytes the state holds (inline and heap), for memory budgets.
    fn footprint(&self) -> usize {
        std::mem::size_of::<Self>()
    }
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

/// A state with a compact, read-only form, for panes that no write reaches any more
/// (**frozen** panes: behind the correction horizon). A frozen pane is merged into window
/// accumulators straight from its compact form; writing one (rare: only a source coming
/// back from idleness can reach that far) thaws it first.
pub trait Freeze: Mergeable {
    /// The compact form.
    type Frozen: Clone + std::fmt::Debug;
    /// The compact form of a prepared state of a pane of `tier`: `thaw(&freeze(s)) == s`.
    /// Minute and hour panes are read at every window end (the edges of every head, and
    /// the tails of windows with a minute or an hour tail): their form may trade room for
    /// reading speed. Day panes are read when a window's body is built, or at each end of
    /// a window left without one.
    fn freeze(&self, tier: Tier) -> Self::Frozen;
    fn thaw(frozen: &Self::Frozen) -> Self;
    /// The same as `self.merge(&Self::thaw(frozen))`, without building the thawed state.
    fn merge_frozen(&mut self, frozen: &Self::Frozen);
    /// Approximate heap bytes of a frozen state.
    fn frozen_bytes(frozen: &Self::Frozen) -> usize;
}

/// A writable pane: its state and why it is in the store's change list.
#[derive(Clone, Debug, Default)]
struct Pane<S> {
    state: S,
    flags: u8,
}

#[derive(Clone, Debug)]
enum Slot<S: Freeze> {
    Hot(Box<Pane<S>>),
    Frozen(S::Frozen),
}

/// A pane as read: writable (hot) or frozen.
pub enum PaneRef<'a, S: Freeze> {
    Hot(&'a S),
    Frozen(&'a S::Frozen),
}

impl<S: Freeze> PaneRef<'_, S> {
    /// Merges this pane into `acc`.
    pub fn merge_into(&self, acc: &mut S) {
        match self {
            PaneRef::Hot(s) => acc.merge(s),
            PaneRef::Frozen(f) => acc.merge_frozen(f),
        }
    }

    /// The pane's state (thawed if frozen).
    pub fn to_state(&self) -> S {
        match self {
            PaneRef::Hot(s) => (*s).clone(),
            PaneRef::Frozen(f) => S::thaw(f),
        }
    }

    pub fn is_frozen(&self) -> bool {
        matches!(self, PaneRef::Frozen(_))
    }
}

impl<'a, S: Freeze> From<&'a Slot<S>> for PaneRef<'a, S> {
    fn from(slot: &'a Slot<S>) -> Self {
        match slot {
            Slot::Hot(p) => PaneRef::Hot(&p.state),
            Slot::Frozen(f) => PaneRef::Frozen(f),
        }
    }
}

/// The panes of one tier of one series, sorted by start. Panes are added at the back and
/// dropped at the front, so a ring buffer holds them.
#[derive(Clone, Debug)]
struct TierPanes<S: Freeze> {
    panes: VecDeque<(Millis, Slot<S>)>,
    /// Every pane before this index is frozen.
    hot_from: usize,
    /// Panes starting before this may have been dropped. From it on, every contribution
    /// lies in a pane of the tier that is present (for hours and days: of the closed ones).
    dropped_before: Millis,
}

impl<S: Freeze> Default for TierPanes<S> {
    fn default() -> Self {
        TierPanes {
            panes: VecDeque::new(),
            hot_from: 0,
            dropped_before: Millis::MIN,
        }
    }
}

impl<S: Freeze> TierPanes<S> {
    /// Where the pane starting at `start` is (`Ok`) or would be inserted (`Err`).
    #[inline]
    fn position(&self, start: Millis) -> Result<usize, usize> {
        // Nearly every write goes to the newest pane or right after it.
        match self.panes.back() {
            None => return Err(0),
            Some((last, _)) if *last < start => return Err(self.panes.len()),
            Some((last, _)) if *last == start => return Ok(self.panes.len() - 1),
            _ => {}
        }
        self.panes.binary_search_by_key(&start, |(s, _)| *s)
    }

    /// The writable pane starting at `start`, created or thawed if needed.
    #[inline]
    fn hot_mut(&mut self, start: Millis) -> &mut Pane<S> {
        let i = match self.position(start) {
            Ok(i) => i,
            Err(i) => {
                self.panes.insert(i, (start, Slot::Hot(Box::default())));
                if i < self.hot_from {
                    self.hot_from = i;
                }
                i
            }
        };
        if let Slot::Frozen(f) = &self.panes[i].1 {
            let state = S::thaw(f);
            self.panes[i].1 = Slot::Hot(Box::new(Pane { state, flags: 0 }));
            self.hot_from = self.hot_from.min(i);
        }
        match &mut self.panes[i].1 {
            Slot::Hot(p) => p,
            Slot::Frozen(_) => unreachable!("thawed above"),
        }
    }

    /// The pane starting at `start` if it exists and is writable.
    fn get_hot_mut(&mut self, start: Millis) -> Option<&mut Pane<S>> {
        let i = self.position(start).ok()?;
        match &mut self.panes[i].1 {
            Slot::Hot(p) => Some(p),
            Slot::Frozen(_) => None,
        }
    }

    fn get(&self, start: Millis) -> Option<PaneRef<'_, S>> {
        let i = self.position(start).ok()?;
        Some((&self.panes[i].1).into())
    }

    fn iter(&self) -> impl Iterator<Item = (Millis, PaneRef<'_, S>)> {
        self.panes.iter().map(|(t, slot)| (*t, slot.into()))
    }

    /// The panes starting in `[from, to)`.
    fn range(&self, from: Millis, to: Millis) -> impl Iterator<Item = (Millis, &Slot<S>)> {
        let i = self.panes.partition_point(|(s, _)| *s < from);
        self.panes
            .range(i..)
            .take_while(move |(s, _)| *s < to)
            .map(|(s, slot)| (*s, slot))
    }

    /// How many panes start in `[from, to)`.
    fn count_range(&self, from: Millis, to: Millis) -> usize {
        if from >= to {
            return 0;
        }
        self.panes.partition_point(|(s, _)| *s < to)
            - self.panes.partition_point(|(s, _)| *s < from)
    }

    fn merge_range(&self, from: Millis, to: Millis, acc: &mut S) -> usize {
        let mut merged = 0;
        if from < to {
            for (_, slot) in self.range(from, to) {
                match slot {
                    Slot::Hot(p) => acc.merge(&p.state),
                    Slot::Frozen(f) => acc.merge_frozen(f),
                }
                merged += 1;
            }
        }
        merged
    }

    /// From now on, panes starting before `t` may be missing.
    fn may_lack_before(&mut self, t: Millis) {
        self.dropped_before = self.dropped_before.max(t);
    }

    /// Drops the panes starting before `keep_from`.
    fn drop_before(&mut self, keep_from: Millis) {
        self.may_lack_before(keep_from);
        let mut dropped = 0;
        while self.panes.front().is_some_and(|(s, _)| *s < keep_from) {
            self.panes.pop_front();
            dropped += 1;
        }
        self.hot_from = self.hot_from.saturating_sub(dropped);
    }

    /// Freezes the writable panes of length `len` that end at or before `limit`, except
    /// those still flagged for persistence.
    fn freeze_until(&mut self, limit: Millis, tier: Tier) -> usize {
        let len = tier.len_ms();
        let mut frozen = 0;
        let mut first_hot = None;
        let mut i = self.hot_from;
        while let Some((start, slot)) = self.panes.get_mut(i) {
            if *start + len > limit {
                break;
            }
            if let Slot::Hot(p) = slot {
                if p.flags & NEEDS_PERSIST == 0 {
                    p.state.prepare();
                    *slot = Slot::Frozen(p.state.freeze(tier));
                    frozen += 1;
                } else {
                    first_hot.get_or_insert(i);
                }
            }
            i += 1;
        }
        self.hot_from = first_hot.unwrap_or(i);
        frozen
    }
}

/// A cached merge of one series over an hour-aligned range `[from, to)` of closed panes:
/// the **body** that the windows ending in one hour read between their head and the
/// minutes of that hour (see `docs/incremental-evaluation.md`), or over one [`BLOCK_MS`]
/// block of minutes before a head's first full hour (a **block**). Every write that lands in
/// the range is applied to the body as to the panes (write-through), so the body stays the
/// merge of the panes that tile the range; rollups, freezing and eviction move pane
/// content without changing it.
#[derive(Clone, Debug)]
struct Body<S> {
    from: Millis,
    to: Millis,
    state: S,
    /// The store's body generation when the body was last asked for.
    used: u64,
    /// Written since it was last prepared for reading.
    needs_prepare: bool,
    /// Its footprint when it was built (what it counts for in the store's budget).
    bytes: usize,
}

impl<S: Mergeable> Body<S> {
    /// A body over `[from, to)` holding `state` (prepared here for reading), asked for in
    /// `generation`.
    fn new(from: Millis, to: Millis, mut state: S, generation: u64) -> Self {
        state.prepare();
        let bytes = state.footprint();
        Body {
            from,
            to,
            state,
            used: generation,
            needs_prepare: false,
            bytes,
        }
    }
}

impl<S> Body<S> {
    /// A [`BLOCK_MS`] block of minutes (every other body covers whole hours).
    fn is_block(&self) -> bool {
        is_block(self.from, self.to)
    }
}

/// Whether `[from, to)` is the range of a block (bodies over hours are an hour or longer).
fn is_block(from: Millis, to: Millis) -> bool {
    to - from == BLOCK_MS
}

/// Whether a body (over hours, not a block) can stand for the hour-aligned range
/// `[a1, b1)`: it lies inside it, leaving at most an hour pane uncovered at either end.
///
/// So one body serves the heads of two consecutive hours of a window: a window with a day
/// tail keeps its start (`[a1, b1)`, then `[a1, b1 + 1 h)`), and a window with an hour tail
/// moves its start by an hour too (`[a1 + 1 h, b1 + 1 h)`). The body kept is their
/// intersection `[a1, b1 − 1 h)` when asked for `[a1, b1)`
/// ([`PaneStore::ensure_body`]), and a head reads it plus an hour pane or two.
fn serves<S>(body: &Body<S>, a1: Millis, b1: Millis) -> bool {
    !body.is_block()
        && a1 <= body.from
        && body.from <= a1 + HOUR_MS
        && b1 - HOUR_MS <= body.to
        && body.to <= b1
}

/// The body of `bodies` that serves `[a1, b1)` ([`serves`]): the one ending last, then
/// starting first (the newest; older ones are then no longer asked for, and go).
fn serving<S>(bodies: &[Body<S>], a1: Millis, b1: Millis) -> Option<usize> {
    (0..bodies.len())
        .filter(|&i| serves(&bodies[i], a1, b1))
        .max_by_key(|&i| (bodies[i].to, std::cmp::Reverse(bodies[i].from)))
}

/// The panes of one series (one group key) in the three tiers, and its cached bodies.
#[derive(Clone, Debug)]
pub struct PaneSeries<S: Freeze> {
    tiers: [TierPanes<S>; 3],
    bodies: Vec<Body<S>>,
    /// The latest end of a body (writes at or after it reach no body).
    bodies_until: Millis,
}

impl<S: Freeze> Default for PaneSeries<S> {
    fn default() -> Self {
        PaneSeries {
            tiers: Default::default(),
            bodies: Vec::new(),
            bodies_until: Millis::MIN,
        }
    }
}

impl<S: Freeze> PaneSeries<S> {
    pub fn is_empty(&self) -> bool {
        self.tiers.iter().all(|t| t.panes.is_empty())
    }

    pub fn pane_count(&self, tier: Tier) -> usize {
        self.tiers[tier.index()].panes.len()
    }

    /// How many of the tier's panes are frozen.
    pub fn frozen_count(&self, tier: Tier) -> usize {
        self.tiers[tier.index()]
            .panes
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Frozen(_)))
            .count()
    }

    /// The tier's panes in time order.
    pub fn panes(&self, tier: Tier) -> impl Iterator<Item = (Millis, PaneRef<'_, S>)> {
        self.tiers[tier.index()].iter()
    }

    /// The pane of `tier` starting at `start`.
    pub fn pane(&self, tier: Tier, start: Millis) -> Option<PaneRef<'_, S>> {
        self.tiers[tier.index()].get(start)
    }

    /// True when some pane of any tier starting in `[from, to)` may hold a contribution
    /// made in `[from, to)` (`to` minute-aligned). A window starting at `from` reads only
    /// panes starting at or after it, so when this is false it holds nothing before `to`.
    ///
    /// An hour or day pane that ends after `to` holds a contribution before `to` only if a
    /// finer pane starting in `[its start, to)` does, which the finer tier's own test
    /// finds, as long as that tier has dropped none of its panes there. So a day pane does
    /// not count for a window starting before its midnight when its hours before `to` hold
    /// nothing (a young job that started late in the previous day, a series with gaps).
    pub fn holds_pane_starting_in(&self, from: Millis, to: Millis) -> bool {
        if from >= to {
            return false;
        }
        let [minutes, hours, days] = &self.tiers;
        let holds = |coarse: &TierPanes<S>, len: Millis, finer: &TierPanes<S>| {
            coarse
                .range(from, to)
                .any(|(start, _)| start + len <= to || finer.dropped_before > start)
        };
        minutes.range(from, to).next().is_some()
            || holds(hours, HOUR_MS, minutes)
            || holds(days, DAY_MS, hours)
    }

    /// Merges the panes of `tier` starting in `[from, to)` into `acc`; returns how many.
    pub fn merge_tier_range(&self, tier: Tier, from: Millis, to: Millis, acc: &mut S) -> usize {
        self.tiers[tier.index()].merge_range(from, to, acc)
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
            return self.merge_minutes(grid, from, to, acc);
        }
        let mut merged = self.merge_minutes(grid, from, a1, acc);
        merged += self.merge_minutes(grid, b1, to, acc);
        if let Some(body) = serving(&self.bodies, a1, b1).map(|i| &self.bodies[i]) {
            acc.merge(&body.state);
            return merged
                + 1
                + self.merge_closed_range(grid, a1, body.from, acc)
                + self.merge_closed_range(grid, body.to, b1, acc);
        }
        merged + self.merge_closed_range(grid, a1, b1, acc)
    }

    /// Merges the minute panes starting in `[from, to)` into `acc`, reading each whole
    /// [`BLOCK_MS`] block from its body when one is cached. Returns how many panes and
    /// bodies were merged.
    fn merge_minutes(&self, grid: &TimeGrid, from: Millis, to: Millis, acc: &mut S) -> usize {
        if self.bodies.is_empty() || to - from < BLOCK_MS {
            return self.merge_tier_range(Tier::Minute, from, to, acc);
        }
        let mut merged = 0;
        let mut t = from;
        while t < to {
            let next = (grid.floor(t, BLOCK_MS) + BLOCK_MS).min(to);
            match is_block(t, next).then(|| self.body(t, next)).flatten() {
                Some(block) => {
                    acc.merge(block);
                    merged += 1;
                }
                None => merged += self.merge_tier_range(Tier::Minute, t, next, acc),
            }
            t = next;
        }
        merged
    }

    /// Merges the hour-aligned range `[a1, b1)` in hours and days (not minutes, not bodies).
    fn merge_closed_range(&self, grid: &TimeGrid, a1: Millis, b1: Millis, acc: &mut S) -> usize {
        let a2 = grid.ceil(a1, DAY_MS);
        let b2 = grid.floor(b1, DAY_MS);
        if a2 >= b2 {
            return self.merge_tier_range(Tier::Hour, a1, b1, acc);
        }
        self.merge_tier_range(Tier::Hour, a1, a2, acc)
            + self.merge_tier_range(Tier::Hour, b2, b1, acc)
            + self.merge_tier_range(Tier::Day, a2, b2, acc)
    }

    /// How many hour and day panes tile the hour-aligned range `[a1, b1)`.
    fn closed_pane_count(&self, grid: &TimeGrid, a1: Millis, b1: Millis) -> usize {
        let a2 = grid.ceil(a1, DAY_MS);
        let b2 = grid.floor(b1, DAY_MS);
        let hours = &self.tiers[Tier::Hour.index()];
        if a2 >= b2 {
            return hours.count_range(a1, b1);
        }
        hours.count_range(a1, a2)
            + hours.count_range(b2, b1)
            + self.tiers[Tier::Day.index()].count_range(a2, b2)
    }

    /// The cached body over exactly `[from, to)`, if any.
    pub fn body(&self, from: Millis, to: Millis) -> Option<&S> {
        self.bodies
            .iter()
            .find(|b| b.from == from && b.to == to)
            .map(|b| &b.state)
    }

    /// How many bodies the series caches.
    pub fn body_count(&self) -> usize {
        self.bodies.len()
    }

    /// The cached bodies' states.
    pub fn bodies(&self) -> impl Iterator<Item = &S> {
        self.bodies.iter().map(|b| &b.state)
    }

    /// Keeps the bodies `keep` says; returns the bytes the others counted for.
    fn drop_bodies(&mut self, mut keep: impl FnMut(&Body<S>) -> bool) -> usize {
        let mut freed = 0;
        self.bodies.retain(|b| {
            let kept = keep(b);
            if !kept {
                freed += b.bytes;
            }
            kept
        });
        self.bodies_until = self
            .bodies
            .iter()
            .map(|b| b.to)
            .max()
            .unwrap_or(Millis::MIN);
        freed
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

/// How long each tier's panes are kept behind the emission frontier, and when they freeze.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub minute_ms: Millis,
    pub hour_ms: Millis,
    pub day_ms: Millis,
    /// Panes that ended at least this long before the frontier are frozen
    /// ([`Freeze`]): no accepted event of an active source can land there any more. Hour
    /// panes stay hot an hour longer: the heads of windows with an hour or minute tail read
    /// the last closed hour after their body at every advance (see [`PaneStore::evict`]).
    pub freeze_ms: Millis,
}

impl Retention {
    /// The retention a set of windows needs, given how far back corrections may reach.
    ///
    /// Every write of a partition whose sources have all delivered lands at or after
    /// `frontier − horizon` (rounded down to the minute), so every window end still to be
    /// evaluated, new or corrected, lies after `frontier − h` with `h = horizon + 1 min`; its
    /// window reaches back at most its length `L` from there, and is read in its own tiling
    /// (see [`PaneSeries::merge_range_into`]). A tier's panes are needed for `h` plus the
    /// longest `L` whose tiling reads that tier:
    /// * minutes: the head edge (the minutes since the last full hour: 1 h) and the tails
    ///   of minute-tail windows;
    /// * hours: the head edge (the hours since the last midnight: 1 day, also what the next
    ///   day rollup reads), the tails of hour-tail windows (a 7-day window's start sweeps
    ///   through every hour of the past 7 days) and of minute-tail windows;
    /// * days: every window (and the calendar day).
    ///
    /// One more period of each tier is kept on top: an engine holding several partitions
    /// merges their panes into one row, and a partition that starts delivering late (its
    /// first events are accepted whatever their time) corrects windows that hold the other
    /// partitions' panes too; the margin keeps those for corrections up to an hour (a day)
    /// further back.
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
        let longest_any = windows.iter().map(|w| w.length_ms).max().unwrap_or(0);
        let h = correction_horizon_ms + MINUTE_MS;
        Retention {
            minute_ms: longest(Tier::Minute).max(HOUR_MS) + h + HOUR_MS,
            hour_ms: longest(Tier::Hour).max(longest(Tier::Minute)).max(DAY_MS) + h + DAY_MS,
            day_ms: longest_any.max(if calendar_days { DAY_MS } else { 0 }) + h + DAY_MS,
            freeze_ms: h,
        }
    }
}

/// Length of a **block**: a body over that many minute panes (see
/// [`PaneStore::ensure_body`]), for the minutes before the first full hour of a window
/// with a minute tail.
pub const BLOCK_MS: Millis = 10 * MINUTE_MS;

/// Index of a series in a [`PaneStore`] (stable for the store's life).
pub type SeriesId = u32;

/// Pane series by group key, with rollup, eviction and freezing.
#[derive(Clone, Debug)]
pub struct PaneStore<K, S: Freeze> {
    grid: TimeGrid,
    ids: FxHashMap<K, SeriesId>,
    keys: Vec<K>,
    series: Vec<PaneSeries<S>>,
    closed: Closed,
    /// Panes whose flags went from clear to set since the lists were last drained.
    changed: Vec<(SeriesId, Tier, Millis)>,
    /// Whether written panes are remembered for [`PaneStore::take_changed`].
    track_persist: bool,
    /// Advanced at every eviction: bodies not asked for since the previous one are dropped.
    body_generation: u64,
    /// Series with a body written since the last reads.
    bodies_written: Vec<SeriesId>,
    /// Bytes the bodies held when they were built, and the most they may hold.
    body_bytes: usize,
    body_budget: usize,
}

impl<K: Hash + Eq + Copy, S: Freeze> PaneStore<K, S> {
    pub fn new(grid: TimeGrid) -> Self {
        PaneStore {
            grid,
            ids: FxHashMap::default(),
            keys: Vec::new(),
            series: Vec::new(),
            closed: Closed::default(),
            changed: Vec::new(),
            track_persist: false,
            body_generation: 0,
            bodies_written: Vec::new(),
            body_bytes: 0,
            body_budget: 0,
        }
    }

    /// Remember written panes for [`PaneStore::take_changed`] (sinks that persist panes).
    pub fn with_persistence(mut self, on: bool) -> Self {
        self.track_persist = on;
        self
    }

    #[inline]
    fn mark(
        changed: &mut Vec<(SeriesId, Tier, Millis)>,
        pane: &mut Pane<S>,
        id: SeriesId,
        tier: Tier,
        start: Millis,
        flags: u8,
    ) {
        if pane.flags == 0 {
            changed.push((id, tier, start));
        }
        pane.flags |= flags;
    }

    /// Let bodies ([`PaneStore::ensure_body`]) hold up to `bytes` (none by default).
    pub fn with_body_budget(mut self, bytes: usize) -> Self {
        self.body_budget = bytes;
        self
    }

    pub fn grid(&self) -> &TimeGrid {
        &self.grid
    }

    /// The id of `key`'s series (created empty if needed). Ids stay valid for the store's
    /// life: series emptied by eviction are kept (empty) and reused.
    pub fn series_id(&mut self, key: K) -> SeriesId {
        if let Some(id) = self.ids.get(&key) {
            return *id;
        }
        let id = SeriesId::try_from(self.series.len()).expect("fewer than 2^32 series");
        self.ids.insert(key, id);
        self.keys.push(key);
        self.series.push(PaneSeries::default());
        id
    }

    /// Applies `update` to the minute pane holding `t` and to the closed hour/day panes that
    /// hold it, so every coarse pane stays the merge of its finer panes.
    pub fn apply(&mut self, key: K, t: Millis, update: impl FnMut(&mut S)) {
        let id = self.series_id(key);
        self.apply_ids(&[id], t, update);
    }

    /// [`PaneStore::apply`] to the series `ids` (from [`PaneStore::series_id`]).
    #[inline]
    pub fn apply_ids(&mut self, ids: &[SeriesId], t: Millis, mut update: impl FnMut(&mut S)) {
        let grid = self.grid;
        let flags = NEEDS_PREPARE | if self.track_persist { NEEDS_PERSIST } else { 0 };
        let minute = grid.floor(t, MINUTE_MS);
        let hour = grid.floor(minute, HOUR_MS);
        let hour_closed = self.closed.hours_until.is_some_and(|c| hour + HOUR_MS <= c);
        let day = grid.floor(hour, DAY_MS);
        let day_closed = self.closed.days_until.is_some_and(|c| day + DAY_MS <= c);
        for &id in ids {
            let series = &mut self.series[id as usize];
            let pane = series.tiers[Tier::Minute.index()].hot_mut(minute);
            update(&mut pane.state);
            Self::mark(&mut self.changed, pane, id, Tier::Minute, minute, flags);
            if hour_closed {
                let pane = series.tiers[Tier::Hour.index()].hot_mut(hour);
                update(&mut pane.state);
                Self::mark(&mut self.changed, pane, id, Tier::Hour, hour, flags);
            }
            if day_closed {
                let pane = series.tiers[Tier::Day.index()].hot_mut(day);
                update(&mut pane.state);
                Self::mark(&mut self.changed, pane, id, Tier::Day, day, flags);
            }
            if minute < series.bodies_until {
                for body in &mut series.bodies {
                    if body.from <= minute && minute < body.to {
                        update(&mut body.state);
                        if !body.needs_prepare {
                            body.needs_prepare = true;
                            self.bodies_written.push(id);
                        }
                    }
                }
            }
        }
    }

    /// Rolls up every hour and day that ends at or before `frontier`.
    pub fn close_through(&mut self, frontier: Millis) {
        let grid = self.grid;
        let persist = if self.track_persist { NEEDS_PERSIST } else { 0 };
        for (tier, coarse, len) in [
            (Tier::Minute, Tier::Hour, HOUR_MS),
            (Tier::Hour, Tier::Day, DAY_MS),
        ] {
            let until = match coarse {
                Tier::Hour => &mut self.closed.hours_until,
                _ => &mut self.closed.days_until,
            };
            let to = grid.floor(frontier, len);
            let from = until.unwrap_or(Millis::MIN);
            if to <= from {
                continue;
            }
            *until = Some(to);
            let mut scratch: Vec<(Millis, S)> = Vec::new();
            for (id, series) in self.series.iter_mut().enumerate() {
                scratch.clear();
                for (t, slot) in series.tiers[tier.index()].range(from, to) {
                    let start = grid.floor(t, len);
                    if scratch.last().is_none_or(|(s, _)| *s != start) {
                        scratch.push((start, S::default()));
                    }
                    if let Some((_, acc)) = scratch.last_mut() {
                        match slot {
                            Slot::Hot(p) => acc.merge(&p.state),
                            Slot::Frozen(f) => acc.merge_frozen(f),
                        }
                    }
                }
                for (start, acc) in scratch.drain(..) {
                    let pane = series.tiers[coarse.index()].hot_mut(start);
                    pane.state.merge(&acc);
                    if persist != 0 {
                        Self::mark(
                            &mut self.changed,
                            pane,
                            id as SeriesId,
                            coarse,
                            start,
                            persist,
                        );
                    }
                }
            }
        }
    }

    /// Drops panes that ended at least `retention` before `frontier`, and freezes the panes
    /// that ended at least `retention.freeze_ms` before it (hour panes: an hour more).
    pub fn evict(&mut self, frontier: Millis, retention: &Retention) {
        let keep_from = Self::keep_from(frontier, retention);
        let freeze_limit = frontier - retention.freeze_ms;
        // Bodies asked for since the previous eviction stay, for the newest hour a body of the
        // series ends at and the hour before (corrections of the ends of the previous hour),
        // and blocks asked for since then; the others are dropped (the windows that read them
        // have moved on, or their series went quiet).
        let generation = self.body_generation;
        self.body_generation += 1;
        let mut freed = 0;
        for series in &mut self.series {
            for tier in Tier::ALL {
                let panes = &mut series.tiers[tier.index()];
                panes.drop_before(keep_from[tier.index()]);
                // The last closed hour stays hot for another hour: every head of a window
                // with an hour or minute tail reads it after its body, at every advance.
                let limit = match tier {
                    Tier::Hour => freeze_limit - HOUR_MS,
                    _ => freeze_limit,
                };
                panes.freeze_until(limit, tier);
            }
            if !series.bodies.is_empty() {
                let empty = series.is_empty();
                let newest = series.bodies_until;
                freed += series.drop_bodies(|b| {
                    !empty && b.used >= generation && (b.is_block() || b.to + HOUR_MS >= newest)
                });
            }
        }
        self.body_bytes -= freed;
    }

    /// Makes sure `key`'s series caches a body that serves the heads of the hour-aligned
    /// range `[from, to)` (see [`serves`]): when none does, it keeps `[from, to − 1 h)`, the
    /// part the next hour's heads share, if that holds at least `min_panes` hour and day
    /// panes (fewer are cheaper to merge than to keep). A body over a shorter range with the
    /// same start (a window with a day tail, an hour ago) is grown in place when it was not
    /// asked for in this generation, else the new one is built from it.
    /// The range may also be one [`BLOCK_MS`] block of minutes (`from` aligned to it),
    /// cached as is when it holds `min_panes` minute panes. Returns whether a body is there.
    pub fn ensure_body(&mut self, key: &K, from: Millis, to: Millis, min_panes: usize) -> bool {
        let Some(&id) = self.ids.get(key) else {
            return false;
        };
        if is_block(from, to) {
            debug_assert_eq!(self.grid.floor(from, BLOCK_MS), from);
            self.ensure_block(id, from, to, min_panes)
        } else {
            debug_assert!(from < to && self.grid.floor(from, HOUR_MS) == from);
            self.ensure_hours_body(id, from, to, min_panes)
        }
    }

    /// [`PaneStore::ensure_body`] for a block.
    fn ensure_block(&mut self, id: SeriesId, from: Millis, to: Millis, min_panes: usize) -> bool {
        let generation = self.body_generation;
        let series = &mut self.series[id as usize];
        if let Some(body) = series
            .bodies
            .iter_mut()
            .find(|b| b.from == from && b.to == to)
        {
            body.used = generation;
            return true;
        }
        let minutes = &series.tiers[Tier::Minute.index()];
        if minutes.count_range(from, to) < min_panes || self.body_bytes >= self.body_budget {
            return false;
        }
        let mut state = S::default();
        minutes.merge_range(from, to, &mut state);
        self.add_body(id, Body::new(from, to, state, generation));
        true
    }

    /// [`PaneStore::ensure_body`] for a range of hours.
    fn ensure_hours_body(
        &mut self,
        id: SeriesId,
        from: Millis,
        to: Millis,
        min_panes: usize,
    ) -> bool {
        let grid = self.grid;
        let generation = self.body_generation;
        let series = &mut self.series[id as usize];
        if let Some(i) = serving(&series.bodies, from, to) {
            series.bodies[i].used = generation;
            return true;
        }
        let to = to - HOUR_MS;
        if from >= to || series.closed_pane_count(&grid, from, to) < min_panes {
            return false;
        }
        let base = series
            .bodies
            .iter()
            .enumerate()
            .filter(|(_, b)| b.from == from && b.to < to && !b.is_block())
            .max_by_key(|(_, b)| b.to)
            .map(|(i, _)| i);
        if let Some(i) = base.filter(|&i| series.bodies[i].used < generation) {
            // Grown in place: the heads of its own hours, which it no longer serves once
            // grown, were not read in this generation.
            let mut state = std::mem::take(&mut series.bodies[i].state);
            let grown_from = series.bodies[i].to;
            series.merge_closed_range(&grid, grown_from, to, &mut state);
            let grown = Body::new(from, to, state, generation);
            self.body_bytes = self.body_bytes - series.bodies[i].bytes + grown.bytes;
            series.bodies[i] = grown;
            series.bodies_until = series.bodies_until.max(to);
            return true;
        }
        if self.body_bytes >= self.body_budget {
            return false;
        }
        let (mut state, rest_from) = match base {
            Some(i) => (series.bodies[i].state.clone(), series.bodies[i].to),
            None => (S::default(), from),
        };
        series.merge_closed_range(&grid, rest_from, to, &mut state);
        // A body of the same length ending earlier and not asked for in this generation
        // (a window with an hour tail, an hour ago) is served by the new one: it goes now
        // rather than at the next eviction.
        self.body_bytes -= series.drop_bodies(|b| {
            b.is_block() || b.to - b.from != to - from || b.to >= to || b.used >= generation
        });
        self.add_body(id, Body::new(from, to, state, generation));
        true
    }

    /// Caches `body` in series `id`.
    fn add_body(&mut self, id: SeriesId, body: Body<S>) {
        let series = &mut self.series[id as usize];
        series.bodies_until = series.bodies_until.max(body.to);
        self.body_bytes += body.bytes;
        series.bodies.push(body);
    }

    /// The panes written since the last call (still present; evicted ones are skipped), for
    /// sinks that persist panes ([`PaneStore::with_persistence`]). Keys are filtered by `keep`.
    pub fn take_changed(&mut self, mut keep: impl FnMut(&K) -> bool) -> Vec<(K, Tier, Millis, &S)> {
        self.prepare_reads();
        let mut persist = Vec::new();
        for (id, tier, start) in std::mem::take(&mut self.changed) {
            let key = self.keys[id as usize];
            if let Some(pane) = self.series[id as usize].tiers[tier.index()].get_hot_mut(start) {
                if pane.flags & NEEDS_PERSIST != 0 && keep(&key) {
                    persist.push((id, tier, start));
                }
                pane.flags = 0;
            }
        }
        let mut out: Vec<(K, Tier, Millis, &S)> = persist
            .into_iter()
            .filter_map(|(id, tier, start)| {
                match self.series[id as usize].tiers[tier.index()].get(start)? {
                    PaneRef::Hot(s) => Some((self.keys[id as usize], tier, start, s)),
                    PaneRef::Frozen(_) => None,
                }
            })
            .collect();
        out.sort_unstable_by_key(|(_, tier, start, _)| (*tier, *start));
        out
    }

    /// Prepares every pane written since the last call for reading ([`Mergeable::prepare`]).
    pub fn prepare_reads(&mut self) {
        for id in self.bodies_written.drain(..) {
            for body in &mut self.series[id as usize].bodies {
                if body.needs_prepare {
                    body.state.prepare();
                    body.needs_prepare = false;
                }
            }
        }
        let series = &mut self.series;
        self.changed.retain(|(id, tier, start)| {
            let Some(pane) = series[*id as usize].tiers[tier.index()].get_hot_mut(*start) else {
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
        let id = self.series_id(key);
        let series = &mut self.series[id as usize];
        self.body_bytes -= series.drop_bodies(|_| false);
        let pane = series.tiers[tier.index()].hot_mut(start);
        pane.state.merge(state);
        pane.state.prepare();
    }

    /// After a restore: panes that an eviction at `frontier` with `retention` would drop
    /// may be missing (the checkpointed store had evicted them, or older ones).
    pub fn mark_evicted_through(&mut self, frontier: Millis, retention: &Retention) {
        let keep_from = Self::keep_from(frontier, retention);
        for series in &mut self.series {
            for tier in Tier::ALL {
                series.tiers[tier.index()].may_lack_before(keep_from[tier.index()]);
            }
        }
    }

    /// Per tier, the earliest start of the panes that an eviction at `frontier` keeps:
    /// those that end after `frontier` minus the tier's retention.
    fn keep_from(frontier: Millis, retention: &Retention) -> [Millis; 3] {
        Tier::ALL.map(|tier| {
            let kept = match tier {
                Tier::Minute => retention.minute_ms,
                Tier::Hour => retention.hour_ms,
                Tier::Day => retention.day_ms,
            };
            frontier - kept - tier.len_ms() + 1
        })
    }

    /// After a restore: every hour/day ending at or before `frontier` is closed.
    pub fn mark_closed_through(&mut self, frontier: Millis) {
        self.closed.hours_until = Some(self.grid.floor(frontier, HOUR_MS));
        self.closed.days_until = Some(self.grid.floor(frontier, DAY_MS));
    }

    /// Merges `key`'s panes over `[from, to)` into `acc`; returns how many were merged.
    pub fn merge_range_into(&self, key: &K, from: Millis, to: Millis, acc: &mut S) -> usize {
        self.series(key).map_or(0, |series| {
            series.merge_range_into(&self.grid, from, to, acc)
        })
    }

    pub fn series(&self, key: &K) -> Option<&PaneSeries<S>> {
        self.ids.get(key).map(|id| &self.series[*id as usize])
    }

    /// The keys of the series that hold panes.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    /// The series that hold panes.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &PaneSeries<S>)> {
        self.keys
            .iter()
            .zip(&self.series)
            .filter(|(_, s)| !s.is_empty())
    }

    /// How many series hold panes.
    pub fn series_count(&self) -> usize {
        self.series.iter().filter(|s| !s.is_empty()).count()
    }

    pub fn pane_count(&self, tier: Tier) -> usize {
        self.series.iter().map(|s| s.pane_count(tier)).sum()
    }

    pub fn frozen_count(&self, tier: Tier) -> usize {
        self.series.iter().map(|s| s.frozen_count(tier)).sum()
    }

    /// How many bodies the store caches.
    pub fn body_count(&self) -> usize {
        self.series.iter().map(|s| s.body_count()).sum()
    }

    /// The bytes the cached bodies held when they were built.
    pub fn body_bytes(&self) -> usize {
        self.body_bytes
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

    /// Frozen as text, so that a frozen pane is visibly another representation.
    impl Freeze for Sum {
        type Frozen = String;
        fn freeze(&self, _tier: Tier) -> String {
            self.0.to_string()
        }
        fn thaw(frozen: &String) -> Self {
            Sum(frozen.parse().expect("frozen by Sum::freeze"))
        }
        fn merge_frozen(&mut self, frozen: &String) {
            self.0 += Sum::thaw(frozen).0;
        }
        fn frozen_bytes(frozen: &String) -> usize {
            frozen.len()
        }
    }

    fn sum_of<'a>(panes: impl Iterator<Item = (Millis, PaneRef<'a, Sum>)>) -> i64 {
        panes.map(|(_, p)| p.to_state().0).sum()
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

    /// Three days of minutes, the value of minute `i` (from `T0`) being `i + 1`, all closed.
    fn three_days() -> (PaneStore<u8, Sum>, Millis) {
        let mut store: PaneStore<u8, Sum> =
            PaneStore::new(TimeGrid::default()).with_body_budget(usize::MAX);
        let minutes = 3 * 24 * 60;
        for i in 0..minutes {
            store.apply(0, T0 + i * MINUTE_MS + 123, |s| s.0 += i + 1);
        }
        let frontier = T0 + minutes * MINUTE_MS;
        store.close_through(frontier);
        (store, frontier)
    }

    /// The plain sum of minutes `[from, to)` of [`three_days`].
    fn minutes_sum(from: Millis, to: Millis) -> i64 {
        ((from - T0) / MINUTE_MS..(to - T0) / MINUTE_MS)
            .map(|i| i + 1)
            .sum()
    }

    const KEEP_ALL: Retention = Retention {
        minute_ms: 10 * DAY_MS,
        hour_ms: 10 * DAY_MS,
        day_ms: 10 * DAY_MS,
        freeze_ms: 10 * DAY_MS,
    };

    #[test]
    fn a_body_serves_two_hours_of_heads_and_follows_writes_into_it() {
        let (mut store, frontier) = three_days();
        let (from, to) = (T0 + 5 * HOUR_MS, T0 + 2 * DAY_MS + 3 * HOUR_MS);
        let body = |store: &PaneStore<u8, Sum>, from, to| {
            store.series(&0).and_then(|s| s.body(from, to)).map(|b| b.0)
        };
        let read = |store: &PaneStore<u8, Sum>, start, end| {
            let mut acc = Sum::default();
            let merged = store.merge_range_into(&0, start, end, &mut acc);
            (merged, acc.0)
        };
        // Two hours: the part shared with the next hour is one hour pane, not worth keeping.
        assert!(!store.ensure_body(&0, T0 + HOUR_MS, T0 + 3 * HOUR_MS, 2));
        assert!(store.ensure_body(&0, from, to, 4));
        // What is kept is the part this hour's heads share with the next hour's.
        assert_eq!(store.body_count(), 1);
        assert_eq!(
            body(&store, from, to - HOUR_MS),
            Some(minutes_sum(from, to - HOUR_MS))
        );
        // This hour's windows: head minutes, the body and the hour after it, tail minutes.
        let (start, end) = (from - 7 * MINUTE_MS, to + 9 * MINUTE_MS);
        assert_eq!(
            read(&store, start, end),
            (7 + 2 + 9, minutes_sum(start, end))
        );
        // The previous hour's windows with an hour tail: the hour before the body, the body.
        let (start, end) = (from - HOUR_MS - 7 * MINUTE_MS, to - HOUR_MS + 9 * MINUTE_MS);
        assert_eq!(
            read(&store, start, end),
            (7 + 2 + 9, minutes_sum(start, end))
        );
        // Two hours beyond it: not served, read in panes.
        let (start, end) = (from, to + HOUR_MS);
        assert!(read(&store, start, end).0 > 3);
        assert_eq!(read(&store, start, end).1, minutes_sum(start, end));
        // Writes into the range reach the body; writes around it do not.
        store.apply(0, T0 + DAY_MS + 30 * MINUTE_MS, |s| s.0 += 1000);
        store.apply(0, to - HOUR_MS, |s| s.0 += 50_000);
        store.apply(0, from - MINUTE_MS, |s| s.0 += 70_000);
        store.prepare_reads();
        assert_eq!(
            body(&store, from, to - HOUR_MS),
            Some(minutes_sum(from, to - HOUR_MS) + 1000)
        );
        let (start, end) = (from - 7 * MINUTE_MS, to + 9 * MINUTE_MS);
        let written = 1000 + 50_000 + 70_000;
        assert_eq!(
            read(&store, start, end).1,
            minutes_sum(start, end) + written
        );
        // The next hour with the same start (a day tail), asked for while this hour's heads
        // may still be read: a longer body is built from this one, which stays.
        assert!(store.ensure_body(&0, from, to + HOUR_MS, 4));
        assert_eq!(store.body_count(), 2);
        assert_eq!(
            body(&store, from, to),
            Some(minutes_sum(from, to) + 1000 + 50_000)
        );
        // After an eviction, the hour after that grows the newest body in place.
        store.evict(frontier, &KEEP_ALL);
        assert!(store.ensure_body(&0, from, to + 2 * HOUR_MS, 4));
        assert_eq!(store.body_count(), 2);
        assert_eq!(body(&store, from, to), None);
        assert_eq!(
            body(&store, from, to + HOUR_MS),
            Some(minutes_sum(from, to + HOUR_MS) + 1000 + 50_000)
        );
        let (start, end) = (from, to + 2 * HOUR_MS);
        assert_eq!(
            read(&store, start, end),
            (2, minutes_sum(start, end) + 51_000)
        );
        assert!(
            store.ensure_body(&0, from, to + HOUR_MS, 4),
            "asked again: served"
        );
        assert_eq!(store.body_count(), 2);
    }

    #[test]
    fn a_sliding_body_replaces_the_one_of_the_hour_before_last() {
        let (mut store, frontier) = three_days();
        let (from, to) = (T0 + 5 * HOUR_MS, T0 + DAY_MS + 5 * HOUR_MS);
        let ranges = |store: &PaneStore<u8, Sum>| {
            let series = store.series(&0).unwrap();
            let mut r: Vec<(Millis, Millis)> =
                series.bodies.iter().map(|b| (b.from, b.to)).collect();
            r.sort_unstable();
            r
        };
        assert!(store.ensure_body(&0, from, to, 4));
        // The next hour of a window with an hour tail, in the same generation: both stay.
        let h = HOUR_MS;
        assert!(store.ensure_body(&0, from + h, to + h, 4));
        assert_eq!(ranges(&store), [(from, to - h), (from + h, to)]);
        // The previous hour's heads are read from the newer body.
        let mut acc = Sum::default();
        assert_eq!(store.merge_range_into(&0, from, to, &mut acc), 2);
        assert_eq!(acc.0, minutes_sum(from, to));
        // In a later generation, the next body replaces those not asked for since: it
        // serves the heads of its own hour and of the hour before.
        store.evict(frontier, &KEEP_ALL);
        assert!(store.ensure_body(&0, from + 2 * h, to + 2 * h, 4));
        assert_eq!(ranges(&store), [(from + 2 * h, to + h)]);
        let bytes = store.body_bytes();
        let mut acc = Sum::default();
        assert_eq!(store.merge_range_into(&0, from + h, to + h, &mut acc), 2);
        assert_eq!(acc.0, minutes_sum(from + h, to + h));
        store.evict(frontier, &KEEP_ALL);
        assert!(store.ensure_body(&0, from + 3 * h, to + 3 * h, 4));
        assert_eq!(ranges(&store), [(from + 3 * h, to + 2 * h)]);
        assert_eq!(store.body_bytes(), bytes, "nothing left behind");
    }

    #[test]
    fn bodies_stop_at_the_budget() {
        let (store, _) = three_days();
        let mut store = store.with_body_budget(1);
        assert!(store.ensure_body(&0, T0 + HOUR_MS, T0 + DAY_MS, 4));
        assert!(
            !store.ensure_body(&0, T0 + 2 * HOUR_MS, T0 + DAY_MS, 4),
            "the budget is spent"
        );
        assert_eq!(store.body_count(), 1);
        let mut none = PaneStore::<u8, Sum>::new(TimeGrid::default());
        none.apply(0, T0, |s| s.0 += 1);
        assert!(
            !none.ensure_body(&0, T0, T0 + DAY_MS, 0),
            "no budget by default"
        );
    }

    #[test]
    fn blocks_stand_for_their_minutes_and_are_kept_while_asked_for() {
        let (mut store, frontier) = three_days();
        let block = (T0 + DAY_MS + 20 * MINUTE_MS, T0 + DAY_MS + 30 * MINUTE_MS);
        assert!(store.ensure_body(&0, block.0, block.1, 2));
        let body = store.series(&0).and_then(|s| s.body(block.0, block.1));
        assert_eq!(body.map(|b| b.0), Some(minutes_sum(block.0, block.1)));
        // A range through the block: 7 minutes, the block, 30 minutes, then hours.
        let (start, end) = (block.0 - 7 * MINUTE_MS, T0 + DAY_MS + 5 * HOUR_MS);
        let mut acc = Sum::default();
        assert_eq!(
            store.merge_range_into(&0, start, end, &mut acc),
            7 + 1 + 30 + 4
        );
        assert_eq!(acc.0, minutes_sum(start, end));
        // Late writes into the block's minutes reach it.
        store.apply(0, block.0 + 3 * MINUTE_MS, |s| s.0 += 500);
        store.prepare_reads();
        let mut acc = Sum::default();
        store.merge_range_into(&0, start, end, &mut acc);
        assert_eq!(acc.0, minutes_sum(start, end) + 500);
        // Fewer panes than asked for: no block.
        assert!(!store.ensure_body(&0, block.1, block.1 + BLOCK_MS, 11));
        // Kept while asked for, whatever newer bodies the series holds; then dropped.
        assert!(store.ensure_body(&0, T0 + HOUR_MS, T0 + 2 * DAY_MS, 2));
        store.evict(frontier, &KEEP_ALL);
        assert!(store.ensure_body(&0, block.0, block.1, 2));
        assert!(store.ensure_body(&0, T0 + HOUR_MS, T0 + 2 * DAY_MS, 2));
        store.evict(frontier, &KEEP_ALL);
        let series = store.series(&0).unwrap();
        assert!(series.body(block.0, block.1).is_some(), "asked for: kept");
        store.evict(frontier, &KEEP_ALL);
        let series = store.series(&0).unwrap();
        assert!(
            series.body(block.0, block.1).is_none(),
            "not asked for: dropped"
        );
    }

    #[test]
    fn bodies_are_kept_while_asked_for_and_recent() {
        let (mut store, frontier) = three_days();
        // Asked for [from, to + 1 h), each keeps [from, to).
        let a = (T0 + 2 * HOUR_MS, T0 + DAY_MS + 5 * HOUR_MS);
        let b = (T0 + HOUR_MS, T0 + DAY_MS + 6 * HOUR_MS);
        let c = (T0 + 3 * HOUR_MS, T0 + DAY_MS + 4 * HOUR_MS);
        for (from, to) in [a, b, c] {
            assert!(store.ensure_body(&0, from, to + HOUR_MS, 4));
        }
        store.evict(frontier, &KEEP_ALL);
        let series = store.series(&0).unwrap();
        assert!(series.body(a.0, a.1).is_some() && series.body(b.0, b.1).is_some());
        assert!(
            series.body(c.0, c.1).is_none(),
            "ends more than an hour before the newest body"
        );
        assert!(store.ensure_body(&0, a.0, a.1 + HOUR_MS, 4));
        store.evict(frontier, &KEEP_ALL);
        let series = store.series(&0).unwrap();
        assert!(series.body(a.0, a.1).is_some() && series.body(b.0, b.1).is_none());
        assert!(store.body_bytes() > 0);
        // A restored pane changes what the panes hold: every body of its series goes.
        store.restore_pane(0, Tier::Minute, T0, &Sum(5));
        assert_eq!((store.body_count(), store.body_bytes()), (0, 0));
    }

    #[test]
    fn late_update_into_closed_tiers_keeps_them_consistent() {
        let grid = TimeGrid::default();
        let mut store: PaneStore<u8, Sum> = PaneStore::new(grid);
        store.apply(0, T0 + 10 * MINUTE_MS, |s| s.0 += 1);
        store.close_through(T0 + DAY_MS + HOUR_MS);
        store.apply(0, T0 + 20 * MINUTE_MS, |s| s.0 += 10);
        let series = store.series(&0).unwrap();
        assert_eq!(sum_of(series.panes(Tier::Hour)), 11);
        assert_eq!(sum_of(series.panes(Tier::Day)), 11);
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
            freeze_ms: HOUR_MS,
        };
        store.evict(frontier, &retention);
        assert!(
            store.series(&0).is_none_or(|s| s.is_empty()),
            "series 0 only had data 3 days ago"
        );
        assert_eq!(store.series_count(), 1);
        assert_eq!(store.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(store.series(&1).unwrap().pane_count(Tier::Minute), 1);
    }

    /// Minutes from 21:00 on day 0 to 06:00 on day 1 (value 1 each), closed through 06:00.
    fn overnight() -> (PaneStore<u8, Sum>, Millis) {
        let mut store: PaneStore<u8, Sum> = PaneStore::new(TimeGrid::default());
        for m in 21 * 60..30 * 60 {
            store.apply(0, T0 + m * MINUTE_MS, |s| s.0 += 1);
        }
        let frontier = T0 + 30 * HOUR_MS;
        store.close_through(frontier);
        (store, frontier)
    }

    #[test]
    fn a_pane_reaching_past_the_span_holds_it_only_through_its_finer_panes() {
        let (mut store, frontier) = overnight();
        let at = |h: i64, m: i64| T0 + h * HOUR_MS + m * MINUTE_MS;
        let holds = |store: &PaneStore<u8, Sum>, from: Millis, to: Millis| {
            store.series(&0).unwrap().holds_pane_starting_in(from, to)
        };
        let series = store.series(&0).unwrap();
        assert!(series.pane(Tier::Day, T0).is_some(), "day 0 is closed");
        // Day 0's pane starts in these spans but its contributions come after them: its
        // hours (and minutes) say so.
        assert!(!holds(&store, T0 - 2 * DAY_MS, at(4, 0)));
        assert!(!holds(&store, T0, at(21, 0)));
        // The hour 21:00 ends within the span; the minutes 21:00–21:29 start in it.
        assert!(holds(&store, T0 - DAY_MS, at(22, 0)));
        assert!(holds(&store, T0, at(21, 30)));
        assert!(holds(&store, at(21, 29), at(21, 30)));
        assert!(!holds(&store, at(20, 0), at(21, 0)));
        // Once the finer panes that would tell may be gone, a pane reaching past the span
        // counts (minutes kept 2 h, hours 12 h): day 0 from a span before midnight, the
        // hour 01:00 from a span ending in it.
        let retention = Retention {
            minute_ms: 2 * HOUR_MS,
            hour_ms: 12 * HOUR_MS,
            day_ms: 10 * DAY_MS,
            freeze_ms: 10 * DAY_MS,
        };
        store.evict(frontier, &retention);
        assert!(holds(&store, T0 - DAY_MS, at(4, 0)));
        assert!(holds(&store, at(24, 0), at(25, 30)));
        // A restored store assumes the panes an eviction at its frontier drops are gone.
        let (mut restored, frontier) = overnight();
        assert!(!holds(&restored, T0 - DAY_MS, at(4, 0)));
        restored.mark_evicted_through(frontier, &retention);
        assert!(holds(&restored, T0 - DAY_MS, at(4, 0)));
        assert!(holds(&restored, at(24, 0), at(25, 30)));
    }

    #[test]
    fn frozen_panes_merge_like_hot_ones_and_thaw_on_write() {
        let grid = TimeGrid::default();
        let mut store: PaneStore<u8, Sum> = PaneStore::new(grid);
        let minutes = 2 * 24 * 60;
        for i in 0..minutes {
            store.apply(0, T0 + i * MINUTE_MS, |s| s.0 += i + 1);
        }
        let frontier = T0 + minutes * MINUTE_MS;
        store.close_through(frontier);
        let retention = Retention {
            minute_ms: 3 * DAY_MS,
            hour_ms: 3 * DAY_MS,
            day_ms: 3 * DAY_MS,
            freeze_ms: 90 * MINUTE_MS,
        };
        store.evict(frontier, &retention);
        let series = store.series(&0).unwrap();
        // Everything that ended 90 minutes before the frontier is frozen, the rest is not;
        // hours stay hot an hour longer (those that ended 150 minutes before are frozen).
        assert_eq!(series.frozen_count(Tier::Minute), (minutes - 90) as usize);
        assert_eq!(series.frozen_count(Tier::Day), 1);
        assert_eq!(series.frozen_count(Tier::Hour), 48 - 3);
        let total = |store: &PaneStore<u8, Sum>, from: i64, to: i64| {
            let mut acc = Sum::default();
            store.merge_range_into(&0, T0 + from * MINUTE_MS, T0 + to * MINUTE_MS, &mut acc);
            acc.0
        };
        for (from, to) in [(0, minutes), (17, 1500), (1439, 2000), (2800, minutes)] {
            assert_eq!(
                total(&store, from, to),
                (from..to).map(|i| i + 1).sum::<i64>()
            );
        }
        // A write into a frozen minute (and its frozen hour and day) thaws them.
        store.apply(0, T0 + 5 * MINUTE_MS, |s| s.0 += 1_000_000);
        let series = store.series(&0).unwrap();
        assert!(!series
            .pane(Tier::Minute, T0 + 5 * MINUTE_MS)
            .unwrap()
            .is_frozen());
        assert!(!series.pane(Tier::Hour, T0).unwrap().is_frozen());
        assert!(!series.pane(Tier::Day, T0).unwrap().is_frozen());
        assert_eq!(
            total(&store, 0, minutes),
            (0..minutes).map(|i| i + 1).sum::<i64>() + 1_000_000
        );
        assert_eq!(total(&store, 3, 7), 4 + 5 + 6 + 7 + 1_000_000);
        // The next eviction freezes them again.
        store.evict(frontier, &retention);
        let series = store.series(&0).unwrap();
        assert!(series.pane(Tier::Day, T0).unwrap().is_frozen());
        assert_eq!(series.frozen_count(Tier::Minute), (minutes - 90) as usize);
        assert_eq!(
            total(&store, 0, minutes),
            (0..minutes).map(|i| i + 1).sum::<i64>() + 1_000_000
        );
    }

    #[test]
    fn retention_covers_every_window_edge() {
        let grid = TimeGrid::default();
        let windows = WindowSpec::defaults();
        let horizon = HOUR_MS;
        let r = Retention::for_windows(&windows, true, horizon);
        assert_eq!(r.minute_ms, 3 * HOUR_MS + MINUTE_MS);
        assert_eq!(r.hour_ms, 8 * DAY_MS + HOUR_MS + MINUTE_MS);
        assert_eq!(r.day_ms, 29 * DAY_MS + HOUR_MS + MINUTE_MS);
        // Every pane that a window ending after `frontier − horizon − 1 min` reads is kept.
        let frontier = T0 + 5 * DAY_MS + 37 * MINUTE_MS;
        for w in &windows {
            let mut end = frontier - horizon;
            while end <= frontier + 3 * DAY_MS {
                let start = w.start_for(&grid, end);
                let a1 = grid.ceil(start, HOUR_MS);
                let b1 = grid.floor(end, HOUR_MS);
                let a2 = grid.ceil(a1, DAY_MS);
                let b2 = grid.floor(b1, DAY_MS);
                let kept = |tier: Tier, from: Millis, cut_ms: Millis| {
                    from >= end || from + tier.len_ms() > frontier - cut_ms
                };
                if a1 >= b1 {
                    assert!(kept(Tier::Minute, start, r.minute_ms), "{} {end}", w.name);
                } else {
                    let first = if start < a1 { start } else { b1 };
                    assert!(kept(Tier::Minute, first, r.minute_ms), "{} {end}", w.name);
                    if a2 >= b2 {
                        assert!(kept(Tier::Hour, a1, r.hour_ms), "{} {end}", w.name);
                    } else {
                        let first = if a1 < a2 { a1 } else { b2 };
                        assert!(kept(Tier::Hour, first, r.hour_ms), "{} {end}", w.name);
                        assert!(kept(Tier::Day, a2, r.day_ms), "{} {end}", w.name);
                    }
                }
                end += MINUTE_MS;
            }
        }
    }
}
