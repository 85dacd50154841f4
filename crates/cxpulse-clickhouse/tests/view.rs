//! `kpi_windows_latest` against the Rust KPI math: window rows of 3 partitions are merged by
//! the view and every derived KPI is compared with `KpiSnapshot` of the merged `KpiState`.

mod common;

use common::{cur, rich_state, t0, TestDb, HOUR, MINUTE};
use cxpulse_clickhouse::{LatestWindowRow, WindowRow};
use cxpulse_core::engine::KpiRow;
use cxpulse_core::events::{Channel, DAY_MS};
use cxpulse_core::kpi::{KpiSnapshot, KpiState};
use cxpulse_core::window::Mergeable;
use std::sync::Arc;
use std::time::Instant;

#[allow(clippy::too_many_arguments)]
fn row(
    window: &str,
    end: i64,
    len: i64,
    partition: i32,
    channel: Option<Channel>,
    segment: Option<&str>,
    state: &KpiState,
    version: u64,
) -> WindowRow {
    let r = KpiRow {
        partition: Some(partition),
        window: Arc::from(window),
        start: end - len,
        end,
        channel,
        segment: segment.map(Arc::from),
        watermark: end + partition as i64,
        version,
        kpis: state.snapshot(),
        state: state.clone().into(),
    };
    WindowRow::from_kpi_row(&r, partition, version).expect("row")
}

/// Within `tol`; returns whether the two are bit-identical.
fn close(what: &str, got: Option<f64>, want: Option<f64>, tol: f64) -> bool {
    match (got, want) {
        (None, None) => true,
        (Some(g), Some(w)) => {
            assert!((g - w).abs() <= tol, "{what}: view {g}, rust {w}");
            g.to_bits() == w.to_bits()
        }
        _ => panic!("{what}: view {got:?}, rust {want:?}"),
    }
}

/// Relative error ≤ 1 %; returns whether the two are bit-identical.
fn quantile(what: &str, got: Option<f64>, want: Option<f64>) -> bool {
    match (got, want) {
        (None, None) => true,
        (Some(g), Some(w)) => {
            let rel = if w == 0.0 {
                g.abs()
            } else {
                ((g - w) / w).abs()
            };
            assert!(rel <= 0.01, "{what}: view {g}, rust {w}");
            g.to_bits() == w.to_bits()
        }
        _ => panic!("{what}: view {got:?}, rust {want:?}"),
    }
}

/// (channel, segment, the three partitions' states, true distinct customers).
type Case<'a> = (Option<Channel>, Option<&'a str>, &'a [KpiState; 3], u64);

struct Checked {
    quantiles: usize,
    quantiles_bit_exact: usize,
    ratios: usize,
    ratios_bit_exact: usize,
}

