//! `cxpulse demo`: the generator and the engine in one process, no servers needed.
//!
//! 1. Backfill: the last `demo.backfill` (2 h) of event time is generated and ingested as
//!    fast as possible (processing time = each record's simulated arrival), then one
//!    `advance` fills the board at once.
//! 2. Live: records are generated in real time at `generator.events_per_second` and ingested
//!    with processing time = the wall clock; the engine advances every `demo.tick` (1 s).
//!
//! Every emitted KPI row is appended as a JSON line to `<output_dir>/kpi_windows.jsonl`,
//! every accepted survey response (comments byte-exact UTF-8) to `survey_responses.jsonl`;
//! `/metrics` serves the job metrics and the KPI exporter; the terminal shows a live table
//! (or log lines with `--no-tui`). Ctrl-C (or `--duration`) ends it cleanly with a summary.

use crate::board::{thousands, Board, Status};
use crate::cli::{DemoArgs, LogFormat};
use crate::config::{self, ConfigError, Override, Settings};
use crate::duration::{format_millis, parse_millis};
use crate::{logging, VERSION};
use anyhow::{Context, Result};
use cxpulse_core::{
    CxEvent, EngineStats, IngestOutcome, KpiEngine, Millis, SurveyResponse, ValidationPolicy,
};
use cxpulse_gen::{Delivery, Generator, GeneratorConfig};
use cxpulse_metrics::{ExporterOptions, JobMetrics, KpiExporter, MetricsServer, Registry};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// File names inside the output directory.
pub const KPI_FILE: &str = "kpi_windows.jsonl";
pub const RESPONSES_FILE: &str = "survey_responses.jsonl";
pub const LOG_FILE: &str = "cxpulse.log";

/// The configuration keys the flags override.
fn flag_overrides(args: &DemoArgs) -> Vec<Override> {
    let mut out = Vec::new();
    if let Some(seed) = args.seed {
        match i64::try_from(seed) {
            Ok(s) => out.push(Override::flag("generator.seed", s, "--seed")),
            Err(_) => out.push(Override::flag("generator.seed", seed.to_string(), "--seed")),
        }
    }
    if let Some(rate) = args.rate {
        out.push(Override::flag(
            "generator.events_per_second",
            rate,
            "--rate",
        ));
    }
    if let Some(s) = &args.scenario {
        out.push(Override::flag(
            "generator.scenario",
            s.as_str(),
            "--scenario",
        ));
    }
    if let Some(b) = &args.backfill {
        out.push(Override::flag("demo.backfill", b.as_str(), "--backfill"));
    }
    if let Some(d) = &args.output_dir {
        out.push(Override::flag(
            "demo.output_dir",
            d.to_string_lossy().into_owned(),
            "--output-dir",
        ));
    }
    if let Some(a) = &args.metrics_addr {
        out.push(Override::flag(
            "metrics.listen",
            a.as_str(),
            "--metrics-addr",
        ));
    }
    if let Some(p) = args.partitions {
        out.push(Override::flag(
            "demo.partitions",
            i64::from(p),
            "--partitions",
        ));
    }
    out
}

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Runs `cxpulse demo`.
pub fn run(
    path: Option<&Path>,
    env: &[(String, String)],
    log_format: LogFormat,
    args: DemoArgs,
) -> Result<()> {
    let loaded = config::load(path, env, &flag_overrides(&args))?;
    let live_for = match args.duration.as_deref() {
        None => None,
        Some(text) => Some(Duration::from_millis(
            parse_millis(text)
                .map_err(|message| ConfigError::Invalid {
                    key: "--duration".to_string(),
                    message,
                    from: String::new(),
                })?
                .unsigned_abs(),
        )),
    };
    let settings = loaded.settings.clone();
    let out_dir = settings.demo.output_dir.clone();
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create the output directory {}", out_dir.display()))?;
    let tui = !args.no_tui && std::io::stdout().is_terminal();
    if tui {
        logging::to_file(log_format, &out_dir.join(LOG_FILE))
            .with_context(|| format!("cannot open {}", out_dir.join(LOG_FILE).display()))?;
    } else {
        logging::to_stderr(log_format);
    }
    info!(version = VERSION, sources = %loaded.sources(), "cxpulse demo starting");
    let scenario = (!loaded.file.generator.scenario.is_empty())
        .then(|| loaded.file.generator.scenario.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve_and_run(
        settings,
        Options {
            live_for,
            tui,
            scenario,
            follow_up_deadline: loaded.file.engine.follow_up_deadline.clone(),
        },
    ))
}

