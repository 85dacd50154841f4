//! Every metric a dashboard query reads exists: a job-health metric registered by
//! `JobMetrics`, a KPI family of `KpiExporter`, a series recorded by the recording rules, or
//! Prometheus' own `up` / `ALERTS`; and every alert name the boards filter on is an alert of
//! `prometheus/cxpulse-alerts.yml`. No server needed: this also covers the queries that the
//! job under test in tests/promql.rs cannot make return data.

use cxpulse_core::EngineStats;
use cxpulse_metrics::kpi::{additive_family_names, derived_family_names};
use cxpulse_metrics::{JobMetrics, Registry};
use cxpulse_stack_tests::{dashboards, metric_names, queries, repo_root, Source};
use std::collections::BTreeSet;
use std::time::Duration;

/// Names `JobMetrics` exposes once every kind of call was made (vectors have no series
/// before their first label values).
fn job_metric_names() -> BTreeSet<String> {
    let registry = Registry::new();
    let job = JobMetrics::new(&registry, "test").unwrap();
    job.record_consumed("t");
    job.record_decoded("t");
    job.record_rejected("r");
    job.record_dead_lettered("r");
    job.observe_engine(&EngineStats::default());
    job.observe_watermark(1_000, Some(500), Some(400));
    job.observe_advance(Duration::from_millis(1));
    job.set_consumer_lag("t", 0, 1);
    job.set_partitions_assigned(1);
    job.rebalance();
    job.observe_clickhouse_insert("kpi_windows", Duration::from_millis(5), 10, 1);
    job.rows_written("clickhouse", "kpi_windows", 10);
    job.set_pane_bytes(1);
    let mut names = BTreeSet::new();
    for f in registry.gather() {
        let name = f.name().to_string();
        // Histograms are read through their series.
        for suffix in ["_bucket", "_count", "_sum"] {
            names.insert(format!("{name}{suffix}"));
        }
        names.insert(name);
    }
    names
}

fn recorded_names() -> BTreeSet<String> {
    let rules = repo_root().join("crates/cxpulse-metrics/rules/cxpulse-recording-rules.yml");
    std::fs::read_to_string(rules)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record:"))
        .map(|n| n.trim().to_string())
        .collect()
}

fn alert_names() -> BTreeSet<String> {
    std::fs::read_to_string(repo_root().join("prometheus/cxpulse-alerts.yml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn every_metric_in_the_dashboards_exists() {
    let mut known = job_metric_names();
    for n in additive_family_names().chain(derived_family_names()) {
        for suffix in ["", "_bucket", "_count", "_sum"] {
            known.insert(format!("{n}{suffix}"));
        }
    }
    known.extend(recorded_names());
    known.insert("up".into());
    known.insert("ALERTS".into());
    let alerts = alert_names();
    assert!(alerts.len() >= 10, "{alerts:?}");

    let mut missing = Vec::new();
    let mut used = BTreeSet::new();
    for d in dashboards() {
        for q in queries(&d)
            .unwrap()
            .into_iter()
            .filter(|q| q.source == Source::Prometheus)
        {
            let names = metric_names(&q.text);
            if names.is_empty() {
                missing.push(format!("{}: reads no cxpulse metric: {}", q.name(), q.text));
            }
            for n in names {
                if !known.contains(&n) {
                    missing.push(format!("{}: unknown metric {n}", q.name()));
                }
                used.insert(n);
            }
            // alertname=~"A|B|C": every name is a real alert.
            if let Some(rest) = q.text.split("alertname=~\"").nth(1) {
                let list = rest.split('"').next().unwrap_or("");
                for a in list.split('|') {
                    if !alerts.contains(a) {
                        missing.push(format!(
                            "{}: alert {a} is not in prometheus/cxpulse-alerts.yml",
                            q.name()
                        ));
                    }
                }
            }
        }
    }
    println!(
        "{} distinct metrics read by the dashboards, all known",
        used.len()
    );
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// The check can fail: a misspelt metric is not known.
#[test]
fn a_misspelt_metric_is_unknown() {
    let known = job_metric_names();
    assert!(known.contains("cxpulse_consumer_lag_records"));
    assert!(known.contains("cxpulse_clickhouse_insert_duration_seconds_bucket"));
    assert!(!known.contains("cxpulse_consumer_lag"));
}
