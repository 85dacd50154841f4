//! `cxpulse migrate`: creates and upgrades the ClickHouse tables (versioned, idempotent).

use crate::cli::LogFormat;
use crate::config;
use crate::logging;
use anyhow::{Context, Result};
use std::path::Path;
use tracing::info;

/// The ClickHouse client and settings described by the configuration.
pub fn clickhouse_client(
    settings: &config::ClickHouseSettings,
) -> (cxpulse_clickhouse::Client, cxpulse_clickhouse::Settings) {
    let mut client = cxpulse_clickhouse::Client::default().with_url(&settings.url);
    if !settings.user.is_empty() {
        client = client.with_user(&settings.user);
    }
    if !settings.password.is_empty() {
        client = client.with_password(&settings.password);
    }
    let ch = cxpulse_clickhouse::Settings {
        database: settings.database.clone(),
        ..cxpulse_clickhouse::Settings::default()
    };
    (client, ch)
}

pub fn run(path: Option<&Path>, env: &[(String, String)], log_format: LogFormat) -> Result<()> {
    let loaded = config::load(path, env, &[])?;
    logging::to_stderr(log_format);
    let (client, settings) = clickhouse_client(&loaded.settings.clickhouse);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime
        .block_on(cxpulse_clickhouse::migrate(&client, &settings))
        .with_context(|| format!("migrating ClickHouse at {}", loaded.settings.clickhouse.url))?;
    info!(database = %report.database, applied = report.applied.len(), "migrations done");
    if report.is_noop() {
        println!(
            "database {}: up to date ({} migrations already applied)",
            report.database,
            report.already_applied.len()
        );
    } else {
        for (version, name) in &report.applied {
            println!("database {}: applied {version:04} {name}", report.database);
        }
        for table in &report.ttl_changed {
            println!("database {}: retention changed on {table}", report.database);
        }
    }
    Ok(())
}
