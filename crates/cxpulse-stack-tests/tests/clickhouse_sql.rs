//! Every SQL query of every dashboard runs against the real ClickHouse and returns rows.
//!
//! Data: ten days of generated traffic (`cxpulse_gen::Generator`) through the engine
//! (`cxpulse_core::KpiEngine`, one per partition of two, as two instances would run), the
//! emitted windows and the accepted survey responses written with the real sink
//! (`cxpulse_clickhouse::ClickHouseSink`) into a fresh, migrated database, dropped at the end.
//! The dashboards' queries read the tables the way Grafana's ClickHouse plugin does: template
//! variables substituted (with the defaults, then with other real values), the plugin's
//! macros (`$__timeFilter(…)` …) expanded for the panel's time range, unqualified table names
//! resolved in the datasource's default database.
//!
//! Runs when `CXPULSE_TEST_CLICKHOUSE_URL` is set (`scripts/servers.sh env`); prints `SKIPPED`
//! otherwise.

mod common;

use common::env_or_skip;
use cxpulse_clickhouse::{
    migrate, ClickHouseSink, Client, Settings, SinkConfig, SurveyRow, WindowRow,
};
use cxpulse_core::window::{Tier, WindowSpec};
use cxpulse_core::{
    CxEvent, EngineConfig, IngestOutcome, KpiEngine, KpiRow, Millis, ValidationPolicy, DAY_MS,
    HOUR_MS, MINUTE_MS,
};
use cxpulse_gen::{Generator, GeneratorConfig};
use cxpulse_stack_tests::{
    dashboards, expand_clickhouse_macros, interpolate, parse_duration_ms, parse_label_values,
    queries, variables, Source, TimeRange,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const PARTITIONS: i32 = 2;
const DAYS: i64 = 10;

/// Second-pass values (as in tests/promql.rs): another real value than the default.
const SECOND_PASS: &[(&str, &str)] = &[("window", "7d")];

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// Drops the database when the test ends, also on panic (`CXPULSE_TEST_KEEP_DB=1` keeps it).
struct DropDb {
    url: String,
    name: String,
}

impl Drop for DropDb {
    fn drop(&mut self) {
        if std::env::var_os("CXPULSE_TEST_KEEP_DB").is_some() {
            eprintln!("keeping test database {}", self.name);
            return;
        }
        let client = Client::default().with_url(&self.url);
        let sql = format!("DROP DATABASE IF EXISTS `{}` SYNC", self.name);
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(client.query_raw(&sql).execute()).ok()
        })
        .join();
        if !matches!(done, Ok(Some(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// Windows the boards read from ClickHouse: the calendar day and the rolling 7 d (every 6 h,
/// the points the trend panel shows; the job's default slide of 1 min would emit 360 times
/// as many rows and make the test slow without changing what it checks), plus the rolling
/// 24 h (the default of the `window` variable).
fn engine_config() -> EngineConfig {
    EngineConfig {
        windows: vec![
            WindowSpec::new("24h", DAY_MS, Tier::Hour, 6 * HOUR_MS),
            WindowSpec::new("7d", 7 * DAY_MS, Tier::Hour, 6 * HOUR_MS),
        ],
        calendar_days: true,
        ..EngineConfig::default()
    }
}

/// FNV-1a of the customer id: a stable key → partition routing.
fn partition_of(customer: &str) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in customer.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % PARTITIONS as u64) as i32
}

struct Loaded {
    windows: usize,
    responses: usize,
}

async fn load(sink: &ClickHouseSink, end: Millis) -> Loaded {
    let start = end - DAYS * DAY_MS;
    let gen = Generator::new(GeneratorConfig {
        seed: 11,
        start,
        events_per_second: 0.4,
        ..GeneratorConfig::default()
    })
    .expect("generator");
    let mut engines: Vec<KpiEngine> = (0..PARTITIONS)
        .map(|p| {
            let mut e = KpiEngine::new(engine_config()).expect("engine config");
            e.assign_partition(p, start);
            e
        })
        .collect();
    let policy = ValidationPolicy::default();
    let mut offsets = vec![0i64; PARTITIONS as usize];
    let mut windows: Vec<WindowRow> = Vec::new();
    let mut responses: Vec<SurveyRow> = Vec::new();
    let (mut n_windows, mut n_responses, mut batch) = (0usize, 0usize, 0u64);
    let mut next_advance = start + HOUR_MS;
    let mut flush = |w: &mut Vec<WindowRow>, r: &mut Vec<SurveyRow>, force: bool| {
        let w = (force || w.len() >= 20_000).then(|| std::mem::take(w));
        let r = (force || r.len() >= 20_000).then(|| std::mem::take(r));
        batch += 1;
        (w, r, batch)
    };
    let add_rows = |rows: Vec<KpiRow>, p: i32, out: &mut Vec<WindowRow>| {
        for row in rows {
            out.push(WindowRow::from_kpi_row(&row, p, row.version).expect("window row"));
        }
    };
    for d in gen {
        if d.arrival > end {
            break;
        }
        let now = d.arrival;
        if now >= next_advance {
            for (p, e) in engines.iter_mut().enumerate() {
                add_rows(e.advance(now), p as i32, &mut windows);
            }
            next_advance += HOUR_MS;
            let (w, r, b) = flush(&mut windows, &mut responses, false);
            if let Some(w) = w {
                n_windows += w.len();
                sink.write_windows(&w, &format!("grafana-test:w:{b}"))
                    .await
                    .expect("write_windows");
            }
            if let Some(r) = r {
                n_responses += r.len();
                sink.write_responses(&r, &format!("grafana-test:r:{b}"))
                    .await
                    .expect("write_responses");
            }
        }
        if d.event.validate(now, &policy).is_err() {
            continue;
        }
        let p = partition_of(d.event.customer_id());
        let offset = offsets[p as usize];
        offsets[p as usize] += 1;
        let outcome = engines[p as usize].ingest(p, &d.event, now);
        if let (IngestOutcome::Accepted { .. }, CxEvent::Survey(s)) = (&outcome, &d.event) {
            responses.push(SurveyRow::from_response(s, p, offset).expect("survey row"));
        }
    }
    for (p, e) in engines.iter_mut().enumerate() {
        add_rows(e.advance(end + 10 * MINUTE_MS), p as i32, &mut windows);
    }
    let (w, r, b) = flush(&mut windows, &mut responses, true);
    let (w, r) = (w.unwrap_or_default(), r.unwrap_or_default());
    n_windows += w.len();
    n_responses += r.len();
    if !w.is_empty() {
        sink.write_windows(&w, &format!("grafana-test:w:{b}"))
            .await
            .expect("write_windows");
    }
    if !r.is_empty() {
        sink.write_responses(&r, &format!("grafana-test:r:{b}"))
            .await
            .expect("write_responses");
    }
    Loaded {
        windows: n_windows,
        responses: n_responses,
    }
}

async fn rows(client: &Client, sql: &str) -> Result<Vec<Value>, String> {
    let bytes = client
        .query_raw(sql)
        .fetch_bytes("JSONEachRow")
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes.to_vec()).map_err(|e| format!("not UTF-8: {e}"))?;
    text.lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("bad JSON row {l:?}: {e}")))
        .collect()
}

