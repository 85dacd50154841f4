//! The partition-aware Kafka source of the stream job.
//!
//! One consumer (one group) reads the touchpoint and the survey topic. A dedicated poll
//! thread owns every librdkafka poll, so rebalance callbacks run there and may block, bounded,
//! until the application has reacted:
//!
//! * **revoke**: the poll thread hands over every record it polled so far, then a
//!   [`SourceEvent::Revoked`]; it waits until the application calls [`Revocation::ack`] (after
//!   flushing and committing those partitions), or `rebalance_ack_timeout_ms`; only then are
//!   the partitions unassigned.
//! * **assign**: a [`SourceEvent::Assigned`] is handed over; the poll thread waits until the
//!   application answers with [`Assignment::start`] (its restored start offsets), and assigns
//!   the partitions **at those offsets** (the offsets are put into the assignment itself, so
//!   the first record of each partition is the one at the chosen offset: no record from the
//!   committed offset can flow before).
//!
//! Events reach the application in one ordered, bounded channel, so every record polled
//! before a revoke is delivered before the [`SourceEvent::Revoked`] that follows it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use crate::context::{forward_error, forward_log};
use crate::error::{Error, Result};
use crate::settings::KafkaSettings;

/// Highest Kafka partition number the source accepts: [`SourcePartition::engine_partition`]
/// (`partition * 2 + kind`) must fit an `i32`.
pub const MAX_PARTITION: i32 = (1 << 30) - 1;

/// How long the poll thread blocks in one librdkafka poll when idle (bounds the latency of
/// commands and of [`KafkaSource::close`]).
const POLL_TICK: Duration = Duration::from_millis(50);
/// How long the poll thread waits for room in the full event channel between two polls that
/// serve rebalance events.
const BACKPRESSURE_TICK: Duration = Duration::from_millis(5);
/// Granularity of the bounded waits inside rebalance callbacks.
const CALLBACK_TICK: Duration = Duration::from_millis(2);
/// Repeated identical consumer errors are logged at most this often.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Which source topic a record comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// The touchpoint topic.
    Touchpoint = 0,
    /// The survey topic.
    Survey = 1,
}

impl RecordKind {
    /// Both kinds, in engine-id order.
    pub const ALL: [RecordKind; 2] = [RecordKind::Touchpoint, RecordKind::Survey];

    /// 0 for touchpoints, 1 for surveys (the low bit of the engine partition id).
    pub fn index(self) -> i32 {
        self as i32
    }

    /// Stable lowercase name (`touchpoint` / `survey`), for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Touchpoint => "touchpoint",
            RecordKind::Survey => "survey",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A partition of one of the two source topics.
///
/// A Kafka partition number alone is ambiguous (partition 3 of the touchpoint topic and
/// partition 3 of the survey topic are different inputs with their own offsets), so the
/// engine keys its per-partition state by [`SourcePartition::engine_partition`]
/// = `partition * 2 + kind` (touchpoint = 0, survey = 1): `touchpoints[p]` ↦ `2p`,
/// `surveys[p]` ↦ `2p + 1`. The mapping is a bijection on `0..=MAX_PARTITION`
/// ([`SourcePartition::from_engine_partition`] inverts it); the source only yields partitions
/// in that range. `Debug` and `Display` print `touchpoint[3]` / `survey[3]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePartition {
    pub topic_kind: RecordKind,
    pub partition: i32,
}

impl SourcePartition {
    pub const fn new(topic_kind: RecordKind, partition: i32) -> Self {
        SourcePartition {
            topic_kind,
            partition,
        }
    }

    pub const fn touchpoint(partition: i32) -> Self {
        Self::new(RecordKind::Touchpoint, partition)
    }

    pub const fn survey(partition: i32) -> Self {
        Self::new(RecordKind::Survey, partition)
    }

    /// The engine's partition id: `partition * 2 + kind` (touchpoint 0, survey 1).
    /// Defined for `0 <= partition <= MAX_PARTITION`.
    pub fn engine_partition(&self) -> i32 {
        self.partition
            .wrapping_mul(2)
            .wrapping_add(self.topic_kind.index())
    }

    /// Inverse of [`SourcePartition::engine_partition`]; `None` for a negative id.
    pub fn from_engine_partition(id: i32) -> Option<Self> {
        if id < 0 {
            return None;
        }
        let kind = if id % 2 == 0 {
            RecordKind::Touchpoint
        } else {
            RecordKind::Survey
        };
        Some(SourcePartition::new(kind, id / 2))
    }
}

impl fmt::Display for SourcePartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.topic_kind, self.partition)
    }
}

impl fmt::Debug for SourcePartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One record as read from Kafka: bytes untouched (decoding is the next stage's job).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRecord {
    pub topic_kind: RecordKind,
    /// The topic's name (shared by all records of the topic).
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The record's Kafka timestamp (create or log-append time), if it has one.
    pub timestamp_ms: Option<i64>,
    /// Wall-clock time at which the poll thread received it.
    pub received_at_ms: i64,
}

impl SourceRecord {
    pub fn source_partition(&self) -> SourcePartition {
        SourcePartition::new(self.topic_kind, self.partition)
    }

    /// The offset to commit once this record is durable: `offset + 1`.
    pub fn next_offset(&self) -> i64 {
        self.offset.saturating_add(1)
    }
}

/// Where a newly assigned partition starts; the answer to a [`SourceEvent::Assigned`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOffset {
    /// The group's committed offset, or the beginning (`auto.offset.reset=earliest`) when
    /// there is none.
    Committed,
    /// This exact offset: the first record delivered is the one at `offset` (the engine
    /// passes its checkpoint offset + 1).
    At(i64),
    /// The log start.
    Beginning,
    /// The log end (only records produced from now on).
    End,
}

impl StartOffset {
    fn to_rdkafka(self) -> Offset {
        match self {
            // Invalid = "no explicit offset": librdkafka fetches the committed offset.
            StartOffset::Committed => Offset::Invalid,
            StartOffset::At(o) => Offset::Offset(o),
            StartOffset::Beginning => Offset::Beginning,
            StartOffset::End => Offset::End,
        }
    }
}

