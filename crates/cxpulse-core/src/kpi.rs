//! KPI tallies: mergeable partial aggregates per pane, and the KPI values derived from them.
//!
//! Every tally is a bag of counts, sums and sketch states. Merging is associative and
//! commutative, so minute panes combine into hours, days and windows, and the partial
//! results of several partitions or job instances combine into the exact same numbers.
//! The derived values (scores, margins, intervals, quantiles) are computed only at the end,
//! from the merged parts, never averaged from other derived values.

use crate::events::Currency;
use crate::window::{Freeze, Mergeable, Tier};
use cxpulse_sketch::{DurationSketch, Hll, Reads};
use serde::{Deserialize, Serialize};

/// z for a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// NPS answers: promoters (9–10), passives (7–8), detractors (0–6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NpsTally {
    pub promoters: u64,
    pub passives: u64,
    pub detractors: u64,
}

/// Which NPS group a score belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpsGroup {
    Promoter,
    Passive,
    Detractor,
}

impl NpsGroup {
    /// Classifies a validated NPS score (0–10).
    pub fn of(score: i32) -> NpsGroup {
        match score {
            9.. => NpsGroup::Promoter,
            7..=8 => NpsGroup::Passive,
            _ => NpsGroup::Detractor,
        }
    }
}

impl NpsTally {
    pub fn add(&mut self, score: i32) {
        match NpsGroup::of(score) {
            NpsGroup::Promoter => self.promoters += 1,
            NpsGroup::Passive => self.passives += 1,
            NpsGroup::Detractor => self.detractors += 1,
        }
    }

    pub fn n(&self) -> u64 {
        self.promoters + self.passives + self.detractors
    }

    pub fn merge(&mut self, o: &NpsTally) {
        self.promoters += o.promoters;
        self.passives += o.passives;
        self.detractors += o.detractors;
    }

    /// NPS in [-100, 100]: % promoters − % detractors.
    pub fn score(&self) -> Option<f64> {
        let n = self.n();
        (n > 0).then(|| 100.0 * (self.promoters as f64 - self.detractors as f64) / n as f64)
    }

    /// 95 % margin of error in NPS points: 1.96·100·sqrt(((p+d) − (p−d)²)/n).
    pub fn margin_of_error(&self) -> Option<f64> {
        let n = self.n();
        (n > 0).then(|| {
            let nf = n as f64;
            let p = self.promoters as f64 / nf;
            let d = self.detractors as f64 / nf;
            let variance = ((p + d) - (p - d) * (p - d)).max(0.0);
            Z95 * 100.0 * (variance / nf).sqrt()
        })
    }
}

/// CSAT answers: satisfied (4–5) out of n (1–5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsatTally {
    pub satisfied: u64,
    pub n: u64,
}

impl CsatTally {
    pub fn add(&mut self, score: i32) {
        self.n += 1;
        if score >= 4 {
            self.satisfied += 1;
        }
    }

    pub fn merge(&mut self, o: &CsatTally) {
        self.satisfied += o.satisfied;
        self.n += o.n;
    }

    /// Share of satisfied answers in [0, 1].
    pub fn share(&self) -> Option<f64> {
        (self.n > 0).then(|| self.satisfied as f64 / self.n as f64)
    }

    /// Wilson score interval (95 %) for the satisfied share.
    pub fn wilson_interval(&self) -> Option<(f64, f64)> {
        wilson_interval(self.satisfied, self.n, Z95)
    }
}

/// Wilson score interval for `successes` out of `n` at normal quantile `z`.
pub fn wilson_interval(successes: u64, n: u64, z: f64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    let p = successes as f64 / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let center = (p + z2 / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    Some(((center - half).max(0.0), (center + half).min(1.0)))
}

/// CES answers on 1–7: sum of scores, n, and how many were 5–7 ("easy").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CesTally {
    pub sum: u64,
    pub n: u64,
    pub easy: u64,
}

impl CesTally {
    pub fn add(&mut self, score: i32) {
        self.sum += u64::try_from(score).unwrap_or(0);
        self.n += 1;
        if score >= 5 {
            self.easy += 1;
        }
    }

    pub fn merge(&mut self, o: &CesTally) {
        self.sum += o.sum;
        self.n += o.n;
        self.easy += o.easy;
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum as f64 / self.n as f64)
    }

    pub fn easy_share(&self) -> Option<f64> {
        (self.n > 0).then(|| self.easy as f64 / self.n as f64)
    }
}

