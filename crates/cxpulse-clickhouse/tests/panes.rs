//! Panes and checkpoints against the real ClickHouse: exact round trip, ReplacingMergeTree
//! versions, insert deduplication tokens, one part per pane batch.

mod common;

use common::{cur, rich_state, t0, TestDb, DAY, HOUR, MINUTE};
use cxpulse_clickhouse::{Checkpoint, PaneRow, PaneSince, RestoredPane, WindowRow};
use cxpulse_core::engine::{KpiRow, PaneRecord};
use cxpulse_core::events::Channel;
use cxpulse_core::kpi::KpiState;
use cxpulse_core::window::Tier;
use std::sync::Arc;
use std::time::Instant;

fn record(
    partition: i32,
    tier: Tier,
    start: i64,
    ch: Channel,
    seg: &str,
    s: KpiState,
) -> PaneRecord {
    PaneRecord {
        partition,
        tier,
        start,
        channel: ch,
        segment: Arc::from(seg),
        state: s,
    }
}

fn restored(r: &PaneRecord, version: u64) -> RestoredPane {
    RestoredPane {
        tier: r.tier,
        start: r.start,
        channel: r.channel,
        segment: r.segment.to_string(),
        version,
        state: r.state.clone(),
    }
}

fn sort(v: &mut [RestoredPane]) {
    v.sort_by(|a, b| {
        (a.tier, a.start, a.channel.as_str(), &a.segment).cmp(&(
            b.tier,
            b.start,
            b.channel.as_str(),
            &b.segment,
        ))
    });
}

#[tokio::test]
async fn pane_round_trip_is_exact() {
    let Some(url) = common::url("pane_round_trip_is_exact") else {
        return;
    };
    let db = TestDb::migrated(&url, "pane_rt").await;
    let t = t0();

    let small = rich_state(1, 10, "small");
    let big = rich_state(2, 5000, "big");
    assert!(big.customers.register_pairs().count() > 1024, "dense HLL");
    let mut only_revenue = KpiState::default();
    only_revenue.revenue.add(cur("IRR"), 10_000_000_000);
    only_revenue.revenue.add(cur("THB"), -1);
    only_revenue.purchases = 2;
    let mut only_resolution = KpiState::default();
    only_resolution.resolution_mut().add(0, true);
    only_resolution.resolution_mut().add(i64::MAX, false);
    only_resolution.customers.insert(b"one");

    let records = [
        record(
            3,
            Tier::Minute,
            t + 5 * MINUTE,
            Channel::Web,
            "vip",
            small.clone(),
        ),
        record(
            3,
            Tier::Minute,
            t + 5 * MINUTE,
            Channel::MobileApp,
            "vip",
            big.clone(),
        ),
        record(
            3,
            Tier::Hour,
            t + 2 * HOUR,
            Channel::Phone,
            "smb",
            big.clone(),
        ),
        record(
            3,
            Tier::Day,
            t,
            Channel::Chat,
            "enterprise ünïcode",
            only_revenue,
        ),
        record(
            3,
            Tier::Day,
            t - DAY,
            Channel::Unknown,
            "other",
            only_resolution,
        ),
        record(
            3,
            Tier::Minute,
            t - 3 * MINUTE,
            Channel::Store,
            "other",
            KpiState::default(),
        ),
    ];
    let rows: Vec<PaneRow> = records
        .iter()
        .map(|r| PaneRow::from_record(r, 41))
        .collect::<Result<_, _>>()
        .expect("rows");
    // A pane of another partition must not come back.
    let other = PaneRow::from_record(
        &record(4, Tier::Minute, t, Channel::Web, "vip", small.clone()),
        9,
    )
    .expect("row");

    let out = db
        .sink
        .write_panes(&rows, "panes:3:41")
        .await
        .expect("write");
    assert_eq!((out.rows, out.attempts), (6, 1));
    db.sink
        .write_panes(&[other], "panes:4:9")
        .await
        .expect("write");

    let mut loaded = db.sink.load_panes(3, &PaneSince::ALL).await.expect("load");
    let mut expected: Vec<RestoredPane> = records.iter().map(|r| restored(r, 41)).collect();
    sort(&mut loaded);
    sort(&mut expected);
    assert_eq!(loaded.len(), expected.len());
    for (l, e) in loaded.iter().zip(&expected) {
        assert_eq!(
            l, e,
            "pane {:?} {} {:?} {}",
            e.tier, e.start, e.channel, e.segment
        );
        // Same KPIs too (equality above already covers every part).
        assert_eq!(l.state.snapshot(), e.state.snapshot());
    }

    // Per-tier lower bounds.
    let since = PaneSince {
        minute: t,
        hour: t + 3 * HOUR,
        day: t,
    };
    let some = db.sink.load_panes(3, &since).await.expect("load since");
    let keys: Vec<(Tier, i64)> = some.iter().map(|p| (p.tier, p.start)).collect();
    assert_eq!(
        keys,
        vec![
            (Tier::Day, t),
            (Tier::Minute, t + 5 * MINUTE),
            (Tier::Minute, t + 5 * MINUTE)
        ]
    );

    assert_eq!(db.sink.max_pane_version(3).await.expect("max"), Some(41));
    assert_eq!(db.sink.max_pane_version(4).await.expect("max"), Some(9));
    assert_eq!(db.sink.max_pane_version(5).await.expect("max"), None);
    assert!(db
        .sink
        .load_panes(5, &PaneSince::ALL)
        .await
        .expect("load")
        .is_empty());
}

