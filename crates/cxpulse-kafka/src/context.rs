//! librdkafka log and error callbacks forwarded to `tracing`.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;

/// Forwards librdkafka's log lines and global errors to `tracing` (target `librdkafka`).
pub(crate) fn forward_log(client: &str, level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", client, facility = fac, "{message}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", client, facility = fac, "{message}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", client, facility = fac, "{message}")
        }
        RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "librdkafka", client, facility = fac, "{message}")
        }
    }
}

pub(crate) fn forward_error(client: &str, error: &KafkaError, reason: &str) {
    tracing::warn!(target: "librdkafka", client, error = %error, "{reason}");
}

/// Context of the producers and the admin client: logs go to `tracing`.
#[derive(Clone, Debug)]
pub struct TracingContext {
    pub(crate) client: &'static str,
}

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(self.client, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        forward_error(self.client, &error, reason);
    }
}
