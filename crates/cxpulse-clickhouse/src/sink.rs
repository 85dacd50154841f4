//! The writer (idempotent, retrying inserts) and the recovery reader.

use crate::error::Error;
use crate::rows::{Checkpoint, LatestWindowRow, PaneRow, RestoredPane, SurveyRow, WindowRow};
use crate::schema::tables;
use crate::settings::{validate_identifier, Settings, SinkConfig};
use clickhouse::{Client, Row, RowOwned, RowWrite};
use cxpulse_core::events::Millis;
use cxpulse_core::watermark::PartitionId;
use serde::Deserialize;
use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::time::Duration;

/// ClickHouse's default `max_insert_block_size` (rows).
pub const DEFAULT_MAX_INSERT_BLOCK_SIZE: usize = 1_048_449;

/// Result of one successful write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    pub rows: usize,
    /// 1 when the first attempt succeeded.
    pub attempts: u32,
}

/// Lower bounds of pane starts to load, per tier (ms since the epoch, inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaneSince {
    pub minute: Millis,
    pub hour: Millis,
    pub day: Millis,
}

impl PaneSince {
    /// Every stored pane.
    pub const ALL: PaneSince = PaneSince {
        minute: Millis::MIN,
        hour: Millis::MIN,
        day: Millis::MIN,
    };
}

/// Writes the cxpulse tables and reads them back for recovery.
///
/// Cheap to clone (the `clickhouse::Client` shares its connection pool).
#[derive(Clone)]
pub struct ClickHouseSink {
    client: Client,
    database: String,
    config: SinkConfig,
}

/// Is `e` worth retrying? Network errors, timeouts, HTTP 5xx without a ClickHouse error
/// code, and the ClickHouse error codes of overload and transient failures.
pub fn is_transient(e: &Error) -> bool {
    match e {
        Error::Timeout { .. } => true,
        Error::ClickHouse(e) => is_transient_clickhouse(e),
        Error::RetriesExhausted { .. }
        | Error::ChecksumMismatch { .. }
        | Error::Settings(_)
        | Error::BatchTooLarge { .. }
        | Error::Row(_) => false,
    }
}

/// ClickHouse error codes that mean "the same request may succeed later".
pub const TRANSIENT_CODES: &[u32] = &[
    3,   // UNEXPECTED_END_OF_FILE (request body cut off in transit)
    159, // TIMEOUT_EXCEEDED
    160, // TOO_SLOW
    164, // READONLY (e.g. replica restarting)
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    203, // NO_FREE_CONNECTION
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    236, // ABORTED
    241, // MEMORY_LIMIT_EXCEEDED
    242, // TABLE_IS_READ_ONLY
    252, // TOO_MANY_PARTS
    279, // ALL_CONNECTION_TRIES_FAILED
    285, // TOO_FEW_LIVE_REPLICAS
    319, // UNKNOWN_STATUS_OF_INSERT
    425, // SYSTEM_ERROR
    439, // CANNOT_SCHEDULE_TASK
    999, // KEEPER_EXCEPTION
];

/// The `Code: N` of a ClickHouse error text.
pub fn error_code(message: &str) -> Option<u32> {
    let at = message.find("Code: ")? + "Code: ".len();
    let digits: String = message[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn is_transient_clickhouse(e: &clickhouse::error::Error) -> bool {
    use clickhouse::error::Error as E;
    match e {
        E::Network(_) | E::TimedOut => true,
        E::BadResponse(msg) => {
            if let Some(code) = error_code(msg) {
                return TRANSIENT_CODES.contains(&code);
            }
            // No ClickHouse exception: the client reports "<status> <reason>", or a proxy's
            // error page came back.
            let status: Option<u16> = msg.get(..3).and_then(|s| s.parse().ok());
            status.is_some_and(|s| (500..600).contains(&s))
                || ["502 Bad Gateway", "503 Service", "504 Gateway"]
                    .iter()
                    .any(|p| msg.contains(p))
        }
        E::Other(inner) => inner.downcast_ref::<std::io::Error>().is_some_and(|io| {
            use std::io::ErrorKind as K;
            matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::BrokenPipe
                    | K::TimedOut
                    | K::UnexpectedEof
                    | K::Interrupted
            )
        }),
        _ => false,
    }
}

/// A delay in `[d/2, d]` ("equal jitter"), so that instances retrying together spread out.
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return d;
    }
    let r = RandomState::new().hash_one(std::time::Instant::now());
    half + Duration::from_nanos(r % (nanos + 1))
}

