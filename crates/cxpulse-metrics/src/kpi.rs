//! The KPI exporter: the latest window rows as Prometheus series.
//!
//! Every series is labelled `window`, `channel`, `segment` (`all` = every channel / segment).
//! Two kinds of metric families are exported:
//!
//! * **Additive parts** (counts, sums, cumulative duration buckets): an instance exports the
//!   parts of the partitions it owns, so `sum without (instance, pod) (...)` over every
//!   instance equals the parts of the whole stream, and recording rules derive NPS, margins
//!   of error, CSAT and its Wilson interval, CES and duration quantiles from those sums.
//! * **Single-instance derived values** (`*_nps_score`, `*_csat_ratio`, `*_p90_seconds`, …):
//!   computed by this instance from its own parts, exactly as the engine computes them.
//!   Correct only when one instance owns every partition; never sum or average them.
//!
//! See `docs/metrics.md` for the full list and the PromQL that derives the KPIs.

use crate::latest::LatestRows;
use cxpulse_core::kpi::{CesTally, ClosedLoopTally, CsatTally, NpsTally, ResponseTimeTally};
use cxpulse_core::{KpiRow, Millis};
use cxpulse_sketch::DurationSketch;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::Registry;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// Upper bounds (seconds) of the cumulative duration buckets; `+Inf` is added by the encoder.
pub const LE_BOUNDS_SECONDS: [f64; 12] = [
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0, 172800.0,
    604800.0,
];

/// The labels every KPI series carries, in this order.
pub const SERIES_LABELS: [&str; 3] = ["window", "channel", "segment"];

/// Additive parts of one duration kind (first response or resolution).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DurationParts {
    pub count: u64,
    /// Sum of the durations in seconds, estimated from the sketch buckets (each value taken
    /// at its bucket's representative, so within 1 % of the true sum).
    pub sum_seconds: f64,
    /// Cumulative counts at [`LE_BOUNDS_SECONDS`] (`DurationSketch::count_at_most`).
    pub le_counts: Vec<u64>,
    /// Durations within the response target.
    pub within_target: u64,
}

impl DurationParts {
    pub fn from_tally(t: Option<&ResponseTimeTally>) -> DurationParts {
        let Some(t) = t else {
            return DurationParts {
                le_counts: vec![0; LE_BOUNDS_SECONDS.len()],
                ..Default::default()
            };
        };
        let sketch = &t.sketch;
        let sum_ms: f64 = sketch
            .buckets()
            .map(|(idx, c)| DurationSketch::bucket_representative(idx) * c as f64)
            .sum();
        DurationParts {
            count: sketch.count(),
            sum_seconds: sum_ms / 1000.0,
            le_counts: LE_BOUNDS_SECONDS
                .iter()
                .map(|s| sketch.count_at_most(s * 1000.0))
                .collect(),
            within_target: t.within_target,
        }
    }
}

/// Single-instance values derived from one window's parts (`None` where undefined, n = 0).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DerivedValues {
    pub nps_score: Option<f64>,
    pub nps_margin_of_error: Option<f64>,
    pub csat_ratio: Option<f64>,
    pub csat_wilson_low: Option<f64>,
    pub csat_wilson_high: Option<f64>,
    pub ces_mean: Option<f64>,
    pub ces_easy_ratio: Option<f64>,
    /// p50, p90, p99 in seconds.
    pub first_response_quantiles: [Option<f64>; 3],
    pub first_response_within_target_ratio: Option<f64>,
    pub resolution_quantiles: [Option<f64>; 3],
    pub resolution_within_target_ratio: Option<f64>,
    pub closed_loop_ratio: Option<f64>,
}

/// Everything exported for one (window, channel, segment): the additive parts of its latest
/// row, and the values this instance derives from them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowParts {
    pub start: Millis,
    pub end: Millis,
    pub touchpoints: u64,
    pub nps: NpsTally,
    pub csat: CsatTally,
    pub ces: CesTally,
    pub contacts: u64,
    pub first_response: DurationParts,
    pub resolution: DurationParts,
    pub closed_loop: ClosedLoopTally,
    pub purchases: u64,
    /// (currency, amount in currency units).
    pub revenue: Vec<(String, f64)>,
    /// Distinct customers (HyperLogLog estimate).
    pub customers: u64,
    pub derived: DerivedValues,
}