/// Partitions newly assigned to this member, waiting for their start offsets.
///
/// The rebalance callback blocks until [`Assignment::start`] (or
/// [`Assignment::start_from_committed`]) is called or this value is dropped (= all from the
/// committed offsets), bounded by `rebalance_ack_timeout_ms`. After a timeout the partitions
/// are assigned **paused** at their committed offsets and the late answer returns
/// [`Error::AckTooLate`]: then use [`SourceHandle::seek`] and [`SourceHandle::resume`].
#[derive(Debug)]
pub struct Assignment {
    partitions: Vec<SourcePartition>,
    incremental: bool,
    reply: Option<std_mpsc::SyncSender<Vec<(SourcePartition, StartOffset)>>>,
    timeout: Duration,
}

impl Assignment {
    /// The partitions to restore. Eager protocol: the complete new assignment (everything
    /// was revoked before). Cooperative: only the partitions added to the current assignment.
    pub fn partitions(&self) -> &[SourcePartition] {
        &self.partitions
    }

    /// True under the cooperative protocol (partitions are added to the current assignment).
    pub fn is_incremental(&self) -> bool {
        self.incremental
    }

    /// Answers with each partition's start offset; partitions not listed start from
    /// [`StartOffset::Committed`], listed partitions that are not part of this assignment
    /// are ignored (with a warning).
    pub fn start(
        mut self,
        positions: impl IntoIterator<Item = (SourcePartition, StartOffset)>,
    ) -> Result<()> {
        let positions: Vec<_> = positions.into_iter().collect();
        for (p, s) in &positions {
            if let StartOffset::At(o) = s {
                if *o < 0 {
                    return Err(Error::InvalidOffset {
                        partition: *p,
                        offset: *o,
                    });
                }
            }
        }
        let waited_ms = self.timeout.as_millis() as u64;
        match self.reply.take() {
            Some(tx) => tx
                .try_send(positions)
                .map_err(|_| Error::AckTooLate { waited_ms }),
            None => Err(Error::AckTooLate { waited_ms }),
        }
    }

    /// Starts every partition from its committed offset.
    pub fn start_from_committed(self) -> Result<()> {
        self.start(std::iter::empty())
    }
}

/// Partitions being taken away from this member.
///
/// The rebalance callback waits (bounded by `rebalance_ack_timeout_ms`) until
/// [`Revocation::ack`] is called or this value is dropped. Every record of these partitions
/// that the source polled was delivered before this event. Flush and commit them, then ack.
#[derive(Debug)]
pub struct Revocation {
    partitions: Vec<SourcePartition>,
    lost: bool,
    incremental: bool,
    reply: Option<std_mpsc::SyncSender<()>>,
    timeout: Duration,
}

impl Revocation {
    pub fn partitions(&self) -> &[SourcePartition] {
        &self.partitions
    }

    /// True when the assignment was lost involuntarily (session timeout, fenced, rebalance
    /// error): other members may already own the partitions and commits will fail. Drop the
    /// partitions' state; what was flushed stays correct (rows are versioned by offset).
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// True under the cooperative protocol (only these partitions move); false under the
    /// eager protocol (the whole assignment is revoked).
    pub fn is_incremental(&self) -> bool {
        self.incremental
    }

    /// Acknowledges: the partitions were flushed and committed; the rebalance may proceed.
    /// [`Error::AckTooLate`] when the callback stopped waiting.
    pub fn ack(mut self) -> Result<()> {
        let waited_ms = self.timeout.as_millis() as u64;
        match self.reply.take() {
            Some(tx) => tx.try_send(()).map_err(|_| Error::AckTooLate { waited_ms }),
            None => Err(Error::AckTooLate { waited_ms }),
        }
    }
}

/// What [`KafkaSource::next`] yields.
#[derive(Debug)]
pub enum SourceEvent {
    /// At most `max_batch_records` records, in poll order (per partition: offset order).
    Records(Vec<SourceRecord>),
    /// Partitions assigned: restore them, then answer with their start offsets.
    Assigned(Assignment),
    /// Partitions revoked: flush + commit them, then ack.
    Revoked(Revocation),
}

/// Low and high watermark of a partition.
///
/// **tansu (the test broker) reports the high watermark too low** (ListOffsets on memory://
/// and s3:// storage): lag computed from it is wrong there; tests count messages instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermarks {
    pub low: i64,
    pub high: i64,
}

impl Watermarks {
    /// Records not yet read when the next offset to read is `next_offset` (≥ 0).
    pub fn lag(&self, next_offset: i64) -> i64 {
        self.high.saturating_sub(next_offset.max(self.low)).max(0)
    }
}

/// Resolves when the poll thread has applied a [`SourceHandle::pause`], `resume` or `seek`.
/// Awaiting it is optional; dropping it does not cancel the command.
#[derive(Debug)]
pub struct CommandAck(oneshot::Receiver<Result<()>>);

impl Future for CommandAck {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

// ------------------------------------------------------------------------------ internals

#[derive(Clone, Debug)]
struct Topics {
    touchpoint: Arc<str>,
    survey: Arc<str>,
}

impl Topics {
    fn kind_of(&self, topic: &str) -> Option<RecordKind> {
        if topic == &*self.touchpoint {
            Some(RecordKind::Touchpoint)
        } else if topic == &*self.survey {
            Some(RecordKind::Survey)
        } else {
            None
        }
    }

    fn name(&self, kind: RecordKind) -> &Arc<str> {
        match kind {
            RecordKind::Touchpoint => &self.touchpoint,
            RecordKind::Survey => &self.survey,
        }
    }

    fn partition(&self, topic: &str, partition: i32) -> Result<SourcePartition> {
        let kind = self
            .kind_of(topic)
            .ok_or_else(|| Error::UnknownTopic(topic.to_owned()))?;
        if !(0..=MAX_PARTITION).contains(&partition) {
            return Err(Error::PartitionOutOfRange(partition));
        }
        Ok(SourcePartition::new(kind, partition))
    }