#[derive(Row, Deserialize)]
struct VersionStats {
    v: u64,
    n: u64,
}

impl ClickHouseSink {
    /// A sink on `settings.database` (the tables must exist: see [`crate::migrate`]).
    pub fn new(client: &Client, settings: &Settings, config: SinkConfig) -> Result<Self, Error> {
        validate_identifier(&settings.database)?;
        config.validate()?;
        Ok(ClickHouseSink {
            client: client.clone().with_database(&settings.database),
            database: settings.database.clone(),
            config,
        })
    }

    /// The client, bound to the sink's database.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn config(&self) -> &SinkConfig {
        &self.config
    }

    /// Runs `f` under the request timeout, retrying transient errors per the retry policy.
    async fn retrying<T, F, Fut>(
        &self,
        operation: &'static str,
        mut f: F,
    ) -> Result<(T, u32), Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let policy = self.config.retry;
        let timeout = self.config.request_timeout;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = match tokio::time::timeout(timeout, f()).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout {
                    operation,
                    after: timeout,
                }),
            };
            match result {
                Ok(v) => return Ok((v, attempt)),
                Err(e) if !is_transient(&e) => return Err(e),
                Err(e) if attempt >= policy.attempts => {
                    tracing::error!(operation, attempt, error = %e, "giving up");
                    return Err(Error::RetriesExhausted {
                        operation,
                        attempts: attempt,
                        last: Box::new(e),
                    });
                }
                Err(e) => {
                    let delay = jitter(policy.delay(attempt));
                    tracing::warn!(operation, attempt, ?delay, error = %e, "transient error, retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One `INSERT` of `rows`, retried as a whole.
    async fn insert_all<T>(
        &self,
        operation: &'static str,
        table: &'static str,
        rows: &[T],
        dedup_token: &str,
        one_block: bool,
    ) -> Result<WriteOutcome, Error>
    where
        T: RowOwned + RowWrite,
    {
        if rows.is_empty() {
            return Ok(WriteOutcome {
                rows: 0,
                attempts: 0,
            });
        }
        let timeout = self.config.request_timeout;
        let (_, attempts) = self
            .retrying(operation, || async {
                let mut insert = self
                    .client
                    .insert::<T>(table)
                    .await?
                    .with_timeouts(Some(timeout), Some(timeout))
                    // The insert is durable when `end` returns, and forms its own blocks.
                    .with_setting("async_insert", "0");
                if !dedup_token.is_empty() {
                    insert = insert.with_setting("insert_deduplication_token", dedup_token);
                }
                if one_block {
                    // No block boundary inside the batch: the parser cuts at the max row
                    // count (or when both min thresholds are reached), squashing emits at
                    // either min threshold (0 = ignored). See `docs/clickhouse.md`.
                    let size = (rows.len() + 1)
                        .max(DEFAULT_MAX_INSERT_BLOCK_SIZE)
                        .to_string();
                    insert = insert
                        .with_setting("max_insert_block_size", size.clone())
                        .with_setting("min_insert_block_size_rows", size)
                        .with_setting("min_insert_block_size_bytes", "0");
                }
                for row in rows {
                    insert.write(row).await?;
                }
                insert.end().await?;
                Ok(())
            })
            .await?;
        tracing::debug!(operation, rows = rows.len(), attempts, "inserted");
        Ok(WriteOutcome {
            rows: rows.len(),
            attempts,
        })
    }

    /// `SELECT 1`.
    pub async fn ping(&self) -> Result<(), Error> {
        self.retrying("ping", || async {
            let one: u8 = self.client.query("SELECT toUInt8(1)").fetch_one().await?;
            Ok(one)
        })
        .await
        .map(|_| ())
    }

    /// Inserts a flush's changed panes of one partition in **one** insert that ClickHouse
    /// turns into one block and one part (the table is not partitioned), so the whole batch
    /// becomes visible at once or not at all. Bounded by
    /// [`SinkConfig::max_pane_batch_rows`]; for this insert `max_insert_block_size` and
    /// `min_insert_block_size_rows` are raised above the row count and
    /// `min_insert_block_size_bytes` is set to 0, so neither the parser nor squashing cuts
    /// the batch (the `*_bytes` maximums must stay at their default 0 in the user profile).
    ///
    /// `dedup_token` (e.g. `"panes:<partition>:<offset>"`) makes a retried or replayed insert
    /// of the same batch a no-op within the last 10 000 inserts; empty = none.
    pub async fn write_panes(
        &self,
        rows: &[PaneRow],
        dedup_token: &str,
    ) -> Result<WriteOutcome, Error> {
        if rows.len() > self.config.max_pane_batch_rows {
            return Err(Error::BatchTooLarge {
                rows: rows.len(),
                max: self.config.max_pane_batch_rows,
            });
        }
        self.insert_all("write_panes", tables::PANES, rows, dedup_token, true)
            .await
    }

    /// Inserts window rows (one insert; large batches may form several blocks, which is
    /// harmless: every row is an upsert by version).
    pub async fn write_windows(
        &self,
        rows: &[WindowRow],
        dedup_token: &str,
    ) -> Result<WriteOutcome, Error> {
        self.insert_all("write_windows", tables::WINDOWS, rows, dedup_token, false)
            .await
    }

    /// Inserts survey responses (one insert).
    pub async fn write_responses(
        &self,
        rows: &[SurveyRow],
        dedup_token: &str,
    ) -> Result<WriteOutcome, Error> {
        self.insert_all(
            "write_responses",
            tables::RESPONSES,
            rows,
            dedup_token,
            false,
        )
        .await
    }

    /// Inserts a partition checkpoint.
    pub async fn write_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        dedup_token: &str,
    ) -> Result<WriteOutcome, Error> {
        self.insert_all(
            "write_checkpoint",
            tables::CHECKPOINTS,
            std::slice::from_ref(checkpoint),
            dedup_token,
            true,
        )
        .await
    }

    /// The latest checkpoint (highest version) of `partition` for `group`.
    pub async fn load_checkpoint(
        &self,
        group: &str,
        partition: PartitionId,
    ) -> Result<Option<Checkpoint>, Error> {
        let (cp, _) = self
            .retrying("load_checkpoint", || async {
                Ok(self
                    .client
                    .query(
                        "SELECT ?fields FROM partition_checkpoints \
                         WHERE `group` = ? AND `partition` = ? \
                         ORDER BY version DESC, created_at DESC LIMIT 1",
                    )
                    .bind(group)
                    .bind(partition)
                    .fetch_optional::<Checkpoint>()
                    .await?)
            })
            .await?;
        Ok(cp)
    }

    /// The stored pane rows of `partition` (latest version of each pane, via `FINAL`) whose
    /// start is at or after `since` for their tier, ordered by tier, start, channel, segment.
    pub async fn load_pane_rows(
        &self,
        partition: PartitionId,
        since: &PaneSince,
    ) -> Result<Vec<PaneRow>, Error> {
        let (rows, _) = self
            .retrying("load_panes", || async {
                Ok(self
                    .client
                    .query(
                        "SELECT ?fields FROM kpi_panes FINAL WHERE `partition` = ? AND ( \
                         (tier = 'minute' AND toUnixTimestamp64Milli(`start`) >= ?) OR \
                         (tier = 'hour' AND toUnixTimestamp64Milli(`start`) >= ?) OR \
                         (tier = 'day' AND toUnixTimestamp64Milli(`start`) >= ?)) \
                         ORDER BY tier, `start`, channel, segment",
                    )
                    .bind(partition)
                    .bind(since.minute)
                    .bind(since.hour)
                    .bind(since.day)
                    .fetch_all::<PaneRow>()
                    .await?)
            })
            .await?;
        Ok(rows)
    }

    /// [`load_pane_rows`](Self::load_pane_rows), converted back to exact states.
    pub async fn load_panes(
        &self,
        partition: PartitionId,
        since: &PaneSince,
    ) -> Result<Vec<RestoredPane>, Error> {
        let rows = self.load_pane_rows(partition, since).await?;
        rows.iter()
            .map(|r| r.restore().map_err(Error::from))
            .collect()
    }

    /// The highest pane version stored for `partition` (`None`: no panes).
    pub async fn max_pane_version(&self, partition: PartitionId) -> Result<Option<u64>, Error> {
        let (stats, _) = self
            .retrying("max_pane_version", || async {
                Ok(self
                    .client
                    .query(
                        "SELECT max(version) AS v, count() AS n FROM kpi_panes \
                         WHERE `partition` = ?",
                    )
                    .bind(partition)
                    .fetch_one::<VersionStats>()
                    .await?)
            })
            .await?;
        Ok((stats.n > 0).then_some(stats.v))
    }

    /// Rows of `kpi_windows_latest` for `window` ending at `end` (every group key).
    pub async fn latest_windows(
        &self,
        window: &str,
        end: Millis,
    ) -> Result<Vec<LatestWindowRow>, Error> {
        let (rows, _) = self
            .retrying("latest_windows", || async {
                Ok(self
                    .client
                    .query(
                        "SELECT ?fields FROM kpi_windows_latest \
                         WHERE `window` = ? AND `end` = fromUnixTimestamp64Milli(toInt64(?), 'UTC') \
                         ORDER BY channel, segment",
                    )
                    .bind(window)
                    .bind(end)
                    .fetch_all::<LatestWindowRow>()
                    .await?)
            })
            .await?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(msg: &str) -> Error {
        Error::ClickHouse(clickhouse::error::Error::BadResponse(msg.to_string()))
    }

    #[test]
    fn classification() {
        assert!(is_transient(&bad(
            "Code: 241. DB::Exception: Memory limit (total) exceeded. (MEMORY_LIMIT_EXCEEDED)"
        )));
        assert!(is_transient(&bad(
            "Code: 252. DB::Exception: Too many parts"
        )));
        assert!(!is_transient(&bad(
            "Code: 60. DB::Exception: Unknown table expression identifier. (UNKNOWN_TABLE)"
        )));
        assert!(!is_transient(&bad("Code: 62. DB::Exception: Syntax error")));
        assert!(is_transient(&bad("503 Service Unavailable")));
        assert!(is_transient(&bad("<html>502 Bad Gateway</html>")));
        assert!(!is_transient(&bad("400 Bad Request")));
        assert!(is_transient(&Error::ClickHouse(
            clickhouse::error::Error::TimedOut
        )));
        assert!(is_transient(&Error::Timeout {
            operation: "x",
            after: Duration::from_secs(1)
        }));
        assert!(!is_transient(&Error::Settings("x".into())));
        assert_eq!(error_code("Code: 159. DB::Exception"), Some(159));
        assert_eq!(error_code("nothing"), None);
    }

    #[test]
    fn jitter_is_bounded() {
        for ms in [0u64, 1, 10, 1000] {
            let d = Duration::from_millis(ms);
            let j = jitter(d);
            assert!(j >= d / 2 && j <= d, "{j:?} {d:?}");
        }
    }
}
