//! `cxpulse generate`: realistic, deterministic CX traffic written to Kafka as Avro
//! (Confluent wire format, keyed by customer id), optionally with malformed records.

use crate::cli::GenerateArgs;
use crate::cli::LogFormat;
use crate::config::{self, ConfigError};
use crate::duration::parse_millis;
use crate::logging;
use anyhow::{bail, Context, Result};
use cxpulse_avro::Encoder;
use cxpulse_core::{CxEvent, Millis};
use cxpulse_gen::{Generator, Scenario};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::info;

/// Kafka settings described by the configuration.
pub fn kafka_settings(k: &config::KafkaSection) -> cxpulse_kafka::KafkaSettings {
    cxpulse_kafka::KafkaSettings {
        bootstrap_servers: k.bootstrap.clone(),
        group_id: k.group_id.clone(),
        client_id: k.client_id.clone(),
        touchpoint_topic: k.topics.touchpoints.clone(),
        survey_topic: k.topics.surveys.clone(),
        dead_letter_topic: k.dead_letter_topic.clone(),
        properties: k.properties.clone(),
        ..cxpulse_kafka::KafkaSettings::default()
    }
}

/// The kinds of broken record `generate --malformed-share` mixes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformation {
    /// The Avro body cut short.
    Truncated,
    /// A first byte that is neither the Confluent nor the single-object magic.
    BadMagic,
    /// A schema id nobody registered.
    UnknownSchemaId,
    /// A well-formed NPS response with score 11 (fails validation).
    NpsScoreEleven,
    /// An empty payload.
    Empty,
}

impl Malformation {
    pub const ALL: [Malformation; 5] = [
        Malformation::Truncated,
        Malformation::BadMagic,
        Malformation::UnknownSchemaId,
        Malformation::NpsScoreEleven,
        Malformation::Empty,
    ];

    /// Breaks `event`'s encoding `payload` this way.
    pub fn apply(self, event: &CxEvent, payload: &[u8], encoder: &Encoder) -> Vec<u8> {
        match self {
            Malformation::Truncated => {
                payload[..payload.len().min(5 + (payload.len().saturating_sub(5)) / 2)].to_vec()
            }
            Malformation::BadMagic => {
                let mut p = payload.to_vec();
                if let Some(b) = p.first_mut() {
                    *b = 0x7F;
                }
                p
            }
            Malformation::UnknownSchemaId => {
                let mut p = payload.to_vec();
                if p.len() >= 5 {
                    p[1..5].copy_from_slice(&9_999u32.to_be_bytes());
                }
                p
            }
            Malformation::NpsScoreEleven => match event {
                CxEvent::Survey(r) => {
                    let mut bad = r.clone();
                    bad.metric = cxpulse_core::SurveyMetric::Nps;
                    bad.score = 11;
                    let mut out = Vec::new();
                    encoder.encode_survey(&bad, &mut out);
                    out
                }
                // A touchpoint cannot carry a score: cut it short instead.
                CxEvent::Touchpoint(_) => Malformation::Truncated.apply(event, payload, encoder),
            },
            Malformation::Empty => Vec::new(),
        }
    }
}

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message,
        from: String::new(),
    }
}