    fn tpl<'a>(&self, parts: impl IntoIterator<Item = &'a SourcePartition>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for p in parts {
            tpl.add_partition(self.name(p.topic_kind), p.partition);
        }
        tpl
    }

    /// The source partitions of a partition list; foreign entries are logged and skipped.
    fn parts_of(&self, tpl: &TopicPartitionList) -> Vec<SourcePartition> {
        tpl.elements()
            .iter()
            .filter_map(|e| match self.partition(e.topic(), e.partition()) {
                Ok(p) => Some(p),
                Err(err) => {
                    tracing::error!(topic = e.topic(), partition = e.partition(), error = %err,
                        "ignoring a partition that is not a source partition");
                    None
                }
            })
            .collect()
    }
}

/// What travels from the poll thread to [`KafkaSource::next`].
enum Item {
    Event(SourceEvent),
    /// A seek of this partition was applied: records of it before this marker are stale.
    SeekDone(SourcePartition),
    /// A fatal consumer error: the poll thread stops after it.
    Fatal(Error),
}

enum Command {
    Pause(Vec<SourcePartition>, oneshot::Sender<Result<()>>),
    Resume(Vec<SourcePartition>, oneshot::Sender<Result<()>>),
    Seek(SourcePartition, i64, oneshot::Sender<Result<()>>),
}

enum WaitEnd {
    Timeout,
    Dropped,
    Closing,
}

enum FlushState {
    Done,
    Full,
    Closed,
}

/// State shared by the poll loop and the rebalance callbacks (both on the poll thread; the
/// mutex is never held across a librdkafka poll).
struct Shared {
    events: Option<mpsc::Sender<Item>>,
    pending: Vec<SourceRecord>,
    pending_since: Option<Instant>,
    outq: VecDeque<Item>,
    assigned: BTreeSet<SourcePartition>,
    app_paused: BTreeSet<SourcePartition>,
    auto_paused: bool,
}

impl Shared {
    fn seal(&mut self) {
        if !self.pending.is_empty() {
            let batch = std::mem::take(&mut self.pending);
            self.outq
                .push_back(Item::Event(SourceEvent::Records(batch)));
        }
        self.pending_since = None;
    }

    /// True when at least half of the channel's capacity is free (or it is gone).
    fn half_empty(&self) -> bool {
        self.events
            .as_ref()
            .is_none_or(|tx| tx.capacity() * 2 >= tx.max_capacity())
    }

    /// Moves queued items into the channel without blocking.
    fn try_flush(&mut self) -> FlushState {
        let Some(tx) = self.events.as_ref() else {
            self.outq.clear();
            return FlushState::Closed;
        };
        while let Some(item) = self.outq.pop_front() {
            match tx.try_send(item) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(item)) => {
                    self.outq.push_front(item);
                    return FlushState::Full;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.outq.clear();
                    self.events = None;
                    return FlushState::Closed;
                }
            }
        }
        FlushState::Done
    }
}

struct SourceContext {
    topics: Topics,
    ack_timeout: Duration,
    request_timeout: Duration,
    closing: AtomicBool,
    shared: Mutex<Shared>,
}

impl SourceContext {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves plain data behind: keep going with it.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `item` (after everything polled so far) to the application, waiting at most
    /// until `deadline` for room in the channel. False if it could not be delivered.
    fn deliver_until(&self, item: Item, deadline: Instant) -> bool {
        let mut s = self.lock();
        s.seal();
        s.outq.push_back(item);
        loop {
            match s.try_flush() {
                FlushState::Done => return true,
                FlushState::Closed => return false,
                FlushState::Full => {
                    if Instant::now() >= deadline || self.closing.load(Ordering::Acquire) {
                        // Leave it queued: the poll loop delivers it later. The application
                        // then gets the event after the rebalance went ahead without it.
                        return false;
                    }
                    drop(s);
                    std::thread::sleep(CALLBACK_TICK);
                    s = self.lock();
                }
            }
        }
    }

