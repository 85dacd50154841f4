//! The encoder: writes the domain types with the current (v1) schemas, by hand, in either wire
//! format. `tests/roundtrip.rs` proves the bodies equal apache-avro's encoding.

use cxpulse_core::{Amount, CxEvent, SurveyResponse, TouchpointEvent};

use crate::decimal::{minimal_be_bytes, MAX_DECIMAL_18};
use crate::error::EncodeError;
use crate::schema::RecordKind;
use crate::wire::{write_confluent_header, write_single_object_header, WireFormat};

#[inline]
fn put_long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z > 0x7f {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[inline]
fn put_bytes(b: &[u8], out: &mut Vec<u8>) {
    // A slice is never longer than isize::MAX, so its length always fits an i64.
    put_long(b.len() as i64, out);
    out.extend_from_slice(b);
}

#[inline]
fn put_str(s: &str, out: &mut Vec<u8>) {
    put_bytes(s.as_bytes(), out);
}

#[inline]
fn put_opt_str(s: Option<&str>, out: &mut Vec<u8>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(2); // zig-zag 1: the second branch
            put_str(s, out);
        }
    }
}

fn check_amount(amount: Option<Amount>) -> Result<(), EncodeError> {
    match amount {
        Some(a) if a.units.unsigned_abs() > MAX_DECIMAL_18.unsigned_abs() => {
            Err(EncodeError::AmountOutOfRange { units: a.units })
        }
        _ => Ok(()),
    }
}

/// Appends the Avro binary body of `event` (touchpoint v1 schema, no header).
///
/// Attributes are written in the order of the `Vec`, as one block. The amount is written in its
/// shortest two's complement form, as Java's `BigInteger.toByteArray()` does.
pub fn encode_touchpoint_body(
    event: &TouchpointEvent,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    check_amount(event.amount)?;
    put_str(&event.event_id, out);
    put_long(event.occurred_at, out);
    put_str(&event.customer_id, out);
    put_str(&event.segment, out);
    put_long(event.channel.index() as i64, out);
    put_str(&event.touchpoint, out);
    put_long(event.kind as i64, out);
    put_opt_str(event.case_id.as_deref(), out);
    match event.amount {
        None => out.push(0),
        Some(a) => {
            out.push(2);
            let (buf, len) = minimal_be_bytes(a.units);
            put_bytes(buf.get(8 - len..).unwrap_or(&buf), out);
        }
    }
    put_opt_str(event.currency.as_deref(), out);
    if !event.attributes.is_empty() {
        put_long(event.attributes.len() as i64, out);
        for (k, v) in &event.attributes {
            put_str(k, out);
            put_str(v, out);
        }
    }
    out.push(0);
    Ok(())
}

/// Appends the Avro binary body of `response` (survey v1 schema, no header).
pub fn encode_survey_body(response: &SurveyResponse, out: &mut Vec<u8>) {
    put_str(&response.response_id, out);
    put_long(response.submitted_at, out);
    put_str(&response.customer_id, out);
    put_str(&response.segment, out);
    put_long(response.channel.index() as i64, out);
    put_str(&response.touchpoint, out);
    put_long(response.metric as i64, out);
    put_long(i64::from(response.score), out);
    put_opt_str(response.comment.as_deref(), out);
    put_opt_str(response.language.as_deref(), out);
    put_opt_str(response.case_id.as_deref(), out);
}

/// Writes events with the current schemas in one wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoder {
    format: WireFormat,
    touchpoint_schema_id: u32,
    survey_schema_id: u32,
}

impl Encoder {
    /// An encoder for `format`; Confluent headers carry the built-in ids
    /// ([`crate::TOUCHPOINT_V1_SCHEMA_ID`], [`crate::SURVEY_V1_SCHEMA_ID`]).
    pub fn new(format: WireFormat) -> Encoder {
        Encoder {
            format,
            touchpoint_schema_id: crate::TOUCHPOINT_V1_SCHEMA_ID,
            survey_schema_id: crate::SURVEY_V1_SCHEMA_ID,
        }
    }

    /// Confluent framing with the built-in schema ids.
    pub fn confluent() -> Encoder {
        Encoder::new(WireFormat::Confluent)
    }

    /// Avro single-object framing.
    pub fn single_object() -> Encoder {
        Encoder::new(WireFormat::SingleObject)
    }

    /// Uses other Confluent schema ids for the current schemas (e.g. the ids a real registry gave them).
    pub fn with_schema_ids(mut self, touchpoint: u32, survey: u32) -> Encoder {
        self.touchpoint_schema_id = touchpoint;
        self.survey_schema_id = survey;
        self
    }

    pub fn format(&self) -> WireFormat {
        self.format
    }

    fn header(&self, kind: RecordKind, out: &mut Vec<u8>) {
        match self.format {
            WireFormat::Confluent => {
                let id = match kind {
                    RecordKind::Touchpoint => self.touchpoint_schema_id,
                    RecordKind::Survey => self.survey_schema_id,
                };
                write_confluent_header(id, out);
            }
            WireFormat::SingleObject => write_single_object_header(kind.reader_fingerprint(), out),
        }
    }

    /// Appends one framed touchpoint to `out`. On error nothing is appended.
    pub fn encode_touchpoint(
        &self,
        event: &TouchpointEvent,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        check_amount(event.amount)?;
        self.header(RecordKind::Touchpoint, out);
        encode_touchpoint_body(event, out)
    }

    /// Appends one framed survey response to `out`.
    pub fn encode_survey(&self, response: &SurveyResponse, out: &mut Vec<u8>) {
        self.header(RecordKind::Survey, out);
        encode_survey_body(response, out);
    }

    /// Appends one framed event to `out`. On error nothing is appended.
    pub fn encode(&self, event: &CxEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match event {
            CxEvent::Touchpoint(e) => self.encode_touchpoint(e, out),
            CxEvent::Survey(r) => {
                self.encode_survey(r, out);
                Ok(())
            }
        }
    }

    /// One framed event as a new buffer.
    pub fn to_vec(&self, event: &CxEvent) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(128);
        self.encode(event, &mut out)?;
        Ok(out)
    }
}
