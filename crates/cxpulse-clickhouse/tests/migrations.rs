//! Migrations against the real ClickHouse: idempotent, recorded, checksum-verified, retention
//! reconciled.

mod common;

use common::TestDb;
use cxpulse_clickhouse::{migrate, migrate_with, Error, Migration, Retention, MIGRATIONS};

const TABLES: [&str; 6] = [
    "cxpulse_schema_migrations",
    "kpi_panes",
    "kpi_windows",
    "kpi_windows_latest",
    "survey_responses",
    "partition_checkpoints",
];

async fn engine_full(db: &TestDb, table: &str) -> String {
    db.client
        .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = ?")
        .bind(db.name())
        .bind(table)
        .fetch_one::<String>()
        .await
        .expect("engine_full")
}

#[tokio::test]
async fn migrations_are_idempotent_and_recorded() {
    let Some(url) = common::url("migrations_are_idempotent_and_recorded") else {
        return;
    };
    let db = TestDb::unmigrated(&url, "mig_idem");

    // The database does not exist yet: migrate creates it.
    let first = migrate(&db.client, &db.settings).await.expect("first run");
    let versions: Vec<u32> = first.applied.iter().map(|a| a.0).collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
    assert!(first.already_applied.is_empty());
    assert!(
        first.ttl_changed.is_empty(),
        "created with the right TTL: {first:?}"
    );

    for table in TABLES {
        let n = db
            .count(&format!(
                "SELECT count() FROM system.tables WHERE database = '{}' AND name = '{table}'",
                db.name()
            ))
            .await;
        assert_eq!(n, 1, "{table} exists");
    }
    for table in [
        "kpi_panes",
        "kpi_windows",
        "survey_responses",
        "partition_checkpoints",
    ] {
        let e = engine_full(&db, table).await;
        assert!(e.starts_with("ReplacingMergeTree(version)"), "{table}: {e}");
        assert!(
            e.contains("non_replicated_deduplication_window = 10000"),
            "{table}: {e}"
        );
    }
    let panes = engine_full(&db, "kpi_panes").await;
    assert!(
        panes.contains("multiIf(tier = 'minute', 3, tier = 'hour', 60, 800)"),
        "{panes}"
    );
    assert!(engine_full(&db, "survey_responses")
        .await
        .contains("toIntervalMonth(25)"));

    let records_before: Vec<(u32, String, String, i64)> = db
        .db_client()
        .query(
            "SELECT version, name, checksum, toUnixTimestamp64Milli(applied_at) \
             FROM cxpulse_schema_migrations ORDER BY version",
        )
        .fetch_all()
        .await
        .expect("records");
    assert_eq!(records_before.len(), MIGRATIONS.len());
    for (r, m) in records_before.iter().zip(MIGRATIONS) {
        assert_eq!(
            (r.0, r.1.as_str(), r.2.clone()),
            (m.version, m.name, m.checksum())
        );
    }

    // Second run: nothing changes, not even the records.
    let second = migrate(&db.client, &db.settings).await.expect("second run");
    assert!(second.is_noop(), "{second:?}");
    assert_eq!(second.already_applied, vec![1, 2, 3, 4, 5]);
    let records_after: Vec<(u32, String, String, i64)> = db
        .db_client()
        .query(
            "SELECT version, name, checksum, toUnixTimestamp64Milli(applied_at) \
             FROM cxpulse_schema_migrations ORDER BY version",
        )
        .fetch_all()
        .await
        .expect("records");
    assert_eq!(records_before, records_after);
    let raw_records = db
        .count("SELECT count() FROM cxpulse_schema_migrations")
        .await;
    assert_eq!(raw_records, 5, "no duplicate records, even before merges");

    // Retention is configuration, not schema: a change is applied with MODIFY TTL, once.
    let mut settings = db.settings.clone();
    settings.retention = Retention {
        minute_panes_days: 2,
        window_days: vec![("1h".into(), 7)],
        ..Retention::default()
    };
    let third = migrate(&db.client, &settings)
        .await
        .expect("retention change");
    assert!(third.applied.is_empty());
    assert_eq!(third.ttl_changed, vec!["kpi_panes", "kpi_windows"]);
    assert!(engine_full(&db, "kpi_panes")
        .await
        .contains("multiIf(tier = 'minute', 2, tier = 'hour', 60, 800)"));
    let windows = engine_full(&db, "kpi_windows").await;
    assert!(
        windows.contains("toDateTime(end) + toIntervalDay(multiIf(window = '1h', 7, 400))"),
        "{windows}"
    );
    let fourth = migrate(&db.client, &settings).await.expect("again");
    assert!(fourth.is_noop(), "{fourth:?}");
}

#[tokio::test]
async fn changed_applied_migration_is_an_error_naming_it() {
    let Some(url) = common::url("changed_applied_migration_is_an_error_naming_it") else {
        return;
    };
    let db = TestDb::migrated(&url, "mig_sum").await;

    let mut edited: Vec<Migration> = MIGRATIONS.to_vec();
    edited[1].statements = &["CREATE TABLE IF NOT EXISTS {db}.kpi_windows (x UInt8) ENGINE = Log"];
    let err = migrate_with(&db.client, &db.settings, &edited)
        .await
        .expect_err("edited migration must be refused");
    match &err {
        Error::ChecksumMismatch {
            version,
            name,
            recorded,
            expected,
            ..
        } => {
            assert_eq!(*version, 2);
            assert_eq!(name, "create kpi_windows");
            assert_eq!(recorded, &MIGRATIONS[1].checksum());
            assert_eq!(expected, &edited[1].checksum());
        }
        other => panic!("unexpected error {other}"),
    }
    let text = err.to_string();
    assert!(text.contains("migration 2 `create kpi_windows`"), "{text}");

    // A new migration appended later is applied; the known ones are left alone.
    let mut extended: Vec<Migration> = MIGRATIONS.to_vec();
    extended.push(Migration {
        version: 6,
        name: "test: add a table",
        statements: &[
            "CREATE TABLE IF NOT EXISTS {db}.extra (x UInt8) ENGINE = MergeTree ORDER BY x",
        ],
    });
    let report = migrate_with(&db.client, &db.settings, &extended)
        .await
        .expect("extended");
    assert_eq!(report.applied, vec![(6, "test: add a table".to_string())]);
    // The build without migration 6 still runs and reports the unknown version.
    let report = migrate(&db.client, &db.settings)
        .await
        .expect("older build");
    assert_eq!(report.unknown_applied, vec![6]);
    assert!(report.is_noop());
}
