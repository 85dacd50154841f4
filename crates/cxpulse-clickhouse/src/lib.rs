//! cxpulse-clickhouse: the ClickHouse side of cxpulse (see `docs/clickhouse.md`).
//!
//! * [`migrate`]: versioned, idempotent migrations recorded in `cxpulse_schema_migrations`,
//!   creating `kpi_panes`, `kpi_windows`, the view `kpi_windows_latest`, `survey_responses`
//!   and `partition_checkpoints` (all `ReplacingMergeTree(version)`), and keeping their TTL in
//!   line with [`Retention`].
//! * [`rows`]: the row types and their exact conversions from and to the core types
//!   ([`PaneRow::from_record`], [`PaneRow::restore`], [`WindowRow::from_kpi_row`],
//!   [`SurveyRow::from_response`]).
//! * [`ClickHouseSink`]: one insert per batch with an `insert_deduplication_token`, retried
//!   with exponential backoff on transient errors; and the recovery reads
//!   ([`ClickHouseSink::load_checkpoint`], [`ClickHouseSink::load_panes`],
//!   [`ClickHouseSink::max_pane_version`]).
//!
//! Versions are source offsets (`docs/design.md`): a row with a higher version contains
//! strictly more of its partition's input, so retries and replays never count twice.
#![forbid(unsafe_code)]

pub mod error;
pub mod rows;
pub mod schema;
pub mod settings;
pub mod sink;

pub use clickhouse::Client;
pub use error::{Error, RowError};
pub use rows::{
    parse_channel, parse_tier, tier_name, Checkpoint, KpiParts, LatestWindowRow, PaneRow,
    RestoredPane, SurveyRow, WindowRow,
};
pub use schema::{migrate, migrate_with, Migration, MigrationReport, MIGRATIONS};
pub use settings::{Retention, RetryPolicy, Settings, SinkConfig};
pub use sink::{is_transient, ClickHouseSink, PaneSince, WriteOutcome};
