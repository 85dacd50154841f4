//! Row types of the ClickHouse tables and their exact conversions to and from the core types.
//!
//! Every `DateTime64(3, 'UTC')` column is an `i64` of milliseconds since the Unix epoch (the
//! core's [`Millis`]). Maps are `Vec<(K, V)>` in ascending key order.

use crate::error::RowError;
use clickhouse::Row;
use cxpulse_core::engine::{KpiRow, PaneRecord};
use cxpulse_core::events::{Channel, Currency, Millis, SurveyResponse};
use cxpulse_core::kpi::{KpiState, ResponseTimeTally, Revenue};
use cxpulse_core::watermark::PartitionId;
use cxpulse_core::window::Tier;
use cxpulse_sketch::{DurationSketch, Hll};
use serde::{Deserialize, Serialize};

/// Largest magnitude `Decimal128(4)` holds: `10^38 − 1` units of 1/10 000.
pub const MAX_REVENUE_UNITS: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;

/// The `tier` column value of a pane tier.
pub fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Minute => "minute",
        Tier::Hour => "hour",
        Tier::Day => "day",
    }
}

/// Parses a `tier` column value.
pub fn parse_tier(name: &str) -> Result<Tier, RowError> {
    match name {
        "minute" => Ok(Tier::Minute),
        "hour" => Ok(Tier::Hour),
        "day" => Ok(Tier::Day),
        other => Err(RowError::UnknownTier(other.to_string())),
    }
}

/// Parses a pane's `channel` column: exactly one of the [`Channel::as_str`] values.
pub fn parse_channel(name: &str) -> Result<Channel, RowError> {
    Channel::ALL
        .into_iter()
        .find(|c| c.as_str() == name)
        .ok_or_else(|| RowError::UnknownChannel(name.to_string()))
}

/// The mergeable parts of a [`KpiState`] as stored in `kpi_panes` and `kpi_windows`.
///
/// Every field merges in SQL: counts and sums with `sum`, the sketch bucket maps and the
/// revenue maps with `sumMap`, the HyperLogLog registers with `maxMap`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KpiParts {
    pub touchpoints: u64,
    pub nps_promoters: u64,
    pub nps_passives: u64,
    pub nps_detractors: u64,
    pub csat_n: u64,
    pub csat_satisfied: u64,
    pub ces_n: u64,
    pub ces_sum: u64,
    pub ces_easy: u64,
    pub contacts: u64,
    /// First response: durations ≤ 0 (the sketch's zero bucket).
    pub frt_zero: u64,
    /// First response: DDSketch bucket index → count.
    pub frt_buckets: Vec<(i16, u64)>,
    pub frt_within: u64,
    pub res_zero: u64,
    pub res_buckets: Vec<(i16, u64)>,
    pub res_within: u64,
    pub closed_loop_due: u64,
    pub closed_loop_closed: u64,
    pub purchases: u64,
    /// Currency → total in 1/10 000 units (the raw value of `Decimal128(4)`).
    pub revenue: Vec<(String, i128)>,
    /// Currency → number of amounts.
    pub revenue_count: Vec<(String, u64)>,
    /// The non-zero HyperLogLog registers: index → rank.
    pub customers_hll: Vec<(u16, u8)>,
}

fn buckets_of(
    t: Option<&ResponseTimeTally>,
    column: &'static str,
) -> Result<Vec<(i16, u64)>, RowError> {
    let Some(t) = t else { return Ok(Vec::new()) };
    t.sketch
        .buckets()
        .map(|(index, count)| {
            i16::try_from(index)
                .map(|i| (i, count))
                .map_err(|_| RowError::BucketIndex { column, index })
        })
        .collect()
}

