//! Shared test helpers: sample events, proptest strategies, history schemas and an
//! independent apache-avro encoder (domain type → `Value` → apache-avro bytes).
#![allow(dead_code)]

use std::collections::HashMap;

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{Decimal, Schema};
use cxpulse_avro::{RecordKind, SchemaRegistry};
use cxpulse_core::{
    Amount, Channel, SurveyMetric, SurveyResponse, TouchpointEvent, TouchpointKind,
};
use proptest::prelude::*;

pub const TOUCHPOINT_V0: &str =
    include_str!("../../../../schemas/history/touchpoint_event.v0.avsc");
pub const TOUCHPOINT_V2: &str =
    include_str!("../../../../schemas/history/touchpoint_event.v2.avsc");
pub const SURVEY_V0: &str = include_str!("../../../../schemas/history/survey_response.v0.avsc");
pub const SURVEY_V2: &str = include_str!("../../../../schemas/history/survey_response.v2.avsc");

/// Ids the tests register the history schemas under.
pub const TOUCHPOINT_V0_ID: u32 = 100;
pub const SURVEY_V0_ID: u32 = 101;
pub const TOUCHPOINT_V2_ID: u32 = 200;
pub const SURVEY_V2_ID: u32 = 201;

/// 2024-05-01T12:00:00Z
pub const T0: i64 = 1_714_564_800_000;

/// The built-in registry plus the history schemas.
pub fn registry_with_history() -> SchemaRegistry {
    let r = SchemaRegistry::new();
    r.register(TOUCHPOINT_V0_ID, TOUCHPOINT_V0)
        .expect("touchpoint v0 registers");
    r.register(SURVEY_V0_ID, SURVEY_V0)
        .expect("survey v0 registers");
    r.register(TOUCHPOINT_V2_ID, TOUCHPOINT_V2)
        .expect("touchpoint v2 registers");
    r.register(SURVEY_V2_ID, SURVEY_V2)
        .expect("survey v2 registers");
    r
}

pub fn confluent(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn single_object(fingerprint: u64, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xC3, 0x01];
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(body);
    out
}

pub fn purchase() -> TouchpointEvent {
    TouchpointEvent {
        event_id: "evt-0001".into(),
        occurred_at: T0,
        customer_id: "cust-42".into(),
        segment: "smb".into(),
        channel: Channel::MobileApp,
        touchpoint: "checkout".into(),
        kind: TouchpointKind::Purchase,
        case_id: None,
        amount: Some(Amount::from_units(1_299_900)), // 129.99
        currency: Some("EUR".into()),
        attributes: vec![
            ("campaign".into(), "spring-sale".into()),
            ("device".into(), "ios".into()),
        ],
    }
}

pub fn support_reply() -> TouchpointEvent {
    TouchpointEvent {
        event_id: "evt-0002".into(),
        occurred_at: T0 + 60_000,
        customer_id: "cust-43".into(),
        segment: "enterprise".into(),
        channel: Channel::Chat,
        touchpoint: "support".into(),
        kind: TouchpointKind::AgentReplied,
        case_id: Some("case-7".into()),
        amount: None,
        currency: None,
        attributes: vec![],
    }
}

pub fn survey(
    metric: SurveyMetric,
    score: i32,
    comment: Option<&str>,
    language: Option<&str>,
) -> SurveyResponse {
    SurveyResponse {
        response_id: "resp-0001".into(),
        submitted_at: T0 + 120_000,
        customer_id: "cust-42".into(),
        segment: "smb".into(),
        channel: Channel::Email,
        touchpoint: "support".into(),
        metric,
        score,
        comment: comment.map(str::to_owned),
        language: language.map(str::to_owned),
        case_id: Some("case-7".into()),
    }
}

/// Comments in several scripts that must survive byte-exact.
pub const COMMENTS: [(&str, &str); 5] = [
    ("fa", "خدمات عالی بود"),
    ("th", "บริการดีมาก"),
    ("ro", "Mulțumesc, a fost rapid"),
    ("en", "🙂"),
    ("und", "mixed: Ünïcödé ✓ 日本語 👩‍👩‍👧 \u{0000} tab\tnewline\n"),
];

// ---------------------------------------------------------------------------------------------
// Independent apache-avro encoding of the domain types (schema v1).

fn opt_string(v: &Option<String>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
    }
}

