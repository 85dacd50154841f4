//! [`DurationSketch`]: a DDSketch-style, mergeable relative-error quantile
//! sketch for durations in whole milliseconds.
//!
//! # Buckets
//!
//! With `α = 0.01` and `γ = (1 + α) / (1 − α)`, a duration `x ≥ 1` ms falls in
//! the bucket `i = ceil(log_γ(x))`, i.e. the smallest `i ≥ 0` with `x ≤ γ^i`.
//! Bucket `i` covers `(γ^(i−1), γ^i]` and is represented by
//! `2·γ^i / (γ + 1)`, which is within `α` relative error of every value in the
//! bucket. Durations `≤ 0` go to a separate zero bucket and are reported as
//! exactly `0`.
//!
//! The bucket boundaries `γ^i` are not computed with `ln`/`powf` (whose last
//! bit may differ between libm implementations) but with a table built at
//! compile time by repeated IEEE-754 multiplication, which is correctly
//! rounded everywhere. `ln` is only used for a first guess that is then
//! corrected against the table, so every machine assigns every value to the
//! same bucket and serialized sketches from different hosts merge exactly.

use crate::varint::{put_u64, unzigzag, zigzag, Reader};
use crate::{sorted, SketchError};

/// The relative accuracy `α` of [`DurationSketch::quantile`].
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// `γ = (1 + α) / (1 − α)`.
const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);

/// `1 / ln γ`, only used for the first guess of the bucket index (which is
/// then corrected exactly against [`UPPER`]), so its precision is irrelevant.
const INV_LN_GAMMA: f64 = 49.998_333_288_886_78;

/// `2^63`, the upper end of the `i64` range.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// The largest bucket index reachable from `i64` input: the smallest `i` with
/// `γ^i ≥ 2^63`.
pub const MAX_BUCKET_INDEX: i32 = max_index() as i32;

const fn max_index() -> usize {
    let mut g = 1.0f64;
    let mut i = 0usize;
    while g < TWO_POW_63 {
        g *= GAMMA;
        i += 1;
    }
    i
}

const TABLE_LEN: usize = max_index() + 1;

/// `UPPER[i] = γ^i` (by repeated multiplication), the inclusive upper bound of
/// bucket `i`.
static UPPER: [f64; TABLE_LEN] = build_upper();

const fn build_upper() -> [f64; TABLE_LEN] {
    let mut t = [0.0f64; TABLE_LEN];
    let mut g = 1.0f64;
    let mut i = 0;
    while i < TABLE_LEN {
        t[i] = g;
        g *= GAMMA;
        i += 1;
    }
    t
}

/// `1 / log2 γ`, for the first guess of the bucket index.
const INV_LOG2_GAMMA: f64 = INV_LN_GAMMA * std::f64::consts::LN_2;

/// Cheap approximation of `log2(x)` for `x ≥ 1` (absolute error < 0.008, i.e. < 0.3 buckets):
/// the binary exponent plus a quadratic in the mantissa. Only used as a first
/// guess; [`index_of`] corrects it exactly against [`UPPER`].
#[inline]
fn approx_log2(x: f64) -> f64 {
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as f64 - 1023.0;
    // Mantissa as t in [0, 1): x = 2^exponent · (1 + t).
    let t = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000) - 1.0;
    exponent + t * (1.3466 - 0.3466 * t)
}

/// Bucket index of a duration `ms ≥ 1`: the smallest `i` with
/// `ms ≤ UPPER[i]`. Exact whatever the quality of the first guess.
#[inline]
fn index_of(ms: i64) -> usize {
    debug_assert!(ms >= 1);
    let x = ms as f64;
    let guess = (approx_log2(x) * INV_LOG2_GAMMA).ceil();
    // `as` saturates (and maps NaN to 0); the min keeps it in the table.
    let mut i = (guess as usize).min(TABLE_LEN - 1);
    // UPPER[TABLE_LEN - 1] >= 2^63 >= x, so this stays in bounds.
    while UPPER[i] < x {
        i += 1;
    }
    while i > 0 && UPPER[i - 1] >= x {
        i -= 1;
    }
    i
}

