//! Kafka I/O of cxpulse.
//!
//! * [`KafkaSource`]: one consumer (one group) over the touchpoint and survey topics, with
//!   explicit commits and an application-driven rebalance protocol: revoke → the
//!   application flushes and commits → [`Revocation::ack`]; assign → the application
//!   restores its state → [`Assignment::start`] with the start offsets (assign-time seek).
//! * [`DeadLetterProducer`]: byte-exact dead letters with origin and reason headers.
//! * [`EventProducer`] + [`ensure_topics`]: the load generator's side.
//!
//! See `docs/kafka.md` for settings, the protocol and broker gotchas.

mod context;
mod dead_letter;
mod error;
mod producer;
mod settings;
mod source;

pub use context::TracingContext;
pub use dead_letter::{
    headers, reason_label, DeadLetter, DeadLetterProducer, Delivered, MAX_ERROR_MESSAGE_BYTES,
};
pub use error::{Error, Result};
pub use producer::{
    admin_client, ensure_topics, ensure_topics_with_replication, EventProducer, SendReport,
    TopicStatus,
};
pub use settings::{
    is_secret_key, is_valid_topic_name, AssignmentStrategy, Compression, KafkaSettings,
    KNOWN_SECRET_KEYS, PROTECTED_CONSUMER_KEYS, REDACTED,
};
pub use source::{
    Assignment, CommandAck, KafkaSource, RecordKind, Revocation, SourceEvent, SourceHandle,
    SourcePartition, SourceRecord, StartOffset, Watermarks, MAX_PARTITION,
};

/// Re-export of the rdkafka crate (for `AdminClient` types in signatures).
pub use rdkafka;
