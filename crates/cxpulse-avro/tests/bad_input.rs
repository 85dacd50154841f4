//! Every kind of bad input gives its specific, typed error — on the fast path, and (where the
//! generic path can tell) on the apache-avro path too — and never a panic.

mod common;

use common::*;
use cxpulse_avro::{DecodeError, DecodePath, Decoder, Encoder, RecordKind, SchemaRegistry};
use cxpulse_core::{CxEvent, SurveyMetric};

/// Zig-zag varint.
fn zz(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    while z > 0x7f {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
    out
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut out = zz(s.len() as i64);
    out.extend_from_slice(s);
    out
}

/// The fields of a valid touchpoint body, one encoded field per element.
fn touchpoint_fields() -> Vec<Vec<u8>> {
    vec![
        string(b"evt-1"),                                    // event_id
        zz(T0),                                              // occurred_at
        string(b"cust-1"),                                   // customer_id
        string(b"smb"),                                      // segment
        zz(4),                                               // channel: chat
        string(b"support"),                                  // touchpoint
        zz(3),                                               // kind: agent_replied
        [zz(1), string(b"case-1")].concat(),                 // case_id
        [zz(1), string(&[0x30, 0x39])].concat(),             // amount: 12345 units
        [zz(1), string(b"EUR")].concat(),                    // currency
        [zz(1), string(b"k"), string(b"v"), zz(0)].concat(), // attributes
    ]
}

/// The fields of a valid survey body.
fn survey_fields() -> Vec<Vec<u8>> {
    vec![
        string(b"resp-1"),                         // response_id
        zz(T0),                                    // submitted_at
        string(b"cust-1"),                         // customer_id
        string(b"smb"),                            // segment
        zz(0),                                     // channel: web
        string(b"checkout"),                       // touchpoint
        zz(0),                                     // metric: NPS
        zz(9),                                     // score
        [zz(1), string("🙂".as_bytes())].concat(), // comment
        zz(0),                                     // language: null
        zz(0),                                     // case_id: null
    ]
}

fn with(mut fields: Vec<Vec<u8>>, index: usize, replacement: Vec<u8>) -> Vec<u8> {
    fields[index] = replacement;
    fields.concat()
}

/// Offset of field `index` in a Confluent payload of `fields`.
fn offset_of(fields: &[Vec<u8>], index: usize) -> usize {
    5 + fields[..index].iter().map(Vec::len).sum::<usize>()
}

fn fast() -> Decoder {
    Decoder::default()
}

fn generic() -> Decoder {
    Decoder::default().with_path(DecodePath::Generic)
}

fn tp(payload: &[u8]) -> (Result<CxEvent, DecodeError>, Result<CxEvent, DecodeError>) {
    (
        fast().decode(RecordKind::Touchpoint, payload),
        generic().decode(RecordKind::Touchpoint, payload),
    )
}

fn sv(payload: &[u8]) -> (Result<CxEvent, DecodeError>, Result<CxEvent, DecodeError>) {
    (
        fast().decode(RecordKind::Survey, payload),
        generic().decode(RecordKind::Survey, payload),
    )
}

#[test]
fn the_hand_built_bodies_are_valid() {
    let (f, g) = tp(&confluent(1, &touchpoint_fields().concat()));
    assert_eq!(f.unwrap(), g.unwrap());
    let (f, g) = sv(&confluent(2, &survey_fields().concat()));
    let f = f.unwrap();
    assert_eq!(f, g.unwrap());
    let CxEvent::Survey(r) = f else { panic!() };
    assert_eq!(
        (r.metric, r.score, r.comment.as_deref()),
        (SurveyMetric::Nps, 9, Some("🙂"))
    );
}

#[test]
fn empty_payload() {
    for decoder in [fast(), generic()] {
        assert_eq!(
            decoder.decode_touchpoint(&[]),
            Err(DecodeError::EmptyPayload)
        );
        assert_eq!(decoder.decode_survey(&[]), Err(DecodeError::EmptyPayload));
        assert_eq!(decoder.decode_any(&[]), Err(DecodeError::EmptyPayload));
    }
}

#[test]
fn bad_magic() {
    let body = touchpoint_fields().concat();
    for byte in [0x01u8, 0x7b /* '{' JSON */, 0xC2, 0xff] {
        let mut payload = vec![byte];
        payload.extend_from_slice(&body);
        assert_eq!(
            fast().decode_touchpoint(&payload),
            Err(DecodeError::UnknownMagic { byte })
        );
        assert_eq!(
            generic().decode_touchpoint(&payload),
            Err(DecodeError::UnknownMagic { byte })
        );
    }
    let mut payload = single_object(RecordKind::Touchpoint.reader_fingerprint(), &body);
    payload[1] = 0x02;
    let err = fast().decode_touchpoint(&payload).unwrap_err();
    assert_eq!(err, DecodeError::UnknownSingleObjectVersion { byte: 0x02 });
    assert!(err.to_string().contains("0x02"), "{err}");
}

#[test]
fn unknown_schema_id() {
    let payload = confluent(77, &touchpoint_fields().concat());
    for decoder in [fast(), generic()] {
        let err = decoder.decode_touchpoint(&payload).unwrap_err();
        assert_eq!(err, DecodeError::UnknownSchemaId { id: 77 });
        assert!(err.to_string().contains("77"));
    }
}

#[test]
fn unknown_fingerprint() {
    let fingerprint = 0x0123_4567_89ab_cdef;
    let payload = single_object(fingerprint, &touchpoint_fields().concat());
    for decoder in [fast(), generic()] {
        let err = decoder.decode_any(&payload).unwrap_err();
        assert_eq!(err, DecodeError::UnknownFingerprint { fingerprint });
        assert!(err.to_string().contains("0x0123456789abcdef"), "{err}");
    }
}

#[test]
fn wrong_record() {
    let payload = confluent(1, &touchpoint_fields().concat());
    for decoder in [fast(), generic()] {
        let err = decoder.decode_survey(&payload).unwrap_err();
        assert_eq!(
            err,
            DecodeError::WrongRecord {
                expected: RecordKind::Survey,
                found: RecordKind::Touchpoint
            }
        );
        assert!(
            err.to_string().contains("SurveyResponse")
                && err.to_string().contains("TouchpointEvent")
        );
    }
}

fn assert_truncated(result: Result<CxEvent, DecodeError>, cut: usize, what: &str) {
    match result {
        Err(DecodeError::Truncated { offset, .. }) => {
            assert!(offset <= cut, "{what}: offset {offset} > cut {cut}")
        }
        other => panic!("{what}: cut at {cut}: expected Truncated, got {other:?}"),
    }
}

#[test]
fn truncated_at_every_byte_of_valid_records() {
    let mut payloads: Vec<(RecordKind, Vec<u8>)> = Vec::new();
    for encoder in [Encoder::confluent(), Encoder::single_object()] {
        for event in [purchase(), support_reply()] {
            payloads.push((
                RecordKind::Touchpoint,
                encoder.to_vec(&CxEvent::Touchpoint(event)).unwrap(),
            ));
        }
        for (language, comment) in COMMENTS {
            let r = survey(SurveyMetric::Ces, 2, Some(comment), Some(language));
            payloads.push((
                RecordKind::Survey,
                encoder.to_vec(&CxEvent::Survey(r)).unwrap(),
            ));
        }
        payloads.push((
            RecordKind::Survey,
            encoder
                .to_vec(&CxEvent::Survey(survey(SurveyMetric::Nps, 0, None, None)))
                .unwrap(),
        ));
    }
    payloads.push((
        RecordKind::Touchpoint,
        confluent(1, &touchpoint_fields().concat()),
    ));
    for (kind, payload) in &payloads {
        for decoder in [fast(), generic()] {
            assert!(decoder.decode(*kind, payload).is_ok());
            assert_eq!(
                decoder.decode(*kind, &payload[..0]),
                Err(DecodeError::EmptyPayload)
            );
            for cut in 1..payload.len() {
                let what = format!("{kind} {:?}", decoder.path());
                assert_truncated(decoder.decode(*kind, &payload[..cut]), cut, &what);
            }
        }
    }
}

#[test]
fn truncation_errors_name_the_field_and_offset() {
    let fields = touchpoint_fields();
    let payload = confluent(1, &fields.concat());
    // Cut inside `segment`'s bytes.
    let cut = offset_of(&fields, 3) + 2;
    assert_eq!(
        fast().decode_touchpoint(&payload[..cut]),
        Err(DecodeError::Truncated {
            field: "segment",
            offset: offset_of(&fields, 3) + 1
        })
    );
    // Cut right before `attributes`.
    let cut = offset_of(&fields, 10);
    let err = fast().decode_touchpoint(&payload[..cut]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Truncated {
            field: "attributes",
            offset: cut
        }
    );
    assert!(
        err.to_string().contains("`attributes`")
            && err.to_string().contains(&format!("offset {cut}"))
    );
    // Inside the header.
    assert_eq!(
        fast().decode_touchpoint(&payload[..3]),
        Err(DecodeError::Truncated {
            field: "confluent schema id",
            offset: 1
        })
    );
}

#[test]
fn truncated_history_records_fail_on_the_generic_path() {
    // apache-avro on its own would decode a string cut by the end of input as null and a missing
    // union as its null branch; the generic path must not.
    let registry = registry_with_history();
    let decoder = Decoder::new(registry);
    let v0 = apache_encode(SURVEY_V0, survey_value_v0());
    let payload = confluent(SURVEY_V0_ID, &v0);
    assert!(decoder.decode_survey(&payload).is_ok());
    for cut in 1..payload.len() {
        assert_truncated(
            decoder.decode(RecordKind::Survey, &payload[..cut]),
            cut,
            "survey v0",
        );
    }
}

fn survey_value_v0() -> apache_avro::types::Value {
    use apache_avro::types::Value;
    Value::Record(vec![
        ("response_id".into(), Value::String("r".into())),
        ("submitted_at".into(), Value::TimestampMillis(T0)),
        ("customer_id".into(), Value::String("c".into())),
        ("segment".into(), Value::String("s".into())),
        ("channel".into(), Value::Enum(1, "mobile_app".into())),
        ("touchpoint".into(), Value::String("t".into())),
        ("metric".into(), Value::Enum(1, "CSAT".into())),
        ("score".into(), Value::Int(5)),
        (
            "comment".into(),
            Value::Union(1, Box::new(Value::String("Mulțumesc".into()))),
        ),
    ])
}

#[test]
fn invalid_utf8() {
    let fields = touchpoint_fields();
    let payload = confluent(1, &with(fields.clone(), 0, string(&[b'e', 0xff, b'x'])));
    assert_eq!(
        fast().decode_touchpoint(&payload),
        Err(DecodeError::InvalidUtf8 {
            field: "event_id",
            offset: 5 + 1 + 1
        })
    );
    assert!(matches!(
        generic().decode_touchpoint(&payload),
        Err(DecodeError::Resolution(_))
    ));

    // A broken sequence inside a comment, after valid multi-byte text.
    let sf = survey_fields();
    let mut comment = "خدمات".as_bytes().to_vec();
    let valid = comment.len();
    comment.extend_from_slice(&[0xd8]); // a lead byte without its continuation
    let payload = confluent(2, &with(sf.clone(), 8, [zz(1), string(&comment)].concat()));
    let err = fast().decode_survey(&payload).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidUtf8 {
            field: "comment",
            offset: offset_of(&sf, 8) + 1 + 1 + valid
        }
    );
    assert!(err.to_string().contains("`comment`"));
    assert!(generic().decode_survey(&payload).is_err());

    // Map keys and values are checked too.
    let payload = confluent(
        1,
        &with(
            fields,
            10,
            [zz(1), string(&[0xc0, 0x80]), string(b"v"), zz(0)].concat(),
        ),
    );
    assert!(matches!(
        fast().decode_touchpoint(&payload),
        Err(DecodeError::InvalidUtf8 {
            field: "attributes key",
            ..
        })
    ));
    assert!(generic().decode_touchpoint(&payload).is_err());
}