fn compare(v: &LatestWindowRow, s: &KpiState, true_customers: u64, checked: &mut Checked) {
    let k: KpiSnapshot = s.snapshot();
    let ctx = format!("{} {} {}", v.window, v.channel, v.segment);
    // Counts: exact.
    assert_eq!(v.touchpoints, k.touchpoints, "{ctx}");
    assert_eq!(
        (v.nps_promoters, v.nps_passives, v.nps_detractors, v.nps_n),
        (k.nps.promoters, k.nps.passives, k.nps.detractors, k.nps.n),
        "{ctx}"
    );
    assert_eq!(
        (v.csat_n, v.csat_satisfied),
        (k.csat.n, k.csat.satisfied),
        "{ctx}"
    );
    assert_eq!(v.ces_n, k.ces.n, "{ctx}");
    assert_eq!(v.contacts, k.contacts, "{ctx}");
    assert_eq!(
        (v.frt_n, v.frt_within),
        (k.first_response.n, k.first_response.within_target),
        "{ctx}"
    );
    assert_eq!(
        (v.res_n, v.res_within),
        (k.resolution.n, k.resolution.within_target),
        "{ctx}"
    );
    assert_eq!(
        (v.closed_loop_due, v.closed_loop_closed),
        (k.closed_loop.due, k.closed_loop.closed),
        "{ctx}"
    );
    assert_eq!(v.purchases, k.purchases, "{ctx}");
    let revenue: Vec<(String, i128, u64)> = s
        .revenue
        .lines()
        .map(|(c, u, n)| (c.as_str().to_string(), u, n))
        .collect();
    let mut view_revenue: Vec<(String, i128, u64)> = v
        .revenue_count
        .iter()
        .map(|(c, n)| {
            let units = v.revenue.iter().find(|r| &r.0 == c).map_or(0, |r| r.1);
            (c.clone(), units, *n)
        })
        .collect();
    view_revenue.sort();
    assert_eq!(view_revenue, revenue, "{ctx}");

    // Scores, margins, shares: 1e-9.
    let ratios = [
        ("nps", v.nps, k.nps.score),
        ("nps_moe", v.nps_moe, k.nps.margin_of_error),
        ("csat", v.csat, k.csat.share),
        ("wilson low", v.csat_wilson_low, k.csat.wilson_low),
        ("wilson high", v.csat_wilson_high, k.csat.wilson_high),
        ("ces", v.ces_mean, k.ces.mean),
        ("ces easy", v.ces_easy_share, k.ces.easy_share),
        (
            "frt within",
            v.frt_within_share,
            k.first_response.within_target_share,
        ),
        (
            "res within",
            v.res_within_share,
            k.resolution.within_target_share,
        ),
        ("closed loop", v.closed_loop_rate, k.closed_loop.rate),
    ];
    for (name, got, want) in ratios {
        checked.ratios += 1;
        if close(&format!("{ctx} {name}"), got, want, 1e-9) {
            checked.ratios_bit_exact += 1;
        }
    }

    // Quantiles: 1 %.
    let pairs = [
        ("frt p50", v.frt_p50_ms, k.first_response.p50_ms),
        ("frt p90", v.frt_p90_ms, k.first_response.p90_ms),
        ("frt p99", v.frt_p99_ms, k.first_response.p99_ms),
        ("res p50", v.res_p50_ms, k.resolution.p50_ms),
        ("res p90", v.res_p90_ms, k.resolution.p90_ms),
        ("res p99", v.res_p99_ms, k.resolution.p99_ms),
    ];
    for (name, got, want) in pairs {
        checked.quantiles += 1;
        if quantile(&format!("{ctx} {name}"), got, want) {
            checked.quantiles_bit_exact += 1;
        }
    }

    // Customers: ≤ 2 % from the true distinct count.
    let err = (v.customers as f64 - true_customers as f64).abs() / (true_customers.max(1) as f64);
    assert!(
        err <= 0.02,
        "{ctx}: view customers {} vs true {true_customers}",
        v.customers
    );
    assert!(
        v.customers.abs_diff(k.customers) <= 1,
        "{ctx}: {} vs {}",
        v.customers,
        k.customers
    );
    eprintln!(
        "{ctx}: customers true {true_customers}, view {} ({:+.3} %), Hll::estimate {} ({:+.3} %)",
        v.customers,
        100.0 * (v.customers as f64 - true_customers as f64) / true_customers.max(1) as f64,
        k.customers,
        100.0 * (k.customers as f64 - true_customers as f64) / true_customers.max(1) as f64,
    );
}

fn with_customers(mut s: KpiState, range: std::ops::Range<u64>) -> KpiState {
    for i in range {
        s.customers.insert(format!("cust-{i}").as_bytes());
    }
    s
}

