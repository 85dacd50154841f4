//! Shared by the server tests: skip messages, free ports, the `cxpulse` binary, child
//! processes that are always stopped, a private Prometheus started by `scripts/servers.sh`.
#![allow(dead_code)]

use cxpulse_stack_tests::{repo_root, url_encode};
use serde_json::Value;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The value of `var`, or `None` after printing why `test` is skipped.
pub fn env_or_skip(test: &str, var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            println!(
                "SKIPPED {test}: {var} is unset; run `scripts/servers.sh install && scripts/servers.sh start` \
                 and `eval \"$(scripts/servers.sh env)\"` to run it against real servers"
            );
            None
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("cxpulse-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Newest modification time of the files a `cxpulse` build depends on: every crate's
/// sources and manifest, the workspace manifest and lock file, the Avro schemas.
fn newest_source(root: &Path) -> Option<std::time::SystemTime> {
    fn walk(p: &Path, newest: &mut Option<std::time::SystemTime>) {
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if meta.is_dir() {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                walk(&e.path(), newest);
            }
        } else if let Ok(m) = meta.modified() {
            *newest = Some(newest.map_or(m, |n| n.max(m)));
        }
    }
    let mut newest = None;
    for f in ["Cargo.toml", "Cargo.lock", "schemas"] {
        walk(&root.join(f), &mut newest);
    }
    for c in std::fs::read_dir(root.join("crates")).ok()?.flatten() {
        if c.file_name() == "cxpulse-stack-tests" {
            continue; // not part of the binary
        }
        walk(&c.path().join("Cargo.toml"), &mut newest);
        walk(&c.path().join("src"), &mut newest);
    }
    newest
}

/// The `cxpulse` binary: `$CXPULSE_BIN`; else the one next to this test's build directory
/// when it is newer than every source it is built from (`cargo test --workspace` has just
/// built it); else built now with `cargo build -p cxpulse --bin cxpulse` (same target
/// directory and profile as this test). Building it here while a workspace build's binary is
/// fresh would compile a second copy of the dependencies (other feature set).
pub fn cxpulse_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CXPULSE_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "CXPULSE_BIN={} is not a file", p.display());
        return p;
    }
    // <target>/<profile>/deps/<test> → <target>/<profile>/cxpulse
    let profile_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(Path::to_path_buf));
    if let Some(built) = profile_dir.as_ref().map(|d| d.join("cxpulse")) {
        let built_at = std::fs::metadata(&built).and_then(|m| m.modified()).ok();
        if let (Some(b), Some(s)) = (built_at, newest_source(&repo_root())) {
            if b > s {
                println!("using {} (newer than every source)", built.display());
                return built;
            }
        }
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-p",
        "cxpulse",
        "--bin",
        "cxpulse",
        "--message-format=json-render-diagnostics",
    ])
    .current_dir(repo_root())
    .stderr(Stdio::inherit());
    if let Some(target) = profile_dir.as_ref().and_then(|d| d.parent()) {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("cargo runs");
    assert!(out.status.success(), "cargo build -p cxpulse failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "cxpulse")
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back()
        .expect("cargo reported the cxpulse executable")
}

/// A child process killed (and reaped) when dropped.
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard {
            child,
            name: name.to_string(),
        }
    }

    /// Panics (naming the log) if the process has exited.
    pub fn assert_running(&mut self, log: &Path) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                log.display(),
                tail.join("\n")
            );
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn addr(hostport: &str) -> SocketAddr {
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("bad address {hostport}"))
}

/// `http://host:port[/…]` → `host:port`.
pub fn host_port(url: &str) -> String {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http:// URL: {url}"));
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// GET `path` from `host:port`; (status, body).
pub fn get(hostport: &str, path: &str) -> (u16, String) {
    cxpulse_metrics::http_get(addr(hostport), path, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("GET http://{hostport}{path}: {e}"))
}

/// Polls `check` every 250 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A Prometheus of its own (port, TSDB, config), started and stopped by
/// `scripts/servers.sh` with a private run directory, so it shares nothing with the
/// servers other tests use.
pub struct PrivatePrometheus {
    pub hostport: String,
    run_dir: PathBuf,
    config: PathBuf,
    port: u16,
}

impl PrivatePrometheus {
    pub fn start(config: &Path, dir: &Path) -> PrivatePrometheus {
        let port = free_port();
        let run_dir = dir.join("servers");
        let p = PrivatePrometheus {
            hostport: format!("127.0.0.1:{port}"),
            run_dir,
            config: config.to_path_buf(),
            port,
        };
        let out = p.servers_sh(&["start", "prometheus"]);
        assert!(
            out.status.success(),
            "scripts/servers.sh start prometheus failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        p
    }

    fn servers_sh(&self, args: &[&str]) -> std::process::Output {
        Command::new(repo_root().join("scripts/servers.sh"))
            .args(args)
            .env("CXPULSE_SERVERS_DIR", &self.run_dir)
            .env("CXPULSE_PROMETHEUS_PORT", self.port.to_string())
            .env("CXPULSE_PROMETHEUS_CONFIG", &self.config)
            .output()
            .expect("scripts/servers.sh runs")
    }

    /// `GET /api/v1/<endpoint>?<params>`: the `data` of a successful answer, or the error.
    pub fn api(&self, endpoint: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", url_encode(v)))
            .collect();
        let path = format!("/api/v1/{endpoint}?{}", query.join("&"));
        let (status, body) = get(&self.hostport, &path);
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!(
                "HTTP {status}: {} {}",
                v["errorType"].as_str().unwrap_or(""),
                v["error"].as_str().unwrap_or(&body)
            ))
        }
    }

    /// An instant query at the current time: its result vector (or the error).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("query", &[("query", expr)])?;
        match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => {
                Ok(data["result"].as_array().cloned().unwrap_or_default())
            }
            Some("scalar") | Some("string") => Ok(vec![data["result"].clone()]),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }
}

impl Drop for PrivatePrometheus {
    fn drop(&mut self) {
        let out = self.servers_sh(&["stop", "prometheus"]);
        if !out.status.success() {
            eprintln!(
                "warning: stopping the private Prometheus failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