struct Options {
    live_for: Option<Duration>,
    /// As written in the configuration (e.g. `24h`).
    follow_up_deadline: String,
    tui: bool,
    scenario: Option<String>,
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve_and_run(settings: Settings, options: Options) -> Result<()> {
    let registry = Registry::new();
    let job = JobMetrics::new(&registry, VERSION).context("cannot register the job metrics")?;
    let exporter = KpiExporter::new(ExporterOptions {
        windows: settings.metrics.windows.clone(),
    });
    exporter
        .register(&registry)
        .context("cannot register the KPI exporter")?;
    let server = MetricsServer::bind(settings.metrics.listen)
        .await
        .with_context(|| format!("metrics.listen = {}", settings.metrics.listen))?;
    let addr = server.local_addr()?;
    let metrics_url = format!("http://{addr}/metrics");
    info!("serving metrics on {metrics_url} (and /healthz)");
    let (down_tx, mut down_rx) = tokio::sync::watch::channel(false);
    let server_task = tokio::spawn(server.serve(registry, async move {
        let _ = down_rx.wait_for(|down| *down).await;
    }));

    let stop = Arc::new(AtomicBool::new(false));
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("stopping: signal received (press Ctrl-C again to abort at once)");
        signal_stop.store(true, Ordering::SeqCst);
        shutdown_signal().await;
        std::process::exit(130);
    });

    let demo = tokio::task::spawn_blocking(move || -> Result<Summary> {
        let mut demo = Demo::new(settings, job, exporter, metrics_url, options)?;
        demo.run(&stop)
    })
    .await;
    let _ = down_tx.send(true);
    match server_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "metrics server failed"),
        Err(e) => warn!(error = %e, "metrics server task failed"),
    }
    let summary = demo.context("the demo thread failed")??;
    print!("{}", summary.text);
    info!("cxpulse demo stopped");
    Ok(())
}

/// A survey response as written to `survey_responses.jsonl`.
#[derive(Serialize)]
struct ResponseLine<'a> {
    partition: i32,
    #[serde(flatten)]
    response: &'a SurveyResponse,
}

#[derive(Debug, Default)]
struct Counts {
    delivered: u64,
    rejected: u64,
    rows_written: u64,
    responses_written: u64,
    responses_flushed: u64,
    comments_by_language: BTreeMap<String, u64>,
}

struct Summary {
    text: String,
}

/// Enters the alternate screen and hides the cursor; restores both when dropped.
struct Screen {
    active: bool,
}

impl Screen {
    fn start(active: bool) -> Screen {
        if active {
            print!("\x1b[?1049h\x1b[?25l\x1b[2J\x1b[H");
            let _ = std::io::stdout().flush();
        }
        Screen { active }
    }

    fn draw(&self, frame: &str) {
        if !self.active {
            return;
        }
        let mut out = String::with_capacity(frame.len() + 512);
        out.push_str("\x1b[H");
        for line in frame.lines() {
            out.push_str(line);
            out.push_str("\x1b[K\n");
        }
        out.push_str("\x1b[J");
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if self.active {
            print!("\x1b[?25h\x1b[?1049l");
            let _ = std::io::stdout().flush();
        }
    }
}