#[tokio::test]
async fn highest_version_wins() {
    let Some(url) = common::url("highest_version_wins") else {
        return;
    };
    let db = TestDb::migrated(&url, "pane_ver").await;
    let t = t0();
    let v5 = record(
        1,
        Tier::Hour,
        t,
        Channel::Email,
        "vip",
        rich_state(5, 20, "v5"),
    );
    let v7 = record(
        1,
        Tier::Hour,
        t,
        Channel::Email,
        "vip",
        rich_state(7, 30, "v7"),
    );
    let row5 = PaneRow::from_record(&v5, 5).expect("row");
    let row7 = PaneRow::from_record(&v7, 7).expect("row");

    db.sink
        .write_panes(std::slice::from_ref(&row5), "panes:1:5")
        .await
        .expect("v5");
    db.sink.write_panes(&[row7], "panes:1:7").await.expect("v7");
    let loaded = db.sink.load_panes(1, &PaneSince::ALL).await.expect("load");
    assert_eq!(loaded, vec![restored(&v7, 7)]);

    // A late replay of the older version (another token, so it is really inserted) loses too.
    db.sink
        .write_panes(&[row5], "panes:1:5:replay")
        .await
        .expect("v5 again");
    let raw = db.count("SELECT count() FROM kpi_panes").await;
    assert!(raw >= 1);
    let loaded = db.sink.load_panes(1, &PaneSince::ALL).await.expect("load");
    assert_eq!(loaded, vec![restored(&v7, 7)]);
    assert_eq!(db.sink.max_pane_version(1).await.expect("max"), Some(7));

    // After merges, one row is left: version 7.
    db.exec("OPTIMIZE TABLE kpi_panes FINAL").await;
    assert_eq!(db.count("SELECT count() FROM kpi_panes").await, 1);
    assert_eq!(db.count("SELECT max(version) FROM kpi_panes").await, 7);
}

fn window_row(partition: i32, end: i64, state: KpiState, version: u64) -> WindowRow {
    let row = KpiRow {
        partition: Some(partition),
        window: Arc::from("1h"),
        start: end - HOUR,
        end,
        channel: Some(Channel::Web),
        segment: None,
        watermark: end,
        version,
        kpis: state.snapshot(),
        state: state.into(),
    };
    WindowRow::from_kpi_row(&row, partition, version).expect("row")
}

#[tokio::test]
async fn retried_insert_with_same_token_is_not_duplicated() {
    let Some(url) = common::url("retried_insert_with_same_token_is_not_duplicated") else {
        return;
    };
    let db = TestDb::migrated(&url, "dedup").await;
    // Count raw rows: no merge may collapse them behind our back.
    db.exec("SYSTEM STOP MERGES kpi_windows").await;
    db.exec("SYSTEM STOP MERGES kpi_panes").await;
    let t = t0();
    let rows: Vec<WindowRow> = (0..50)
        .map(|i| window_row(2, t + i * MINUTE, rich_state(i as u64, 3, "w"), 100))
        .collect();

    db.sink
        .write_windows(&rows, "windows:2:100")
        .await
        .expect("first");
    // The retry of the same batch (e.g. after a lost answer) with the same token.
    db.sink
        .write_windows(&rows, "windows:2:100")
        .await
        .expect("retry");
    assert_eq!(db.count("SELECT count() FROM kpi_windows").await, 50);

    // The same rows under another token are a different insert: they land (and
    // ReplacingMergeTree makes them harmless), which shows the token is what deduplicated.
    db.sink
        .write_windows(&rows, "windows:2:100:b")
        .await
        .expect("other token");
    assert_eq!(db.count("SELECT count() FROM kpi_windows").await, 100);
    assert_eq!(db.count("SELECT count() FROM kpi_windows FINAL").await, 50);

    // Panes too.
    let panes: Vec<PaneRow> = (0..20)
        .map(|i| {
            PaneRow::from_record(
                &record(
                    2,
                    Tier::Minute,
                    t + i * MINUTE,
                    Channel::Chat,
                    "s",
                    rich_state(1, 2, "p"),
                ),
                100,
            )
            .expect("row")
        })
        .collect();
    for _ in 0..3 {
        db.sink
            .write_panes(&panes, "panes:2:100")
            .await
            .expect("panes");
    }
    assert_eq!(db.count("SELECT count() FROM kpi_panes").await, 20);
}

