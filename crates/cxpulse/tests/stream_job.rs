//! `cxpulse run` end to end against the real servers started by `scripts/test.sh` (tansu
//! and ClickHouse 26.9): records written by `cxpulse generate`, the job as a child process,
//! and every KPI row in ClickHouse compared with a recomputation from the records read back
//! from the topics (`cxpulse-oracle`, written from `docs/windows.md` alone).
//!
//! Faults: kill -9 and restart, ClickHouse stopped for 30 s, two instances (one killed),
//! 10,000 malformed records, broker restart. The tests share the servers, so they run one at
//! a time (a lock). Without the `CXPULSE_TEST_*` variables each prints SKIPPED and passes.

use cxpulse::test_stack::{unique, StackJob};
use cxpulse_avro::{Decoder, RecordKind, SchemaRegistry};
use cxpulse_clickhouse::{Client, WindowRow};
use cxpulse_core::kpi::KpiState;
use cxpulse_core::window::Mergeable;
use cxpulse_core::{CxEvent, EngineConfig, Millis, ValidationPolicy};
use cxpulse_kafka::rdkafka::config::ClientConfig;
use cxpulse_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use cxpulse_kafka::rdkafka::message::Headers;
use cxpulse_kafka::rdkafka::{Message, Offset, TopicPartitionList};
use cxpulse_oracle::{diff_state, Input, Oracle, RowKey};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// Event time of the generated traffic (2026-01-01T00:00Z): fixed, so runs are comparable.
const START: &str = "1767225600000";
const PARTITIONS: i32 = 3;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

struct Servers {
    kafka: String,
    clickhouse: String,
}

fn servers(test: &str) -> Option<Servers> {
    match (
        env("CXPULSE_TEST_KAFKA"),
        env("CXPULSE_TEST_CLICKHOUSE_URL"),
    ) {
        (Some(kafka), Some(clickhouse)) => Some(Servers { kafka, clickhouse }),
        _ => {
            println!("SKIPPED {test}: CXPULSE_TEST_KAFKA / CXPULSE_TEST_CLICKHOUSE_URL unset");
            None
        }
    }
}

/// One scenario's topics, database and consumer group, as `CXPULSE_*` variables.
struct Setup {
    job: StackJob,
    touchpoints: String,
    surveys: String,
    dead_letters: String,
    database: String,
    group: String,
    kafka: String,
    clickhouse: String,
    /// Records generated (both topics), malformed ones included.
    records: u64,
    malformed: u64,
}

