//! Retries: transient errors are retried with backoff up to the policy, others are not.

mod common;

use common::TestDb;
use cxpulse_clickhouse::{
    Checkpoint, ClickHouseSink, Client, Error, RetryPolicy, Settings, SinkConfig,
};
use std::time::{Duration, Instant};

fn policy(attempts: u32) -> SinkConfig {
    SinkConfig {
        retry: RetryPolicy {
            attempts,
            base: Duration::from_millis(100),
            max: Duration::from_millis(250),
        },
        request_timeout: Duration::from_secs(10),
        ..SinkConfig::default()
    }
}

/// A port nothing listens on (bound, then released).
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn network_errors_are_retried_with_backoff() {
    // Needs no server: nothing listens on the port.
    let client = Client::default().with_url(format!("http://127.0.0.1:{}", dead_port()));
    let sink = ClickHouseSink::new(&client, &Settings::default(), policy(4)).expect("sink");
    let cp = Checkpoint::new("g", 0, 1, 0, vec![]).expect("cp");
    let started = Instant::now();
    let err = sink
        .write_checkpoint(&cp, "t")
        .await
        .expect_err("no server");
    let elapsed = started.elapsed();
    match &err {
        Error::RetriesExhausted {
            attempts,
            operation,
            last,
        } => {
            assert_eq!(*attempts, 4);
            assert_eq!(*operation, "write_checkpoint");
            assert!(cxpulse_clickhouse::is_transient(last), "{last}");
        }
        other => panic!("unexpected {other}"),
    }
    // Delays 100, 200, 250 ms, each jittered into [d/2, d]: at least 275 ms in all.
    assert!(elapsed >= Duration::from_millis(275), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert!(sink.ping().await.is_err());
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let Some(url) = common::url("permanent_errors_are_not_retried") else {
        return;
    };
    // Database exists, tables do not: UNKNOWN_TABLE is not transient.
    let db = TestDb::unmigrated(&url, "retry");
    db.client
        .query_raw(&format!("CREATE DATABASE `{}`", db.name()))
        .execute()
        .await
        .expect("create db");
    let sink = ClickHouseSink::new(&db.client, &db.settings, policy(5)).expect("sink");
    let cp = Checkpoint::new("g", 0, 1, 0, vec![]).expect("cp");
    let started = Instant::now();
    let err = sink.write_checkpoint(&cp, "t").await.expect_err("no table");
    assert!(matches!(err, Error::ClickHouse(_)), "{err}");
    assert!(!cxpulse_clickhouse::is_transient(&err));
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "not retried"
    );
    let err = sink.max_pane_version(0).await.expect_err("no table");
    assert!(err.to_string().contains("kpi_panes"), "{err}");
    sink.ping().await.expect("the server itself is fine");
}

#[tokio::test]
async fn request_timeouts_are_transient() {
    // A server that accepts connections and never answers (loopback only, bounded).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
            if open.len() > 16 {
                break;
            }
        }
    });
    let client = Client::default().with_url(format!("http://127.0.0.1:{port}"));
    let sink = ClickHouseSink::new(
        &client,
        &Settings::default(),
        SinkConfig {
            request_timeout: Duration::from_millis(200),
            ..policy(2)
        },
    )
    .expect("sink");
    let started = Instant::now();
    let err = sink
        .load_checkpoint("g", 0)
        .await
        .expect_err("silent server");
    match err {
        Error::RetriesExhausted { attempts, last, .. } => {
            assert_eq!(attempts, 2);
            assert!(matches!(*last, Error::Timeout { .. }), "{last}");
        }
        other => panic!("unexpected {other}"),
    }
    // Two 200 ms timeouts plus one jittered 50..100 ms delay.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    hold.abort();
}