impl KpiParts {
    /// The parts of `state`. Fails only for revenue beyond `Decimal128(4)` (±10^34).
    pub fn from_state(state: &KpiState) -> Result<KpiParts, RowError> {
        let frt = state.first_response.as_deref();
        let res = state.resolution.as_deref();
        let mut revenue = Vec::new();
        let mut revenue_count = Vec::new();
        for (currency, units, count) in state.revenue.lines() {
            if units.unsigned_abs() > MAX_REVENUE_UNITS.unsigned_abs() {
                return Err(RowError::RevenueRange {
                    currency: currency.as_str().to_string(),
                    units,
                });
            }
            revenue.push((currency.as_str().to_string(), units));
            revenue_count.push((currency.as_str().to_string(), count));
        }
        Ok(KpiParts {
            touchpoints: state.touchpoints,
            nps_promoters: state.nps.promoters,
            nps_passives: state.nps.passives,
            nps_detractors: state.nps.detractors,
            csat_n: state.csat.n,
            csat_satisfied: state.csat.satisfied,
            ces_n: state.ces.n,
            ces_sum: state.ces.sum,
            ces_easy: state.ces.easy,
            contacts: state.contacts,
            frt_zero: frt.map_or(0, |t| t.sketch.zero_count()),
            frt_buckets: buckets_of(frt, "frt_buckets")?,
            frt_within: frt.map_or(0, |t| t.within_target),
            res_zero: res.map_or(0, |t| t.sketch.zero_count()),
            res_buckets: buckets_of(res, "res_buckets")?,
            res_within: res.map_or(0, |t| t.within_target),
            closed_loop_due: state.closed_loop.due,
            closed_loop_closed: state.closed_loop.closed,
            purchases: state.purchases,
            revenue,
            revenue_count,
            customers_hll: state.customers.register_pairs().collect(),
        })
    }

    /// Rebuilds the exact [`KpiState`] these parts came from.
    ///
    /// The one normalisation: a response-time tally that is present but empty (all zero, which
    /// only a retraction leaves behind) comes back as `None`; both have the same KPIs and
    /// merge identically.
    pub fn to_state(&self) -> Result<KpiState, RowError> {
        let mut s = KpiState {
            touchpoints: self.touchpoints,
            contacts: self.contacts,
            purchases: self.purchases,
            ..KpiState::default()
        };
        s.nps.promoters = self.nps_promoters;
        s.nps.passives = self.nps_passives;
        s.nps.detractors = self.nps_detractors;
        s.csat.n = self.csat_n;
        s.csat.satisfied = self.csat_satisfied;
        s.ces.n = self.ces_n;
        s.ces.sum = self.ces_sum;
        s.ces.easy = self.ces_easy;
        s.first_response = tally(
            self.frt_zero,
            &self.frt_buckets,
            self.frt_within,
            "frt_buckets",
        )?;
        s.resolution = tally(
            self.res_zero,
            &self.res_buckets,
            self.res_within,
            "res_buckets",
        )?;
        s.closed_loop.due = self.closed_loop_due;
        s.closed_loop.closed = self.closed_loop_closed;
        s.revenue = revenue(&self.revenue, &self.revenue_count)?;
        let mut regs = self.customers_hll.clone();
        regs.sort_unstable_by_key(|r| r.0);
        s.customers = Hll::from_register_pairs(regs).map_err(|source| RowError::Sketch {
            column: "customers_hll",
            source,
        })?;
        Ok(s)
    }
}

fn tally(
    zero: u64,
    buckets: &[(i16, u64)],
    within: u64,
    column: &'static str,
) -> Result<Option<Box<ResponseTimeTally>>, RowError> {
    if zero == 0 && buckets.is_empty() && within == 0 {
        return Ok(None);
    }
    let mut b: Vec<(i32, u64)> = buckets.iter().map(|&(i, c)| (i32::from(i), c)).collect();
    b.sort_unstable_by_key(|e| e.0);
    let sketch = DurationSketch::from_parts(zero, b)
        .map_err(|source| RowError::Sketch { column, source })?;
    Ok(Some(Box::new(ResponseTimeTally {
        sketch,
        within_target: within,
    })))
}

fn revenue(units: &[(String, i128)], counts: &[(String, u64)]) -> Result<Revenue, RowError> {
    let mut out = Revenue::default();
    let mut seen: Vec<&str> = Vec::with_capacity(counts.len());
    for (code, count) in counts {
        if seen.contains(&code.as_str()) {
            return Err(RowError::DuplicateKey {
                column: "revenue_count",
                key: code.clone(),
            });
        }
        seen.push(code);
        let currency =
            Currency::parse(code).ok_or_else(|| RowError::UnknownCurrency(code.clone()))?;
        let mut matching = units.iter().filter(|(c, _)| c == code);
        let total = matching.next().map_or(0, |e| e.1);
        if matching.next().is_some() {
            return Err(RowError::DuplicateKey {
                column: "revenue",
                key: code.clone(),
            });
        }
        if *count == 0 {
            return Err(RowError::RevenueLine {
                currency: code.clone(),
                units: total,
                count: 0,
            });
        }
        out.add_line(currency, total, *count);
    }
    if let Some((code, units)) = units.iter().find(|(c, _)| !seen.contains(&c.as_str())) {
        return Err(RowError::RevenueLine {
            currency: code.clone(),
            units: *units,
            count: 0,
        });
    }
    Ok(out)
}

