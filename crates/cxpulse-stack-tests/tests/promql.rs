//! Every PromQL expression of every dashboard, every recording rule and the provokable alert
//! rules return data from a real Prometheus scraping a real running job.
//!
//! The job is `cxpulse run`, reading real Kafka (tansu) and writing real ClickHouse: `cxpulse
//! generate` first backfills 30 h of event time at 3 events/s with an NPS drop in the last
//! 8 h (so the KPI-drop alert `CxNpsDrop` is pending) and 0.2 % malformed records (rejected and
//! dead-lettered), then a second `cxpulse generate --realtime` keeps live traffic coming. The
//! job's configuration (environment, as in production) shortens the correction horizon to
//! 3 min, so that some late events are too late and dead-lettered, and lets the 24 h, 7 d and
//! 28 d windows slide by the hour and the 1 h window by 15 min: the engine emits every window
//! end of the backfill, and with 1-minute slides a debug build needs minutes for 30 h of them.
//! A private Prometheus (started by `scripts/servers.sh` with its own run directory, port and
//! TSDB) scrapes it every second together with a second target where nothing listens (an
//! instance that is down, so `CxpulseDown` is pending), and loads the recording rules and the
//! alert rules. Template variables are resolved from Prometheus like Grafana does
//! (`label_values(…)`) and substituted with real values: once with the dashboards' defaults,
//! once with other real values.
//!
//! Runs when `CXPULSE_TEST_PROMETHEUS_URL`, `CXPULSE_TEST_KAFKA` and
//! `CXPULSE_TEST_CLICKHOUSE_URL` are set (`scripts/servers.sh env`); prints `SKIPPED` otherwise.

mod common;

use common::{
    cxpulse_bin, env_or_skip, free_port, get, temp_dir, wait_for, ChildGuard, PrivatePrometheus,
};
use cxpulse::test_stack::StackJob;
use cxpulse_stack_tests::{
    dashboards, interpolate, parse_label_values, queries, repo_root, variables, Source,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::process::Stdio;
use std::time::Duration;

/// Alerting rules this test provokes (their expressions must return data). The others
/// return data only during an incident; each is unit-tested firing and silent by
/// `promtool test rules` (crates/cxpulse-metrics/tests/alert_rules.rs).
const ALERTS_PROVOKED: &[&str] = &["CxNpsDrop", "CxpulseDown"];

/// Substituted for Grafana's built-in interval variables (scrape interval here: 1 s).
const BUILTINS: &[(&str, &str)] = &[
    ("__rate_interval", "30s"),
    ("__interval", "5s"),
    ("__range", "5m"),
];

/// Second-pass values: another real value than the default (for `window`, the 7-day window:
/// it holds all 30 h of data, so every channel × segment has answers).
const SECOND_PASS: &[(&str, &str)] = &[("window", "7d")];

const BACKFILL_HOURS: i64 = 30;
/// The window kinds of the default configuration, with coarser slides (see above).
const WINDOWS: &str = r#"[{ name = "1h", length = "1h", slide = "15m" }, { name = "24h", length = "24h", slide = "1h" }, { name = "7d", length = "7d", slide = "1h" }, { name = "28d", length = "28d", slide = "1h" }]"#;
const DROP_HOURS: i64 = 8;

fn series_count(result: &[Value]) -> usize {
    result.len()
}

/// Resolves the variables of a dashboard in order: `label_values(selector, label)` against
/// Prometheus, with the earlier variables substituted. `pass` 0 keeps the saved defaults
/// (which must be real values); pass 1 takes another real value.
fn resolve_variables(
    prom: &PrivatePrometheus,
    board: &cxpulse_stack_tests::Dashboard,
    pass: usize,
    vars: &mut BTreeMap<String, String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for v in variables(board) {
        if v.kind != "query" {
            problems.push(format!(
                "{}: variable {} has type {}, which the test does not resolve",
                board.name, v.name, v.kind
            ));
            continue;
        }
        let Some((selector, label)) = parse_label_values(&v.query) else {
            problems.push(format!(
                "{}: variable {}: query {:?} is not label_values(selector, label)",
                board.name, v.name, v.query
            ));
            continue;
        };
        let selector = match interpolate(&selector, vars, false) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{}: variable {}: {e}", board.name, v.name));
                continue;
            }
        };
        let values: Vec<String> =
            match prom.api(&format!("label/{label}/values"), &[("match[]", &selector)]) {
                Ok(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                Ok(other) => {
                    problems.push(format!(
                        "{}: variable {}: unexpected answer {other}",
                        board.name, v.name
                    ));
                    continue;
                }
                Err(e) => {
                    problems.push(format!("{}: variable {}: {e}", board.name, v.name));
                    continue;
                }
            };
        if values.is_empty() {
            problems.push(format!(
                "{}: variable {}: {} has no values",
                board.name, v.name, v.query
            ));
            continue;
        }
        let chosen = if pass == 0 {
            let default = v.current.first().cloned().unwrap_or_default();
            if default == "$__all" {
                if !v.include_all {
                    problems.push(format!(
                        "{}: variable {} defaults to All without includeAll",
                        board.name, v.name
                    ));
                }
                match &v.all_value {
                    Some(a) => a.clone(),
                    None => values.join("|"),
                }
            } else if values.contains(&default) {
                default
            } else {
                problems.push(format!(
                    "{}: variable {} defaults to {default:?}, which is not among the real values {values:?}",
                    board.name, v.name
                ));
                continue;
            }
        } else {
            let preferred = SECOND_PASS
                .iter()
                .find(|(n, _)| *n == v.name)
                .map(|(_, val)| val.to_string())
                .filter(|val| values.contains(val));
            preferred.unwrap_or_else(|| {
                values
                    .iter()
                    .find(|x| x.as_str() != "all" && !v.current.contains(x))
                    .unwrap_or(&values[0])
                    .clone()
            })
        };
        println!(
            "  ${} = {chosen:?} (of {} values: {:?})",
            v.name,
            values.len(),
            values
        );
        vars.insert(v.name.clone(), chosen);
    }
    problems
}

