//! `decode_validated`: decoded records that break the contract are refused with the
//! `ValidationError` that says why; undecodable ones with the `DecodeError`.

mod common;

use apache_avro::types::Value;
use common::*;
use cxpulse_avro::{DecodeError, Decoder, Encoder, RecordError, RecordKind};
use cxpulse_core::{CxEvent, SurveyMetric, ValidationError, ValidationPolicy, HOUR_MS};

const NOW: i64 = T0 + HOUR_MS;

fn validated(payload: &[u8], kind: RecordKind) -> Result<CxEvent, RecordError> {
    Decoder::new(registry_with_history()).decode_validated(
        kind,
        payload,
        NOW,
        &ValidationPolicy::default(),
    )
}

fn survey_payload(metric: SurveyMetric, score: i32) -> Vec<u8> {
    Encoder::confluent()
        .to_vec(&CxEvent::Survey(survey(
            metric,
            score,
            Some("ok"),
            Some("en"),
        )))
        .unwrap()
}

fn out_of_range(metric: SurveyMetric, score: i32, min: i32, max: i32) -> RecordError {
    RecordError::Invalid(ValidationError::ScoreOutOfRange {
        metric,
        score,
        min,
        max,
    })
}

#[test]
fn valid_records_pass() {
    for (metric, score) in [
        (SurveyMetric::Nps, 0),
        (SurveyMetric::Nps, 10),
        (SurveyMetric::Csat, 1),
        (SurveyMetric::Csat, 5),
        (SurveyMetric::Ces, 1),
        (SurveyMetric::Ces, 7),
    ] {
        let event = validated(&survey_payload(metric, score), RecordKind::Survey).unwrap();
        assert_eq!(
            event,
            CxEvent::Survey(survey(metric, score, Some("ok"), Some("en")))
        );
    }
    let payload = Encoder::single_object()
        .to_vec(&CxEvent::Touchpoint(purchase()))
        .unwrap();
    assert_eq!(
        validated(&payload, RecordKind::Touchpoint).unwrap(),
        CxEvent::Touchpoint(purchase())
    );
}

#[test]
fn scores_outside_the_metric_scale_are_refused() {
    let cases = [
        (SurveyMetric::Nps, 11, 0, 10),
        (SurveyMetric::Nps, -1, 0, 10),
        (SurveyMetric::Csat, 0, 1, 5),
        (SurveyMetric::Csat, 6, 1, 5),
        (SurveyMetric::Ces, 8, 1, 7),
        (SurveyMetric::Ces, 0, 1, 7),
    ];
    for (metric, score, min, max) in cases {
        let err = validated(&survey_payload(metric, score), RecordKind::Survey).unwrap_err();
        assert_eq!(err, out_of_range(metric, score, min, max));
        assert_eq!(err.reason(), "score_out_of_range");
        assert_eq!(err.stage(), "validate");
        let text = err.to_string();
        assert!(
            text.contains(&score.to_string()) && text.contains(metric.as_str()),
            "{text}"
        );
    }
}

#[test]
fn event_time_zero_is_refused() {
    let mut r = survey(SurveyMetric::Nps, 9, None, None);
    r.submitted_at = 0;
    let payload = Encoder::confluent().to_vec(&CxEvent::Survey(r)).unwrap();
    let err = validated(&payload, RecordKind::Survey).unwrap_err();
    assert_eq!(
        err,
        RecordError::Invalid(ValidationError::MissingEventTime {
            field: "submitted_at",
            value: 0
        })
    );
    assert_eq!(err.reason(), "missing_event_time");

    let mut e = purchase();
    e.occurred_at = 0;
    let payload = Encoder::confluent()
        .to_vec(&CxEvent::Touchpoint(e))
        .unwrap();
    assert!(matches!(
        validated(&payload, RecordKind::Touchpoint),
        Err(RecordError::Invalid(ValidationError::MissingEventTime {
            field: "occurred_at",
            ..
        }))
    ));
}