    /// Waits for the application's answer until `deadline`, giving up early when the source
    /// is being closed.
    fn wait_reply<T>(&self, rx: &std_mpsc::Receiver<T>, deadline: Instant) -> Result<T, WaitEnd> {
        loop {
            if self.closing.load(Ordering::Acquire) {
                return Err(WaitEnd::Closing);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitEnd::Timeout);
            }
            match rx.recv_timeout((deadline - now).min(POLL_TICK)) {
                Ok(v) => return Ok(v),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return Err(WaitEnd::Dropped),
            }
        }
    }

    fn is_cooperative(consumer: &BaseConsumer<Self>) -> bool {
        matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        )
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList, lost: bool) {
        let incremental = Self::is_cooperative(consumer);
        let parts = if incremental || tpl.count() > 0 {
            self.topics.parts_of(tpl)
        } else {
            self.lock().assigned.iter().copied().collect()
        };
        let closing = self.closing.load(Ordering::Acquire);
        tracing::info!(partitions = ?parts, lost, incremental, closing, "partitions revoked");
        if !closing && !parts.is_empty() {
            let started = Instant::now();
            let deadline = started + self.ack_timeout;
            let (tx, rx) = std_mpsc::sync_channel(1);
            let event = SourceEvent::Revoked(Revocation {
                partitions: parts.clone(),
                lost,
                incremental,
                reply: Some(tx),
                timeout: self.ack_timeout,
            });
            if self.deliver_until(Item::Event(event), deadline) {
                match self.wait_reply(&rx, deadline) {
                    Ok(()) => tracing::info!(
                        partitions = ?parts,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "revocation acknowledged"
                    ),
                    Err(WaitEnd::Closing) => {
                        tracing::info!(partitions = ?parts, "source closing: revoking without ack")
                    }
                    Err(WaitEnd::Timeout) => tracing::error!(
                        partitions = ?parts,
                        timeout_ms = self.ack_timeout.as_millis() as u64,
                        "revocation not acknowledged in time: revoking anyway (the next owner \
                         replays from the last checkpoint)"
                    ),
                    Err(WaitEnd::Dropped) => tracing::warn!(
                        partitions = ?parts,
                        "revocation dropped without ack: revoking"
                    ),
                }
            } else {
                tracing::error!(partitions = ?parts,
                    "could not hand the revocation to the application in time: revoking anyway");
            }
        }
        // Apply.
        let res = if incremental {
            consumer.incremental_unassign(tpl)
        } else {
            consumer.unassign()
        };
        if let Err(e) = res {
            tracing::error!(error = %e, "unassign failed");
        }
        // librdkafka keeps the application pause flag of a partition across assignments:
        // clear it, so a partition assigned again later does not start paused.
        let mut s = self.lock();
        let was_paused: Vec<SourcePartition> = parts
            .iter()
            .filter(|p| s.auto_paused || s.app_paused.contains(p))
            .copied()
            .collect();
        for p in &parts {
            s.assigned.remove(p);
            s.app_paused.remove(p);
        }
        if !incremental {
            s.assigned.clear();
            s.app_paused.clear();
        }
        drop(s);
        if !was_paused.is_empty() {
            if let Err(e) = consumer.resume(&self.topics.tpl(&was_paused)) {
                tracing::debug!(error = %e, "clearing pause flags of revoked partitions");
            }
        }
    }

    fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let incremental = Self::is_cooperative(consumer);
        let parts = self.topics.parts_of(tpl);
        let closing = self.closing.load(Ordering::Acquire);
        tracing::info!(partitions = ?parts, incremental, closing, "partitions assigned");
        let mut starts: HashMap<SourcePartition, StartOffset> = HashMap::new();
        let mut start_paused = false;
        if !closing && !parts.is_empty() {
            let started = Instant::now();
            let deadline = started + self.ack_timeout;
            let (tx, rx) = std_mpsc::sync_channel(1);
            let event = SourceEvent::Assigned(Assignment {
                partitions: parts.clone(),
                incremental,
                reply: Some(tx),
                timeout: self.ack_timeout,
            });
            if self.deliver_until(Item::Event(event), deadline) {
                match self.wait_reply(&rx, deadline) {
                    Ok(positions) => {
                        for (p, s) in positions {
                            if parts.contains(&p) {
                                starts.insert(p, s);
                            } else {
                                tracing::warn!(partition = %p,
                                    "start offset for a partition that is not being assigned: ignored");
                            }
                        }
                        tracing::info!(
                            starts = ?starts,
                            waited_ms = started.elapsed().as_millis() as u64,
                            "assignment answered"
                        );
                    }
                    Err(WaitEnd::Closing) => {
                        tracing::info!(partitions = ?parts, "source closing: assignment not answered")
                    }
                    Err(WaitEnd::Timeout) => {
                        start_paused = true;
                        tracing::error!(
                            partitions = ?parts,
                            timeout_ms = self.ack_timeout.as_millis() as u64,
                            "no start offsets in time: assigning the partitions PAUSED at their \
                             committed offsets (seek and resume them)"
                        );
                    }
                    Err(WaitEnd::Dropped) => tracing::info!(
                        partitions = ?parts,
                        "assignment dropped without answer: starting from committed offsets"
                    ),
                }
            } else {
                start_paused = true;
                tracing::error!(partitions = ?parts,
                    "could not hand the assignment to the application in time: assigning paused");
            }
        }
        for (p, s) in &starts {
            if let Err(e) = tpl.set_partition_offset(
                self.topics.name(p.topic_kind),
                p.partition,
                s.to_rdkafka(),
            ) {
                tracing::error!(partition = %p, start = ?s, error = %e,
                    "could not set the start offset: starting from the committed offset");
            }
        }
        let res = if incremental {
            consumer.incremental_assign(tpl)
        } else {
            consumer.assign(tpl)
        };
        if let Err(e) = res {
            tracing::error!(error = %e, "assign failed");
            return;
        }
        let mut s = self.lock();
        s.assigned.extend(parts.iter().copied());
        if start_paused {
            s.app_paused.extend(parts.iter().copied());
        }
        let pause_now = start_paused || s.auto_paused;
        drop(s);
        if pause_now {
            // Synchronous in librdkafka: applied before any record of them is polled.
            if let Err(e) = consumer.pause(&self.topics.tpl(&parts)) {
                tracing::error!(error = %e, "pausing newly assigned partitions failed");
            }
        }
    }
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log("source", level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        forward_error("source", &error, reason);
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.on_assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                self.on_revoke(consumer, tpl, lost)
            }
            other => {
                tracing::error!(error = ?other, "rebalance error: dropping the assignment as lost");
                self.on_revoke(consumer, tpl, true);
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            tracing::warn!(error = %e, offsets = ?offsets.to_topic_map(), "offset commit failed");
        }
    }
}

type SourceConsumer = BaseConsumer<SourceContext>;

/// The poll thread.
struct PollLoop {
    consumer: Arc<SourceConsumer>,
    commands: std_mpsc::Receiver<Command>,
    stop: Arc<AtomicBool>,
    max_batch: usize,
    linger: Duration,
    /// How long the channel may stay full before the partitions are paused.
    pause_after: Duration,
    last_error: Option<(String, Instant)>,
}

impl PollLoop {
    fn ctx(&self) -> &SourceContext {
        self.consumer.context()
    }

