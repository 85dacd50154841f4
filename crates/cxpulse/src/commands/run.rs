//! `cxpulse run`: the stream job. Kafka (touchpoints + surveys) → decode and validate →
//! one [`KpiEngine`] per partition → ClickHouse (windows, panes, survey responses,
//! checkpoints) and Prometheus (`/metrics`); bad records → the dead-letter topic.
//!
//! Exactness (see `docs/design.md`): a partition's engine only depends on that partition's
//! own records, every row is versioned by its update count, and offsets are committed only
//! after the checkpoint that covers them is durable, which is written only after every row
//! and dead letter derived from those records is durable. After a crash, the partition is
//! restored from its checkpoint and replays from the offsets stored in it: the rows it writes
//! again are identical (same version) or newer, so nothing is lost or counted twice.

use crate::cli::{LogFormat, RunArgs};
use crate::commands::generate::kafka_settings;
use crate::commands::migrate::clickhouse_client;
use crate::config::{self, Settings};
use crate::logging;
use crate::VERSION;
use anyhow::{Context, Result};
use cxpulse_avro::{Decoder, SchemaRegistry};
use cxpulse_clickhouse::{
    Checkpoint, ClickHouseSink, PaneRow, SinkConfig, SurveyRow, WindowRow, WriteOutcome,
};
use cxpulse_core::kpi::KpiState;
use cxpulse_core::window::Mergeable;
use cxpulse_core::{
    Channel, CxEvent, EngineConfig, EngineStats, IngestOutcome, KpiEngine, KpiRow, Millis,
    ValidationPolicy,
};
use cxpulse_kafka::{
    Assignment, DeadLetter, DeadLetterProducer, KafkaSource, RecordKind, Revocation, SourceEvent,
    SourceHandle, SourcePartition, SourceRecord, StartOffset,
};
use cxpulse_metrics::{ExporterOptions, JobMetrics, KpiExporter, MetricsServer, Registry};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};

/// What a partition's checkpoint holds: where to resume each source, and the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointEnvelope {
    pub format: u32,
    /// Next offset to read per source (touchpoints, surveys); `None` = nothing read yet.
    pub next: [Option<i64>; 2],
    /// Windows ending at or before this were emitted by this partition's engine.
    pub frontier: Option<Millis>,
    /// [`KpiEngine::checkpoint`].
    pub engine: Vec<u8>,
}

const ENVELOPE_FORMAT: u32 = 1;

impl CheckpointEnvelope {
    pub fn encode(&self) -> Vec<u8> {
        // Plain data into a Vec: cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<CheckpointEnvelope> {
        let e: CheckpointEnvelope =
            postcard::from_bytes(bytes).context("checkpoint envelope is not readable")?;
        if e.format != ENVELOPE_FORMAT {
            anyhow::bail!(
                "checkpoint envelope format {} is not supported (this build reads {ENVELOPE_FORMAT})",
                e.format
            );
        }
        Ok(e)
    }

    /// The checkpoint's version: the sum of the next offsets (grows with every record).
    pub fn version(&self) -> u64 {
        self.next
            .iter()
            .map(|o| o.unwrap_or(0).max(0).unsigned_abs())
            .sum()
    }
}

/// A full batch between ticks also advances the windows once the watermark is this much
/// event time ahead of the last emitted end (see `docs/design.md`, "Flush"): during a
/// catch-up of slow traffic, one second of records can span hours of event time, and the
/// rows of one advance are held in memory until written.
pub const BATCH_ADVANCE_SPAN_MS: Millis = 10 * 60_000;

/// Window rows converted and inserted at a time (at most `clickhouse.batch_rows`): a row of
/// a long window holds up to 16,384 register pairs, 64 KiB, so this bounds the converted
/// rows to about 320 MiB however many rows one advance emitted.
const WINDOW_CHUNK_ROWS: usize = 5_000;

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn kind_index(kind: RecordKind) -> usize {
    match kind {
        RecordKind::Touchpoint => 0,
        RecordKind::Survey => 1,
    }
}

fn avro_kind(kind: RecordKind) -> cxpulse_avro::RecordKind {
    match kind {
        RecordKind::Touchpoint => cxpulse_avro::RecordKind::Touchpoint,
        RecordKind::Survey => cxpulse_avro::RecordKind::Survey,
    }
}

const KINDS: [RecordKind; 2] = [RecordKind::Touchpoint, RecordKind::Survey];

