//! The generic path: apache-avro decodes the body with the writer schema and resolves the value
//! against the current reader schema; the resolved `Value` is then mapped onto the domain types.
//!
//! Used for every writer schema that is not the reader schema (older and newer writers), and
//! as the reference the fast path is tested against.
//!
//! Two apache-avro 0.22 behaviours are corrected here so that this path refuses and accepts the
//! same inputs as the fast path:
//! * on a premature end of input, apache-avro decodes a string as `Null` and a union as its
//!   first branch instead of failing; the input is wrapped in a reader that notices any read
//!   past the end, and such a decode is reported as [`DecodeError::Truncated`];
//! * resolving a `decimal` checks its *byte length* against the precision (fewer than 8 bytes
//!   fail for precision 18), which refuses the minimal encodings Java and others write; decoded
//!   decimals are sign-extended (same value) to 8 bytes before resolution.

use std::collections::HashMap;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::Decimal;
use cxpulse_core::{
    Amount, Channel, SurveyMetric, SurveyResponse, TouchpointEvent, TouchpointKind,
};

use crate::decimal::units_from_be_bytes;
use crate::error::DecodeError;
use crate::fast::normalize_map;
use crate::registry::WriterSchema;
use crate::schema::{self, RecordKind};

/// A `Read` over a slice that remembers whether anyone tried to read past its end.
struct EofTracking<'a> {
    rest: &'a [u8],
    hit_eof: bool,
}

impl Read for EofTracking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.rest.is_empty() {
            self.hit_eof = true;
            return Ok(0);
        }
        let n = buf.len().min(self.rest.len());
        let (head, tail) = self.rest.split_at(n);
        if let Some(dst) = buf.get_mut(..n) {
            dst.copy_from_slice(head);
        }
        self.rest = tail;
        Ok(n)
    }
}

fn avro_err(e: apache_avro::Error) -> DecodeError {
    DecodeError::Resolution(e.to_string())
}

/// Decodes `body` written with `writer` and resolves it against the reader schema of the
/// writer's record kind. `base` is the offset of the body in the payload.
pub(crate) fn decode_value(
    writer: &WriterSchema,
    body: &[u8],
    base: usize,
) -> Result<Value, DecodeError> {
    let mut input = EofTracking {
        rest: body,
        hit_eof: false,
    };
    let datum_reader = GenericDatumReader::builder(writer.schema())
        .build()
        .map_err(avro_err)?;
    // apache-avro is not written to be panic-free on hostile input; a panic there must not
    // take the stream job down, so it becomes a decode error of this record.
    let decoded = catch_unwind(AssertUnwindSafe(|| datum_reader.read_value(&mut input)))
        .map_err(|_| DecodeError::Resolution("apache-avro panicked while decoding".into()))?;
    if input.hit_eof {
        return Err(DecodeError::Truncated {
            field: "record (generic decoder)",
            offset: base.saturating_add(body.len()),
        });
    }
    let value = decoded.map_err(avro_err)?;
    if !input.rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            count: input.rest.len(),
            offset: base.saturating_add(body.len() - input.rest.len()),
        });
    }
    let value = widen_decimals(value)?;
    let reader = schema::reader(writer.kind());
    catch_unwind(AssertUnwindSafe(|| {
        value.resolve_with_names(reader.schema, reader.resolved.get_names())
    }))
    .map_err(|_| DecodeError::Resolution("apache-avro panicked while resolving".into()))?
    .map_err(avro_err)
}

/// The decimal bytes of `d` (apache-avro keeps the written length).
fn decimal_bytes(d: &Decimal) -> Result<Vec<u8>, DecodeError> {
    match Vec::<u8>::try_from(d) {
        Ok(bytes) => Ok(bytes),
        // Only a zero-length decimal (value 0) cannot be re-serialized at its own length.
        Err(_) if *d == Decimal::from([0u8]) => Ok(Vec::new()),
        Err(e) => Err(avro_err(e)),
    }
}

fn widen_decimals(value: Value) -> Result<Value, DecodeError> {
    Ok(match value {
        Value::Decimal(d) => {
            let bytes = decimal_bytes(&d)?;
            if bytes.len() >= 8 {
                Value::Decimal(d)
            } else {
                let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
                let mut wide = vec![if negative { 0xff } else { 0x00 }; 8 - bytes.len()];
                wide.extend_from_slice(&bytes);
                Value::Decimal(Decimal::from(wide))
            }
        }
        Value::Union(i, inner) => Value::Union(i, Box::new(widen_decimals(*inner)?)),
        Value::Record(fields) => Value::Record(
            fields
                .into_iter()
                .map(|(k, v)| widen_decimals(v).map(|v| (k, v)))
                .collect::<Result<_, _>>()?,
        ),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(widen_decimals)
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(items) => Value::Map(
            items
                .into_iter()
                .map(|(k, v)| widen_decimals(v).map(|v| (k, v)))
                .collect::<Result<_, _>>()?,
        ),
        other => other,
    })
}

