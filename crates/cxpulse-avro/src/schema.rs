//! The embedded schemas, Parsing Canonical Form and CRC-64-AVRO fingerprints.
//!
//! apache-avro 0.22's own `Schema::canonical_form()` does not follow the specification for
//! logical types (it writes `{"type":"long"}` instead of `"long"` and keeps `precision`/`scale`),
//! so its fingerprints differ from the ones Java, Python and the Confluent tools compute for
//! schemas with logical types — and both cxpulse schemas have them. Single-object encoding must
//! agree with other writers, so this module implements the specification's Parsing Canonical
//! Form itself (checked against the specification's own test vectors in the tests).

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

use apache_avro::schema::ResolvedSchema;
use apache_avro::Schema;
use serde_json::{Map, Value as Json};

/// `schemas/touchpoint_event.avsc`, the current (v1) writer and reader schema of touchpoints.
pub const TOUCHPOINT_EVENT_SCHEMA: &str = include_str!("../../../schemas/touchpoint_event.avsc");
/// `schemas/survey_response.avsc`, the current (v1) writer and reader schema of survey answers.
pub const SURVEY_RESPONSE_SCHEMA: &str = include_str!("../../../schemas/survey_response.avsc");

/// Which record a payload carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// `io.cxpulse.v1.TouchpointEvent`
    Touchpoint,
    /// `io.cxpulse.v1.SurveyResponse`
    Survey,
}

impl RecordKind {
    pub const ALL: [RecordKind; 2] = [RecordKind::Touchpoint, RecordKind::Survey];

    /// The unqualified Avro record name.
    pub fn record_name(self) -> &'static str {
        match self {
            RecordKind::Touchpoint => "TouchpointEvent",
            RecordKind::Survey => "SurveyResponse",
        }
    }

    /// The fully qualified Avro record name (`io.cxpulse.v1.…`).
    pub fn full_name(self) -> &'static str {
        match self {
            RecordKind::Touchpoint => "io.cxpulse.v1.TouchpointEvent",
            RecordKind::Survey => "io.cxpulse.v1.SurveyResponse",
        }
    }

    /// The JSON of the current reader schema of this record.
    pub fn reader_schema_json(self) -> &'static str {
        match self {
            RecordKind::Touchpoint => TOUCHPOINT_EVENT_SCHEMA,
            RecordKind::Survey => SURVEY_RESPONSE_SCHEMA,
        }
    }

    /// The parsed current reader schema.
    pub fn reader_schema(self) -> &'static Schema {
        reader(self).schema
    }

    /// Parsing Canonical Form of the current reader schema.
    pub fn reader_canonical_form(self) -> &'static str {
        &reader(self).canonical_form
    }

    /// CRC-64-AVRO fingerprint of the current reader schema (the single-object header value).
    pub fn reader_fingerprint(self) -> u64 {
        reader(self).fingerprint
    }

    /// The id the built-in registry gives the current schema of this record.
    pub fn builtin_schema_id(self) -> u32 {
        match self {
            RecordKind::Touchpoint => crate::TOUCHPOINT_V1_SCHEMA_ID,
            RecordKind::Survey => crate::SURVEY_V1_SCHEMA_ID,
        }
    }

    /// Short snake_case label (`touchpoint` / `survey`).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Touchpoint => "touchpoint",
            RecordKind::Survey => "survey",
        }
    }

    pub(crate) fn from_full_name(name: &str) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|k| k.full_name() == name)
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.record_name())
    }
}

/// The reader side of one record kind, parsed once per process.
pub(crate) struct ReaderSchema {
    pub(crate) schema: &'static Schema,
    pub(crate) resolved: ResolvedSchema<'static>,
    pub(crate) canonical_form: String,
    /// Canonical form that also keeps logical types (see [`logical_form`]).
    pub(crate) logical_form: String,
    pub(crate) fingerprint: u64,
}

pub(crate) fn reader(kind: RecordKind) -> &'static ReaderSchema {
    static TOUCHPOINT: OnceLock<ReaderSchema> = OnceLock::new();
    static SURVEY: OnceLock<ReaderSchema> = OnceLock::new();
    let cell = match kind {
        RecordKind::Touchpoint => &TOUCHPOINT,
        RecordKind::Survey => &SURVEY,
    };
    cell.get_or_init(|| build_reader(kind))
}

fn build_reader(kind: RecordKind) -> ReaderSchema {
    // The embedded schemas are constants of this crate, checked by its tests; failing here
    // would be a build defect, not bad input.
    let json = kind.reader_schema_json();
    // Built once per process and kind (the caller is a `OnceLock`), so leaking gives the
    // `'static` schema that `ResolvedSchema` borrows without any repeated allocation.
    let schema: &'static Schema = Box::leak(Box::new(
        Schema::parse_str(json).expect("embedded reader schema must parse"),
    ));
    let resolved = ResolvedSchema::try_from(schema).expect("embedded reader schema must resolve");
    let canonical_form =
        parsing_canonical_form(json).expect("embedded reader schema has a canonical form");
    let logical_form = logical_form(json).expect("embedded reader schema has a logical form");
    let fingerprint = fingerprint64(canonical_form.as_bytes());
    ReaderSchema {
        schema,
        resolved,
        canonical_form,
        logical_form,
        fingerprint,
    }
}

