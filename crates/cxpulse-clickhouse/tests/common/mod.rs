//! Shared helpers of the integration tests: a uniquely named database per test on the real
//! ClickHouse of `scripts/servers.sh`, dropped when the test ends (also when it panics).
#![allow(dead_code)]

use cxpulse_clickhouse::{migrate, ClickHouseSink, Client, RetryPolicy, Settings, SinkConfig};
use cxpulse_core::events::{Currency, DAY_MS, HOUR_MS, MINUTE_MS};
use cxpulse_core::kpi::KpiState;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const URL_VAR: &str = "CXPULSE_TEST_CLICKHOUSE_URL";

/// The server URL, or `None` (after saying why the test is skipped) when the variable is
/// unset. The project's test script always sets it.
pub fn url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!(
                "SKIPPED {test}: {URL_VAR} is unset; run `scripts/servers.sh start clickhouse` \
                 and `eval \"$(scripts/servers.sh env)\"` to run it against a real ClickHouse"
            );
            None
        }
    }
}

/// A migrated database of its own; dropped on drop.
pub struct TestDb {
    pub url: String,
    pub client: Client,
    pub settings: Settings,
    pub sink: ClickHouseSink,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn unique_name(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "cxpulse_t_{test}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn client(url: &str) -> Client {
    Client::default().with_url(url)
}

pub fn fast_config() -> SinkConfig {
    SinkConfig {
        retry: RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(50),
            max: Duration::from_millis(500),
        },
        request_timeout: Duration::from_secs(60),
        ..SinkConfig::default()
    }
}

impl TestDb {
    /// A fresh, not yet migrated database name with settings and a client.
    pub fn unmigrated(url: &str, test: &str) -> TestDb {
        let client = client(url);
        let settings = Settings {
            database: unique_name(test),
            ..Settings::default()
        };
        let sink =
            ClickHouseSink::new(&client, &settings, fast_config()).expect("valid sink settings");
        TestDb {
            url: url.to_string(),
            client,
            settings,
            sink,
        }
    }

    /// A fresh database with every migration applied.
    pub async fn migrated(url: &str, test: &str) -> TestDb {
        let db = TestDb::unmigrated(url, test);
        migrate(&db.client, &db.settings).await.expect("migrate");
        db
    }

    pub fn name(&self) -> &str {
        &self.settings.database
    }

    /// A client bound to the database.
    pub fn db_client(&self) -> Client {
        self.client.clone().with_database(self.name())
    }

    pub async fn exec(&self, sql: &str) {
        self.db_client()
            .query_raw(sql)
            .execute()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub async fn count(&self, sql: &str) -> u64 {
        self.db_client()
            .query(sql)
            .fetch_one::<u64>()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var_os("CXPULSE_TEST_KEEP_DB").is_some() {
            eprintln!("keeping test database {}", self.settings.database);
            return;
        }
        // A new client (its own connection pool) on its own thread and runtime: the test's
        // client has connection tasks on the test's runtime, which this blocks. Works during
        // a panic too.
        let client = client(&self.url);
        let sql = format!("DROP DATABASE IF EXISTS `{}` SYNC", self.settings.database);
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(client.query_raw(&sql).execute()).ok()
        })
        .join();
        if !matches!(done, Ok(Some(()))) {
            eprintln!(
                "warning: could not drop test database {}",
                self.settings.database
            );
        }
    }
}

pub fn cur(code: &str) -> Currency {
    Currency::parse(code).expect("currency code")
}

/// A state exercising every part: NPS/CSAT/CES answers, contacts, both response-time
/// tallies (including durations ≤ 0), closed loop, purchases, revenue in two currencies and
/// `customers` distinct customers named `{prefix}-{i}`.
pub fn rich_state(seed: u64, customers: u64, prefix: &str) -> KpiState {
    let mut s = KpiState {
        touchpoints: 1000 + seed,
        contacts: 40 + seed,
        purchases: 17 + seed,
        ..KpiState::default()
    };
    for i in 0..(50 + seed as i32) {
        s.nps.add((i * 7 + seed as i32) % 11);
        s.csat.add(1 + (i * 3 + seed as i32) % 5);
        s.ces.add(1 + (i * 5 + seed as i32) % 7);
    }
    for i in 0..(200 + seed as i64) {
        let frt = (i * i * 37 + seed as i64 * 1000) % (3 * DAY_MS);
        s.first_response_mut().add(frt, frt <= DAY_MS);
        let res = (i * 7919 * MINUTE_MS / 3 + seed as i64) % (9 * DAY_MS);
        s.resolution_mut().add(res, res <= DAY_MS);
    }
    s.first_response_mut().add(0, true);
    s.first_response_mut().add(-5, true);
    s.closed_loop.due = 9 + seed;
    s.closed_loop.closed = 4 + seed;
    s.revenue.add(cur("EUR"), 12_3456 + seed as i64);
    s.revenue.add(cur("EUR"), -2_0000);
    s.revenue.add(cur("EUR"), 0);
    s.revenue.add(cur("USD"), i64::MAX);
    s.revenue.add(cur("USD"), 99_9999);
    for i in 0..customers {
        s.customers.insert(format!("{prefix}-{i}").as_bytes());
    }
    s
}

/// Yesterday's UTC midnight: test data stays well inside every retention.
pub fn t0() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    now - now.rem_euclid(DAY_MS) - DAY_MS
}

pub const HOUR: i64 = HOUR_MS;
pub const MINUTE: i64 = MINUTE_MS;
pub const DAY: i64 = DAY_MS;