fn ms_to_s(v: Option<f64>) -> Option<f64> {
    v.map(|ms| ms / 1000.0)
}

impl WindowParts {
    pub fn from_row(row: &KpiRow) -> WindowParts {
        let s = &row.state;
        let k = &row.kpis;
        WindowParts {
            start: row.start,
            end: row.end,
            touchpoints: s.touchpoints,
            nps: s.nps,
            csat: s.csat,
            ces: s.ces,
            contacts: s.contacts,
            first_response: DurationParts::from_tally(s.first_response.as_deref()),
            resolution: DurationParts::from_tally(s.resolution.as_deref()),
            closed_loop: s.closed_loop,
            purchases: s.purchases,
            revenue: s
                .revenue
                .lines()
                .map(|(c, units, _)| (c.as_str().to_string(), units as f64 / 10_000.0))
                .collect(),
            customers: k.customers,
            derived: DerivedValues {
                nps_score: k.nps.score,
                nps_margin_of_error: k.nps.margin_of_error,
                csat_ratio: k.csat.share,
                csat_wilson_low: k.csat.wilson_low,
                csat_wilson_high: k.csat.wilson_high,
                ces_mean: k.ces.mean,
                ces_easy_ratio: k.ces.easy_share,
                first_response_quantiles: [
                    ms_to_s(k.first_response.p50_ms),
                    ms_to_s(k.first_response.p90_ms),
                    ms_to_s(k.first_response.p99_ms),
                ],
                first_response_within_target_ratio: k.first_response.within_target_share,
                resolution_quantiles: [
                    ms_to_s(k.resolution.p50_ms),
                    ms_to_s(k.resolution.p90_ms),
                    ms_to_s(k.resolution.p99_ms),
                ],
                resolution_within_target_ratio: k.resolution.within_target_share,
                closed_loop_ratio: k.closed_loop.rate,
            },
        }
    }
}

/// Metric families of the exporter, in exposition order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fam {
    // Additive parts.
    NpsResponses,
    CsatResponses,
    CsatSatisfied,
    CesResponses,
    CesPoints,
    CesEasy,
    Touchpoints,
    Contacts,
    FirstResponse,
    FirstResponseWithinTarget,
    Resolution,
    ResolutionWithinTarget,
    ClosedLoopDue,
    ClosedLoopClosed,
    Purchases,
    Revenue,
    Customers,
    // Bookkeeping.
    StartTimestamp,
    EndTimestamp,
    // Single-instance derived values.
    NpsScore,
    NpsMoe,
    CsatRatio,
    CsatWilsonLow,
    CsatWilsonHigh,
    CesMean,
    CesEasyRatio,
    FrP50,
    FrP90,
    FrP99,
    FrWithinRatio,
    ResP50,
    ResP90,
    ResP99,
    ResWithinRatio,
    ClosedLoopRatio,
}

struct FamSpec {
    fam: Fam,
    name: &'static str,
    help: &'static str,
    histogram: bool,
    extra_label: Option<&'static str>,
}

const fn g(fam: Fam, name: &'static str, help: &'static str) -> FamSpec {
    FamSpec {
        fam,
        name,
        help,
        histogram: false,
        extra_label: None,
    }
}

const SINGLE: &str = " Single-instance value: derived by this instance from its own partitions; do not sum or average across instances.";

