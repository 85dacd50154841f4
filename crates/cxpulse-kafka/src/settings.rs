//! Settings of the Kafka clients (consumer, dead-letter producer, event producer).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What `Debug`, [`KafkaSettings::redacted`] and the client-creation log print instead of a
/// secret value.
pub const REDACTED: &str = "<redacted>";

/// librdkafka properties that the source sets itself because the flush → checkpoint →
/// commit protocol depends on them. Setting them in `properties` / `consumer_properties` is
/// ignored (with a warning).
pub const PROTECTED_CONSUMER_KEYS: &[&str] = &[
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "bootstrap.servers",
    "partition.assignment.strategy",
];

/// librdkafka properties that always hold a secret (they are redacted wherever settings are
/// printed). Keys that *contain* `password`, `secret` or `token` (except `*.url`), and keys ending in
/// `key.pem` / `.key`, are treated as secrets too; add your own with `secret_properties`.
pub const KNOWN_SECRET_KEYS: &[&str] = &[
    "sasl.password",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl.keystore.password",
    "ssl.truststore.password",
    "ssl_key",
];

/// Partition assignment strategy of the consumer group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentStrategy {
    /// Eager protocol with the `range` assignor: every rebalance revokes the whole
    /// assignment first, then assigns the new one (the default).
    #[default]
    Range,
    /// Eager protocol with the `roundrobin` assignor.
    RoundRobin,
    /// Incremental cooperative rebalancing (`cooperative-sticky`): only the partitions that
    /// move are revoked / assigned. Note: on tansu, a group that once used it rejects a
    /// later eager member: never mix strategies in one group.
    CooperativeSticky,
}

impl AssignmentStrategy {
    /// The value of librdkafka's `partition.assignment.strategy`.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            AssignmentStrategy::Range => "range",
            AssignmentStrategy::RoundRobin => "roundrobin",
            AssignmentStrategy::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// True for the incremental (cooperative) protocol.
    pub fn is_cooperative(self) -> bool {
        matches!(self, AssignmentStrategy::CooperativeSticky)
    }
}

/// Compression codec of the producers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    #[default]
    Lz4,
    Zstd,
}

impl Compression {
    /// The value of librdkafka's `compression.codec`.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Settings of every Kafka client of cxpulse.
///
/// All fields have defaults (`#[serde(default)]`), so a config file only names what differs.
/// Durations are in milliseconds. `Debug` redacts secret properties; use
/// [`KafkaSettings::redacted`] before serializing settings for display.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Consumer group of the stream job (`group.id`).
    pub group_id: String,
    /// `client.id` prefix: the clients use `{client_id}-source`, `-dlq`, `-events`.
    pub client_id: String,
    /// Topic of touchpoint events (Avro).
    pub touchpoint_topic: String,
    /// Topic of survey responses (Avro).
    pub survey_topic: String,
    /// Topic that receives records that could not be decoded or were rejected.
    pub dead_letter_topic: String,

    /// `session.timeout.ms`. On tansu a group join takes half of it: use 6000 in tests.
    pub session_timeout_ms: u32,
    /// `heartbeat.interval.ms` (500 in tests).
    pub heartbeat_interval_ms: u32,
    /// `max.poll.interval.ms`: the source's poll thread keeps polling while the application
    /// is slow (it pauses the partitions instead), so this only trips if a rebalance
    /// acknowledgement is awaited for longer.
    pub max_poll_interval_ms: u32,
    /// Partition assignment strategy (default eager `range`).
    pub assignment_strategy: AssignmentStrategy,
    /// Upper bound of records in one [`crate::SourceEvent::Records`] batch.
    pub max_batch_records: usize,
    /// How long the source waits to fill a batch before handing over a partial one.
    pub batch_linger_ms: u64,
    /// Capacity, in batches, of the channel between the poll thread and the application.
    /// When it is full the poll thread stops polling; when it stays full for
    /// `backpressure_pause_after_ms` it pauses all assigned partitions (and keeps polling, to
    /// serve rebalances) until the channel is half empty again.
    pub channel_capacity: usize,
    /// See `channel_capacity`.
    pub backpressure_pause_after_ms: u64,
    /// Bound on how long a rebalance callback waits for the application to acknowledge a
    /// revocation (after flush + commit) or to answer an assignment with start offsets.
    pub rebalance_ack_timeout_ms: u64,
    /// `fetch.queue.backoff.ms` (librdkafka ≥ 2.4). `Some(10)` in tests: very compressible
    /// payloads otherwise fill librdkafka's queue in one fetch and stall it on tansu.
    pub fetch_queue_backoff_ms: Option<u32>,
    /// Timeout of blocking metadata / watermark / seek / committed-offset requests.
    pub request_timeout_ms: u64,