struct Demo {
    settings: Settings,
    options: Options,
    engine: KpiEngine,
    policy: ValidationPolicy,
    job: JobMetrics,
    exporter: KpiExporter,
    board: Board,
    kpi_path: PathBuf,
    responses_path: PathBuf,
    kpi_out: BufWriter<File>,
    responses_out: BufWriter<File>,
    counts: Counts,
    metrics_url: String,
}

fn append(path: &Path) -> Result<BufWriter<File>> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {} for appending", path.display()))?;
    Ok(BufWriter::with_capacity(256 * 1024, file))
}

impl Demo {
    fn new(
        settings: Settings,
        job: JobMetrics,
        exporter: KpiExporter,
        metrics_url: String,
        options: Options,
    ) -> Result<Demo> {
        let engine = KpiEngine::new(settings.engine.clone()).context("engine configuration")?;
        let dir = &settings.demo.output_dir;
        let kpi_path = dir.join(KPI_FILE);
        let responses_path = dir.join(RESPONSES_FILE);
        Ok(Demo {
            kpi_out: append(&kpi_path)?,
            responses_out: append(&responses_path)?,
            kpi_path,
            responses_path,
            engine,
            policy: ValidationPolicy::default(),
            job,
            exporter,
            board: Board::new(),
            counts: Counts::default(),
            metrics_url,
            settings,
            options,
        })
    }

    fn partition_of(&self, customer: &str) -> i32 {
        let n = u64::from(self.settings.demo.partitions);
        // < 1024 partitions: the cast cannot truncate.
        (xxhash_rust::xxh3::xxh3_64(customer.as_bytes()) % n) as i32
    }

    fn process(&mut self, d: &Delivery, now: Millis) -> Result<()> {
        let topics = &self.settings.kafka.topics;
        let topic = match &d.event {
            CxEvent::Touchpoint(_) => &topics.touchpoints,
            CxEvent::Survey(_) => &topics.surveys,
        };
        self.job.record_consumed(topic);
        self.job.record_decoded(topic);
        self.counts.delivered += 1;
        if let Err(e) = d.event.validate(now, &self.policy) {
            self.job.record_rejected(e.reason());
            self.job.record_dead_lettered(e.reason());
            self.counts.rejected += 1;
            tracing::debug!(id = d.event.id(), error = %e, "record refused");
            return Ok(());
        }
        let partition = self.partition_of(d.event.customer_id());
        match self.engine.ingest(partition, &d.event, now) {
            IngestOutcome::Accepted { .. } => {
                if let CxEvent::Survey(response) = &d.event {
                    serde_json::to_writer(
                        &mut self.responses_out,
                        &ResponseLine {
                            partition,
                            response,
                        },
                    )?;
                    self.responses_out.write_all(b"\n")?;
                    self.counts.responses_written += 1;
                    if response.comment.is_some() {
                        let lang = response.language.clone().unwrap_or_else(|| "?".to_string());
                        *self.counts.comments_by_language.entry(lang).or_default() += 1;
                    }
                }
            }
            IngestOutcome::Duplicate => {}
            IngestOutcome::Rejected(too_late) => {
                self.job.record_dead_lettered("too_late");
                self.counts.rejected += 1;
                tracing::debug!(id = d.event.id(), error = %too_late, "record too late");
            }
        }
        Ok(())
    }

    /// Advances the engine to `now`, writes and exports the rows. Returns how many.
    fn advance(&mut self, now: Millis) -> Result<usize> {
        let started = Instant::now();
        let rows = self.engine.advance(now);
        self.job.observe_advance(started.elapsed());
        if !rows.is_empty() {
            for row in &rows {
                serde_json::to_writer(&mut self.kpi_out, row)?;
                self.kpi_out.write_all(b"\n")?;
            }
            self.counts.rows_written += rows.len() as u64;
            self.job
                .rows_written("jsonl", "kpi_windows", rows.len() as u64);
            self.exporter.observe(&rows);
            self.board.apply(&rows);
        }
        self.kpi_out.flush().context("writing kpi_windows.jsonl")?;
        self.responses_out
            .flush()
            .context("writing survey_responses.jsonl")?;
        let new_responses = self.counts.responses_written - self.counts.responses_flushed;
        if new_responses > 0 {
            self.job
                .rows_written("jsonl", "survey_responses", new_responses);
            self.counts.responses_flushed = self.counts.responses_written;
        }
        let stats = self.engine.stats();
        self.job.observe_engine(&stats);
        self.job
            .observe_watermark(now, self.engine.watermark(), self.engine.frontier());
        self.job
            .set_partitions_assigned(self.settings.demo.partitions as usize);
        Ok(rows.len())
    }

