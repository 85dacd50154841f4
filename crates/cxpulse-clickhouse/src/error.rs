//! Error types of this crate.

use cxpulse_sketch::SketchError;
use std::time::Duration;
use thiserror::Error;

/// Everything that can go wrong talking to ClickHouse.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A query or insert failed (after retries for transient errors, see
    /// [`Error::RetriesExhausted`]).
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// A transient error persisted through every attempt of the retry policy.
    #[error("{operation}: gave up after {attempts} attempt(s): {last}")]
    RetriesExhausted {
        operation: &'static str,
        attempts: u32,
        #[source]
        last: Box<Error>,
    },
    /// A request did not finish within the configured request timeout.
    #[error("{operation}: timed out after {after:?}")]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    /// A migration that was already applied has changed since (its checksum differs).
    #[error(
        "migration {version} `{name}` was changed after it was applied to `{database}` \
         (recorded checksum {recorded}, this build has {expected}); add a new migration instead"
    )]
    ChecksumMismatch {
        database: String,
        version: u32,
        name: String,
        recorded: String,
        expected: String,
    },
    /// Invalid [`crate::Settings`] or [`crate::SinkConfig`].
    #[error("invalid settings: {0}")]
    Settings(String),
    /// A pane batch is larger than one insert block may be (it would not be atomic).
    #[error("pane batch of {rows} rows exceeds the atomic insert bound of {max} rows")]
    BatchTooLarge { rows: usize, max: usize },
    /// A row read from ClickHouse (or given to a conversion) is not valid.
    #[error(transparent)]
    Row(#[from] RowError),
}

/// A row that cannot be converted (corrupt stored data or out-of-range input).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RowError {
    #[error("unknown tier `{0}` (expected minute, hour or day)")]
    UnknownTier(String),
    #[error("unknown channel `{0}`")]
    UnknownChannel(String),
    #[error("unknown currency `{0}`")]
    UnknownCurrency(String),
    #[error("column `{column}`: {source}")]
    Sketch {
        column: &'static str,
        #[source]
        source: SketchError,
    },
    #[error("column `{column}`: bucket index {index} does not fit Int16")]
    BucketIndex { column: &'static str, index: i32 },
    #[error("column `{column}`: duplicate key {key}")]
    DuplicateKey { column: &'static str, key: String },
    #[error(
        "revenue for {currency}: {units} units cannot come from {count} amount(s) \
         (revenue and revenue_count disagree)"
    )]
    RevenueLine {
        currency: String,
        units: i128,
        count: u64,
    },
    #[error("revenue for {currency}: {units} units exceed Decimal128(4)")]
    RevenueRange { currency: String, units: i128 },
    #[error("survey score {0} does not fit Int8")]
    Score(i32),
    #[error("negative source offset {0}")]
    NegativeOffset(i64),
    #[error("version {0} does not fit a source offset (Int64)")]
    Version(u64),
}