/// CRC-64-AVRO (Rabin) of `data`, as the Avro specification defines schema fingerprints.
///
/// The single-object header carries this value as 8 little-endian bytes.
pub fn fingerprint64(data: &[u8]) -> u64 {
    let mut fp = CRC64_EMPTY;
    for &b in data {
        fp = (fp >> 8) ^ CRC64_TABLE[((fp ^ u64::from(b)) & 0xff) as usize];
    }
    fp
}

const CRC64_EMPTY: u64 = 0xc15d_213a_a4d7_a795;

const CRC64_TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut j = 0;
        while j < 8 {
            fp = (fp >> 1) ^ (CRC64_EMPTY & 0u64.wrapping_sub(fp & 1));
            j += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
};

/// Why a schema has no canonical form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot compute the canonical form: {0}")]
pub struct CanonicalFormError(pub String);

/// The Parsing Canonical Form of a JSON schema, as the Avro specification defines it
/// ([PRIMITIVES], [FULLNAMES], [STRIP], [ORDER], [STRINGS], [INTEGERS], [WHITESPACE]).
pub fn parsing_canonical_form(schema_json: &str) -> Result<String, CanonicalFormError> {
    canonical(schema_json, false)
}

/// The fingerprint of [`parsing_canonical_form`], i.e. the single-object encoding header value.
pub fn schema_fingerprint(schema_json: &str) -> Result<u64, CanonicalFormError> {
    parsing_canonical_form(schema_json).map(|pcf| fingerprint64(pcf.as_bytes()))
}

/// The canonical form plus `logicalType`, `precision` and `scale`. Two schemas with equal
/// logical forms decode the same bytes into the same values; the fast path requires it
/// (the plain canonical form cannot tell `timestamp-millis` from `timestamp-micros`).
pub(crate) fn logical_form(schema_json: &str) -> Result<String, CanonicalFormError> {
    canonical(schema_json, true)
}

fn canonical(schema_json: &str, keep_logical: bool) -> Result<String, CanonicalFormError> {
    let json: Json = serde_json::from_str(schema_json)
        .map_err(|e| CanonicalFormError(format!("invalid JSON: {e}")))?;
    let mut out = String::with_capacity(schema_json.len());
    let mut seen = HashSet::new();
    Pcf {
        keep_logical,
        seen: &mut seen,
    }
    .write(&json, "", &mut out)?;
    Ok(out)
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

struct Pcf<'a> {
    keep_logical: bool,
    seen: &'a mut HashSet<String>,
}

fn quoted(s: &str, out: &mut String) {
    // serde_json escapes exactly as JSON requires; a plain `str` cannot fail to serialize.
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        Err(_) => {
            out.push('"');
            out.push_str(s);
            out.push('"');
        }
    }
}

fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}.{name}")
    }
}

fn namespace_of(full: &str) -> &str {
    full.rfind('.').map_or("", |i| &full[..i])
}