macro_rules! kpi_row {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Row, Serialize, Deserialize)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            pub touchpoints: u64,
            pub nps_promoters: u64,
            pub nps_passives: u64,
            pub nps_detractors: u64,
            pub csat_n: u64,
            pub csat_satisfied: u64,
            pub ces_n: u64,
            pub ces_sum: u64,
            pub ces_easy: u64,
            pub contacts: u64,
            pub frt_zero: u64,
            pub frt_buckets: Vec<(i16, u64)>,
            pub frt_within: u64,
            pub res_zero: u64,
            pub res_buckets: Vec<(i16, u64)>,
            pub res_within: u64,
            pub closed_loop_due: u64,
            pub closed_loop_closed: u64,
            pub purchases: u64,
            pub revenue: Vec<(String, i128)>,
            pub revenue_count: Vec<(String, u64)>,
            pub customers_hll: Vec<(u16, u8)>,
        }

        impl $name {
            #[allow(clippy::too_many_arguments)]
            fn assemble($( $field: $ty, )* p: KpiParts) -> Self {
                $name {
                    $( $field, )*
                    touchpoints: p.touchpoints,
                    nps_promoters: p.nps_promoters,
                    nps_passives: p.nps_passives,
                    nps_detractors: p.nps_detractors,
                    csat_n: p.csat_n,
                    csat_satisfied: p.csat_satisfied,
                    ces_n: p.ces_n,
                    ces_sum: p.ces_sum,
                    ces_easy: p.ces_easy,
                    contacts: p.contacts,
                    frt_zero: p.frt_zero,
                    frt_buckets: p.frt_buckets,
                    frt_within: p.frt_within,
                    res_zero: p.res_zero,
                    res_buckets: p.res_buckets,
                    res_within: p.res_within,
                    closed_loop_due: p.closed_loop_due,
                    closed_loop_closed: p.closed_loop_closed,
                    purchases: p.purchases,
                    revenue: p.revenue,
                    revenue_count: p.revenue_count,
                    customers_hll: p.customers_hll,
                }
            }

            /// The mergeable parts of this row (cloned).
            pub fn parts(&self) -> KpiParts {
                KpiParts {
                    touchpoints: self.touchpoints,
                    nps_promoters: self.nps_promoters,
                    nps_passives: self.nps_passives,
                    nps_detractors: self.nps_detractors,
                    csat_n: self.csat_n,
                    csat_satisfied: self.csat_satisfied,
                    ces_n: self.ces_n,
                    ces_sum: self.ces_sum,
                    ces_easy: self.ces_easy,
                    contacts: self.contacts,
                    frt_zero: self.frt_zero,
                    frt_buckets: self.frt_buckets.clone(),
                    frt_within: self.frt_within,
                    res_zero: self.res_zero,
                    res_buckets: self.res_buckets.clone(),
                    res_within: self.res_within,
                    closed_loop_due: self.closed_loop_due,
                    closed_loop_closed: self.closed_loop_closed,
                    purchases: self.purchases,
                    revenue: self.revenue.clone(),
                    revenue_count: self.revenue_count.clone(),
                    customers_hll: self.customers_hll.clone(),
                }
            }

            /// The exact [`KpiState`] of this row (see [`KpiParts::to_state`]).
            pub fn state(&self) -> Result<KpiState, RowError> {
                self.parts().to_state()
            }
        }
    };
}

kpi_row! {
    /// One row of `kpi_panes`: a partition's mergeable parts for one pane of one
    /// (channel, segment).
    pub struct PaneRow {
        pub partition: i32,
        /// `minute`, `hour` or `day` ([`tier_name`]).
        pub tier: String,
        /// Pane start, ms since the epoch.
        pub start: i64,
        /// [`Channel::as_str`].
        pub channel: String,
        pub segment: String,
        /// The source offset of the last record of `partition` applied.
        pub version: u64,
    }
}

kpi_row! {
    /// One row of `kpi_windows`: one partition's part of one window and group key.
    pub struct WindowRow {
        pub window: String,
        pub start: i64,
        pub end: i64,
        pub partition: i32,
        /// [`Channel::as_str`] or `all`.
        pub channel: String,
        /// The segment name or `all`.
        pub segment: String,
        pub watermark: i64,
        pub version: u64,
    }
}

/// A pane read back for recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredPane {
    pub tier: Tier,
    pub start: Millis,
    pub channel: Channel,
    pub segment: String,
    pub version: u64,
    pub state: KpiState,
}