    fn run(mut self) {
        tracing::debug!("source poll thread started");
        let mut full_since: Option<Instant> = None;
        'outer: while !self.stop.load(Ordering::Acquire) {
            // 1. commands from the application
            loop {
                match self.commands.try_recv() {
                    Ok(cmd) => self.handle(cmd),
                    Err(std_mpsc::TryRecvError::Empty) => break,
                    Err(std_mpsc::TryRecvError::Disconnected) => break 'outer,
                }
            }
            // 2. hand over what is due
            let state = {
                let mut s = self.ctx().lock();
                if s.pending_since.is_some_and(|t| t.elapsed() >= self.linger) {
                    s.seal();
                }
                s.try_flush()
            };
            match state {
                FlushState::Closed => {
                    tracing::debug!("the application dropped the source: poll thread ends");
                    break;
                }
                FlushState::Full => {
                    // Backpressure. A short stall is absorbed by not polling (librdkafka's
                    // own prefetch limits apply). If it lasts `pause_after`, every assigned
                    // partition is paused and polling goes on, so rebalances are served and
                    // `max.poll.interval.ms` is never exceeded. (Pausing discards
                    // librdkafka's prefetched records, which are fetched again on resume:
                    // hence not at once.)
                    let since = *full_since.get_or_insert_with(Instant::now);
                    let paused = since.elapsed() >= self.pause_after;
                    if paused {
                        self.set_auto_pause(true);
                    }
                    match self.commands.recv_timeout(BACKPRESSURE_TICK) {
                        Ok(cmd) => self.handle(cmd),
                        Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    if paused {
                        self.poll_once(Duration::ZERO);
                    }
                    continue;
                }
                FlushState::Done => {
                    full_since = None;
                    // Resume only once the channel is half empty (hysteresis).
                    if self.ctx().lock().half_empty() {
                        self.set_auto_pause(false);
                    }
                }
            }
            // 3. poll
            let timeout = {
                let s = self.ctx().lock();
                match s.pending_since {
                    Some(t) => self.linger.saturating_sub(t.elapsed()).min(POLL_TICK),
                    None => POLL_TICK,
                }
            };
            self.poll_once(timeout);
        }
        // The receiver sees the end of the stream once queued items are read.
        let mut s = self.ctx().lock();
        s.seal();
        let _ = s.try_flush();
        s.events = None;
        tracing::debug!("source poll thread ended");
    }

    /// One blocking poll, then drains what is immediately available (up to a full batch).
    fn poll_once(&mut self, timeout: Duration) {
        let mut wait = timeout;
        loop {
            let polled = self.consumer.poll(wait);
            wait = Duration::ZERO;
            match polled {
                None => return,
                Some(Ok(msg)) => {
                    let received_at_ms = now_ms();
                    let ctx = self.consumer.context();
                    let part = match ctx.topics.partition(msg.topic(), msg.partition()) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::error!(topic = msg.topic(), partition = msg.partition(),
                                offset = msg.offset(), error = %e, "skipping a foreign record");
                            continue;
                        }
                    };
                    let rec = SourceRecord {
                        topic_kind: part.topic_kind,
                        topic: ctx.topics.name(part.topic_kind).clone(),
                        partition: part.partition,
                        offset: msg.offset(),
                        key: msg.key().map(<[u8]>::to_vec),
                        payload: msg.payload().map(<[u8]>::to_vec),
                        timestamp_ms: msg.timestamp().to_millis(),
                        received_at_ms,
                    };
                    let mut s = ctx.lock();
                    if s.pending.is_empty() {
                        s.pending_since = Some(Instant::now());
                    }
                    s.pending.push(rec);
                    if s.pending.len() >= self.max_batch {
                        s.seal();
                        return;
                    }
                }
                Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                    tracing::error!(error = %code, "fatal consumer error: the source stops");
                    let mut s = self.ctx().lock();
                    s.seal();
                    s.outq.push_back(Item::Fatal(Error::Client {
                        op: "consume",
                        source: KafkaError::MessageConsumptionFatal(code),
                    }));
                    drop(s);
                    self.stop.store(true, Ordering::Release);
                    return;
                }
                Some(Err(e)) => {
                    self.log_consume_error(&e);
                    return;
                }
            }
        }
    }

    fn log_consume_error(&mut self, e: &KafkaError) {
        let text = e.to_string();
        let due = match &self.last_error {
            Some((last, at)) => *last != text || at.elapsed() >= ERROR_LOG_INTERVAL,
            None => true,
        };
        if due {
            tracing::warn!(error = %text, "consumer error (retrying)");
            self.last_error = Some((text, Instant::now()));
        }
    }

    fn set_auto_pause(&mut self, on: bool) {
        let ctx = self.consumer.context();
        let mut s = ctx.lock();
        if s.auto_paused == on {
            return;
        }
        s.auto_paused = on;
        let affected: Vec<SourcePartition> = s
            .assigned
            .iter()
            .filter(|p| !s.app_paused.contains(p))
            .copied()
            .collect();
        drop(s);
        if affected.is_empty() {
            return;
        }
        let tpl = ctx.topics.tpl(&affected);
        let res = if on {
            tracing::debug!(partitions = ?affected, "event channel full: pausing");
            self.consumer.pause(&tpl)
        } else {
            tracing::debug!(partitions = ?affected, "event channel has room: resuming");
            self.consumer.resume(&tpl)
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, on, "backpressure pause/resume failed");
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Pause(parts, reply) => {
                let _ = reply.send(self.pause(&parts));
            }
            Command::Resume(parts, reply) => {
                let _ = reply.send(self.resume(&parts));
            }
            Command::Seek(p, offset, reply) => {
                let res = self.seek(p, offset);
                let _ = reply.send(res);
            }
        }
    }

    fn pause(&mut self, parts: &[SourcePartition]) -> Result<()> {
        let ctx = self.consumer.context();
        let mut s = ctx.lock();
        let mut now_paused = Vec::new();
        for p in parts {
            if !s.assigned.contains(p) {
                tracing::debug!(partition = %p, "pause of a partition that is not assigned: ignored");
                continue;
            }
            if s.app_paused.insert(*p) && !s.auto_paused {
                now_paused.push(*p);
            }
        }
        drop(s);
        if now_paused.is_empty() {
            return Ok(());
        }
        tracing::debug!(partitions = ?now_paused, "pause");
        self.consumer
            .pause(&ctx.topics.tpl(&now_paused))
            .map_err(Error::client("pause"))
    }

    fn resume(&mut self, parts: &[SourcePartition]) -> Result<()> {
        let ctx = self.consumer.context();
        let mut s = ctx.lock();
        let mut now_resumed = Vec::new();
        for p in parts {
            if s.app_paused.remove(p) && !s.auto_paused && s.assigned.contains(p) {
                now_resumed.push(*p);
            }
        }
        drop(s);
        if now_resumed.is_empty() {
            return Ok(());
        }
        tracing::debug!(partitions = ?now_resumed, "resume");
        self.consumer
            .resume(&ctx.topics.tpl(&now_resumed))
            .map_err(Error::client("resume"))
    }

    fn seek(&mut self, p: SourcePartition, offset: i64) -> Result<()> {
        let ctx = self.consumer.context();
        // Records of p polled so far go out before the marker (the receiver drops them).
        let assigned = {
            let mut s = ctx.lock();
            s.seal();
            s.assigned.contains(&p)
        };
        let res = if assigned {
            let mut tpl = TopicPartitionList::new();
            let name = ctx.topics.name(p.topic_kind);
            tpl.add_partition_offset(name, p.partition, Offset::Offset(offset))
                .map_err(Error::client("seek"))
                .and_then(|()| {
                    self.consumer
                        .seek_partitions(tpl, ctx.request_timeout)
                        .map_err(Error::client("seek"))
                })
                .and_then(|tpl| {
                    for e in tpl.elements() {
                        if let Err(err) = e.error() {
                            // Reported as an offset-fetch error by rdkafka: name it a seek.
                            let detail = err
                                .rdkafka_error_code()
                                .map_or_else(|| err.to_string(), |c| c.to_string());
                            return Err(Error::Partition {
                                op: "seek",
                                partition: p,
                                source: KafkaError::Seek(detail),
                            });
                        }
                    }
                    Ok(())
                })
        } else {
            Err(Error::Partition {
                op: "seek",
                partition: p,
                source: KafkaError::Seek("partition is not assigned to this member".into()),
            })
        };
        match &res {
            Ok(()) => tracing::info!(partition = %p, offset, "seek"),
            Err(e) => tracing::error!(partition = %p, offset, error = %e, "seek failed"),
        }
        ctx.lock().outq.push_back(Item::SeekDone(p));
        res
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Per-partition count of seeks whose [`Item::SeekDone`] marker has not been read yet:
/// records of these partitions are stale until then.
type Discarding = Arc<Mutex<HashMap<SourcePartition, u32>>>;

fn lock_discarding(d: &Discarding) -> MutexGuard<'_, HashMap<SourcePartition, u32>> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

fn undo_discard(d: &Discarding, p: SourcePartition) {
    let mut d = lock_discarding(d);
    if let Some(n) = d.get_mut(&p) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            d.remove(&p);
        }
    }
}