/// Every family: (name, help). The help of derived values ends with [`SINGLE`].
const FAMILIES: &[FamSpec] = &[
    FamSpec {
        extra_label: Some("group"),
        ..g(
            Fam::NpsResponses,
            "cxpulse_window_nps_responses",
            "NPS answers in the window by group (promoter 9-10, passive 7-8, detractor 0-6). Additive.",
        )
    },
    g(
        Fam::CsatResponses,
        "cxpulse_window_csat_responses",
        "CSAT answers (1-5) in the window. Additive.",
    ),
    g(
        Fam::CsatSatisfied,
        "cxpulse_window_csat_satisfied_responses",
        "CSAT answers of 4 or 5 in the window. Additive.",
    ),
    g(
        Fam::CesResponses,
        "cxpulse_window_ces_responses",
        "CES answers (1-7) in the window. Additive.",
    ),
    g(
        Fam::CesPoints,
        "cxpulse_window_ces_points",
        "Sum of the CES scores (points on the 1-7 scale) in the window; mean = points / responses. Additive.",
    ),
    g(
        Fam::CesEasy,
        "cxpulse_window_ces_easy_responses",
        "CES answers of 5-7 (easy) in the window. Additive.",
    ),
    g(
        Fam::Touchpoints,
        "cxpulse_window_touchpoints",
        "Accepted touchpoint events in the window. Additive.",
    ),
    g(
        Fam::Contacts,
        "cxpulse_window_contacts",
        "Inbound contacts (contact_opened) in the window. Additive.",
    ),
    FamSpec {
        histogram: true,
        ..g(
            Fam::FirstResponse,
            "cxpulse_window_first_response_seconds",
            "First-response times of the support cases whose first reply falls in the window: cumulative counts at fixed bounds (a histogram of the window, not a running histogram: do not rate() it). Buckets and count are additive; sum is estimated within 1 %.",
        )
    },
    g(
        Fam::FirstResponseWithinTarget,
        "cxpulse_window_first_response_within_target_responses",
        "First responses in the window that met the response target (default 24 h). Additive.",
    ),
    FamSpec {
        histogram: true,
        ..g(
            Fam::Resolution,
            "cxpulse_window_resolution_seconds",
            "Resolution times of the support cases resolved in the window: cumulative counts at fixed bounds (a histogram of the window; do not rate() it). Buckets and count are additive; sum is estimated within 1 %.",
        )
    },
    g(
        Fam::ResolutionWithinTarget,
        "cxpulse_window_resolution_within_target_cases",
        "Resolutions in the window that met the response target (default 24 h). Additive.",
    ),
    g(
        Fam::ClosedLoopDue,
        "cxpulse_window_closed_loop_due",
        "NPS detractors whose follow-up deadline fell in the window. Additive.",
    ),
    g(
        Fam::ClosedLoopClosed,
        "cxpulse_window_closed_loop_closed",
        "Of the due detractors, those followed up by an outbound contact in time. Additive.",
    ),
    g(
        Fam::Purchases,
        "cxpulse_window_purchases",
        "Purchases in the window. Additive.",
    ),
    FamSpec {
        extra_label: Some("currency"),
        ..g(
            Fam::Revenue,
            "cxpulse_window_revenue",
            "Revenue in the window per ISO 4217 currency, in currency units. Additive.",
        )
    },
    g(
        Fam::Customers,
        "cxpulse_window_customers",
        "Distinct customers in the window (HyperLogLog estimate, within 2 %). Additive across instances because customers are partitioned by key.",
    ),
    g(
        Fam::StartTimestamp,
        "cxpulse_window_start_timestamp_seconds",
        "Start of the exported window (Unix seconds). Combine across instances with max/min, not sum.",
    ),
    g(
        Fam::EndTimestamp,
        "cxpulse_window_end_timestamp_seconds",
        "End of the exported window (Unix seconds). Combine across instances with max/min, not sum.",
    ),
    g(
        Fam::NpsScore,
        "cxpulse_window_nps_score",
        "NPS (-100..100) = 100 (promoters - detractors) / n.",
    ),
    g(
        Fam::NpsMoe,
        "cxpulse_window_nps_margin_of_error",
        "95 % margin of error of the NPS, in NPS points.",
    ),
    g(
        Fam::CsatRatio,
        "cxpulse_window_csat_ratio",
        "CSAT: share of satisfied answers (0..1).",
    ),
    g(
        Fam::CsatWilsonLow,
        "cxpulse_window_csat_wilson_low_ratio",
        "Lower bound of the 95 % Wilson interval of the CSAT share.",
    ),
    g(
        Fam::CsatWilsonHigh,
        "cxpulse_window_csat_wilson_high_ratio",
        "Upper bound of the 95 % Wilson interval of the CSAT share.",
    ),
    g(
        Fam::CesMean,
        "cxpulse_window_ces_mean_score",
        "Mean CES score (1..7).",
    ),
    g(
        Fam::CesEasyRatio,
        "cxpulse_window_ces_easy_ratio",
        "Share of CES answers of 5-7.",
    ),
    g(
        Fam::FrP50,
        "cxpulse_window_first_response_p50_seconds",
        "Median first-response time (within 1 %).",
    ),
    g(
        Fam::FrP90,
        "cxpulse_window_first_response_p90_seconds",
        "90th percentile of the first-response time (within 1 %).",
    ),
    g(
        Fam::FrP99,
        "cxpulse_window_first_response_p99_seconds",
        "99th percentile of the first-response time (within 1 %).",
    ),
    g(
        Fam::FrWithinRatio,
        "cxpulse_window_first_response_within_target_ratio",
        "Share of first responses that met the response target.",
    ),
    g(
        Fam::ResP50,
        "cxpulse_window_resolution_p50_seconds",
        "Median resolution time (within 1 %).",
    ),
    g(
        Fam::ResP90,
        "cxpulse_window_resolution_p90_seconds",
        "90th percentile of the resolution time (within 1 %).",
    ),
    g(
        Fam::ResP99,
        "cxpulse_window_resolution_p99_seconds",
        "99th percentile of the resolution time (within 1 %).",
    ),
    g(
        Fam::ResWithinRatio,
        "cxpulse_window_resolution_within_target_ratio",
        "Share of resolutions that met the response target.",
    ),
    g(
        Fam::ClosedLoopRatio,
        "cxpulse_window_closed_loop_ratio",
        "Closed-loop rate: closed / due detractors.",
    ),
];