#[tokio::test]
async fn pane_batch_is_one_part() {
    let Some(url) = common::url("pane_batch_is_one_part") else {
        return;
    };
    let db = TestDb::migrated(&url, "one_part").await;
    db.exec("SYSTEM STOP MERGES kpi_panes").await;
    let t = t0();
    let state = rich_state(3, 4, "x");
    let rows: Vec<PaneRow> = (0..5000)
        .map(|i| {
            PaneRow::from_record(
                &record(
                    7,
                    Tier::Minute,
                    t + (i % 1440) * MINUTE,
                    Channel::ALL[(i / 1440) as usize],
                    "seg",
                    state.clone(),
                ),
                1,
            )
            .expect("row")
        })
        .collect();
    let parts = |db: &TestDb| {
        let sql = format!(
            "SELECT count() FROM system.parts WHERE database = '{}' AND table = 'kpi_panes' AND active",
            db.name()
        );
        let client = db.client.clone();
        async move { client.query(&sql).fetch_one::<u64>().await.expect("parts") }
    };

    // Control: with small blocks forced for a plain insert, the same rows become many parts.
    let small_blocks = db
        .db_client()
        .with_setting("max_insert_block_size", "1000")
        .with_setting("min_insert_block_size_rows", "1000")
        .with_setting("min_insert_block_size_bytes", "1000");
    let mut insert = small_blocks
        .insert::<PaneRow>("kpi_panes")
        .await
        .expect("insert");
    for r in &rows {
        insert.write(r).await.expect("write");
    }
    insert.end().await.expect("end");
    let control = parts(&db).await;
    assert!(control >= 5, "control insert made {control} parts");
    db.exec("TRUNCATE TABLE kpi_panes").await;

    // The sink, even on a client that asks for small blocks, sends one block: one part.
    let sink = cxpulse_clickhouse::ClickHouseSink::new(
        &db.client
            .clone()
            .with_setting("max_insert_block_size", "1000")
            .with_setting("min_insert_block_size_rows", "1000")
            .with_setting("min_insert_block_size_bytes", "1000"),
        &db.settings,
        common::fast_config(),
    )
    .expect("sink");
    let started = Instant::now();
    sink.write_panes(&rows, "panes:7:1").await.expect("write");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(parts(&db).await, 1);
    assert_eq!(db.count("SELECT count() FROM kpi_panes").await, 5000);
    eprintln!(
        "write_panes: 5000 panes (4 customers each) in {:.3} s = {:.0} rows/s",
        secs,
        5000.0 / secs
    );

    let started = Instant::now();
    let loaded = sink.load_panes(7, &PaneSince::ALL).await.expect("load");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(loaded.len(), 5000);
    assert!(loaded.iter().all(|p| p.state == state));
    eprintln!(
        "load_panes: 5000 panes in {:.3} s = {:.0} rows/s",
        secs,
        5000.0 / secs
    );

    // Above the configured bound the batch is refused, not split.
    let tight = cxpulse_clickhouse::ClickHouseSink::new(
        &db.client,
        &db.settings,
        cxpulse_clickhouse::SinkConfig {
            max_pane_batch_rows: 10,
            ..common::fast_config()
        },
    )
    .expect("sink");
    let err = tight
        .write_panes(&rows[..11], "x")
        .await
        .expect_err("too large");
    assert!(matches!(
        err,
        cxpulse_clickhouse::Error::BatchTooLarge { rows: 11, max: 10 }
    ));
}

#[tokio::test]
async fn checkpoints_round_trip() {
    let Some(url) = common::url("checkpoints_round_trip") else {
        return;
    };
    let db = TestDb::migrated(&url, "ckpt").await;
    let blob: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let c10 = Checkpoint::new("job-a", 3, 10, t0(), vec![1, 2, 3]).expect("cp");
    let c20 = Checkpoint::new("job-a", 3, 20, t0() + 5, blob.clone()).expect("cp");
    let other = Checkpoint::new("job-b", 3, 99, t0(), vec![9]).expect("cp");
    db.sink
        .write_checkpoint(&c20, "cp:job-a:3:20")
        .await
        .expect("w");
    db.sink
        .write_checkpoint(&c10, "cp:job-a:3:10")
        .await
        .expect("w");
    db.sink
        .write_checkpoint(&other, "cp:job-b:3:99")
        .await
        .expect("w");

    let got = db.sink.load_checkpoint("job-a", 3).await.expect("load");
    assert_eq!(got, Some(c20));
    assert_eq!(got.map(|c| c.state), Some(blob));
    assert_eq!(
        db.sink.load_checkpoint("job-b", 3).await.expect("load"),
        Some(other)
    );
    assert_eq!(
        db.sink.load_checkpoint("job-a", 4).await.expect("load"),
        None
    );
    assert_eq!(
        db.sink.load_checkpoint("nobody", 3).await.expect("load"),
        None
    );
    db.sink.ping().await.expect("ping");
}
