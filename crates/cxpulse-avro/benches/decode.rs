//! Decode throughput (records/s) of realistic Confluent-framed records: the hand-written fast
//! path vs apache-avro decode + schema resolution, and the resolution of an older (v0) writer.
//!
//! Run: `cargo bench -p cxpulse-avro --bench decode` (add `-- --warm-up-time 1
//! --measurement-time 3` for a short run).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use cxpulse_avro::{DecodePath, Decoder, Encoder, RecordKind, SchemaRegistry};
use cxpulse_core::{
    Amount, Channel, CxEvent, SurveyMetric, SurveyResponse, TouchpointEvent, TouchpointKind,
};

const BATCH: usize = 4096;
const T0: i64 = 1_714_564_800_000;

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }
}

const SEGMENTS: &[&str] = &["consumer", "smb", "enterprise", "public-sector"];
const TOUCHPOINTS: &[&str] = &[
    "checkout",
    "onboarding",
    "support",
    "billing",
    "delivery",
    "returns",
];
const CAMPAIGNS: &[&str] = &[
    "spring-sale",
    "newsletter-2024-05",
    "retargeting",
    "organic",
];
const DEVICES: &[&str] = &["ios", "android", "desktop-chrome", "desktop-safari"];
const COMMENTS: &[(&str, &str)] = &[
    ("fa", "خدمات عالی بود"),
    ("th", "บริการดีมาก"),
    ("ro", "Mulțumesc, a fost rapid"),
    (
        "en",
        "The agent solved my problem in a few minutes, thanks!",
    ),
    ("en", "🙂"),
];

fn touchpoint(rng: &mut Rng, i: usize) -> TouchpointEvent {
    let kind = TouchpointKind::ALL[rng.below(6) as usize];
    let purchase = kind == TouchpointKind::Purchase;
    let mut attributes = Vec::new();
    if rng.below(2) == 0 {
        attributes.push(("campaign".to_string(), rng.pick(CAMPAIGNS).to_string()));
    }
    if rng.below(3) != 0 {
        attributes.push(("device".to_string(), rng.pick(DEVICES).to_string()));
    }
    TouchpointEvent {
        event_id: rng.uuid(),
        occurred_at: T0 + i as i64 * 37,
        customer_id: format!("cust-{:08}", rng.below(1_000_000)),
        segment: rng.pick(SEGMENTS).to_string(),
        channel: Channel::ALL[rng.below(7) as usize],
        touchpoint: rng.pick(TOUCHPOINTS).to_string(),
        kind,
        case_id: kind
            .needs_case_id()
            .then(|| format!("case-{:06}", rng.below(100_000))),
        amount: purchase.then(|| Amount::from_units(rng.below(5_000_000) as i64 * 100)),
        currency: purchase.then(|| "EUR".to_string()),
        attributes,
    }
}

fn survey(rng: &mut Rng, i: usize) -> SurveyResponse {
    let metric = SurveyMetric::ALL[rng.below(3) as usize];
    let (min, max) = metric.scale().unwrap_or((0, 10));
    let comment = (rng.below(3) == 0).then(|| COMMENTS[rng.below(COMMENTS.len() as u64) as usize]);
    SurveyResponse {
        response_id: rng.uuid(),
        submitted_at: T0 + i as i64 * 53,
        customer_id: format!("cust-{:08}", rng.below(1_000_000)),
        segment: rng.pick(SEGMENTS).to_string(),
        channel: Channel::ALL[rng.below(7) as usize],
        touchpoint: rng.pick(TOUCHPOINTS).to_string(),
        metric,
        score: min + rng.below((max - min + 1) as u64) as i32,
        comment: comment.map(|(_, c)| c.to_string()),
        language: comment.map(|(l, _)| l.to_string()),
        case_id: (rng.below(4) == 0).then(|| format!("case-{:06}", rng.below(100_000))),
    }
}

/// A v0 touchpoint body (no amount, currency, attributes): the v1 body without its last fields.
fn v0_payload(event: &TouchpointEvent) -> Vec<u8> {
    let mut e = event.clone();
    e.amount = None;
    e.currency = None;
    e.attributes.clear();
    let mut body = Vec::new();
    cxpulse_avro::encode_touchpoint_body(&e, &mut body).expect("encodable");
    body.truncate(body.len() - 3); // amount null, currency null, empty map
    let mut payload = vec![0, 0, 0, 0, 100];
    payload.extend_from_slice(&body);
    payload
}

type Payloads = Vec<Vec<u8>>;

/// (touchpoints v1, surveys v1, touchpoints v0)
fn payloads() -> (Payloads, Payloads, Payloads) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let encoder = Encoder::confluent();
    let events: Vec<TouchpointEvent> = (0..BATCH).map(|i| touchpoint(&mut rng, i)).collect();
    let touchpoints = events
        .iter()
        .map(|e| {
            encoder
                .to_vec(&CxEvent::Touchpoint(e.clone()))
                .expect("encodable")
        })
        .collect();
    let surveys = (0..BATCH)
        .map(|i| {
            encoder
                .to_vec(&CxEvent::Survey(survey(&mut rng, i)))
                .expect("encodable")
        })
        .collect();
    let v0 = events.iter().map(v0_payload).collect();
    (touchpoints, surveys, v0)
}

fn bench(c: &mut Criterion) {
    let registry = SchemaRegistry::new();
    registry
        .register(
            100,
            include_str!("../../../schemas/history/touchpoint_event.v0.avsc"),
        )
        .expect("v0 registers");
    let fast = Decoder::new(registry.clone());
    let generic = Decoder::new(registry).with_path(DecodePath::Generic);
    let (touchpoints, surveys, v0) = payloads();
    let bytes: usize = touchpoints.iter().map(Vec::len).sum();
    eprintln!(
        "touchpoint payloads: {BATCH}, mean {} bytes; survey payloads mean {} bytes",
        bytes / BATCH,
        surveys.iter().map(Vec::len).sum::<usize>() / BATCH
    );
    for p in v0.iter().take(8) {
        fast.decode_touchpoint(p).expect("v0 payload decodes");
    }

    let mut group = c.benchmark_group("decode_confluent");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, decoder, kind, batch) in [
        (
            "touchpoint/fast",
            &fast,
            RecordKind::Touchpoint,
            &touchpoints,
        ),
        (
            "touchpoint/apache_resolution",
            &generic,
            RecordKind::Touchpoint,
            &touchpoints,
        ),
        (
            "touchpoint_v0_writer/apache_resolution",
            &fast,
            RecordKind::Touchpoint,
            &v0,
        ),
        ("survey/fast", &fast, RecordKind::Survey, &surveys),
        (
            "survey/apache_resolution",
            &generic,
            RecordKind::Survey,
            &surveys,
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                for payload in batch {
                    let event = decoder.decode(kind, black_box(payload)).expect("decodes");
                    black_box(event);
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = bench
}
criterion_main!(benches);