fn is_derived(f: Fam) -> bool {
    matches!(
        f,
        Fam::NpsScore
            | Fam::NpsMoe
            | Fam::CsatRatio
            | Fam::CsatWilsonLow
            | Fam::CsatWilsonHigh
            | Fam::CesMean
            | Fam::CesEasyRatio
            | Fam::FrP50
            | Fam::FrP90
            | Fam::FrP99
            | Fam::FrWithinRatio
            | Fam::ResP50
            | Fam::ResP90
            | Fam::ResP99
            | Fam::ResWithinRatio
            | Fam::ClosedLoopRatio
    )
}

/// Names of the additive metric families (what recording rules sum across instances).
pub fn additive_family_names() -> impl Iterator<Item = &'static str> {
    FAMILIES
        .iter()
        .filter(|f| !is_derived(f.fam) && !matches!(f.fam, Fam::StartTimestamp | Fam::EndTimestamp))
        .map(|f| f.name)
}

/// Names of the single-instance derived families.
pub fn derived_family_names() -> impl Iterator<Item = &'static str> {
    FAMILIES
        .iter()
        .filter(|f| is_derived(f.fam))
        .map(|f| f.name)
}

/// Exporter settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExporterOptions {
    /// Window kinds to export (`None`: every kind, including `day`).
    pub windows: Option<BTreeSet<String>>,
}

struct Shared {
    latest: Mutex<LatestRows<WindowParts>>,
    options: ExporterOptions,
    descs: Vec<Desc>,
}

/// Exports the latest KPI window rows; cheap to clone (shared state). Register it in a
/// [`Registry`] with [`KpiExporter::register`] and feed it every batch of emitted rows with
/// [`KpiExporter::observe`]. Series are built at scrape time from the latest rows, so a
/// series that disappears from the latest evaluation disappears from `/metrics` too.
#[derive(Clone)]
pub struct KpiExporter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KpiExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KpiExporter")
            .field("series", &self.series())
            .field("options", &self.shared.options)
            .finish()
    }
}