#[test]
fn bad_union_index() {
    let fields = touchpoint_fields();
    for index in [2i64, -1, 1 << 40] {
        let payload = confluent(
            1,
            &with(fields.clone(), 7, [zz(index), string(b"case-1")].concat()),
        );
        assert_eq!(
            fast().decode_touchpoint(&payload),
            Err(DecodeError::BadUnionIndex {
                field: "case_id",
                index,
                offset: offset_of(&fields, 7)
            })
        );
        assert!(generic().decode_touchpoint(&payload).is_err());
    }
    let sf = survey_fields();
    let payload = confluent(2, &with(sf, 9, zz(3)));
    assert!(matches!(
        fast().decode_survey(&payload),
        Err(DecodeError::BadUnionIndex {
            field: "language",
            index: 3,
            ..
        })
    ));
}

#[test]
fn bad_enum_index() {
    let fields = touchpoint_fields();
    for (field, position, index) in [
        ("channel", 4, 8i64),
        ("channel", 4, -1),
        ("kind", 6, 7),
        ("kind", 6, 1 << 33),
    ] {
        let payload = confluent(1, &with(fields.clone(), position, zz(index)));
        assert_eq!(
            fast().decode_touchpoint(&payload),
            Err(DecodeError::BadEnumIndex {
                field,
                index,
                offset: offset_of(&fields, position)
            })
        );
        assert!(generic().decode_touchpoint(&payload).is_err());
    }
    let payload = confluent(2, &with(survey_fields(), 6, zz(4)));
    assert!(matches!(
        fast().decode_survey(&payload),
        Err(DecodeError::BadEnumIndex {
            field: "metric",
            index: 4,
            ..
        })
    ));
    assert!(generic().decode_survey(&payload).is_err());
}

