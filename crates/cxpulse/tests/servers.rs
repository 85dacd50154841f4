//! `cxpulse migrate` and `cxpulse generate` against the real servers started by
//! `scripts/test.sh` (ClickHouse 26.9 and the tansu Kafka broker). Without the
//! `CXPULSE_TEST_*` variables each test prints SKIPPED and passes.

use cxpulse_avro::{Decoder, RecordKind, SchemaRegistry};
use cxpulse_core::ValidationPolicy;
use cxpulse_kafka::rdkafka::config::ClientConfig;
use cxpulse_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use cxpulse_kafka::rdkafka::{Message, Offset, TopicPartitionList};
use std::process::Command;
use std::time::{Duration, Instant};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

fn cxpulse(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cxpulse"))
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("CXPULSE_CONFIG")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("the cxpulse binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn migrate_creates_the_tables_and_is_idempotent() {
    let Some(url) = env("CXPULSE_TEST_CLICKHOUSE_URL") else {
        println!("SKIPPED migrate_creates_the_tables_and_is_idempotent: CXPULSE_TEST_CLICKHOUSE_URL unset");
        return;
    };
    let db = unique("cxpulse_cli");
    let envs = [
        ("CXPULSE_CLICKHOUSE__URL", url.as_str()),
        ("CXPULSE_CLICKHOUSE__DATABASE", db.as_str()),
    ];
    let (ok, out, err) = cxpulse(&["migrate"], &envs);
    assert!(ok, "first migrate failed: {out}\n{err}");
    assert!(out.contains("applied"), "{out}");
    let (ok, out, err) = cxpulse(&["migrate"], &envs);
    assert!(ok, "second migrate failed: {out}\n{err}");
    assert!(
        out.contains("up to date"),
        "second run must change nothing: {out}"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = cxpulse_clickhouse::Client::default().with_url(&url);
    let tables: Vec<String> = runtime
        .block_on(
            client
                .query("SELECT name FROM system.tables WHERE database = ? ORDER BY name")
                .bind(&db)
                .fetch_all::<String>(),
        )
        .expect("list tables");
    for t in [
        "kpi_panes",
        "kpi_windows",
        "kpi_windows_latest",
        "partition_checkpoints",
        "survey_responses",
    ] {
        assert!(
            tables.iter().any(|x| x == t),
            "table {t} missing in {tables:?}"
        );
    }
    runtime
        .block_on(
            client
                .query(&format!("DROP DATABASE IF EXISTS {db}"))
                .execute(),
        )
        .expect("drop database");
}

/// Reads the records of `topics` (all partitions) until `expected` arrived or 60 s passed;
/// returns (topic index, partition, payload).
fn read_all(
    bootstrap: &str,
    topics: &[&str],
    partitions: i32,
    expected: usize,
) -> Vec<(usize, i32, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("cxpulse-cli-test"))
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let t = topics
                .iter()
                .position(|t| *t == m.topic())
                .unwrap_or(usize::MAX);
            out.push((t, m.partition(), m.payload().unwrap_or_default().to_vec()));
        }
    }
    out
}

