//! Configuration: file, environment overrides, flags, errors that name the key, redaction,
//! and the example file.

use cxpulse::config::{self, load, load_str, resolve_path, FileConfig, Override};
use cxpulse_core::window::Tier;
use cxpulse_core::{EngineConfig, DAY_MS, HOUR_MS, MINUTE_MS};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn err(text: &str, env_pairs: &[(&str, &str)]) -> String {
    load_str(text, "test.toml", &env(env_pairs), &[])
        .expect_err("the configuration should be refused")
        .to_string()
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cxpulse.example.toml")
}

#[test]
fn environment_overrides_every_kind_of_key() {
    let loaded = load_str(
        "[kafka]\nbootstrap = \"from-file:9092\"\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n",
        "test.toml",
        &env(&[
            ("CXPULSE_KAFKA__BOOTSTRAP", "broker-1:9092,broker-2:9092"),
            ("CXPULSE_KAFKA__TOPICS__SURVEYS", "cx.surveys.v2"),
            ("CXPULSE_KAFKA__PROPERTIES__SASL_PASSWORD", "hunter2"),
            ("CXPULSE_KAFKA__PROPERTIES", r#"{ "ssl_engine_id" = "pkcs11" }"#),
            ("CXPULSE_ENGINE__MAX_SEGMENTS", "50"),
            ("CXPULSE_ENGINE__CALENDAR_DAYS", "false"),
            ("CXPULSE_ENGINE__PRESET_SEGMENTS", "enterprise, smb"),
            ("CXPULSE_ENGINE__WINDOWS", r#"[{ name = "2h", length = "2h" }, { name = "3d", length = "3d", slide = "5m" }]"#),
            ("CXPULSE_ENGINE__UTC_OFFSET", "+03:30"),
            ("CXPULSE_ENGINE__WINDOW_BODY_MIB", "512"),
            ("CXPULSE_GENERATOR__EVENTS_PER_SECOND", "12.5"),
            ("CXPULSE_GENERATOR__SEGMENTS", r#"["a", "b"]"#),
            ("CXPULSE_METRICS__LISTEN", "0.0.0.0:9999"),
            ("CXPULSE_METRICS__WINDOWS", "2h"),
            ("CXPULSE_CLICKHOUSE__BATCH_INTERVAL", "250ms"),
            // Not overrides (no `__`): ignored.
            ("CXPULSE_TEST_KAFKA", "127.0.0.1:19092"),
            ("CXPULSE_SERVERS_DIR", "/tmp/x"),
            ("HOME", "/root"),
        ]),
        &[],
    )
    .unwrap();
    let s = &loaded.settings;
    assert_eq!(s.kafka.bootstrap, "broker-1:9092,broker-2:9092");
    assert_eq!(s.kafka.topics.surveys, "cx.surveys.v2");
    assert_eq!(s.kafka.topics.touchpoints, "cx.touchpoints");
    assert_eq!(s.kafka.properties["sasl.password"], "hunter2");
    assert_eq!(s.kafka.properties["ssl_engine_id"], "pkcs11");
    assert_eq!(
        s.kafka.properties["security.protocol"], "SASL_SSL",
        "file keys are kept"
    );
    assert_eq!(s.engine.max_segments, 50);
    assert!(!s.engine.calendar_days);
    assert_eq!(s.engine.preset_segments, ["enterprise", "smb"]);
    assert_eq!(s.engine.utc_offset_minutes, 210);
    assert_eq!(s.engine.window_body_bytes, 512 << 20);
    let w = &s.engine.windows;
    assert_eq!(w.len(), 2);
    assert_eq!(
        (w[0].name.as_str(), w[0].length_ms, w[0].tail, w[0].slide_ms),
        ("2h", 2 * HOUR_MS, Tier::Minute, MINUTE_MS)
    );
    assert_eq!(
        (w[1].length_ms, w[1].tail, w[1].slide_ms),
        (3 * DAY_MS, Tier::Hour, 5 * MINUTE_MS)
    );
    assert_eq!(s.generator.events_per_second, 12.5);
    assert_eq!(s.generator.segments, ["a", "b"]);
    assert_eq!(s.metrics.listen.to_string(), "0.0.0.0:9999");
    assert_eq!(s.metrics.windows, Some(BTreeSet::from(["2h".to_string()])));
    assert_eq!(s.clickhouse.batch_interval.as_millis(), 250);
    // The resolved file shows the defaulted window keys.
    assert_eq!(
        loaded.file.engine.windows[0].tail.as_deref(),
        Some("minute")
    );
    assert_eq!(loaded.file.engine.windows[0].slide.as_deref(), Some("1m"));
    assert!(
        loaded.sources().starts_with("defaults < CXPULSE_"),
        "{}",
        loaded.sources()
    );
}

#[test]
fn flags_win_over_environment_which_wins_over_the_file() {
    let loaded = load_str(
        "[generator]\nevents_per_second = 5.0\nseed = 1\n",
        "test.toml",
        &env(&[
            ("CXPULSE_GENERATOR__EVENTS_PER_SECOND", "10"),
            ("CXPULSE_GENERATOR__SEED", "2"),
        ]),
        &[Override::flag(
            "generator.events_per_second",
            20.0,
            "--rate",
        )],
    )
    .unwrap();
    assert_eq!(loaded.settings.generator.events_per_second, 20.0);
    assert_eq!(loaded.settings.generator.seed, 2);
    let e = load_str(
        "",
        "t",
        &[],
        &[Override::flag(
            "generator.events_per_second",
            -1.0,
            "--rate",
        )],
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("generator.events_per_second: must be above 0"),
        "{e}"
    );
    assert!(e.to_string().contains("(set by --rate)"), "{e}");
}

#[test]
fn unknown_keys_are_errors_that_name_them() {
    let e = err("[engine]\nwindowz = []\n", &[]);
    assert!(
        e.starts_with("engine.windowz: unknown key (in test.toml)"),
        "{e}"
    );
    assert!(e.contains("known keys here: calendar_days"), "{e}");
    let e = err(
        "[engine]\n[[engine.windows]]\nname = \"1h\"\nlenght = \"1h\"\n",
        &[],
    );
    assert!(
        e.starts_with("engine.windows[0].lenght: unknown key"),
        "{e}"
    );
    let e = err("[kafak]\nbootstrap = \"x\"\n", &[]);
    assert!(e.starts_with("kafak: unknown key"), "{e}");
    let e = err("[kafka.topics]\nclicks = \"x\"\n", &[]);
    assert!(e.starts_with("kafka.topics.clicks: unknown key"), "{e}");
    let e = err("", &[("CXPULSE_ENGINE__NOPE", "1")]);
    assert!(
        e.starts_with("engine.nope: unknown key (set by CXPULSE_ENGINE__NOPE)"),
        "{e}"
    );
    let e = err("", &[("CXPULSE_NOPE__X", "1")]);
    assert!(
        e.starts_with("nope: unknown key (set by CXPULSE_NOPE__X)"),
        "{e}"
    );
    let e = err("", &[("CXPULSE_KAFKA__TOPICS", r#"{ clicks = "x" }"#)]);
    assert!(
        e.starts_with("kafka.topics.clicks: unknown key (set by CXPULSE_KAFKA__TOPICS)"),
        "{e}"
    );
}

#[test]
fn bad_values_name_the_key_and_why() {
    let e = err(
        "[[engine.windows]]\nname = \"1h\"\nlength = \"1h\"\n[[engine.windows]]\nname = \"24h\"\nlength = \"24x\"\n",
        &[],
    );
    assert!(
        e.starts_with(r#"engine.windows[1].length: "24x" is not a duration"#),
        "{e}"
    );
    let e = err("[engine]\nallowed_lateness = \"soon\"\n", &[]);
    assert!(
        e.starts_with(r#"engine.allowed_lateness: "soon" is not a duration"#),
        "{e}"
    );
    let e = err("", &[("CXPULSE_ENGINE__CASE_TTL", "7 days")]);
    assert!(
        e.starts_with(r#"engine.case_ttl: "7 days" is not a duration"#),
        "{e}"
    );
    assert!(e.contains("(set by CXPULSE_ENGINE__CASE_TTL)"), "{e}");
    let e = err("[engine]\nmax_segments = \"lots\"\n", &[]);
    assert!(
        e.starts_with(r#"engine.max_segments: invalid type: string "lots""#),
        "{e}"
    );
    let e = err("", &[("CXPULSE_ENGINE__MAX_SEGMENTS", "lots")]);
    assert!(
        e.starts_with(
            r#"CXPULSE_ENGINE__MAX_SEGMENTS: engine.max_segments: "lots" is not an integer"#
        ),
        "{e}"
    );
    let e = err("[engine]\nwindow_body_mib = 17592186044416\n", &[]);
    assert!(e.starts_with("engine.window_body_mib: is too large"), "{e}");
    let e = err("[engine]\nidle_timeout = \"0s\"\n", &[]);
    assert!(e.starts_with("engine.idle_timeout: must be >= 1 ms"), "{e}");
    let e = err("[[engine.windows]]\nname = \"1h\"\nlength = \"1h\"\n[[engine.windows]]\nname = \"1h\"\nlength = \"2h\"\n", &[]);
    assert!(
        e.starts_with(r#"engine.windows[1].name: "1h" is used twice"#),
        "{e}"
    );
    let e = err("[[engine.windows]]\nname = \"x\"\nlength = \"90s\"\n", &[]);
    assert!(
        e.starts_with(r#"engine.windows[0]: window "x": length must be a whole number of minutes"#),
        "{e}"
    );
    let e = err(
        "[[engine.windows]]\nname = \"x\"\nlength = \"1h\"\ntail = \"week\"\n",
        &[],
    );
    assert!(
        e.starts_with(r#"engine.windows[0].tail: "week" is not one of"#),
        "{e}"
    );
    let e = err("[engine]\nutc_offset = \"+15:00\"\n", &[]);
    assert!(e.starts_with("engine.utc_offset:"), "{e}");
    let e = err(
        "[engine]\nmax_segments = 1\npreset_segments = [\"a\", \"b\"]\n",
        &[],
    );
    assert!(
        e.starts_with("engine.preset_segments: must be no more than max_segments entries (got 2)"),
        "{e}"
    );
    let e = err("[engine]\ncalendar_days = false\nwindows = []\n", &[]);
    assert!(e.starts_with("engine.windows: no rolling windows"), "{e}");
    let e = err("[metrics]\nlisten = \"localhost\"\n", &[]);
    assert!(
        e.starts_with(r#"metrics.listen: "localhost" is not an ip:port address"#),
        "{e}"
    );
    let e = err("[metrics]\nwindows = [\"2h\"]\n", &[]);
    assert!(e.starts_with(r#"metrics.windows[0]: "2h" is not a configured window (configured: 1h, 24h, 7d, 28d, day)"#), "{e}");
    let e = err("[generator]\nscenario = \"nps-drop:30:fax:all:0\"\n", &[]);
    assert!(e.starts_with("generator.scenario: scenario"), "{e}");
    let e = err("[clickhouse]\nurl = \"ftp://x\"\n", &[]);
    assert!(e.starts_with("clickhouse.url:"), "{e}");
    let e = err("[demo]\npartitions = 0\n", &[]);
    assert!(
        e.starts_with("demo.partitions: must be between 1 and 1024"),
        "{e}"
    );
    let e = err("[engine\n", &[]);
    assert!(e.starts_with("test.toml: not valid TOML"), "{e}");
}

#[test]
fn the_example_file_sets_every_key_to_its_default() {
    let path = example_path();
    let loaded = load(Some(&path), &[], &[]).unwrap();
    assert_eq!(loaded.file, FileConfig::default());
    assert_eq!(loaded.settings.engine, EngineConfig::default());
    // Every key of the schema is written out in the example (so it documents them all).
    fn keys(prefix: &str, t: &toml::Table, out: &mut BTreeSet<String>) {
        for (k, v) in t {
            let key = format!("{prefix}{k}");
            match v {
                toml::Value::Table(inner) => keys(&format!("{key}."), inner, out),
                toml::Value::Array(items) => {
                    for item in items {
                        if let toml::Value::Table(inner) = item {
                            keys(&format!("{key}[]."), inner, out);
                        }
                    }
                }
                _ => {}
            }
            out.insert(key);
        }
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let example: toml::Table = toml::from_str(&text).unwrap();
    let schema = toml::Table::try_from(FileConfig::default()).unwrap();
    let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
    keys("", &example, &mut a);
    keys("", &schema, &mut b);
    assert_eq!(a, b, "the example and the schema differ");
    // And each key has a comment line somewhere above it.
    assert!(text.matches("\n#").count() > 40);
}

#[test]
fn the_file_comes_from_the_flag_then_the_variable_then_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(resolve_path(None, &[], dir.path()), None);
    std::fs::write(dir.path().join("cxpulse.toml"), "").unwrap();
    assert_eq!(
        resolve_path(None, &[], dir.path()),
        Some(dir.path().join("cxpulse.toml"))
    );
    let by_env = env(&[("CXPULSE_CONFIG", "/etc/cxpulse.toml")]);
    assert_eq!(
        resolve_path(None, &by_env, dir.path()),
        Some(PathBuf::from("/etc/cxpulse.toml"))
    );
    assert_eq!(
        resolve_path(Some(Path::new("x.toml")), &by_env, dir.path()),
        Some(PathBuf::from("x.toml"))
    );
    let missing = load(Some(Path::new("/nonexistent/cxpulse.toml")), &[], &[]).unwrap_err();
    assert!(missing
        .to_string()
        .starts_with("cannot read configuration file /nonexistent/cxpulse.toml"));
}

#[test]
fn debug_output_hides_secrets() {
    let loaded = load_str(
        "[clickhouse]\npassword = \"ch-secret\"\nurl = \"http://u:url-secret@h:8123\"\n[kafka.properties]\n\"sasl.password\" = \"kafka-secret\"\n",
        "t",
        &[],
        &[],
    )
    .unwrap();
    let debug = format!("{:?} {:?}", loaded.settings, loaded.file);
    for secret in ["ch-secret", "url-secret", "kafka-secret"] {
        assert!(!debug.contains(secret), "{secret} leaked: {debug}");
    }
    assert!(debug.contains(config::REDACTED));
}

fn cxpulse(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cxpulse"));
    cmd.current_dir(dir);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CXPULSE_") {
            cmd.env_remove(&*k);
        }
    }
    cmd
}

#[test]
fn config_check_prints_the_resolved_configuration_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cxpulse.toml"),
        r#"
[clickhouse]
password = "ch-file-secret"
[kafka.properties]
"sasl.username" = "cx-user"
"sasl.password" = "kafka-file-secret"
"ssl.key.password" = "key-secret"
"sasl.oauthbearer.client.secret" = "oauth-secret"
"#,
    )
    .unwrap();
    let out = cxpulse(dir.path())
        .args(["config", "check"])
        .env(
            "CXPULSE_CLICKHOUSE__URL",
            "https://writer:url-secret@ch.example:8443",
        )
        .env("CXPULSE_KAFKA__PROPERTIES__SASL_JAAS_CONFIG", "jaas-secret")
        .env("CXPULSE_ENGINE__MAX_SEGMENTS", "77")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    for secret in [
        "ch-file-secret",
        "kafka-file-secret",
        "key-secret",
        "oauth-secret",
        "url-secret",
        "jaas-secret",
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked:\n{stdout}"
        );
    }
    assert!(stdout.contains(r#"password = "<redacted>""#), "{stdout}");
    assert!(
        stdout.contains(r#""sasl.password" = "<redacted>""#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#""sasl.jaas.config" = "<redacted>""#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"url = "https://writer:<redacted>@ch.example:8443""#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#""sasl.username" = "cx-user""#),
        "{stdout}"
    );
    assert!(stdout.contains("max_segments = 77"), "{stdout}");
    assert!(
        stdout.contains("cxpulse.toml < CXPULSE_CLICKHOUSE__URL"),
        "{stdout}"
    );
    // The output is itself a valid configuration (secrets aside).
    let reparsed: toml::Table = toml::from_str(&stdout).unwrap();
    assert!(reparsed.contains_key("engine"));
    assert!(stderr.contains("configuration OK"), "{stderr}");
}

#[test]
fn config_check_exits_2_naming_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[engine.windows]]\nname = \"1h\"\nlength = \"1h\"\n[[engine.windows]]\nname = \"24h\"\nlength = \"24x\"\n",
    )
    .unwrap();
    let out = cxpulse(dir.path())
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(r#"error: engine.windows[1].length: "24x" is not a duration"#),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    let out = cxpulse(dir.path())
        .args(["config", "check"])
        .env("CXPULSE_KAFKA__BOOTSTRAPS", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr
            .starts_with("error: kafka.bootstraps: unknown key (set by CXPULSE_KAFKA__BOOTSTRAPS)"),
        "{stderr}"
    );
}