#[test]
fn trailing_bytes() {
    for extra in [vec![0u8], vec![1, 2, 3]] {
        let mut body = touchpoint_fields().concat();
        let end = 5 + body.len();
        body.extend_from_slice(&extra);
        let payload = confluent(1, &body);
        let expected = DecodeError::TrailingBytes {
            count: extra.len(),
            offset: end,
        };
        assert_eq!(fast().decode_touchpoint(&payload), Err(expected.clone()));
        assert_eq!(generic().decode_touchpoint(&payload), Err(expected));
    }
    let mut payload = Encoder::single_object()
        .to_vec(&CxEvent::Survey(survey(SurveyMetric::Nps, 1, None, None)))
        .unwrap();
    let end = payload.len();
    payload.push(0);
    for decoder in [fast(), generic()] {
        let err = decoder.decode_survey(&payload).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TrailingBytes {
                count: 1,
                offset: end
            }
        );
        assert!(err.to_string().contains(&format!("offset {end}")));
    }
    // Older writers go through apache-avro: trailing bytes are refused there too.
    let decoder = Decoder::new(registry_with_history());
    let mut body = apache_encode(SURVEY_V0, survey_value_v0());
    body.push(0);
    assert!(matches!(
        decoder.decode_survey(&confluent(SURVEY_V0_ID, &body)),
        Err(DecodeError::TrailingBytes { count: 1, .. })
    ));
}