impl PaneRow {
    /// The row of `record`, stamped with `version` (the last applied source offset).
    pub fn from_record(record: &PaneRecord, version: u64) -> Result<PaneRow, RowError> {
        Ok(PaneRow::assemble(
            record.partition,
            tier_name(record.tier).to_string(),
            record.start,
            record.channel.as_str().to_string(),
            record.segment.to_string(),
            version,
            KpiParts::from_state(&record.state)?,
        ))
    }

    /// Back to the pane: tier, start, channel, segment, version and the exact state.
    pub fn restore(&self) -> Result<RestoredPane, RowError> {
        Ok(RestoredPane {
            tier: parse_tier(&self.tier)?,
            start: self.start,
            channel: parse_channel(&self.channel)?,
            segment: self.segment.clone(),
            version: self.version,
            state: self.state()?,
        })
    }
}

impl WindowRow {
    /// `partition`'s part of the emitted window `row` (its mergeable `state`), stamped with
    /// `version`. Channel and segment use the `all` label for the grouping sets.
    pub fn from_kpi_row(
        row: &KpiRow,
        partition: PartitionId,
        version: u64,
    ) -> Result<WindowRow, RowError> {
        Ok(WindowRow::assemble(
            row.window.to_string(),
            row.start,
            row.end,
            partition,
            row.channel_label().to_string(),
            row.segment_label().to_string(),
            row.watermark,
            version,
            KpiParts::from_state(&row.state)?,
        ))
    }
}

/// One row of `survey_responses`.
#[derive(Clone, Debug, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct SurveyRow {
    pub response_id: String,
    pub submitted_at: i64,
    pub customer_id: String,
    pub segment: String,
    pub channel: String,
    pub touchpoint: String,
    /// `NPS`, `CSAT`, `CES` or `UNKNOWN`.
    pub metric: String,
    pub score: i8,
    /// Byte-exact UTF-8.
    pub comment: Option<String>,
    pub language: Option<String>,
    pub case_id: Option<String>,
    pub partition: i32,
    pub offset: i64,
    /// = `offset`: a redelivery from a later offset replaces the earlier copy.
    pub version: u64,
}

impl SurveyRow {
    /// The row of `r`, read from `partition` at `offset`.
    pub fn from_response(
        r: &SurveyResponse,
        partition: PartitionId,
        offset: i64,
    ) -> Result<SurveyRow, RowError> {
        Ok(SurveyRow {
            response_id: r.response_id.clone(),
            submitted_at: r.submitted_at,
            customer_id: r.customer_id.clone(),
            segment: r.segment.clone(),
            channel: r.channel.as_str().to_string(),
            touchpoint: r.touchpoint.clone(),
            metric: r.metric.as_str().to_string(),
            score: i8::try_from(r.score).map_err(|_| RowError::Score(r.score))?,
            comment: r.comment.clone(),
            language: r.language.clone(),
            case_id: r.case_id.clone(),
            partition,
            offset,
            version: u64::try_from(offset).map_err(|_| RowError::NegativeOffset(offset))?,
        })
    }
}

/// One row of the `kpi_windows_latest` view: a window merged over every partition, with
/// the derived KPIs (`None` where the KPI has no answers).
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct LatestWindowRow {
    pub window: String,
    pub start: i64,
    pub end: i64,
    pub channel: String,
    pub segment: String,
    /// Number of partitions merged.
    pub partitions: u64,
    /// Highest version among them.
    pub version: u64,
    /// Lowest watermark among them.
    pub watermark: i64,
    pub touchpoints: u64,
    pub nps_promoters: u64,
    pub nps_passives: u64,
    pub nps_detractors: u64,
    pub nps_n: u64,
    /// −100 … 100.
    pub nps: Option<f64>,
    pub nps_moe: Option<f64>,
    pub csat_n: u64,
    pub csat_satisfied: u64,
    /// Share 0 … 1.
    pub csat: Option<f64>,
    pub csat_wilson_low: Option<f64>,
    pub csat_wilson_high: Option<f64>,
    pub ces_n: u64,
    pub ces_mean: Option<f64>,
    pub ces_easy_share: Option<f64>,
    pub contacts: u64,
    pub frt_n: u64,
    pub frt_p50_ms: Option<f64>,
    pub frt_p90_ms: Option<f64>,
    pub frt_p99_ms: Option<f64>,
    pub frt_within: u64,
    pub frt_within_share: Option<f64>,
    pub res_n: u64,
    pub res_p50_ms: Option<f64>,
    pub res_p90_ms: Option<f64>,
    pub res_p99_ms: Option<f64>,
    pub res_within: u64,
    pub res_within_share: Option<f64>,
    pub closed_loop_due: u64,
    pub closed_loop_closed: u64,
    pub closed_loop_rate: Option<f64>,
    pub purchases: u64,
    /// Currency → total in 1/10 000 units.
    pub revenue: Vec<(String, i128)>,
    pub revenue_count: Vec<(String, u64)>,
    /// Distinct customers: HyperLogLog estimate of the merged registers.
    pub customers: u64,
}