/// A mergeable quantile sketch for durations in milliseconds with 1 %
/// relative accuracy (see the [module docs](self)).
///
/// * [`quantile(q)`](Self::quantile) returns a value within 1 % relative error
///   of the exact order statistic `x_(r)`, `r = floor(q·(n−1))` (0-based rank),
///   and exactly `0` when that statistic is `≤ 0`.
/// * [`merge`](Self::merge) is exact: merging equals the sketch of the
///   concatenated data (same buckets, bit-for-bit), hence associative and
///   commutative. [`subtract`](Self::subtract) and [`remove`](Self::remove)
///   invert [`merge`](Self::merge) and [`add`](Self::add).
/// * The buckets take one of two forms, chosen by density. Sparse: a sorted
///   `Vec<(bucket index, count)>` without empty buckets, 16 heap bytes a bucket, so
///   an empty sketch does not allocate. Dense, once a sketch holds at least
///   [`DENSE_MIN_BUCKETS`] buckets that fill at least half of the index range
///   they span: one count per index of that range, 8 bytes each (no larger than
///   the sparse form), merged by adding slices and written by indexing, with no
///   search and no shifting. A dense sketch whose range grows goes back to the
///   sparse form once less than a quarter of the range is used. The form never
///   shows: equality ([`PartialEq`]), [`buckets`](Self::buckets) and
///   [`to_bytes`](Self::to_bytes) are about the bucket contents only.
///
/// Counts saturate at `u64::MAX` (per bucket and in [`count`](Self::count))
/// instead of overflowing; that is the only case in which the exactness
/// guarantees above do not hold, and it needs more than 1.8·10^19 values.
#[derive(Clone, Debug, Default)]
pub struct DurationSketch {
    zero_count: u64,
    buckets: Buckets,
}

/// How many non-empty buckets a sketch holds before it may take the dense form.
pub const DENSE_MIN_BUCKETS: usize = 24;

/// The log buckets of a [`DurationSketch`] (see its docs for when each form is used).
#[derive(Clone, Debug)]
enum Buckets {
    /// `(index, count)` sorted by index, indices unique and in
    /// `0..=MAX_BUCKET_INDEX`, counts > 0.
    Sparse(Vec<(i32, u64)>),
    /// `counts[i]` is the count of bucket `lo + i`, every index in
    /// `0..=MAX_BUCKET_INDEX`; the first and the last count are non-zero.
    Dense { lo: i32, counts: Vec<u64> },
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets::Sparse(Vec::new())
    }
}

/// Whether `nonzero` buckets spread over `span` indices take the dense form.
fn dense_suits(span: usize, nonzero: usize) -> bool {
    nonzero >= DENSE_MIN_BUCKETS && span <= 2 * nonzero
}

/// Whether a dense sketch stays dense after its range changed (hysteresis: it
/// went dense at half the range used, it goes back below a quarter).
fn dense_stays(span: usize, nonzero: usize) -> bool {
    span <= 4 * nonzero
}

/// The non-empty log buckets of a sketch, ascending by index.
pub struct BucketIter<'a>(BucketIterForm<'a>);

enum BucketIterForm<'a> {
    Sparse(std::slice::Iter<'a, (i32, u64)>),
    Dense {
        lo: i32,
        at: usize,
        counts: &'a [u64],
    },
}

impl Iterator for BucketIter<'_> {
    type Item = (i32, u64);

    #[inline]
    fn next(&mut self) -> Option<(i32, u64)> {
        match &mut self.0 {
            BucketIterForm::Sparse(it) => it.next().copied(),
            BucketIterForm::Dense { lo, at, counts } => {
                while let Some(&c) = counts.get(*at) {
                    *at += 1;
                    if c != 0 {
                        return Some((*lo + (*at - 1) as i32, c));
                    }
                }
                None
            }
        }
    }
}