#[test]
fn negative_length() {
    let fields = touchpoint_fields();
    let payload = confluent(1, &with(fields.clone(), 2, zz(-3)));
    let err = fast().decode_touchpoint(&payload).unwrap_err();
    assert_eq!(
        err,
        DecodeError::NegativeLength {
            field: "customer_id",
            len: -3,
            offset: offset_of(&fields, 2)
        }
    );
    assert!(err.to_string().contains("-3"));
    assert!(generic().decode_touchpoint(&payload).is_err());
}

#[test]
fn decimal_overflow() {
    let fields = touchpoint_fields();
    let too_big: i64 = 1_000_000_000_000_000_000; // 19 digits
    for bytes in [
        too_big.to_be_bytes().to_vec(),
        (-too_big).to_be_bytes().to_vec(),
        vec![0x01, 0, 0, 0, 0, 0, 0, 0, 0], // 2^64: wider than i64
    ] {
        let payload = confluent(
            1,
            &with(fields.clone(), 8, [zz(1), string(&bytes)].concat()),
        );
        for decoder in [fast(), generic()] {
            assert_eq!(
                decoder.decode_touchpoint(&payload),
                Err(DecodeError::DecimalOverflow { field: "amount" })
            );
        }
    }
}

#[test]
fn int_out_of_range_and_varint_overflow() {
    let sf = survey_fields();
    let payload = confluent(2, &with(sf.clone(), 7, zz(1 << 31)));
    assert_eq!(
        fast().decode_survey(&payload),
        Err(DecodeError::IntOutOfRange {
            field: "score",
            value: 1 << 31,
            offset: offset_of(&sf, 7)
        })
    );
    assert!(generic().decode_survey(&payload).is_err());

    let eleven = vec![
        0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
    ];
    let payload = confluent(2, &with(sf.clone(), 1, eleven));
    assert_eq!(
        fast().decode_survey(&payload),
        Err(DecodeError::VarintOverflow {
            field: "submitted_at",
            offset: offset_of(&sf, 1)
        })
    );
    assert!(generic().decode_survey(&payload).is_err());
}

