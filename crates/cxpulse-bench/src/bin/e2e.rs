//! End to end: records on tansu → `cxpulse run` (release binary, a child process) → ClickHouse.
//!
//! `e2e [records] [latency_rate] [latency_seconds]` (defaults 200000, 50000, 10) against the
//! servers of `scripts/servers.sh` (`CXPULSE_TEST_KAFKA`, `CXPULSE_TEST_CLICKHOUSE_URL`;
//! defaults 127.0.0.1:19092 and http://127.0.0.1:18123). The job binary is `CXPULSE_BIN`
//! or `target/release/cxpulse`.
//!
//! (a) Throughput: `cxpulse generate` backfills `records` records into fresh topics; the job
//! starts; the time from its start until its `assigned` log line is the group-join wait
//! (reported separately); the time from then until the partitions' checkpoints in ClickHouse
//! cover every record is the end-to-end time.
//! (b) Raw read: a plain rdkafka `BaseConsumer` that does nothing but count assigns every
//! partition of the same topics from the beginning and reads until it has counted every record.
//! (c) Latency: with the job running on fresh topics, `cxpulse generate --realtime` produces at
//! `latency_rate` events/s for `latency_seconds`; ClickHouse's `survey_responses` is polled, and
//! per survey response the latency is (first poll that saw its row) − (its Kafka timestamp,
//! i.e. the producer's CreateTime, set when the producer accepted it).
use anyhow::{bail, Context, Result};
use cxpulse::commands::run::CheckpointEnvelope;
use cxpulse::test_stack::{unique, StackJob};
use cxpulse_clickhouse::{ClickHouseSink, Client, Settings, SinkConfig};
use cxpulse_kafka::rdkafka::config::ClientConfig;
use cxpulse_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use cxpulse_kafka::rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 3;
/// Event time of the backfill (2026-01-01T00:00Z), as in the stream-job tests.
const START: &str = "1767225600000";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// One scenario's topics, database and consumer group, as `CXPULSE_*` variables.
struct Setup {
    bin: PathBuf,
    kafka: String,
    clickhouse: String,
    touchpoints: String,
    surveys: String,
    database: String,
    group: String,
    job: StackJob,
}

impl Setup {
    fn new(bin: &std::path::Path, kafka: &str, clickhouse: &str, tag: &str) -> Setup {
        let job = StackJob::new(kafka, clickhouse, &unique(tag))
            .quick()
            .with("RUST_LOG", "info");
        Setup {
            bin: bin.to_path_buf(),
            kafka: kafka.to_string(),
            clickhouse: clickhouse.to_string(),
            touchpoints: job.touchpoints.clone(),
            surveys: job.surveys.clone(),
            database: job.database.clone(),
            group: job.group.clone(),
            job,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        self.job.command(&self.bin, args)
    }

    /// Runs `cxpulse generate` with `args`; returns the records sent.
    fn generate(&self, args: &[&str]) -> Result<u64> {
        let partitions = PARTITIONS.to_string();
        let mut all = vec!["generate", "--partitions", &partitions];
        all.extend_from_slice(args);
        let out = self.command(&all).output().context("cxpulse generate")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "generate failed: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        stdout
            .split("sent ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no record count in {stdout:?}"))
    }

    fn start_job(&self) -> Result<Job> {
        let log = std::env::temp_dir().join(format!("{}.log", self.database));
        let file = std::fs::File::create(&log)?;
        let child = self
            .command(&["run"])
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()
            .context("cxpulse run")?;
        Ok(Job {
            child,
            log,
            started: Instant::now(),
        })
    }

    fn sink(&self) -> Result<ClickHouseSink> {
        let settings = Settings {
            database: self.database.clone(),
            ..Settings::default()
        };
        Ok(ClickHouseSink::new(
            &Client::default().with_url(&self.clickhouse),
            &settings,
            SinkConfig::default(),
        )?)
    }

    /// Records covered by the partitions' latest checkpoints.
    fn covered(&self, rt: &tokio::runtime::Runtime, sink: &ClickHouseSink) -> u64 {
        (0..PARTITIONS)
            .filter_map(|p| {
                rt.block_on(sink.load_checkpoint(&self.group, p))
                    .ok()
                    .flatten()
            })
            .filter_map(|c| CheckpointEnvelope::decode(&c.state).ok())
            .map(|e| e.version())
            .sum()
    }

