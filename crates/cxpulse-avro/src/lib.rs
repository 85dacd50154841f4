//! cxpulse-avro: the Avro codecs of cxpulse.
//!
//! * [`SchemaRegistry`] maps Confluent schema ids and single-object fingerprints to writer
//!   schemas; built in: [`TOUCHPOINT_V1_SCHEMA_ID`] = 1 (`schemas/touchpoint_event.avsc`) and
//!   [`SURVEY_V1_SCHEMA_ID`] = 2 (`schemas/survey_response.avsc`).
//! * [`Decoder`] reads either wire format ([`WireFormat`]). Records whose writer schema is the
//!   reader schema take a hand-written fast path ([`fast`]) straight into the domain types;
//!   every other writer schema (older or newer) is decoded and resolved by apache-avro
//!   ([`generic`]). Both paths accept and refuse the same inputs and produce the same events.
//! * [`Encoder`] writes the current schemas in either wire format.
//!
//! Conventions every path follows:
//! * map attributes are returned sorted by key; a key written twice keeps its last value;
//! * `decimal(18, 4)` amounts must fit 18 digits ([`DecodeError::DecimalOverflow`] otherwise);
//! * bytes after the end of the record are an error ([`DecodeError::TrailingBytes`]);
//! * no input makes a decoder panic.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod decimal;
mod decoder;
mod encode;
mod error;
pub mod fast;
pub mod generic;
mod registry;
mod schema;
pub mod wire;

pub use decoder::{DecodePath, Decoder};
pub use encode::{encode_survey_body, encode_touchpoint_body, Encoder};
pub use error::{DecodeError, EncodeError, RecordError, RegistryError};
pub use registry::{
    SchemaRef, SchemaRegistry, WriterSchema, SURVEY_V1_SCHEMA_ID, TOUCHPOINT_V1_SCHEMA_ID,
};
pub use schema::{
    fingerprint64, parsing_canonical_form, schema_fingerprint, CanonicalFormError, RecordKind,
    SURVEY_RESPONSE_SCHEMA, TOUCHPOINT_EVENT_SCHEMA,
};
pub use wire::{parse_header, Header, WireFormat};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn shared_types_are_send_and_sync() {
        assert_send_sync::<SchemaRegistry>();
        assert_send_sync::<Decoder>();
        assert_send_sync::<Encoder>();
        assert_send_sync::<WriterSchema>();
    }
}
