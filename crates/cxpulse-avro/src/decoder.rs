//! The decoder: framing header → writer schema → fast path or apache-avro resolution.

use cxpulse_core::{CxEvent, Millis, SurveyResponse, TouchpointEvent, ValidationPolicy};

use crate::error::{DecodeError, RecordError};
use crate::fast;
use crate::generic;
use crate::registry::{SchemaRef, SchemaRegistry, WriterSchema};
use crate::schema::RecordKind;
use crate::wire::parse_header;

/// Which decoder handles records whose writer schema is the reader schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodePath {
    /// The hand-written fast path for the reader schema, apache-avro resolution for every other
    /// writer schema. The default.
    Auto,
    /// apache-avro decode + resolution for every record (for tests and benchmarks).
    Generic,
}

/// Decodes framed payloads (Confluent or single-object, told apart by the first byte) into the
/// domain types. Cheap to clone and `Send + Sync`: share one per process or clone per thread.
#[derive(Clone, Debug)]
pub struct Decoder {
    registry: SchemaRegistry,
    path: DecodePath,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(SchemaRegistry::new())
    }
}

impl Decoder {
    pub fn new(registry: SchemaRegistry) -> Decoder {
        Decoder {
            registry,
            path: DecodePath::Auto,
        }
    }

    /// Chooses the decode path (default [`DecodePath::Auto`]).
    pub fn with_path(mut self, path: DecodePath) -> Decoder {
        self.path = path;
        self
    }

    pub fn path(&self) -> DecodePath {
        self.path
    }

    pub fn registry(&self) -> &SchemaRegistry {
        &self.registry
    }

    /// Parses the header, finds the writer schema and runs `f` on it with the body.
    fn with_writer<T>(
        &self,
        payload: &[u8],
        f: impl FnOnce(&WriterSchema, &[u8], usize) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        let header = parse_header(payload)?;
        let body = payload.get(header.body_offset..).unwrap_or_default();
        let found = self.registry.find(header.schema);
        let writer = found.get().ok_or(match header.schema {
            SchemaRef::Id(id) => DecodeError::UnknownSchemaId { id },
            SchemaRef::Fingerprint(fingerprint) => DecodeError::UnknownFingerprint { fingerprint },
        })?;
        f(writer, body, header.body_offset)
    }

    fn fast(&self, writer: &WriterSchema) -> bool {
        self.path == DecodePath::Auto && writer.is_reader_identical()
    }

    /// Decodes a framed `TouchpointEvent`.
    pub fn decode_touchpoint(&self, payload: &[u8]) -> Result<TouchpointEvent, DecodeError> {
        self.with_writer(payload, |writer, body, base| {
            generic::expect_kind(writer, RecordKind::Touchpoint)?;
            if self.fast(writer) {
                fast::decode_touchpoint_body(body, base)
            } else {
                generic::decode_touchpoint_body(writer, body, base)
            }
        })
    }

    /// Decodes a framed `SurveyResponse`.
    pub fn decode_survey(&self, payload: &[u8]) -> Result<SurveyResponse, DecodeError> {
        self.with_writer(payload, |writer, body, base| {
            generic::expect_kind(writer, RecordKind::Survey)?;
            if self.fast(writer) {
                fast::decode_survey_body(body, base)
            } else {
                generic::decode_survey_body(writer, body, base)
            }
        })
    }

    /// Decodes a framed record that must be of `kind` ([`DecodeError::WrongRecord`] otherwise).
    pub fn decode(&self, kind: RecordKind, payload: &[u8]) -> Result<CxEvent, DecodeError> {
        match kind {
            RecordKind::Touchpoint => self.decode_touchpoint(payload).map(CxEvent::Touchpoint),
            RecordKind::Survey => self.decode_survey(payload).map(CxEvent::Survey),
        }
    }

    /// Decodes a framed record of whichever kind its writer schema says (for mixed topics).
    pub fn decode_any(&self, payload: &[u8]) -> Result<CxEvent, DecodeError> {
        self.with_writer(payload, |writer, body, base| {
            match (writer.kind(), self.fast(writer)) {
                (RecordKind::Touchpoint, true) => {
                    fast::decode_touchpoint_body(body, base).map(CxEvent::Touchpoint)
                }
                (RecordKind::Survey, true) => {
                    fast::decode_survey_body(body, base).map(CxEvent::Survey)
                }
                (RecordKind::Touchpoint, false) => {
                    generic::decode_touchpoint_body(writer, body, base).map(CxEvent::Touchpoint)
                }
                (RecordKind::Survey, false) => {
                    generic::decode_survey_body(writer, body, base).map(CxEvent::Survey)
                }
            }
        })
    }

    /// Decodes a framed record of `kind` into `out`, reusing `out`'s buffers when it already
    /// holds a record of that kind (the hot path of the stream job: no allocation per record).
    /// Gives exactly what [`Decoder::decode`] gives; on error `out` is unspecified.
    pub fn decode_into(
        &self,
        kind: RecordKind,
        payload: &[u8],
        out: &mut CxEvent,
    ) -> Result<(), DecodeError> {
        self.with_writer(payload, |writer, body, base| {
            generic::expect_kind(writer, kind)?;
            if !self.fast(writer) {
                *out = match kind {
                    RecordKind::Touchpoint => {
                        CxEvent::Touchpoint(generic::decode_touchpoint_body(writer, body, base)?)
                    }
                    RecordKind::Survey => {
                        CxEvent::Survey(generic::decode_survey_body(writer, body, base)?)
                    }
                };
                return Ok(());
            }
            match (kind, &mut *out) {
                (RecordKind::Touchpoint, CxEvent::Touchpoint(e)) => {
                    fast::decode_touchpoint_body_into(body, base, e)
                }
                (RecordKind::Survey, CxEvent::Survey(r)) => {
                    fast::decode_survey_body_into(body, base, r)
                }
                (RecordKind::Touchpoint, _) => {
                    *out = CxEvent::Touchpoint(fast::decode_touchpoint_body(body, base)?);
                    Ok(())
                }
                (RecordKind::Survey, _) => {
                    *out = CxEvent::Survey(fast::decode_survey_body(body, base)?);
                    Ok(())
                }
            }
        })
    }

    /// [`Decoder::decode_into`] followed by validation (see [`Decoder::decode_validated`]).
    pub fn decode_validated_into(
        &self,
        kind: RecordKind,
        payload: &[u8],
        now: Millis,
        policy: &ValidationPolicy,
        out: &mut CxEvent,
    ) -> Result<(), RecordError> {
        self.decode_into(kind, payload, out)?;
        out.validate(now, policy)?;
        Ok(())
    }

    /// Decodes a framed record of `kind` and validates it against the contract, with `now` as
    /// the processing clock.
    pub fn decode_validated(
        &self,
        kind: RecordKind,
        payload: &[u8],
        now: Millis,
        policy: &ValidationPolicy,
    ) -> Result<CxEvent, RecordError> {
        let event = self.decode(kind, payload)?;
        event.validate(now, policy)?;
        Ok(event)
    }
}
