//! The alerting rules (`prometheus/cxpulse-alerts.yml`) and the Alertmanager routing
//! (`prometheus/alertmanager.yml`), checked with the real `promtool` and `amtool`:
//! every alert has a unit test where it fires and one where it must stay silent
//! (`prometheus/cxpulse-alerts.test.yml`), and each kind of alert reaches the right receiver.
//! Skipped (with a message) only when the Debian `prometheus`/`prometheus-alertmanager`
//! tools are not installed; `scripts/test.sh` installs them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tool(env: &str, name: &str) -> Option<String> {
    if let Ok(p) = std::env::var(env) {
        if Path::new(&p).is_file() {
            return Some(p);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
}

fn prometheus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prometheus")
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(prometheus_dir())
        .output()
        .expect("the tool runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let Some(promtool) = tool("CXPULSE_PROMTOOL", "promtool") else {
        println!("SKIPPED alert_rules_pass_their_unit_tests: `promtool` is not on PATH");
        return;
    };
    let (ok, out) = run(&promtool, &["check", "rules", "cxpulse-alerts.yml"]);
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("10 rules found"), "{out}");
    let (ok, out) = run(&promtool, &["test", "rules", "cxpulse-alerts.test.yml"]);
    assert!(ok, "promtool test rules:\n{out}");
}

#[test]
fn alertmanager_routes_by_severity() {
    let Some(amtool) = tool("CXPULSE_AMTOOL", "amtool") else {
        println!("SKIPPED alertmanager_routes_by_severity: `amtool` is not on PATH");
        return;
    };
    let (ok, out) = run(&amtool, &["check-config", "alertmanager.yml"]);
    assert!(ok, "amtool check-config:\n{out}");
    for (labels, receivers) in [
        (
            &["severity=critical", "team=cx", "alertname=CxNpsDrop"][..],
            "oncall-pager,cx-chat",
        ),
        (
            &["severity=critical", "team=data", "alertname=CxpulseDown"][..],
            "oncall-pager",
        ),
        (
            &[
                "severity=warning",
                "team=data",
                "alertname=CxpulseLagGrowing",
            ][..],
            "data-chat",
        ),
        (
            &[
                "severity=warning",
                "team=support",
                "alertname=CxFirstResponseSlow",
            ][..],
            "cx-chat",
        ),
    ] {
        let verify = format!("--verify.receivers={receivers}");
        let mut args = vec![
            "config",
            "routes",
            "test",
            "--config.file=alertmanager.yml",
            verify.as_str(),
        ];
        args.extend_from_slice(labels);
        let (ok, out) = run(&amtool, &args);
        assert!(ok, "{labels:?} must reach {receivers}:\n{out}");
    }
    // And the check can fail: a critical CX alert does not go to the data team's chat.
    let (ok, _) = run(
        &amtool,
        &[
            "config",
            "routes",
            "test",
            "--config.file=alertmanager.yml",
            "--verify.receivers=data-chat",
            "severity=critical",
            "team=cx",
        ],
    );
    assert!(!ok, "a wrong expected receiver must be detected");
}