    /// Producers' `compression.codec` (default lz4).
    pub compression: Compression,
    /// Producers' `linger.ms`.
    pub producer_linger_ms: u32,
    /// Producers' `delivery.timeout.ms` (bound on how long `send` awaits a delivery).
    pub delivery_timeout_ms: u32,
    /// Upper bound of unacknowledged sends of the [`crate::EventProducer`].
    pub max_in_flight_sends: usize,

    /// Extra librdkafka properties for every client (security: `security.protocol`,
    /// `sasl.*`, `ssl.*`, …). Applied after the derived ones, so they win, except the
    /// [`PROTECTED_CONSUMER_KEYS`] on the consumer.
    pub properties: BTreeMap<String, String>,
    /// Extra librdkafka properties for the consumer only.
    pub consumer_properties: BTreeMap<String, String>,
    /// Extra librdkafka properties for the producers only.
    pub producer_properties: BTreeMap<String, String>,
    /// More property keys whose values are secrets (besides [`KNOWN_SECRET_KEYS`] and the
    /// `password` / `secret` / `token` / `key.pem` patterns).
    pub secret_properties: Vec<String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            bootstrap_servers: "127.0.0.1:9092".to_owned(),
            group_id: "cxpulse".to_owned(),
            client_id: "cxpulse".to_owned(),
            touchpoint_topic: "cx.touchpoints".to_owned(),
            survey_topic: "cx.surveys".to_owned(),
            dead_letter_topic: "cx.dead-letters".to_owned(),
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            max_poll_interval_ms: 300_000,
            assignment_strategy: AssignmentStrategy::Range,
            max_batch_records: 1_000,
            batch_linger_ms: 20,
            channel_capacity: 8,
            backpressure_pause_after_ms: 1_000,
            rebalance_ack_timeout_ms: 60_000,
            fetch_queue_backoff_ms: None,
            request_timeout_ms: 10_000,
            compression: Compression::Lz4,
            producer_linger_ms: 5,
            delivery_timeout_ms: 30_000,
            max_in_flight_sends: 10_000,
            properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
            secret_properties: Vec::new(),
        }
    }
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.redacted();
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &r.bootstrap_servers)
            .field("group_id", &r.group_id)
            .field("client_id", &r.client_id)
            .field("touchpoint_topic", &r.touchpoint_topic)
            .field("survey_topic", &r.survey_topic)
            .field("dead_letter_topic", &r.dead_letter_topic)
            .field("session_timeout_ms", &r.session_timeout_ms)
            .field("heartbeat_interval_ms", &r.heartbeat_interval_ms)
            .field("max_poll_interval_ms", &r.max_poll_interval_ms)
            .field("assignment_strategy", &r.assignment_strategy)
            .field("max_batch_records", &r.max_batch_records)
            .field("batch_linger_ms", &r.batch_linger_ms)
            .field("channel_capacity", &r.channel_capacity)
            .field(
                "backpressure_pause_after_ms",
                &r.backpressure_pause_after_ms,
            )
            .field("rebalance_ack_timeout_ms", &r.rebalance_ack_timeout_ms)
            .field("fetch_queue_backoff_ms", &r.fetch_queue_backoff_ms)
            .field("request_timeout_ms", &r.request_timeout_ms)
            .field("compression", &r.compression)
            .field("producer_linger_ms", &r.producer_linger_ms)
            .field("delivery_timeout_ms", &r.delivery_timeout_ms)
            .field("max_in_flight_sends", &r.max_in_flight_sends)
            .field("properties", &r.properties)
            .field("consumer_properties", &r.consumer_properties)
            .field("producer_properties", &r.producer_properties)
            .field("secret_properties", &r.secret_properties)
            .finish()
    }
}

/// True if a librdkafka property key names a secret by itself (independent of settings).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.trim().to_ascii_lowercase();
    KNOWN_SECRET_KEYS.contains(&k.as_str())
        || k.contains("password")
        || k.contains("secret")
        || (k.contains("token") && !k.ends_with(".url"))
        || k.ends_with("key.pem")
        || k.ends_with(".key")
}