impl Setup {
    fn new(s: &Servers, tag: &str) -> Setup {
        let job = StackJob::new(&s.kafka, &s.clickhouse, &unique(tag))
            .quick()
            .with("CXPULSE_CLICKHOUSE__RETRIES", "2")
            .with("CXPULSE_CLICKHOUSE__RETRY_BACKOFF", "200ms")
            .with("RUST_LOG", "info,cxpulse=debug");
        Setup {
            touchpoints: job.touchpoints.clone(),
            surveys: job.surveys.clone(),
            dead_letters: job.dead_letters.clone(),
            database: job.database.clone(),
            group: job.group.clone(),
            job,
            kafka: s.kafka.clone(),
            clickhouse: s.clickhouse.clone(),
            records: 0,
            malformed: 0,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        self.job
            .command(std::path::Path::new(env!("CARGO_BIN_EXE_cxpulse")), args)
    }

    /// `cxpulse generate`: `count` records at `rate` events/s of event time from `START`.
    fn generate(&mut self, count: u64, rate: &str, malformed_share: &str, seed: &str) {
        let child = self.spawn_generate(
            count,
            rate,
            malformed_share,
            seed,
            START,
            Pacing::AsFastAsPossible,
        );
        self.generated(child);
    }

    /// Starts `cxpulse generate` (event time from `start`, ms) without waiting for it: as
    /// fast as it can, or with `Pacing::RealTime` at `rate` events per second of wall clock.
    fn spawn_generate(
        &self,
        count: u64,
        rate: &str,
        malformed_share: &str,
        seed: &str,
        start: &str,
        pacing: Pacing,
    ) -> Child {
        let pace: &[&str] = match pacing {
            Pacing::AsFastAsPossible => &[],
            Pacing::RealTime => &["--realtime"],
        };
        self.command(
            &[
                &["generate"],
                pace,
                &[
                    "--count",
                    &count.to_string(),
                    "--seed",
                    seed,
                    "--rate",
                    rate,
                    "--malformed-share",
                    malformed_share,
                    "--partitions",
                    &PARTITIONS.to_string(),
                    "--start",
                    start,
                ],
            ]
            .concat(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cxpulse generate starts")
    }

    /// Waits for a `cxpulse generate` and counts what it sent.
    fn generated(&mut self, child: Child) {
        let out = child.wait_with_output().expect("cxpulse generate runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "generate failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // "sent N records (M malformed) to …"
        let number_after = |marker: &str| -> u64 {
            stdout
                .split(marker)
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|n| n.trim_start_matches('(').parse().ok())
                .unwrap_or_else(|| panic!("no count after {marker:?} in {stdout:?}"))
        };
        self.records += number_after("sent ");
        self.malformed += number_after("records ");
    }

    /// Starts `cxpulse run`; its output goes to a log file in the temp dir.
    fn start_job(&self, name: &str) -> Job {
        let log_path = std::env::temp_dir().join(format!("{}_{name}.log", self.database));
        let log = std::fs::File::create(&log_path).expect("job log file");
        let err = log.try_clone().expect("log handle");
        let child = self
            .command(&["run"])
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("cxpulse run starts");
        Job {
            child,
            log: log_path,
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn client(&self) -> Client {
        Client::default()
            .with_url(&self.clickhouse)
            .with_database(&self.database)
    }

    /// Latest checkpoint per partition: (records covered, frontier).
    fn checkpoints(&self) -> BTreeMap<i32, (u64, Option<Millis>)> {
        let rt = Setup::runtime();
        let settings = cxpulse_clickhouse::Settings {
            database: self.database.clone(),
            ..cxpulse_clickhouse::Settings::default()
        };
        let client = Client::default().with_url(&self.clickhouse);
        let Ok(sink) = cxpulse_clickhouse::ClickHouseSink::new(
            &client,
            &settings,
            cxpulse_clickhouse::SinkConfig::default(),
        ) else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for p in 0..PARTITIONS {
            if let Ok(Some(c)) = rt.block_on(sink.load_checkpoint(&self.group, p)) {
                let e = cxpulse::commands::run::CheckpointEnvelope::decode(&c.state)
                    .expect("a readable checkpoint");
                out.insert(p, (e.version(), e.frontier));
            }
        }
        out
    }

    /// Records covered by the partitions' latest checkpoints.
    fn covered(&self) -> u64 {
        self.checkpoints().values().map(|(v, _)| v).sum()
    }

    /// Waits until the checkpoints cover `records` records (or panics after `limit`).
    fn wait_covered(&self, records: u64, limit: Duration, jobs: &mut [&mut Job]) {
        let deadline = Instant::now() + limit;
        loop {
            let covered = self.covered();
            if covered >= records {
                return;
            }
            for j in jobs.iter_mut() {
                if let Ok(Some(status)) = j.child.try_wait() {
                    panic!("the job exited early ({status}); log:\n{}", j.log_tail());
                }
            }
            assert!(
                Instant::now() < deadline,
                "checkpoints cover {covered} of {records} records after {limit:?}; log:\n{}",
                jobs.first().map(|j| j.log_tail()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Everything the job must have produced, checked against the records on the topics.
    fn verify(&self) {
        let topics = read_topics(&self.kafka, &[&self.touchpoints, &self.surveys]);
        assert_eq!(
            topics.len() as u64,
            self.records,
            "every generated record is on the topics"
        );
        let decoder = Decoder::new(SchemaRegistry::new());
        let policy = ValidationPolicy::default();
        let now = now_ms();
        let mut per_source: BTreeMap<(i32, usize), Vec<(i64, CxEvent)>> = BTreeMap::new();
        let mut bad = 0u64;
        for r in &topics {
            let kind = if r.topic == 0 {
                RecordKind::Touchpoint
            } else {
                RecordKind::Survey
            };
            match decoder.decode_validated(kind, &r.payload, now, &policy) {
                Ok(e) => per_source
                    .entry((r.partition, r.topic))
                    .or_default()
                    .push((r.offset, e)),
                Err(_) => bad += 1,
            }
        }
        assert_eq!(
            bad, self.malformed,
            "the malformed records are the bad ones"
        );
        let mut input = Input::new();
        for list in per_source.values_mut() {
            list.sort_by_key(|(o, _)| *o);
        }
        // Sources interleaved round-robin; only the order within a source matters.
        let mut cursors: BTreeMap<(i32, usize), usize> = BTreeMap::new();
        loop {
            let mut any = false;
            for (key, list) in &per_source {
                let c = cursors.entry(*key).or_default();
                if let Some((_, e)) = list.get(*c) {
                    input.push(key.0, e.clone());
                    *c += 1;
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
        let cfg = self.engine_config();
        let oracle = Oracle::new(&cfg, &input);
        assert_eq!(
            oracle.counts().rejected,
            0,
            "the generated lateness stays inside the correction horizon"
        );

        // The rows every partition has emitted: up to the smallest frontier.
        let checkpoints = self.checkpoints();
        assert_eq!(
            checkpoints.len(),
            PARTITIONS as usize,
            "one checkpoint per partition"
        );
        let frontier = checkpoints
            .values()
            .filter_map(|(_, f)| *f)
            .min()
            .expect("every partition emitted windows");
        let expected = oracle.expected_rows(frontier);
        assert!(
            expected.len() > 1_000,
            "a meaningful comparison ({} rows)",
            expected.len()
        );
        let observed = self.observed_rows(frontier);
        let mut problems = Vec::new();
        for (key, exp) in &expected {
            match observed.get(key) {
                None => problems.push(format!("missing row {key:?}")),
                Some(state) => {
                    let d = diff_state(exp, state);
                    if !d.is_empty() {
                        problems.push(format!("{key:?}: {}", d.join("; ")));
                    }
                }
            }
        }
        for key in observed.keys() {
            if !expected.contains_key(key) {
                problems.push(format!("unexpected row {key:?}"));
            }
        }
        assert!(
            problems.is_empty(),
            "{} of {} rows differ (frontier {frontier}), e.g.:\n{}",
            problems.len(),
            expected.len(),
            problems[..problems.len().min(10)].join("\n")
        );

        // The derived KPIs people read agree with the merged parts.
        let rt = Setup::runtime();
        let nps: Vec<(String, String, String, i64, Option<f64>)> = rt
            .block_on(
                self.client()
                    .query(
                        "SELECT `window`, channel, segment, toUnixTimestamp64Milli(`end`), nps \
                         FROM kpi_windows_latest WHERE `end` <= fromUnixTimestamp64Milli(?) \
                         AND nps_n > 0",
                    )
                    .bind(frontier)
                    .fetch_all(),
            )
            .expect("kpi_windows_latest");
        assert!(!nps.is_empty(), "NPS rows in the view");
        for (window, channel, segment, end, value) in &nps {
            let key = expected
                .keys()
                .find(|k| {
                    &*k.window == window
                        && k.end == *end
                        && k.channel_label() == channel
                        && k.segment_label() == segment
                })
                .unwrap_or_else(|| {
                    panic!("view row {window} {channel} {segment} {end} unexpected")
                });
            let parts = &expected[key];
            let n = parts.promoters + parts.passives + parts.detractors;
            let want = 100.0 * (parts.promoters as f64 - parts.detractors as f64) / n as f64;
            let got = value.expect("nps with n > 0");
            assert!((got - want).abs() < 1e-9, "{key:?}: NPS {got} != {want}");
        }

        // Voice of the customer: every accepted response once, comments byte-exact.
        let responses: Vec<(String, Option<String>)> = rt
            .block_on(
                self.client()
                    .query("SELECT response_id, comment FROM survey_responses FINAL")
                    .fetch_all(),
            )
            .expect("survey_responses");
        let mut want: BTreeMap<String, Option<String>> = BTreeMap::new();
        for list in per_source.values() {
            for (_, e) in list {
                if let CxEvent::Survey(r) = e {
                    want.insert(r.response_id.clone(), r.comment.clone());
                }
            }
        }
        let got: BTreeMap<String, Option<String>> = responses.into_iter().collect();
        assert_eq!(got.len(), want.len(), "one row per response");
        assert!(got == want, "survey responses and comments byte-exact");
        assert!(
            want.values().flatten().any(|c| !c.is_ascii()),
            "non-ASCII comments were part of the check"
        );
    }

    fn engine_config(&self) -> EngineConfig {
        let env: Vec<(String, String)> = self.job.envs.clone().into_iter().collect();
        cxpulse::config::load(None, &env, &[])
            .expect("the test configuration loads")
            .settings
            .engine
    }

    /// Window rows stored per partition, merged over partitions (latest version each), for
    /// every end up to `frontier`; `updates` = the sum of the partitions' versions.
    fn observed_rows(&self, frontier: Millis) -> BTreeMap<RowKey, KpiState> {
        let rt = Setup::runtime();
        let rows: Vec<WindowRow> = rt
            .block_on(
                self.client()
                    .query(
                        "SELECT ?fields FROM kpi_windows FINAL \
                         WHERE `end` <= fromUnixTimestamp64Milli(?)",
                    )
                    .bind(frontier)
                    .fetch_all::<WindowRow>(),
            )
            .expect("kpi_windows");
        let mut out: BTreeMap<RowKey, KpiState> = BTreeMap::new();
        for row in rows {
            let mut state = row.state().expect("stored parts decode");
            state.updates = row.version;
            let key =
                RowKey::from_labels(&row.window, row.start, row.end, &row.channel, &row.segment);
            out.entry(key).or_default().merge(&state);
        }
        out
    }

    fn drop_database(&self) {
        let rt = Setup::runtime();
        let _ = rt.block_on(
            Client::default()
                .with_url(&self.clickhouse)
                .query(&format!("DROP DATABASE IF EXISTS `{}`", self.database))
                .execute(),
        );
    }
}

fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Job {
    child: Child,
    log: std::path::PathBuf,
}

impl Job {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM, then the exit status (must be 0 within `limit`).
    fn stop(mut self, limit: Duration) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "the job exited with {status}; log:\n{}",
                    self.log_tail()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the job did not exit within {limit:?} of SIGTERM; log:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TopicRecord {
    /// Index in the topic list.
    topic: usize,
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
    headers: Vec<(String, String)>,
}

/// Every record of `topics` (all partitions), read until the end.
fn read_topics(bootstrap: &str, topics: &[&str]) -> Vec<TopicRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("stream-job-reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        if topics.contains(&t.name()) {
            for p in t.partitions() {
                tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning)
                    .expect("partition");
            }
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut quiet_since = Instant::now();
    // tansu under-reports high watermarks: read until nothing came for 3 s.
    while quiet_since.elapsed() < Duration::from_secs(3) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            quiet_since = Instant::now();
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_string(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(TopicRecord {
                topic: topics
                    .iter()
                    .position(|t| *t == m.topic())
                    .unwrap_or(usize::MAX),
                partition: m.partition(),
                offset: m.offset(),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    out
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// How `cxpulse generate` sends.
#[derive(Clone, Copy)]
enum Pacing {
    AsFastAsPossible,
    RealTime,
}

/// ~33 minutes of event time: enough for every window kind to be emitted many times.
const COUNT: u64 = 20_000;
const RATE: &str = "10";

#[test]
fn end_to_end_every_row_equals_the_recomputation() {
    let Some(s) = servers("end_to_end_every_row_equals_the_recomputation") else {
        return;
    };
    let _guard = lock();
    let mut setup = Setup::new(&s, "e2e");
    setup.generate(COUNT, RATE, "0.01", "7");
    let mut job = setup.start_job("a");
    setup.wait_covered(setup.records, Duration::from_secs(180), &mut [&mut job]);
    // Every source idle: the watermark moves to the end of the data.
    std::thread::sleep(Duration::from_secs(4));
    job.stop(Duration::from_secs(30));
    setup.verify();

    // Every malformed record is in the dead-letter topic, with its origin and reason.
    let dead = read_topics(&setup.kafka, &[&setup.dead_letters]);
    assert_eq!(
        dead.len() as u64,
        setup.malformed,
        "one dead letter per malformed record"
    );
    for d in &dead {
        let h: BTreeMap<&str, &str> = d
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(h.contains_key("cxpulse.source.offset"), "{h:?}");
        assert!(
            h.get("cxpulse.error.reason").is_some_and(|r| !r.is_empty()),
            "{h:?}"
        );
    }
    setup.drop_database();
}

#[test]
fn kill_9_mid_stream_and_restart_is_still_exact() {
    let Some(s) = servers("kill_9_mid_stream_and_restart_is_still_exact") else {
        return;
    };
    let _guard = lock();
    let mut setup = Setup::new(&s, "kill");
    setup.generate(COUNT, RATE, "0.01", "8");
    let mut job = setup.start_job("a");
    setup.wait_covered(setup.records, Duration::from_secs(180), &mut [&mut job]);
    // More traffic while the job runs, paced in real time (~20 s of wall clock), so that the
    // kill always lands mid-stream: kill -9 the job right after its first checkpoint that
    // covers some of the new records, while the generator is still sending (whatever the
    // job consumed after that checkpoint is lost with it and must be read again).
    let first = setup.records;
    let next_start = (START.parse::<i64>().expect("START") + 2_000_000).to_string();
    let mut more = setup.spawn_generate(COUNT, "1000", "0.01", "18", &next_start, Pacing::RealTime);
    let deadline = Instant::now() + Duration::from_secs(60);
    while setup.covered() <= first {
        assert!(
            Instant::now() < deadline,
            "no checkpoint covered the new records within 60 s; log:\n{}",
            job.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let still_sending = matches!(more.try_wait(), Ok(None));
    job.kill9();
    let covered_at_kill = setup.covered();
    setup.generated(more);
    assert!(
        still_sending && covered_at_kill < setup.records,
        "killed mid-stream (generator still sending: {still_sending}; \
         {covered_at_kill} of {} covered)",
        setup.records
    );
    let mut job = setup.start_job("b");
    setup.wait_covered(setup.records, Duration::from_secs(180), &mut [&mut job]);
    std::thread::sleep(Duration::from_secs(4));
    job.stop(Duration::from_secs(30));
    let log = std::fs::read_to_string(job_log(&setup, "b")).unwrap_or_default();
    assert!(
        log.contains("restored from checkpoint"),
        "the restart restored checkpoints"
    );
    setup.verify();
    setup.drop_database();
}

fn job_log(setup: &Setup, name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}_{name}.log", setup.database))
}

#[test]
fn two_instances_split_the_partitions_and_one_takes_over_after_a_kill() {
    let Some(s) = servers("two_instances_split_the_partitions_and_one_takes_over_after_a_kill")
    else {
        return;
    };
    let _guard = lock();
    // Side by side to the end.
    let mut setup = Setup::new(&s, "two");
    setup.generate(COUNT, RATE, "0.01", "9");
    let mut a = setup.start_job("a");
    let mut b = setup.start_job("b");
    setup.wait_covered(
        setup.records,
        Duration::from_secs(240),
        &mut [&mut a, &mut b],
    );
    std::thread::sleep(Duration::from_secs(4));
    a.stop(Duration::from_secs(30));
    b.stop(Duration::from_secs(30));
    let assigned = |name: &str| {
        std::fs::read_to_string(job_log(&setup, name))
            .unwrap_or_default()
            .contains("cxpulse::commands::run: assigned")
    };
    assert!(
        assigned("a") && assigned("b"),
        "both instances got partitions"
    );
    setup.verify();
    setup.drop_database();

    // One of them killed mid-stream: the other takes its partitions over.
    let mut setup = Setup::new(&s, "takeover");
    setup.generate(COUNT, RATE, "0.01", "10");
    let mut a = setup.start_job("a");
    let mut b = setup.start_job("b");
    setup.wait_covered(
        setup.records * 2 / 5,
        Duration::from_secs(240),
        &mut [&mut a, &mut b],
    );
    a.kill9();
    setup.wait_covered(setup.records, Duration::from_secs(240), &mut [&mut b]);
    std::thread::sleep(Duration::from_secs(4));
    b.stop(Duration::from_secs(30));
    setup.verify();
    setup.drop_database();
}

fn servers_sh(args: &[&str], envs: &[(&str, &str)]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/servers.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("scripts/servers.sh runs");
    assert!(
        out.status.success(),
        "servers.sh {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn clickhouse_down_for_30_s_mid_stream_is_still_exact() {
    let Some(s) = servers("clickhouse_down_for_30_s_mid_stream_is_still_exact") else {
        return;
    };
    let _guard = lock();
    let mut setup = Setup::new(&s, "chdown");
    setup.generate(COUNT, RATE, "0.01", "11");
    let mut job = setup.start_job("a");
    setup.wait_covered(setup.records, Duration::from_secs(180), &mut [&mut job]);
    // ClickHouse goes down, then more traffic arrives: the job must hold it until the sink
    // is back (nothing lost, nothing doubled).
    servers_sh(&["stop", "clickhouse"], &[]);
    let stopped = Instant::now();
    let next_start = (START.parse::<i64>().expect("START") + 2_000_000).to_string();
    let more = setup.spawn_generate(
        COUNT,
        RATE,
        "0.01",
        "21",
        &next_start,
        Pacing::AsFastAsPossible,
    );
    setup.generated(more);
    std::thread::sleep(Duration::from_secs(30).saturating_sub(stopped.elapsed()));
    // The job kept running without its sink.
    assert!(
        job.child.try_wait().ok().flatten().is_none(),
        "the job survives ClickHouse being down; log:\n{}",
        job.log_tail()
    );
    servers_sh(&["start", "clickhouse"], &[]);
    eprintln!("ClickHouse was down for {:?}", stopped.elapsed());
    setup.wait_covered(setup.records, Duration::from_secs(240), &mut [&mut job]);
    std::thread::sleep(Duration::from_secs(4));
    job.stop(Duration::from_secs(30));
    let log = std::fs::read_to_string(job_log(&setup, "a")).unwrap_or_default();
    assert!(
        log.contains("ClickHouse is back"),
        "the job noticed the outage and recovered"
    );
    setup.verify();
    setup.drop_database();
}

#[test]
fn ten_thousand_malformed_records_all_reach_the_dead_letter_topic() {
    let Some(s) = servers("ten_thousand_malformed_records_all_reach_the_dead_letter_topic") else {
        return;
    };
    let _guard = lock();
    let mut setup = Setup::new(&s, "malformed");
    setup.generate(50_000, "25", "0.2", "12");
    assert!(
        setup.malformed >= 9_500,
        "about 10,000 malformed ({})",
        setup.malformed
    );
    let mut job = setup.start_job("a");
    setup.wait_covered(setup.records, Duration::from_secs(300), &mut [&mut job]);
    std::thread::sleep(Duration::from_secs(4));
    job.stop(Duration::from_secs(30));
    let dead = read_topics(&setup.kafka, &[&setup.dead_letters]);
    assert_eq!(
        dead.len() as u64,
        setup.malformed,
        "every malformed record dead-lettered once"
    );
    // Each one is the original bytes of a record at the offset its headers name.
    let sources = read_topics(&setup.kafka, &[&setup.touchpoints, &setup.surveys]);
    let by_position: BTreeMap<(String, i32, i64), &Vec<u8>> = sources
        .iter()
        .map(|r| {
            let topic = if r.topic == 0 {
                &setup.touchpoints
            } else {
                &setup.surveys
            };
            ((topic.clone(), r.partition, r.offset), &r.payload)
        })
        .collect();
    let mut reasons = BTreeSet::new();
    for d in &dead {
        let h: BTreeMap<&str, &str> = d
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let pos = (
            h["cxpulse.source.topic"].to_string(),
            h["cxpulse.source.partition"]
                .parse::<i32>()
                .expect("partition"),
            h["cxpulse.source.offset"].parse::<i64>().expect("offset"),
        );
        assert_eq!(
            by_position.get(&pos).map(|p| p.as_slice()),
            Some(d.payload.as_slice()),
            "dead letter {pos:?} carries the original bytes"
        );
        reasons.insert(h["cxpulse.error.reason"].to_string());
    }
    assert!(
        reasons.len() >= 4,
        "several kinds of bad input: {reasons:?}"
    );
    setup.verify();
    setup.drop_database();
}

#[test]
fn broker_restart_mid_stream_is_still_exact() {
    let Some(s) = servers("broker_restart_mid_stream_is_still_exact") else {
        return;
    };
    let _guard = lock();
    // Durable broker storage, so the restart keeps topics, data and offsets.
    let durable = [("CXPULSE_KAFKA_STORAGE", "s3")];
    servers_sh(&["start", "s3"], &durable);
    servers_sh(&["restart", "kafka"], &durable);
    let mut setup = Setup::new(&s, "broker");
    setup.generate(COUNT, RATE, "0.01", "13");
    let mut job = setup.start_job("a");
    setup.wait_covered(setup.records / 3, Duration::from_secs(180), &mut [&mut job]);
    servers_sh(&["restart", "kafka"], &durable);
    setup.wait_covered(setup.records, Duration::from_secs(300), &mut [&mut job]);
    std::thread::sleep(Duration::from_secs(4));
    job.stop(Duration::from_secs(30));
    setup.verify();
    setup.drop_database();
}
