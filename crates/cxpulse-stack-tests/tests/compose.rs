//! The full stack: `docker-compose.yml`, the `Dockerfile` and what they mount.
//!
//! * `docker-compose config` (Debian's docker-compose, installed by `scripts/servers.sh
//!   install compose`; no Docker daemon needed) accepts the file and resolves it;
//! * the services are the ones the README promises, Kafka in KRaft mode from the official
//!   image, Grafana with the ClickHouse plugin, `cxpulse run` / `migrate` / `generate`;
//! * every file or directory it mounts and every build context exists in the repository
//!   (and the check finds a missing one);
//! * the Prometheus configuration it mounts loads the rule files it mounts
//!   (`promtool check config`, container paths mapped back to the repository);
//! * the cxpulse configuration it mounts passes `cxpulse config check`;
//! * the Grafana provisioning matches the mounts, the plugin and the dashboards' datasources;
//! * the Dockerfile is multi-stage: a Rust build stage, a Debian slim runtime with the binary.

mod common;

use common::cxpulse_bin;
use cxpulse_stack_tests::{
    dashboards, queries, repo_root, tool, Source, CLICKHOUSE_TYPE, CLICKHOUSE_UID, PROMETHEUS_UID,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SERVICES: &[&str] = &[
    "alertmanager",
    "clickhouse",
    "cxpulse",
    "cxpulse-generate",
    "cxpulse-migrate",
    "grafana",
    "kafka",
    "prometheus",
];

fn compose_tool(test: &str) -> Option<PathBuf> {
    let found = tool("CXPULSE_DOCKER_COMPOSE", "docker-compose");
    if found.is_none() {
        println!(
            "SKIPPED {test}: docker-compose is not installed; run `scripts/servers.sh install compose` \
             and `eval \"$(scripts/servers.sh env)\"`"
        );
    }
    found
}

/// `docker-compose -f FILE --project-directory REPO config`, as JSON.
fn compose_config(compose: &Path, file: &Path) -> Result<Value, String> {
    let out = Command::new(compose)
        .arg("-f")
        .arg(file)
        .arg("--project-directory")
        .arg(repo_root())
        .arg("config")
        .env_remove("CLICKHOUSE_PASSWORD")
        .env_remove("GRAFANA_ADMIN_PASSWORD")
        .env_remove("COMPOSE_FILE")
        .env_remove("COMPOSE_PROJECT_NAME")
        .current_dir(repo_root())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", compose.display()))?;
    if !out.status.success() {
        return Err(format!(
            "docker-compose config failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    yaml_to_json(&out.stdout)
}

/// YAML → JSON with python3's yaml module (a dependency of Debian's docker-compose).
fn yaml_to_json(yaml: &[u8]) -> Result<Value, String> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("python3: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml)
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "yaml → json failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// (host source, container target) of every bind mount of a service.
fn bind_mounts(service: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in service["volumes"].as_array().into_iter().flatten() {
        match v {
            Value::String(s) => {
                let mut parts = s.splitn(3, ':');
                let (src, dst) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                if src.starts_with('/') || src.starts_with('.') {
                    out.push((src.to_string(), dst.to_string()));
                }
            }
            Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("bind") => {
                out.push((
                    o["source"].as_str().unwrap_or("").to_string(),
                    o["target"].as_str().unwrap_or("").to_string(),
                ))
            }
            _ => {}
        }
    }
    out
}

/// Problems with what the resolved configuration refers to on the host: bind-mount sources
/// and build contexts (with their Dockerfile) must exist inside the repository.
fn host_path_problems(config: &Value) -> Vec<String> {
    let root = repo_root();
    let mut problems = Vec::new();
    let inside = |p: &Path| {
        p.canonicalize()
            .map(|c| c.starts_with(&root))
            .unwrap_or(false)
    };
    for (name, s) in config["services"].as_object().into_iter().flatten() {
        for (src, dst) in bind_mounts(s) {
            let p = root.join(&src);
            if !p.exists() {
                problems.push(format!(
                    "{name}: mounts {src} at {dst}, which does not exist"
                ));
            } else if !inside(&p) {
                problems.push(format!("{name}: mounts {src}, outside the repository"));
            }
        }
        if let Some(build) = s.get("build") {
            let ctx = build
                .get("context")
                .and_then(Value::as_str)
                .or(build.as_str())
                .unwrap_or("");
            let dockerfile = build
                .get("dockerfile")
                .and_then(Value::as_str)
                .unwrap_or("Dockerfile");
            let ctx = root.join(ctx);
            if !ctx.is_dir() || !inside(&ctx) {
                problems.push(format!(
                    "{name}: build context {} is not a directory of the repository",
                    ctx.display()
                ));
            } else if !ctx.join(dockerfile).is_file() {
                problems.push(format!(
                    "{name}: no {dockerfile} in the build context {}",
                    ctx.display()
                ));
            }
        }
    }
    problems
}

fn env_of(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn command_of(service: &Value) -> Vec<String> {
    match &service["command"] {
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// Lines `key: value` (first occurrence per key, any indentation) of a simple YAML file.
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches("- ");
            let v = l.strip_prefix(key)?.strip_prefix(':')?;
            let v = v
                .split(" #")
                .next()
                .unwrap_or(v)
                .trim()
                .trim_matches('"')
                .trim_matches('\'');
            Some(v.to_string())
        })
        .collect()
}

#[test]
fn compose_file_is_valid_and_everything_it_mounts_exists() {
    let test = "compose_file_is_valid_and_everything_it_mounts_exists";
    let Some(compose) = compose_tool(test) else {
        return;
    };
    let root = repo_root();
    let config = compose_config(&compose, &root.join("docker-compose.yml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let services = config["services"].as_object().expect("services");
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(names, SERVICES, "the stack's services");
    let svc = |n: &str| &services[n];

    // What runs.
    let kafka = svc("kafka");
    assert!(
        kafka["image"]
            .as_str()
            .unwrap()
            .starts_with("apache/kafka:"),
        "official Kafka image"
    );
    let kenv = env_of(kafka);
    assert!(
        kenv.get("KAFKA_PROCESS_ROLES")
            .is_some_and(|r| r.contains("broker") && r.contains("controller")),
        "Kafka in KRaft mode (broker and controller, no ZooKeeper): {kenv:?}"
    );
    assert!(!kenv.keys().any(|k| k.contains("ZOOKEEPER")));
    assert_eq!(
        command_of(svc("cxpulse")),
        ["run", "--config", "/etc/cxpulse/cxpulse.toml"]
    );
    assert_eq!(command_of(svc("cxpulse-migrate"))[0], "migrate");
    assert_eq!(command_of(svc("cxpulse-generate"))[0], "generate");
    let genv = env_of(svc("grafana"));
    assert!(
        genv.get("GF_INSTALL_PLUGINS")
            .is_some_and(|p| p.contains(CLICKHOUSE_TYPE)),
        "Grafana installs the official ClickHouse plugin: {genv:?}"
    );
    assert_eq!(
        svc("cxpulse")["depends_on"]["cxpulse-migrate"]["condition"],
        "service_completed_successfully",
        "the job starts after the tables exist"
    );
    for n in ["cxpulse", "cxpulse-migrate", "cxpulse-generate"] {
        assert!(
            svc(n).get("build").is_some(),
            "{n} is built from the Dockerfile"
        );
    }

    // Everything it refers to on the host exists in the repository.
    let problems = host_path_problems(&config);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let mut mounts = 0;
    for s in services.values() {
        mounts += bind_mounts(s).len();
    }
    println!(
        "{} services, {mounts} bind mounts, every one exists",
        services.len()
    );

    // Prometheus loads the rule files the compose file mounts.
    let prom = svc("prometheus");
    let prom_mounts: BTreeMap<String, String> =
        bind_mounts(prom).into_iter().map(|(s, t)| (t, s)).collect();
    let cfg_src = prom_mounts
        .get("/etc/prometheus/prometheus.yml")
        .expect("prometheus.yml is mounted");
    let cfg_text = std::fs::read_to_string(root.join(cfg_src)).unwrap();
    let mut host_cfg = cfg_text.clone();
    let rule_files: Vec<String> = cfg_text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("- /etc/prometheus/rules/"))
        .map(|l| l.trim_start_matches("- ").to_string())
        .collect();
    assert!(
        rule_files.len() >= 2,
        "recording and alert rules: {rule_files:?}"
    );
    for rf in &rule_files {
        let src = prom_mounts.get(rf).unwrap_or_else(|| {
            panic!("{cfg_src} loads {rf}, which the compose file does not mount")
        });
        host_cfg = host_cfg.replace(
            rf,
            &root.join(src).canonicalize().unwrap().display().to_string(),
        );
    }
    match tool("CXPULSE_PROMTOOL", "promtool") {
        None => println!(
            "SKIPPED promtool check config: promtool is not installed (scripts/servers.sh install)"
        ),
        Some(promtool) => {
            let dir = common::temp_dir("compose-prom");
            let file = dir.join("prometheus.yml");
            std::fs::write(&file, host_cfg).unwrap();
            let out = Command::new(promtool)
                .args(["check", "config"])
                .arg(&file)
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "promtool check config:\n{text}");
            assert!(
                text.contains(&format!("{} rule files found", rule_files.len())),
                "{text}"
            );
            println!(
                "promtool check config: {}",
                text.trim().replace('\n', " | ")
            );
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    // The scrape target is the job's metrics port.
    let targets = yaml_values(&cfg_text, "targets");
    assert!(
        targets.iter().any(|t| t.contains("cxpulse:9898")),
        "Prometheus scrapes cxpulse:9898: {targets:?}"
    );
    let cx_cfg_src = bind_mounts(svc("cxpulse"))
        .into_iter()
        .find(|(_, t)| t == "/etc/cxpulse/cxpulse.toml")
        .map(|(s, _)| root.join(s))
        .expect("the cxpulse configuration is mounted");
    let cx_cfg = std::fs::read_to_string(&cx_cfg_src).unwrap();
    assert!(
        cx_cfg.contains("listen = \"0.0.0.0:9898\""),
        "the job serves /metrics to the network"
    );

    // The cxpulse configuration passes the binary's own check (with the compose environment).
    let bin = cxpulse_bin();
    let mut check = Command::new(&bin);
    check
        .args(["config", "check", "--config"])
        .arg(&cx_cfg_src)
        .env_remove("CXPULSE_CONFIG");
    for (k, v) in env_of(svc("cxpulse")) {
        if k.starts_with("CXPULSE_") {
            check.env(k, v);
        }
    }
    let out = check.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "cxpulse config check {}:\n{text}",
        cx_cfg_src.display()
    );
    assert!(
        text.contains("kafka:9092") && text.contains("http://clickhouse:8123"),
        "{text}"
    );

    // Grafana: provisioning mounted where the provider reads it; datasources match the boards.
    let gmounts: BTreeMap<String, String> = bind_mounts(svc("grafana"))
        .into_iter()
        .map(|(s, t)| (t, s))
        .collect();
    let ds_dir = root.join(
        gmounts
            .get("/etc/grafana/provisioning/datasources")
            .expect("datasources mounted"),
    );
    let db_dir = root.join(
        gmounts
            .get("/etc/grafana/provisioning/dashboards")
            .expect("dashboard providers mounted"),
    );
    let provider = std::fs::read_dir(&db_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<String>();
    let provider_paths = yaml_values(&provider, "path");
    assert!(
        !provider_paths.is_empty(),
        "a dashboard provider with a path"
    );
    for p in &provider_paths {
        let src = gmounts.get(p.as_str()).unwrap_or_else(|| {
            panic!("the dashboard provider reads {p}, which the compose file does not mount")
        });
        assert_eq!(
            root.join(src).canonicalize().unwrap(),
            root.join("grafana/dashboards").canonicalize().unwrap()
        );
    }
    // The datasources, parsed: each points at a compose service, ClickHouse through the
    // official plugin with the connection fields it reads (`jsonData`).
    let mut datasources: Vec<Value> = Vec::new();
    for f in std::fs::read_dir(&ds_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
    {
        let doc = yaml_to_json(&std::fs::read(&f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(doc["apiVersion"], 1, "{}", f.display());
        datasources.extend(doc["datasources"].as_array().cloned().unwrap_or_default());
    }
    let by_type = |ty: &str| {
        datasources
            .iter()
            .find(|d| d["type"] == ty)
            .unwrap_or_else(|| panic!("no {ty} datasource provisioned"))
            .clone()
    };
    let uids: Vec<String> = datasources
        .iter()
        .filter_map(|d| d["uid"].as_str().map(str::to_string))
        .collect();
    let prom_ds = by_type("prometheus");
    assert_eq!(prom_ds["uid"], PROMETHEUS_UID);
    assert_eq!(
        prom_ds["url"], "http://prometheus:9090",
        "the compose service"
    );
    let ch = by_type(CLICKHOUSE_TYPE);
    assert_eq!(ch["uid"], CLICKHOUSE_UID);
    let j = &ch["jsonData"];
    assert_eq!(j["host"], "clickhouse", "the compose service: {j}");
    assert_eq!(j["port"], 8123, "ClickHouse's HTTP port: {j}");
    assert_eq!(j["protocol"], "http", "{j}");
    assert!(j["username"].is_string() && j["secure"] == false, "{j}");
    assert!(
        cx_cfg.contains(&format!("database = \"{}\"", j["defaultDatabase"].as_str().unwrap_or("?"))),
        "the boards' unqualified tables live in the database cxpulse migrates: defaultDatabase {} vs {}",
        j["defaultDatabase"],
        cx_cfg_src.display()
    );
    assert!(
        ch["secureJsonData"]["password"]
            .as_str()
            .is_some_and(|p| p.starts_with("${")
                && genv.contains_key(p.trim_start_matches("${").trim_end_matches('}'))),
        "the ClickHouse password comes from Grafana's environment: {}",
        ch["secureJsonData"]
    );
    for d in dashboards() {
        for p in d.panels() {
            for t in p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(std::iter::once(p))
            {
                if let Some(uid) = t["datasource"]["uid"].as_str() {
                    if uid.starts_with("-- ") {
                        continue;
                    }
                    assert!(
                        uids.iter().any(|u| u == uid),
                        "{}: datasource uid {uid} is not provisioned ({uids:?})",
                        d.name
                    );
                }
            }
        }
        let sources: Vec<Source> = queries(&d).unwrap().iter().map(|q| q.source).collect();
        println!(
            "{}: {} queries, datasources provisioned",
            d.name,
            sources.len()
        );
    }

    // The image: a Rust build stage and a Debian slim runtime holding the binary.
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(
        froms[0].contains("rust:") && froms[0].contains(" AS "),
        "{froms:?}"
    );
    assert!(
        froms.last().unwrap().contains("debian:") && froms.last().unwrap().contains("-slim"),
        "{froms:?}"
    );
    assert!(dockerfile.contains("cargo build --release --locked -p cxpulse"));
    assert!(dockerfile.contains("COPY --from=build "));
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    for must in ["target", ".git", ".servers"] {
        assert!(
            ignore.lines().any(|l| l.trim() == must),
            ".dockerignore leaves out {must}"
        );
    }
}

/// The mount check can fail: a copy of the compose file with one mount renamed is caught.
#[test]
fn a_missing_mount_is_reported() {
    let test = "a_missing_mount_is_reported";
    let Some(compose) = compose_tool(test) else {
        return;
    };
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    let broken = text.replace(
        "./deploy/prometheus.yml:",
        "./deploy/no-such-prometheus.yml:",
    );
    assert_ne!(broken, text);
    let dir = common::temp_dir("compose-broken");
    let file = dir.join("docker-compose.yml");
    std::fs::write(&file, broken).unwrap();
    let config = compose_config(&compose, &file).unwrap_or_else(|e| panic!("{e}"));
    let problems = host_path_problems(&config);
    let _ = std::fs::remove_dir_all(dir);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("no-such-prometheus.yml") && problems[0].contains("does not exist"),
        "{problems:?}"
    );
    println!("caught: {}", problems[0]);
}
