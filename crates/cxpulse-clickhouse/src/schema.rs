//! Versioned, idempotent migrations and the retention (TTL) of every table.
//!
//! A migration is a list of SQL templates. `{db}` stands for the (validated, back-quoted)
//! database, `{ttl_panes}`, `{ttl_windows}`, `{ttl_responses}` for the retention
//! expressions from [`Retention`] and `{gamma_powers}` for the DDSketch bucket bounds. The
//! checksum of a migration is the XXH3-64 of its templates (with the bucket bounds filled
//! in), so it depends on neither the database name nor the retention: changing the
//! retention is not a schema change (it is reconciled with `ALTER TABLE … MODIFY TTL`), while
//! editing an applied migration is an error ([`Error::ChecksumMismatch`]).

use crate::error::Error;
use crate::settings::{Retention, Settings};
use clickhouse::{Client, Row};
use cxpulse_sketch::quantile::MAX_BUCKET_INDEX;
use cxpulse_sketch::DurationSketch;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// One schema change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// Strictly increasing, never reused.
    pub version: u32,
    pub name: &'static str,
    /// Statements, run in order. Each must be idempotent on its own (`IF NOT EXISTS`), so a
    /// crash between running them and recording the migration is harmless.
    pub statements: &'static [&'static str],
}

impl Migration {
    /// XXH3-64 of the statement templates, as 16 hex digits.
    pub fn checksum(&self) -> String {
        let mut text = String::new();
        for s in self.statements {
            text.push_str(&s.trim().replace("{gamma_powers}", &gamma_powers()));
            text.push('\u{1e}');
        }
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
    }
}

/// Table names.
pub mod tables {
    pub const MIGRATIONS: &str = "cxpulse_schema_migrations";
    pub const PANES: &str = "kpi_panes";
    pub const WINDOWS: &str = "kpi_windows";
    pub const WINDOWS_LATEST: &str = "kpi_windows_latest";
    pub const RESPONSES: &str = "survey_responses";
    pub const CHECKPOINTS: &str = "partition_checkpoints";
}

/// The mergeable KPI columns shared by `kpi_panes` and `kpi_windows`.
macro_rules! parts_columns {
    () => {
        "
    touchpoints        UInt64,
    nps_promoters      UInt64,
    nps_passives       UInt64,
    nps_detractors     UInt64,
    csat_n             UInt64,
    csat_satisfied     UInt64,
    ces_n              UInt64,
    ces_sum            UInt64,
    ces_easy           UInt64,
    contacts           UInt64,
    frt_zero           UInt64,
    frt_buckets        Map(Int16, UInt64),
    frt_within         UInt64,
    res_zero           UInt64,
    res_buckets        Map(Int16, UInt64),
    res_within         UInt64,
    closed_loop_due    UInt64,
    closed_loop_closed UInt64,
    purchases          UInt64,
    revenue            Map(String, Decimal128(4)),
    revenue_count      Map(String, UInt64),
    customers_hll      Map(UInt16, UInt8)"
    };
}

/// Rows whose insert carries the same `insert_deduplication_token` (or, without a token, the
/// same content) as one of the last this-many inserted blocks are dropped.
pub const DEDUP_WINDOW: u32 = 10_000;

const CREATE_MIGRATIONS: &str = "
CREATE TABLE IF NOT EXISTS {db}.cxpulse_schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime64(3, 'UTC'),
    checksum   String
)
ENGINE = ReplacingMergeTree
ORDER BY version";

const CREATE_PANES: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS {db}.kpi_panes
(
    `partition` Int32,
    tier        LowCardinality(String),
    `start`     DateTime64(3, 'UTC'),
    channel     LowCardinality(String),
    segment     LowCardinality(String),
    version     UInt64,",
    parts_columns!(),
    "
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (`partition`, tier, `start`, channel, segment)
TTL {ttl_panes}
SETTINGS non_replicated_deduplication_window = 10000"
);

const CREATE_WINDOWS: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS {db}.kpi_windows
(
    `window`    LowCardinality(String),
    `start`     DateTime64(3, 'UTC'),
    `end`       DateTime64(3, 'UTC'),
    `partition` Int32,
    channel     LowCardinality(String),
    segment     LowCardinality(String),
    watermark   DateTime64(3, 'UTC'),
    version     UInt64,",
    parts_columns!(),
    "
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (`window`, `end`, channel, segment, `partition`)
TTL {ttl_windows}
SETTINGS non_replicated_deduplication_window = 10000"
);

