//! Job-health metrics: what the stream job did and how far behind it is.
//!
//! Names follow `cxpulse_<what>_<unit>[_total]`. Counters that mirror the engine's own
//! lifetime counters ([`EngineStats`]) are advanced by the difference since the last
//! [`JobMetrics::observe_engine`], so they stay monotonic.

use cxpulse_core::{EngineStats, Millis};
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use std::sync::Mutex;
use std::time::Duration;

/// Buckets (seconds) of the ClickHouse insert duration.
pub const INSERT_DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets (rows) of the ClickHouse batch size.
pub const BATCH_ROWS_BUCKETS: [f64; 10] = [
    1.0, 10.0, 100.0, 500.0, 1_000.0, 5_000.0, 10_000.0, 50_000.0, 100_000.0, 500_000.0,
];
/// Buckets (seconds) of one `KpiEngine::advance`.
pub const ADVANCE_DURATION_BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Every job-health metric, registered in one [`Registry`].
#[derive(Debug)]
pub struct JobMetrics {
    records_consumed: IntCounterVec,
    records_decoded: IntCounterVec,
    records_rejected: IntCounterVec,
    records_dead_lettered: IntCounterVec,
    events_accepted: IntCounter,
    events_late: IntCounter,
    events_duplicate: IntCounter,
    events_too_late: IntCounter,
    segment_folded_events: IntCounter,
    cases_expired_unanswered: IntCounter,
    rows_emitted: IntCounter,
    corrections_emitted: IntCounter,
    advance_duration: Histogram,
    watermark_delay: Gauge,
    watermark_timestamp: Gauge,
    frontier_timestamp: Gauge,
    consumer_lag: IntGaugeVec,
    partitions_assigned: IntGauge,
    rebalances: IntCounter,
    clickhouse_insert_duration: HistogramVec,
    clickhouse_insert_errors: IntCounterVec,
    clickhouse_batch_rows: HistogramVec,
    sink_rows_written: IntCounterVec,
    state_series: IntGauge,
    state_panes: IntGaugeVec,
    state_open_cases: IntGauge,
    state_follow_up_customers: IntGauge,
    state_dedup_ids: IntGauge,
    state_pane_bytes: IntGauge,
    last_stats: Mutex<EngineStats>,
}

