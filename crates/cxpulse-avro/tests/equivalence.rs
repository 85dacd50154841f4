//! The fast path decodes exactly what apache-avro decodes.
//!
//! * random events, encoded by apache-avro, decode to the same event on both paths;
//! * arbitrary bytes and mutations of valid records either fail on both paths or decode to the
//!   same event on both — and the fast path never panics (a panic fails the property).

mod common;

use common::*;
use cxpulse_avro::{DecodePath, Decoder, RecordKind, SchemaRegistry};
use cxpulse_core::CxEvent;
use proptest::prelude::*;

fn setup() -> (Decoder, Decoder) {
    // Keep apache-avro's allocation limit small for garbage lengths (it reserves up front);
    // no input here comes near it. Every test calls this before decoding anything.
    apache_avro::util::max_allocation_bytes(16 << 20);
    let registry = SchemaRegistry::new();
    (
        Decoder::new(registry.clone()),
        Decoder::new(registry).with_path(DecodePath::Generic),
    )
}

fn check_same(kind: RecordKind, payload: &[u8]) -> Result<(), TestCaseError> {
    let (fast, generic) = setup();
    let f = fast.decode(kind, payload);
    let g = generic.decode(kind, payload);
    // decode_into, into scratch events that held other records of either kind (buffer
    // reuse must never leak old content), agrees with decode.
    let scratches = [
        CxEvent::Touchpoint(support_reply()),
        CxEvent::Touchpoint(purchase()),
        CxEvent::Survey(survey_scratch()),
    ];
    for mut scratch in scratches {
        let into = fast.decode_into(kind, payload, &mut scratch);
        match (&f, into) {
            (Ok(a), Ok(())) => prop_assert_eq!(a, &scratch),
            (Err(_), Err(_)) => {}
            (f, into) => prop_assert!(
                false,
                "decode_into disagrees on {:02x?}: decode = {:?}, into = {:?}",
                payload,
                f,
                into
            ),
        }
    }
    match (&f, &g) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => prop_assert!(
            false,
            "paths disagree on {:02x?}:\n fast    = {:?}\n generic = {:?}",
            payload,
            f,
            g
        ),
    }
    Ok(())
}