fn mismatch(field: &'static str, expected: &str, value: &Value) -> DecodeError {
    DecodeError::Resolution(format!(
        "field `{field}`: expected {expected}, found {value:?}"
    ))
}

fn take_string(field: &'static str, value: Value) -> Result<String, DecodeError> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(mismatch(field, "a string", &other)),
    }
}

fn take_long(field: &'static str, value: Value) -> Result<i64, DecodeError> {
    match value {
        Value::Long(n) | Value::TimestampMillis(n) => Ok(n),
        Value::Int(n) => Ok(i64::from(n)),
        other => Err(mismatch(field, "a long", &other)),
    }
}

fn take_int(field: &'static str, value: Value) -> Result<i32, DecodeError> {
    match value {
        Value::Int(n) => Ok(n),
        other => Err(mismatch(field, "an int", &other)),
    }
}

fn take_symbol(field: &'static str, value: Value) -> Result<String, DecodeError> {
    match value {
        Value::Enum(_, symbol) => Ok(symbol),
        other => Err(mismatch(field, "an enum symbol", &other)),
    }
}

fn take_option(value: Value) -> Option<Value> {
    match value {
        Value::Union(_, inner) => match *inner {
            Value::Null => None,
            v => Some(v),
        },
        Value::Null => None,
        v => Some(v),
    }
}

fn take_opt_string(field: &'static str, value: Value) -> Result<Option<String>, DecodeError> {
    take_option(value)
        .map(|v| take_string(field, v))
        .transpose()
}

fn take_opt_amount(field: &'static str, value: Value) -> Result<Option<Amount>, DecodeError> {
    let Some(value) = take_option(value) else {
        return Ok(None);
    };
    let bytes = match value {
        Value::Decimal(d) => decimal_bytes(&d)?,
        Value::Bytes(b) => b,
        other => return Err(mismatch(field, "a decimal", &other)),
    };
    units_from_be_bytes(&bytes)
        .map(|units| Some(Amount::from_units(units)))
        .ok_or(DecodeError::DecimalOverflow { field })
}

fn take_map(field: &'static str, value: Value) -> Result<Vec<(String, String)>, DecodeError> {
    let items: HashMap<String, Value> = match value {
        Value::Map(items) => items,
        other => return Err(mismatch(field, "a map", &other)),
    };
    let mut entries = items
        .into_iter()
        .map(|(k, v)| take_string(field, v).map(|v| (k, v)))
        .collect::<Result<Vec<_>, _>>()?;
    normalize_map(&mut entries);
    Ok(entries)
}

fn record_fields(kind: RecordKind, value: Value) -> Result<Vec<(String, Value)>, DecodeError> {
    match value {
        Value::Record(fields) => Ok(fields),
        other => Err(DecodeError::Resolution(format!(
            "expected a {kind} record, found {other:?}"
        ))),
    }
}

fn missing(field: &'static str) -> DecodeError {
    DecodeError::Resolution(format!("field `{field}` is missing after resolution"))
}

