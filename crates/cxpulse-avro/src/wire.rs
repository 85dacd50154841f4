//! Wire framings: Confluent (`0x00`, 4-byte big-endian schema id, Avro binary body) and Avro
//! single-object encoding (`0xC3 0x01`, 8-byte little-endian CRC-64-AVRO fingerprint, body).

use crate::error::DecodeError;
use crate::registry::SchemaRef;

/// First byte of a Confluent-framed message.
pub const CONFLUENT_MAGIC: u8 = 0x00;
/// Confluent header length: magic + 4-byte schema id.
pub const CONFLUENT_HEADER_LEN: usize = 5;
/// The two marker bytes of Avro single-object encoding (format version 1).
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// Single-object header length: marker + 8-byte fingerprint.
pub const SINGLE_OBJECT_HEADER_LEN: usize = 10;

/// A framing of Avro records in a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// `0x00` + schema id (u32, big-endian) + body.
    Confluent,
    /// `0xC3 0x01` + CRC-64-AVRO fingerprint (u64, little-endian) + body.
    SingleObject,
}

impl WireFormat {
    pub fn header_len(self) -> usize {
        match self {
            WireFormat::Confluent => CONFLUENT_HEADER_LEN,
            WireFormat::SingleObject => SINGLE_OBJECT_HEADER_LEN,
        }
    }
}

/// The parsed header of a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub format: WireFormat,
    pub schema: SchemaRef,
    /// Offset of the Avro body in the payload.
    pub body_offset: usize,
}

/// Reads the framing header; the format is told by the first byte.
pub fn parse_header(payload: &[u8]) -> Result<Header, DecodeError> {
    match payload {
        [] => Err(DecodeError::EmptyPayload),
        [CONFLUENT_MAGIC, rest @ ..] => {
            let id: [u8; 4] =
                rest.get(..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(DecodeError::Truncated {
                        field: "confluent schema id",
                        offset: 1,
                    })?;
            Ok(Header {
                format: WireFormat::Confluent,
                schema: SchemaRef::Id(u32::from_be_bytes(id)),
                body_offset: CONFLUENT_HEADER_LEN,
            })
        }
        [0xC3, rest @ ..] => {
            match rest.first() {
                None => {
                    return Err(DecodeError::Truncated {
                        field: "single-object marker",
                        offset: 1,
                    })
                }
                Some(&0x01) => {}
                Some(&byte) => return Err(DecodeError::UnknownSingleObjectVersion { byte }),
            }
            let fp: [u8; 8] =
                rest.get(1..9)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(DecodeError::Truncated {
                        field: "single-object fingerprint",
                        offset: 2,
                    })?;
            Ok(Header {
                format: WireFormat::SingleObject,
                schema: SchemaRef::Fingerprint(u64::from_le_bytes(fp)),
                body_offset: SINGLE_OBJECT_HEADER_LEN,
            })
        }
        [byte, ..] => Err(DecodeError::UnknownMagic { byte: *byte }),
    }
}

/// Appends a Confluent header for `schema_id`.
pub fn write_confluent_header(schema_id: u32, out: &mut Vec<u8>) {
    out.push(CONFLUENT_MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// Appends a single-object header for `fingerprint`.
pub fn write_single_object_header(fingerprint: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
    out.extend_from_slice(&fingerprint.to_le_bytes());
}