fn counter(reg: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::with_opts(Opts::new(name, help))?;
    reg.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter_vec(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(reg: &Registry, name: &str, help: &str) -> prometheus::Result<Gauge> {
    let g = Gauge::with_opts(Opts::new(name, help))?;
    reg.register(Box::new(g.clone()))?;
    Ok(g)
}

fn int_gauge(reg: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::with_opts(Opts::new(name, help))?;
    reg.register(Box::new(g.clone()))?;
    Ok(g)
}

fn int_gauge_vec(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram_vec(
    reg: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )?;
    reg.register(Box::new(h.clone()))?;
    Ok(h)
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl JobMetrics {
    /// Creates and registers every job metric; `version` goes into `cxpulse_build_info`.
    pub fn new(registry: &Registry, version: &str) -> prometheus::Result<JobMetrics> {
        let r = registry;
        let build_info = int_gauge_vec(
            r,
            "cxpulse_build_info",
            "Always 1; the version label names the running build.",
            &["version"],
        )?;
        build_info.with_label_values(&[version]).set(1);
        let start_time = gauge(
            r,
            "cxpulse_start_time_seconds",
            "When this process started (Unix seconds).",
        )?;
        start_time.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        let advance_duration = Histogram::with_opts(
            HistogramOpts::new(
                "cxpulse_engine_advance_duration_seconds",
                "Duration of one engine advance (window evaluation and emission).",
            )
            .buckets(ADVANCE_DURATION_BUCKETS.to_vec()),
        )?;
        r.register(Box::new(advance_duration.clone()))?;
        Ok(JobMetrics {
            records_consumed: counter_vec(
                r,
                "cxpulse_records_consumed_total",
                "Records read from the input, by topic.",
                &["topic"],
            )?,
            records_decoded: counter_vec(
                r,
                "cxpulse_records_decoded_total",
                "Records decoded successfully, by topic.",
                &["topic"],
            )?,
            records_rejected: counter_vec(
                r,
                "cxpulse_records_rejected_total",
                "Records refused before reaching the engine (decode error or validation), by reason.",
                &["reason"],
            )?,
            records_dead_lettered: counter_vec(
                r,
                "cxpulse_records_dead_lettered_total",
                "Records sent to the dead-letter topic, by reason.",
                &["reason"],
            )?,
            events_accepted: counter(
                r,
                "cxpulse_events_accepted_total",
                "Events counted by the engine.",
            )?,
            events_late: counter(
                r,
                "cxpulse_events_late_total",
                "Accepted events that arrived behind the watermark (they corrected emitted windows).",
            )?,
            events_duplicate: counter(
                r,
                "cxpulse_events_duplicate_total",
                "Redelivered events ignored by id.",
            )?,
            events_too_late: counter(
                r,
                "cxpulse_events_too_late_total",
                "Events older than watermark - correction horizon: not counted, dead-lettered.",
            )?,
            segment_folded_events: counter(
                r,
                "cxpulse_segment_folded_events_total",
                "Events whose segment was folded into `other` by the segment cardinality guard.",
            )?,
            cases_expired_unanswered: counter(
                r,
                "cxpulse_cases_expired_unanswered_total",
                "Support cases forgotten without a first reply within the case TTL.",
            )?,
            rows_emitted: counter(
                r,
                "cxpulse_engine_rows_emitted_total",
                "Window rows emitted by the engine (new and corrected).",
            )?,
            corrections_emitted: counter(
                r,
                "cxpulse_engine_corrections_emitted_total",
                "Window rows re-emitted because late data corrected them.",
            )?,
            advance_duration,
            watermark_delay: gauge(
                r,
                "cxpulse_watermark_delay_seconds",
                "Processing time minus the job watermark (how far event time lags behind now).",
            )?,
            watermark_timestamp: gauge(
                r,
                "cxpulse_watermark_timestamp_seconds",
                "The job watermark (Unix seconds of event time).",
            )?,
            frontier_timestamp: gauge(
                r,
                "cxpulse_frontier_timestamp_seconds",
                "Windows ending at or before this have been emitted (Unix seconds).",
            )?,
            consumer_lag: int_gauge_vec(
                r,
                "cxpulse_consumer_lag_records",
                "Records between the consumer position and the end of the partition.",
                &["topic", "partition"],
            )?,
            partitions_assigned: int_gauge(
                r,
                "cxpulse_partitions_assigned",
                "Input partitions owned by this instance.",
            )?,
            rebalances: counter(
                r,
                "cxpulse_rebalances_total",
                "Consumer-group rebalances seen by this instance.",
            )?,
            clickhouse_insert_duration: histogram_vec(
                r,
                "cxpulse_clickhouse_insert_duration_seconds",
                "Duration of one ClickHouse insert (including retries), by table.",
                &INSERT_DURATION_BUCKETS,
                &["table"],
            )?,
            clickhouse_insert_errors: counter_vec(
                r,
                "cxpulse_clickhouse_insert_errors_total",
                "Failed ClickHouse insert attempts, by table.",
                &["table"],
            )?,
            clickhouse_batch_rows: histogram_vec(
                r,
                "cxpulse_clickhouse_batch_rows",
                "Rows per ClickHouse insert, by table.",
                &BATCH_ROWS_BUCKETS,
                &["table"],
            )?,
            sink_rows_written: counter_vec(
                r,
                "cxpulse_sink_rows_written_total",
                "Rows written by a sink, by sink and table.",
                &["sink", "table"],
            )?,
            state_series: int_gauge(
                r,
                "cxpulse_state_series",
                "Pane series held by the engine (grouping sets included).",
            )?,
            state_panes: int_gauge_vec(
                r,
                "cxpulse_state_panes",
                "Panes held by the engine, by tier (minute, hour, day).",
                &["tier"],
            )?,
            state_open_cases: int_gauge(
                r,
                "cxpulse_state_open_cases",
                "Support cases being joined.",
            )?,
            state_follow_up_customers: int_gauge(
                r,
                "cxpulse_state_follow_up_customers",
                "Customers with detractors or outbound contacts still tracked for the closed loop.",
            )?,
            state_dedup_ids: int_gauge(
                r,
                "cxpulse_state_dedup_ids",
                "Event ids remembered for de-duplication.",
            )?,
            state_pane_bytes: int_gauge(
                r,
                "cxpulse_state_pane_bytes",
                "Approximate bytes held in panes (updated periodically).",
            )?,
            last_stats: Mutex::new(EngineStats::default()),
        })
    }

    /// One record read from `topic`.
    pub fn record_consumed(&self, topic: &str) {
        self.records_consumed.with_label_values(&[topic]).inc();
    }

    /// One record of `topic` decoded.
    pub fn record_decoded(&self, topic: &str) {
        self.records_decoded.with_label_values(&[topic]).inc();
    }

    /// One record refused (decode error, `ValidationError::reason`, …).
    pub fn record_rejected(&self, reason: &str) {
        self.records_rejected.with_label_values(&[reason]).inc();
    }

    /// One record sent to the dead-letter topic.
    pub fn record_dead_lettered(&self, reason: &str) {
        self.records_dead_lettered
            .with_label_values(&[reason])
            .inc();
    }

    /// Brings the engine counters and state gauges up to date with `stats`.
    pub fn observe_engine(&self, stats: &EngineStats) {
        let mut last = self
            .last_stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // An engine that was replaced starts from zero: count its values whole.
        let delta = |now: u64, before: u64| if now >= before { now - before } else { now };
        self.events_accepted
            .inc_by(delta(stats.accepted, last.accepted));
        self.events_late.inc_by(delta(stats.late, last.late));
        self.events_duplicate
            .inc_by(delta(stats.duplicates, last.duplicates));
        self.events_too_late
            .inc_by(delta(stats.rejected_too_late, last.rejected_too_late));
        self.segment_folded_events
            .inc_by(delta(stats.segments_folded, last.segments_folded));
        self.cases_expired_unanswered.inc_by(delta(
            stats.cases_expired_unanswered,
            last.cases_expired_unanswered,
        ));
        self.rows_emitted
            .inc_by(delta(stats.rows_emitted, last.rows_emitted));
        self.corrections_emitted
            .inc_by(delta(stats.corrections_emitted, last.corrections_emitted));
        *last = stats.clone();
        drop(last);
        self.state_series.set(to_i64(stats.series));
        for (tier, n) in [
            ("minute", stats.minute_panes),
            ("hour", stats.hour_panes),
            ("day", stats.day_panes),
        ] {
            self.state_panes.with_label_values(&[tier]).set(to_i64(n));
        }
        self.state_open_cases.set(to_i64(stats.open_cases));
        self.state_follow_up_customers
            .set(to_i64(stats.follow_up_customers));
        self.state_dedup_ids.set(to_i64(stats.dedup_ids));
    }

    /// Watermark, its delay behind processing time `now`, and the emission frontier.
    pub fn observe_watermark(
        &self,
        now: Millis,
        watermark: Option<Millis>,
        frontier: Option<Millis>,
    ) {
        if let Some(w) = watermark {
            self.watermark_timestamp.set(w as f64 / 1000.0);
            self.watermark_delay.set((now - w) as f64 / 1000.0);
        }
        if let Some(f) = frontier {
            self.frontier_timestamp.set(f as f64 / 1000.0);
        }
    }

    /// One engine advance took `elapsed`.
    pub fn observe_advance(&self, elapsed: Duration) {
        self.advance_duration.observe(elapsed.as_secs_f64());
    }

    /// Consumer lag of one partition.
    pub fn set_consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag);
    }

    /// A partition was revoked: its lag series goes away.
    pub fn remove_partition(&self, topic: &str, partition: i32) {
        let _ = self
            .consumer_lag
            .remove_label_values(&[topic, &partition.to_string()]);
    }

    pub fn set_partitions_assigned(&self, n: usize) {
        self.partitions_assigned.set(to_i64(n));
    }

    /// One consumer-group rebalance.
    pub fn rebalance(&self) {
        self.rebalances.inc();
    }

    /// One ClickHouse insert into `table`: its duration, its rows, whether it succeeded, and
    /// how many attempts failed on the way.
    pub fn observe_clickhouse_insert(
        &self,
        table: &str,
        elapsed: Duration,
        rows: usize,
        failed_attempts: u64,
    ) {
        self.clickhouse_insert_duration
            .with_label_values(&[table])
            .observe(elapsed.as_secs_f64());
        self.clickhouse_batch_rows
            .with_label_values(&[table])
            .observe(rows as f64);
        // Also when 0: the series exists from the first insert on, so `rate()` over it (the
        // dashboards, the ClickHouse-errors alert) has a value before the first error.
        self.clickhouse_insert_errors
            .with_label_values(&[table])
            .inc_by(failed_attempts);
    }

    /// `rows` written by `sink` (clickhouse, jsonl, …) into `table`.
    pub fn rows_written(&self, sink: &str, table: &str, rows: u64) {
        self.sink_rows_written
            .with_label_values(&[sink, table])
            .inc_by(rows);
    }

    /// Approximate bytes in panes (`KpiEngine::pane_bytes`; it walks every pane, so call it
    /// every few seconds, not per advance).
    pub fn set_pane_bytes(&self, bytes: usize) {
        self.state_pane_bytes.set(to_i64(bytes));
    }
}