#[tokio::test]
async fn latest_view_matches_rust_kpis() {
    let Some(url) = common::url("latest_view_matches_rust_kpis") else {
        return;
    };
    let db = TestDb::migrated(&url, "view").await;
    let end = t0() + 17 * HOUR;

    // (channel, segment) → the three partitions' states and the true distinct customers.
    let vip_web = [
        with_customers(rich_state(1, 0, ""), 0..3000),
        with_customers(rich_state(2, 0, ""), 2000..6000),
        with_customers(rich_state(3, 0, ""), 5000..5100),
    ];
    let mut only_counts = KpiState {
        touchpoints: 12,
        ..KpiState::default()
    };
    only_counts.customers.insert(b"solo");
    let mut revenue_only = KpiState {
        purchases: 3,
        ..KpiState::default()
    };
    revenue_only.revenue.add(cur("RON"), 10_0000);
    revenue_only.revenue.add(cur("RON"), -10_0000);
    let small = [
        with_customers(rich_state(4, 0, ""), 0..4),
        with_customers(KpiState::default(), 2..10),
        revenue_only.clone(),
    ];
    let sparse = [
        only_counts.clone(),
        KpiState::default(),
        only_counts.clone(),
    ];
    let cases: Vec<Case<'_>> = vec![
        (Some(Channel::Web), Some("vip"), &vip_web, 6000),
        (None, None, &vip_web, 6000),
        (Some(Channel::Chat), None, &small, 10),
        (None, Some("smb"), &sparse, 1),
    ];

    let mut rows = Vec::new();
    for (ch, seg, states, _) in &cases {
        for (p, s) in states.iter().enumerate() {
            if s.is_empty() {
                continue; // the engine emits no row for an empty window state
            }
            rows.push(row(
                "24h",
                end,
                DAY_MS,
                p as i32,
                *ch,
                *seg,
                s,
                100 + p as u64,
            ));
        }
    }
    // Partition 1 first wrote an older version of web/vip: the view must ignore it.
    let stale = row(
        "24h",
        end,
        DAY_MS,
        1,
        Some(Channel::Web),
        Some("vip"),
        &rich_state(9, 7, "stale"),
        50,
    );
    db.sink
        .write_windows(&[stale], "w:1:50")
        .await
        .expect("stale");
    db.sink
        .write_windows(&rows, "w:all:100")
        .await
        .expect("rows");
    // Another window and another end must not leak in.
    let noise = [
        row(
            "1h",
            end,
            HOUR,
            0,
            Some(Channel::Web),
            Some("vip"),
            &vip_web[0],
            100,
        ),
        row(
            "24h",
            end - MINUTE,
            DAY_MS,
            0,
            Some(Channel::Web),
            Some("vip"),
            &vip_web[1],
            100,
        ),
    ];
    db.sink
        .write_windows(&noise, "w:noise")
        .await
        .expect("noise");

    let got = db.sink.latest_windows("24h", end).await.expect("view");
    assert_eq!(got.len(), cases.len());
    let mut checked = Checked {
        quantiles: 0,
        quantiles_bit_exact: 0,
        ratios: 0,
        ratios_bit_exact: 0,
    };
    for (ch, seg, states, true_customers) in &cases {
        let label_ch = ch.map_or("all", Channel::as_str);
        let label_seg = seg.unwrap_or("all");
        let v = got
            .iter()
            .find(|v| v.channel == label_ch && v.segment == label_seg)
            .unwrap_or_else(|| panic!("no view row for {label_ch}/{label_seg}"));
        let mut merged = KpiState::default();
        for s in states.iter() {
            merged.merge(s);
        }
        let partitions = states.iter().filter(|s| !s.is_empty()).count() as u64;
        assert_eq!(v.partitions, partitions);
        assert_eq!(
            v.version,
            100 + states.iter().rposition(|s| !s.is_empty()).unwrap_or(0) as u64
        );
        assert_eq!((v.start, v.end), (end - DAY_MS, end));
        assert_eq!(v.watermark, end);
        compare(v, &merged, *true_customers, &mut checked);
    }
    eprintln!(
        "quantiles: {} compared, {} bit-identical to DurationSketch::quantile; \
         scores/margins/shares: {} compared, {} bit-identical to KpiSnapshot",
        checked.quantiles, checked.quantiles_bit_exact, checked.ratios, checked.ratios_bit_exact
    );
    assert_eq!(checked.quantiles, checked.quantiles_bit_exact);
}