/// Maps a resolved `TouchpointEvent` value onto the domain type.
pub(crate) fn touchpoint_from_value(value: Value) -> Result<TouchpointEvent, DecodeError> {
    let (mut event_id, mut occurred_at, mut customer_id, mut segment, mut channel) =
        (None, None, None, None, None);
    let (mut touchpoint, mut kind, mut case_id, mut amount, mut currency, mut attributes) =
        (None, None, None, None, None, None);
    for (name, v) in record_fields(RecordKind::Touchpoint, value)? {
        match name.as_str() {
            "event_id" => event_id = Some(take_string("event_id", v)?),
            "occurred_at" => occurred_at = Some(take_long("occurred_at", v)?),
            "customer_id" => customer_id = Some(take_string("customer_id", v)?),
            "segment" => segment = Some(take_string("segment", v)?),
            "channel" => channel = Some(Channel::from_symbol(&take_symbol("channel", v)?)),
            "touchpoint" => touchpoint = Some(take_string("touchpoint", v)?),
            "kind" => kind = Some(TouchpointKind::from_symbol(&take_symbol("kind", v)?)),
            "case_id" => case_id = Some(take_opt_string("case_id", v)?),
            "amount" => amount = Some(take_opt_amount("amount", v)?),
            "currency" => currency = Some(take_opt_string("currency", v)?),
            "attributes" => attributes = Some(take_map("attributes", v)?),
            _ => {}
        }
    }
    Ok(TouchpointEvent {
        event_id: event_id.ok_or_else(|| missing("event_id"))?,
        occurred_at: occurred_at.ok_or_else(|| missing("occurred_at"))?,
        customer_id: customer_id.ok_or_else(|| missing("customer_id"))?,
        segment: segment.ok_or_else(|| missing("segment"))?,
        channel: channel.ok_or_else(|| missing("channel"))?,
        touchpoint: touchpoint.ok_or_else(|| missing("touchpoint"))?,
        kind: kind.ok_or_else(|| missing("kind"))?,
        case_id: case_id.ok_or_else(|| missing("case_id"))?,
        amount: amount.ok_or_else(|| missing("amount"))?,
        currency: currency.ok_or_else(|| missing("currency"))?,
        attributes: attributes.ok_or_else(|| missing("attributes"))?,
    })
}

/// Maps a resolved `SurveyResponse` value onto the domain type.
pub(crate) fn survey_from_value(value: Value) -> Result<SurveyResponse, DecodeError> {
    let (mut response_id, mut submitted_at, mut customer_id, mut segment, mut channel) =
        (None, None, None, None, None);
    let (mut touchpoint, mut metric, mut score, mut comment, mut language, mut case_id) =
        (None, None, None, None, None, None);
    for (name, v) in record_fields(RecordKind::Survey, value)? {
        match name.as_str() {
            "response_id" => response_id = Some(take_string("response_id", v)?),
            "submitted_at" => submitted_at = Some(take_long("submitted_at", v)?),
            "customer_id" => customer_id = Some(take_string("customer_id", v)?),
            "segment" => segment = Some(take_string("segment", v)?),
            "channel" => channel = Some(Channel::from_symbol(&take_symbol("channel", v)?)),
            "touchpoint" => touchpoint = Some(take_string("touchpoint", v)?),
            "metric" => metric = Some(SurveyMetric::from_symbol(&take_symbol("metric", v)?)),
            "score" => score = Some(take_int("score", v)?),
            "comment" => comment = Some(take_opt_string("comment", v)?),
            "language" => language = Some(take_opt_string("language", v)?),
            "case_id" => case_id = Some(take_opt_string("case_id", v)?),
            _ => {}
        }
    }
    Ok(SurveyResponse {
        response_id: response_id.ok_or_else(|| missing("response_id"))?,
        submitted_at: submitted_at.ok_or_else(|| missing("submitted_at"))?,
        customer_id: customer_id.ok_or_else(|| missing("customer_id"))?,
        segment: segment.ok_or_else(|| missing("segment"))?,
        channel: channel.ok_or_else(|| missing("channel"))?,
        touchpoint: touchpoint.ok_or_else(|| missing("touchpoint"))?,
        metric: metric.ok_or_else(|| missing("metric"))?,
        score: score.ok_or_else(|| missing("score"))?,
        comment: comment.ok_or_else(|| missing("comment"))?,
        language: language.ok_or_else(|| missing("language"))?,
        case_id: case_id.ok_or_else(|| missing("case_id"))?,
    })
}

/// Decodes a touchpoint body written with `writer` through apache-avro.
pub fn decode_touchpoint_body(
    writer: &WriterSchema,
    body: &[u8],
    base: usize,
) -> Result<TouchpointEvent, DecodeError> {
    expect_kind(writer, RecordKind::Touchpoint)?;
    touchpoint_from_value(decode_value(writer, body, base)?)
}

/// Decodes a survey body written with `writer` through apache-avro.
pub fn decode_survey_body(
    writer: &WriterSchema,
    body: &[u8],
    base: usize,
) -> Result<SurveyResponse, DecodeError> {
    expect_kind(writer, RecordKind::Survey)?;
    survey_from_value(decode_value(writer, body, base)?)
}

pub(crate) fn expect_kind(writer: &WriterSchema, expected: RecordKind) -> Result<(), DecodeError> {
    if writer.kind() == expected {
        Ok(())
    } else {
        Err(DecodeError::WrongRecord {
            expected,
            found: writer.kind(),
        })
    }
}
