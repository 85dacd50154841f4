//! `cxpulse demo` end to end: the built binary, a temporary output directory, a free port.

use cxpulse_core::{Channel, CxEvent};
use cxpulse_gen::{Generator, GeneratorConfig};
use cxpulse_metrics::http_get;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SEED: u64 = 11;

fn demo_command(dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cxpulse"));
    cmd.current_dir(dir);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CXPULSE_") {
            cmd.env_remove(&*k);
        }
    }
    cmd.env("RUST_LOG", "info")
        .arg("demo")
        .args([
            "--no-tui",
            "--metrics-addr",
            "127.0.0.1:0",
            "--seed",
            &SEED.to_string(),
        ])
        .arg("--output-dir")
        .arg(dir.join("out"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Forwards the child's stderr lines to a channel (and keeps them for failure messages).
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a stderr line containing `needle`; returns it.
fn wait_for_line(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    needle: &str,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(_) => panic!(
                "no line with {needle:?} within {timeout:?}; stderr so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

fn metrics_addr(line: &str) -> SocketAddr {
    let start = line.find("http://").expect("a URL in the line") + "http://".len();
    let rest = &line[start..];
    let end = rest.find('/').unwrap();
    rest[..end].parse().unwrap()
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cxpulse demo did not stop within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{}: {e}: {l}", path.display(), i + 1))
        })
        .collect()
}

fn promtool() -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
}

/// Every comment text the generator can produce (the pools are fixed).
fn generator_comments() -> BTreeMap<String, String> {
    let cfg = GeneratorConfig {
        seed: SEED,
        ..GeneratorConfig::default()
    };
    let mut out = BTreeMap::new();
    for d in Generator::new(cfg).unwrap().take(150_000) {
        if let CxEvent::Survey(r) = d.event {
            if let (Some(c), Some(l)) = (r.comment, r.language) {
                out.insert(c, l);
            }
        }
    }
    out
}

#[test]
fn demo_writes_consistent_rows_round_trips_comments_and_serves_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = demo_command(
        dir.path(),
        &["--duration", "5s", "--backfill", "30m", "--rate", "20"],
    )
    .spawn()
    .unwrap();
    let rx = stderr_lines(&mut child);
    let mut seen = Vec::new();
    let line = wait_for_line(
        &rx,
        &mut seen,
        "serving metrics on http://",
        Duration::from_secs(60),
    );
    let addr = metrics_addr(&line);
    assert_ne!(addr.port(), 0);
    // /healthz answers at once; /metrics has KPI series once the backfill is done.
    let timeout = Duration::from_secs(10);
    assert_eq!(
        http_get(addr, "/healthz", timeout).unwrap(),
        (200, "ok\n".to_string())
    );
    wait_for_line(&rx, &mut seen, "backfill done", Duration::from_secs(120));
    let (status, metrics) = http_get(addr, "/metrics", timeout).unwrap();
    assert_eq!(status, 200);
    for needle in [
        r#"cxpulse_window_nps_responses{channel="all",group="promoter",segment="all",window="1h"}"#,
        r#"cxpulse_window_first_response_seconds_bucket{channel="all",segment="all",window="24h",le="3600"}"#,
        r#"cxpulse_window_nps_score{channel="phone",segment="all",window="1h"}"#,
        "cxpulse_build_info{version=",
        "cxpulse_events_accepted_total",
        r#"cxpulse_records_consumed_total{topic="cx.surveys"}"#,
        r#"cxpulse_sink_rows_written_total{sink="jsonl",table="kpi_windows"}"#,
        "cxpulse_watermark_delay_seconds",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from /metrics");
    }
    let status = wait_exit(&mut child, Duration::from_secs(120));
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    seen.extend(rx.try_iter());
    assert!(
        status.success(),
        "exit {status}; stderr:\n{}",
        seen.join("\n")
    );
    assert!(stdout.contains("cxpulse demo stopped after"), "{stdout}");
    assert!(stdout.contains("survey responses"), "{stdout}");

    // The KPI rows.
    let out = dir.path().join("out");
    let rows = read_jsonl(&out.join("kpi_windows.jsonl"));
    assert!(rows.len() > 50, "{} rows", rows.len());
    let windows: BTreeSet<&str> = rows.iter().map(|r| r["window"].as_str().unwrap()).collect();
    assert!(
        windows.contains("1h") && windows.contains("24h"),
        "{windows:?}"
    );
    // Latest version of every (window, end, channel, segment).
    let mut latest: BTreeMap<(String, i64, String, String), &Value> = BTreeMap::new();
    for r in &rows {
        let key = (
            r["window"].as_str().unwrap().to_string(),
            r["end"].as_i64().unwrap(),
            r["channel"].as_str().unwrap().to_string(),
            r["segment"].as_str().unwrap().to_string(),
        );
        let newer = latest
            .get(&key)
            .is_none_or(|old| r["version"].as_u64() > old["version"].as_u64());
        if newer {
            latest.insert(key, r);
        }
    }
    // The first advance emits one end per window; every later end is emitted whole. A
    // correction can also emit an end before the first one, but only for the group keys it
    // touched, so sums are compared from the first end on.
    let first_version = rows
        .iter()
        .filter_map(|r| r["version"].as_u64())
        .min()
        .unwrap();
    let mut first_end: BTreeMap<&str, i64> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r["version"].as_u64() == Some(first_version))
    {
        let e = first_end
            .entry(r["window"].as_str().unwrap())
            .or_insert(i64::MAX);
        *e = (*e).min(r["end"].as_i64().unwrap());
    }
    let channels: BTreeSet<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
    let mut checked = 0;
    for ((window, end, channel, segment), all) in &latest {
        if channel != "all"
            || segment != "all"
            || first_end.get(window.as_str()).is_none_or(|f| end < f)
        {
            continue;
        }
        let sum = |field: &dyn Fn(&Value) -> u64, by_channel: bool| -> u64 {
            latest
                .iter()
                .filter(|((w, e, c, s), _)| {
                    w == window
                        && e == end
                        && if by_channel {
                            channels.contains(c.as_str()) && s == "all"
                        } else {
                            c == "all" && s != "all"
                        }
                })
                .map(|(_, r)| field(r))
                .sum()
        };
        let nps_n = |r: &Value| r["kpis"]["nps"]["n"].as_u64().unwrap();
        let contacts = |r: &Value| r["kpis"]["contacts"].as_u64().unwrap();
        let touchpoints = |r: &Value| r["kpis"]["touchpoints"].as_u64().unwrap();
        let frt_n = |r: &Value| r["kpis"]["first_response"]["n"].as_u64().unwrap();
        for by_channel in [true, false] {
            assert_eq!(
                nps_n(all),
                sum(&nps_n, by_channel),
                "{window} {end} NPS n ({by_channel})"
            );
            assert_eq!(
                contacts(all),
                sum(&contacts, by_channel),
                "{window} {end} contacts"
            );
            assert_eq!(
                touchpoints(all),
                sum(&touchpoints, by_channel),
                "{window} {end} touchpoints"
            );
            assert_eq!(
                frt_n(all),
                sum(&frt_n, by_channel),
                "{window} {end} first responses"
            );
        }
        assert!(nps_n(all) > 0, "{window} {end}: no NPS answers");
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} (all, all) rows checked");
    // KPI values are well-formed.
    for r in rows
        .iter()
        .filter(|r| r["kpis"]["nps"]["n"].as_u64() > Some(0))
    {
        let score = r["kpis"]["nps"]["score"].as_f64().unwrap();
        assert!((-100.0..=100.0).contains(&score));
        assert!(r["start"].as_i64() < r["end"].as_i64());
    }

    // Survey responses: every comment round-trips byte for byte, in fa, th and ro too.
    let known = generator_comments();
    let raw = std::fs::read_to_string(out.join("survey_responses.jsonl")).unwrap();
    let responses = read_jsonl(&out.join("survey_responses.jsonl"));
    assert!(responses.len() > 1_000, "{}", responses.len());
    let mut languages = BTreeSet::new();
    for r in &responses {
        assert!(
            matches!(r["metric"].as_str(), Some("NPS" | "CSAT" | "CES")),
            "{r}"
        );
        if let Some(comment) = r["comment"].as_str() {
            let lang = r["language"].as_str().unwrap();
            assert_eq!(
                known.get(comment).map(String::as_str),
                Some(lang),
                "comment {comment:?} changed"
            );
            assert!(
                raw.contains(comment),
                "comment {comment:?} is not stored as raw UTF-8"
            );
            languages.insert(lang.to_string());
        }
    }
    for lang in ["fa", "th", "ro", "en"] {
        assert!(
            languages.contains(lang),
            "no {lang} comment in {languages:?}"
        );
    }
    // Persian and Thai text as written, not \u escapes.
    assert!(!raw.contains("\\u06"), "Persian text is escaped");
    assert!(raw.contains("خدمات عالی بود") || raw.contains("از پشتیبانی بسیار راضی هستم"));

    match promtool() {
        None => eprintln!("SKIPPED promtool check of the demo's /metrics: `promtool` is not on PATH (Debian package `prometheus`; `scripts/servers.sh install`)"),
        Some(promtool) => {
            let mut child = Command::new(promtool)
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[cfg(unix)]
#[test]
fn demo_stops_cleanly_on_ctrl_c_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = demo_command(dir.path(), &["--backfill", "10m", "--rate", "10"])
        .spawn()
        .unwrap();
    let rx = stderr_lines(&mut child);
    let mut seen = Vec::new();
    wait_for_line(&rx, &mut seen, "backfill done", Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(1500));
    let kill = match Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
    {
        Ok(status) => status,
        Err(e) => {
            let _ = child.kill();
            eprintln!("SKIPPED the Ctrl-C test: cannot run `kill` ({e})");
            return;
        }
    };
    assert!(kill.success());
    let status = wait_exit(&mut child, Duration::from_secs(60));
    seen.extend(rx.try_iter());
    assert_eq!(status.code(), Some(0), "stderr:\n{}", seen.join("\n"));
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(stdout.contains("cxpulse demo stopped after"), "{stdout}");
    assert!(stdout.contains("KPI rows"), "{stdout}");
    assert!(
        seen.iter().any(|l| l.contains("signal received")),
        "{}",
        seen.join("\n")
    );
}

#[test]
fn demo_refuses_a_bad_flag_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = demo_command(
        dir.path(),
        &["--duration", "1s", "--scenario", "nps-drop:30:fax:all:0"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("generator.scenario:") && stderr.contains("(set by --scenario)"),
        "{stderr}"
    );
    let out = demo_command(dir.path(), &["--duration", "5 seconds"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--duration: \"5 seconds\" is not a duration"));
}
