//! A job on shared test servers: its own topics, consumer group and database, and the
//! `CXPULSE_*` variables that point `cxpulse` at them. The stream-job tests, the dashboard
//! tests and the end-to-end benchmark use it against the servers `scripts/servers.sh` starts.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// `prefix` made unique to this process and moment (for topic, group and database names).
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// The names a job uses on the servers, and its settings as environment variables.
#[derive(Clone, Debug)]
pub struct StackJob {
    pub touchpoints: String,
    pub surveys: String,
    pub dead_letters: String,
    pub group: String,
    pub database: String,
    pub envs: BTreeMap<String, String>,
}

impl StackJob {
    /// A job reading `{prefix}_tp` and `{prefix}_sv` from the broker at `kafka`, with dead
    /// letters in `{prefix}_dl`, group `{prefix}_g`, writing to database `{prefix}_db` of the
    /// ClickHouse at `clickhouse`.
    pub fn new(kafka: &str, clickhouse: &str, prefix: &str) -> StackJob {
        let job = StackJob {
            touchpoints: format!("{prefix}_tp"),
            surveys: format!("{prefix}_sv"),
            dead_letters: format!("{prefix}_dl"),
            group: format!("{prefix}_g"),
            database: format!("{prefix}_db"),
            envs: BTreeMap::new(),
        };
        let (tp, sv, dl, g, db) = (
            job.touchpoints.clone(),
            job.surveys.clone(),
            job.dead_letters.clone(),
            job.group.clone(),
            job.database.clone(),
        );
        job.with("CXPULSE_KAFKA__BOOTSTRAP", kafka)
            .with("CXPULSE_KAFKA__TOPICS__TOUCHPOINTS", tp)
            .with("CXPULSE_KAFKA__TOPICS__SURVEYS", sv)
            .with("CXPULSE_KAFKA__DEAD_LETTER_TOPIC", dl)
            .with("CXPULSE_KAFKA__GROUP_ID", g)
            // tansu: a group join takes half the session timeout.
            .with("CXPULSE_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "6000")
            .with("CXPULSE_KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS", "500")
            .with("CXPULSE_CLICKHOUSE__URL", clickhouse)
            .with("CXPULSE_CLICKHOUSE__DATABASE", db)
    }

    /// Short fetch back-off, batch, checkpoint and idle intervals, and a metrics port of
    /// the system's choice: a job that reacts within a second.
    pub fn quick(self) -> StackJob {
        self.with("CXPULSE_KAFKA__PROPERTIES__FETCH_QUEUE_BACKOFF_MS", "10")
            .with("CXPULSE_CLICKHOUSE__BATCH_INTERVAL", "300ms")
            .with("CXPULSE_JOB__CHECKPOINT_INTERVAL", "700ms")
            .with("CXPULSE_ENGINE__IDLE_TIMEOUT", "2s")
            .with("CXPULSE_METRICS__LISTEN", "127.0.0.1:0")
    }

    /// The job with `name` set to `value` (added or replaced).
    pub fn with(mut self, name: &str, value: impl Into<String>) -> StackJob {
        self.envs.insert(name.to_string(), value.into());
        self
    }

    /// `bin args…` with these variables, no configuration file named by the environment,
    /// in the temporary directory.
    pub fn command(&self, bin: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.args(args)
            .envs(&self.envs)
            .env_remove("CXPULSE_CONFIG")
            .current_dir(std::env::temp_dir());
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix_and_settings_can_be_replaced() {
        let job = StackJob::new("127.0.0.1:9092", "http://127.0.0.1:8123", "t1")
            .quick()
            .with("CXPULSE_METRICS__LISTEN", "127.0.0.1:9999");
        assert_eq!(job.touchpoints, "t1_tp");
        assert_eq!(job.envs["CXPULSE_KAFKA__TOPICS__SURVEYS"], "t1_sv");
        assert_eq!(job.envs["CXPULSE_KAFKA__DEAD_LETTER_TOPIC"], "t1_dl");
        assert_eq!(job.envs["CXPULSE_KAFKA__GROUP_ID"], "t1_g");
        assert_eq!(job.envs["CXPULSE_CLICKHOUSE__DATABASE"], "t1_db");
        assert_eq!(job.envs["CXPULSE_METRICS__LISTEN"], "127.0.0.1:9999");
        assert_ne!(unique("a"), unique("b"));
        // Every variable is one the configuration reads (it refuses unknown ones).
        let env = |job: &StackJob| -> Vec<(String, String)> {
            job.envs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let loaded = crate::config::load(None, &env(&job), &[]);
        assert!(loaded.is_ok(), "{:?}", loaded.err());
        let misspelt = job.with("CXPULSE_CLICKHOUSE__BATCH_INTERVALL", "1s");
        assert!(crate::config::load(None, &env(&misspelt), &[]).is_err());
    }
}