impl Default for KpiExporter {
    fn default() -> Self {
        Self::new(ExporterOptions::default())
    }
}

impl KpiExporter {
    pub fn new(options: ExporterOptions) -> KpiExporter {
        let descs = FAMILIES
            .iter()
            .map(|f| {
                let mut labels: Vec<String> = SERIES_LABELS.iter().map(|s| s.to_string()).collect();
                labels.extend(f.extra_label.map(str::to_string));
                Desc::new(f.name.to_string(), help_of(f), labels, HashMap::new())
                    .expect("static metric descriptors are valid")
            })
            .collect();
        KpiExporter {
            shared: Arc::new(Shared {
                latest: Mutex::new(LatestRows::new()),
                options,
                descs,
            }),
        }
    }

    /// Registers the exporter's families in `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.clone()))
    }

    fn lock(&self) -> MutexGuard<'_, LatestRows<WindowParts>> {
        self.shared
            .latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a batch of rows emitted by one `KpiEngine::advance` (or several). Returns the
    /// number of series dropped because they are absent from their window's latest end.
    pub fn observe(&self, rows: &[KpiRow]) -> usize {
        let windows = &self.shared.options.windows;
        let wanted = rows
            .iter()
            .filter(|r| windows.as_ref().is_none_or(|w| w.contains(&*r.window)));
        self.lock().apply(wanted, WindowParts::from_row)
    }

    /// Forgets every series, e.g. after a rebalance: rows of partitions this instance no
    /// longer owns must not be exported (and summed) any more. The next `advance` fills the
    /// exporter again with rows merged over the partitions it owns now.
    pub fn clear(&self) {
        *self.lock() = LatestRows::new();
    }

    /// Number of exported (window, channel, segment) series.
    pub fn series(&self) -> usize {
        self.lock().len()
    }

    /// The exported parts of one series.
    pub fn parts(&self, window: &str, channel: &str, segment: &str) -> Option<WindowParts> {
        self.lock().get(window, channel, segment).cloned()
    }

    /// This exporter's metric families as they would be scraped now.
    pub fn families(&self) -> Vec<MetricFamily> {
        let latest = self.lock();
        let mut out: Vec<MetricFamily> = FAMILIES
            .iter()
            .map(|f| {
                let mut mf = MetricFamily::default();
                mf.set_name(f.name.to_string());
                mf.set_help(help_of(f));
                mf.set_field_type(if f.histogram {
                    MetricType::HISTOGRAM
                } else {
                    MetricType::GAUGE
                });
                mf
            })
            .collect();
        for (key, _end, _version, p) in latest.iter() {
            let base = [
                label("window", &key.window),
                label("channel", key.channel),
                label("segment", &key.segment),
            ];
            let mut put = |fam: Fam, v: f64| {
                push_gauge(&mut out[fam as usize], base.to_vec(), v);
            };
            put(Fam::CsatResponses, p.csat.n as f64);
            put(Fam::CsatSatisfied, p.csat.satisfied as f64);
            put(Fam::CesResponses, p.ces.n as f64);
            put(Fam::CesPoints, p.ces.sum as f64);
            put(Fam::CesEasy, p.ces.easy as f64);
            put(Fam::Touchpoints, p.touchpoints as f64);
            put(Fam::Contacts, p.contacts as f64);
            put(
                Fam::FirstResponseWithinTarget,
                p.first_response.within_target as f64,
            );
            put(
                Fam::ResolutionWithinTarget,
                p.resolution.within_target as f64,
            );
            put(Fam::ClosedLoopDue, p.closed_loop.due as f64);
            put(Fam::ClosedLoopClosed, p.closed_loop.closed as f64);
            put(Fam::Purchases, p.purchases as f64);
            put(Fam::Customers, p.customers as f64);
            put(Fam::StartTimestamp, p.start as f64 / 1000.0);
            put(Fam::EndTimestamp, p.end as f64 / 1000.0);
            let d = &p.derived;
            let optional = [
                (Fam::NpsScore, d.nps_score),
                (Fam::NpsMoe, d.nps_margin_of_error),
                (Fam::CsatRatio, d.csat_ratio),
                (Fam::CsatWilsonLow, d.csat_wilson_low),
                (Fam::CsatWilsonHigh, d.csat_wilson_high),
                (Fam::CesMean, d.ces_mean),
                (Fam::CesEasyRatio, d.ces_easy_ratio),
                (Fam::FrP50, d.first_response_quantiles[0]),
                (Fam::FrP90, d.first_response_quantiles[1]),
                (Fam::FrP99, d.first_response_quantiles[2]),
                (Fam::FrWithinRatio, d.first_response_within_target_ratio),
                (Fam::ResP50, d.resolution_quantiles[0]),
                (Fam::ResP90, d.resolution_quantiles[1]),
                (Fam::ResP99, d.resolution_quantiles[2]),
                (Fam::ResWithinRatio, d.resolution_within_target_ratio),
                (Fam::ClosedLoopRatio, d.closed_loop_ratio),
            ];
            for (fam, v) in optional {
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    put(fam, v);
                }
            }
            for (group, n) in [
                ("promoter", p.nps.promoters),
                ("passive", p.nps.passives),
                ("detractor", p.nps.detractors),
            ] {
                let mut labels = base.to_vec();
                labels.push(label("group", group));
                push_gauge(&mut out[Fam::NpsResponses as usize], labels, n as f64);
            }
            for (currency, amount) in &p.revenue {
                let mut labels = base.to_vec();
                labels.push(label("currency", currency));
                push_gauge(&mut out[Fam::Revenue as usize], labels, *amount);
            }
            push_histogram(
                &mut out[Fam::FirstResponse as usize],
                base.to_vec(),
                &p.first_response,
            );
            push_histogram(
                &mut out[Fam::Resolution as usize],
                base.to_vec(),
                &p.resolution,
            );
        }
        out.retain(|mf| !mf.get_metric().is_empty());
        out
    }
}