const CREATE_RESPONSES: &str = "
CREATE TABLE IF NOT EXISTS {db}.survey_responses
(
    response_id  String,
    submitted_at DateTime64(3, 'UTC'),
    customer_id  String,
    segment      LowCardinality(String),
    channel      LowCardinality(String),
    touchpoint   LowCardinality(String),
    metric       LowCardinality(String),
    score        Int8,
    comment      Nullable(String),
    language     Nullable(String),
    case_id      Nullable(String),
    `partition`  Int32,
    `offset`     Int64,
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(submitted_at)
ORDER BY (toYYYYMM(submitted_at), response_id)
TTL {ttl_responses}
SETTINGS non_replicated_deduplication_window = 10000";

const CREATE_CHECKPOINTS: &str = "
CREATE TABLE IF NOT EXISTS {db}.partition_checkpoints
(
    `group`     LowCardinality(String),
    `partition` Int32,
    `offset`    Int64,
    version     UInt64,
    created_at  DateTime64(3, 'UTC'),
    state       String
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (`group`, `partition`)
SETTINGS non_replicated_deduplication_window = 10000";

/// Quantile `q` of a merged DDSketch: `zero` values ≤ 0, `keys`/`cum` the log buckets in
/// ascending index order with cumulative counts (zero bucket included), `n` the total.
/// Rank `floor(q·(n−1))`; the value of bucket `i` is `2·γ^i/(γ+1)`, `γ^i` looked up in
/// `gamma_powers`, the sketch's own table (bit-identical to `DurationSketch::quantile`).
macro_rules! quantile_sql {
    ($p:literal, $q:literal) => {
        concat!(
            "if(",
            $p,
            "_n = 0, NULL, if(toUInt64(floor(",
            $q,
            " * toFloat64(",
            $p,
            "_n - 1))) < ",
            $p,
            "_zero, 0., 2 * gamma_powers[toUInt32(",
            $p,
            "_keys[arrayFirstIndex(c -> c > ",
            "toUInt64(floor(",
            $q,
            " * toFloat64(",
            $p,
            "_n - 1))), ",
            $p,
            "_cum)]) + 1] ",
            "/ (((1.0 + 0.01) / (1.0 - 0.01)) + 1)))"
        )
    };
}

/// The merge over partitions, with the derived KPIs.
const CREATE_WINDOWS_LATEST: &str = concat!(
    "
CREATE VIEW IF NOT EXISTS {db}.kpi_windows_latest AS
WITH {gamma_powers} AS gamma_powers
SELECT
    `window`, `start`, `end`, channel, segment,
    partitions, version, watermark,
    touchpoints,
    nps_promoters, nps_passives, nps_detractors, nps_n,
    if(nps_n = 0, NULL, 100 * (toFloat64(nps_promoters) - toFloat64(nps_detractors)) / toFloat64(nps_n)) AS nps,
    if(nps_n = 0, NULL, 1.959963984540054 * 100 * sqrt(greatest(
        (nps_promoters / toFloat64(nps_n) + nps_detractors / toFloat64(nps_n))
        - (nps_promoters / toFloat64(nps_n) - nps_detractors / toFloat64(nps_n))
        * (nps_promoters / toFloat64(nps_n) - nps_detractors / toFloat64(nps_n)), 0.) / toFloat64(nps_n))) AS nps_moe,
    csat_n, csat_satisfied,
    if(csat_n = 0, NULL, csat_satisfied / toFloat64(csat_n)) AS csat,
    if(csat_n = 0, NULL, greatest(
        (csat_p + (1.959963984540054 * 1.959963984540054) / (2 * toFloat64(csat_n))) / (1 + (1.959963984540054 * 1.959963984540054) / toFloat64(csat_n))
        - 1.959963984540054 * sqrt(csat_p * (1 - csat_p) / toFloat64(csat_n) + (1.959963984540054 * 1.959963984540054) / (4 * toFloat64(csat_n) * toFloat64(csat_n)))
          / (1 + (1.959963984540054 * 1.959963984540054) / toFloat64(csat_n)), 0.)) AS csat_wilson_low,
    if(csat_n = 0, NULL, least(
        (csat_p + (1.959963984540054 * 1.959963984540054) / (2 * toFloat64(csat_n))) / (1 + (1.959963984540054 * 1.959963984540054) / toFloat64(csat_n))
        + 1.959963984540054 * sqrt(csat_p * (1 - csat_p) / toFloat64(csat_n) + (1.959963984540054 * 1.959963984540054) / (4 * toFloat64(csat_n) * toFloat64(csat_n)))
          / (1 + (1.959963984540054 * 1.959963984540054) / toFloat64(csat_n)), 1.)) AS csat_wilson_high,
    ces_n,
    if(ces_n = 0, NULL, ces_sum / toFloat64(ces_n)) AS ces_mean,
    if(ces_n = 0, NULL, ces_easy / toFloat64(ces_n)) AS ces_easy_share,
    contacts,
    frt_n,
    ",
    quantile_sql!("frt", "0.5"),
    " AS frt_p50_ms,
    ",
    quantile_sql!("frt", "0.9"),
    " AS frt_p90_ms,
    ",
    quantile_sql!("frt", "0.99"),
    " AS frt_p99_ms,
    frt_within,
    if(frt_n = 0, NULL, frt_within / toFloat64(frt_n)) AS frt_within_share,
    res_n,
    ",
    quantile_sql!("res", "0.5"),
    " AS res_p50_ms,
    ",
    quantile_sql!("res", "0.9"),
    " AS res_p90_ms,
    ",
    quantile_sql!("res", "0.99"),
    " AS res_p99_ms,
    res_within,
    if(res_n = 0, NULL, res_within / toFloat64(res_n)) AS res_within_share,
    closed_loop_due, closed_loop_closed,
    if(closed_loop_due = 0, NULL, closed_loop_closed / toFloat64(closed_loop_due)) AS closed_loop_rate,
    purchases,
    revenue,
    revenue_count,
    if(hll_zeros = 16384, 0, toUInt64(round(0.5 / log(2) * 16384 * 16384 / (
        hll_sum
        + 16384 * arrayFold((acc, i) -> (acc.1 * acc.1, acc.2 + acc.2, acc.3 + acc.1 * acc.1 * acc.2),
                            range(64), (hll_zeros / 16384., 1., hll_zeros / 16384.)).3
        + exp2(-50.) * 16384 * if(hll_full = 0 OR hll_full = 16384, 0., arrayFold(
              (acc, i) -> (sqrt(acc.1), acc.2 * 0.5, acc.3 - (1 - sqrt(acc.1)) * (1 - sqrt(acc.1)) * (acc.2 * 0.5)),
              range(64), ((16384 - hll_full) / 16384., 1., 1 - (16384 - hll_full) / 16384.)).3 / 3)
    )))) AS customers
FROM
(
    SELECT *,
        nps_promoters + nps_passives + nps_detractors AS nps_n,
        csat_satisfied / toFloat64(csat_n) AS csat_p,
        arraySort(mapKeys(frt_buckets)) AS frt_keys,
        arrayMap(c -> c + frt_zero, arrayCumSum(arraySort((c, k) -> k, mapValues(frt_buckets), mapKeys(frt_buckets)))) AS frt_cum,
        frt_zero + arraySum(mapValues(frt_buckets)) AS frt_n,
        arraySort(mapKeys(res_buckets)) AS res_keys,
        arrayMap(c -> c + res_zero, arrayCumSum(arraySort((c, k) -> k, mapValues(res_buckets), mapKeys(res_buckets)))) AS res_cum,
        res_zero + arraySum(mapValues(res_buckets)) AS res_n,
        16384 - length(customers_hll) AS hll_zeros,
        countEqual(mapValues(customers_hll), 51) AS hll_full,
        arraySum(arrayMap(r -> if(r <= 50, exp2(-toFloat64(r)), 0.), mapValues(customers_hll))) AS hll_sum
    FROM
    (
        SELECT
            `window`, `start`, `end`, channel, segment,
            count() AS partitions,
            max(k.version) AS version,
            min(k.watermark) AS watermark,
            sum(k.touchpoints) AS touchpoints,
            sum(k.nps_promoters) AS nps_promoters,
            sum(k.nps_passives) AS nps_passives,
            sum(k.nps_detractors) AS nps_detractors,
            sum(k.csat_n) AS csat_n,
            sum(k.csat_satisfied) AS csat_satisfied,
            sum(k.ces_n) AS ces_n,
            sum(k.ces_sum) AS ces_sum,
            sum(k.ces_easy) AS ces_easy,
            sum(k.contacts) AS contacts,
            sum(k.frt_zero) AS frt_zero,
            sumMap(k.frt_buckets) AS frt_buckets,
            sum(k.frt_within) AS frt_within,
            sum(k.res_zero) AS res_zero,
            sumMap(k.res_buckets) AS res_buckets,
            sum(k.res_within) AS res_within,
            sum(k.closed_loop_due) AS closed_loop_due,
            sum(k.closed_loop_closed) AS closed_loop_closed,
            sum(k.purchases) AS purchases,
            sumMap(k.revenue) AS revenue,
            sumMap(k.revenue_count) AS revenue_count,
            maxMap(k.customers_hll) AS customers_hll
        FROM {db}.kpi_windows AS k FINAL
        GROUP BY `window`, `start`, `end`, channel, segment
    )
)"
);

/// Every migration of this build, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "create kpi_panes",
        statements: &[CREATE_PANES],
    },
    Migration {
        version: 2,
        name: "create kpi_windows",
        statements: &[CREATE_WINDOWS],
    },
    Migration {
        version: 3,
        name: "create view kpi_windows_latest",
        statements: &[CREATE_WINDOWS_LATEST],
    },
    Migration {
        version: 4,
        name: "create survey_responses",
        statements: &[CREATE_RESPONSES],
    },
    Migration {
        version: 5,
        name: "create partition_checkpoints",
        statements: &[CREATE_CHECKPOINTS],
    },
];