/// Durations of one kind (first response, resolution): a quantile sketch plus how many met
/// the response target (24 h by default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseTimeTally {
    #[serde(with = "sketch_bytes::duration")]
    pub sketch: DurationSketch,
    pub within_target: u64,
}

impl ResponseTimeTally {
    pub fn add(&mut self, duration_ms: i64, within_target: bool) {
        self.sketch.add(duration_ms);
        if within_target {
            self.within_target += 1;
        }
    }

    /// Exact inverse of [`ResponseTimeTally::add`] with the same arguments.
    pub fn retract(&mut self, duration_ms: i64, within_target: bool) {
        let removed = self.sketch.remove(duration_ms);
        debug_assert!(removed, "retracting a duration that was never added");
        if within_target && removed {
            self.within_target = self.within_target.saturating_sub(1);
        }
    }

    pub fn merge(&mut self, o: &ResponseTimeTally) {
        self.sketch.merge(&o.sketch);
        self.within_target += o.within_target;
    }

    pub fn n(&self) -> u64 {
        self.sketch.count()
    }

    pub fn is_empty(&self) -> bool {
        self.sketch.is_empty() && self.within_target == 0
    }
}

/// Closed loop: detractors whose follow-up deadline has passed, and how many of them got an
/// outbound contact in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedLoopTally {
    pub due: u64,
    pub closed: u64,
}

impl ClosedLoopTally {
    pub fn merge(&mut self, o: &ClosedLoopTally) {
        self.due += o.due;
        self.closed += o.closed;
    }

    pub fn rate(&self) -> Option<f64> {
        (self.due > 0).then(|| self.closed as f64 / self.due as f64)
    }
}

/// Revenue per currency, in units of 1/10 000 (exact integer sums).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revenue {
    /// Sorted by currency, no zero-count entries.
    lines: Vec<(Currency, i128, u64)>,
}

impl Revenue {
    pub fn add(&mut self, currency: Currency, units: i64) {
        self.add_line(currency, i128::from(units), 1);
    }

    /// Adds a whole line (total units and number of amounts), e.g. when restoring a pane.
    pub fn add_line(&mut self, currency: Currency, units: i128, count: u64) {
        match self.lines.binary_search_by(|l| l.0.cmp(&currency)) {
            Ok(i) => {
                self.lines[i].1 += units;
                self.lines[i].2 += count;
            }
            Err(i) => self.lines.insert(i, (currency, units, count)),
        }
    }

    pub fn merge(&mut self, o: &Revenue) {
        for &(c, units, count) in &o.lines {
            self.add_line(c, units, count);
        }
    }

    /// (currency, total in 1/10 000 units, number of amounts) per currency.
    pub fn lines(&self) -> impl Iterator<Item = (Currency, i128, u64)> + '_ {
        self.lines.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// Everything cxpulse counts for one (pane or window) × channel × segment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KpiState {
    /// How many updates were applied to this state (and, merged, to every pane of a window).
    /// It only grows, so it orders the versions of one pane or window: whatever the
    /// interleaving of the sources, a state holding more of their input has a higher count.
    pub updates: u64,
    /// Accepted touchpoint events.
    pub touchpoints: u64,
    pub nps: NpsTally,
    pub csat: CsatTally,
    pub ces: CesTally,
    /// Inbound contacts (`contact_opened`).
    pub contacts: u64,
    pub first_response: Option<Box<ResponseTimeTally>>,
    pub resolution: Option<Box<ResponseTimeTally>>,
    pub closed_loop: ClosedLoopTally,
    pub purchases: u64,
    pub revenue: Revenue,
    /// Distinct customers seen (touchpoints and survey responses).
    #[serde(with = "sketch_bytes::hll")]
    pub customers: Hll,
}

/// Sketches travel in their own binary formats (checkpoints).
mod sketch_bytes {
    use serde::de::Error as _;
    use serde::{Deserializer, Serializer};

    pub mod duration {
        use super::*;
        use cxpulse_sketch::DurationSketch;

        pub fn serialize<S: Serializer>(v: &DurationSketch, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&v.to_bytes())
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DurationSketch, D::Error> {
            let bytes: Vec<u8> = serde_bytes_vec(d)?;
            DurationSketch::from_bytes(&bytes).map_err(D::Error::custom)
        }
    }

    pub mod hll {
        use super::*;
        use cxpulse_sketch::Hll;

