//! Round trips in both wire formats for both record types, and proof that the hand-written
//! encoder writes exactly apache-avro's bytes.

mod common;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::Schema;
use common::*;
use cxpulse_avro::{
    encode_survey_body, encode_touchpoint_body, parse_header, DecodePath, Decoder, EncodeError,
    Encoder, RecordKind, SchemaRef, SchemaRegistry, WireFormat, SURVEY_V1_SCHEMA_ID,
    TOUCHPOINT_V1_SCHEMA_ID,
};
use cxpulse_core::{Amount, CxEvent, SurveyMetric};
use proptest::prelude::*;

fn decoders() -> [Decoder; 2] {
    let registry = SchemaRegistry::new();
    [
        Decoder::new(registry.clone()),
        Decoder::new(registry).with_path(DecodePath::Generic),
    ]
}

fn encoders() -> [Encoder; 2] {
    [Encoder::confluent(), Encoder::single_object()]
}

#[test]
fn touchpoints_round_trip_in_both_formats_and_both_paths() {
    for event in [purchase(), support_reply()] {
        for encoder in encoders() {
            let mut payload = Vec::new();
            encoder.encode_touchpoint(&event, &mut payload).unwrap();
            for decoder in decoders() {
                let decoded = decoder.decode_touchpoint(&payload).unwrap();
                assert_eq!(
                    decoded,
                    event,
                    "{:?} / {:?}",
                    encoder.format(),
                    decoder.path()
                );
                assert_eq!(
                    decoder.decode(RecordKind::Touchpoint, &payload).unwrap(),
                    CxEvent::Touchpoint(event.clone())
                );
                assert_eq!(
                    decoder.decode_any(&payload).unwrap(),
                    CxEvent::Touchpoint(event.clone())
                );
            }
        }
    }
}

#[test]
fn surveys_round_trip_in_both_formats_and_both_paths() {
    let responses = [
        survey(SurveyMetric::Nps, 9, Some("great"), Some("en")),
        survey(SurveyMetric::Csat, 1, None, None),
        survey(SurveyMetric::Ces, 7, Some(""), None),
    ];
    for response in responses {
        for encoder in encoders() {
            let mut payload = Vec::new();
            encoder.encode_survey(&response, &mut payload);
            for decoder in decoders() {
                assert_eq!(decoder.decode_survey(&payload).unwrap(), response);
                assert_eq!(
                    decoder.decode(RecordKind::Survey, &payload).unwrap(),
                    CxEvent::Survey(response.clone())
                );
                assert_eq!(
                    decoder.decode_any(&payload).unwrap(),
                    CxEvent::Survey(response.clone())
                );
            }
        }
    }
}

#[test]
fn comments_in_any_script_round_trip_byte_exact() {
    for (language, comment) in COMMENTS {
        let response = survey(SurveyMetric::Csat, 5, Some(comment), Some(language));
        for encoder in encoders() {
            let mut payload = Vec::new();
            encoder.encode_survey(&response, &mut payload);
            // The UTF-8 bytes are on the wire unchanged …
            assert!(
                payload
                    .windows(comment.len())
                    .any(|w| w == comment.as_bytes()),
                "{comment:?} is not on the wire verbatim"
            );
            for decoder in decoders() {
                let decoded = decoder.decode_survey(&payload).unwrap();
                // … and come back byte for byte.
                assert_eq!(
                    decoded.comment.as_deref().map(str::as_bytes),
                    Some(comment.as_bytes())
                );
                assert_eq!(decoded.language.as_deref(), Some(language));
            }
        }
    }
}

#[test]
fn headers_name_the_current_schemas() {
    let mut c = Vec::new();
    Encoder::confluent()
        .encode_touchpoint(&purchase(), &mut c)
        .unwrap();
    assert_eq!(&c[..5], &[0, 0, 0, 0, 1]);
    assert_eq!(
        parse_header(&c).unwrap().schema,
        SchemaRef::Id(TOUCHPOINT_V1_SCHEMA_ID)
    );

    let mut s = Vec::new();
    Encoder::single_object().encode_survey(&survey(SurveyMetric::Nps, 3, None, None), &mut s);
    assert_eq!(&s[..2], &[0xC3, 0x01]);
    let header = parse_header(&s).unwrap();
    assert_eq!(header.format, WireFormat::SingleObject);
    assert_eq!(
        header.schema,
        SchemaRef::Fingerprint(RecordKind::Survey.reader_fingerprint())
    );
    assert_eq!(
        &s[2..10],
        &RecordKind::Survey.reader_fingerprint().to_le_bytes()
    );

    let mut ids = Vec::new();
    Encoder::confluent()
        .with_schema_ids(7, 8)
        .encode_survey(&survey(SurveyMetric::Nps, 3, None, None), &mut ids);
    assert_eq!(&ids[..5], &[0, 0, 0, 0, 8]);
    assert_eq!(SURVEY_V1_SCHEMA_ID, 2);
}