fn help_of(f: &FamSpec) -> String {
    if is_derived(f.fam) {
        format!("{}{SINGLE}", f.help)
    } else {
        f.help.to_string()
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

fn push_gauge(mf: &mut MetricFamily, mut labels: Vec<LabelPair>, value: f64) {
    labels.sort_by(|a, b| a.name().cmp(b.name()));
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_label(labels);
    m.set_gauge(g);
    mf.mut_metric().push(m);
}

fn push_histogram(mf: &mut MetricFamily, mut labels: Vec<LabelPair>, d: &DurationParts) {
    labels.sort_by(|a, b| a.name().cmp(b.name()));
    let mut h = Histogram::default();
    h.set_sample_count(d.count);
    h.set_sample_sum(d.sum_seconds);
    h.set_bucket(
        LE_BOUNDS_SECONDS
            .iter()
            .zip(&d.le_counts)
            .map(|(le, c)| {
                let mut b = Bucket::default();
                b.set_upper_bound(*le);
                b.set_cumulative_count(*c);
                b
            })
            .collect(),
    );
    let mut m = Metric::from_label(labels);
    m.set_histogram(h);
    mf.mut_metric().push(m);
}

impl Collector for KpiExporter {
    fn desc(&self) -> Vec<&Desc> {
        self.shared.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.families()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_listed_in_enum_order_with_unique_names() {
        let mut names = BTreeSet::new();
        for (i, f) in FAMILIES.iter().enumerate() {
            assert_eq!(f.fam as usize, i, "{} is out of order", f.name);
            assert!(names.insert(f.name), "{} twice", f.name);
            assert!(f.name.starts_with("cxpulse_window_"));
        }
        assert_eq!(
            additive_family_names().count() + derived_family_names().count() + 2,
            FAMILIES.len()
        );
    }
}