/// A cloneable, `Send + Sync` handle on the source's consumer for the tasks that do not
/// read events: the engine/sink side commits after its flush, pauses for backpressure,
/// seeks. Every method is also available on [`KafkaSource`].
///
/// A handle does not keep the consumer alive: after [`KafkaSource::close`] (or drop) its
/// methods return [`Error::Closed`].
#[derive(Clone)]
pub struct SourceHandle {
    consumer: Weak<SourceConsumer>,
    topics: Topics,
    commands: std_mpsc::Sender<Command>,
    discarding: Discarding,
    request_timeout: Duration,
}

impl fmt::Debug for SourceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceHandle")
            .field("touchpoint_topic", &self.topics.touchpoint)
            .field("survey_topic", &self.topics.survey)
            .finish_non_exhaustive()
    }
}

fn commit_tpl(consumer: &SourceConsumer, topics: &Topics, tpl: &TopicPartitionList) -> Result<()> {
    consumer
        .commit(tpl, CommitMode::Sync)
        .map_err(Error::client("commit"))?;
    for e in tpl.elements() {
        if let Err(source) = e.error() {
            let partition = topics.partition(e.topic(), e.partition())?;
            return Err(Error::Partition {
                op: "commit",
                partition,
                source,
            });
        }
    }
    Ok(())
}

impl SourceHandle {
    fn consumer(&self) -> Result<Arc<SourceConsumer>> {
        self.consumer.upgrade().ok_or(Error::Closed)
    }