    /// Polls the checkpoints every 100 ms until they cover `records`; returns when.
    fn wait_covered(&self, records: u64, job: &mut Job, limit: Duration) -> Result<Instant> {
        let rt = runtime();
        let sink = self.sink()?;
        let deadline = Instant::now() + limit;
        loop {
            let covered = self.covered(&rt, &sink);
            if covered >= records {
                return Ok(Instant::now());
            }
            job.alive()?;
            if Instant::now() > deadline {
                bail!("checkpoints cover {covered} of {records} after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn drop_database(&self) {
        let rt = runtime();
        let _ = rt.block_on(
            Client::default()
                .with_url(&self.clickhouse)
                .query(&format!("DROP DATABASE IF EXISTS `{}`", self.database))
                .execute(),
        );
    }

    fn consumer(&self) -> Result<BaseConsumer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", &self.kafka)
            .set("group.id", unique("e2e-raw"))
            .set("enable.auto.commit", "false")
            .set("fetch.queue.backoff.ms", "10")
            .create()?)
    }

    /// Every partition of both topics, from the beginning.
    fn assignment(&self, consumer: &BaseConsumer) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for t in [&self.touchpoints, &self.surveys] {
            for p in 0..PARTITIONS {
                tpl.add_partition_offset(t, p, Offset::Beginning)?;
            }
        }
        consumer.fetch_metadata(None, Duration::from_secs(10))?;
        Ok(tpl)
    }
}