        pub fn serialize<S: Serializer>(v: &Hll, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&v.to_bytes())
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hll, D::Error> {
            let bytes: Vec<u8> = serde_bytes_vec(d)?;
            Hll::from_bytes(&bytes).map_err(D::Error::custom)
        }
    }

    fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("sketch bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

fn merge_boxed(into: &mut Option<Box<ResponseTimeTally>>, from: &Option<Box<ResponseTimeTally>>) {
    if let Some(from) = from {
        match into {
            Some(into) => into.merge(from),
            None => *into = Some(from.clone()),
        }
    }
}

impl KpiState {
    pub fn first_response_mut(&mut self) -> &mut ResponseTimeTally {
        self.first_response.get_or_insert_with(Default::default)
    }

    pub fn resolution_mut(&mut self) -> &mut ResponseTimeTally {
        self.resolution.get_or_insert_with(Default::default)
    }

    /// Approximate heap and inline bytes (for the state-size gauge and benchmarks).
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.customers.heap_bytes()
            + self.revenue.lines.capacity() * std::mem::size_of::<(Currency, i128, u64)>()
            + [&self.first_response, &self.resolution]
                .iter()
                .filter_map(|t| t.as_ref())
                .map(|t| std::mem::size_of::<ResponseTimeTally>() + t.sketch.heap_bytes())
                .sum::<usize>()
    }

    /// The KPI values derived from these parts.
    pub fn snapshot(&self) -> KpiSnapshot {
        KpiSnapshot::from(self)
    }
}

impl Mergeable for KpiState {
    fn merge(&mut self, o: &Self) {
        self.updates += o.updates;
        self.touchpoints += o.touchpoints;
        self.nps.merge(&o.nps);
        self.csat.merge(&o.csat);
        self.ces.merge(&o.ces);
        self.contacts += o.contacts;
        merge_boxed(&mut self.first_response, &o.first_response);
        merge_boxed(&mut self.resolution, &o.resolution);
        self.closed_loop.merge(&o.closed_loop);
        self.purchases += o.purchases;
        self.revenue.merge(&o.revenue);
        self.customers.merge(&o.customers);
    }

    fn is_empty(&self) -> bool {
        self.touchpoints == 0
            && self.nps.n() == 0
            && self.csat.n == 0
            && self.ces.n == 0
            && self.contacts == 0
            && self.first_response.as_ref().is_none_or(|t| t.is_empty())
            && self.resolution.as_ref().is_none_or(|t| t.is_empty())
            && self.closed_loop == ClosedLoopTally::default()
            && self.purchases == 0
            && self.revenue.is_empty()
            && self.customers.is_empty()
    }

    fn prepare(&mut self) {
        self.customers.flush_pending();
        self.customers.refresh_histogram();
    }

    fn footprint(&self) -> usize {
        self.approx_bytes()
    }
}

/// A [`KpiState`] in its compact, read-only form (frozen panes, see [`Freeze`]): only the
/// parts that are present, as varints, and the distinct-customer sketch in the compact
/// HyperLogLog encoding ([`Hll::write_compact`], about 7 bits per non-zero register; minute
/// and hour panes, read at every window end, take a faster form up to half as large again).
/// In-memory only (checkpoints serialize the thawed [`KpiState`]).
#[derive(Clone, PartialEq, Eq)]
pub struct FrozenKpi(Box<[u8]>);

impl std::fmt::Debug for FrozenKpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrozenKpi")
            .field("bytes", &self.0.len())
            .finish()
    }
}

impl FrozenKpi {
    /// Bytes held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Which parts a frozen state holds (a bit each, in this order).
mod part {
    pub const UPDATES: u32 = 1;
    pub const TOUCHPOINTS: u32 = 1 << 1;
    pub const NPS: u32 = 1 << 2;
    pub const CSAT: u32 = 1 << 3;
    pub const CES: u32 = 1 << 4;
    pub const CONTACTS: u32 = 1 << 5;
    pub const FIRST_RESPONSE: u32 = 1 << 6;
    pub const RESOLUTION: u32 = 1 << 7;
    pub const CLOSED_LOOP: u32 = 1 << 8;
    pub const PURCHASES: u32 = 1 << 9;
    pub const REVENUE: u32 = 1 << 10;
    pub const CUSTOMERS: u32 = 1 << 11;
}

mod frozen_io {
    pub fn put(out: &mut Vec<u8>, mut v: u128) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub struct Cursor<'a> {
        pub bytes: &'a [u8],
        pub pos: usize,
    }

