//! The /metrics endpoint: served over HTTP, parseable, and clean for `promtool check metrics`.

mod common;

use common::run_engines;
use cxpulse_core::{EngineStats, MINUTE_MS};
use cxpulse_metrics::{http_get, JobMetrics, KpiExporter, MetricsServer, Registry};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

fn promtool() -> Option<String> {
    if let Ok(p) = std::env::var("CXPULSE_PROMTOOL") {
        if std::path::Path::new(&p).is_file() {
            return Some(p);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
}

fn registry_with_data() -> (Registry, JobMetrics) {
    let registry = Registry::new();
    let job = JobMetrics::new(&registry, "0.1.0-test").unwrap();
    let exporter = KpiExporter::default();
    exporter.register(&registry).unwrap();
    let run = run_engines(3, 20.0, 20, 2, &[vec![0, 1]]).remove(0);
    exporter.observe(&run.rows);
    assert!(exporter.series() > 50);
    job.observe_engine(&EngineStats {
        accepted: 100,
        late: 3,
        duplicates: 2,
        rows_emitted: run.rows.len() as u64,
        series: 40,
        minute_panes: 400,
        ..Default::default()
    });
    job.observe_watermark(
        run.last_now,
        Some(run.last_now - 2 * MINUTE_MS),
        Some(run.last_now - 3 * MINUTE_MS),
    );
    job.record_consumed("cx.surveys");
    job.record_decoded("cx.surveys");
    job.record_rejected("score_out_of_range");
    job.record_dead_lettered("score_out_of_range");
    job.set_consumer_lag("cx.surveys", 0, 12);
    job.set_partitions_assigned(2);
    job.rebalance();
    job.observe_clickhouse_insert("kpi_windows", Duration::from_millis(12), 900, 1);
    // An insert without a failed attempt: its error series exists, at 0 (rate() needs it).
    job.observe_clickhouse_insert("survey_responses", Duration::from_millis(3), 10, 0);
    job.observe_advance(Duration::from_micros(800));
    job.rows_written("clickhouse", "kpi_windows", 900);
    job.set_pane_bytes(123_456);
    (registry, job)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_metrics_and_health_and_passes_promtool() {
    let (registry, job) = registry_with_data();
    let server = MetricsServer::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(server.serve(registry, async {
        let _ = stop_rx.await;
    }));

    let (health, metrics) = tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        (
            http_get(addr, "/healthz", timeout).unwrap(),
            http_get(addr, "/metrics", timeout).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(health, (200, "ok\n".to_string()));
    let (status, body) = metrics;
    assert_eq!(status, 200);
    for needle in [
        "# TYPE cxpulse_window_first_response_seconds histogram",
        r#"cxpulse_window_first_response_seconds_bucket{channel="all",segment="all",window="1h",le="+Inf"}"#,
        r#"cxpulse_window_nps_responses{channel="all",group="detractor",segment="all",window="24h"}"#,
        r#"cxpulse_build_info{version="0.1.0-test"} 1"#,
        "cxpulse_events_accepted_total 100",
        "cxpulse_watermark_delay_seconds 120",
        r#"cxpulse_consumer_lag_records{partition="0",topic="cx.surveys"} 12"#,
        r#"cxpulse_clickhouse_insert_errors_total{table="kpi_windows"} 1"#,
        r#"cxpulse_clickhouse_insert_errors_total{table="survey_responses"} 0"#,
    ] {
        assert!(body.contains(needle), "{needle} missing from /metrics");
    }
    // Counters are monotonic across engine stats updates.
    job.observe_engine(&EngineStats {
        accepted: 150,
        ..Default::default()
    });
    stop_tx.send(()).unwrap();
    handle.await.unwrap().unwrap();

    match promtool() {
        None => eprintln!(
            "SKIPPED promtool check: `promtool` is not on PATH (Debian package `prometheus`; `scripts/servers.sh install` installs it)"
        ),
        Some(promtool) => {
            let mut child = Command::new(&promtool)
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("promtool check metrics: ok ({} bytes)", body.len());
        }
    }
}
