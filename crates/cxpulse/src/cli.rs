//! The command line (clap derive). `run`, `migrate` and `generate` slot in as further
//! [`Command`] variants next to `demo`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// cxpulse: customer-experience events in, rolling KPI windows out (NPS, CSAT, CES, response
/// times, closed loop, revenue), per channel and segment.
#[derive(Debug, Parser)]
#[command(name = "cxpulse", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file [default: $CXPULSE_CONFIG, else ./cxpulse.toml if it exists, else
    /// built-in defaults]. Every key can be overridden by CXPULSE_<SECTION>__<KEY>.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format (logs go to stderr; RUST_LOG filters them, default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generator and engine in one process, no servers needed: a quick backfill, then live
    /// traffic in real time; KPI rows to ./cxpulse-data/, metrics on /metrics, and a live KPI
    /// table until Ctrl-C.
    Demo(DemoArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create or upgrade the ClickHouse tables (versioned; running it twice changes nothing).
    Migrate,
    /// Write realistic, deterministic CX traffic to Kafka (Avro, keyed by customer).
    Generate(GenerateArgs),
    /// The stream job: Kafka -> rolling KPI windows -> ClickHouse and /metrics, with
    /// checkpoints (no loss, no double counting); bad records go to the dead-letter topic.
    /// Runs until SIGTERM/SIGINT, then flushes, checkpoints, commits and exits 0.
    Run(RunArgs),
}

/// Flags of `cxpulse run` (everything else comes from the configuration).
#[derive(Debug, Args)]
pub struct RunArgs {}

/// Flags of `cxpulse generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// How many records to send: exactly this many (with --duration: at most).
    #[arg(long)]
    pub count: Option<u64>,
    /// How much event time to generate (e.g. 10m, 2h); the backfill ends now.
    #[arg(long)]
    pub duration: Option<String>,
    /// Events per second of event time [generator.events_per_second].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Generator seed: the same seed gives the same records [generator.seed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// A KPI shift, e.g. `nps-drop:30:phone:enterprise:10` [generator.scenario].
    #[arg(long)]
    pub scenario: Option<String>,
    /// Share of records to break (truncated, bad magic, unknown schema, NPS 11, empty).
    #[arg(long, default_value_t = 0.0)]
    pub malformed_share: f64,
    /// Send in real time (paced by event time) instead of as fast as possible.
    #[arg(long)]
    pub realtime: bool,
    /// Event time of the first record, in ms since the Unix epoch (default: the backfill
    /// ends now). The same seed and start always give the same records.
    #[arg(long)]
    pub start: Option<i64>,
    /// Partitions of the topics when they are created.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the resolved configuration (TOML, secrets redacted); exit 2 naming the key if
    /// it is invalid.
    Check,
}

/// Flags of `cxpulse demo`; each overrides its configuration key.
#[derive(Debug, Default, Args)]
pub struct DemoArgs {
    /// Generator seed (same seed, same traffic) [generator.seed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Events per second of event time [generator.events_per_second].
    #[arg(long, value_name = "EVENTS_PER_SECOND", allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// A KPI shift to watch, e.g. nps-drop:30:phone:enterprise:10 (NPS −30 points on phone
    /// for enterprise from minute 10 of the generated stream) [generator.scenario].
    #[arg(long, value_name = "SPEC")]
    pub scenario: Option<String>,
    /// Stop by itself after this long of live running (e.g. 5s, 10m) [default: until Ctrl-C].
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
    /// Event time generated at full speed before going live, e.g. 2h, 30m, 0 [demo.backfill].
    #[arg(long, value_name = "DURATION")]
    pub backfill: Option<String>,
    /// Log lines instead of the live table (also when stdout is not a terminal).
    #[arg(long)]
    pub no_tui: bool,
    /// Where the JSON lines go [demo.output_dir].
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Address of /metrics and /healthz; port 0 picks a free one [metrics.listen].
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_addr: Option<String>,
    /// Input partitions to simulate [demo.partitions].
    #[arg(long)]
    pub partitions: Option<u32>,
}
