//! The dead-letter producer: rejected records go to the dead-letter topic byte-exact, with
//! their origin and the reason in headers.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::context::TracingContext;
use crate::error::{Error, Result};
use crate::settings::KafkaSettings;
use crate::source::SourceRecord;

/// Header names of a dead letter. All values are UTF-8 text.
pub mod headers {
    /// Topic the record was read from.
    pub const SOURCE_TOPIC: &str = "cxpulse.source.topic";
    /// Its partition (decimal).
    pub const SOURCE_PARTITION: &str = "cxpulse.source.partition";
    /// Its offset (decimal).
    pub const SOURCE_OFFSET: &str = "cxpulse.source.offset";
    /// Its Kafka timestamp in ms (decimal); absent when the record had none.
    pub const SOURCE_TIMESTAMP: &str = "cxpulse.source.timestamp";
    /// Stable snake_case label of the failure (`avro_decode`, `unknown_schema`, `too_late`, …):
    /// for counting and routing.
    pub const ERROR_REASON: &str = "cxpulse.error.reason";
    /// Human-readable detail (truncated to [`super::MAX_ERROR_MESSAGE_BYTES`]).
    pub const ERROR_MESSAGE: &str = "cxpulse.error.message";
}

/// Longest `cxpulse.error.message` header value, in bytes (longer ones are cut at a char
/// boundary and end with `…`).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// A record to dead-letter. Key and payload are sent exactly as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadLetter<'a> {
    pub source_topic: &'a str,
    pub source_partition: i32,
    pub source_offset: i64,
    pub source_timestamp_ms: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// Stable snake_case label; other characters are normalized by [`reason_label`].
    pub reason: &'a str,
    /// Human-readable detail.
    pub message: &'a str,
}

impl<'a> DeadLetter<'a> {
    /// A dead letter for a record read by the [`crate::KafkaSource`].
    pub fn from_record(record: &'a SourceRecord, reason: &'a str, message: &'a str) -> Self {
        DeadLetter {
            source_topic: &record.topic,
            source_partition: record.partition,
            source_offset: record.offset,
            source_timestamp_ms: record.timestamp_ms,
            key: record.key.as_deref(),
            payload: record.payload.as_deref(),
            reason,
            message,
        }
    }
}

/// Where a dead letter was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Normalizes a reason to a stable snake_case label: ASCII lowercase, every run of other
/// characters becomes one `_`, no leading/trailing `_`; empty → `unknown`.
pub fn reason_label(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut prev_sep = true;
    for c in reason.chars() {
        if c.is_ascii_alphanumeric() {
            // camelCase boundary: `AvroDecode` → `avro_decode`
            if c.is_ascii_uppercase() && !prev_sep && !out.is_empty() {
                if let Some(last) = out.chars().last() {
                    if last.is_ascii_lowercase() || last.is_ascii_digit() {
                        out.push('_');
                    }
                }
            }
            out.push(c.to_ascii_lowercase());
            prev_sep = false;
        } else if !prev_sep {
            out.push('_');
            prev_sep = true;
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("unknown");
    }
    out
}

fn truncate_message(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_ERROR_MESSAGE_BYTES {
        return message.into();
    }
    let mut end = MAX_ERROR_MESSAGE_BYTES - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end]).into()
}

/// Idempotent producer (`enable.idempotence=true`, `acks=all`) to the dead-letter topic.
pub struct DeadLetterProducer {
    producer: FutureProducer<TracingContext>,
    topic: String,
    queue_timeout: Duration,
}

impl std::fmt::Debug for DeadLetterProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterProducer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DeadLetterProducer {
    pub fn new(settings: &KafkaSettings) -> Result<Self> {
        settings.validate()?;
        let producer = settings
            .producer_config("dlq")
            .create_with_context(TracingContext { client: "dlq" })
            .map_err(Error::client("create dead-letter producer"))?;
        Ok(DeadLetterProducer {
            producer,
            topic: settings.dead_letter_topic.clone(),
            queue_timeout: Duration::from_millis(u64::from(settings.delivery_timeout_ms)),
        })
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends one dead letter and awaits its delivery (bounded by `delivery_timeout_ms`).
    /// Records keep their key, so the default partitioner keeps one customer's dead letters
    /// in order.
    pub async fn send(&self, letter: &DeadLetter<'_>) -> Result<Delivered> {
        let reason = reason_label(letter.reason);
        let message = truncate_message(letter.message);
        let partition = letter.source_partition.to_string();
        let offset = letter.source_offset.to_string();
        let mut hs = OwnedHeaders::new_with_capacity(6)
            .insert(Header {
                key: headers::SOURCE_TOPIC,
                value: Some(letter.source_topic),
            })
            .insert(Header {
                key: headers::SOURCE_PARTITION,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: headers::SOURCE_OFFSET,
                value: Some(offset.as_str()),
            });
        if let Some(ts) = letter.source_timestamp_ms {
            let ts = ts.to_string();
            hs = hs.insert(Header {
                key: headers::SOURCE_TIMESTAMP,
                value: Some(ts.as_str()),
            });
        }
        hs = hs
            .insert(Header {
                key: headers::ERROR_REASON,
                value: Some(reason.as_str()),
            })
            .insert(Header {
                key: headers::ERROR_MESSAGE,
                value: Some(&*message),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(hs);
        if let Some(k) = letter.key {
            record = record.key(k);
        }
        if let Some(p) = letter.payload {
            record = record.payload(p);
        }
        match self
            .producer
            .send(record, Timeout::After(self.queue_timeout))
            .await
        {
            Ok(d) => {
                tracing::debug!(
                    source_topic = letter.source_topic,
                    source_partition = letter.source_partition,
                    source_offset = letter.source_offset,
                    reason = %reason,
                    dlq_partition = d.partition,
                    dlq_offset = d.offset,
                    "dead-lettered"
                );
                Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Err((source, _)) => Err(Error::Delivery {
                topic: self.topic.clone(),
                source,
            }),
        }
    }

    /// Waits until every outstanding dead letter is delivered (blocking, bounded).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer.flush(timeout).map_err(|e| match e {
            rdkafka::error::KafkaError::Flush(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ) => Error::Timeout {
                op: "dead-letter flush",
            },
            e => Error::Client {
                op: "dead-letter flush",
                source: e,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_labels_are_snake_case() {
        assert_eq!(reason_label("avro_decode"), "avro_decode");
        assert_eq!(reason_label("AvroDecode"), "avro_decode");
        assert_eq!(reason_label("Unknown schema id!"), "unknown_schema_id");
        assert_eq!(reason_label("  --too late--  "), "too_late");
        assert_eq!(reason_label("v2Error"), "v2_error");
        assert_eq!(reason_label(""), "unknown");
        assert_eq!(reason_label("é"), "unknown");
    }

    #[test]
    fn long_messages_are_truncated_at_a_char_boundary() {
        let short = "bad magic byte";
        assert_eq!(truncate_message(short), short);
        let long = "é".repeat(MAX_ERROR_MESSAGE_BYTES);
        let t = truncate_message(&long);
        assert!(t.len() <= MAX_ERROR_MESSAGE_BYTES);
        assert!(t.ends_with('…'));
    }
}
