//! The load generator's event producer and topic creation.

use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::context::TracingContext;
use crate::error::{Error, Result};
use crate::settings::KafkaSettings;

/// What a [`EventProducer::send_all`] did.
#[derive(Debug, Default)]
pub struct SendReport {
    /// Records acknowledged by the broker.
    pub sent: u64,
    /// Key + payload bytes of the acknowledged records.
    pub bytes: u64,
    /// Records that failed (enqueue or delivery).
    pub failed: u64,
    /// The first failure; `send_all` stops enqueuing after it (outstanding deliveries are
    /// still awaited and counted).
    pub first_error: Option<Error>,
}

impl SendReport {
    /// `Ok(self)` when nothing failed, else the first error.
    pub fn into_result(self) -> Result<SendReport> {
        match self.first_error {
            None => Ok(self),
            Some(e) => Err(e),
        }
    }
}

/// Idempotent producer of keyed events (key = customer id bytes, payload = encoded event),
/// compression per settings (lz4 by default), `partitioner=murmur2_random` (the Java
/// client's: a key lands on the same partition whichever client produced it, and on the
/// same partition number in every topic with the same partition count).
pub struct EventProducer {
    producer: FutureProducer<TracingContext>,
    max_in_flight: usize,
    queue_timeout: Duration,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer")
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

fn delivery_error(topic: &str, source: KafkaError) -> Error {
    Error::Delivery {
        topic: topic.to_owned(),
        source,
    }
}

impl EventProducer {
    pub fn new(settings: &KafkaSettings) -> Result<Self> {
        settings.validate()?;
        let mut config = settings.producer_config("events");
        if !settings.producer_properties.contains_key("partitioner")
            && !settings.properties.contains_key("partitioner")
        {
            config.set("partitioner", "murmur2_random");
        }
        let producer = config
            .create_with_context(TracingContext { client: "events" })
            .map_err(Error::client("create event producer"))?;
        Ok(EventProducer {
            producer,
            max_in_flight: settings.max_in_flight_sends,
            queue_timeout: Duration::from_millis(u64::from(settings.delivery_timeout_ms)),
        })
    }

    /// Sends one record and awaits its delivery; returns (partition, offset).
    pub async fn send(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(i32, i64)> {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        self.producer
            .send(record, Timeout::After(self.queue_timeout))
            .await
            .map(|d| (d.partition, d.offset))
            .map_err(|(e, _)| delivery_error(topic, e))
    }

    /// Sends every `(key, payload)` to `topic`, keeping at most `max_in_flight_sends`
    /// deliveries outstanding, and awaits them all. Stops enqueuing at the first failure.
    pub async fn send_all<I, K, P>(&self, topic: &str, records: I) -> SendReport
    where
        I: IntoIterator<Item = (K, P)>,
        K: AsRef<[u8]>,
        P: AsRef<[u8]>,
    {
        let mut report = SendReport::default();
        let mut in_flight: FuturesUnordered<SizedDelivery> = FuturesUnordered::new();
        'records: for (key, payload) in records {
            let (key, payload) = (key.as_ref(), payload.as_ref());
            let size = (key.len() + payload.len()) as u64;
            while in_flight.len() >= self.max_in_flight {
                if let Some(r) = in_flight.next().await {
                    report.account(topic, r);
                }
            }
            if report.first_error.is_some() {
                break;
            }
            let mut waited_full = Duration::ZERO;
            loop {
                let record = FutureRecord::to(topic).key(key).payload(payload);
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        in_flight.push(SizedDelivery { size, delivery });
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                        if waited_full < self.queue_timeout =>
                    {
                        // librdkafka's local queue is full: make room by awaiting a delivery.
                        match in_flight.next().await {
                            Some(r) => report.account(topic, r),
                            None => {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                waited_full += Duration::from_millis(10);
                            }
                        }
                    }
                    Err((e, _)) => {
                        report.failed += 1;
                        report
                            .first_error
                            .get_or_insert_with(|| delivery_error(topic, e));
                        break 'records;
                    }
                }
            }
        }
        while let Some(r) = in_flight.next().await {
            report.account(topic, r);
        }
        tracing::debug!(
            topic,
            sent = report.sent,
            failed = report.failed,
            "send_all done"
        );
        report
    }

    /// Waits until every outstanding record is delivered (blocking, bounded).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer.flush(timeout).map_err(|e| match e {
            KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut) => Error::Timeout {
                op: "event producer flush",
            },
            e => Error::Client {
                op: "event producer flush",
                source: e,
            },
        })
    }
}

struct SizedDelivery {
    size: u64,
    delivery: DeliveryFuture,
}

/// Size and delivery result; `None` when the producer went away before reporting.
type DeliveryOutcome = (
    u64,
    Option<rdkafka::producer::future_producer::OwnedDeliveryResult>,
);

impl std::future::Future for SizedDelivery {
    type Output = DeliveryOutcome;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let size = self.size;
        std::pin::Pin::new(&mut self.delivery)
            .poll(cx)
            .map(|r| (size, r.ok()))
    }
}

impl SendReport {
    fn account(&mut self, topic: &str, (size, outcome): DeliveryOutcome) {
        match outcome {
            Some(Ok(_)) => {
                self.sent += 1;
                self.bytes += size;
            }
            Some(Err((e, _))) => {
                self.failed += 1;
                self.first_error
                    .get_or_insert_with(|| delivery_error(topic, e));
            }
            None => {
                self.failed += 1;
                self.first_error
                    .get_or_insert_with(|| Error::DeliveryCancelled {
                        topic: topic.to_owned(),
                    });
            }
        }
    }
}

/// An admin client for [`ensure_topics`].
pub fn admin_client(settings: &KafkaSettings) -> Result<AdminClient<TracingContext>> {
    settings
        .admin_config()
        .create_with_context(TracingContext { client: "admin" })
        .map_err(Error::client("create admin client"))
}

/// Outcome of [`ensure_topics`] for one topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicStatus {
    Created,
    AlreadyExists,
}

/// Creates the topics that do not exist yet (`(name, partitions)`), with the broker's
/// default replication factor. An existing topic is fine (its partition count is not
/// changed). Any other failure is an error.
pub async fn ensure_topics(
    admin: &AdminClient<TracingContext>,
    topics: &[(&str, i32)],
) -> Result<Vec<(String, TopicStatus)>> {
    ensure_topics_with_replication(admin, topics, None).await
}

/// [`ensure_topics`] with an explicit replication factor (`None` = broker default).
pub async fn ensure_topics_with_replication(
    admin: &AdminClient<TracingContext>,
    topics: &[(&str, i32)],
    replication_factor: Option<i32>,
) -> Result<Vec<(String, TopicStatus)>> {
    for (name, partitions) in topics {
        if !crate::settings::is_valid_topic_name(name) {
            return Err(Error::Config(format!("invalid topic name {name:?}")));
        }
        if *partitions <= 0 {
            return Err(Error::Config(format!(
                "topic {name:?}: partitions must be > 0, not {partitions}"
            )));
        }
    }
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| {
            NewTopic::new(
                name,
                *partitions,
                TopicReplication::Fixed(replication_factor.unwrap_or(-1)),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(new_topics.iter(), &opts)
        .await
        .map_err(Error::client("create topics"))?;
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(name) => {
                tracing::info!(topic = %name, "topic created");
                out.push((name, TopicStatus::Created));
            }
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %name, "topic already exists");
                out.push((name, TopicStatus::AlreadyExists));
            }
            Err((topic, code)) => return Err(Error::CreateTopic { topic, code }),
        }
    }
    Ok(out)
}