/// The real values of a variable in ClickHouse: `label_values(…, label)` of the boards name
/// a label that is a column of `kpi_windows` (window, channel, segment).
async fn real_values(client: &Client, query: &str) -> Result<Vec<String>, String> {
    let (_, label) =
        parse_label_values(query).ok_or_else(|| format!("not label_values(…): {query}"))?;
    if !["window", "channel", "segment"].contains(&label.as_str()) {
        return Err(format!("label {label} is not a kpi_windows column"));
    }
    let found = rows(
        client,
        &format!("SELECT DISTINCT `{label}` AS v FROM kpi_windows ORDER BY v"),
    )
    .await?;
    Ok(found
        .iter()
        .filter_map(|r| r["v"].as_str().map(str::to_string))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sql_query_returns_rows_from_clickhouse() {
    let test = "every_sql_query_returns_rows_from_clickhouse";
    let Some(url) = env_or_skip(test, "CXPULSE_TEST_CLICKHOUSE_URL") else {
        return;
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let settings = Settings {
        database: format!("cxpulse_t_grafana_{}_{nanos}", std::process::id()),
        ..Settings::default()
    };
    let _drop = DropDb {
        url: url.clone(),
        name: settings.database.clone(),
    };
    let client = Client::default().with_url(&url);
    migrate(&client, &settings).await.expect("migrate");
    let sink = ClickHouseSink::new(&client, &settings, SinkConfig::default()).expect("sink");
    let end = now_ms();
    let t0 = Instant::now();
    let loaded = load(&sink, end).await;
    println!(
        "loaded {} window rows and {} survey responses ({DAYS} days, {PARTITIONS} partitions) into {} in {:.1} s",
        loaded.windows,
        loaded.responses,
        settings.database,
        t0.elapsed().as_secs_f64()
    );
    assert!(loaded.windows > 1000 && loaded.responses > 1000);
    // As the datasource does: unqualified names resolve in its default database.
    let db = client.clone().with_database(&settings.database);

    let mut failures: Vec<String> = Vec::new();
    let mut checked = 0usize;
    for board in dashboards() {
        let qs: Vec<_> = queries(&board)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .filter(|q| q.source == Source::ClickHouse)
            .collect();
        if qs.is_empty() {
            continue;
        }
        let dashboard_from = board.json["time"]["from"]
            .as_str()
            .and_then(|f| f.strip_prefix("now-"))
            .and_then(parse_duration_ms)
            .unwrap_or_else(|| panic!("{}: time.from must be now-<duration>", board.name));
        for pass in 0..2 {
            println!("{} ({}), pass {}:", board.name, board.title(), pass + 1);
            let mut vars: BTreeMap<String, String> = BTreeMap::new();
            for v in variables(&board) {
                let values = match real_values(&db, &v.query).await {
                    Ok(v) if !v.is_empty() => v,
                    Ok(_) => {
                        failures.push(format!(
                            "{}: variable {} has no values in ClickHouse",
                            board.name, v.name
                        ));
                        continue;
                    }
                    Err(e) => {
                        failures.push(format!("{}: variable {}: {e}", board.name, v.name));
                        continue;
                    }
                };
                let default = v.current.first().cloned().unwrap_or_default();
                let chosen = if pass == 0 {
                    if !values.contains(&default) {
                        failures.push(format!(
                            "{}: variable {} defaults to {default:?}, not a value in ClickHouse ({values:?})",
                            board.name, v.name
                        ));
                    }
                    default
                } else {
                    SECOND_PASS
                        .iter()
                        .find(|(n, x)| *n == v.name && values.iter().any(|y| y == x))
                        .map(|(_, x)| x.to_string())
                        .unwrap_or_else(|| {
                            values
                                .iter()
                                .find(|x| x.as_str() != "all" && **x != default)
                                .unwrap_or(&values[0])
                                .clone()
                        })
                };
                println!("  ${} = {chosen:?}", v.name);
                vars.insert(v.name.clone(), chosen);
            }
            for q in &qs {
                let range_ms = q
                    .time_from
                    .as_deref()
                    .map(|f| {
                        parse_duration_ms(f)
                            .unwrap_or_else(|| panic!("{}: bad timeFrom {f}", q.name()))
                    })
                    .unwrap_or(dashboard_from);
                // Grafana: interval = range / max data points (~1000 for a full-width panel).
                let range = TimeRange {
                    from_ms: end - range_ms,
                    to_ms: end,
                    interval_ms: (range_ms / 1000).max(1000),
                };
                let sql = match interpolate(&q.text, &vars, true)
                    .and_then(|s| expand_clickhouse_macros(&s, range))
                {
                    Ok(s) => s,
                    Err(e) => {
                        failures.push(format!("{}: {e}", q.name()));
                        continue;
                    }
                };
                if sql.contains('$') {
                    failures.push(format!(
                        "{}: something was not substituted:\n{sql}",
                        q.name()
                    ));
                    continue;
                }
                checked += 1;
                match rows(&db, &sql).await {
                    Err(e) => {
                        failures.push(format!("{}: ClickHouse refused\n{sql}\n    {e}", q.name()))
                    }
                    Ok(r) if r.is_empty() => failures.push(format!("{}: no rows\n{sql}", q.name())),
                    Ok(r) => {
                        let columns: Vec<&String> = r[0]
                            .as_object()
                            .map(|o| o.keys().collect())
                            .unwrap_or_default();
                        println!(
                            "  {:<70} {:>5} rows, columns {columns:?}",
                            q.name(),
                            r.len()
                        );
                        if !columns.iter().any(|c| c.as_str() == "time") {
                            failures.push(format!(
                                "{}: no `time` column (Grafana needs one)",
                                q.name()
                            ));
                        }
                        if q.panel.starts_with("Latest detractor comments") {
                            check_comments(q, &r, &mut failures);
                        }
                    }
                }
            }
        }
    }
    println!("{checked} SQL queries run, {} failures", failures.len());
    assert!(checked > 0, "no SQL query found in the dashboards");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The comments are detractors' own words, as written: scores 0–6, non-empty, and (from the
/// generator's four languages) at least one not in ASCII, unchanged by the round trip.
fn check_comments(q: &cxpulse_stack_tests::Query, rows: &[Value], failures: &mut Vec<String>) {
    let mut non_ascii = 0;
    for r in rows {
        let score = r["score"].as_i64().unwrap_or(99);
        let comment = r["comment"].as_str().unwrap_or("");
        if !(0..=6).contains(&score) || comment.is_empty() {
            failures.push(format!("{}: not a detractor comment: {r}", q.name()));
            return;
        }
        if !comment.is_ascii() {
            non_ascii += 1;
        }
    }
    if non_ascii == 0 {
        failures.push(format!(
            "{}: no comment outside ASCII among {} (Persian, Thai?)",
            q.name(),
            rows.len()
        ));
    } else {
        println!(
            "    {non_ascii} of {} comments are not ASCII, e.g. {}",
            rows.len(),
            rows.iter()
                .find(|r| !r["comment"].as_str().unwrap_or("").is_ascii())
                .map(|r| r["comment"].to_string())
                .unwrap_or_default()
        );
    }
}