impl Buckets {
    fn iter(&self) -> BucketIter<'_> {
        BucketIter(match self {
            Buckets::Sparse(list) => BucketIterForm::Sparse(list.iter()),
            Buckets::Dense { lo, counts } => BucketIterForm::Dense {
                lo: *lo,
                at: 0,
                counts,
            },
        })
    }

    fn is_empty(&self) -> bool {
        // A dense range is trimmed to non-zero ends, hence never empty.
        matches!(self, Buckets::Sparse(list) if list.is_empty())
    }

    fn nonzero(&self) -> usize {
        match self {
            Buckets::Sparse(list) => list.len(),
            Buckets::Dense { counts, .. } => counts.iter().filter(|&&c| c != 0).count(),
        }
    }

    /// `(first, last)` non-empty bucket index.
    fn range(&self) -> Option<(i32, i32)> {
        match self {
            Buckets::Sparse(list) => Some((list.first()?.0, list.last()?.0)),
            Buckets::Dense { lo, counts } => Some((*lo, *lo + counts.len() as i32 - 1)),
        }
    }

    fn count_of(&self, idx: i32) -> u64 {
        match self {
            Buckets::Sparse(list) => list
                .binary_search_by_key(&idx, |b| b.0)
                .map_or(0, |p| list[p].1),
            Buckets::Dense { lo, counts } => usize::try_from(idx - lo)
                .ok()
                .and_then(|i| counts.get(i).copied())
                .unwrap_or(0),
        }
    }

    /// The dense form of a sparse list; the list must not be empty.
    fn dense_from(list: &[(i32, u64)]) -> Buckets {
        let (lo, hi) = match (list.first(), list.last()) {
            (Some(f), Some(l)) => (f.0, l.0),
            _ => return Buckets::Sparse(Vec::new()),
        };
        let mut counts = vec![0; (hi - lo + 1) as usize];
        for &(idx, c) in list {
            counts[(idx - lo) as usize] = c;
        }
        Buckets::Dense { lo, counts }
    }

    /// Takes the dense form if the buckets suit it (see [`dense_suits`]).
    fn densify_if_suited(&mut self) {
        if let Buckets::Sparse(list) = self {
            if let (Some(f), Some(l)) = (list.first(), list.last()) {
                if dense_suits((l.0 - f.0 + 1) as usize, list.len()) {
                    *self = Buckets::dense_from(list);
                }
            }
        }
    }

    /// After a dense range changed: trims zero counts off both ends, and takes the
    /// sparse form if the range is empty or has become too sparse.
    fn settle_dense(&mut self) {
        let Buckets::Dense { lo, counts } = self else {
            return;
        };
        let Some(first) = counts.iter().position(|&c| c != 0) else {
            *self = Buckets::Sparse(Vec::new());
            return;
        };
        let last = counts.iter().rposition(|&c| c != 0).unwrap_or(first);
        counts.truncate(last + 1);
        if first > 0 {
            counts.drain(..first);
            *lo += first as i32;
        }
        if !dense_stays(counts.len(), self.nonzero()) {
            *self = Buckets::Sparse(self.iter().collect());
        }
    }

    /// Widens a dense range to cover `from..=to` (new indices count zero); returns
    /// whether it grew. No-op on the sparse form.
    fn cover(&mut self, from: i32, to: i32) -> bool {
        let Buckets::Dense { lo, counts } = self else {
            return false;
        };
        let hi = *lo + counts.len() as i32 - 1;
        let mut grew = false;
        if to > hi {
            counts.resize(counts.len() + (to - hi) as usize, 0);
            grew = true;
        }
        if from < *lo {
            let extra = (*lo - from) as usize;
            counts.splice(0..0, std::iter::repeat_n(0, extra));
            *lo = from;
            grew = true;
        }
        grew
    }

    /// Adds `n` to bucket `idx` (`n > 0`).
    fn add(&mut self, idx: i32, n: u64) {
        match self {
            Buckets::Sparse(list) => match list.binary_search_by_key(&idx, |b| b.0) {
                Ok(p) => list[p].1 = list[p].1.saturating_add(n),
                Err(p) => {
                    list.insert(p, (idx, n));
                    self.densify_if_suited();
                }
            },
            Buckets::Dense { .. } => {
                let grew = self.cover(idx, idx);
                if let Buckets::Dense { lo, counts } = self {
                    let slot = &mut counts[(idx - *lo) as usize];
                    *slot = slot.saturating_add(n);
                }
                if grew {
                    self.settle_dense();
                }
            }
        }
    }

    /// Takes `n` from bucket `idx`, which must hold at least `n`.
    fn take(&mut self, idx: i32, n: u64) {
        match self {
            Buckets::Sparse(list) => {
                if let Ok(p) = list.binary_search_by_key(&idx, |b| b.0) {
                    list[p].1 -= n;
                    if list[p].1 == 0 {
                        list.remove(p);
                    }
                }
            }
            Buckets::Dense { lo, counts } => {
                let i = (idx - *lo) as usize;
                counts[i] -= n;
                if counts[i] == 0 && (i == 0 || i == counts.len() - 1) {
                    self.settle_dense();
                }
            }
        }
    }

    fn merge(&mut self, other: &Buckets) {
        let Some((from, to)) = other.range() else {
            return;
        };
        if let (Buckets::Sparse(dst), Buckets::Sparse(src)) = (&mut *self, other) {
            let key = |b: &(i32, u64)| b.0;
            let new = sorted::count_new(dst, src, key);
            sorted::merge_into(dst, src, new, key, |a, b| (a.0, a.1.saturating_add(b.1)));
            self.densify_if_suited();
            return;
        }
        // At least one side is dense: so is the union.
        match self {
            Buckets::Sparse(dst) if dst.is_empty() => {
                *self = other.clone();
                return;
            }
            Buckets::Sparse(dst) => *self = Buckets::dense_from(dst),
            Buckets::Dense { .. } => {}
        }
        let grew = self.cover(from, to);
        if let Buckets::Dense { lo, counts } = self {
            match other {
                Buckets::Sparse(src) => {
                    for &(idx, c) in src {
                        let slot = &mut counts[(idx - *lo) as usize];
                        *slot = slot.saturating_add(c);
                    }
                }
                Buckets::Dense { counts: src, .. } => {
                    let at = (from - *lo) as usize;
                    for (d, s) in counts[at..at + src.len()].iter_mut().zip(src) {
                        *d = d.saturating_add(*s);
                    }
                }
            }
        }
        if grew {
            self.settle_dense();
        }
    }
}