    fn offsets_tpl(&self, offsets: &[(SourcePartition, i64)]) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for &(p, o) in offsets {
            if o < 0 {
                return Err(Error::InvalidOffset {
                    partition: p,
                    offset: o,
                });
            }
            tpl.add_partition_offset(
                self.topics.name(p.topic_kind),
                p.partition,
                Offset::Offset(o),
            )
            .map_err(Error::client("commit"))?;
        }
        Ok(tpl)
    }

    /// Commits `next_offset` (= last durable offset + 1) of each partition, synchronously:
    /// returns when the group coordinator accepted the commit. Blocks the calling thread
    /// (from async code use [`SourceHandle::commit_off_thread`]). May be called while a
    /// [`Revocation`] is pending (that is the protocol).
    pub fn commit(&self, offsets: &[(SourcePartition, i64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let tpl = self.offsets_tpl(offsets)?;
        commit_tpl(&*self.consumer()?, &self.topics, &tpl)?;
        tracing::debug!(offsets = ?offsets, "committed");
        Ok(())
    }

    /// [`SourceHandle::commit`] on tokio's blocking pool.
    pub async fn commit_off_thread(&self, offsets: Vec<(SourcePartition, i64)>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let tpl = self.offsets_tpl(&offsets)?;
        let consumer = self.consumer()?;
        let topics = self.topics.clone();
        tokio::task::spawn_blocking(move || commit_tpl(&consumer, &topics, &tpl))
            .await
            .map_err(|e| Error::Internal(format!("commit task: {e}")))??;
        tracing::debug!(offsets = ?offsets, "committed");
        Ok(())
    }

    /// The committed offsets (next offset to read) of `partitions`; `None` where the group
    /// has none. Blocking (bounded by `request_timeout_ms`).
    pub fn committed(
        &self,
        partitions: &[SourcePartition],
    ) -> Result<Vec<(SourcePartition, Option<i64>)>> {
        let tpl = self.topics.tpl(partitions);
        let tpl = self
            .consumer()?
            .committed_offsets(tpl, self.request_timeout)
            .map_err(Error::client("fetch committed offsets"))?;
        tpl.elements()
            .iter()
            .map(|e| {
                let p = self.topics.partition(e.topic(), e.partition())?;
                if let Err(source) = e.error() {
                    return Err(Error::Partition {
                        op: "fetch committed offset",
                        partition: p,
                        source,
                    });
                }
                Ok((
                    p,
                    match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    },
                ))
            })
            .collect()
    }

    fn send_command(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<()>>) -> Command,
    ) -> Result<CommandAck> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).map_err(|_| Error::Closed)?;
        Ok(CommandAck(rx))
    }

    /// Pauses delivery of `partitions` (backpressure). Applied by the poll thread in order
    /// with everything else; await the returned ack to know it is in effect. Records of
    /// these partitions polled before are still delivered (none is lost); after it no new
    /// record of them is polled until [`SourceHandle::resume`]. Partitions not assigned are
    /// ignored. A revocation clears the pause.
    pub fn pause(&self, partitions: &[SourcePartition]) -> Result<CommandAck> {
        self.send_command(|tx| Command::Pause(partitions.to_vec(), tx))
    }

    /// Resumes partitions paused by [`SourceHandle::pause`] (or assigned paused after an
    /// assignment timeout). Delivery continues at the next record not yet delivered (or
    /// where a seek put it).
    pub fn resume(&self, partitions: &[SourcePartition]) -> Result<CommandAck> {
        self.send_command(|tx| Command::Resume(partitions.to_vec(), tx))
    }

    /// Repositions an assigned partition: the next record of `partition` that
    /// [`KafkaSource::next`] yields is the one at `offset` (or the next existing one). Records
    /// of it polled before the seek was applied are dropped by `next`, even those already in
    /// the channel. The partition must already be fetching: librdkafka answers `Local:
    /// Erroneous state` right after an assignment, before the start offset is known; to
    /// start a new assignment at an offset, answer the [`Assignment`] instead.
    pub fn seek(&self, partition: SourcePartition, offset: i64) -> Result<CommandAck> {
        if offset < 0 {
            return Err(Error::InvalidOffset { partition, offset });
        }
        *lock_discarding(&self.discarding)
            .entry(partition)
            .or_insert(0) += 1;
        let res = self.send_command(|tx| Command::Seek(partition, offset, tx));
        if res.is_err() {
            undo_discard(&self.discarding, partition);
        }
        res
    }

    /// The partitions currently assigned to this member (librdkafka's view), sorted.
    pub fn assignment(&self) -> Result<Vec<SourcePartition>> {
        let tpl = self
            .consumer()?
            .assignment()
            .map_err(Error::client("assignment"))?;
        let mut parts = self.topics.parts_of(&tpl);
        parts.sort();
        Ok(parts)
    }

    /// Low/high watermark of a partition. Blocking (bounded by `request_timeout_ms`).
    /// **On tansu the high watermark is under-reported**: do not trust lag there.
    pub fn watermarks(&self, partition: SourcePartition) -> Result<Watermarks> {
        let (low, high) = self
            .consumer()?
            .fetch_watermarks(
                self.topics.name(partition.topic_kind),
                partition.partition,
                self.request_timeout,
            )
            .map_err(Error::client("fetch watermarks"))?;
        Ok(Watermarks { low, high })
    }

    /// Consumer lag per partition: high watermark − next offset, for each
    /// `(partition, next offset to read)`. Blocking, one request per partition. Same caveat
    /// as [`SourceHandle::watermarks`].
    pub fn lag(&self, positions: &[(SourcePartition, i64)]) -> Result<Vec<(SourcePartition, i64)>> {
        positions
            .iter()
            .map(|&(p, next)| Ok((p, self.watermarks(p)?.lag(next))))
            .collect()
    }
}

/// The Kafka source: one consumer in the job's group over the touchpoint and survey topics.
/// See the module docs and `docs/kafka.md` for the rebalance protocol.
///
/// Dereferences to its [`SourceHandle`] (commit, pause, resume, seek, assignment, …);
/// [`KafkaSource::handle`] gives a clone for other tasks.
pub struct KafkaSource {
    consumer: Arc<SourceConsumer>,
    handle: SourceHandle,
    events: mpsc::Receiver<Item>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSource")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for KafkaSource {
    type Target = SourceHandle;

    fn deref(&self) -> &SourceHandle {
        &self.handle
    }
}

impl KafkaSource {
    /// Creates the consumer, subscribes to both topics and starts the poll thread.
    /// Nothing is consumed until the group assigns partitions, which arrives as a
    /// [`SourceEvent::Assigned`] from [`KafkaSource::next`].
    pub fn new(settings: &KafkaSettings) -> Result<Self> {
        settings.validate()?;
        let topics = Topics {
            touchpoint: Arc::from(settings.touchpoint_topic.as_str()),
            survey: Arc::from(settings.survey_topic.as_str()),
        };
        let (tx, rx) = mpsc::channel(settings.channel_capacity);
        let context = SourceContext {
            topics: topics.clone(),
            ack_timeout: settings.rebalance_ack_timeout(),
            request_timeout: settings.request_timeout(),
            closing: AtomicBool::new(false),
            shared: Mutex::new(Shared {
                events: Some(tx),
                pending: Vec::new(),
                pending_since: None,
                outq: VecDeque::new(),
                assigned: BTreeSet::new(),
                app_paused: BTreeSet::new(),
                auto_paused: false,
            }),
        };
        let config = settings.consumer_config();
        tracing::info!(settings = ?settings.redacted(), "creating kafka source");
        let consumer: SourceConsumer = config
            .create_with_context(context)
            .map_err(Error::client("create consumer"))?;
        consumer
            .subscribe(&[&topics.touchpoint, &topics.survey])
            .map_err(Error::client("subscribe"))?;
        let consumer = Arc::new(consumer);
        let (cmd_tx, cmd_rx) = std_mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let poll_loop = PollLoop {
            consumer: consumer.clone(),
            commands: cmd_rx,
            stop: stop.clone(),
            max_batch: settings.max_batch_records,
            linger: settings.batch_linger(),
            pause_after: Duration::from_millis(settings.backpressure_pause_after_ms),
            last_error: None,
        };
        let thread = std::thread::Builder::new()
            .name("cxpulse-kafka-source".into())
            .spawn(move || poll_loop.run())
            .map_err(|e| Error::Internal(format!("spawning the poll thread: {e}")))?;
        Ok(KafkaSource {
            handle: SourceHandle {
                consumer: Arc::downgrade(&consumer),
                topics,
                commands: cmd_tx,
                discarding: Arc::new(Mutex::new(HashMap::new())),
                request_timeout: settings.request_timeout(),
            },
            consumer,
            events: rx,
            stop,
            thread: Some(thread),
        })
    }