/// A survey response with every optional field set, used as a reused decode buffer.
fn survey_scratch() -> cxpulse_core::SurveyResponse {
    cxpulse_core::SurveyResponse {
        response_id: "scratch-response-with-a-long-id".into(),
        submitted_at: 1,
        customer_id: "scratch-customer".into(),
        segment: "scratch-segment".into(),
        channel: cxpulse_core::Channel::Chat,
        touchpoint: "scratch".into(),
        metric: cxpulse_core::SurveyMetric::Ces,
        score: 3,
        comment: Some("بد نبود ولی کمی طول کشید.".into()),
        language: Some("fa".into()),
        case_id: Some("case-scratch".into()),
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Xor(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn arb_mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let m = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Mutation::Xor(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        // Bytes that are interesting as varints, lengths and indexes.
        (
            any::<usize>(),
            prop::sample::select(vec![0x00u8, 0x01, 0x02, 0x03, 0x04, 0x7f, 0x80, 0xff])
        )
            .prop_map(|(i, b)| Mutation::Set(i, b)),
    ];
    prop::collection::vec(m, 1..4)
}

/// Mutates only the body (the header stays valid so both paths get to decode).
fn mutate(payload: &[u8], header: usize, mutations: &[Mutation]) -> Vec<u8> {
    let mut body = payload[header..].to_vec();
    for m in mutations {
        let n = body.len().max(1);
        match *m {
            Mutation::Set(i, b) => {
                if let Some(x) = body.get_mut(i % n) {
                    *x = b;
                }
            }
            Mutation::Xor(i, b) => {
                if let Some(x) = body.get_mut(i % n) {
                    *x ^= b;
                }
            }
            Mutation::Insert(i, b) => body.insert(i % (body.len() + 1), b),
            Mutation::Remove(i) => {
                if !body.is_empty() {
                    body.remove(i % n);
                }
            }
            Mutation::Truncate(i) => body.truncate(i % n),
            Mutation::Duplicate(i, len) => {
                let start = i % n;
                let end = (start + len).min(body.len());
                let copy = body[start..end].to_vec();
                body.splice(start..start, copy);
            }
        }
    }
    let mut out = payload[..header].to_vec();
    out.extend_from_slice(&body);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn apache_encoded_touchpoints_decode_equally(event in arb_touchpoint()) {
        let (fast, generic) = setup();
        let body = apache_touchpoint(&event);
        let expected = normalized(event);
        for payload in [confluent(1, &body), single_object(RecordKind::Touchpoint.reader_fingerprint(), &body)] {
            prop_assert_eq!(&fast.decode_touchpoint(&payload).unwrap(), &expected);
            prop_assert_eq!(&generic.decode_touchpoint(&payload).unwrap(), &expected);
        }
    }

    #[test]
    fn apache_encoded_surveys_decode_equally(response in arb_survey()) {
        let (fast, generic) = setup();
        let body = apache_survey(&response);
        for payload in [confluent(2, &body), single_object(RecordKind::Survey.reader_fingerprint(), &body)] {
            prop_assert_eq!(&fast.decode_survey(&payload).unwrap(), &response);
            prop_assert_eq!(&generic.decode_survey(&payload).unwrap(), &response);
        }
    }

    #[test]
    fn mutated_touchpoints_fail_on_both_paths_or_agree(event in arb_touchpoint(), mutations in arb_mutations()) {
        let payload = confluent(1, &apache_touchpoint(&event));
        check_same(RecordKind::Touchpoint, &mutate(&payload, 5, &mutations))?;
    }

    #[test]
    fn mutated_surveys_fail_on_both_paths_or_agree(response in arb_survey(), mutations in arb_mutations()) {
        let payload = confluent(2, &apache_survey(&response));
        check_same(RecordKind::Survey, &mutate(&payload, 5, &mutations))?;
    }

    #[test]
    fn arbitrary_bodies_fail_on_both_paths_or_agree(body in prop::collection::vec(any::<u8>(), 0..160), kind in prop::sample::select(RecordKind::ALL.to_vec())) {
        let payload = confluent(kind.builtin_schema_id(), &body);
        check_same(kind, &payload)?;
    }

    #[test]
    fn arbitrary_payloads_never_panic(payload in prop::collection::vec(any::<u8>(), 0..64)) {
        let (fast, generic) = setup();
        let _ = fast.decode_any(&payload);
        let _ = generic.decode_any(&payload);
    }
}

/// Every single-byte substitution with a value that matters to Avro (small varints, union and
/// enum indexes, continuation bits) at every position of several records: both paths agree.
/// Also shows the mutations are not vacuous: many decode, many fail.
#[test]
fn exhaustive_single_byte_mutations_agree() {
    let (fast, _) = setup();
    let mut all_some = purchase();
    all_some.case_id = Some("case-1".into());
    let samples = [
        (
            RecordKind::Touchpoint,
            confluent(1, &apache_touchpoint(&all_some)),
        ),
        (
            RecordKind::Touchpoint,
            confluent(1, &apache_touchpoint(&support_reply())),
        ),
        (
            RecordKind::Survey,
            confluent(
                2,
                &apache_survey(&survey(
                    cxpulse_core::SurveyMetric::Ces,
                    3,
                    Some("🙂"),
                    Some("en"),
                )),
            ),
        ),
        (
            RecordKind::Survey,
            confluent(
                2,
                &apache_survey(&survey(cxpulse_core::SurveyMetric::Nps, 10, None, None)),
            ),
        ),
    ];
    // Varint/index/length values around the valid ones, sign and continuation bits.
    let values: Vec<u8> = vec![0, 1, 2, 3, 4, 5, 6, 8, 0x0e, 0x10, 0x7f, 0x80, 0x81, 0xff];
    let (mut ok, mut err) = (0, 0);
    for (kind, payload) in &samples {
        for i in 0..payload.len() - 5 {
            for &b in &values {
                let p = mutate(payload, 5, &[Mutation::Set(i, b)]);
                match fast.decode(*kind, &p) {
                    Ok(_) => ok += 1,
                    Err(_) => err += 1,
                }
                check_same(*kind, &p).unwrap();
            }
        }
    }
    assert!(ok > 200 && err > 200, "ok {ok}, err {err}");
    // A decoded mutation really is a different event.
    let payload = &samples[0].1;
    let p = mutate(payload, 5, &[Mutation::Set(1, b'X')]);
    let CxEvent::Touchpoint(e) = fast.decode(RecordKind::Touchpoint, &p).unwrap() else {
        panic!()
    };
    assert_eq!(e.event_id, "Xvt-0001");
}