#[test]
fn map_blocks() {
    let fields = touchpoint_fields();
    // A negative block count is followed by the block size; both decoders accept it.
    let entries = [string(b"b"), string(b"2"), string(b"a"), string(b"1")].concat();
    let block = [
        zz(-2),
        zz(entries.len() as i64),
        entries.clone(),
        zz(1),
        string(b"c"),
        string(b"3"),
        zz(0),
    ]
    .concat();
    let payload = confluent(1, &with(fields.clone(), 10, block));
    let (f, g) = tp(&payload);
    let CxEvent::Touchpoint(e) = f.unwrap() else {
        panic!()
    };
    assert_eq!(
        e.attributes,
        vec![
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("c".into(), "3".into())
        ]
    );
    assert_eq!(g.unwrap(), CxEvent::Touchpoint(e));

    // i64::MIN cannot be negated.
    let payload = confluent(
        1,
        &with(fields.clone(), 10, [zz(i64::MIN), zz(0), zz(0)].concat()),
    );
    assert!(matches!(
        fast().decode_touchpoint(&payload),
        Err(DecodeError::BadBlockCount {
            field: "attributes",
            ..
        })
    ));
    assert!(generic().decode_touchpoint(&payload).is_err());

    // A huge count with no data behind it fails fast without reserving memory.
    let payload = confluent(1, &with(fields, 10, zz(i64::MAX)));
    assert!(matches!(
        fast().decode_touchpoint(&payload),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(generic().decode_touchpoint(&payload).is_err());
}

#[test]
fn reasons_are_stable_distinct_snake_case_labels() {
    let errors = [
        DecodeError::EmptyPayload,
        DecodeError::UnknownMagic { byte: 1 },
        DecodeError::UnknownSingleObjectVersion { byte: 2 },
        DecodeError::UnknownSchemaId { id: 1 },
        DecodeError::UnknownFingerprint { fingerprint: 1 },
        DecodeError::Truncated {
            field: "f",
            offset: 0,
        },
        DecodeError::InvalidUtf8 {
            field: "f",
            offset: 0,
        },
        DecodeError::BadUnionIndex {
            field: "f",
            index: 2,
            offset: 0,
        },
        DecodeError::BadEnumIndex {
            field: "f",
            index: 9,
            offset: 0,
        },
        DecodeError::IntOutOfRange {
            field: "f",
            value: 1 << 40,
            offset: 0,
        },
        DecodeError::VarintOverflow {
            field: "f",
            offset: 0,
        },
        DecodeError::DecimalOverflow { field: "f" },
        DecodeError::NegativeLength {
            field: "f",
            len: -1,
            offset: 0,
        },
        DecodeError::BadBlockCount {
            field: "f",
            count: i64::MIN,
            offset: 0,
        },
        DecodeError::TrailingBytes {
            count: 1,
            offset: 0,
        },
        DecodeError::WrongRecord {
            expected: RecordKind::Survey,
            found: RecordKind::Touchpoint,
        },
        DecodeError::Resolution("x".into()),
    ];
    let mut labels: Vec<&str> = errors.iter().map(DecodeError::reason).collect();
    for label in &labels {
        assert!(
            label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{label}"
        );
    }
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), errors.len());
    assert_eq!(
        DecodeError::Truncated {
            field: "f",
            offset: 0
        }
        .reason(),
        "truncated"
    );
}

#[test]
fn decoders_are_shared_across_threads() {
    let registry = SchemaRegistry::new();
    let decoder = Decoder::new(registry.clone());
    let payload = Encoder::confluent()
        .to_vec(&CxEvent::Touchpoint(purchase()))
        .unwrap();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..500 {
                    assert_eq!(decoder.decode_touchpoint(&payload).unwrap(), purchase());
                }
            });
        }
        // Registering while others decode.
        scope.spawn(|| {
            registry.register(100, TOUCHPOINT_V0).unwrap();
        });
    });
    assert!(decoder.registry().by_id(100).is_some());
}