    impl Cursor<'_> {
        #[inline]
        pub fn get(&mut self) -> u128 {
            let mut v = 0u128;
            let mut shift = 0;
            loop {
                let b = self.bytes[self.pos];
                self.pos += 1;
                v |= u128::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    return v;
                }
                shift += 7;
            }
        }

        #[inline]
        pub fn u64(&mut self) -> u64 {
            self.get() as u64
        }

        pub fn take(&mut self, n: usize) -> &[u8] {
            let s = &self.bytes[self.pos..self.pos + n];
            self.pos += n;
            s
        }

        pub fn rest(&self) -> &[u8] {
            &self.bytes[self.pos..]
        }
    }
}

const FROZEN_BUG: &str = "frozen pane not written by KpiState::freeze";

impl KpiState {
    fn merge_frozen_parts(&mut self, frozen: &[u8]) {
        let mut c = frozen_io::Cursor {
            bytes: frozen,
            pos: 0,
        };
        let mask = c.get() as u32;
        let has = |bit: u32| mask & bit != 0;
        if has(part::UPDATES) {
            self.updates += c.u64();
        }
        if has(part::TOUCHPOINTS) {
            self.touchpoints += c.u64();
        }
        if has(part::NPS) {
            self.nps.merge(&NpsTally {
                promoters: c.u64(),
                passives: c.u64(),
                detractors: c.u64(),
            });
        }
        if has(part::CSAT) {
            self.csat.merge(&CsatTally {
                satisfied: c.u64(),
                n: c.u64(),
            });
        }
        if has(part::CES) {
            self.ces.merge(&CesTally {
                sum: c.u64(),
                n: c.u64(),
                easy: c.u64(),
            });
        }
        if has(part::CONTACTS) {
            self.contacts += c.u64();
        }
        for bit in [part::FIRST_RESPONSE, part::RESOLUTION] {
            if has(bit) {
                let within_target = c.u64();
                let len = c.u64() as usize;
                let tally = if bit == part::FIRST_RESPONSE {
                    self.first_response_mut()
                } else {
                    self.resolution_mut()
                };
                tally.sketch.merge_bytes(c.take(len)).expect(FROZEN_BUG);
                tally.within_target += within_target;
            }
        }
        if has(part::CLOSED_LOOP) {
            self.closed_loop.merge(&ClosedLoopTally {
                due: c.u64(),
                closed: c.u64(),
            });
        }
        if has(part::PURCHASES) {
            self.purchases += c.u64();
        }
        if has(part::REVENUE) {
            for _ in 0..c.u64() {
                let currency = std::str::from_utf8(c.take(3))
                    .ok()
                    .and_then(Currency::parse)
                    .expect(FROZEN_BUG);
                let z = c.get();
                let units = ((z >> 1) as i128) ^ -((z & 1) as i128);
                let count = c.u64();
                self.revenue.add_line(currency, units, count);
            }
        }
        if has(part::CUSTOMERS) {
            let used = self.customers.merge_compact(c.rest()).expect(FROZEN_BUG);
            c.pos += used;
        }
        debug_assert_eq!(c.pos, frozen.len(), "{FROZEN_BUG}");
    }
}

impl Freeze for KpiState {
    type Frozen = FrozenKpi;