impl Pcf<'_> {
    fn write(
        &mut self,
        schema: &Json,
        namespace: &str,
        out: &mut String,
    ) -> Result<(), CanonicalFormError> {
        match schema {
            Json::String(name) => {
                if PRIMITIVES.contains(&name.as_str()) {
                    quoted(name, out);
                } else {
                    quoted(&full_name(name, namespace), out);
                }
                Ok(())
            }
            Json::Array(branches) => {
                out.push('[');
                for (i, branch) in branches.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.write(branch, namespace, out)?;
                }
                out.push(']');
                Ok(())
            }
            Json::Object(map) => self.write_object(map, namespace, out),
            other => Err(CanonicalFormError(format!(
                "a schema cannot be the JSON value {other}"
            ))),
        }
    }

    fn write_object(
        &mut self,
        map: &Map<String, Json>,
        namespace: &str,
        out: &mut String,
    ) -> Result<(), CanonicalFormError> {
        let typ = match map.get("type") {
            Some(Json::String(t)) => t.as_str(),
            Some(nested @ (Json::Object(_) | Json::Array(_))) => {
                return self.write(nested, namespace, out)
            }
            _ => {
                return Err(CanonicalFormError(
                    "schema object without a string `type`".into(),
                ))
            }
        };
        match typ {
            t if PRIMITIVES.contains(&t) => {
                if self.keep_logical {
                    if let Some(Json::String(logical)) = map.get("logicalType") {
                        out.push_str("{\"type\":");
                        quoted(t, out);
                        out.push_str(",\"logicalType\":");
                        quoted(logical, out);
                        self.write_decimal_params(map, out)?;
                        out.push('}');
                        return Ok(());
                    }
                }
                quoted(t, out);
                Ok(())
            }
            "record" | "error" | "enum" | "fixed" => {
                let name = match map.get("name") {
                    Some(Json::String(n)) => n.as_str(),
                    _ => {
                        return Err(CanonicalFormError(format!(
                            "named type `{typ}` without a `name`"
                        )))
                    }
                };
                let ns = match map.get("namespace") {
                    Some(Json::String(ns)) => ns.as_str(),
                    Some(Json::Null) | None => namespace,
                    Some(_) => {
                        return Err(CanonicalFormError(format!(
                            "`namespace` of `{name}` is not a string"
                        )))
                    }
                };
                let full = full_name(name, ns);
                if !self.seen.insert(full.clone()) {
                    quoted(&full, out);
                    return Ok(());
                }
                out.push_str("{\"name\":");
                quoted(&full, out);
                out.push_str(",\"type\":");
                match typ {
                    "enum" => {
                        out.push_str("\"enum\",\"symbols\":[");
                        let symbols = match map.get("symbols") {
                            Some(Json::Array(s)) => s,
                            _ => {
                                return Err(CanonicalFormError(format!(
                                    "enum `{full}` without `symbols`"
                                )))
                            }
                        };
                        for (i, s) in symbols.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            match s {
                                Json::String(s) => quoted(s, out),
                                _ => {
                                    return Err(CanonicalFormError(format!(
                                        "enum `{full}` has a non-string symbol"
                                    )))
                                }
                            }
                        }
                        out.push(']');
                    }
                    "fixed" => {
                        out.push_str("\"fixed\",\"size\":");
                        let size = match map.get("size") {
                            Some(Json::Number(n)) => n.as_u64(),
                            Some(Json::String(s)) => s.trim().parse::<u64>().ok(),
                            _ => None,
                        }
                        .ok_or_else(|| {
                            CanonicalFormError(format!("fixed `{full}` without a valid `size`"))
                        })?;
                        out.push_str(&size.to_string());
                        if self.keep_logical {
                            if let Some(Json::String(logical)) = map.get("logicalType") {
                                out.push_str(",\"logicalType\":");
                                quoted(logical, out);
                                self.write_decimal_params(map, out)?;
                            }
                        }
                    }
                    _ => {
                        out.push_str("\"record\",\"fields\":[");
                        let fields = match map.get("fields") {
                            Some(Json::Array(f)) => f,
                            _ => {
                                return Err(CanonicalFormError(format!(
                                    "record `{full}` without `fields`"
                                )))
                            }
                        };
                        let inner_ns = namespace_of(&full).to_owned();
                        for (i, field) in fields.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            let (fname, ftype) = match field {
                                Json::Object(f) => match (f.get("name"), f.get("type")) {
                                    (Some(Json::String(n)), Some(t)) => (n, t),
                                    _ => {
                                        return Err(CanonicalFormError(format!(
                                            "a field of `{full}` lacks `name` or `type`"
                                        )))
                                    }
                                },
                                _ => {
                                    return Err(CanonicalFormError(format!(
                                        "a field of `{full}` is not an object"
                                    )))
                                }
                            };
                            out.push_str("{\"name\":");
                            quoted(fname, out);
                            out.push_str(",\"type\":");
                            self.write(ftype, &inner_ns, out)?;
                            out.push('}');
                        }
                        out.push(']');
                    }
                }
                out.push('}');
                Ok(())
            }
            "array" => {
                let items = map
                    .get("items")
                    .ok_or_else(|| CanonicalFormError("array without `items`".into()))?;
                out.push_str("{\"type\":\"array\",\"items\":");
                self.write(items, namespace, out)?;
                out.push('}');
                Ok(())
            }
            "map" => {
                let values = map
                    .get("values")
                    .ok_or_else(|| CanonicalFormError("map without `values`".into()))?;
                out.push_str("{\"type\":\"map\",\"values\":");
                self.write(values, namespace, out)?;
                out.push('}');
                Ok(())
            }
            // `{"type": "SomeNamedType"}`: a reference written as an object.
            reference => {
                quoted(&full_name(reference, namespace), out);
                Ok(())
            }
        }
    }

    fn write_decimal_params(
        &self,
        map: &Map<String, Json>,
        out: &mut String,
    ) -> Result<(), CanonicalFormError> {
        for key in ["precision", "scale"] {
            if let Some(v) = map.get(key) {
                let n = v.as_u64().ok_or_else(|| {
                    CanonicalFormError(format!("`{key}` is not a non-negative integer"))
                })?;
                out.push_str(&format!(",\"{key}\":{n}"));
            }
        }
        Ok(())
    }
}