struct Job {
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl Job {
    fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the job exited ({status}); log: {}", self.log.display());
        }
        Ok(())
    }

    /// Waits for the job's `assigned` log line (group joined, partitions assigned).
    fn wait_assigned(&mut self, limit: Duration) -> Result<Instant> {
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.lines().any(|l| l.contains(" assigned")) {
                return Ok(Instant::now());
            }
            self.alive()?;
            if self.started.elapsed() > limit {
                bail!("no partitions assigned after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Load average over the last minute.
fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn throughput(setup: &Setup, records: u64) -> Result<()> {
    let t = Instant::now();
    let sent = setup.generate(&[
        "--count",
        &records.to_string(),
        "--seed",
        "7",
        "--rate",
        "2000",
        "--start",
        START,
    ])?;
    println!(
        "generated {sent} records in {:.1} s (topics {}, {})",
        t.elapsed().as_secs_f64(),
        setup.touchpoints,
        setup.surveys
    );

    // (b) The raw read: a consumer that only counts.
    let consumer = setup.consumer()?;
    let tpl = setup.assignment(&consumer)?;
    let t = Instant::now();
    consumer.assign(&tpl)?;
    let mut n = 0u64;
    while n < sent {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m?;
            n += 1;
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("raw consumer read {n} of {sent} in 300 s");
        }
    }
    let raw_s = t.elapsed().as_secs_f64();
    drop(consumer);
    let raw_rate = sent as f64 / raw_s;
    println!("raw rdkafka read: {sent} records in {raw_s:.2} s = {raw_rate:.0} records/s");

    // (a) The job, end to end.
    let load_before = load1();
    let mut job = setup.start_job()?;
    let assigned = job.wait_assigned(Duration::from_secs(60))?;
    let join_s = (assigned - job.started).as_secs_f64();
    let done = setup.wait_covered(sent, &mut job, Duration::from_secs(600))?;
    let e2e_s = (done - assigned).as_secs_f64();
    let cpu = cpu_seconds(job.child.id()).unwrap_or(f64::NAN);
    let load_after = load1();
    job.stop();
    let rate = sent as f64 / e2e_s;
    println!(
        "job start → assigned (group join wait, incl. process start + migrations): {join_s:.2} s"
    );
    println!(
        "assigned → checkpoints cover all {sent}: {e2e_s:.2} s = {rate:.0} events/s end to end \
         (job CPU {cpu:.1} s = {:.0} events per job CPU-s; load1 {load_before} → {load_after})",
        sent as f64 / cpu
    );
    println!(
        "ratio end to end / raw read = {:.2} (target ≥ 0.8)",
        rate / raw_rate
    );
    Ok(())
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn latency(setup: &Setup, rate: u64, seconds: u64) -> Result<()> {
    // Topics exist before the job subscribes: one record creates them.
    setup.generate(&["--count", "1", "--seed", "3"])?;
    let mut job = setup.start_job()?;
    job.wait_assigned(Duration::from_secs(60))?;
    setup.wait_covered(1, &mut job, Duration::from_secs(60))?;

    let count = rate * seconds;
    let mut generator = setup
        .command(&[
            "generate",
            "--partitions",
            &PARTITIONS.to_string(),
            "--realtime",
            "--rate",
            &rate.to_string(),
            "--count",
            &count.to_string(),
            "--seed",
            "11",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cxpulse generate --realtime")?;
    let gen_start = Instant::now();

    let rt = runtime();
    let client = Client::default()
        .with_url(&setup.clickhouse)
        .with_database(&setup.database);
    // First time each (partition, offset) of survey_responses was seen.
    let mut seen: HashMap<(i32, i64), i64> = HashMap::new();
    let mut max_offset: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, -1)).collect();
    let mut gen_s = None;
    let mut quiet_since = Instant::now();
    let mut polls = 0u64;
    loop {
        let issued = now_ms();
        let cond = max_offset
            .iter()
            .map(|(p, o)| format!("(`partition` = {p} AND `offset` > {o})"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let rows: Vec<(i32, i64)> = rt
            .block_on(
                client
                    .query(&format!(
                        "SELECT `partition`, `offset` FROM survey_responses WHERE {cond}"
                    ))
                    .fetch_all(),
            )
            .context("polling survey_responses")?;
        polls += 1;
        if !rows.is_empty() {
            quiet_since = Instant::now();
        }
        for (p, o) in rows {
            seen.entry((p, o)).or_insert(issued);
            let m = max_offset.entry(p).or_insert(-1);
            *m = (*m).max(o);
        }
        if gen_s.is_none() {
            if let Some(status) = generator.try_wait()? {
                if !status.success() {
                    bail!("generate --realtime failed ({status})");
                }
                gen_s = Some(gen_start.elapsed().as_secs_f64());
                quiet_since = Instant::now();
            }
        } else if quiet_since.elapsed() > Duration::from_secs(5) {
            break;
        }
        job.alive()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu = cpu_seconds(job.child.id()).unwrap_or(f64::NAN);
    let load = load1();
    job.stop();
    let gen_s = gen_s.unwrap_or(f64::NAN);
    let mut out = String::new();
    if let Some(mut s) = generator.stdout.take() {
        use std::io::Read;
        s.read_to_string(&mut out)?;
    }
    println!("{}", out.trim());

    // The produce times: the surveys' Kafka timestamps (producer CreateTime).
    let consumer = setup.consumer()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&setup.surveys, p, Offset::Beginning)?;
    }
    consumer.fetch_metadata(None, Duration::from_secs(10))?;
    consumer.assign(&tpl)?;
    let mut produced: HashMap<(i32, i64), i64> = HashMap::new();
    let mut quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(3) {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            quiet = Instant::now();
            if let Some(ts) = m.timestamp().to_millis() {
                produced.insert((m.partition(), m.offset()), ts);
            }
        }
    }
    let mut lat: Vec<i64> = seen
        .iter()
        .filter_map(|(k, seen_at)| produced.get(k).map(|ts| seen_at - ts))
        .collect();
    lat.sort_unstable();
    let (first, last) = (
        produced.values().min().copied().unwrap_or(0),
        produced.values().max().copied().unwrap_or(0),
    );
    println!(
        "latency run: {count} records asked at {rate}/s; generate took {gen_s:.1} s \
         (achieved {:.0} records/s); survey timestamps span {:.1} s; job CPU {cpu:.1} s; load1 {load}",
        count as f64 / gen_s,
        (last - first) as f64 / 1000.0
    );
    if lat.is_empty() {
        bail!(
            "no survey response matched ({} seen, {} produced)",
            seen.len(),
            produced.len()
        );
    }
    println!(
        "survey responses: {} on the topic, {} rows seen in ClickHouse ({polls} polls, ~50 ms apart); \
         produce (Kafka CreateTime) → row visible: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        produced.len(),
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let records: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let kafka = env("CXPULSE_TEST_KAFKA").unwrap_or_else(|| "127.0.0.1:19092".into());
    let clickhouse =
        env("CXPULSE_TEST_CLICKHOUSE_URL").unwrap_or_else(|| "http://127.0.0.1:18123".into());
    let bin = PathBuf::from(env("CXPULSE_BIN").unwrap_or_else(|| "target/release/cxpulse".into()));
    if !bin.exists() {
        bail!("{} not found (set CXPULSE_BIN)", bin.display());
    }
    println!(
        "e2e: {records} records, latency at {rate}/s for {seconds} s; {} CPUs; load1 {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load1()
    );
    if records > 0 {
        let setup = Setup::new(&bin, &kafka, &clickhouse, "e2e");
        let r = throughput(&setup, records);
        setup.drop_database();
        r?;
    }
    if rate > 0 && seconds > 0 {
        let setup = Setup::new(&bin, &kafka, &clickhouse, "e2elat");
        let r = latency(&setup, rate, seconds);
        setup.drop_database();
        r?;
    }
    Ok(())
}