    fn freeze(&self, tier: Tier) -> FrozenKpi {
        use frozen_io::put;
        let mut mask = 0u32;
        let mut out = Vec::with_capacity(24);
        fn counter(out: &mut Vec<u8>, mask: &mut u32, bit: u32, values: &[u64]) {
            if values.iter().any(|v| *v != 0) {
                *mask |= bit;
                for v in values {
                    frozen_io::put(out, u128::from(*v));
                }
            }
        }
        counter(&mut out, &mut mask, part::UPDATES, &[self.updates]);
        counter(&mut out, &mut mask, part::TOUCHPOINTS, &[self.touchpoints]);
        let n = &self.nps;
        counter(
            &mut out,
            &mut mask,
            part::NPS,
            &[n.promoters, n.passives, n.detractors],
        );
        counter(
            &mut out,
            &mut mask,
            part::CSAT,
            &[self.csat.satisfied, self.csat.n],
        );
        let ces = &self.ces;
        counter(&mut out, &mut mask, part::CES, &[ces.sum, ces.n, ces.easy]);
        counter(&mut out, &mut mask, part::CONTACTS, &[self.contacts]);
        for (bit, tally) in [
            (part::FIRST_RESPONSE, &self.first_response),
            (part::RESOLUTION, &self.resolution),
        ] {
            // Present but empty (every duration retracted) is kept as such: thawing gives
            // back the same state, and merging it the same as merging the hot one.
            if let Some(t) = tally.as_deref() {
                mask |= bit;
                put(&mut out, u128::from(t.within_target));
                let bytes = t.sketch.to_bytes();
                put(&mut out, bytes.len() as u128);
                out.extend_from_slice(&bytes);
            }
        }
        let cl = &self.closed_loop;
        counter(&mut out, &mut mask, part::CLOSED_LOOP, &[cl.due, cl.closed]);
        counter(&mut out, &mut mask, part::PURCHASES, &[self.purchases]);
        if !self.revenue.is_empty() {
            mask |= part::REVENUE;
            put(&mut out, self.revenue.lines.len() as u128);
            for &(currency, units, count) in &self.revenue.lines {
                out.extend_from_slice(currency.as_str().as_bytes());
                put(&mut out, ((units << 1) ^ (units >> 127)) as u128);
                put(&mut out, u128::from(count));
            }
        }
        if !self.customers.is_empty() {
            mask |= part::CUSTOMERS;
            let reads = match tier {
                Tier::Minute | Tier::Hour => Reads::Often,
                Tier::Day => Reads::Rarely,
            };
            self.customers.write_compact(reads, &mut out);
        }
        let mut bytes = Vec::with_capacity(out.len() + 3);
        frozen_io::put(&mut bytes, u128::from(mask));
        bytes.extend_from_slice(&out);
        FrozenKpi(bytes.into_boxed_slice())
    }

    fn thaw(frozen: &FrozenKpi) -> Self {
        let mut s = KpiState::default();
        s.merge_frozen(frozen);
        s
    }

    fn merge_frozen(&mut self, frozen: &FrozenKpi) {
        self.merge_frozen_parts(&frozen.0);
    }

    fn frozen_bytes(frozen: &FrozenKpi) -> usize {
        frozen.len()
    }
}

/// NPS values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NpsSnapshot {
    pub n: u64,
    pub promoters: u64,
    pub passives: u64,
    pub detractors: u64,
    /// −100 … 100.
    pub score: Option<f64>,
    /// 95 % margin of error, NPS points.
    pub margin_of_error: Option<f64>,
}

/// CSAT values (shares in [0, 1]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CsatSnapshot {
    pub n: u64,
    pub satisfied: u64,
    pub share: Option<f64>,
    pub wilson_low: Option<f64>,
    pub wilson_high: Option<f64>,
}

/// CES values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CesSnapshot {
    pub n: u64,
    pub mean: Option<f64>,
    /// Share of answers 5–7.
    pub easy_share: Option<f64>,
}

/// Response-time values (milliseconds; quantiles within 1 % relative error).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseTimeSnapshot {
    pub n: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub within_target: u64,
    pub within_target_share: Option<f64>,
}

impl From<Option<&ResponseTimeTally>> for ResponseTimeSnapshot {
    fn from(t: Option<&ResponseTimeTally>) -> Self {
        let Some(t) = t else {
            return ResponseTimeSnapshot::default();
        };
        let n = t.n();
        let [p50_ms, p90_ms, p99_ms] = t.sketch.quantiles([0.5, 0.9, 0.99]);
        ResponseTimeSnapshot {
            n,
            p50_ms,
            p90_ms,
            p99_ms,
            within_target: t.within_target,
            within_target_share: (n > 0).then(|| t.within_target as f64 / n as f64),
        }
    }
}

/// Closed-loop values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClosedLoopSnapshot {
    pub due: u64,
    pub closed: u64,
    pub rate: Option<f64>,
}

/// Revenue in one currency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevenueLine {
    pub currency: String,
    /// Exact decimal text, four fractional digits.
    pub amount: String,
    /// The same as a float, for charts.
    pub value: f64,
    pub count: u64,
}

/// Every KPI of a window, derived from its merged [`KpiState`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KpiSnapshot {
    pub touchpoints: u64,
    pub nps: NpsSnapshot,
    pub csat: CsatSnapshot,
    pub ces: CesSnapshot,
    pub contacts: u64,
    pub first_response: ResponseTimeSnapshot,
    pub resolution: ResponseTimeSnapshot,
    pub closed_loop: ClosedLoopSnapshot,
    pub purchases: u64,
    pub revenue: Vec<RevenueLine>,
    /// Distinct customers (HyperLogLog estimate, ≤ 2 % error).
    pub customers: u64,
}