    /// A handle for other tasks (commit after flush, pause/resume for backpressure, seek).
    pub fn handle(&self) -> SourceHandle {
        self.handle.clone()
    }

    /// The next event. Cancel-safe (usable in `select!`). [`Error::Closed`] once the source
    /// is closed or the poll thread ended; a fatal consumer error is returned once, then
    /// `Closed`.
    pub async fn next(&mut self) -> Result<SourceEvent> {
        loop {
            match self.events.recv().await {
                None => return Err(Error::Closed),
                Some(Item::Event(SourceEvent::Records(mut records))) => {
                    {
                        let discarding = lock_discarding(&self.handle.discarding);
                        if !discarding.is_empty() {
                            records.retain(|r| !discarding.contains_key(&r.source_partition()));
                        }
                    }
                    if !records.is_empty() {
                        return Ok(SourceEvent::Records(records));
                    }
                }
                Some(Item::Event(event)) => return Ok(event),
                Some(Item::SeekDone(p)) => undo_discard(&self.handle.discarding, p),
                Some(Item::Fatal(e)) => return Err(e),
            }
        }
    }

    fn shutdown(&mut self) {
        // Revocations during close are not forwarded: nothing is flushed or committed
        // implicitly. Commit before closing.
        self.consumer
            .context()
            .closing
            .store(true, Ordering::Release);
        self.stop.store(true, Ordering::Release);
    }

    /// Stops the poll thread, leaves the group and closes the consumer. Commits nothing:
    /// commit what is durable first. Blocking; see [`KafkaSource::close`].
    pub fn close_blocking(mut self) -> Result<()> {
        self.shutdown();
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| Error::Internal("the source poll thread panicked".into()))?;
        }
        // Dropping the last strong reference (ours: handles are weak) closes the consumer:
        // librdkafka leaves the group; the final revocation is applied, not forwarded.
        drop(self);
        tracing::info!("kafka source closed");
        Ok(())
    }

    /// [`KafkaSource::close_blocking`] on tokio's blocking pool.
    pub async fn close(self) -> Result<()> {
        tokio::task::spawn_blocking(move || self.close_blocking())
            .await
            .map_err(|e| Error::Internal(format!("close task: {e}")))?
    }
}

impl Drop for KafkaSource {
    /// Without [`KafkaSource::close`]: signals the poll thread to stop; whichever of the
    /// poll thread and the last handle drops the consumer last closes it (blocking for the
    /// group leave).
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_partition_is_a_bijection() {
        for p in [0, 1, 2, 3, 1000, MAX_PARTITION] {
            for k in RecordKind::ALL {
                let sp = SourcePartition::new(k, p);
                let id = sp.engine_partition();
                assert!(id >= 0);
                assert_eq!(SourcePartition::from_engine_partition(id), Some(sp));
            }
        }
        assert_eq!(SourcePartition::touchpoint(3).engine_partition(), 6);
        assert_eq!(SourcePartition::survey(3).engine_partition(), 7);
        assert_eq!(SourcePartition::from_engine_partition(-1), None);
    }

    #[test]
    fn topics_map_names_and_reject_foreign_ones() {
        let t = Topics {
            touchpoint: Arc::from("tp"),
            survey: Arc::from("sv"),
        };
        assert_eq!(
            t.partition("tp", 2).ok(),
            Some(SourcePartition::touchpoint(2))
        );
        assert_eq!(t.partition("sv", 0).ok(), Some(SourcePartition::survey(0)));
        assert!(matches!(
            t.partition("other", 0),
            Err(Error::UnknownTopic(_))
        ));
        assert!(matches!(
            t.partition("tp", -1),
            Err(Error::PartitionOutOfRange(-1))
        ));
        assert!(matches!(
            t.partition("tp", MAX_PARTITION + 1),
            Err(Error::PartitionOutOfRange(_))
        ));
    }

    #[test]
    fn watermark_lag() {
        let w = Watermarks { low: 10, high: 100 };
        assert_eq!(w.lag(40), 60);
        assert_eq!(w.lag(0), 90);
        assert_eq!(w.lag(150), 0);
    }

    #[test]
    fn late_acks_are_reported() {
        let (tx, rx) = std_mpsc::sync_channel(1);
        drop(rx);
        let a = Assignment {
            partitions: vec![SourcePartition::touchpoint(0)],
            incremental: false,
            reply: Some(tx),
            timeout: Duration::from_millis(5),
        };
        assert!(matches!(
            a.start_from_committed(),
            Err(Error::AckTooLate { waited_ms: 5 })
        ));
        let (tx, _rx) = std_mpsc::sync_channel(1);
        let a = Assignment {
            partitions: vec![SourcePartition::touchpoint(0)],
            incremental: false,
            reply: Some(tx),
            timeout: Duration::from_millis(5),
        };
        assert!(matches!(
            a.start([(SourcePartition::touchpoint(0), StartOffset::At(-3))]),
            Err(Error::InvalidOffset { offset: -3, .. })
        ));
    }
}