/// The decimal bytes apache-avro writes: two's complement, shortest form, or `pad_to` bytes.
pub fn decimal_bytes(units: i64, pad_to: Option<usize>) -> Vec<u8> {
    let full = units.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (full[start], full[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    let mut bytes = full[start..].to_vec();
    if let Some(n) = pad_to {
        while bytes.len() < n {
            bytes.insert(0, if units < 0 { 0xff } else { 0 });
        }
    }
    bytes
}

pub fn touchpoint_value(e: &TouchpointEvent) -> Value {
    let map: HashMap<String, Value> = e
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Value::Record(vec![
        ("event_id".into(), Value::String(e.event_id.clone())),
        ("occurred_at".into(), Value::TimestampMillis(e.occurred_at)),
        ("customer_id".into(), Value::String(e.customer_id.clone())),
        ("segment".into(), Value::String(e.segment.clone())),
        (
            "channel".into(),
            Value::Enum(e.channel.index() as u32, e.channel.as_str().into()),
        ),
        ("touchpoint".into(), Value::String(e.touchpoint.clone())),
        (
            "kind".into(),
            Value::Enum(e.kind as u32, e.kind.as_str().into()),
        ),
        ("case_id".into(), opt_string(&e.case_id)),
        (
            "amount".into(),
            match e.amount {
                None => Value::Union(0, Box::new(Value::Null)),
                Some(a) => Value::Union(
                    1,
                    Box::new(Value::Decimal(Decimal::from(decimal_bytes(a.units, None)))),
                ),
            },
        ),
        ("currency".into(), opt_string(&e.currency)),
        ("attributes".into(), Value::Map(map)),
    ])
}

pub fn survey_value(r: &SurveyResponse) -> Value {
    Value::Record(vec![
        ("response_id".into(), Value::String(r.response_id.clone())),
        (
            "submitted_at".into(),
            Value::TimestampMillis(r.submitted_at),
        ),
        ("customer_id".into(), Value::String(r.customer_id.clone())),
        ("segment".into(), Value::String(r.segment.clone())),
        (
            "channel".into(),
            Value::Enum(r.channel.index() as u32, r.channel.as_str().into()),
        ),
        ("touchpoint".into(), Value::String(r.touchpoint.clone())),
        (
            "metric".into(),
            Value::Enum(r.metric as u32, r.metric.as_str().into()),
        ),
        ("score".into(), Value::Int(r.score)),
        ("comment".into(), opt_string(&r.comment)),
        ("language".into(), opt_string(&r.language)),
        ("case_id".into(), opt_string(&r.case_id)),
    ])
}

/// apache-avro's encoding of `value` with the schema JSON `schema_json`.
pub fn apache_encode(schema_json: &str, value: Value) -> Vec<u8> {
    let schema = Schema::parse_str(schema_json).expect("schema parses");
    GenericDatumWriter::builder(&schema)
        .build()
        .expect("writer builds")
        .write_value_to_vec(value)
        .expect("apache-avro encodes the value")
}

pub fn apache_touchpoint(e: &TouchpointEvent) -> Vec<u8> {
    apache_encode(
        RecordKind::Touchpoint.reader_schema_json(),
        touchpoint_value(e),
    )
}

pub fn apache_survey(r: &SurveyResponse) -> Vec<u8> {
    apache_encode(RecordKind::Survey.reader_schema_json(), survey_value(r))
}

/// The attributes as every decoder returns them: sorted by key, last value of a repeated key.
pub fn normalized(mut e: TouchpointEvent) -> TouchpointEvent {
    let mut map: Vec<(String, String)> = Vec::new();
    for (k, v) in e.attributes.drain(..) {
        if let Some(existing) = map.iter_mut().find(|(ek, _)| *ek == k) {
            existing.1 = v;
        } else {
            map.push((k, v));
        }
    }
    map.sort();
    e.attributes = map;
    e
}

// ---------------------------------------------------------------------------------------------
// proptest strategies

pub fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{0,12}",
        any::<String>(),
        prop::sample::select(
            COMMENTS
                .iter()
                .map(|(_, c)| c.to_string())
                .collect::<Vec<_>>()
        ),
    ]
}

pub fn arb_opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(arb_text())
}

pub fn arb_channel() -> impl Strategy<Value = Channel> {
    prop::sample::select(Channel::ALL.to_vec())
}

pub fn arb_amount() -> impl Strategy<Value = Option<Amount>> {
    prop::option::of(
        prop_oneof![
            -1_000_000_000i64..1_000_000_000,
            -999_999_999_999_999_999i64..=999_999_999_999_999_999,
            Just(0i64),
            Just(999_999_999_999_999_999i64),
            Just(-999_999_999_999_999_999i64),
        ]
        .prop_map(Amount::from_units),
    )
}

pub fn arb_attributes() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (prop_oneof!["[a-c]{1,2}", any::<String>()], arb_text()),
        0..6,
    )
}

pub fn arb_touchpoint() -> impl Strategy<Value = TouchpointEvent> {
    (
        (
            arb_text(),
            any::<i64>(),
            arb_text(),
            arb_text(),
            arb_channel(),
            arb_text(),
        ),
        (
            prop::sample::select(TouchpointKind::ALL.to_vec()),
            arb_opt_text(),
            arb_amount(),
            arb_opt_text(),
            arb_attributes(),
        ),
    )
        .prop_map(
            |(
                (event_id, occurred_at, customer_id, segment, channel, touchpoint),
                (kind, case_id, amount, currency, attributes),
            )| {
                TouchpointEvent {
                    event_id,
                    occurred_at,
                    customer_id,
                    segment,
                    channel,
                    touchpoint,
                    kind,
                    case_id,
                    amount,
                    currency,
                    attributes,
                }
            },
        )
}

pub fn arb_survey() -> impl Strategy<Value = SurveyResponse> {
    (
        (
            arb_text(),
            any::<i64>(),
            arb_text(),
            arb_text(),
            arb_channel(),
            arb_text(),
        ),
        (
            prop::sample::select(SurveyMetric::ALL.to_vec()),
            prop_oneof![-2i32..13, any::<i32>()],
            arb_opt_text(),
            arb_opt_text(),
            arb_opt_text(),
        ),
    )
        .prop_map(
            |(
                (response_id, submitted_at, customer_id, segment, channel, touchpoint),
                (metric, score, comment, language, case_id),
            )| {
                SurveyResponse {
                    response_id,
                    submitted_at,
                    customer_id,
                    segment,
                    channel,
                    touchpoint,
                    metric,
                    score,
                    comment,
                    language,
                    case_id,
                }
            },
        )
}