impl PartialEq for DurationSketch {
    fn eq(&self, other: &Self) -> bool {
        self.zero_count == other.zero_count && self.buckets().eq(other.buckets())
    }
}

impl Eq for DurationSketch {}

impl DurationSketch {
    /// The leading byte of [`to_bytes`](Self::to_bytes).
    pub const FORMAT_VERSION: u8 = 1;

    /// An empty sketch (does not allocate).
    pub const fn new() -> Self {
        DurationSketch {
            zero_count: 0,
            buckets: Buckets::Sparse(Vec::new()),
        }
    }

    /// A sketch from a sorted, index-unique list of non-empty buckets.
    fn from_sorted(zero_count: u64, list: Vec<(i32, u64)>) -> Self {
        let mut buckets = Buckets::Sparse(list);
        buckets.densify_if_suited();
        DurationSketch {
            zero_count,
            buckets,
        }
    }

    /// Records one duration. Negative durations are clamped to `0` and land in
    /// the zero bucket (a negative duration is a clock artefact, not a value
    /// worth a bucket of its own).
    #[inline]
    pub fn add(&mut self, ms: i64) {
        self.add_n(ms, 1);
    }

    /// Records the duration `ms` `n` times (`n == 0` is a no-op). Negative
    /// durations are clamped to `0`.
    pub fn add_n(&mut self, ms: i64, n: u64) {
        if n == 0 {
            return;
        }
        if ms <= 0 {
            self.zero_count = self.zero_count.saturating_add(n);
            return;
        }
        self.buckets.add(index_of(ms) as i32, n);
    }

    /// Retracts one earlier [`add`](Self::add) of `ms` (negative values are
    /// clamped to `0` exactly as in `add`). Returns `false` and changes nothing
    /// if the bucket of `ms` is empty. `add(x)` followed by `remove(x)` restores
    /// the previous sketch exactly.
    pub fn remove(&mut self, ms: i64) -> bool {
        if ms <= 0 {
            if self.zero_count == 0 {
                return false;
            }
            self.zero_count -= 1;
            return true;
        }
        let idx = index_of(ms) as i32;
        if self.buckets.count_of(idx) == 0 {
            return false;
        }
        self.buckets.take(idx, 1);
        true
    }

