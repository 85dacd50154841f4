//! Exporter bookkeeping: latest row per series, corrections, removal of stale series.

use cxpulse_core::kpi::KpiState;
use cxpulse_core::{Channel, KpiRow, Millis, HOUR_MS, MINUTE_MS};
use cxpulse_metrics::{derived_family_names, flatten, ExporterOptions, KpiExporter};
use std::sync::Arc;

const T0: Millis = 1_767_225_600_000;

fn row(
    window: &str,
    end: Millis,
    channel: Option<Channel>,
    segment: Option<&str>,
    version: u64,
    promoters: u64,
) -> KpiRow {
    let mut state = KpiState::default();
    state.nps.promoters = promoters;
    state.nps.detractors = 1;
    state.csat.add(5);
    state.first_response_mut().add(90_000, true);
    state.first_response_mut().add(7_000_000, false);
    KpiRow {
        partition: None,
        window: Arc::from(window),
        start: end - HOUR_MS,
        end,
        channel,
        segment: segment.map(Arc::from),
        watermark: end,
        version,
        kpis: state.snapshot(),
        state: state.into(),
    }
}

fn promoters(x: &KpiExporter, channel: &str, segment: &str) -> Option<f64> {
    let key = format!(
        r#"cxpulse_window_nps_responses{{channel="{channel}",group="promoter",segment="{segment}",window="1h"}}"#
    );
    flatten(&x.families()).get(&key).copied()
}

#[test]
fn keeps_latest_and_drops_series_absent_from_the_latest_end() {
    let x = KpiExporter::default();
    let e1 = T0 + MINUTE_MS;
    let e2 = e1 + MINUTE_MS;
    x.observe(&[
        row("1h", e1, Some(Channel::Web), Some("smb"), 1, 3),
        row("1h", e1, Some(Channel::Phone), None, 1, 4),
        row("1h", e1, None, None, 1, 7),
    ]);
    assert_eq!(x.series(), 3);
    assert_eq!(promoters(&x, "web", "smb"), Some(3.0));
    // Next end: web/smb slid out of the window (no row), the others go on.
    let dropped = x.observe(&[
        row("1h", e2, Some(Channel::Phone), None, 2, 5),
        row("1h", e2, None, None, 2, 5),
    ]);
    assert_eq!(dropped, 1);
    assert_eq!(
        promoters(&x, "web", "smb"),
        None,
        "stale series must disappear"
    );
    assert_eq!(promoters(&x, "phone", "all"), Some(5.0));
    // A correction of an older end does not come back, nor replace a newer row.
    x.observe(&[
        row("1h", e1, Some(Channel::Web), Some("smb"), 3, 9),
        row("1h", e1, None, None, 3, 9),
    ]);
    assert_eq!(promoters(&x, "web", "smb"), None);
    assert_eq!(promoters(&x, "all", "all"), Some(5.0));
    // A correction of the latest end (higher version) replaces it; a lower version does not.
    x.observe(&[row("1h", e2, None, None, 4, 6)]);
    assert_eq!(promoters(&x, "all", "all"), Some(6.0));
    x.observe(&[row("1h", e2, None, None, 3, 1)]);
    assert_eq!(promoters(&x, "all", "all"), Some(6.0));
    // Other window kinds are independent.
    x.observe(&[row("24h", e1, None, None, 5, 2)]);
    assert_eq!(promoters(&x, "all", "all"), Some(6.0));
    assert_eq!(x.series(), 3);
    // A rebalance clears everything; the next rows start over (older ends included).
    x.clear();
    assert_eq!(x.series(), 0);
    assert!(x.families().is_empty());
    x.observe(&[row("1h", e1, None, None, 9, 2)]);
    assert_eq!(promoters(&x, "all", "all"), Some(2.0));
}

#[test]
fn exports_buckets_derived_values_and_respects_the_window_filter() {
    let x = KpiExporter::new(ExporterOptions {
        windows: Some(["1h".to_string()].into()),
    });
    let end = T0 + HOUR_MS;
    x.observe(&[
        row("1h", end, None, None, 1, 3),
        row("24h", end, None, None, 1, 3),
    ]);
    assert_eq!(x.series(), 1);
    let s = flatten(&x.families());
    let get = |name: &str, extra: &str| -> f64 {
        let mut labels = vec![r#"channel="all""#, r#"segment="all""#, r#"window="1h""#];
        if !extra.is_empty() {
            labels.push(extra);
        }
        labels.sort();
        let key = format!("{name}{{{}}}", labels.join(","));
        *s.get(&key).unwrap_or_else(|| panic!("{key} missing"))
    };
    // 90 s and 7000 s: one at or below 300 s, both at or below 7200 s.
    assert_eq!(
        get("cxpulse_window_first_response_seconds_bucket", r#"le="60""#),
        0.0
    );
    assert_eq!(
        get(
            "cxpulse_window_first_response_seconds_bucket",
            r#"le="300""#
        ),
        1.0
    );
    assert_eq!(
        get(
            "cxpulse_window_first_response_seconds_bucket",
            r#"le="7200""#
        ),
        2.0
    );
    assert_eq!(
        get(
            "cxpulse_window_first_response_seconds_bucket",
            r#"le="+Inf""#
        ),
        2.0
    );
    assert_eq!(get("cxpulse_window_first_response_seconds_count", ""), 2.0);
    let sum = get("cxpulse_window_first_response_seconds_sum", "");
    assert!((sum - 7090.0).abs() < 0.01 * 7090.0, "{sum}");
    assert_eq!(
        get("cxpulse_window_first_response_within_target_responses", ""),
        1.0
    );
    // NPS 3 promoters, 1 detractor: 50.
    assert_eq!(get("cxpulse_window_nps_score", ""), 50.0);
    assert_eq!(get("cxpulse_window_csat_ratio", ""), 1.0);
    assert_eq!(
        get("cxpulse_window_end_timestamp_seconds", ""),
        end as f64 / 1000.0
    );
    // No resolution data: count 0, no quantile gauges.
    assert_eq!(get("cxpulse_window_resolution_seconds_count", ""), 0.0);
    assert!(!s
        .keys()
        .any(|k| k.starts_with("cxpulse_window_resolution_p90_seconds")));
    assert!(!s.keys().any(|k| k.contains(r#"window="24h""#)));
    // Derived families say so in their help text.
    for mf in x.families() {
        let derived = derived_family_names().any(|n| n == mf.name());
        assert_eq!(
            derived,
            mf.help().contains("Single-instance value"),
            "{}",
            mf.name()
        );
    }
}

#[test]
fn per_partition_rows_are_not_exported() {
    let x = KpiExporter::default();
    let mut r = row("1h", T0 + HOUR_MS, None, None, 1, 3);
    r.partition = Some(3);
    x.observe(&[r]);
    assert_eq!(x.series(), 0);
}