    fn status(&self, now: Millis, rate: f64) -> Status {
        let stats = self.engine.stats();
        Status {
            now,
            watermark: self.engine.watermark(),
            delivered: self.counts.delivered,
            rate,
            accepted: stats.accepted,
            late: stats.late,
            duplicates: stats.duplicates,
            rejected: self.counts.rejected,
            rows_written: self.counts.rows_written,
            responses_written: self.counts.responses_written,
            metrics_url: self.metrics_url.clone(),
            kpi_file: self.kpi_path.display().to_string(),
            responses_file: self.responses_path.display().to_string(),
            scenario: self.options.scenario.clone(),
            follow_up_deadline: self.options.follow_up_deadline.clone(),
        }
    }

    fn run(&mut self, stop: &AtomicBool) -> Result<Summary> {
        let screen = Screen::start(self.options.tui);
        let live_start = now_ms();
        let backfill_ms = self.settings.demo.backfill_ms;
        let start = live_start - backfill_ms;
        let generator = Generator::new(GeneratorConfig {
            start,
            ..self.settings.generator.clone()
        })
        .context("generator configuration")?;
        let mut generator = generator.peekable();
        for p in 0..self.settings.demo.partitions {
            self.engine.assign_partition(p as i32, start);
        }
        screen.draw(&format!(
            "cxpulse demo: backfilling {} of event time at {} records/s …\n",
            format_millis(backfill_ms),
            self.settings.generator.events_per_second
        ));
        info!(
            backfill = %format_millis(backfill_ms),
            rate = self.settings.generator.events_per_second,
            partitions = self.settings.demo.partitions,
            output_dir = %self.settings.demo.output_dir.display(),
            "backfill starting"
        );

        // 1. Backfill as fast as possible.
        let backfill_started = Instant::now();
        while let Some(d) = generator.next_if(|d| d.arrival <= live_start) {
            self.process(&d, d.arrival)?;
            if self.counts.delivered % 16_384 == 0 && stop.load(Ordering::SeqCst) {
                break;
            }
        }
        let rows = self.advance(live_start)?;
        let backfill_records = self.counts.delivered;
        let backfill_took = backfill_started.elapsed();
        info!(
            records = backfill_records,
            rows,
            seconds = format!("{:.2}", backfill_took.as_secs_f64()),
            "backfill done"
        );
        if !self.options.tui {
            for line in self.board.log_lines() {
                info!("{line}");
            }
        }
        self.job.set_pane_bytes(self.engine.pane_bytes());

        // 2. Live, in real time.
        let live_started = Instant::now();
        let deadline = self.options.live_for.map(|d| live_started + d);
        let tick = self.settings.demo.tick;
        let mut rate_samples: VecDeque<(Instant, u64)> = VecDeque::new();
        let mut last_logged_end = self.board.get("1h", "all").map(|r| r.end);
        let mut last_progress = Instant::now();
        let mut last_pane_bytes = Instant::now();
        let mut rate = 0.0;
        loop {
            let tick_started = Instant::now();
            if stop.load(Ordering::SeqCst) || deadline.is_some_and(|d| tick_started >= d) {
                break;
            }
            let now = now_ms();
            while let Some(d) = generator.next_if(|d| d.arrival <= now) {
                self.process(&d, now)?;
            }
            self.advance(now)?;
            if last_pane_bytes.elapsed() >= Duration::from_secs(10) {
                self.job.set_pane_bytes(self.engine.pane_bytes());
                last_pane_bytes = Instant::now();
            }
            rate_samples.push_back((tick_started, self.counts.delivered));
            while rate_samples.len() > 2
                && tick_started.duration_since(rate_samples[0].0) > Duration::from_secs(5)
            {
                rate_samples.pop_front();
            }
            rate = match (rate_samples.front(), rate_samples.back()) {
                (Some(a), Some(b)) if b.0 > a.0 => {
                    (b.1 - a.1) as f64 / b.0.duration_since(a.0).as_secs_f64()
                }
                _ => 0.0,
            };
            if self.options.tui {
                screen.draw(&self.board.render(&self.status(now, rate), true));
            } else {
                let end = self.board.get("1h", "all").map(|r| r.end);
                if end != last_logged_end {
                    for line in self.board.log_lines() {
                        info!("{line}");
                    }
                    last_logged_end = end;
                }
                if last_progress.elapsed() >= Duration::from_secs(10) {
                    let s = self.engine.stats();
                    info!(
                        records = self.counts.delivered,
                        rate = format!("{rate:.1}"),
                        accepted = s.accepted,
                        late = s.late,
                        duplicates = s.duplicates,
                        rows = self.counts.rows_written,
                        "progress"
                    );
                    last_progress = Instant::now();
                }
            }
            // Sleep until the next tick, waking up for a stop.
            let next = tick_started + tick;
            loop {
                let now = Instant::now();
                if now >= next || stop.load(Ordering::SeqCst) || deadline.is_some_and(|d| now >= d)
                {
                    break;
                }
                std::thread::sleep((next - now).min(Duration::from_millis(50)));
            }
        }

        // 3. Last records, last advance, summary.
        let now = now_ms();
        while let Some(d) = generator.next_if(|d| d.arrival <= now) {
            self.process(&d, now)?;
        }
        self.advance(now)?;
        let live = live_started.elapsed();
        let final_frame = self
            .options
            .tui
            .then(|| self.board.render(&self.status(now, rate), true));
        drop(screen);
        let stats = self.engine.stats();
        let text = self.summary(&stats, live, backfill_records, backfill_took, final_frame);
        info!(
            records = self.counts.delivered,
            rows = self.counts.rows_written,
            responses = self.counts.responses_written,
            "demo finished"
        );
        Ok(Summary { text })
    }

