//! Integration tests against the real Kafka-protocol broker (tansu) started by
//! `scripts/servers.sh start kafka`; the broker address comes from `CXPULSE_TEST_KAFKA`.
//! Without that variable every test prints a skip message and passes.
//!
//! Every test uses fresh topic names and a fresh group id (tansu: a group that once used
//! cooperative-sticky rejects eager members; a member leaving during a pending join can
//! stall the next join). Counts are taken from what is delivered, never from watermarks
//! (tansu under-reports the high watermark).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cxpulse_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use cxpulse_kafka::rdkafka::message::{Headers, Message};
use cxpulse_kafka::rdkafka::{Offset, TopicPartitionList};
use cxpulse_kafka::{
    admin_client, ensure_topics, headers, AssignmentStrategy, DeadLetter, DeadLetterProducer,
    Error, EventProducer, KafkaSettings, KafkaSource, RecordKind, SourceEvent, SourcePartition,
    SourceRecord, StartOffset, TopicStatus,
};

const WAIT: Duration = Duration::from_secs(90);

fn broker(test: &str) -> Option<String> {
    match std::env::var("CXPULSE_TEST_KAFKA") {
        Ok(b) if !b.trim().is_empty() => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "warn,cxpulse_kafka=info".into()),
                )
                .with_test_writer()
                .try_init();
            Some(b)
        }
        _ => {
            eprintln!(
                "SKIPPED {test}: CXPULSE_TEST_KAFKA is not set (run `scripts/servers.sh start kafka` \
                 and `eval \"$(scripts/servers.sh env)\"`)"
            );
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Settings with fresh topics (4 partitions each, created) and a fresh group.
async fn fresh(broker: &str, test: &str) -> KafkaSettings {
    let mut s = KafkaSettings::for_tests(broker, &unique(&format!("g-{test}")));
    s.touchpoint_topic = unique(&format!("tp-{test}"));
    s.survey_topic = unique(&format!("sv-{test}"));
    s.dead_letter_topic = unique(&format!("dlq-{test}"));
    s.max_batch_records = 200;
    let admin = admin_client(&s).expect("admin client");
    let created = ensure_topics(
        &admin,
        &[
            (s.touchpoint_topic.as_str(), 4),
            (s.survey_topic.as_str(), 4),
            (s.dead_letter_topic.as_str(), 2),
        ],
    )
    .await
    .expect("create topics");
    assert!(
        created.iter().all(|(_, st)| *st == TopicStatus::Created),
        "{created:?}"
    );
    s
}

/// A realistic-ish payload (not extremely compressible) that names its index.
fn payload(tag: &str, i: usize) -> Vec<u8> {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut p = format!("{tag}:{i}:").into_bytes();
    for _ in 0..24 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.extend_from_slice(&x.to_le_bytes()[..4]);
    }
    p
}

fn key(i: usize) -> Vec<u8> {
    format!("customer-{}", i % 97).into_bytes()
}

/// Produces `n` keyed records tagged `tag` to `topic`; returns them (key, payload).
async fn produce(
    s: &KafkaSettings,
    topic: &str,
    tag: &str,
    range: std::ops::Range<usize>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let producer = EventProducer::new(s).expect("producer");
    let records: Vec<(Vec<u8>, Vec<u8>)> = range.map(|i| (key(i), payload(tag, i))).collect();
    let report = producer.send_all(topic, records.clone()).await;
    assert_eq!(report.failed, 0, "{:?}", report.first_error);
    assert_eq!(report.sent as usize, records.len());
    records
}

type Seen = Arc<Mutex<HashMap<(SourcePartition, i64), u32>>>;

/// A test member: follows the protocol (commit on revoke, then ack), records everything.
struct Member {
    name: String,
    src: KafkaSource,
    /// Next offset to commit per owned partition (everything delivered is "processed").
    next: BTreeMap<SourcePartition, i64>,
    owned: BTreeSet<SourcePartition>,
    records: Vec<SourceRecord>,
    starts: HashMap<SourcePartition, StartOffset>,
    seen: Seen,
    assignments: usize,
    revocations: usize,
    batch_delay: Duration,
}