#[tokio::test]
async fn view_throughput() {
    let Some(url) = common::url("view_throughput") else {
        return;
    };
    let db = TestDb::migrated(&url, "view_rate").await;
    let base = t0();
    // 3 partitions × 8 channels × 4 segments × 60 ends = 5760 window rows.
    let states: Vec<KpiState> = (0..3)
        .map(|p| rich_state(p, 50, &format!("p{p}")))
        .collect();
    let mut rows = Vec::new();
    for i in 0..60 {
        for ch in Channel::ALL {
            for seg in ["a", "b", "c", "d"] {
                for (p, s) in states.iter().enumerate() {
                    rows.push(row(
                        "1h",
                        base + i * MINUTE,
                        HOUR,
                        p as i32,
                        Some(ch),
                        Some(seg),
                        s,
                        7,
                    ));
                }
            }
        }
    }
    let started = Instant::now();
    db.sink.write_windows(&rows, "rate").await.expect("write");
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "write_windows: {} rows in {secs:.3} s = {:.0} rows/s",
        rows.len(),
        rows.len() as f64 / secs
    );
    let started = Instant::now();
    let got = db
        .sink
        .latest_windows("1h", base + 59 * MINUTE)
        .await
        .expect("view");
    let one = started.elapsed().as_secs_f64();
    assert_eq!(got.len(), 32);
    assert!(got.iter().all(|v| v.partitions == 3));
    let started = Instant::now();
    let all: Vec<LatestWindowRow> = db
        .sink
        .client()
        .query("SELECT ?fields FROM kpi_windows_latest WHERE `window` = '1h'")
        .fetch_all()
        .await
        .expect("all");
    let every = started.elapsed().as_secs_f64();
    assert_eq!(all.len(), 60 * 32);
    eprintln!(
        "kpi_windows_latest: one end (32 rows from 96) in {one:.3} s; all {} rows (from {}) in \
         {every:.3} s = {:.0} merged rows/s",
        all.len(),
        rows.len(),
        all.len() as f64 / every
    );
}

#[tokio::test]
async fn customers_estimate_across_cardinalities() {
    let Some(url) = common::url("customers_estimate_across_cardinalities") else {
        return;
    };
    let db = TestDb::migrated(&url, "hll").await;
    let end = t0() + HOUR;
    let sizes: [u64; 12] = [
        1, 10, 100, 1_000, 5_000, 12_000, 30_000, 41_000, 50_000, 65_000, 100_000, 300_000,
    ];
    // Each cardinality split over 3 partitions with overlap, as segments of one window.
    let mut rows = Vec::new();
    for n in sizes {
        let seg = format!("n{n}");
        for p in 0..3u64 {
            let lo = n * p / 3;
            let hi = (n * (p + 1) / 3 + n / 10).min(n);
            let s = with_customers(KpiState::default(), lo..hi);
            if !s.is_empty() {
                rows.push(row("1h", end, HOUR, p as i32, None, Some(&seg), &s, 1));
            }
        }
    }
    db.sink.write_windows(&rows, "hll").await.expect("write");
    let got = db.sink.latest_windows("1h", end).await.expect("view");
    for n in sizes {
        let v = got
            .iter()
            .find(|v| v.segment == format!("n{n}"))
            .expect("row");
        let rust = with_customers(KpiState::default(), 0..n)
            .customers
            .estimate();
        let view_err = (v.customers as f64 - n as f64) / n as f64;
        let rust_err = (rust as f64 - n as f64) / n as f64;
        eprintln!(
            "customers n={n}: view {} ({:+.3} %), Hll::estimate {rust} ({:+.3} %), view−rust {:+}",
            v.customers,
            100.0 * view_err,
            100.0 * rust_err,
            v.customers as i64 - rust as i64
        );
        assert!(view_err.abs() <= 0.02, "n={n}: view {}", v.customers);
        // The view evaluates the same (Ertl) estimator; only the summation order differs.
        assert!(
            v.customers.abs_diff(rust) <= 1,
            "n={n}: view {} vs rust {rust}",
            v.customers
        );
    }
}