#[test]
fn event_time_far_in_the_future_is_refused() {
    let mut e = purchase();
    e.occurred_at = NOW + 365 * 24 * HOUR_MS;
    let payload = Encoder::single_object()
        .to_vec(&CxEvent::Touchpoint(e.clone()))
        .unwrap();
    let err = validated(&payload, RecordKind::Touchpoint).unwrap_err();
    let policy = ValidationPolicy::default();
    assert_eq!(
        err,
        RecordError::Invalid(ValidationError::EventTimeInFuture {
            field: "occurred_at",
            event_time: e.occurred_at,
            now: NOW,
            ahead_ms: e.occurred_at - NOW,
            max_skew_ms: policy.max_future_skew_ms,
        })
    );
    assert_eq!(err.reason(), "event_time_in_future");
    // Within the allowed skew it passes.
    e.occurred_at = NOW + policy.max_future_skew_ms;
    let payload = Encoder::single_object()
        .to_vec(&CxEvent::Touchpoint(e))
        .unwrap();
    assert!(validated(&payload, RecordKind::Touchpoint).is_ok());
}

fn survey_v2(metric: (u32, &str), score: i32) -> Vec<u8> {
    let fields: Vec<(String, Value)> = vec![
        ("response_id".into(), Value::String("resp-v2".into())),
        ("submitted_at".into(), Value::TimestampMillis(T0)),
        ("customer_id".into(), Value::String("cust".into())),
        ("segment".into(), Value::String("smb".into())),
        ("channel".into(), Value::Enum(8, "kiosk".into())),
        ("touchpoint".into(), Value::String("store".into())),
        ("metric".into(), Value::Enum(metric.0, metric.1.into())),
        ("score".into(), Value::Int(score)),
        ("comment".into(), Value::Union(0, Box::new(Value::Null))),
        ("sentiment".into(), Value::Union(0, Box::new(Value::Null))),
        ("language".into(), Value::Union(0, Box::new(Value::Null))),
        ("case_id".into(), Value::Union(0, Box::new(Value::Null))),
        ("survey_id".into(), Value::Union(0, Box::new(Value::Null))),
    ];
    confluent(
        SURVEY_V2_ID,
        &apache_encode(SURVEY_V2, Value::Record(fields)),
    )
}

#[test]
fn unknown_metrics_from_a_newer_writer_are_refused() {
    // The UNKNOWN symbol itself, and a symbol v1 does not know (resolved to UNKNOWN).
    for metric in [(3, "UNKNOWN"), (4, "CSI")] {
        let payload = survey_v2(metric, 3);
        let decoded = Decoder::new(registry_with_history())
            .decode_survey(&payload)
            .unwrap();
        assert_eq!(decoded.metric, SurveyMetric::Unknown);
        let err = validated(&payload, RecordKind::Survey).unwrap_err();
        assert_eq!(err, RecordError::Invalid(ValidationError::UnknownMetric));
        assert_eq!(err.reason(), "unknown_metric");
    }
    // A known metric from the same writer validates.
    assert!(validated(&survey_v2((0, "NPS"), 8), RecordKind::Survey).is_ok());
}

#[test]
fn decode_failures_come_through_as_decode_errors() {
    let err = validated(&[], RecordKind::Survey).unwrap_err();
    assert_eq!(err, RecordError::Decode(DecodeError::EmptyPayload));
    assert_eq!((err.reason(), err.stage()), ("empty_payload", "decode"));
    let mut payload = survey_payload(SurveyMetric::Nps, 11);
    payload.truncate(payload.len() - 1);
    let err = validated(&payload, RecordKind::Survey).unwrap_err();
    assert!(
        matches!(err, RecordError::Decode(DecodeError::Truncated { .. })),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("cannot decode record: truncated payload"),
        "{err}"
    );
    let err = validated(
        &survey_payload(SurveyMetric::Nps, 11),
        RecordKind::Touchpoint,
    )
    .unwrap_err();
    assert_eq!(err.reason(), "wrong_record");
}
