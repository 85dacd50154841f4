//! Errors of the Kafka clients.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings are inconsistent (see [`crate::KafkaSettings::validate`]).
    #[error("invalid kafka settings: {0}")]
    Config(String),

    /// A librdkafka call failed.
    #[error("kafka {op} failed: {source}")]
    Client {
        /// What was being done (`"create consumer"`, `"commit"`, …).
        op: &'static str,
        #[source]
        source: KafkaError,
    },

    /// A topic/partition that is neither the touchpoint nor the survey topic of the source.
    #[error("topic {0:?} is neither the touchpoint nor the survey topic of this source")]
    UnknownTopic(String),

    /// A Kafka partition number outside `0..=MAX_PARTITION` (see [`crate::MAX_PARTITION`]).
    #[error("partition {0} is outside the supported range 0..={max}", max = crate::MAX_PARTITION)]
    PartitionOutOfRange(i32),

    /// An offset that cannot be committed or sought to (negative).
    #[error("invalid offset {offset} for {partition}")]
    InvalidOffset {
        partition: crate::SourcePartition,
        offset: i64,
    },

    /// A per-partition failure reported inside a partition list (commit, seek, committed).
    #[error("kafka {op} of {partition} failed: {source}")]
    Partition {
        op: &'static str,
        partition: crate::SourcePartition,
        #[source]
        source: KafkaError,
    },

    /// The source was closed (or its poll thread ended): no more events or commands.
    #[error("the kafka source is closed")]
    Closed,

    /// A rebalance acknowledgement arrived after the rebalance callback gave up waiting
    /// (`rebalance_ack_timeout_ms`). For an assignment this means the partitions were
    /// assigned **paused** at their committed offsets: seek and resume them yourself.
    #[error("rebalance acknowledgement came too late (the callback waited {waited_ms} ms)")]
    AckTooLate { waited_ms: u64 },

    /// A produced record was not delivered.
    #[error("delivery to topic {topic:?} failed: {source}")]
    Delivery {
        topic: String,
        #[source]
        source: KafkaError,
    },

    /// A producer was dropped / closed while a delivery was outstanding.
    #[error("delivery to topic {topic:?} was cancelled (producer shut down)")]
    DeliveryCancelled { topic: String },

    /// Creating a topic failed (other than "already exists").
    #[error("creating topic {topic:?} failed: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },

    /// A background task or thread failed (panicked or was cancelled).
    #[error("internal error: {0}")]
    Internal(String),

    /// A flush or other bounded wait timed out.
    #[error("kafka {op} timed out")]
    Timeout { op: &'static str },
}

impl Error {
    pub(crate) fn client(op: &'static str) -> impl FnOnce(KafkaError) -> Error {
        move |source| Error::Client { op, source }
    }
}