impl Member {
    fn new(name: &str, s: &KafkaSettings, seen: Seen) -> Member {
        Member {
            name: name.to_owned(),
            src: KafkaSource::new(s).expect("source"),
            next: BTreeMap::new(),
            owned: BTreeSet::new(),
            records: Vec::new(),
            starts: HashMap::new(),
            seen,
            assignments: 0,
            revocations: 0,
            batch_delay: Duration::ZERO,
        }
    }

    async fn commit_all(&mut self) {
        let offsets: Vec<_> = self.next.iter().map(|(p, o)| (*p, *o)).collect();
        self.src.commit_off_thread(offsets).await.expect("commit");
    }

    /// Waits for one event and handles it; returns the number of records delivered.
    async fn step(&mut self) -> usize {
        let ev = tokio::time::timeout(WAIT, self.src.next())
            .await
            .unwrap_or_else(|_| panic!("{}: no event within {WAIT:?}", self.name))
            .expect("source event");
        self.handle(ev).await
    }

    /// Steps until `done()` holds.
    async fn run_until(&mut self, mut done: impl FnMut(&Member) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{}: condition not met within {WAIT:?}",
                self.name
            );
            self.step().await;
        }
    }

    /// Steps for `d` (to see that nothing more arrives).
    async fn run_for(&mut self, d: Duration) -> usize {
        let mut n = 0;
        let end = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                ev = self.src.next() => n += self.handle(ev.expect("event")).await,
                _ = tokio::time::sleep_until(end) => return n,
            }
        }
    }

    /// Follows the protocol for one event; returns the number of records delivered.
    async fn handle(&mut self, ev: SourceEvent) -> usize {
        match ev {
            SourceEvent::Records(batch) => {
                let n = batch.len();
                {
                    let mut seen = self.seen.lock().expect("seen");
                    for r in &batch {
                        let p = r.source_partition();
                        assert!(
                            self.owned.contains(&p),
                            "{}: record of unowned {p}",
                            self.name
                        );
                        *seen.entry((p, r.offset)).or_insert(0) += 1;
                        self.next.insert(p, r.next_offset());
                    }
                }
                self.records.extend(batch);
                if !self.batch_delay.is_zero() {
                    tokio::time::sleep(self.batch_delay).await;
                }
                n
            }
            SourceEvent::Revoked(rev) => {
                self.revocations += 1;
                let offsets: Vec<_> = rev
                    .partitions()
                    .iter()
                    .filter_map(|p| self.next.get(p).map(|o| (*p, *o)))
                    .collect();
                if !rev.is_lost() {
                    self.src
                        .commit_off_thread(offsets)
                        .await
                        .expect("commit on revoke");
                }
                for p in rev.partitions() {
                    self.owned.remove(p);
                    self.next.remove(p);
                }
                rev.ack().expect("revocation ack in time");
                0
            }
            SourceEvent::Assigned(a) => {
                self.assignments += 1;
                self.owned.extend(a.partitions().iter().copied());
                let starts: Vec<_> = a
                    .partitions()
                    .iter()
                    .filter_map(|p| self.starts.get(p).map(|s| (*p, *s)))
                    .collect();
                a.start(starts).expect("assignment answered in time");
                0
            }
        }
    }

    fn count(&self) -> usize {
        self.records.len()
    }
}

fn by_partition(records: &[SourceRecord]) -> BTreeMap<SourcePartition, Vec<i64>> {
    let mut m: BTreeMap<SourcePartition, Vec<i64>> = BTreeMap::new();
    for r in records {
        m.entry(r.source_partition()).or_default().push(r.offset);
    }
    m
}

