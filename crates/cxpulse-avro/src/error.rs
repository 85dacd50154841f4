//! Typed errors of decoding, encoding and schema registration.
//!
//! Every decode error names what went wrong and where: the Avro field being read and the byte
//! offset inside the whole payload (header included), so a dead-lettered message can be
//! inspected at exactly that byte.

use cxpulse_core::ValidationError;
use thiserror::Error;

use crate::schema::RecordKind;

/// Why a payload could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("empty payload: there is no byte to decode")]
    EmptyPayload,
    #[error("unknown magic byte 0x{byte:02x} at offset 0: expected 0x00 (Confluent) or 0xc3 0x01 (Avro single-object)")]
    UnknownMagic { byte: u8 },
    #[error("unknown single-object format version byte 0x{byte:02x} at offset 1 after 0xc3: expected 0x01")]
    UnknownSingleObjectVersion { byte: u8 },
    #[error("schema id {id} (Confluent header, offset 1) is not registered")]
    UnknownSchemaId { id: u32 },
    #[error("schema fingerprint 0x{fingerprint:016x} (single-object header, offset 2) is not registered")]
    UnknownFingerprint { fingerprint: u64 },
    #[error(
        "truncated payload: `{field}` at offset {offset} needs more bytes than the payload has"
    )]
    Truncated { field: &'static str, offset: usize },
    #[error("`{field}` holds invalid UTF-8 at offset {offset}")]
    InvalidUtf8 { field: &'static str, offset: usize },
    #[error("`{field}`: union branch index {index} at offset {offset} does not exist (the union has 2 branches)")]
    BadUnionIndex {
        field: &'static str,
        index: i64,
        offset: usize,
    },
    #[error("`{field}`: enum index {index} at offset {offset} is not a symbol of the schema")]
    BadEnumIndex {
        field: &'static str,
        index: i64,
        offset: usize,
    },
    #[error("`{field}`: value {value} at offset {offset} does not fit an Avro int (32 bits)")]
    IntOutOfRange {
        field: &'static str,
        value: i64,
        offset: usize,
    },
    #[error("`{field}`: variable-length integer at offset {offset} is longer than 10 bytes")]
    VarintOverflow { field: &'static str, offset: usize },
    #[error("`{field}`: decimal does not fit decimal(18, 4) (at most 18 digits)")]
    DecimalOverflow { field: &'static str },
    #[error("`{field}`: negative length {len} at offset {offset}")]
    NegativeLength {
        field: &'static str,
        len: i64,
        offset: usize,
    },
    #[error("`{field}`: map block count {count} at offset {offset} is invalid")]
    BadBlockCount {
        field: &'static str,
        count: i64,
        offset: usize,
    },
    #[error("{count} trailing byte(s) after the end of the record, starting at offset {offset}")]
    TrailingBytes { count: usize, offset: usize },
    #[error("expected a {expected} record but the writer schema is a {found} record")]
    WrongRecord {
        expected: RecordKind,
        found: RecordKind,
    },
    #[error("apache-avro decode or schema resolution failed: {0}")]
    Resolution(String),
}

impl DecodeError {
    /// A short, stable reason label (for metrics and dead-letter headers).
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::EmptyPayload => "empty_payload",
            DecodeError::UnknownMagic { .. } => "unknown_magic",
            DecodeError::UnknownSingleObjectVersion { .. } => "unknown_single_object_version",
            DecodeError::UnknownSchemaId { .. } => "unknown_schema_id",
            DecodeError::UnknownFingerprint { .. } => "unknown_fingerprint",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::InvalidUtf8 { .. } => "invalid_utf8",
            DecodeError::BadUnionIndex { .. } => "bad_union_index",
            DecodeError::BadEnumIndex { .. } => "bad_enum_index",
            DecodeError::IntOutOfRange { .. } => "int_out_of_range",
            DecodeError::VarintOverflow { .. } => "varint_overflow",
            DecodeError::DecimalOverflow { .. } => "decimal_overflow",
            DecodeError::NegativeLength { .. } => "negative_length",
            DecodeError::BadBlockCount { .. } => "bad_block_count",
            DecodeError::TrailingBytes { .. } => "trailing_bytes",
            DecodeError::WrongRecord { .. } => "wrong_record",
            DecodeError::Resolution(_) => "resolution_failed",
        }
    }
}

/// Why a record was refused by [`crate::Decoder::decode_validated`]: it could not be decoded,
/// or it decoded but broke the contract.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RecordError {
    #[error("cannot decode record: {0}")]
    Decode(#[from] DecodeError),
    #[error("record refused by validation: {0}")]
    Invalid(#[from] ValidationError),
}

impl RecordError {
    /// A short, stable snake_case reason label (for metrics and dead-letter headers); the
    /// labels of decode and validation failures never collide.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::Decode(e) => e.reason(),
            RecordError::Invalid(e) => e.reason(),
        }
    }

    /// `"decode"` or `"validate"`: which stage refused the record.
    pub fn stage(&self) -> &'static str {
        match self {
            RecordError::Decode(_) => "decode",
            RecordError::Invalid(_) => "validate",
        }
    }
}

/// Why an event could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("amount of {units} units (1/10000) does not fit decimal(18, 4) (at most 18 digits)")]
    AmountOutOfRange { units: i64 },
}

/// Why [`crate::SchemaRegistry::register`] refused a writer schema.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RegistryError {
    #[error("schema id {id}: not a valid Avro schema: {reason}")]
    InvalidSchema { id: u32, reason: String },
    #[error("schema id {id}: the schema is a {found}, but only records can be registered")]
    NotARecord { id: u32, found: String },
    #[error("schema id {id}: record `{name}` is none of the records cxpulse reads (io.cxpulse.v1.TouchpointEvent, io.cxpulse.v1.SurveyResponse)")]
    UnknownRecord { id: u32, name: String },
    #[error("schema id {id}: the {kind} reader cannot resolve this writer schema: {reason}")]
    Incompatible {
        id: u32,
        kind: RecordKind,
        reason: String,
    },
    #[error("schema id {id} is already registered with a different schema")]
    IdConflict { id: u32 },
    #[error("schema id {id}: fingerprint 0x{fingerprint:016x} is already registered for a schema with different logical types")]
    FingerprintConflict { id: u32, fingerprint: u64 },
}