    fn summary(
        &self,
        stats: &EngineStats,
        live: Duration,
        backfill_records: u64,
        backfill_took: Duration,
        final_frame: Option<String>,
    ) -> String {
        let mut out = final_frame.map(|f| f + "\n").unwrap_or_default();
        let c = &self.counts;
        out.push_str(&format!(
            "cxpulse demo stopped after {:.1} s live (backfill: {} of event time, {} records in {:.1} s)\n",
            live.as_secs_f64(),
            format_millis(self.settings.demo.backfill_ms),
            thousands(backfill_records),
            backfill_took.as_secs_f64()
        ));
        out.push_str(&format!(
            "  records {} · accepted {} · late {} · duplicates {} · rejected {}\n",
            thousands(c.delivered),
            thousands(stats.accepted),
            thousands(stats.late),
            thousands(stats.duplicates),
            thousands(c.rejected)
        ));
        out.push_str(&format!(
            "  KPI rows {} ({} corrections) → {}\n",
            thousands(c.rows_written),
            thousands(stats.corrections_emitted),
            self.kpi_path.display()
        ));
        let comments: u64 = c.comments_by_language.values().sum();
        let langs: Vec<String> = c
            .comments_by_language
            .iter()
            .map(|(l, n)| format!("{l} {}", thousands(*n)))
            .collect();
        out.push_str(&format!(
            "  survey responses {} ({} with comments: {}) → {}\n",
            thousands(c.responses_written),
            thousands(comments),
            langs.join(", "),
            self.responses_path.display()
        ));
        for line in self.board.log_lines() {
            out.push_str(&format!("  {line}\n"));
        }
        out
    }
}