/// One row of `partition_checkpoints`: the non-pane state of a partition at `offset`.
#[derive(Clone, Debug, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Consumer group (or job name).
    pub group: String,
    pub partition: i32,
    /// The last applied source offset.
    pub offset: i64,
    /// Normally `offset` as `u64` ([`Checkpoint::new`]).
    pub version: u64,
    /// Wall-clock time the checkpoint was taken, ms since the epoch.
    pub created_at: i64,
    /// The caller's binary encoding of the partition state.
    #[serde(with = "bytes")]
    pub state: Vec<u8>,
}

impl Checkpoint {
    /// A checkpoint at `offset` with `version = offset`.
    pub fn new(
        group: impl Into<String>,
        partition: PartitionId,
        offset: i64,
        created_at: Millis,
        state: Vec<u8>,
    ) -> Result<Checkpoint, RowError> {
        Ok(Checkpoint {
            group: group.into(),
            partition,
            offset,
            version: u64::try_from(offset).map_err(|_| RowError::NegativeOffset(offset))?,
            created_at,
            state,
        })
    }
}

/// `Vec<u8>` as a ClickHouse `String` (serde bytes, not a sequence of `UInt8`).
mod bytes {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<Vec<u8>, E> {
            Ok(v.as_bytes().to_vec())
        }

        fn visit_string<E: Error>(self, v: String) -> Result<Vec<u8>, E> {
            Ok(v.into_bytes())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn revenue_lines_round_trip_with_counts() {
        let mut r = Revenue::default();
        for units in [12_3400, -2_0000, 0, 0, 7] {
            r.add(eur(), units);
        }
        r.add(Currency::parse("USD").unwrap(), i64::MAX);
        r.add(Currency::parse("USD").unwrap(), i64::MAX);
        r.add(Currency::parse("USD").unwrap(), 5);
        let state = KpiState {
            revenue: r.clone(),
            ..KpiState::default()
        };
        let parts = KpiParts::from_state(&state).unwrap();
        assert_eq!(parts.to_state().unwrap().revenue, r);
    }

    #[test]
    fn corrupt_revenue_is_an_error() {
        let p = KpiParts {
            revenue: vec![("EUR".into(), 5)],
            revenue_count: vec![],
            ..KpiParts::default()
        };
        assert!(matches!(p.to_state(), Err(RowError::RevenueLine { .. })));
        let p = KpiParts {
            revenue: vec![("EUR".into(), 5)],
            revenue_count: vec![("EUR".into(), 0)],
            ..KpiParts::default()
        };
        assert!(matches!(p.to_state(), Err(RowError::RevenueLine { .. })));
        let p = KpiParts {
            revenue_count: vec![("eur".into(), 2)],
            ..KpiParts::default()
        };
        assert!(matches!(p.to_state(), Err(RowError::UnknownCurrency(_))));
    }

    #[test]
    fn tiers_and_channels_parse_exactly() {
        for t in Tier::ALL {
            assert_eq!(parse_tier(tier_name(t)).unwrap(), t);
        }
        for c in Channel::ALL {
            assert_eq!(parse_channel(c.as_str()).unwrap(), c);
        }
        assert!(parse_channel("all").is_err());
        assert!(parse_tier("week").is_err());
    }

    #[test]
    fn bad_sketch_parts_are_errors() {
        let p = KpiParts {
            frt_buckets: vec![(3, 0)],
            ..KpiParts::default()
        };
        assert!(matches!(p.to_state(), Err(RowError::Sketch { .. })));
        let p = KpiParts {
            customers_hll: vec![(3, 0)],
            ..KpiParts::default()
        };
        assert!(matches!(p.to_state(), Err(RowError::Sketch { .. })));
        let p = KpiParts {
            frt_buckets: vec![(3, 1), (3, 2)],
            ..KpiParts::default()
        };
        assert!(matches!(p.to_state(), Err(RowError::Sketch { .. })));
    }
}
