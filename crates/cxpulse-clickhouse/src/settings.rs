//! Settings: database, retention, retries and the sink's limits.

use crate::error::Error;
use std::time::Duration;

/// Where the tables live and how long rows are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Database name (`[A-Za-z_][A-Za-z0-9_]*`); created by [`crate::migrate`] when missing.
    pub database: String,
    pub retention: Retention,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database: "cxpulse".to_string(),
            retention: Retention::default(),
        }
    }
}

/// Row retention (ClickHouse `TTL`), applied by [`crate::migrate`] and kept in sync with
/// these values on every run (`ALTER TABLE … MODIFY TTL` only when they changed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// `kpi_panes` rows of tier `minute`, by pane start.
    pub minute_panes_days: u32,
    /// `kpi_panes` rows of tier `hour`.
    pub hour_panes_days: u32,
    /// `kpi_panes` rows of tier `day`.
    pub day_panes_days: u32,
    /// `kpi_windows` rows, by window end, unless `window_days` names the window.
    pub windows_days: u32,
    /// Per window name (e.g. `("1h", 7)`): overrides `windows_days`.
    pub window_days: Vec<(String, u32)>,
    /// `survey_responses`, by `submitted_at`, in months.
    pub responses_months: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            minute_panes_days: 3,
            hour_panes_days: 60,
            day_panes_days: 800,
            windows_days: 400,
            window_days: Vec::new(),
            responses_months: 25,
        }
    }
}

impl Settings {
    /// Checks the database name and that every retention is at least 1.
    pub fn validate(&self) -> Result<(), Error> {
        validate_identifier(&self.database)?;
        let r = &self.retention;
        let all = [
            ("minute_panes_days", r.minute_panes_days),
            ("hour_panes_days", r.hour_panes_days),
            ("day_panes_days", r.day_panes_days),
            ("windows_days", r.windows_days),
            ("responses_months", r.responses_months),
        ];
        for (name, v) in all
            .into_iter()
            .chain(r.window_days.iter().map(|(_, v)| ("window_days", *v)))
        {
            if v == 0 {
                return Err(Error::Settings(format!("retention `{name}` must be >= 1")));
            }
        }
        Ok(())
    }
}

pub(crate) fn validate_identifier(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 200;
    if ok {
        Ok(())
    } else {
        Err(Error::Settings(format!(
            "database name `{name}` must match [A-Za-z_][A-Za-z0-9_]* (at most 200 bytes)"
        )))
    }
}

/// Retries with exponential backoff, for transient errors only (network, timeouts, 5xx and
/// the ClickHouse error codes that mean "try again", see [`crate::is_transient`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, including the first (≥ 1).
    pub attempts: u32,
    /// Delay before the second attempt; doubles each time.
    pub base: Duration,
    /// Upper bound of one delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based): `min(base·2^(attempt−1), max)`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// Behaviour of [`crate::ClickHouseSink`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkConfig {
    pub retry: RetryPolicy,
    /// Bound of one request (an insert including the server's answer, or a query).
    pub request_timeout: Duration,
    /// Largest pane batch `write_panes` accepts. One insert of up to this many rows is sent
    /// with `max_insert_block_size` ≥ its row count, so ClickHouse forms exactly one block
    /// (one part, atomic). Keep it well below memory limits: a pane with a dense HyperLogLog
    /// is ~50 KB in the block.
    pub max_pane_batch_rows: usize,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(60),
            max_pane_batch_rows: 200_000,
        }
    }
}

impl SinkConfig {
    pub fn validate(&self) -> Result<(), Error> {
        if self.retry.attempts == 0 {
            return Err(Error::Settings("retry.attempts must be >= 1".into()));
        }
        if self.request_timeout.is_zero() {
            return Err(Error::Settings("request_timeout must be > 0".into()));
        }
        if self.max_pane_batch_rows == 0 {
            return Err(Error::Settings("max_pane_batch_rows must be >= 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let d: Vec<_> = (1..=6).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.delay(200), Duration::from_secs(1));
    }

    #[test]
    fn identifiers() {
        assert!(validate_identifier("cxpulse_test_1").is_ok());
        assert!(validate_identifier("1abc").is_err());
        assert!(validate_identifier("a-b").is_err());
        assert!(validate_identifier("").is_err());
        assert!(validate_identifier("a`b").is_err());
    }
}
