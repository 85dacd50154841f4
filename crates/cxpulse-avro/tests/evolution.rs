//! Schema evolution: older (v0) and newer (v2) writers decode with the v1 reader, the schema
//! files obey the compatibility rules of schemas/README.md, and the registry refuses writer
//! schemas the reader cannot resolve.

mod common;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::types::Value;
use apache_avro::{Decimal, Schema};
use common::*;
use cxpulse_avro::{
    schema_fingerprint, DecodeError, DecodePath, Decoder, RecordKind, RegistryError,
    SchemaRegistry, SURVEY_RESPONSE_SCHEMA, TOUCHPOINT_EVENT_SCHEMA,
};
use cxpulse_core::{Amount, Channel, SurveyMetric, TouchpointKind};

fn s(v: &str) -> Value {
    Value::String(v.into())
}
fn null() -> Value {
    Value::Union(0, Box::new(Value::Null))
}
fn some(v: Value) -> Value {
    Value::Union(1, Box::new(v))
}
fn rec(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn touchpoint_v0_value() -> Value {
    rec(vec![
        ("event_id", s("evt-old")),
        ("occurred_at", Value::TimestampMillis(T0)),
        ("customer_id", s("cust-1")),
        ("segment", s("consumer")),
        ("channel", Value::Enum(3, "phone".into())),
        ("touchpoint", s("support")),
        ("kind", Value::Enum(2, "contact_opened".into())),
        ("case_id", some(s("case-1"))),
    ])
}

fn touchpoint_v2_value(amount_bytes: Vec<u8>) -> Value {
    rec(vec![
        ("event_id", s("evt-new")),
        ("occurred_at", Value::TimestampMillis(T0)),
        ("customer_id", s("cust-2")),
        ("segment", s("smb")),
        ("channel", Value::Enum(8, "kiosk".into())),
        ("touchpoint", s("returns")),
        ("journey_id", some(s("journey-9"))),
        ("kind", Value::Enum(7, "refund".into())),
        ("case_id", null()),
        ("amount", some(Value::Decimal(Decimal::from(amount_bytes)))),
        ("currency", some(s("RON"))),
        (
            "attributes",
            Value::Map([("reason".to_string(), s("damaged"))].into_iter().collect()),
        ),
        ("latency_ms", some(Value::Long(1234))),
    ])
}

fn survey_v0_value() -> Value {
    rec(vec![
        ("response_id", s("resp-old")),
        ("submitted_at", Value::TimestampMillis(T0)),
        ("customer_id", s("cust-1")),
        ("segment", s("consumer")),
        ("channel", Value::Enum(0, "web".into())),
        ("touchpoint", s("checkout")),
        ("metric", Value::Enum(0, "NPS".into())),
        ("score", Value::Int(10)),
        ("comment", some(s("خدمات عالی بود"))),
    ])
}

pub fn survey_v2_value(channel: (u32, &str), metric: (u32, &str), score: i32) -> Value {
    rec(vec![
        ("response_id", s("resp-new")),
        ("submitted_at", Value::TimestampMillis(T0)),
        ("customer_id", s("cust-2")),
        ("segment", s("smb")),
        ("channel", Value::Enum(channel.0, channel.1.into())),
        ("touchpoint", s("store-visit")),
        ("metric", Value::Enum(metric.0, metric.1.into())),
        ("score", Value::Int(score)),
        ("comment", some(s("บริการดีมาก"))),
        ("sentiment", some(Value::Double(0.8))),
        ("language", some(s("th"))),
        ("case_id", null()),
        ("survey_id", some(s("survey-2024-q2"))),
    ])
}

fn both_paths(registry: &SchemaRegistry) -> [Decoder; 2] {
    [
        Decoder::new(registry.clone()),
        Decoder::new(registry.clone()).with_path(DecodePath::Generic),
    ]
}

fn framings(id: u32, schema_json: &str, body: &[u8]) -> [Vec<u8>; 2] {
    [
        confluent(id, body),
        single_object(schema_fingerprint(schema_json).unwrap(), body),
    ]
}

#[test]
fn v0_touchpoints_decode_with_defaults() {
    let registry = registry_with_history();
    let body = apache_encode(TOUCHPOINT_V0, touchpoint_v0_value());
    for payload in framings(TOUCHPOINT_V0_ID, TOUCHPOINT_V0, &body) {
        for decoder in both_paths(&registry) {
            let e = decoder.decode_touchpoint(&payload).unwrap();
            assert_eq!(e.event_id, "evt-old");
            assert_eq!(e.occurred_at, T0);
            assert_eq!(e.channel, Channel::Phone);
            assert_eq!(e.kind, TouchpointKind::ContactOpened);
            assert_eq!(e.case_id.as_deref(), Some("case-1"));
            // Fields v0 did not have take the v1 defaults.
            assert_eq!(e.amount, None);
            assert_eq!(e.currency, None);
            assert!(e.attributes.is_empty());
        }
    }
}

#[test]
fn v0_surveys_decode_with_defaults() {
    let registry = registry_with_history();
    let body = apache_encode(SURVEY_V0, survey_v0_value());
    for payload in framings(SURVEY_V0_ID, SURVEY_V0, &body) {
        for decoder in both_paths(&registry) {
            let r = decoder.decode_survey(&payload).unwrap();
            assert_eq!(r.response_id, "resp-old");
            assert_eq!(r.metric, SurveyMetric::Nps);
            assert_eq!(r.score, 10);
            assert_eq!(r.comment.as_deref(), Some("خدمات عالی بود"));
            assert_eq!(r.language, None);
            assert_eq!(r.case_id, None);
        }
    }
}

#[test]
fn v2_touchpoints_decode_ignoring_new_fields_and_mapping_new_symbols() {
    let registry = registry_with_history();
    // 12.5000 as the minimal two's complement (3 bytes), as Java writes it, and padded to 8.
    for amount_bytes in [
        decimal_bytes(125_000, None),
        decimal_bytes(125_000, Some(8)),
    ] {
        let body = apache_encode(TOUCHPOINT_V2, touchpoint_v2_value(amount_bytes));
        for payload in framings(TOUCHPOINT_V2_ID, TOUCHPOINT_V2, &body) {
            for decoder in both_paths(&registry) {
                let e = decoder.decode_touchpoint(&payload).unwrap();
                assert_eq!(e.event_id, "evt-new");
                assert_eq!(e.channel, Channel::Unknown, "kiosk is not a v1 channel");
                assert_eq!(e.kind, TouchpointKind::Other, "refund is not a v1 kind");
                assert_eq!(e.touchpoint, "returns");
                assert_eq!(e.amount, Some(Amount::from_units(125_000)));
                assert_eq!(e.currency.as_deref(), Some("RON"));
                assert_eq!(
                    e.attributes,
                    vec![("reason".to_string(), "damaged".to_string())]
                );
            }
        }
    }
}

#[test]
fn v2_surveys_decode_ignoring_new_fields_and_mapping_new_symbols() {
    let registry = registry_with_history();
    let body = apache_encode(SURVEY_V2, survey_v2_value((8, "kiosk"), (4, "CSI"), 80));
    for payload in framings(SURVEY_V2_ID, SURVEY_V2, &body) {
        for decoder in both_paths(&registry) {
            let r = decoder.decode_survey(&payload).unwrap();
            assert_eq!(r.channel, Channel::Unknown);
            assert_eq!(r.metric, SurveyMetric::Unknown, "CSI is not a v1 metric");
            assert_eq!(r.score, 80);
            assert_eq!(r.comment.as_deref(), Some("บริการดีมาก"));
            assert_eq!(r.language.as_deref(), Some("th"));
            assert_eq!(r.case_id, None);
        }
    }
    // Known symbols written by v2 keep their meaning.
    let body = apache_encode(SURVEY_V2, survey_v2_value((4, "chat"), (1, "CSAT"), 4));
    let r = Decoder::new(registry)
        .decode_survey(&confluent(SURVEY_V2_ID, &body))
        .unwrap();
    assert_eq!(
        (r.channel, r.metric, r.score),
        (Channel::Chat, SurveyMetric::Csat, 4)
    );
}

#[test]
fn history_schemas_take_the_generic_path_and_v1_the_fast_path() {
    let registry = registry_with_history();
    for id in [
        TOUCHPOINT_V0_ID,
        SURVEY_V0_ID,
        TOUCHPOINT_V2_ID,
        SURVEY_V2_ID,
    ] {
        assert!(
            !registry.by_id(id).unwrap().is_reader_identical(),
            "id {id}"
        );
    }
    for kind in RecordKind::ALL {
        let w = registry.by_id(kind.builtin_schema_id()).unwrap();
        assert!(w.is_reader_identical());
        assert_eq!(w.kind(), kind);
        assert_eq!(w.fingerprint(), kind.reader_fingerprint());
    }
}

#[test]
fn a_doc_or_default_only_change_is_still_the_reader_schema() {
    let registry = SchemaRegistry::new();
    let edited = TOUCHPOINT_EVENT_SCHEMA.replace("Unique id of the event", "The event's unique id");
    assert_ne!(edited, TOUCHPOINT_EVENT_SCHEMA);
    let w = registry.register(300, &edited).unwrap();
    assert!(w.is_reader_identical());
    assert_eq!(w.fingerprint(), RecordKind::Touchpoint.reader_fingerprint());
}

#[test]
fn same_canonical_form_with_other_logical_types_is_refused() {
    // timestamp-micros has the canonical form (and fingerprint) of timestamp-millis, but other
    // meaning: it must not share the fingerprint, and never take the fast path.
    let registry = SchemaRegistry::new();
    let micros = TOUCHPOINT_EVENT_SCHEMA.replace("timestamp-millis", "timestamp-micros");
    assert_eq!(
        registry.register(301, &micros).unwrap_err(),
        RegistryError::FingerprintConflict {
            id: 301,
            fingerprint: RecordKind::Touchpoint.reader_fingerprint()
        }
    );
}

#[test]
fn registry_refuses_schemas_the_reader_cannot_resolve() {
    let registry = SchemaRegistry::new();
    // Not JSON / not a schema.
    assert!(matches!(
        registry.register(10, "{not json"),
        Err(RegistryError::InvalidSchema { id: 10, .. })
    ));
    // Not a record.
    assert_eq!(
        registry.register(11, r#""string""#).unwrap_err(),
        RegistryError::NotARecord {
            id: 11,
            found: "string".into()
        }
    );
    // A record cxpulse does not read (other name or other namespace).
    let renamed = TOUCHPOINT_EVENT_SCHEMA.replace("\"TouchpointEvent\"", "\"Touchpoint\"");
    assert_eq!(
        registry.register(12, &renamed).unwrap_err(),
        RegistryError::UnknownRecord {
            id: 12,
            name: "io.cxpulse.v1.Touchpoint".into()
        }
    );
    let moved = SURVEY_RESPONSE_SCHEMA.replace("\"io.cxpulse.v1\"", "\"io.cxpulse.v2\"");
    assert!(matches!(
        registry.register(13, &moved),
        Err(RegistryError::UnknownRecord { id: 13, .. })
    ));
    // A type change the reader cannot resolve: score as string.
    let score_string = SURVEY_RESPONSE_SCHEMA.replace(r#""type": "int""#, r#""type": "string""#);
    assert_ne!(score_string, SURVEY_RESPONSE_SCHEMA);
    assert!(matches!(
        registry.register(14, &score_string),
        Err(RegistryError::Incompatible {
            id: 14,
            kind: RecordKind::Survey,
            ..
        })
    ));
    // A removed field the reader has no default for.
    let mut json: serde_json::Value = serde_json::from_str(TOUCHPOINT_EVENT_SCHEMA).unwrap();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "customer_id");
    let err = registry.register(15, &json.to_string()).unwrap_err();
    assert!(
        matches!(err, RegistryError::Incompatible { id: 15, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("customer_id"), "{err}");
    // None of the refused schemas were registered.
    assert_eq!(registry.ids(), vec![1, 2]);
}

#[test]
fn registry_ids_are_stable() {
    let registry = registry_with_history();
    // Same schema, same id: a no-op.
    registry.register(TOUCHPOINT_V0_ID, TOUCHPOINT_V0).unwrap();
    // Another schema under a taken id.
    assert_eq!(
        registry.register(TOUCHPOINT_V0_ID, SURVEY_V0).unwrap_err(),
        RegistryError::IdConflict {
            id: TOUCHPOINT_V0_ID
        }
    );
    assert_eq!(
        registry.register(1, SURVEY_RESPONSE_SCHEMA).unwrap_err(),
        RegistryError::IdConflict { id: 1 }
    );
    assert_eq!(registry.ids(), vec![1, 2, 100, 101, 200, 201]);
    // The registrations are shared by every clone.
    let clone = registry.clone();
    clone.register(400, TOUCHPOINT_V2).unwrap();
    assert!(registry.by_id(400).is_some());
    assert_eq!(
        registry
            .by_fingerprint(schema_fingerprint(TOUCHPOINT_V2).unwrap())
            .unwrap()
            .kind(),
        RecordKind::Touchpoint
    );
}

#[test]
fn an_empty_registry_knows_nothing_until_told() {
    let registry = SchemaRegistry::empty();
    let mut payload = Vec::new();
    cxpulse_avro::Encoder::confluent()
        .encode_touchpoint(&purchase(), &mut payload)
        .unwrap();
    let decoder = Decoder::new(registry.clone());
    assert_eq!(
        decoder.decode_touchpoint(&payload).unwrap_err(),
        DecodeError::UnknownSchemaId { id: 1 }
    );
    registry.register(1, TOUCHPOINT_EVENT_SCHEMA).unwrap();
    assert_eq!(decoder.decode_touchpoint(&payload).unwrap(), purchase());
}

// ----------------------------------------------------------------------------------------------
// The schema files themselves obey the README's rules.

fn parse(json: &str) -> Schema {
    Schema::parse_str(json).unwrap()
}

fn can_read(writer: &str, reader: &str) -> bool {
    matches!(
        SchemaCompatibility::can_read(&parse(writer), &parse(reader)),
        Ok(Compatibility::Full)
    )
}

#[test]
fn schema_files_are_backward_transitive_and_forward_compatible() {
    for (v0, v1, v2) in [
        (TOUCHPOINT_V0, TOUCHPOINT_EVENT_SCHEMA, TOUCHPOINT_V2),
        (SURVEY_V0, SURVEY_RESPONSE_SCHEMA, SURVEY_V2),
    ] {
        // BACKWARD_TRANSITIVE: every version reads the data of every older one.
        assert!(can_read(v0, v1), "v1 reads v0");
        assert!(can_read(v0, v2), "v2 reads v0");
        assert!(can_read(v1, v2), "v2 reads v1");
        // FORWARD: every version's data is read by the one before it.
        assert!(can_read(v1, v0), "v0 reads v1");
        assert!(can_read(v2, v1), "v1 reads v2");
    }
}

#[test]
fn schema_files_follow_the_evolution_rules() {
    for (older, newer) in [
        (TOUCHPOINT_V0, TOUCHPOINT_EVENT_SCHEMA),
        (TOUCHPOINT_EVENT_SCHEMA, TOUCHPOINT_V2),
        (SURVEY_V0, SURVEY_RESPONSE_SCHEMA),
        (SURVEY_RESPONSE_SCHEMA, SURVEY_V2),
    ] {
        let old: serde_json::Value = serde_json::from_str(older).unwrap();
        let new: serde_json::Value = serde_json::from_str(newer).unwrap();
        assert_eq!(old["name"], new["name"], "records are never renamed");
        assert_eq!(
            old["namespace"], new["namespace"],
            "records never change namespace"
        );
        let fields = |v: &serde_json::Value| v["fields"].as_array().unwrap().clone();
        let (old_fields, new_fields) = (fields(&old), fields(&new));
        for f in &old_fields {
            let same = new_fields.iter().find(|n| n["name"] == f["name"]);
            let same = same.unwrap_or_else(|| panic!("field {} removed", f["name"]));
            // Enum symbols are only appended.
            if let Some(symbols) = f["type"]["symbols"].as_array() {
                let newer_symbols = same["type"]["symbols"].as_array().unwrap();
                assert_eq!(
                    &newer_symbols[..symbols.len()],
                    &symbols[..],
                    "symbols of {}",
                    f["name"]
                );
            }
        }
        for f in &new_fields {
            if !old_fields.iter().any(|o| o["name"] == f["name"]) {
                assert!(
                    f.get("default").is_some(),
                    "new field {} has a default",
                    f["name"]
                );
                let optional = f["type"].as_array().is_some_and(|t| t[0] == "null")
                    || f["type"]["type"] == "map";
                assert!(optional, "new field {} is optional", f["name"]);
            }
        }
    }
    // Every enum of the current schemas has the default readers rely on, and every field a doc.
    for json in [TOUCHPOINT_EVENT_SCHEMA, SURVEY_RESPONSE_SCHEMA] {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["namespace"], "io.cxpulse.v1");
        for f in v["fields"].as_array().unwrap() {
            assert!(
                f["doc"].as_str().is_some_and(|d| !d.is_empty()),
                "{} has a doc",
                f["name"]
            );
            if f["type"]["type"] == "enum" {
                let default = f["type"]["default"].as_str().unwrap();
                assert!(f["type"]["symbols"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s == default));
            }
        }
    }
}

#[test]
fn v1_data_is_readable_by_the_old_and_the_new_readers() {
    // FORWARD in practice: a v0 consumer still running reads what v1 producers write; and the
    // v2 reader (the next version) reads v1 data.
    let mut event = purchase();
    event.amount = Some(Amount::from_units(1_299_900));
    let mut body = Vec::new();
    cxpulse_avro::encode_touchpoint_body(&event, &mut body).unwrap();
    let v1 = parse(TOUCHPOINT_EVENT_SCHEMA);
    for reader_json in [TOUCHPOINT_V0, TOUCHPOINT_V2] {
        let reader = parse(reader_json);
        let value = GenericDatumReader::builder(&v1)
            .build()
            .unwrap()
            .read_value(&mut &body[..])
            .unwrap();
        // (apache-avro resolves a decimal only when it has >= 8 bytes for precision 18, see
        // `apache_avro_resolution_needs_padded_decimals`; v0 has no amount at all.)
        let value = match value {
            Value::Record(fields) => Value::Record(
                fields
                    .into_iter()
                    .map(|(k, v)| match (k.as_str(), v) {
                        ("amount", Value::Union(1, _)) => (
                            k,
                            Value::Union(
                                1,
                                Box::new(Value::Decimal(Decimal::from(decimal_bytes(
                                    1_299_900,
                                    Some(8),
                                )))),
                            ),
                        ),
                        (_, v) => (k, v),
                    })
                    .collect(),
            ),
            other => other,
        };
        let resolved = value.resolve(&reader).unwrap();
        let Value::Record(fields) = resolved else {
            panic!("record expected")
        };
        assert_eq!(fields[0], ("event_id".to_string(), s("evt-0001")));
        if reader_json == TOUCHPOINT_V2 {
            assert!(fields.contains(&("journey_id".to_string(), null())));
        } else {
            assert_eq!(fields.len(), 8);
        }
    }
}

#[test]
fn apache_avro_resolution_needs_padded_decimals() {
    // Why the generic path sign-extends decimals before resolving (see src/generic.rs): plain
    // apache-avro 0.22 refuses a precision-18 decimal written in fewer than 8 bytes, which is
    // how Java writes small amounts. If this test starts failing, apache-avro fixed it and the
    // work-around in `generic::widen_decimals` can go.
    let body = apache_encode(
        TOUCHPOINT_V2,
        touchpoint_v2_value(decimal_bytes(125_000, None)),
    );
    let writer = parse(TOUCHPOINT_V2);
    let reader = parse(TOUCHPOINT_EVENT_SCHEMA);
    let plain = GenericDatumReader::builder(&writer)
        .reader_schema(&reader)
        .build()
        .unwrap()
        .read_value(&mut &body[..]);
    assert!(plain.is_err(), "{plain:?}");
    // cxpulse-avro decodes it.
    let decoded = Decoder::new(registry_with_history())
        .decode_touchpoint(&confluent(TOUCHPOINT_V2_ID, &body))
        .unwrap();
    assert_eq!(decoded.amount, Some(Amount::from_units(125_000)));
}