pub fn run(
    path: Option<&Path>,
    env: &[(String, String)],
    log_format: LogFormat,
    _args: RunArgs,
) -> Result<()> {
    let loaded = config::load(path, env, &[])?;
    logging::to_stderr(log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(job(loaded.settings))
}

/// One partition (both sources) owned by this instance.
struct Unit {
    engine: KpiEngine,
    next: [Option<i64>; 2],
    /// `next` and the frontier as of the last durable checkpoint.
    checkpointed: ([Option<i64>; 2], Option<Millis>),
}

#[derive(Default)]
struct Pending {
    /// Window rows as the engine emitted them, with their partition: converted to
    /// ClickHouse rows (up to 16,384 register pairs each) one chunk at a time, when written.
    windows: Vec<(i32, KpiRow)>,
    panes: Vec<PaneRow>,
    responses: Vec<SurveyRow>,
    dead: Vec<(SourceRecord, &'static str, String)>,
}

impl Pending {
    fn rows(&self) -> usize {
        self.windows.len() + self.panes.len() + self.responses.len() + self.dead.len()
    }
}

type SeriesKey = (Arc<str>, Option<Channel>, Option<Arc<str>>);

struct Job {
    settings: Settings,
    engine_cfg: EngineConfig,
    units: BTreeMap<i32, Unit>,
    decoder: Decoder,
    policy: ValidationPolicy,
    sink: ClickHouseSink,
    dlq: DeadLetterProducer,
    handle: SourceHandle,
    metrics: Arc<JobMetrics>,
    exporter: KpiExporter,
    pending: Pending,
    /// Per series, the latest row of each partition (merged into the exported gauges).
    latest: HashMap<SeriesKey, BTreeMap<i32, KpiRow>>,
    last_checkpoint: Instant,
    last_lag: Instant,
    lag_in_flight: Arc<std::sync::atomic::AtomicBool>,
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn job(settings: Settings) -> Result<()> {
    let registry = Registry::new();
    let metrics = JobMetrics::new(&registry, VERSION).context("cannot register the job metrics")?;
    let exporter = KpiExporter::new(ExporterOptions {
        windows: settings.metrics.windows.clone(),
    });
    exporter
        .register(&registry)
        .context("cannot register the KPI exporter")?;
    let server = MetricsServer::bind(settings.metrics.listen)
        .await
        .with_context(|| format!("metrics.listen = {}", settings.metrics.listen))?;
    info!(addr = %server.local_addr()?, "serving /metrics and /healthz");
    let (down_tx, mut down_rx) = tokio::sync::watch::channel(false);
    let server_task = tokio::spawn(server.serve(registry, async move {
        let _ = down_rx.wait_for(|down| *down).await;
    }));

    let (client, ch_settings) = clickhouse_client(&settings.clickhouse);
    let report = cxpulse_clickhouse::migrate(&client, &ch_settings)
        .await
        .with_context(|| format!("migrating ClickHouse at {}", settings.clickhouse.url))?;
    info!(database = %report.database, applied = report.applied.len(), "ClickHouse tables ready");
    let sink = ClickHouseSink::new(
        &client,
        &ch_settings,
        SinkConfig {
            retry: cxpulse_clickhouse::RetryPolicy {
                attempts: settings.clickhouse.retries.saturating_add(1),
                base: settings.clickhouse.retry_backoff,
                ..cxpulse_clickhouse::RetryPolicy::default()
            },
            ..SinkConfig::default()
        },
    )?;
    let kafka = kafka_settings(&settings.kafka);
    let dlq = DeadLetterProducer::new(&kafka).context("dead-letter producer")?;
    let mut source = KafkaSource::new(&kafka).context("Kafka source")?;
    let handle = source.handle();
    let engine_cfg = EngineConfig {
        persist_panes: true,
        ..settings.engine.clone()
    };
    KpiEngine::new(engine_cfg.clone()).context("engine configuration")?;
    let mut job = Job {
        settings,
        engine_cfg,
        units: BTreeMap::new(),
        decoder: Decoder::new(SchemaRegistry::new()),
        policy: ValidationPolicy::default(),
        sink,
        dlq,
        handle,
        metrics: Arc::new(metrics),
        exporter,
        pending: Pending::default(),
        latest: HashMap::new(),
        last_checkpoint: Instant::now(),
        last_lag: Instant::now(),
        lag_in_flight: Arc::default(),
    };
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("stopping: signal received");
        let _ = stop_tx.send(true);
    });

    let result = job.main_loop(&mut source, &mut stop_rx).await;
    let shutdown = job.settings.job.shutdown_timeout;
    let finished = match result {
        Ok(()) => match tokio::time::timeout(shutdown, job.flush(true)).await {
            Ok(Ok(())) => {
                info!(
                    partitions = job.units.len(),
                    "final flush, checkpoint and commit done"
                );
                Ok(())
            }
            Ok(Err(e)) => Err(e.context("final flush")),
            Err(_) => Err(anyhow::anyhow!(
                "final flush did not finish within job.shutdown_timeout ({shutdown:?}); \
                 the next start replays from the last checkpoint"
            )),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = source.close().await {
        warn!(error = %e, "closing the Kafka source");
    }
    let _ = down_tx.send(true);
    let _ = server_task.await;
    finished
}

impl Job {
    async fn main_loop(
        &mut self,
        source: &mut KafkaSource,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<()> {
        let mut tick = tokio::time::interval(self.settings.clickhouse.batch_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = self
            .settings
            .clickhouse
            .retry_backoff
            .max(Duration::from_millis(100));
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(()),
                _ = tick.tick() => {
                    let checkpoint = self.last_checkpoint.elapsed() >= self.settings.job.checkpoint_interval;
                    if let Err(e) = self.flush(checkpoint).await {
                        // The sink is down: stop consuming (the source pauses its partitions
                        // once its bounded queue is full) and retry until it is back.
                        warn!(error = %format!("{e:#}"), retry_in = ?backoff, "flush failed; consumption paused until ClickHouse is back");
                        self.sink_down(stop, &mut backoff).await;
                    } else {
                        backoff = self.settings.clickhouse.retry_backoff.max(Duration::from_millis(100));
                    }
                }
                event = source.next() => {
                    match event.context("Kafka source")? {
                        SourceEvent::Records(batch) => {
                            self.process(batch);
                            // A full batch is written at once; windows advance at the tick
                            // (during a catch-up, advancing at every batch would re-emit
                            // the same corrected windows several times a second), or with
                            // the batch once they are far behind the watermark.
                            if self.pending.rows() >= self.settings.clickhouse.batch_rows {
                                let written = if self.windows_far_behind() {
                                    self.flush(false).await
                                } else {
                                    self.write_batch().await
                                };
                                if let Err(e) = written {
                                    warn!(error = %format!("{e:#}"), "flush failed; consumption paused until ClickHouse is back");
                                    self.sink_down(stop, &mut backoff).await;
                                }
                            }
                        }
                        SourceEvent::Assigned(asg) => self.assign(asg, stop).await?,
                        SourceEvent::Revoked(rev) => self.revoke(rev, stop).await?,
                    }
                }
            }
        }
    }

    /// Retries the flush with exponential backoff until it succeeds or the job stops.
    async fn sink_down(
        &mut self,
        stop: &mut tokio::sync::watch::Receiver<bool>,
        backoff: &mut Duration,
    ) {
        loop {
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(*backoff) => {}
            }
            match self.flush(false).await {
                Ok(()) => {
                    info!("ClickHouse is back: consuming again");
                    return;
                }
                Err(e) => {
                    *backoff = (*backoff * 2).min(Duration::from_secs(10));
                    warn!(error = %format!("{e:#}"), retry_in = ?*backoff, "flush failed again");
                }
            }
        }
    }

    fn process(&mut self, batch: Vec<SourceRecord>) {
        let now = now_ms();
        for record in batch {
            let topic = record.topic.clone();
            self.metrics.record_consumed(&topic);
            let p = record.partition;
            let kind = record.topic_kind;
            let Some(unit) = self.units.get_mut(&p) else {
                // Cannot happen: records only come from assigned partitions.
                warn!(topic = %topic, partition = p, offset = record.offset, "record of a partition this instance does not own; skipped");
                continue;
            };
            unit.next[kind_index(kind)] = Some(record.next_offset());
            let payload = record.payload.as_deref().unwrap_or_default();
            let event = match self.decoder.decode_validated(
                avro_kind(kind),
                payload,
                now,
                &self.policy,
            ) {
                Ok(event) => event,
                Err(e) => {
                    self.metrics.record_rejected(e.reason());
                    debug!(topic = %topic, partition = p, offset = record.offset, error = %e, "dead letter");
                    let message = e.to_string();
                    self.pending.dead.push((record, e.reason(), message));
                    continue;
                }
            };
            self.metrics.record_decoded(&topic);
            match unit.engine.ingest(p, &event, now) {
                IngestOutcome::Accepted { .. } => {
                    if let CxEvent::Survey(r) = &event {
                        match SurveyRow::from_response(r, p, record.offset) {
                            Ok(row) => self.pending.responses.push(row),
                            Err(e) => warn!(error = %e, "survey response row"),
                        }
                    }
                }
                IngestOutcome::Duplicate => {}
                IngestOutcome::Rejected(too_late) => {
                    self.metrics.record_rejected("too_late");
                    let message = too_late.to_string();
                    self.pending.dead.push((record, "too_late", message));
                }
            }
        }
    }

    /// Emits windows and changed panes of every partition into the pending batches.
    fn collect(&mut self) -> Result<()> {
        let now = now_ms();
        let started = Instant::now();
        // Every partition emits up to the same end, so the exported gauges can add them.
        let limit = self
            .units
            .values_mut()
            .filter_map(|u| u.engine.watermark_at(now))
            .min();
        let mut new_rows = false;
        for (p, unit) in &mut self.units {
            let rows = unit.engine.advance_until(now, limit);
            let first = self.pending.windows.len();
            self.pending
                .windows
                .extend(rows.into_iter().map(|row| (*p, row)));
            // Newest first: each key's latest row is cloned once (an advance emits a key's
            // ends in ascending order, and no end twice).
            for (_, row) in self.pending.windows[first..].iter().rev() {
                let key = (row.window.clone(), row.channel, row.segment.clone());
                let per_partition = self.latest.entry(key).or_default();
                if per_partition.get(p).is_none_or(|r| r.end <= row.end) {
                    per_partition.insert(*p, row.clone());
                }
                new_rows = true;
            }
            for pane in unit.engine.take_changed_panes(*p) {
                self.pending
                    .panes
                    .push(PaneRow::from_record(&pane, pane.state.updates)?);
            }
        }
        self.metrics.observe_advance(started.elapsed());
        if new_rows {
            self.export();
        }
        let frontier = self
            .units
            .values()
            .filter_map(|u| u.engine.frontier())
            .min();
        self.metrics.observe_watermark(now, limit, frontier);
        let mut stats = EngineStats::default();
        for u in self.units.values() {
            add_stats(&mut stats, &u.engine.stats());
        }
        self.metrics.observe_engine(&stats);
        Ok(())
    }

    /// Feeds the exporter the latest end of every window kind, summed over partitions.
    fn export(&mut self) {
        let mut latest_end: HashMap<Arc<str>, Millis> = HashMap::new();
        for ((window, _, _), rows) in &self.latest {
            for r in rows.values() {
                let e = latest_end.entry(window.clone()).or_insert(r.end);
                *e = (*e).max(r.end);
            }
        }
        let mut merged = Vec::new();
        for ((window, channel, segment), rows) in &self.latest {
            let Some(end) = latest_end.get(window) else {
                continue;
            };
            let mut state = KpiState::default();
            let mut first: Option<&KpiRow> = None;
            for r in rows.values().filter(|r| r.end == *end) {
                state.merge(&r.state);
                first.get_or_insert(r);
            }
            if let Some(r) = first {
                merged.push(KpiRow {
                    partition: None,
                    window: window.clone(),
                    start: r.start,
                    end: *end,
                    channel: *channel,
                    segment: segment.clone(),
                    watermark: r.watermark,
                    version: state.updates,
                    kpis: state.snapshot(),
                    state: Arc::new(state),
                });
            }
        }
        self.exporter.clear();
        self.exporter.observe(&merged);
    }

    /// Collects, writes everything pending (dead letters, windows, responses, panes) and,
    /// when `checkpoint`, checkpoints every partition and commits its offsets.
    async fn flush(&mut self, checkpoint: bool) -> Result<()> {
        let t0 = Instant::now();
        self.collect()?;
        let t1 = Instant::now();
        let rows = self.pending.rows();
        self.write_pending().await?;
        let t2 = Instant::now();
        if checkpoint {
            self.checkpoint().await?;
        }
        let t3 = Instant::now();
        if self.last_lag.elapsed() >= Duration::from_secs(5) {
            self.last_lag = Instant::now();
            self.observe_lag();
        }
        debug!(
            rows,
            collect_ms = (t1 - t0).as_millis() as u64,
            write_ms = (t2 - t1).as_millis() as u64,
            checkpoint_ms = (t3 - t2).as_millis() as u64,
            lag_ms = t3.elapsed().as_millis() as u64,
            "flush"
        );
        Ok(())
    }

    /// Some partition's watermark is [`BATCH_ADVANCE_SPAN_MS`] or more ahead of its last
    /// emitted window end.
    fn windows_far_behind(&mut self) -> bool {
        let now = now_ms();
        self.units
            .values_mut()
            .any(|u| u.engine.unemitted_span(now) >= BATCH_ADVANCE_SPAN_MS)
    }

    /// Writes what is pending (dead letters, responses, and windows and panes of the last
    /// collect, if still pending) without advancing the engines: a full batch between ticks.
    async fn write_batch(&mut self) -> Result<()> {
        let started = Instant::now();
        let rows = self.pending.rows();
        self.write_pending().await?;
        debug!(
            rows,
            write_ms = started.elapsed().as_millis() as u64,
            "batch written"
        );
        Ok(())
    }

    async fn write_pending(&mut self) -> Result<()> {
        if !self.pending.dead.is_empty() {
            let letters: Vec<DeadLetter<'_>> = self
                .pending
                .dead
                .iter()
                .map(|(r, reason, message)| DeadLetter::from_record(r, reason, message))
                .collect();
            let sends = letters.iter().map(|l| self.dlq.send(l));
            futures_util::future::try_join_all(sends)
                .await
                .context("dead-letter topic")?;
            for (_, reason, _) in &self.pending.dead {
                self.metrics.record_dead_lettered(reason);
            }
            drop(letters);
            self.pending.dead.clear();
        }
        // The three tables are written concurrently (each insert is an idempotent upsert, so
        // a flush that fails half-way is simply retried whole): a flush blocks consumption
        // for its slowest insert, not for the sum of round trips.
        let chunk = self.settings.clickhouse.batch_rows.max(1);
        let pane_chunk = self.sink.config().max_pane_batch_rows;
        let (sink, metrics, pending) = (&self.sink, &*self.metrics, &self.pending);
        let window_chunk = chunk.min(WINDOW_CHUNK_ROWS);
        let windows = async move {
            for rows in pending.windows.chunks(window_chunk) {
                let rows = rows
                    .iter()
                    .map(|(p, row)| WindowRow::from_kpi_row(row, *p, row.version))
                    .collect::<Result<Vec<WindowRow>, _>>()
                    .context("kpi_windows")?;
                write_in_chunks(metrics, "kpi_windows", &rows, window_chunk, |rows| {
                    sink.write_windows(rows, "")
                })
                .await?;
            }
            Ok::<(), anyhow::Error>(())
        };
        let responses = write_in_chunks(
            metrics,
            "survey_responses",
            &pending.responses,
            chunk,
            |rows| sink.write_responses(rows, ""),
        );
        let panes = write_in_chunks(metrics, "kpi_panes", &pending.panes, pane_chunk, |rows| {
            sink.write_panes(rows, "")
        });
        tokio::try_join!(windows, responses, panes)?;
        self.pending.windows.clear();
        self.pending.responses.clear();
        self.pending.panes.clear();
        Ok(())
    }

    /// Checkpoints every partition that read something since its last checkpoint, then
    /// commits the offsets the checkpoints cover (only for monitoring and fresh starts:
    /// restarts resume from the checkpoint).
    async fn checkpoint(&mut self) -> Result<()> {
        let created_at = now_ms();
        // Every partition's checkpoint is built first, then all are written concurrently.
        let mut due = Vec::new();
        for (p, unit) in &mut self.units {
            let position = (unit.next, unit.engine.frontier());
            if position == unit.checkpointed {
                continue;
            }
            let envelope = CheckpointEnvelope {
                format: ENVELOPE_FORMAT,
                next: unit.next,
                frontier: unit.engine.frontier(),
                engine: unit.engine.checkpoint(),
            };
            let checkpoint = Checkpoint {
                group: self.settings.kafka.group_id.clone(),
                partition: *p,
                offset: unit.next[0].unwrap_or(0),
                version: envelope.version(),
                created_at,
                state: envelope.encode(),
            };
            due.push((*p, position, checkpoint));
        }
        let (sink, metrics) = (&self.sink, &self.metrics);
        let writes = due.iter().map(|(p, _, checkpoint)| async move {
            let started = Instant::now();
            let out = sink
                .write_checkpoint(checkpoint, "")
                .await
                .with_context(|| format!("checkpoint of partition {p}"))?;
            metrics.observe_clickhouse_insert(
                "partition_checkpoints",
                started.elapsed(),
                out.rows,
                u64::from(out.attempts.saturating_sub(1)),
            );
            anyhow::Ok(())
        });
        let results = futures_util::future::join_all(writes).await;
        let mut commits = Vec::new();
        let mut failed = None;
        for ((p, position, _), result) in due.into_iter().zip(results) {
            match result {
                // A durable checkpoint: its offsets may be committed.
                Ok(()) => {
                    let Some(unit) = self.units.get_mut(&p) else {
                        continue;
                    };
                    unit.checkpointed = position;
                    for (i, kind) in KINDS.iter().enumerate() {
                        if let Some(next) = unit.next[i] {
                            commits.push((SourcePartition::new(*kind, p), next));
                        }
                    }
                }
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if !commits.is_empty() {
            if let Err(e) = self.handle.commit_off_thread(commits).await {
                // Checkpoints, not commits, decide where a restart resumes.
                warn!(error = %e, "committing offsets to Kafka failed (the checkpoints are durable)");
            }
        }
        match failed {
            Some(e) => Err(e),
            None => {
                self.last_checkpoint = Instant::now();
                Ok(())
            }
        }
    }

    /// Updates the consumer-lag gauges in the background (one broker request per partition;
    /// never holds up the flush).
    fn observe_lag(&self) {
        if self
            .lag_in_flight
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let mut positions = Vec::new();
        for (p, unit) in &self.units {
            for (i, kind) in KINDS.iter().enumerate() {
                if let Some(next) = unit.next[i] {
                    positions.push((SourcePartition::new(*kind, *p), next));
                }
            }
        }
        let handle = self.handle.clone();
        let metrics = self.metrics.clone();
        let topics = self.settings.kafka.topics.clone();
        let in_flight = self.lag_in_flight.clone();
        tokio::task::spawn_blocking(move || {
            match handle.lag(&positions) {
                Ok(lags) => {
                    for (sp, lag) in lags {
                        let topic = match sp.topic_kind {
                            RecordKind::Touchpoint => &topics.touchpoints,
                            RecordKind::Survey => &topics.surveys,
                        };
                        metrics.set_consumer_lag(topic, sp.partition, lag);
                    }
                }
                Err(e) => debug!(error = %e, "consumer lag"),
            }
            in_flight.store(false, std::sync::atomic::Ordering::Release);
        });
    }

    /// Restores newly assigned partitions from their checkpoints and starts them there.
    async fn assign(
        &mut self,
        asg: Assignment,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<()> {
        self.metrics.rebalance();
        let now = now_ms();
        let mut starts = Vec::new();
        let numbers: std::collections::BTreeSet<i32> =
            asg.partitions().iter().map(|sp| sp.partition).collect();
        for p in numbers {
            if !self.units.contains_key(&p) {
                let unit = self.restore(p, now, stop).await?;
                self.units.insert(p, unit);
            }
            let Some(unit) = self.units.get_mut(&p) else {
                continue;
            };
            unit.engine.assign_partition(p, now);
            for sp in asg.partitions().iter().filter(|sp| sp.partition == p) {
                let start = match unit.next[kind_index(sp.topic_kind)] {
                    Some(next) => StartOffset::At(next),
                    None => StartOffset::Committed,
                };
                starts.push((*sp, start));
            }
        }
        info!(partitions = ?asg.partitions().iter().map(|sp| sp.to_string()).collect::<Vec<_>>(), "assigned");
        asg.start(starts).context("answering the assignment")?;
        self.metrics.set_partitions_assigned(self.units.len());
        Ok(())
    }

    async fn restore(
        &mut self,
        p: i32,
        now: Millis,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Unit> {
        let mut backoff = Duration::from_millis(200);
        let loaded = loop {
            match self
                .sink
                .load_checkpoint(&self.settings.kafka.group_id, p)
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    warn!(partition = p, error = %e, retry_in = ?backoff, "loading the checkpoint failed");
                    if *stop.borrow() {
                        return Err(anyhow::Error::new(e).context("loading a checkpoint"));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        match loaded {
            Some(checkpoint) => {
                let envelope = CheckpointEnvelope::decode(&checkpoint.state)
                    .with_context(|| format!("checkpoint of partition {p}"))?;
                let engine = KpiEngine::restore(self.engine_cfg.clone(), &envelope.engine, now)
                    .with_context(|| format!("restoring partition {p} from its checkpoint"))?;
                info!(partition = p, next = ?envelope.next, "restored from checkpoint");
                Ok(Unit {
                    engine,
                    next: envelope.next,
                    checkpointed: (envelope.next, envelope.frontier),
                })
            }
            None => {
                info!(
                    partition = p,
                    "no checkpoint: starting from the committed offsets"
                );
                Ok(Unit {
                    engine: KpiEngine::new(self.engine_cfg.clone())?,
                    next: [None, None],
                    checkpointed: ([None, None], None),
                })
            }
        }
    }

    /// Flushes and checkpoints before giving partitions up; forgets them afterwards.
    async fn revoke(
        &mut self,
        rev: Revocation,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<()> {
        self.metrics.rebalance();
        if !rev.is_lost() {
            let mut backoff = Duration::from_millis(200);
            let deadline = Instant::now() + Duration::from_secs(50);
            loop {
                match self.flush(true).await {
                    Ok(()) => break,
                    Err(e) if Instant::now() < deadline && !*stop.borrow() => {
                        warn!(error = %format!("{e:#}"), "flush before revoke failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "flush before revoke failed; the next owner replays from the last checkpoint");
                        self.pending = Pending::default();
                        break;
                    }
                }
            }
        } else {
            warn!("partitions lost: their state is dropped; the next owner replays from the last checkpoint");
            self.pending = Pending::default();
        }
        let revoked: std::collections::BTreeSet<i32> =
            rev.partitions().iter().map(|sp| sp.partition).collect();
        for p in &revoked {
            self.units.remove(p);
            for sp in rev.partitions().iter().filter(|sp| sp.partition == *p) {
                let topic = match sp.topic_kind {
                    RecordKind::Touchpoint => &self.settings.kafka.topics.touchpoints,
                    RecordKind::Survey => &self.settings.kafka.topics.surveys,
                };
                self.metrics.remove_partition(topic, *p);
            }
        }
        for rows in self.latest.values_mut() {
            rows.retain(|p, _| !revoked.contains(p));
        }
        self.latest.retain(|_, rows| !rows.is_empty());
        self.export();
        self.metrics.set_partitions_assigned(self.units.len());
        info!(partitions = ?revoked, "revoked");
        if let Err(e) = rev.ack() {
            warn!(error = %e, "acknowledging the revocation");
        }
        Ok(())
    }
}

/// Writes `rows` into `table` in inserts of at most `chunk` rows, one after the other, and
/// records each insert's latency, rows and failed attempts.
async fn write_in_chunks<'a, R, Fut>(
    metrics: &JobMetrics,
    table: &'static str,
    rows: &'a [R],
    chunk: usize,
    write: impl Fn(&'a [R]) -> Fut,
) -> Result<()>
where
    Fut: std::future::Future<Output = Result<WriteOutcome, cxpulse_clickhouse::Error>>,
{
    let started = Instant::now();
    for rows in rows.chunks(chunk) {
        let out = write(rows).await.context(table)?;
        metrics.observe_clickhouse_insert(
            table,
            started.elapsed(),
            out.rows,
            u64::from(out.attempts.saturating_sub(1)),
        );
        metrics.rows_written("clickhouse", table, out.rows as u64);
    }
    Ok(())
}

fn add_stats(into: &mut EngineStats, s: &EngineStats) {
    into.accepted += s.accepted;
    into.late += s.late;
    into.duplicates += s.duplicates;
    into.rejected_too_late += s.rejected_too_late;
    into.segments_folded += s.segments_folded;
    into.rows_emitted += s.rows_emitted;
    into.corrections_emitted += s.corrections_emitted;
    into.cases_expired_unanswered += s.cases_expired_unanswered;
    into.series += s.series;
    into.minute_panes += s.minute_panes;
    into.hour_panes += s.hour_panes;
    into.day_panes += s.day_panes;
    into.open_cases += s.open_cases;
    into.follow_up_customers += s.follow_up_customers;
    into.dedup_ids += s.dedup_ids;
}