#[test]
fn every_promql_expression_returns_data_from_a_running_job() {
    let test = "every_promql_expression_returns_data_from_a_running_job";
    if env_or_skip(test, "CXPULSE_TEST_PROMETHEUS_URL").is_none() {
        return;
    }
    let Some(kafka) = env_or_skip(test, "CXPULSE_TEST_KAFKA") else {
        return;
    };
    let Some(clickhouse) = env_or_skip(test, "CXPULSE_TEST_CLICKHOUSE_URL") else {
        return;
    };
    let dir = temp_dir("promql");
    let bin = cxpulse_bin();

    // 1. The traffic, then the job.
    let tag = dir
        .file_name()
        .map(|n| n.to_string_lossy().replace(['-', '.'], "_"))
        .unwrap_or_else(|| "promql".into());
    let job = StackJob::new(&kafka, &clickhouse, &tag)
        .with("CXPULSE_ENGINE__CORRECTION_HORIZON", "3m")
        .with("CXPULSE_ENGINE__WINDOWS", WINDOWS);
    let cxpulse = |args: &[&str]| {
        let mut c = job.command(&bin, args);
        c.current_dir(&dir).stdin(Stdio::null());
        c
    };
    let drop_from_minute = (BACKFILL_HOURS - DROP_HOURS) * 60;
    let backfill = cxpulse(&[
        "generate",
        "--partitions",
        "3",
        "--duration",
        &format!("{BACKFILL_HOURS}h"),
        "--rate",
        "3",
        "--seed",
        "7",
        "--malformed-share",
        "0.002",
        "--scenario",
        &format!("nps-drop:60:all:all:{drop_from_minute}"),
    ])
    .output()
    .expect("cxpulse generate");
    assert!(
        backfill.status.success(),
        "the backfill failed: {}{}",
        String::from_utf8_lossy(&backfill.stdout),
        String::from_utf8_lossy(&backfill.stderr)
    );
    let metrics_port = free_port();
    let down_port = free_port();
    let job_log = dir.join("job.log");
    let mut job = ChildGuard::spawn(
        "cxpulse run",
        cxpulse(&["run"])
            .env(
                "CXPULSE_METRICS__LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .stdout(File::create(dir.join("job.out")).unwrap())
            .stderr(File::create(&job_log).unwrap()),
    );
    // Live traffic (the drop goes on), while the job runs.
    let _live = ChildGuard::spawn(
        "cxpulse generate --realtime",
        cxpulse(&[
            "generate",
            "--partitions",
            "3",
            "--realtime",
            "--duration",
            "15m",
            "--rate",
            "3",
            "--seed",
            "8",
            "--malformed-share",
            "0.002",
            "--scenario",
            "nps-drop:60:all:all:0",
        ])
        .stdout(File::create(dir.join("live.out")).unwrap())
        .stderr(File::create(dir.join("live.log")).unwrap()),
    );

    // 2. Prometheus scraping it (and a down instance), with every rule file.
    let rules = repo_root().join("crates/cxpulse-metrics/rules/cxpulse-recording-rules.yml");
    let alerts = repo_root().join("prometheus/cxpulse-alerts.yml");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "# written by crates/cxpulse-stack-tests/tests/promql.rs\n\
             global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n  - {}\n\
             scrape_configs:\n  - job_name: cxpulse\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}', '127.0.0.1:{down_port}']\n",
            rules.display(),
            alerts.display()
        ),
    )
    .unwrap();
    let prom = PrivatePrometheus::start(&config, &dir);
    println!(
        "cxpulse run on :{metrics_port}, Prometheus on {}",
        prom.hostport
    );

    // 3. Wait for the backfill, the first scrapes and the recording rules.
    wait_for("the job's /healthz", Duration::from_secs(60), || {
        job.assert_running(&job_log);
        cxpulse_metrics::http_get(
            common::addr(&format!("127.0.0.1:{metrics_port}")),
            "/healthz",
            Duration::from_secs(2),
        )
        .ok()
        .filter(|(s, _)| *s == 200)
    });
    wait_for(
        "the backfill and the recording rules over the job's KPIs",
        Duration::from_secs(600),
        || {
            job.assert_running(&job_log);
            prom.query(r#"cxpulse:window_nps_n{window="24h",channel="all",segment="all"}"#)
                .ok()
                .filter(|r| !r.is_empty())
        },
    );
    // Enough samples for the rate windows, and the pending alerts.
    wait_for(
        "35 s of scrapes of the live job",
        Duration::from_secs(120),
        || {
            job.assert_running(&job_log);
            prom.query(r#"count_over_time(cxpulse_build_info{job="cxpulse"}[1m]) >= 35"#)
                .ok()
                .filter(|r| !r.is_empty())
        },
    );
    for alert in ALERTS_PROVOKED {
        wait_for(
            &format!("ALERTS{{alertname=\"{alert}\"}}"),
            Duration::from_secs(60),
            || {
                prom.query(&format!("ALERTS{{alertname=\"{alert}\"}}"))
                    .ok()
                    .filter(|r| !r.is_empty())
            },
        );
    }
    let (_, metrics) = get(&format!("127.0.0.1:{metrics_port}"), "/metrics");
    assert!(
        metrics.contains(r#"cxpulse_records_dead_lettered_total{reason="too_late"}"#),
        "the job dead-lettered no too-late event (the dead-letter panels need some)"
    );

    let mut failures: Vec<String> = Vec::new();
    let mut checked = 0usize;
    let mut silent = 0usize;

    // 4. Every dashboard query, with the variables' defaults and with other real values.
    for board in dashboards() {
        let qs = queries(&board).unwrap_or_else(|e| panic!("{e}"));
        for pass in 0..2 {
            println!("{} ({}), pass {}:", board.name, board.title(), pass + 1);
            let mut vars: BTreeMap<String, String> = BUILTINS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            failures.extend(resolve_variables(&prom, &board, pass, &mut vars));
            for q in qs.iter().filter(|q| q.source == Source::Prometheus) {
                let expr = match interpolate(&q.text, &vars, false) {
                    Ok(e) => e,
                    Err(e) => {
                        failures.push(format!("{}: {e}", q.name()));
                        continue;
                    }
                };
                checked += 1;
                match prom.query(&expr) {
                    Err(e) => failures.push(format!(
                        "{}: {expr}\n    Prometheus refused it: {e}",
                        q.name()
                    )),
                    Ok(r) if r.is_empty() => {
                        failures.push(format!("{}: {expr}\n    returned no data", q.name()))
                    }
                    Ok(r) => println!("  {:<60} {} series", q.name(), series_count(&r)),
                }
            }
        }
    }

    // 5. Every rule: loaded, healthy; recording rules return data, provoked alerts too.
    let count = |file: &std::path::Path, key: &str| {
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .filter(|l| l.trim_start().starts_with(key))
            .count()
    };
    let want_records = count(&rules, "- record:");
    let want_alerts = count(&alerts, "- alert:");
    let groups = prom.api("rules", &[]).expect("GET /api/v1/rules");
    let (mut records, mut alert_rules) = (0, 0);
    println!("rules:");
    for g in groups["groups"].as_array().into_iter().flatten() {
        for r in g["rules"].as_array().into_iter().flatten() {
            let name = r["name"].as_str().unwrap_or("?");
            let query = r["query"].as_str().unwrap_or("");
            if r["health"] != "ok" || !r["lastError"].as_str().unwrap_or("").is_empty() {
                failures.push(format!(
                    "rule {name}: health {} error {}",
                    r["health"], r["lastError"]
                ));
            }
            match r["type"].as_str() {
                Some("recording") => {
                    records += 1;
                    checked += 1;
                    match prom.query(name) {
                        Ok(v) if !v.is_empty() => println!("  {name:<60} {} series", v.len()),
                        Ok(_) => failures
                            .push(format!("recording rule {name} ({query}) recorded no data")),
                        Err(e) => failures.push(format!("recording rule {name}: {e}")),
                    }
                }
                Some("alerting") => {
                    alert_rules += 1;
                    checked += 1;
                    let result = prom.query(query);
                    let provoked = ALERTS_PROVOKED.contains(&name);
                    match result {
                        Err(e) => {
                            failures.push(format!("alert {name}: Prometheus refused {query}: {e}"))
                        }
                        Ok(v) if v.is_empty() && provoked => failures.push(format!(
                            "alert {name} was provoked but its expression returns nothing"
                        )),
                        Ok(v) if v.is_empty() => {
                            silent += 1;
                            println!("  {name:<60} silent (fires only during an incident; promtool unit tests cover it)")
                        }
                        Ok(v) => println!(
                            "  {name:<60} {} series{}",
                            v.len(),
                            if provoked { " (provoked)" } else { "" }
                        ),
                    }
                }
                other => failures.push(format!("rule {name}: unknown type {other:?}")),
            }
        }
    }
    assert_eq!(
        records, want_records,
        "Prometheus loaded {records} recording rules, the file has {want_records}"
    );
    assert_eq!(
        alert_rules, want_alerts,
        "Prometheus loaded {alert_rules} alerting rules, the file has {want_alerts}"
    );

    // The NPS drop is detected where it happened: every channel and segment together.
    let nps_drop = prom
        .query(r#"ALERTS{alertname="CxNpsDrop", channel="all", segment="all"}"#)
        .unwrap();
    if nps_drop.is_empty() {
        failures.push("CxNpsDrop is not pending for channel=all, segment=all".into());
    }

    job.assert_running(&job_log);
    println!(
        "{checked} expressions checked, {silent} incident-only alerts silent, {} failures",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    drop(prom);
    drop(job);
    let _ = std::fs::remove_dir_all(&dir);
}