/// Kafka's rule for topic names: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn is_valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl KafkaSettings {
    /// Settings for tests against the tansu broker: the given bootstrap servers and group,
    /// `session.timeout.ms=6000`, `heartbeat.interval.ms=500`, `fetch.queue.backoff.ms=10`,
    /// short linger.
    pub fn for_tests(bootstrap_servers: &str, group_id: &str) -> Self {
        KafkaSettings {
            bootstrap_servers: bootstrap_servers.to_owned(),
            group_id: group_id.to_owned(),
            session_timeout_ms: 6_000,
            heartbeat_interval_ms: 500,
            fetch_queue_backoff_ms: Some(10),
            batch_linger_ms: 10,
            rebalance_ack_timeout_ms: 20_000,
            producer_linger_ms: 1,
            ..KafkaSettings::default()
        }
    }

    /// Keys (of `properties`, `consumer_properties`, `producer_properties`) whose values are
    /// secrets and must not be printed: the known secret keys, the patterns of
    /// [`is_secret_key`], and `secret_properties`. Sorted, deduplicated.
    pub fn secret_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .properties
            .keys()
            .chain(self.consumer_properties.keys())
            .chain(self.producer_properties.keys())
            .filter(|k| self.is_secret(k))
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// True if `key`'s value is a secret under these settings.
    pub fn is_secret(&self, key: &str) -> bool {
        is_secret_key(key)
            || self
                .secret_properties
                .iter()
                .any(|s| s.trim() == key.trim())
    }

    /// A copy whose secret property values are replaced by [`REDACTED`]: safe to print or
    /// serialize (e.g. `cxpulse config show`).
    pub fn redacted(&self) -> KafkaSettings {
        let mut out = self.clone();
        for map in [
            &mut out.properties,
            &mut out.consumer_properties,
            &mut out.producer_properties,
        ] {
            for (k, v) in map.iter_mut() {
                if self.is_secret(k) {
                    *v = REDACTED.to_owned();
                }
            }
        }
        out
    }

    /// Checks the settings; the client constructors call it.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.bootstrap_servers.trim().is_empty() {
            return bad("bootstrap_servers is empty".into());
        }
        if self.group_id.trim().is_empty() {
            return bad("group_id is empty".into());
        }
        for (name, topic) in [
            ("touchpoint_topic", &self.touchpoint_topic),
            ("survey_topic", &self.survey_topic),
            ("dead_letter_topic", &self.dead_letter_topic),
        ] {
            if !is_valid_topic_name(topic) {
                return bad(format!(
                    "{name} {topic:?} is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-], not . or ..)"
                ));
            }
        }
        if self.touchpoint_topic == self.survey_topic {
            return bad(format!(
                "touchpoint_topic and survey_topic are both {:?}: they must differ",
                self.touchpoint_topic
            ));
        }
        if self.dead_letter_topic == self.touchpoint_topic
            || self.dead_letter_topic == self.survey_topic
        {
            return bad(format!(
                "dead_letter_topic {:?} must differ from the source topics",
                self.dead_letter_topic
            ));
        }
        if self.rebalance_ack_timeout_ms >= u64::from(self.max_poll_interval_ms) {
            return bad(format!(
                "rebalance_ack_timeout_ms ({}) must be < max_poll_interval_ms ({}): the poll thread \
                 does not poll while it waits for an acknowledgement",
                self.rebalance_ack_timeout_ms, self.max_poll_interval_ms
            ));
        }
        if self.max_batch_records == 0 {
            return bad("max_batch_records must be > 0".into());
        }
        if self.channel_capacity == 0 {
            return bad("channel_capacity must be > 0".into());
        }
        if self.max_in_flight_sends == 0 {
            return bad("max_in_flight_sends must be > 0".into());
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms >= self.session_timeout_ms
        {
            return bad(format!(
                "heartbeat_interval_ms ({}) must be > 0 and < session_timeout_ms ({})",
                self.heartbeat_interval_ms, self.session_timeout_ms
            ));
        }
        Ok(())
    }

    pub(crate) fn rebalance_ack_timeout(&self) -> Duration {
        Duration::from_millis(self.rebalance_ack_timeout_ms)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub(crate) fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    fn base_config(&self, client_suffix: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        c.set("client.id", format!("{}-{client_suffix}", self.client_id));
        c
    }

    /// The librdkafka configuration of the source's consumer.
    pub fn consumer_config(&self) -> ClientConfig {
        let mut c = self.base_config("source");
        c.set("session.timeout.ms", self.session_timeout_ms.to_string());
        c.set(
            "heartbeat.interval.ms",
            self.heartbeat_interval_ms.to_string(),
        );
        c.set(
            "max.poll.interval.ms",
            self.max_poll_interval_ms.to_string(),
        );
        c.set("auto.offset.reset", "earliest");
        c.set("enable.partition.eof", "false");
        if let Some(ms) = self.fetch_queue_backoff_ms {
            c.set("fetch.queue.backoff.ms", ms.to_string());
        }
        self.apply_extra(&mut c, &self.properties, true);
        self.apply_extra(&mut c, &self.consumer_properties, true);
        // The protocol's invariants, set last so nothing overrides them.
        c.set("group.id", &self.group_id);
        c.set("enable.auto.commit", "false");
        c.set("enable.auto.offset.store", "false");
        c.set(
            "partition.assignment.strategy",
            self.assignment_strategy.as_librdkafka(),
        );
        c
    }

    /// The librdkafka configuration of an idempotent producer (`acks=all`,
    /// `enable.idempotence=true`, compression per settings).
    pub fn producer_config(&self, client_suffix: &str) -> ClientConfig {
        let mut c = self.base_config(client_suffix);
        c.set("compression.codec", self.compression.as_librdkafka());
        c.set("linger.ms", self.producer_linger_ms.to_string());
        c.set("delivery.timeout.ms", self.delivery_timeout_ms.to_string());
        self.apply_extra(&mut c, &self.properties, false);
        self.apply_extra(&mut c, &self.producer_properties, false);
        c.set("enable.idempotence", "true");
        c.set("acks", "all");
        c
    }

    /// The librdkafka configuration of an admin client (used by [`crate::ensure_topics`]).
    pub fn admin_config(&self) -> ClientConfig {
        let mut c = self.base_config("admin");
        self.apply_extra(&mut c, &self.properties, false);
        c
    }

    fn apply_extra(&self, c: &mut ClientConfig, extra: &BTreeMap<String, String>, consumer: bool) {
        for (k, v) in extra {
            if consumer && PROTECTED_CONSUMER_KEYS.contains(&k.as_str()) {
                tracing::warn!(
                    key = %k,
                    "ignoring librdkafka property: the source sets it itself (offset commits are explicit)"
                );
                continue;
            }
            c.set(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_deserialize_from_partial_json() {
        KafkaSettings::default()
            .validate()
            .expect("defaults are valid");
        let s: KafkaSettings = serde_json::from_str(
            r#"{"bootstrap_servers":"k1:9092,k2:9092","assignment_strategy":"cooperative_sticky",
                "compression":"zstd","properties":{"security.protocol":"SASL_SSL",
                "sasl.mechanism":"SCRAM-SHA-512","sasl.username":"cx","sasl.password":"hunter2"}}"#,
        )
        .expect("parse");
        assert_eq!(s.bootstrap_servers, "k1:9092,k2:9092");
        assert_eq!(s.assignment_strategy, AssignmentStrategy::CooperativeSticky);
        assert_eq!(s.compression, Compression::Zstd);
        assert_eq!(s.group_id, "cxpulse");
        s.validate().expect("valid");
        assert!(serde_json::from_str::<KafkaSettings>(r#"{"bootstrap":"x"}"#).is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let mut s = KafkaSettings::default();
        s.properties.insert("sasl.username".into(), "cx".into());
        s.properties
            .insert("sasl.password".into(), "hunter2".into());
        s.consumer_properties
            .insert("ssl.key.pem".into(), "-----BEGIN".into());
        s.producer_properties
            .insert("custom.vault.ref".into(), "vault:abc".into());
        s.secret_properties.push("custom.vault.ref".into());
        assert_eq!(
            s.secret_keys(),
            vec!["custom.vault.ref", "sasl.password", "ssl.key.pem"]
        );
        let r = s.redacted();
        assert_eq!(r.properties["sasl.username"], "cx");
        assert_eq!(r.properties["sasl.password"], REDACTED);
        assert_eq!(r.consumer_properties["ssl.key.pem"], REDACTED);
        assert_eq!(r.producer_properties["custom.vault.ref"], REDACTED);
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("BEGIN") && !dbg.contains("vault:abc"));
        assert!(dbg.contains("sasl.username"));
    }

    #[test]
    fn protocol_properties_cannot_be_overridden() {
        let mut s = KafkaSettings::default();
        s.properties
            .insert("enable.auto.commit".into(), "true".into());
        s.consumer_properties
            .insert("enable.auto.offset.store".into(), "true".into());
        s.properties.insert("fetch.min.bytes".into(), "1".into());
        let c = s.consumer_config();
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(c.get("partition.assignment.strategy"), Some("range"));
        assert_eq!(c.get("fetch.min.bytes"), Some("1"));
        let p = s.producer_config("dlq");
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("compression.codec"), Some("lz4"));
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let s = KafkaSettings {
            survey_topic: "cx.touchpoints".into(),
            ..KafkaSettings::default()
        };
        assert!(matches!(s.validate(), Err(Error::Config(_))));
        let s = KafkaSettings {
            max_batch_records: 0,
            ..KafkaSettings::default()
        };
        assert!(s.validate().is_err());
    }
}