#[test]
fn confluent_payload_under_a_re_registered_id_takes_the_same_path() {
    let registry = SchemaRegistry::new();
    let w = registry
        .register(4242, RecordKind::Touchpoint.reader_schema_json())
        .unwrap();
    assert!(w.is_reader_identical());
    let decoder = Decoder::new(registry);
    let mut payload = Vec::new();
    Encoder::confluent()
        .with_schema_ids(4242, 4243)
        .encode_touchpoint(&purchase(), &mut payload)
        .unwrap();
    assert_eq!(decoder.decode_touchpoint(&payload).unwrap(), purchase());
}

#[test]
fn attributes_come_back_sorted_with_the_last_duplicate() {
    let mut event = purchase();
    event.attributes = vec![
        ("z".into(), "1".into()),
        ("a".into(), "first".into()),
        ("m".into(), "x".into()),
        ("a".into(), "second".into()),
    ];
    let mut payload = Vec::new();
    Encoder::confluent()
        .encode_touchpoint(&event, &mut payload)
        .unwrap();
    for decoder in decoders() {
        let decoded = decoder.decode_touchpoint(&payload).unwrap();
        assert_eq!(
            decoded.attributes,
            vec![
                ("a".to_string(), "second".to_string()),
                ("m".to_string(), "x".to_string()),
                ("z".to_string(), "1".to_string()),
            ]
        );
    }
}

#[test]
fn amounts_outside_decimal_18_4_are_refused_by_the_encoder() {
    let mut event = purchase();
    event.amount = Some(Amount::from_units(1_000_000_000_000_000_000));
    let mut out = vec![9u8];
    assert_eq!(
        Encoder::confluent().encode_touchpoint(&event, &mut out),
        Err(EncodeError::AmountOutOfRange {
            units: 1_000_000_000_000_000_000
        })
    );
    assert_eq!(out, vec![9u8], "nothing is appended on error");
    event.amount = Some(Amount::from_units(-999_999_999_999_999_999));
    let payload = Encoder::single_object()
        .to_vec(&CxEvent::Touchpoint(event.clone()))
        .unwrap();
    assert_eq!(
        Decoder::default().decode_touchpoint(&payload).unwrap(),
        event
    );
}

#[test]
fn encoder_bodies_equal_apache_avro_for_the_samples() {
    for event in [purchase(), support_reply()] {
        let mut mine = Vec::new();
        encode_touchpoint_body(&event, &mut mine).unwrap();
        if event.attributes.len() <= 1 {
            assert_eq!(mine, apache_touchpoint(&event));
        } else {
            assert_same_apache_value(RecordKind::Touchpoint, &mine, &apache_touchpoint(&event));
        }
    }
    let mut one = purchase();
    one.attributes.truncate(1);
    let mut mine = Vec::new();
    encode_touchpoint_body(&one, &mut mine).unwrap();
    assert_eq!(mine, apache_touchpoint(&one));
    for (language, comment) in COMMENTS {
        let r = survey(SurveyMetric::Nps, 10, Some(comment), Some(language));
        let mut mine = Vec::new();
        encode_survey_body(&r, &mut mine);
        assert_eq!(mine, apache_survey(&r));
    }
}

/// apache-avro writes maps in `HashMap` order, so bodies with 2+ attributes can differ in entry
/// order only: then both must be the same length and decode to the same apache-avro value.
fn assert_same_apache_value(kind: RecordKind, mine: &[u8], theirs: &[u8]) {
    assert_eq!(mine.len(), theirs.len());
    let schema = Schema::parse_str(kind.reader_schema_json()).unwrap();
    let reader = GenericDatumReader::builder(&schema).build().unwrap();
    let a = reader.read_value(&mut &mine[..]).unwrap();
    let b = reader.read_value(&mut &theirs[..]).unwrap();
    assert_eq!(a, b);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encoder_equals_apache_avro_touchpoint(event in arb_touchpoint()) {
        let mut mine = Vec::new();
        encode_touchpoint_body(&event, &mut mine).unwrap();
        let distinct_keys = normalized(event.clone()).attributes.len();
        if event.attributes.len() <= 1 {
            prop_assert_eq!(&mine, &apache_touchpoint(&event));
        } else if distinct_keys == event.attributes.len() {
            assert_same_apache_value(RecordKind::Touchpoint, &mine, &apache_touchpoint(&event));
        }
        // And every encoding decodes back (attributes normalized) on both paths and formats.
        for encoder in encoders() {
            let payload = encoder.to_vec(&CxEvent::Touchpoint(event.clone())).unwrap();
            for decoder in decoders() {
                prop_assert_eq!(decoder.decode_touchpoint(&payload).unwrap(), normalized(event.clone()));
            }
        }
    }

    #[test]
    fn encoder_equals_apache_avro_survey(response in arb_survey()) {
        let mut mine = Vec::new();
        encode_survey_body(&response, &mut mine);
        prop_assert_eq!(&mine, &apache_survey(&response));
        for encoder in encoders() {
            let payload = encoder.to_vec(&CxEvent::Survey(response.clone())).unwrap();
            for decoder in decoders() {
                prop_assert_eq!(&decoder.decode_survey(&payload).unwrap(), &response);
            }
        }
    }
}
