//! cxpulse-metrics: what people, dashboards and alerts read from a running cxpulse job.
//!
//! * [`KpiExporter`]: the latest KPI window rows as Prometheus series labelled `window`,
//!   `channel`, `segment`. It exports the **additive parts** of each window (counts, sums,
//!   cumulative duration buckets), which several instances' recording rules can sum, and, for
//!   convenience, the KPI values this one instance derives from its own parts.
//! * [`JobMetrics`]: job health (records in and refused, late and duplicate events,
//!   watermark delay, consumer lag, ClickHouse inserts, rebalances, state size, build info).
//! * [`serve_metrics`] / [`MetricsServer`]: `GET /metrics` and `GET /healthz` over axum.
//!
//! Every metric, its labels, and the PromQL that derives the KPIs from the additive parts
//! are documented in `docs/metrics.md`.

pub mod job;
pub mod kpi;
pub mod latest;
pub mod server;

pub use job::JobMetrics;
pub use kpi::{
    additive_family_names, derived_family_names, DurationParts, ExporterOptions, KpiExporter,
    WindowParts, LE_BOUNDS_SECONDS,
};
pub use latest::{LatestRows, SeriesKey};
pub use prometheus::Registry;
pub use server::{http_get, router, serve_metrics, MetricsServer};

use prometheus::proto::{MetricFamily, MetricType};
use std::collections::BTreeMap;

/// Flattens metric families into exposition-format samples: `name{label="value",…}` → value
/// (histograms expand into `_bucket{…,le="…"}`, `_sum` and `_count`; labels sorted by name).
/// Handy for comparing exporters and for tests.
pub fn flatten(families: &[MetricFamily]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for mf in families {
        for m in mf.get_metric() {
            let mut labels: Vec<(String, String)> = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            labels.sort();
            let key = |suffix: &str, extra: Option<(&str, String)>| {
                let mut ls = labels.clone();
                if let Some((k, v)) = extra {
                    ls.push((k.to_string(), v));
                    ls.sort();
                }
                let inner: Vec<String> = ls.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                format!("{}{suffix}{{{}}}", mf.name(), inner.join(","))
            };
            match mf.get_field_type() {
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    for b in h.get_bucket() {
                        out.insert(
                            key("_bucket", Some(("le", format_le(b.upper_bound())))),
                            b.cumulative_count() as f64,
                        );
                    }
                    out.insert(
                        key("_bucket", Some(("le", "+Inf".to_string()))),
                        h.get_sample_count() as f64,
                    );
                    out.insert(key("_sum", None), h.get_sample_sum());
                    out.insert(key("_count", None), h.get_sample_count() as f64);
                }
                MetricType::COUNTER => {
                    out.insert(key("", None), m.get_counter().get_value());
                }
                _ => {
                    out.insert(key("", None), m.get_gauge().get_value());
                }
            }
        }
    }
    out
}

fn format_le(v: f64) -> String {
    if v.is_infinite() {
        "+Inf".to_string()
    } else {
        format!("{v}")
    }
}