fn assert_contiguous(offsets: &[i64], from: i64, what: &str) {
    for (i, o) in offsets.iter().enumerate() {
        assert_eq!(
            *o,
            from + i as i64,
            "{what}: offsets not contiguous from {from}: {offsets:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_all_exactly_once_with_commits() {
    let Some(b) = broker("produce_and_consume_all_exactly_once_with_commits") else {
        return;
    };
    let s = fresh(&b, "once").await;
    let tps = produce(&s, &s.touchpoint_topic, "tp", 0..3000).await;
    let svs = produce(&s, &s.survey_topic, "sv", 0..800).await;
    let total = tps.len() + svs.len();

    let seen: Seen = Default::default();
    let mut m = Member::new("solo", &s, seen.clone());
    m.run_until(|m| m.count() >= total).await;
    assert_eq!(m.run_for(Duration::from_secs(2)).await, 0, "extra records");
    m.commit_all().await;

    // Exactly once, byte-exact, offsets contiguous from 0 per partition.
    assert_eq!(m.count(), total);
    assert!(seen.lock().expect("seen").values().all(|n| *n == 1));
    let mut got_tp: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut got_sv: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut key_partition: HashMap<(RecordKind, Vec<u8>), i32> = HashMap::new();
    for r in &m.records {
        let k = r.key.clone().expect("key");
        let prev = key_partition.insert((r.topic_kind, k.clone()), r.partition);
        assert!(
            prev.is_none() || prev == Some(r.partition),
            "a key spans partitions"
        );
        assert!(r.timestamp_ms.is_some());
        assert_eq!(
            &*r.topic,
            match r.topic_kind {
                RecordKind::Touchpoint => s.touchpoint_topic.as_str(),
                RecordKind::Survey => s.survey_topic.as_str(),
            }
        );
        let pair = (k, r.payload.clone().expect("payload"));
        match r.topic_kind {
            RecordKind::Touchpoint => got_tp.push(pair),
            RecordKind::Survey => got_sv.push(pair),
        }
    }
    let sorted = |mut v: Vec<(Vec<u8>, Vec<u8>)>| {
        v.sort();
        v
    };
    assert_eq!(sorted(got_tp), sorted(tps.clone()));
    assert_eq!(sorted(got_sv), sorted(svs.clone()));
    let parts = by_partition(&m.records);
    assert_eq!(
        parts.len(),
        8,
        "all 4+4 partitions used: {:?}",
        parts.keys()
    );
    for (p, offs) in &parts {
        assert_contiguous(offs, 0, &p.to_string());
    }
    // Engine ids: distinct across the two topics.
    let ids: BTreeSet<i32> = parts.keys().map(|p| p.engine_partition()).collect();
    assert_eq!(ids, (0..8).collect());

    // The commits are visible to the group.
    let all: Vec<SourcePartition> = parts.keys().copied().collect();
    let committed = m.src.committed(&all).expect("committed");
    for (p, off) in committed {
        assert_eq!(off, Some(parts[&p].len() as i64), "{p}");
    }
    let mut assignment = m.src.assignment().expect("assignment");
    assignment.sort();
    assert_eq!(assignment, all);
    // Watermarks answer (values are not trusted on tansu).
    let w = m
        .src
        .watermarks(SourcePartition::touchpoint(0))
        .expect("watermarks");
    assert!(w.low >= 0 && w.high >= w.low, "{w:?}");
    m.src.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_consumer_resumes_exactly_at_committed_offsets() {
    let Some(b) = broker("restarted_consumer_resumes_exactly_at_committed_offsets") else {
        return;
    };
    let s = fresh(&b, "restart").await;
    let n = 4000;
    produce(&s, &s.touchpoint_topic, "tp", 0..n).await;

    let seen: Seen = Default::default();
    let mut first = Member::new("first", &s, seen.clone());
    first.run_until(|m| m.count() >= n / 2).await;
    // Commit from another task through a handle, as the sink side of the job does.
    let handle = first.src.handle();
    let offsets: Vec<_> = first.next.iter().map(|(p, o)| (*p, *o)).collect();
    tokio::spawn({
        let (handle, offsets) = (handle.clone(), offsets.clone());
        async move { handle.commit_off_thread(offsets).await }
    })
    .await
    .expect("commit task")
    .expect("commit through a handle");
    let committed = first.next.clone();
    let first_count = first.count();
    assert!(
        first_count < n,
        "first member read everything: make n larger"
    );
    first.src.close().await.expect("close");
    // Handles do not keep the consumer alive.
    assert!(matches!(handle.commit(&offsets), Err(Error::Closed)));
    assert!(matches!(handle.assignment(), Err(Error::Closed)));

    let mut second = Member::new("second", &s, seen.clone());
    second.run_until(|m| first_count + m.count() >= n).await;
    assert_eq!(
        second.run_for(Duration::from_secs(2)).await,
        0,
        "extra records"
    );
    assert_eq!(first_count + second.count(), n, "lost or duplicated");
    assert!(
        seen.lock().expect("seen").values().all(|c| *c == 1),
        "duplicates"
    );
    // The second member started each partition exactly at the committed offset.
    for (p, offs) in by_partition(&second.records) {
        let from = committed.get(&p).copied().unwrap_or(0);
        assert_contiguous(&offs, from, &p.to_string());
    }
    second.commit_all().await;
    second.src.close().await.expect("close");
}

/// Runs two members concurrently; `b` joins after `a` has read `join_after` records.
async fn two_members_hand_over(test: &str, strategy: AssignmentStrategy, tag: &str) {
    let Some(b) = broker(test) else {
        return;
    };
    let mut s = fresh(&b, tag).await;
    s.assignment_strategy = strategy;
    s.max_batch_records = 50;
    // Both topics get records (the cooperative-sticky assignor may give one member all
    // partitions of one topic).
    let n_first = 4000;
    let n_second = 3000;
    let total = 2 * (n_first + n_second);
    produce(&s, &s.touchpoint_topic, "tp", 0..n_first).await;
    produce(&s, &s.survey_topic, "sv", 0..n_first).await;

    let seen: Seen = Default::default();
    let distinct = |seen: &Seen| seen.lock().expect("seen").len();
    let mut a = Member::new("a", &s, seen.clone());
    a.batch_delay = Duration::from_millis(15);
    a.run_until(|m| m.count() >= 1000).await;

    // The second member joins mid-stream while more records are produced.
    let s2 = s.clone();
    let seen2 = seen.clone();
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop2 = stop.clone();
    let second = tokio::spawn(async move {
        let mut m = Member::new("b", &s2, seen2);
        m.batch_delay = Duration::from_millis(15);
        loop {
            tokio::select! {
                ev = m.src.next() => { m.handle(ev.expect("b event")).await; }
                _ = stop2.notified() => break,
            }
        }
        m
    });
    let producer = {
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let end = n_first + n_second;
            produce(&s, &s.touchpoint_topic, "tp", n_first..end).await;
            produce(&s, &s.survey_topic, "sv", n_first..end).await;
        })
    };
    let deadline = Instant::now() + WAIT;
    while distinct(&seen) < total {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} distinct records",
            distinct(&seen)
        );
        tokio::select! {
            ev = a.src.next() => { a.handle(ev.expect("a event")).await; }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    producer.await.expect("producer task");
    // Let anything extra (a duplicate) show up.
    a.run_for(Duration::from_secs(2)).await;
    stop.notify_one();
    let mut bm = second.await.expect("member b");

    let seen = seen.lock().expect("seen").clone();
    let dups: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert_eq!(seen.len(), total, "lost records");
    assert!(
        dups.is_empty(),
        "{} duplicated records, e.g. {:?}",
        dups.len(),
        dups.first()
    );
    assert_eq!(a.count() + bm.count(), total);
    assert!(
        a.revocations >= 1,
        "a was never revoked: the second member did not join"
    );
    assert!(bm.count() > 0, "b got nothing");
    let owned_a: BTreeSet<_> = a.owned.clone();
    let owned_b: BTreeSet<_> = bm.owned.clone();
    assert!(owned_a.is_disjoint(&owned_b));
    assert_eq!(owned_a.len() + owned_b.len(), 8, "{owned_a:?} {owned_b:?}");
    assert_eq!(owned_a.len(), 4, "{owned_a:?} {owned_b:?}");
    // Per partition, the union of what both members read is contiguous from 0.
    let mut all = a.records.clone();
    all.extend(bm.records.iter().cloned());
    all.sort_by_key(|r| (r.source_partition(), r.offset));
    for (p, offs) in by_partition(&all) {
        assert_contiguous(&offs, 0, &p.to_string());
    }
    a.commit_all().await;
    bm.commit_all().await;
    let (ra, rb) = tokio::join!(a.src.close(), bm.src.close());
    ra.expect("close a");
    rb.expect("close b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_members_split_partitions_and_hand_over_without_loss_or_duplicates() {
    two_members_hand_over(
        "eager_members_split_partitions_and_hand_over_without_loss_or_duplicates",
        AssignmentStrategy::Range,
        "eager",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_members_split_partitions_and_hand_over_without_loss_or_duplicates() {
    two_members_hand_over(
        "cooperative_members_split_partitions_and_hand_over_without_loss_or_duplicates",
        AssignmentStrategy::CooperativeSticky,
        "coop",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignment_starts_at_application_offsets_and_seek_repositions() {
    let Some(b) = broker("assignment_starts_at_application_offsets_and_seek_repositions") else {
        return;
    };
    let s = fresh(&b, "seek").await;
    let n = 800;
    produce(&s, &s.touchpoint_topic, "tp", 0..n).await;
    // Learn the partition sizes with a throw-away group.
    let sizes: BTreeMap<SourcePartition, i64> = {
        let mut probe_settings = s.clone();
        probe_settings.group_id = unique("g-seek-probe");
        let mut probe = Member::new("probe", &probe_settings, Default::default());
        probe.run_until(|m| m.count() >= n).await;
        let sizes = by_partition(&probe.records)
            .into_iter()
            .map(|(p, o)| (p, o.len() as i64))
            .collect();
        probe.src.close().await.expect("close probe");
        sizes
    };
    assert_eq!(sizes.len(), 4);
    assert!(sizes.values().all(|n| *n > 10), "{sizes:?}");
    let tp = SourcePartition::touchpoint;

    let seen: Seen = Default::default();
    let mut m = Member::new("restorer", &s, seen.clone());
    // What a restored checkpoint would say: p0 from 5, p1 from 7, p2 from the beginning,
    // p3 from the committed offset (none: earliest).
    m.starts.insert(tp(0), StartOffset::At(5));
    m.starts.insert(tp(1), StartOffset::At(7));
    m.starts.insert(tp(2), StartOffset::Beginning);
    m.starts.insert(tp(3), StartOffset::Committed);
    let expected = n - 5 - 7;
    m.run_until(|m| m.count() >= expected).await;
    assert_eq!(m.run_for(Duration::from_secs(1)).await, 0, "extra records");
    let parts = by_partition(&m.records);
    assert_contiguous(&parts[&tp(0)], 5, "p0");
    assert_contiguous(&parts[&tp(1)], 7, "p1");
    assert_contiguous(&parts[&tp(2)], 0, "p2");
    assert_contiguous(&parts[&tp(3)], 0, "p3");
    for (p, offs) in &parts {
        assert_eq!(
            *offs.last().expect("offsets") + 1,
            sizes[p],
            "{p} read to its end"
        );
    }

    // A seek of an already fetching partition: p2 again from offset 3.
    let before = m.count();
    m.src
        .seek(tp(2), 3)
        .expect("seek")
        .await
        .expect("seek applied");
    let again = (sizes[&tp(2)] - 3) as usize;
    m.run_until(|m| m.count() >= before + again).await;
    assert_eq!(
        m.run_for(Duration::from_secs(1)).await,
        0,
        "extra records after seek"
    );
    let replay = by_partition(&m.records[before..]);
    assert_eq!(replay.len(), 1, "only the sought partition replays");
    assert_contiguous(&replay[&tp(2)], 3, "p2 after seek");

    // A seek of a partition that is not assigned fails cleanly.
    let err = m
        .src
        .seek(SourcePartition::survey(99), 0)
        .expect("queued")
        .await
        .expect_err("not assigned");
    assert!(matches!(err, Error::Partition { op: "seek", .. }), "{err}");
    m.src.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_assignment_starts_paused_then_seek_and_resume() {
    let Some(b) = broker("unanswered_assignment_starts_paused_then_seek_and_resume") else {
        return;
    };
    let mut s = fresh(&b, "late").await;
    s.rebalance_ack_timeout_ms = 1500;
    produce(&s, &s.touchpoint_topic, "tp", 0..400).await;
    let mut src = KafkaSource::new(&s).expect("source");
    let first = tokio::time::timeout(WAIT, src.next())
        .await
        .expect("event")
        .expect("event");
    let SourceEvent::Assigned(assignment) = first else {
        panic!("expected an assignment first, got {first:?}");
    };
    let parts = assignment.partitions().to_vec();
    assert_eq!(parts.len(), 8);
    // Too slow: the callback gives up and assigns the partitions paused.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let err = assignment.start_from_committed().expect_err("late");
    assert!(
        matches!(err, Error::AckTooLate { waited_ms: 1500 }),
        "{err}"
    );
    // Nothing flows while paused.
    let quiet = tokio::time::timeout(Duration::from_secs(2), src.next()).await;
    assert!(
        quiet.is_err(),
        "records flowed from paused partitions: {quiet:?}"
    );
    // Seek p1 to 4 and resume everything: p1 starts at 4, the others at 0.
    let tp1 = SourcePartition::touchpoint(1);
    src.seek(tp1, 4).expect("seek").await.expect("seek applied");
    src.resume(&parts)
        .expect("resume")
        .await
        .expect("resume applied");
    let mut got: Vec<SourceRecord> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < 400 - 4 {
        assert!(Instant::now() < deadline);
        if let SourceEvent::Records(r) = src.next().await.expect("event") {
            got.extend(r);
        }
    }
    for (p, offs) in by_partition(&got) {
        assert_contiguous(&offs, if p == tp1 { 4 } else { 0 }, &p.to_string());
    }
    src.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_one_partition_while_others_continue() {
    let Some(b) = broker("pause_stops_one_partition_while_others_continue") else {
        return;
    };
    let s = fresh(&b, "pause").await;
    let n = 600;
    // Phase 1: learn which partition each key goes to.
    produce(&s, &s.touchpoint_topic, "one", 0..n).await;
    let seen: Seen = Default::default();
    let mut m = Member::new("pauser", &s, seen);
    m.run_until(|m| m.count() >= n).await;
    let phase1 = by_partition(&m.records);
    let paused = SourcePartition::touchpoint(0);
    m.src
        .pause(&[paused])
        .expect("pause")
        .await
        .expect("pause applied");

    // Phase 2: the same keys again: the same partitions get the same counts.
    produce(&s, &s.touchpoint_topic, "two", 0..n).await;
    let others: usize = phase1
        .iter()
        .filter(|(p, _)| **p != paused)
        .map(|(_, o)| o.len())
        .sum();
    m.run_until(|m| m.count() >= n + others).await;
    m.run_for(Duration::from_secs(2)).await;
    let phase2 = by_partition(&m.records[n..]);
    assert!(
        !phase2.contains_key(&paused),
        "paused partition delivered: {:?}",
        phase2.get(&paused)
    );
    assert_eq!(m.count(), n + others);

    // Resume: the paused partition continues exactly where it stopped.
    m.src
        .resume(&[paused])
        .expect("resume")
        .await
        .expect("resume applied");
    let p0 = phase1[&paused].len();
    m.run_until(|m| m.count() >= 2 * n).await;
    assert_eq!(m.run_for(Duration::from_secs(1)).await, 0, "extra records");
    let resumed = by_partition(&m.records[n + others..]);
    assert_eq!(resumed.len(), 1);
    assert_contiguous(&resumed[&paused], p0 as i64, "resumed p0");
    m.src.close().await.expect("close");
}

/// A slow application (and one that stops reading for a while) loses nothing and gets
/// nothing twice, whether the source only stops polling or pauses the partitions.
async fn backpressure(test: &str, tag: &str, pause_after_ms: u64) {
    let Some(b) = broker(test) else {
        return;
    };
    let mut s = fresh(&b, tag).await;
    s.channel_capacity = 2;
    s.max_batch_records = 25;
    s.backpressure_pause_after_ms = pause_after_ms;
    let n = 1500;
    produce(&s, &s.touchpoint_topic, "tp", 0..n).await;
    produce(&s, &s.survey_topic, "sv", 0..n / 3).await;
    let total = n + n / 3;
    let seen: Seen = Default::default();
    let mut m = Member::new("slow", &s, seen.clone());
    m.run_until(|m| m.count() >= 100).await;
    // Stall: the channel fills, the source stops polling, then (after pause_after) pauses.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    m.batch_delay = Duration::from_millis(10);
    m.run_until(|m| m.count() >= total).await;
    assert_eq!(m.run_for(Duration::from_secs(1)).await, 0, "extra records");
    assert!(seen.lock().expect("seen").values().all(|c| *c == 1));
    for (p, offs) in by_partition(&m.records) {
        assert_contiguous(&offs, 0, &p.to_string());
    }
    m.src.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_application_backpressure_without_pausing_loses_nothing() {
    backpressure(
        "slow_application_backpressure_without_pausing_loses_nothing",
        "slow-nopause",
        60_000,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_application_backpressure_with_auto_pause_loses_nothing() {
    backpressure(
        "slow_application_backpressure_with_auto_pause_loses_nothing",
        "slow-pause",
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_carry_headers_and_exact_bytes() {
    let Some(b) = broker("dead_letters_carry_headers_and_exact_bytes") else {
        return;
    };
    let s = fresh(&b, "dlq").await;
    // A record that "fails to decode", read through the source.
    let garbage: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
    EventProducer::new(&s)
        .expect("producer")
        .send(&s.touchpoint_topic, b"cust-\xff\x00", &garbage)
        .await
        .expect("send");
    let mut m = Member::new("reader", &s, Default::default());
    m.run_until(|m| m.count() >= 1).await;
    let rec = m.records[0].clone();
    m.src.close().await.expect("close");

    let dlq = DeadLetterProducer::new(&s).expect("dlq");
    let long = "x".repeat(10_000);
    let letters = [
        DeadLetter::from_record(&rec, "avro_decode", "bad magic byte 0xff at 0"),
        DeadLetter {
            source_topic: &s.survey_topic,
            source_partition: 3,
            source_offset: 1234,
            source_timestamp_ms: None,
            key: None,
            payload: Some(b""),
            reason: "UnknownSchema",
            message: "schema id 42 not registered — ünïcødé",
        },
        DeadLetter {
            source_topic: &s.survey_topic,
            source_partition: 0,
            source_offset: 7,
            source_timestamp_ms: Some(1_700_000_000_000),
            key: Some(b"k"),
            payload: None,
            reason: "too_late",
            message: &long,
        },
    ];
    for l in &letters {
        dlq.send(l).await.expect("dead letter delivered");
    }
    dlq.flush(Duration::from_secs(10)).expect("flush");

    // Read the dead-letter topic with a plain consumer.
    let consumer: BaseConsumer = cxpulse_kafka::rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", unique("g-dlq-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset(&s.dead_letter_topic, p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < letters.len() {
        assert!(
            Instant::now() < deadline,
            "dead letters missing: got {}",
            got.len()
        );
        let consumer = &consumer;
        let msg = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(200)));
        if let Some(msg) = msg {
            let msg = msg.expect("dlq message");
            let mut hs = BTreeMap::new();
            if let Some(h) = msg.headers() {
                for h in h.iter() {
                    hs.insert(
                        h.key.to_owned(),
                        String::from_utf8(h.value.expect("value").to_vec()).expect("utf8"),
                    );
                }
            }
            got.push((
                msg.key().map(<[u8]>::to_vec),
                msg.payload().map(<[u8]>::to_vec),
                hs,
            ));
        }
    }
    got.sort_by_key(|(_, _, h)| h[headers::SOURCE_OFFSET].parse::<i64>().expect("offset"));
    let (k, p, h) = &got[0]; // offset 0: the source record
    assert_eq!(k.as_deref(), Some(&b"cust-\xff\x00"[..]));
    assert_eq!(p.as_deref(), Some(&garbage[..]));
    assert_eq!(h[headers::SOURCE_TOPIC], s.touchpoint_topic);
    assert_eq!(h[headers::SOURCE_PARTITION], rec.partition.to_string());
    assert_eq!(h[headers::SOURCE_OFFSET], "0");
    assert_eq!(
        h[headers::SOURCE_TIMESTAMP],
        rec.timestamp_ms.expect("ts").to_string()
    );
    assert_eq!(h[headers::ERROR_REASON], "avro_decode");
    assert_eq!(h[headers::ERROR_MESSAGE], "bad magic byte 0xff at 0");
    let (k, p, h) = &got[1]; // offset 7
    assert_eq!(k.as_deref(), Some(&b"k"[..]));
    assert_eq!(p.as_deref(), None);
    assert_eq!(h[headers::SOURCE_TIMESTAMP], "1700000000000");
    assert_eq!(h[headers::ERROR_REASON], "too_late");
    assert!(h[headers::ERROR_MESSAGE].len() <= cxpulse_kafka::MAX_ERROR_MESSAGE_BYTES);
    assert!(h[headers::ERROR_MESSAGE].ends_with('…'));
    let (k, p, h) = &got[2]; // offset 1234
    assert_eq!(k.as_deref(), None);
    assert!(p.as_deref().is_none_or(|p| p.is_empty()), "{p:?}");
    assert_eq!(h[headers::SOURCE_TOPIC], s.survey_topic);
    assert_eq!(h[headers::SOURCE_PARTITION], "3");
    assert!(!h.contains_key(headers::SOURCE_TIMESTAMP));
    assert_eq!(h[headers::ERROR_REASON], "unknown_schema");
    assert_eq!(
        h[headers::ERROR_MESSAGE],
        "schema id 42 not registered — ünïcødé"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_topics_creates_missing_and_tolerates_existing() {
    let Some(b) = broker("ensure_topics_creates_missing_and_tolerates_existing") else {
        return;
    };
    let s = KafkaSettings::for_tests(&b, &unique("g-admin"));
    let admin = admin_client(&s).expect("admin");
    let t1 = unique("admin-a");
    let t2 = unique("admin-b");
    let first = ensure_topics(&admin, &[(t1.as_str(), 3)])
        .await
        .expect("create");
    assert_eq!(first, vec![(t1.clone(), TopicStatus::Created)]);
    let second = ensure_topics(&admin, &[(t1.as_str(), 3), (t2.as_str(), 2)])
        .await
        .expect("create again");
    assert_eq!(
        second,
        vec![
            (t1.clone(), TopicStatus::AlreadyExists),
            (t2.clone(), TopicStatus::Created)
        ]
    );
    let md = tokio::task::block_in_place(|| {
        admin
            .inner()
            .fetch_metadata(Some(&t1), Duration::from_secs(10))
    })
    .expect("metadata");
    assert_eq!(md.topics()[0].partitions().len(), 3);
    assert!(matches!(
        ensure_topics(&admin, &[("bad name!", 1)]).await,
        Err(Error::Config(_))
    ));
}