    /// Adds every value of `other` to `self`. Exact: the result equals the
    /// sketch of the concatenated inputs.
    pub fn merge(&mut self, other: &Self) {
        self.zero_count = self.zero_count.saturating_add(other.zero_count);
        self.buckets.merge(&other.buckets);
    }

    /// Removes every value of `other` from `self` (the inverse of
    /// [`merge`](Self::merge)). Fails with [`SketchError::NotContained`] and
    /// leaves `self` unchanged if some bucket of `other` holds more than the
    /// same bucket of `self`.
    pub fn subtract(&mut self, other: &Self) -> Result<(), SketchError> {
        if other.zero_count > self.zero_count
            || other
                .buckets()
                .any(|(idx, c)| self.buckets.count_of(idx) < c)
        {
            return Err(SketchError::NotContained);
        }
        self.zero_count -= other.zero_count;
        match &mut self.buckets {
            Buckets::Sparse(list) => {
                // Both ascending: one pass, then drop the emptied buckets.
                let mut i = 0;
                for (idx, c) in other.buckets() {
                    while list[i].0 < idx {
                        i += 1;
                    }
                    list[i].1 -= c;
                }
                list.retain(|b| b.1 != 0);
            }
            Buckets::Dense { lo, counts } => {
                for (idx, c) in other.buckets() {
                    counts[(idx - *lo) as usize] -= c;
                }
                self.buckets.settle_dense();
            }
        }
        Ok(())
    }

    /// Number of recorded values (saturating at `u64::MAX`).
    pub fn count(&self) -> u64 {
        match &self.buckets {
            Buckets::Sparse(list) => list
                .iter()
                .fold(self.zero_count, |acc, b| acc.saturating_add(b.1)),
            Buckets::Dense { counts, .. } => counts
                .iter()
                .fold(self.zero_count, |acc, &c| acc.saturating_add(c)),
        }
    }

    /// `true` if no value is recorded.
    pub fn is_empty(&self) -> bool {
        self.zero_count == 0 && self.buckets.is_empty()
    }

    /// Whether the buckets are held in the dense form (see the type's docs). The form
    /// changes speed and memory, never a result.
    pub fn is_dense(&self) -> bool {
        matches!(self.buckets, Buckets::Dense { .. })
    }