#[test]
fn generate_is_deterministic_and_mixes_in_malformed_records() {
    let Some(bootstrap) = env("CXPULSE_TEST_KAFKA") else {
        println!("SKIPPED generate_is_deterministic_and_mixes_in_malformed_records: CXPULSE_TEST_KAFKA unset");
        return;
    };
    let run = |tag: &str| {
        let (tp, sv, dl) = (
            unique(&format!("tp_{tag}")),
            unique(&format!("sv_{tag}")),
            unique(&format!("dl_{tag}")),
        );
        let envs = [
            ("CXPULSE_KAFKA__BOOTSTRAP", bootstrap.as_str()),
            ("CXPULSE_KAFKA__TOPICS__TOUCHPOINTS", tp.as_str()),
            ("CXPULSE_KAFKA__TOPICS__SURVEYS", sv.as_str()),
            ("CXPULSE_KAFKA__DEAD_LETTER_TOPIC", dl.as_str()),
        ];
        let (ok, out, err) = cxpulse(
            &[
                "generate",
                "--count",
                "3000",
                "--seed",
                "11",
                "--rate",
                "100",
                "--malformed-share",
                "0.1",
                "--partitions",
                "2",
                "--start",
                "1767225600000",
            ],
            &envs,
        );
        assert!(ok, "generate failed: {out}\n{err}");
        (tp, sv, out)
    };
    let (tp1, sv1, out1) = run("a");
    let (tp2, sv2, out2) = run("b");
    assert!(out1.contains("sent 3000 records"), "{out1}");
    let malformed: usize = out1
        .split('(')
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a malformed count");
    assert!(
        (150..=450).contains(&malformed),
        "about 10 % of 3000 expected, got {malformed}"
    );
    assert_eq!(
        out1.replace(&tp1, "").replace(&sv1, ""),
        out2.replace(&tp2, "").replace(&sv2, "")
    );

    // `--count` is exact, however few: arrivals are random, so a span derived from the
    // count must not cut the stream short (`--count 1` once sent nothing).
    for n in ["1", "2", "5"] {
        let (ok, out, err) = cxpulse(
            &["generate", "--count", n, "--seed", "3", "--partitions", "2"],
            &[
                ("CXPULSE_KAFKA__BOOTSTRAP", bootstrap.as_str()),
                ("CXPULSE_KAFKA__TOPICS__TOUCHPOINTS", &unique("tp_count")),
                ("CXPULSE_KAFKA__TOPICS__SURVEYS", &unique("sv_count")),
                ("CXPULSE_KAFKA__DEAD_LETTER_TOPIC", &unique("dl_count")),
            ],
        );
        assert!(ok, "generate --count {n} failed: {out}\n{err}");
        assert!(
            out.contains(&format!("sent {n} records")),
            "--count {n}: {out}"
        );
    }

    // Every generated record arrives (touchpoints and surveys together).
    let a = read_all(&bootstrap, &[&tp1, &sv1], 2, 3000);
    assert_eq!(a.len(), 3000, "every generated record arrives");
    let b = read_all(&bootstrap, &[&tp2, &sv2], 2, 3000);
    assert_eq!(b.len(), 3000, "every generated record arrives (second run)");
    let split = |v: &[(usize, i32, Vec<u8>)], t: usize| -> Vec<(i32, Vec<u8>)> {
        v.iter()
            .filter(|(x, _, _)| *x == t)
            .map(|(_, p, b)| (*p, b.clone()))
            .collect()
    };
    let (tp_a, sv_a, tp_b, sv_b) = (split(&a, 0), split(&a, 1), split(&b, 0), split(&b, 1));
    // Same seed: the same records in the same order on every partition.
    let by_partition = |v: &[(i32, Vec<u8>)], p: i32| {
        v.iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, b)| b.clone())
            .collect::<Vec<_>>()
    };
    for p in 0..2 {
        for (name, a, b) in [("touchpoints", &tp_a, &tp_b), ("surveys", &sv_a, &sv_b)] {
            let (a, b) = (by_partition(a, p), by_partition(b, p));
            assert_eq!(
                a.len(),
                b.len(),
                "{name} partition {p}: record counts differ"
            );
            if let Some(i) = (0..a.len()).find(|i| a[*i] != b[*i]) {
                panic!(
                    "{name} partition {p}: record {i} differs between two runs with the same seed"
                );
            }
        }
    }
    // The malformed ones fail decoding or validation; all others decode and validate.
    let decoder = Decoder::new(SchemaRegistry::new());
    let policy = ValidationPolicy::default();
    let now = i64::MAX / 4;
    let failures = tp_a
        .iter()
        .map(|(_, b)| {
            decoder
                .decode_validated(RecordKind::Touchpoint, b, now, &policy)
                .is_err()
        })
        .chain(sv_a.iter().map(|(_, b)| {
            decoder
                .decode_validated(RecordKind::Survey, b, now, &policy)
                .is_err()
        }))
        .filter(|failed| *failed)
        .count();
    assert_eq!(failures, malformed, "exactly the malformed records fail");
}