/// What [`migrate`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub database: String,
    /// Migrations applied by this run: (version, name).
    pub applied: Vec<(u32, String)>,
    /// Migrations found already applied (checksums verified).
    pub already_applied: Vec<u32>,
    /// Versions recorded in the database that this build does not know (a newer build ran).
    pub unknown_applied: Vec<u32>,
    /// Tables whose TTL was changed to match the retention settings.
    pub ttl_changed: Vec<String>,
}

impl MigrationReport {
    /// `true` when the run changed nothing.
    pub fn is_noop(&self) -> bool {
        self.applied.is_empty() && self.ttl_changed.is_empty()
    }
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct MigrationRecord {
    version: u32,
    name: String,
    applied_at: i64,
    checksum: String,
}

#[derive(Debug, Row, Deserialize)]
struct EngineFull {
    engine_full: String,
}

fn escape_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The TTL expressions of the tables, in the form ClickHouse prints them back.
pub fn ttl_expressions(r: &Retention) -> [(&'static str, String); 3] {
    let panes = format!(
        "toDateTime(`start`) + toIntervalDay(multiIf(tier = 'minute', {}, tier = 'hour', {}, {}))",
        r.minute_panes_days, r.hour_panes_days, r.day_panes_days
    );
    let windows = if r.window_days.is_empty() {
        format!("toDateTime(`end`) + toIntervalDay({})", r.windows_days)
    } else {
        let mut arms = String::new();
        for (name, days) in &r.window_days {
            arms.push_str(&format!("`window` = {}, {days}, ", escape_literal(name)));
        }
        format!(
            "toDateTime(`end`) + toIntervalDay(multiIf({arms}{}))",
            r.windows_days
        )
    };
    let responses = format!(
        "toDateTime(submitted_at) + toIntervalMonth({})",
        r.responses_months
    );
    [
        (tables::PANES, panes),
        (tables::WINDOWS, windows),
        (tables::RESPONSES, responses),
    ]
}

/// `[γ^0, γ^1, …, γ^MAX_BUCKET_INDEX]`: the upper bounds of the sketch's buckets, as an
/// SQL array literal of shortest round-trip decimals (which ClickHouse parses back to the
/// same bits).
pub fn gamma_powers() -> String {
    let mut out = String::from("[");
    for i in 0..=MAX_BUCKET_INDEX {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{:?}", DurationSketch::bucket_bounds(i).1));
    }
    out.push(']');
    out
}

fn render(template: &str, settings: &Settings) -> String {
    let [(_, panes), (_, windows), (_, responses)] = ttl_expressions(&settings.retention);
    template
        .replace("{gamma_powers}", &gamma_powers())
        .replace("{db}", &format!("`{}`", settings.database))
        .replace("{ttl_panes}", &panes)
        .replace("{ttl_windows}", &windows)
        .replace("{ttl_responses}", &responses)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Applies [`MIGRATIONS`] (see [`migrate_with`]).
pub async fn migrate(client: &Client, settings: &Settings) -> Result<MigrationReport, Error> {
    migrate_with(client, settings, MIGRATIONS).await
}

/// Creates the database if missing, applies every migration of `migrations` not yet
/// recorded in `cxpulse_schema_migrations` (in version order, each recorded after its
/// statements ran), verifies the checksum of every one already recorded, and brings the
/// tables' TTL in line with `settings.retention`. Running it again changes nothing.
pub async fn migrate_with(
    client: &Client,
    settings: &Settings,
    migrations: &[Migration],
) -> Result<MigrationReport, Error> {
    settings.validate()?;
    if migrations.windows(2).any(|w| w[0].version >= w[1].version) {
        return Err(Error::Settings(
            "migration versions must be strictly increasing".into(),
        ));
    }
    let db = &settings.database;
    let mut report = MigrationReport {
        database: db.clone(),
        ..MigrationReport::default()
    };
    client
        .query_raw(&format!("CREATE DATABASE IF NOT EXISTS `{db}`"))
        .execute()
        .await?;
    client
        .query_raw(&render(CREATE_MIGRATIONS, settings))
        .execute()
        .await?;
    let recorded: Vec<MigrationRecord> = client
        .query(&format!(
            "SELECT ?fields FROM `{db}`.{} FINAL ORDER BY version",
            tables::MIGRATIONS
        ))
        .fetch_all()
        .await?;

    for m in migrations {
        let expected = m.checksum();
        if let Some(r) = recorded.iter().find(|r| r.version == m.version) {
            if r.checksum != expected {
                return Err(Error::ChecksumMismatch {
                    database: db.clone(),
                    version: m.version,
                    name: m.name.to_string(),
                    recorded: r.checksum.clone(),
                    expected,
                });
            }
            report.already_applied.push(m.version);
            continue;
        }
        tracing::info!(database = %db, version = m.version, name = m.name, "applying migration");
        for statement in m.statements {
            client
                .query_raw(&render(statement, settings))
                .execute()
                .await?;
        }
        // `Client::insert` quotes its argument as one identifier: name the database apart.
        let mut insert = client
            .clone()
            .with_database(db)
            .insert::<MigrationRecord>(tables::MIGRATIONS)
            .await?;
        insert
            .write(&MigrationRecord {
                version: m.version,
                name: m.name.to_string(),
                applied_at: now_ms(),
                checksum: expected,
            })
            .await?;
        insert.end().await?;
        report.applied.push((m.version, m.name.to_string()));
    }
    report.unknown_applied = recorded
        .iter()
        .map(|r| r.version)
        .filter(|v| !migrations.iter().any(|m| m.version == *v))
        .collect();
    if !report.unknown_applied.is_empty() {
        tracing::warn!(
            database = %db,
            versions = ?report.unknown_applied,
            "database has migrations this build does not know (a newer build migrated it)"
        );
    }

    for (table, ttl) in ttl_expressions(&settings.retention) {
        let rows: Vec<EngineFull> = client
            .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = ?")
            .bind(db.as_str())
            .bind(table)
            .fetch_all()
            .await?;
        let Some(row) = rows.first() else { continue };
        if current_ttl(&row.engine_full).map(normalize) == Some(normalize(&ttl)) {
            continue;
        }
        tracing::info!(database = %db, table, ttl = %ttl, "changing retention");
        client
            .query_raw(&format!("ALTER TABLE `{db}`.`{table}` MODIFY TTL {ttl}"))
            .execute()
            .await?;
        report.ttl_changed.push(table.to_string());
    }
    Ok(report)
}

/// The TTL clause of an `engine_full` text.
fn current_ttl(engine_full: &str) -> Option<&str> {
    let start = engine_full.find(" TTL ")? + " TTL ".len();
    let rest = &engine_full[start..];
    let end = rest.find(" SETTINGS ").unwrap_or(rest.len());
    Some(&rest[..end])
}

fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '`')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_stable_and_distinct() {
        let sums: Vec<String> = MIGRATIONS.iter().map(Migration::checksum).collect();
        for (i, a) in sums.iter().enumerate() {
            assert_eq!(a.len(), 16);
            for b in &sums[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(MIGRATIONS[0].checksum(), MIGRATIONS[0].checksum());
    }

    #[test]
    fn gamma_powers_round_trip() {
        let text = gamma_powers();
        let values: Vec<f64> = text
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(values.len(), MAX_BUCKET_INDEX as usize + 1);
        for (i, v) in values.iter().enumerate() {
            let want = DurationSketch::bucket_bounds(i as i32).1;
            assert_eq!(v.to_bits(), want.to_bits(), "bucket {i}");
        }
    }

    #[test]
    fn ttl_clause_is_found() {
        let e = "ReplacingMergeTree(version) ORDER BY k TTL toDateTime(s) + toIntervalMonth(24) SETTINGS index_granularity = 8192";
        assert_eq!(current_ttl(e), Some("toDateTime(s) + toIntervalMonth(24)"));
        assert_eq!(current_ttl("MergeTree ORDER BY k SETTINGS a = 1"), None);
    }

    #[test]
    fn window_overrides_render() {
        let r = Retention {
            window_days: vec![("1h".into(), 7), ("it's".into(), 2)],
            ..Retention::default()
        };
        let [_, (_, w), _] = ttl_expressions(&r);
        assert_eq!(
            w,
            "toDateTime(`end`) + toIntervalDay(multiIf(`window` = '1h', 7, `window` = 'it\\'s', 2, 400))"
        );
    }
}
