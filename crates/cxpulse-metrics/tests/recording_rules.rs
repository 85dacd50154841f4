//! The recording rules (rules/cxpulse-recording-rules.yml) applied to the series of two
//! instances give the KPIs that one instance owning every partition derives itself:
//! `promtool check rules` + `promtool test rules` (skipped when promtool is not installed).

mod common;

use common::three_exporters;
use cxpulse_metrics::{additive_family_names, flatten, KpiExporter, LE_BOUNDS_SECONDS};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn promtool() -> Option<String> {
    if let Ok(p) = std::env::var("CXPULSE_PROMTOOL") {
        if Path::new(&p).is_file() {
            return Some(p);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
}

fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/cxpulse-recording-rules.yml")
}

const KEYS: [(&str, &str, &str); 8] = [
    ("1h", "all", "all"),
    ("1h", "phone", "all"),
    ("1h", "web", "all"),
    ("1h", "all", "enterprise"),
    ("24h", "all", "all"),
    ("24h", "chat", "all"),
    ("24h", "store", "all"),
    ("24h", "all", "smb"),
];

fn selector(window: &str, channel: &str, segment: &str) -> String {
    format!(r#"{{window="{window}",channel="{channel}",segment="{segment}"}}"#)
}

fn labels(window: &str, channel: &str, segment: &str) -> String {
    format!(r#"{{channel="{channel}",segment="{segment}",window="{window}"}}"#)
}

/// The input series of one instance: its additive samples of the chosen keys.
fn input_series(x: &KpiExporter, instance: &str, out: &mut String) -> usize {
    let additive: BTreeSet<&str> = additive_family_names().collect();
    let mut n = 0;
    for (sample, value) in flatten(&x.families()) {
        let (name, rest) = sample.split_once('{').unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
            .unwrap_or(name);
        let wanted = KEYS.iter().any(|(w, c, s)| {
            rest.contains(&format!(r#"window="{w}""#))
                && rest.contains(&format!(r#"channel="{c}""#))
                && rest.contains(&format!(r#"segment="{s}""#))
        });
        if !wanted || !(additive.contains(family) || name == "cxpulse_window_end_timestamp_seconds")
        {
            continue;
        }
        let _ = writeln!(
            out,
            "      - series: '{name}{{instance=\"{instance}\",{rest}'\n        values: '{value}+0x3'"
        );
        n += 1;
    }
    n
}

fn check(out: &mut String, expr: &str, window: &str, channel: &str, segment: &str) {
    let _ = writeln!(
        out,
        "      - expr: '{expr}'\n        eval_time: 2m\n        exp_samples:\n          - labels: '{}'\n            value: 1",
        labels(window, channel, segment)
    );
}

fn close(out: &mut String, metric: &str, expected: f64, key: (&str, &str, &str)) {
    let tol = 1e-9 * expected.abs().max(1.0);
    let expr = format!(
        "abs({metric}{} - {expected:?}) <= bool {tol:?}",
        selector(key.0, key.1, key.2)
    );
    check(out, &expr, key.0, key.1, key.2);
}

#[test]
fn recording_rules_over_two_instances_equal_one_instance() {
    let Some(promtool) = promtool() else {
        eprintln!(
            "SKIPPED promtool check/test rules: `promtool` is not on PATH (Debian package `prometheus`; `scripts/servers.sh install` installs it)"
        );
        return;
    };
    let rules = rules_file();
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let [a, b, all] = three_exporters(5, 10.0, 20);
    let mut test = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n",
        rules.display()
    );
    assert!(input_series(&a, "a", &mut test) > 100);
    assert!(input_series(&b, "b", &mut test) > 100);
    test.push_str("    promql_expr_test:\n");
    let mut checks = 0;
    for key @ (w, c, s) in KEYS {
        let p = all
            .parts(w, c, s)
            .unwrap_or_else(|| panic!("{key:?} not exported"));
        let d = &p.derived;
        close(&mut test, "cxpulse:window_nps_n", p.nps.n() as f64, key);
        close(
            &mut test,
            "cxpulse:window_contacts:sum",
            p.contacts as f64,
            key,
        );
        close(
            &mut test,
            "cxpulse:window_first_response_seconds_count:sum",
            p.first_response.count as f64,
            key,
        );
        close(
            &mut test,
            "cxpulse:window_ces_points:sum",
            p.ces.sum as f64,
            key,
        );
        let derived = [
            ("cxpulse:window_nps_score", d.nps_score),
            ("cxpulse:window_nps_margin_of_error", d.nps_margin_of_error),
            ("cxpulse:window_csat_ratio", d.csat_ratio),
            ("cxpulse:window_csat_wilson_low_ratio", d.csat_wilson_low),
            ("cxpulse:window_csat_wilson_high_ratio", d.csat_wilson_high),
            ("cxpulse:window_ces_mean_score", d.ces_mean),
            ("cxpulse:window_ces_easy_ratio", d.ces_easy_ratio),
            (
                "cxpulse:window_first_response_within_target_ratio",
                d.first_response_within_target_ratio,
            ),
            (
                "cxpulse:window_resolution_within_target_ratio",
                d.resolution_within_target_ratio,
            ),
            ("cxpulse:window_closed_loop_ratio", d.closed_loop_ratio),
        ];
        for (metric, value) in derived {
            if let Some(v) = value {
                close(&mut test, metric, v, key);
                checks += 1;
            }
        }
        // Distinct customers: estimates of disjoint sets add up within the HLL error.
        let e = p.customers as f64;
        check(
            &mut test,
            &format!(
                "abs(cxpulse:window_customers:sum{} - {e:?}) <= bool {:?}",
                selector(w, c, s),
                0.03 * e + 2.0
            ),
            w,
            c,
            s,
        );
        // p90 interpolated from the summed buckets lies in, or next to, the bucket of the
        // engine's p90 (ranks differ slightly: q·n there, floor(q·(n−1)) in the sketch).
        if let Some(p90) = d.first_response_quantiles[1] {
            let i = LE_BOUNDS_SECONDS
                .iter()
                .position(|le| *le >= p90)
                .unwrap_or(LE_BOUNDS_SECONDS.len());
            let lower = if i >= 2 {
                LE_BOUNDS_SECONDS[i - 2]
            } else {
                0.0
            };
            if let Some(upper) = LE_BOUNDS_SECONDS.get(i + 1) {
                let m = format!(
                    "cxpulse:window_first_response_p90_seconds{}",
                    selector(w, c, s)
                );
                check(
                    &mut test,
                    &format!("({m} >= bool {lower:?}) * ({m} <= bool {upper:?})"),
                    w,
                    c,
                    s,
                );
                checks += 1;
            }
        }
    }
    assert!(checks > 40, "only {checks} derived checks");
    let dir = tempfile_dir();
    let test_file = dir.join("cxpulse-rules-test.yml");
    std::fs::write(&test_file, &test).unwrap();
    let out = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(&test_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules ({}):\n{}{}",
        test_file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory under the system temp dir (kept on failure for inspection).
fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cxpulse-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
