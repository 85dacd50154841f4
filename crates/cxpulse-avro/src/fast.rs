//! The fast path: a hand-written decoder of the current (v1) schemas straight into the domain
//! types, used when the writer schema is the reader schema.
//!
//! It reads the body in place (strings are UTF-8-checked slices of the input, copied once into
//! the owned `String`s of the domain types) and accepts exactly what apache-avro's generic
//! decoder accepts for these schemas — the equivalence proptests in `tests/equivalence.rs`
//! check that. It never panics: every read is bounds-checked and every length is validated
//! before use.
#![deny(clippy::indexing_slicing)]

use cxpulse_core::{
    Amount, Channel, SurveyMetric, SurveyResponse, TouchpointEvent, TouchpointKind,
};

use crate::decimal::units_from_be_bytes;
use crate::error::DecodeError;

/// A cursor over an Avro body. `base` is the offset of the body in the whole payload, so
/// errors report payload offsets.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], base: usize) -> Cursor<'a> {
        Cursor { buf, pos: 0, base }
    }

    #[inline]
    fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    /// A zig-zag varint `long`. Like apache-avro: at most 10 bytes, bits beyond 64 dropped.
    #[inline]
    fn long(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        let mut pos = self.pos;
        let mut acc: u64 = 0;
        let mut shift: u32 = 0;
        loop {
            let Some(&byte) = self.buf.get(pos) else {
                return Err(DecodeError::Truncated {
                    field,
                    offset: self.offset(),
                });
            };
            pos += 1;
            acc |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(DecodeError::VarintOverflow {
                    field,
                    offset: self.offset(),
                });
            }
        }
        self.pos = pos;
        Ok(((acc >> 1) as i64) ^ -((acc & 1) as i64))
    }

    #[inline]
    fn int(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        let offset = self.offset();
        let value = self.long(field)?;
        i32::try_from(value).map_err(|_| DecodeError::IntOutOfRange {
            field,
            value,
            offset,
        })
    }

    /// Length-prefixed bytes.
    #[inline]
    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let offset = self.offset();
        let len = self.long(field)?;
        if len < 0 {
            return Err(DecodeError::NegativeLength { field, len, offset });
        }
        let start = self.pos;
        let data = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .and_then(|end| self.buf.get(start..end))
            .ok_or(DecodeError::Truncated {
                field,
                offset: self.offset(),
            })?;
        self.pos = start + data.len();
        Ok(data)
    }

    #[inline]
    fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let data = self.bytes(field)?;
        // SIMD validation on the hot path; std only to locate an error.
        if let Ok(s) = simdutf8::basic::from_utf8(data) {
            return Ok(s);
        }
        std::str::from_utf8(data).map_err(|e| DecodeError::InvalidUtf8 {
            field,
            offset: self
                .offset()
                .saturating_sub(data.len())
                .saturating_add(e.valid_up_to()),
        })
    }

    /// Reads a string into `out`, reusing its buffer.
    #[inline]
    fn string_into(&mut self, field: &'static str, out: &mut String) -> Result<(), DecodeError> {
        let s = self.str(field)?;
        out.clear();
        out.push_str(s);
        Ok(())
    }

    /// Reads a `["null", string]` into `out`, reusing its buffer when present.
    #[inline]
    fn opt_string_into(
        &mut self,
        field: &'static str,
        out: &mut Option<String>,
    ) -> Result<(), DecodeError> {
        if self.union_is_some(field)? {
            match out {
                Some(buf) => self.string_into(field, buf),
                None => {
                    *out = Some(self.string(field)?);
                    Ok(())
                }
            }
        } else {
            *out = None;
            Ok(())
        }
    }

    #[inline]
    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        self.str(field).map(str::to_owned)
    }

    /// The branch index of a `["null", T]` union: `false` for null, `true` for `T`.
    #[inline]
    fn union_is_some(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        let offset = self.offset();
        match self.long(field)? {
            0 => Ok(false),
            1 => Ok(true),
            index => Err(DecodeError::BadUnionIndex {
                field,
                index,
                offset,
            }),
        }
    }

    #[inline]
    fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, DecodeError> {
        if self.union_is_some(field)? {
            self.string(field).map(Some)
        } else {
            Ok(None)
        }
    }

    #[inline]
    fn enum_of<T: Copy>(&mut self, field: &'static str, symbols: &[T]) -> Result<T, DecodeError> {
        let offset = self.offset();
        let index = self.long(field)?;
        usize::try_from(index)
            .ok()
            .and_then(|i| symbols.get(i).copied())
            .ok_or(DecodeError::BadEnumIndex {
                field,
                index,
                offset,
            })
    }

    fn opt_amount(&mut self, field: &'static str) -> Result<Option<Amount>, DecodeError> {
        if !self.union_is_some(field)? {
            return Ok(None);
        }
        let bytes = self.bytes(field)?;
        units_from_be_bytes(bytes)
            .map(|units| Some(Amount::from_units(units)))
            .ok_or(DecodeError::DecimalOverflow { field })
    }

    /// A `map<string>`, returned sorted by key with duplicate keys resolved last-wins — the
    /// same content apache-avro's `HashMap` holds.
    fn string_map(&mut self, field: &'static str) -> Result<Vec<(String, String)>, DecodeError> {
        let mut entries: Vec<(String, String)> = Vec::new();
        loop {
            let offset = self.offset();
            let count = self.long(field)?;
            let count = match count {
                0 => break,
                c if c > 0 => c,
                c => {
                    // A negative count is followed by the block's size in bytes, which a
                    // reader may use to skip the block; it is read and ignored, as apache-avro does.
                    self.long(field)?;
                    c.checked_neg().ok_or(DecodeError::BadBlockCount {
                        field,
                        count: c,
                        offset,
                    })?
                }
            };
            // Each entry takes at least two bytes; never reserve more than the input can hold.
            let remaining = self.buf.len().saturating_sub(self.pos) / 2;
            let count_usize = usize::try_from(count).unwrap_or(usize::MAX);
            entries.reserve(count_usize.min(remaining));
            for _ in 0..count {
                let key = self.string("attributes key")?;
                let value = self.string("attributes value")?;
                entries.push((key, value));
            }
        }
        normalize_map(&mut entries);
        Ok(entries)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        let count = self.buf.len().saturating_sub(self.pos);
        if count == 0 {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                count,
                offset: self.offset(),
            })
        }
    }
}