/// Formats 1/10 000 units as exact decimal text.
pub fn format_units(units: i128) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    format!("{sign}{}.{:04}", abs / 10_000, abs % 10_000)
}

impl From<&KpiState> for KpiSnapshot {
    fn from(s: &KpiState) -> Self {
        let (wilson_low, wilson_high) = s.csat.wilson_interval().unzip();
        KpiSnapshot {
            touchpoints: s.touchpoints,
            nps: NpsSnapshot {
                n: s.nps.n(),
                promoters: s.nps.promoters,
                passives: s.nps.passives,
                detractors: s.nps.detractors,
                score: s.nps.score(),
                margin_of_error: s.nps.margin_of_error(),
            },
            csat: CsatSnapshot {
                n: s.csat.n,
                satisfied: s.csat.satisfied,
                share: s.csat.share(),
                wilson_low,
                wilson_high,
            },
            ces: CesSnapshot {
                n: s.ces.n,
                mean: s.ces.mean(),
                easy_share: s.ces.easy_share(),
            },
            contacts: s.contacts,
            first_response: s.first_response.as_deref().into(),
            resolution: s.resolution.as_deref().into(),
            closed_loop: ClosedLoopSnapshot {
                due: s.closed_loop.due,
                closed: s.closed_loop.closed,
                rate: s.closed_loop.rate(),
            },
            purchases: s.purchases,
            revenue: s
                .revenue
                .lines()
                .map(|(c, units, count)| RevenueLine {
                    currency: c.as_str().to_string(),
                    amount: format_units(units),
                    value: units as f64 / 10_000.0,
                    count,
                })
                .collect(),
            customers: s.customers.estimate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn nps_known_answer() {
        // 50 promoters, 30 passives, 20 detractors: NPS = 50 − 20 = 30.
        let t = NpsTally {
            promoters: 50,
            passives: 30,
            detractors: 20,
        };
        assert_eq!(t.score(), Some(30.0));
        // Variance = (0.5 + 0.2) − 0.3² = 0.61; MoE = 1.96·100·sqrt(0.61/100) = 15.308…
        let moe = t.margin_of_error().unwrap();
        assert!(close(
            moe,
            1.959_963_984_540_054 * 100.0 * (0.61f64 / 100.0).sqrt(),
            1e-9
        ));
        assert!(close(moe, 15.308, 0.001), "{moe}");
    }

    #[test]
    fn nps_groups_and_extremes() {
        let mut t = NpsTally::default();
        for s in 0..=10 {
            t.add(s);
        }
        assert_eq!((t.promoters, t.passives, t.detractors), (2, 2, 7));
        let all_promoters = NpsTally {
            promoters: 10,
            ..Default::default()
        };
        assert_eq!(all_promoters.score(), Some(100.0));
        assert_eq!(all_promoters.margin_of_error(), Some(0.0));
        assert_eq!(NpsTally::default().score(), None);
    }

    #[test]
    fn wilson_known_answers() {
        // Published example: 81 of 263 → [0.2553, 0.3662] at 95 % (Wilson 1927 / Newcombe 1998 style).
        let (lo, hi) = wilson_interval(81, 263, Z95).unwrap();
        assert!(close(lo, 0.2553, 5e-4), "{lo}");
        assert!(close(hi, 0.3662, 5e-4), "{hi}");
        // All successes: upper bound 1, lower bound n/(n+z²).
        let (lo, hi) = wilson_interval(10, 10, Z95).unwrap();
        assert!(close(hi, 1.0, 1e-12));
        assert!(close(lo, 10.0 / (10.0 + Z95 * Z95), 1e-12), "{lo}");
        assert_eq!(wilson_interval(0, 0, Z95), None);
    }

    #[test]
    fn ces_known_answer() {
        let mut t = CesTally::default();
        for s in [1, 4, 5, 7, 7] {
            t.add(s);
        }
        assert_eq!(t.mean(), Some(24.0 / 5.0));
        assert_eq!(t.easy_share(), Some(3.0 / 5.0));
    }

    #[test]
    fn state_merge_is_exact() {
        let mut a = KpiState::default();
        a.nps.add(10);
        a.first_response_mut().add(60_000, true);
        a.revenue.add(Currency::parse("EUR").unwrap(), 12_3400);
        a.customers.insert(b"c1");
        let mut b = KpiState::default();
        b.nps.add(3);
        b.first_response_mut().add(90_000_000, false);
        b.revenue.add(Currency::parse("EUR").unwrap(), -2_0000);
        b.revenue.add(Currency::parse("USD").unwrap(), 1);
        b.customers.insert(b"c1");
        b.customers.insert(b"c2");
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        let snap = ab.snapshot();
        assert_eq!(snap.nps.score, Some(0.0));
        assert_eq!(snap.first_response.n, 2);
        assert_eq!(snap.first_response.within_target_share, Some(0.5));
        assert_eq!(snap.revenue[0].amount, "10.3400");
        assert_eq!(snap.revenue[1].amount, "0.0001");
        assert_eq!(snap.customers, 2);
        assert!(!ab.is_empty());
        assert!(KpiState::default().is_empty());
    }

    fn rich_state(seed: u64) -> KpiState {
        let mut s = KpiState {
            updates: 7 + seed,
            touchpoints: 3,
            contacts: 1 + seed,
            purchases: 2,
            ..Default::default()
        };
        s.nps.add(10);
        s.nps.add(3);
        s.csat.add(4);
        s.ces.add(6);
        s.closed_loop.due = 2;
        s.closed_loop.closed = 1;
        s.first_response_mut().add(60_000 * seed as i64, true);
        s.resolution_mut().add(0, true);
        s.revenue.add(Currency::parse("EUR").unwrap(), -12_3400);
        s.revenue.add(Currency::parse("JPY").unwrap(), i64::MAX);
        for i in 0..(seed * 700) {
            s.customers.insert(&(i ^ seed << 32).to_le_bytes());
        }
        s.prepare();
        s
    }

    #[test]
    fn frozen_state_thaws_and_merges_exactly() {
        // Seed 8: a sketch about a third full (the bitmap form for minutes and hours).
        for (seed, tier) in [0, 1, 3, 8, 40]
            .into_iter()
            .flat_map(|s| Tier::ALL.map(|t| (s, t)))
        {
            let a = rich_state(seed);
            let frozen = a.freeze(tier);
            assert_eq!(KpiState::thaw(&frozen), a, "seed {seed} {tier:?}");
            for other_seed in [0, 2, 30] {
                let b = rich_state(other_seed);
                let mut expected = b.clone();
                expected.merge(&a);
                let mut got = b.clone();
                got.merge_frozen(&frozen);
                assert_eq!(got, expected, "seed {seed} {tier:?} into {other_seed}");
            }
        }
        // Hour panes (read at every window end) take the larger, faster form.
        let third_full = rich_state(8);
        assert!(third_full.freeze(Tier::Hour).len() > third_full.freeze(Tier::Day).len());
        // Nothing but the parts that are present.
        let empty = KpiState::default().freeze(Tier::Hour);
        assert_eq!(empty.len(), 1);
        assert_eq!(KpiState::thaw(&empty), KpiState::default());
        let mut one = KpiState {
            updates: 1,
            touchpoints: 1,
            ..Default::default()
        };
        one.customers.insert(b"c1");
        assert!(
            one.freeze(Tier::Day).len() <= 10,
            "{}",
            one.freeze(Tier::Day).len()
        );
    }

    #[test]
    fn frozen_state_keeps_edge_cases() {
        // A duration tally emptied by a retraction stays present (`Some`), extreme counters
        // and revenue survive, and a dense sketch at the largest rank survives.
        let mut s = KpiState {
            updates: u64::MAX,
            purchases: u64::MAX - 1,
            ..Default::default()
        };
        s.first_response_mut().add(5_000, true);
        s.first_response_mut().retract(5_000, true);
        assert!(s.first_response.as_ref().is_some_and(|t| t.is_empty()));
        s.resolution_mut().add(-3, false);
        s.revenue
            .add_line(Currency::parse("EUR").unwrap(), i128::MIN / 2, u64::MAX);
        s.revenue
            .add_line(Currency::parse("USD").unwrap(), i128::MAX / 2, 1);
        s.customers = Hll::from_register_pairs((0..16384u16).map(|i| (i, 51))).unwrap();
        s.prepare();
        let frozen = s.freeze(Tier::Hour);
        assert_eq!(KpiState::thaw(&frozen), s);
        let mut into_empty = KpiState::default();
        into_empty.merge_frozen(&frozen);
        let mut expected = KpiState::default();
        expected.merge(&s);
        assert_eq!(into_empty, expected);
        // A dense, still empty accumulator (what long windows start from).
        let mut acc = KpiState::default();
        acc.customers.densify();
        let mut expected = acc.clone();
        expected.merge(&rich_state(3));
        acc.merge_frozen(&rich_state(3).freeze(Tier::Day));
        assert_eq!(acc, expected);
        assert!(!acc.customers.is_empty());
    }

    /// A pane store whose panes freeze (and thaw on late writes) holds and reads exactly what
    /// one that never freezes does.
    #[test]
    fn freezing_panes_is_invisible() {
        use crate::events::{DAY_MS, MINUTE_MS};
        use crate::window::{PaneStore, Retention, TimeGrid};
        let grid = TimeGrid::new(0).unwrap();
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS;
        let mut frozen: PaneStore<u8, KpiState> = PaneStore::new(grid);
        let mut hot: PaneStore<u8, KpiState> = PaneStore::new(grid);
        let keep = Retention {
            minute_ms: 10 * DAY_MS,
            hour_ms: 10 * DAY_MS,
            day_ms: 10 * DAY_MS,
            freeze_ms: 30 * MINUTE_MS,
        };
        let never = Retention {
            freeze_ms: 100 * DAY_MS,
            ..keep
        };
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let minutes = 3 * 24 * 60;
        for step in 0..6000u64 {
            let r = next();
            // Mostly near the newest minute, sometimes far back (into frozen panes).
            let newest = step * minutes / 6000;
            let minute = if r % 10 == 0 {
                (r >> 8) % (newest + 1)
            } else {
                newest.saturating_sub((r >> 8) % 5)
            };
            let t = t0 + (minute as i64) * MINUTE_MS + (r >> 40) as i64 % MINUTE_MS;
            let key = (r >> 20) as u8 % 3;
            let customer = (r >> 24) % 5000;
            let update = |s: &mut KpiState| {
                s.updates += 1;
                match r % 5 {
                    0 => s.nps.add((r >> 32) as i32 % 11),
                    1 => s
                        .first_response_mut()
                        .add((r >> 30) as i64 % 100_000_000, r & 64 != 0),
                    2 => s.revenue.add(
                        Currency::parse("EUR").unwrap(),
                        (r >> 33) as i64 - (1 << 29),
                    ),
                    3 => s.contacts += 1,
                    _ => s.touchpoints += 1,
                }
                s.customers.insert(&customer.to_le_bytes());
            };
            frozen.apply(key, t, update);
            hot.apply(key, t, update);
            if step % 97 == 0 {
                let frontier = grid.floor(t0 + newest as i64 * MINUTE_MS, MINUTE_MS);
                for (store, retention) in [(&mut frozen, &keep), (&mut hot, &never)] {
                    store.prepare_reads();
                    store.close_through(frontier);
                    store.evict(frontier, retention);
                }
            }
        }
        assert!(frozen.frozen_count(Tier::Minute) > 1000);
        assert!(frozen.frozen_count(Tier::Hour) > 10);
        assert!(frozen.frozen_count(Tier::Day) > 0);
        assert_eq!(hot.frozen_count(Tier::Minute), 0);
        frozen.prepare_reads();
        hot.prepare_reads();
        for key in 0..3u8 {
            let (f, h) = (frozen.series(&key).unwrap(), hot.series(&key).unwrap());
            for tier in Tier::ALL {
                let fp: Vec<_> = f.panes(tier).map(|(t, p)| (t, p.to_state())).collect();
                let hp: Vec<_> = h.panes(tier).map(|(t, p)| (t, p.to_state())).collect();
                assert_eq!(fp, hp, "key {key} {tier:?}");
            }
            for (from, to) in [
                (0, minutes),
                (7, 1500),
                (60, 2 * 24 * 60),
                (1439, 4000),
                (4000, minutes),
            ] {
                let range = |store: &PaneStore<u8, KpiState>| {
                    let mut acc = KpiState::default();
                    let n = store.merge_range_into(
                        &key,
                        t0 + from as i64 * MINUTE_MS,
                        t0 + to as i64 * MINUTE_MS,
                        &mut acc,
                    );
                    (n, acc)
                };
                assert_eq!(range(&frozen), range(&hot), "key {key} [{from}, {to})");
            }
        }
    }

    #[test]
    fn retract_inverts_add() {
        let mut t = ResponseTimeTally::default();
        t.add(5_000, true);
        let before = t.clone();
        t.add(7_200_000, false);
        t.retract(7_200_000, false);
        assert_eq!(t, before);
    }
}