pub fn run(
    path: Option<&Path>,
    env: &[(String, String)],
    log_format: LogFormat,
    args: GenerateArgs,
) -> Result<()> {
    let loaded = config::load(path, env, &[])?;
    logging::to_stderr(log_format);
    let mut gen_cfg = loaded.settings.generator.clone();
    if let Some(seed) = args.seed {
        gen_cfg.seed = seed;
    }
    if let Some(rate) = args.rate {
        gen_cfg.events_per_second = rate;
    }
    if let Some(s) = &args.scenario {
        gen_cfg.scenario =
            Some(Scenario::parse(s).map_err(|e| invalid("--scenario", e.to_string()))?);
    }
    if !(0.0..=1.0).contains(&args.malformed_share) {
        return Err(invalid(
            "--malformed-share",
            format!("{} is not within 0..=1", args.malformed_share),
        )
        .into());
    }
    let span_ms = match (&args.duration, args.count) {
        (Some(d), _) => parse_millis(d).map_err(|m| invalid("--duration", m))?,
        (None, Some(n)) => ((n as f64 / gen_cfg.events_per_second) * 1000.0) as Millis,
        (None, None) => bail!("give --count or --duration"),
    };
    // Backfill ends now (events are never in the future); real time starts now.
    let now = now_ms();
    gen_cfg.start = match (args.start, args.realtime) {
        (Some(start), _) => start,
        (None, true) => now,
        (None, false) => now - span_ms,
    };
    let end = gen_cfg.start + span_ms;
    let count_limit = args.count.unwrap_or(u64::MAX);
    let settings = kafka_settings(&loaded.settings.kafka);
    let encoder = Encoder::confluent();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let admin = cxpulse_kafka::admin_client(&settings)?;
        cxpulse_kafka::ensure_topics(
            &admin,
            &[
                (settings.touchpoint_topic.as_str(), args.partitions),
                (settings.survey_topic.as_str(), args.partitions),
                (settings.dead_letter_topic.as_str(), args.partitions),
            ],
        )
        .await?;
        let producer = cxpulse_kafka::EventProducer::new(&settings)?;
        let mut malformed_rng = ChaCha8Rng::seed_from_u64(gen_cfg.seed ^ 0x6D61_6C66_6F72_6D65);
        let generator =
            Generator::new(gen_cfg.clone()).map_err(|e| invalid("generator", e.to_string()))?;
        let (mut sent, mut malformed, mut batch_tp, mut batch_sv) =
            (0u64, 0u64, Vec::new(), Vec::new());
        let wall_start = now_ms();
        for d in generator {
            // `--count` is exact (arrivals are random, so the span is only its expected
            // length); `--duration` bounds the event time (with `--count`: whichever first).
            if sent >= count_limit || (args.duration.is_some() && d.arrival > end) {
                break;
            }
            let mut payload = encoder
                .to_vec(&d.event)
                .context("encoding a generated event")?;
            if args.malformed_share > 0.0 && malformed_rng.random::<f64>() < args.malformed_share {
                let kind =
                    Malformation::ALL[malformed_rng.random_range(0..Malformation::ALL.len())];
                payload = kind.apply(&d.event, &payload, &encoder);
                malformed += 1;
            }
            let key = d.event.customer_id().as_bytes().to_vec();
            match d.event {
                CxEvent::Touchpoint(_) => batch_tp.push((key, payload)),
                CxEvent::Survey(_) => batch_sv.push((key, payload)),
            }
            sent += 1;
            if args.realtime {
                let due = wall_start + (d.arrival - gen_cfg.start);
                let wait = due - now_ms();
                if wait > 0 {
                    flush(&producer, &settings, &mut batch_tp, &mut batch_sv).await?;
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                }
            }
            if batch_tp.len() + batch_sv.len() >= 10_000 {
                flush(&producer, &settings, &mut batch_tp, &mut batch_sv).await?;
            }
        }
        flush(&producer, &settings, &mut batch_tp, &mut batch_sv).await?;
        producer.flush(Duration::from_secs(30))?;
        info!(sent, malformed, "generation done");
        println!(
            "sent {sent} records ({malformed} malformed) to {} and {}",
            settings.touchpoint_topic, settings.survey_topic
        );
        anyhow::Ok(())
    })
}

async fn flush(
    producer: &cxpulse_kafka::EventProducer,
    settings: &cxpulse_kafka::KafkaSettings,
    touchpoints: &mut Vec<(Vec<u8>, Vec<u8>)>,
    surveys: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<()> {
    for (topic, batch) in [
        (&settings.touchpoint_topic, touchpoints),
        (&settings.survey_topic, surveys),
    ] {
        if batch.is_empty() {
            continue;
        }
        let report = producer.send_all(topic, batch.drain(..)).await;
        report
            .into_result()
            .with_context(|| format!("producing to {topic}"))?;
    }
    Ok(())
}