/// Sorts map entries by key and keeps the last value of duplicate keys.
pub(crate) fn normalize_map(entries: &mut Vec<(String, String)>) {
    if entries.len() < 2 {
        return;
    }
    if entries.windows(2).all(|w| matches!(w, [a, b] if a.0 < b.0)) {
        return;
    }
    // Stable: equal keys keep their wire order, so the last of each run is the last written.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            std::mem::swap(&mut later.1, &mut earlier.1);
            true
        } else {
            false
        }
    });
}

/// Decodes a `TouchpointEvent` v1 body (no framing header). `base` is the offset of the body
/// in the payload, used in error offsets.
pub fn decode_touchpoint_body(body: &[u8], base: usize) -> Result<TouchpointEvent, DecodeError> {
    let mut c = Cursor::new(body, base);
    let event = TouchpointEvent {
        event_id: c.string("event_id")?,
        occurred_at: c.long("occurred_at")?,
        customer_id: c.string("customer_id")?,
        segment: c.string("segment")?,
        channel: c.enum_of("channel", &Channel::ALL)?,
        touchpoint: c.string("touchpoint")?,
        kind: c.enum_of("kind", &TouchpointKind::ALL)?,
        case_id: c.opt_string("case_id")?,
        amount: c.opt_amount("amount")?,
        currency: c.opt_string("currency")?,
        attributes: c.string_map("attributes")?,
    };
    c.finish()?;
    Ok(event)
}

/// [`decode_touchpoint_body`] into an existing event, reusing its string buffers (no
/// allocation once the buffers are large enough). On error `out` holds unspecified content.
pub fn decode_touchpoint_body_into(
    body: &[u8],
    base: usize,
    out: &mut TouchpointEvent,
) -> Result<(), DecodeError> {
    let mut c = Cursor::new(body, base);
    c.string_into("event_id", &mut out.event_id)?;
    out.occurred_at = c.long("occurred_at")?;
    c.string_into("customer_id", &mut out.customer_id)?;
    c.string_into("segment", &mut out.segment)?;
    out.channel = c.enum_of("channel", &Channel::ALL)?;
    c.string_into("touchpoint", &mut out.touchpoint)?;
    out.kind = c.enum_of("kind", &TouchpointKind::ALL)?;
    c.opt_string_into("case_id", &mut out.case_id)?;
    out.amount = c.opt_amount("amount")?;
    c.opt_string_into("currency", &mut out.currency)?;
    out.attributes = c.string_map("attributes")?;
    c.finish()
}

/// [`decode_survey_body`] into an existing response, reusing its string buffers.
/// On error `out` holds unspecified content.
pub fn decode_survey_body_into(
    body: &[u8],
    base: usize,
    out: &mut SurveyResponse,
) -> Result<(), DecodeError> {
    let mut c = Cursor::new(body, base);
    c.string_into("response_id", &mut out.response_id)?;
    out.submitted_at = c.long("submitted_at")?;
    c.string_into("customer_id", &mut out.customer_id)?;
    c.string_into("segment", &mut out.segment)?;
    out.channel = c.enum_of("channel", &Channel::ALL)?;
    c.string_into("touchpoint", &mut out.touchpoint)?;
    out.metric = c.enum_of("metric", &SurveyMetric::ALL)?;
    out.score = c.int("score")?;
    c.opt_string_into("comment", &mut out.comment)?;
    c.opt_string_into("language", &mut out.language)?;
    c.opt_string_into("case_id", &mut out.case_id)?;
    c.finish()
}

/// Decodes a `SurveyResponse` v1 body (no framing header). `base` is the offset of the body
/// in the payload, used in error offsets.
pub fn decode_survey_body(body: &[u8], base: usize) -> Result<SurveyResponse, DecodeError> {
    let mut c = Cursor::new(body, base);
    let response = SurveyResponse {
        response_id: c.string("response_id")?,
        submitted_at: c.long("submitted_at")?,
        customer_id: c.string("customer_id")?,
        segment: c.string("segment")?,
        channel: c.enum_of("channel", &Channel::ALL)?,
        touchpoint: c.string("touchpoint")?,
        metric: c.enum_of("metric", &SurveyMetric::ALL)?,
        score: c.int("score")?,
        comment: c.opt_string("comment")?,
        language: c.opt_string("language")?,
        case_id: c.opt_string("case_id")?,
    };
    c.finish()?;
    Ok(response)
}