    /// Estimate of the order statistic of 0-based rank `floor(q·(n−1))`:
    /// within 1 % relative error of the exact value, and exactly `0.0` when
    /// the exact value is `≤ 0`.
    ///
    /// `None` when the sketch is empty or `q` is NaN; `q` outside `[0, 1]` is
    /// clamped.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let [value] = self.quantiles([q]);
        value
    }

    /// [`quantile`](Self::quantile) of each of `qs` (any order), counting the sketch once
    /// and walking its buckets once.
    pub fn quantiles<const N: usize>(&self, qs: [f64; N]) -> [Option<f64>; N] {
        let n = self.count();
        let mut out = [None; N];
        if n == 0 {
            return out;
        }
        // (rank, position in `qs`) of the ranks beyond the zero bucket, ascending by rank
        // (on the stack: a row's snapshot calls this twice).
        let mut ranks = [(0u64, 0usize); N];
        let mut len = 0;
        for (i, q) in qs.iter().enumerate() {
            if q.is_nan() {
                continue;
            }
            let rank = ((q.clamp(0.0, 1.0) * (n - 1) as f64).floor() as u64).min(n - 1);
            if rank < self.zero_count {
                out[i] = Some(0.0);
            } else {
                ranks[len] = (rank, i);
                len += 1;
            }
        }
        let ranks = &mut ranks[..len];
        ranks.sort_unstable();
        let mut next = ranks.iter().peekable();
        let mut cumulative = self.zero_count;
        for (idx, c) in self.buckets() {
            if next.peek().is_none() {
                break;
            }
            cumulative = cumulative.saturating_add(c);
            while let Some(&&(rank, i)) = next.peek() {
                if cumulative <= rank {
                    break;
                }
                out[i] = Some(Self::bucket_representative(idx));
                next.next();
            }
        }
        // Only reachable through count saturation.
        for &(_, i) in next {
            out[i] = self.max_estimate();
        }
        out
    }

    /// Estimate of the smallest recorded value (`0.0` if the zero bucket is
    /// non-empty), `None` when empty.
    pub fn min_estimate(&self) -> Option<f64> {
        if self.zero_count > 0 {
            return Some(0.0);
        }
        self.buckets
            .range()
            .map(|(first, _)| Self::bucket_representative(first))
    }

    /// Estimate of the largest recorded value, `None` when empty.
    pub fn max_estimate(&self) -> Option<f64> {
        match self.buckets.range() {
            Some((_, last)) => Some(Self::bucket_representative(last)),
            None if self.zero_count > 0 => Some(0.0),
            None => None,
        }
    }

    /// The non-empty log buckets as `(index, count)`, in increasing index
    /// order. The zero bucket is reported separately by
    /// [`zero_count`](Self::zero_count).
    pub fn buckets(&self) -> BucketIter<'_> {
        self.buckets.iter()
    }

    /// Number of recorded values `≤ 0`.
    pub fn zero_count(&self) -> u64 {
        self.zero_count
    }

    /// Rebuilds a sketch from [`zero_count`](Self::zero_count) and
    /// [`buckets`](Self::buckets). Bucket indices must be strictly increasing
    /// and within `0..=MAX_BUCKET_INDEX`, counts must be non-zero.
    pub fn from_parts(
        zero_count: u64,
        buckets: impl IntoIterator<Item = (i32, u64)>,
    ) -> Result<Self, SketchError> {
        let iter = buckets.into_iter();
        let mut out = Vec::with_capacity(iter.size_hint().0.min(TABLE_LEN));
        let mut prev: Option<i32> = None;
        for (idx, c) in iter {
            if !(0..=MAX_BUCKET_INDEX).contains(&idx) {
                return Err(SketchError::BucketIndexOutOfRange(i64::from(idx)));
            }
            if prev.is_some_and(|p| idx <= p) {
                return Err(SketchError::NotStrictlyIncreasing {
                    index: i64::from(idx),
                });
            }
            if c == 0 {
                return Err(SketchError::ZeroCount(idx));
            }
            prev = Some(idx);
            out.push((idx, c));
        }
        Ok(Self::from_sorted(zero_count, out))
    }

    /// Bounds of log bucket `index` in ms: `(lower, upper)`, lower exclusive,
    /// upper inclusive, i.e. `(γ^(index−1), γ^index]`. For indices in
    /// `0..=MAX_BUCKET_INDEX` these are exactly the boundaries used by
    /// [`add`](Self::add). (The zero bucket is `[0, 0]` and has no index.)
    pub fn bucket_bounds(index: i32) -> (f64, f64) {
        match usize::try_from(index) {
            Ok(0) => (1.0 / GAMMA, UPPER[0]),
            Ok(i) if i < TABLE_LEN => (UPPER[i - 1], UPPER[i]),
            _ => (GAMMA.powi(index.saturating_sub(1)), GAMMA.powi(index)),
        }
    }

    /// The value reported for bucket `index`: `2·γ^index / (γ + 1)`.
    pub fn bucket_representative(index: i32) -> f64 {
        2.0 * Self::bucket_bounds(index).1 / (GAMMA + 1.0)
    }

    /// Approximate number of recorded values `≤ ms`, resolved at bucket
    /// granularity: the zero bucket (if `ms ≥ 0`) plus every bucket whose
    /// *upper* bound is `≤ ms`. The bucket straddling `ms` is not counted, so
    /// the result is a lower bound of the exact count and at least the exact
    /// count of values `≤ ms/γ`. At `ms = bucket_bounds(i).1` it is exact —
    /// that is what Prometheus-style cumulative `le` buckets should use.
    pub fn count_at_most(&self, ms: f64) -> u64 {
        if ms.is_nan() || ms < 0.0 {
            return 0;
        }
        let mut total = self.zero_count;
        for (idx, c) in self.buckets() {
            if Self::bucket_bounds(idx).1 > ms {
                break;
            }
            total = total.saturating_add(c);
        }
        total
    }

    /// Approximate heap usage in bytes (the bucket vector's capacity).
    pub fn heap_bytes(&self) -> usize {
        match &self.buckets {
            Buckets::Sparse(list) => list.capacity() * std::mem::size_of::<(i32, u64)>(),
            Buckets::Dense { counts, .. } => counts.capacity() * std::mem::size_of::<u64>(),
        }
    }

    /// Compact binary encoding, format version 1:
    ///
    /// ```text
    /// u8      FORMAT_VERSION (= 1)
    /// varint  zero_count
    /// varint  k = number of buckets
    /// k × {   varint index: zigzag(index) for the first bucket,
    ///                       index − previous − 1 for the others
    ///         varint count }
    /// ```
    ///
    /// Varints are unsigned LEB128. An empty sketch encodes to 3 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let k = self.buckets.nonzero();
        let mut out = Vec::with_capacity(3 + k * 3);
        out.push(Self::FORMAT_VERSION);
        put_u64(&mut out, self.zero_count);
        put_u64(&mut out, k as u64);
        let mut prev: Option<i32> = None;
        for (idx, c) in self.buckets() {
            match prev {
                None => put_u64(&mut out, zigzag(i64::from(idx))),
                Some(p) => put_u64(&mut out, (i64::from(idx) - i64::from(p) - 1) as u64),
            }
            put_u64(&mut out, c);
            prev = Some(idx);
        }
        out
    }

    /// Decodes [`to_bytes`](Self::to_bytes) output. Corrupt, truncated or
    /// over-long input yields a [`SketchError`]; this never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SketchError> {
        let (zero_count, buckets) = Self::decode(bytes)?;
        Ok(Self::from_sorted(zero_count, buckets))
    }

    /// Merges the sketch encoded in `bytes` by [`to_bytes`](Self::to_bytes) into `self`,
    /// as `merge(&from_bytes(bytes)?)` but without building that sketch. On error `self`
    /// is unchanged.
    pub fn merge_bytes(&mut self, bytes: &[u8]) -> Result<(), SketchError> {
        if let Buckets::Dense { .. } = self.buckets {
            // Validate and find the range first, then add straight into the counts.
            let mut range: Option<(i32, i32)> = None;
            let zero_count = Self::decode_with(bytes, |idx, _| {
                range = Some(range.map_or((idx, idx), |(first, _)| (first, idx)));
            })?;
            self.zero_count = self.zero_count.saturating_add(zero_count);
            let Some((first, last)) = range else {
                return Ok(());
            };
            let grew = self.buckets.cover(first, last);
            if let Buckets::Dense { lo, counts } = &mut self.buckets {
                Self::decode_with(bytes, |idx, c| {
                    let slot = &mut counts[(idx - *lo) as usize];
                    *slot = slot.saturating_add(c);
                })?;
            }
            if grew {
                self.buckets.settle_dense();
            }
            return Ok(());
        }
        let (zero_count, buckets) = Self::decode(bytes)?;
        self.zero_count = self.zero_count.saturating_add(zero_count);
        self.buckets.merge(&Buckets::Sparse(buckets));
        Ok(())
    }

    /// The zero count and the sorted, validated bucket list of an encoding.
    fn decode(bytes: &[u8]) -> Result<(u64, Vec<(i32, u64)>), SketchError> {
        let mut buckets = Vec::new();
        let zero_count = Self::decode_with(bytes, |idx, c| buckets.push((idx, c)))?;
        Ok((zero_count, buckets))
    }

    /// Validates an encoding, calling `bucket(index, count)` for each bucket in
    /// increasing index order as it goes; returns the zero count. On error some
    /// buckets may have been reported already.
    fn decode_with(bytes: &[u8], mut bucket: impl FnMut(i32, u64)) -> Result<u64, SketchError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != Self::FORMAT_VERSION {
            return Err(SketchError::UnsupportedVersion(version));
        }
        let zero_count = r.u64()?;
        let k = r.u64()?;
        // Each bucket takes at least two bytes and indices are unique.
        if k > (r.remaining() / 2) as u64 || k > TABLE_LEN as u64 {
            return Err(SketchError::BadLength(k));
        }
        let mut prev: Option<i64> = None;
        for _ in 0..k {
            let raw = r.u64()?;
            let idx = match prev {
                None => unzigzag(raw),
                Some(p) => p
                    .saturating_add(1)
                    .saturating_add(i64::try_from(raw).unwrap_or(i64::MAX)),
            };
            if !(0..=i64::from(MAX_BUCKET_INDEX)).contains(&idx) {
                return Err(SketchError::BucketIndexOutOfRange(idx));
            }
            let c = r.u64()?;
            if c == 0 {
                return Err(SketchError::ZeroCount(idx as i32));
            }
            bucket(idx as i32, c);
            prev = Some(idx);
        }
        r.finish()?;
        Ok(zero_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bucket index by the textbook formula in exact-ish arithmetic, used as
    /// an independent reference away from bucket boundaries.
    fn textbook_index(x: f64) -> i64 {
        (x.ln() / GAMMA.ln()).ceil() as i64
    }

    #[test]
    fn gamma_and_table_are_sane() {
        assert!((GAMMA - 1.01 / 0.99).abs() < 1e-15);
        assert!((INV_LN_GAMMA - 1.0 / GAMMA.ln()).abs() < 1e-9);
        assert_eq!(UPPER[0], 1.0);
        assert!(UPPER[TABLE_LEN - 1] >= TWO_POW_63);
        assert!(UPPER[TABLE_LEN - 2] < TWO_POW_63);
        // The table agrees with powf to ~1e-12 relative.
        for (i, &u) in UPPER.iter().enumerate() {
            let p = GAMMA.powf(i as f64);
            assert!(((u - p) / p).abs() < 1e-12, "i={i} table={u} powf={p}");
        }
        // ln(2^63)/ln(gamma) = 2183.3..., so the last index is 2184.
        assert_eq!(MAX_BUCKET_INDEX, 2184);
    }

    #[test]
    fn index_matches_textbook_formula_away_from_boundaries() {
        let mut x = 1.0f64;
        while x < 9.0e18 {
            let xi = x as i64;
            let xf = xi as f64;
            let t = xf.ln() / GAMMA.ln();
            // Skip values within 1e-9 of a boundary, where rounding decides.
            if (t - t.round()).abs() > 1e-9 || xi == 1 {
                assert_eq!(index_of(xi) as i64, textbook_index(xf), "x={xi}");
            }
            x = x * 1.37 + 1.0;
        }
        assert_eq!(index_of(1), 0);
        assert_eq!(index_of(i64::MAX), MAX_BUCKET_INDEX as usize);
    }

    /// Reference: binary search over the boundary table.
    fn index_by_search(ms: i64) -> usize {
        UPPER.partition_point(|&u| u < ms as f64)
    }

    #[test]
    fn index_matches_table_search() {
        for ms in 1..300_000i64 {
            assert_eq!(index_of(ms), index_by_search(ms), "ms={ms}");
        }
        let mut x = 300_000i64;
        while x < i64::MAX / 3 {
            for ms in [x - 1, x, x + 1, x * 2 + 7] {
                assert_eq!(index_of(ms), index_by_search(ms), "ms={ms}");
            }
            x = x / 2 * 3 + 11;
        }
        // Exactly at and next to every boundary that is an integer range point.
        for &u in UPPER.iter().take_while(|&&u| u < 9.0e18) {
            for ms in [u.floor() as i64, u.ceil() as i64, u.floor() as i64 + 1] {
                if ms >= 1 {
                    assert_eq!(index_of(ms), index_by_search(ms), "ms={ms}");
                }
            }
        }
    }

    #[test]
    fn approx_log2_is_close() {
        let mut x = 1.0f64;
        while x < 9.2e18 {
            assert!((approx_log2(x) - x.log2()).abs() < 0.008, "x={x}");
            x = x * 1.013 + 0.37;
        }
    }

    #[test]
    fn every_value_is_inside_its_bucket_bounds() {
        for ms in (1..5000i64).chain([i64::MAX, i64::MAX - 1, 1 << 53, (1 << 53) + 1]) {
            let i = index_of(ms) as i32;
            let (lo, hi) = DurationSketch::bucket_bounds(i);
            let x = ms as f64;
            assert!(lo < x && x <= hi, "ms={ms} i={i} ({lo}, {hi}]");
        }
    }

    #[test]
    fn representative_of_one_is_within_alpha() {
        let rep = DurationSketch::bucket_representative(0);
        assert!((rep - 0.99).abs() < 1e-12);
    }
}
