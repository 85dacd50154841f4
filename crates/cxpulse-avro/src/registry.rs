//! In-memory schema registry: schema id → writer schema (Confluent framing) and
//! CRC-64-AVRO fingerprint → writer schema (single-object framing).

use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use apache_avro::schema::ResolvedSchema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema;
use rustc_hash::FxHashMap;

use crate::error::RegistryError;
use crate::schema::{self, fingerprint64, RecordKind};

/// Id of `schemas/touchpoint_event.avsc` (v1) in the built-in registry.
pub const TOUCHPOINT_V1_SCHEMA_ID: u32 = 1;
/// Id of `schemas/survey_response.avsc` (v1) in the built-in registry.
pub const SURVEY_V1_SCHEMA_ID: u32 = 2;

/// One registered writer schema.
pub struct WriterSchema {
    id: u32,
    kind: RecordKind,
    schema: Schema,
    canonical_form: String,
    logical_form: String,
    fingerprint: u64,
    reader_identical: bool,
}

impl WriterSchema {
    fn build(id: u32, schema_json: &str) -> Result<WriterSchema, RegistryError> {
        let invalid = |reason: String| RegistryError::InvalidSchema { id, reason };
        let schema = Schema::parse_str(schema_json).map_err(|e| invalid(e.to_string()))?;
        let Schema::Record(record) = &schema else {
            let found = match &schema {
                Schema::Enum(_) => "enum".to_owned(),
                Schema::Union(_) => "union".to_owned(),
                Schema::Array(_) => "array".to_owned(),
                Schema::Map(_) => "map".to_owned(),
                Schema::Fixed(_) => "fixed".to_owned(),
                other => {
                    format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase()
                }
            };
            return Err(RegistryError::NotARecord { id, found });
        };
        let name = record.name.fullname(None);
        let kind =
            RecordKind::from_full_name(&name).ok_or(RegistryError::UnknownRecord { id, name })?;
        let reader = schema::reader(kind);
        match SchemaCompatibility::can_read(&schema, reader.schema) {
            Ok(Compatibility::Full) => {}
            Ok(Compatibility::Partial) => {
                return Err(RegistryError::Incompatible {
                    id,
                    kind,
                    reason: "only partially compatible: some values the writer can produce would not resolve".into(),
                })
            }
            Err(e) => {
                return Err(RegistryError::Incompatible {
                    id,
                    kind,
                    reason: e.to_string(),
                })
            }
        }
        // The generic decoder resolves the writer's names on every call; make sure it can.
        ResolvedSchema::try_from(&schema).map_err(|e| invalid(e.to_string()))?;
        let canonical_form =
            schema::parsing_canonical_form(schema_json).map_err(|e| invalid(e.to_string()))?;
        let logical_form = schema::logical_form(schema_json).map_err(|e| invalid(e.to_string()))?;
        let fingerprint = fingerprint64(canonical_form.as_bytes());
        let reader_identical = logical_form == reader.logical_form;
        Ok(WriterSchema {
            id,
            kind,
            schema,
            canonical_form,
            logical_form,
            fingerprint,
            reader_identical,
        })
    }

    /// The id this schema was first registered under.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Which record the schema writes.
    pub fn kind(&self) -> RecordKind {
        self.kind
    }

    /// The parsed writer schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Parsing Canonical Form (Avro specification).
    pub fn canonical_form(&self) -> &str {
        &self.canonical_form
    }

    /// CRC-64-AVRO fingerprint of the canonical form.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// `true` when the schema is the current reader schema (same canonical form and same logical
    /// types): its records take the hand-written fast path; all others go through apache-avro
    /// schema resolution.
    pub fn is_reader_identical(&self) -> bool {
        self.reader_identical
    }
}

impl fmt::Debug for WriterSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterSchema")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("fingerprint", &format_args!("0x{:016x}", self.fingerprint))
            .field("reader_identical", &self.reader_identical)
            .finish()
    }
}

/// How a payload names its writer schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaRef {
    /// Confluent framing: a registry id.
    Id(u32),
    /// Single-object framing: the CRC-64-AVRO fingerprint of the canonical form.
    Fingerprint(u64),
}

#[derive(Default)]
pub(crate) struct Tables {
    by_id: FxHashMap<u32, Arc<WriterSchema>>,
    by_fingerprint: FxHashMap<u64, Arc<WriterSchema>>,
}

struct Shared {
    /// Immutable registrations made at construction: looked up without any lock.
    builtin: Vec<Arc<WriterSchema>>,
    dynamic: RwLock<Tables>,
}

/// Schema id / fingerprint → writer schema. Cloning is an `Arc` clone: every clone sees the
/// same registrations, and lookups of the built-in schemas take no lock at all.
#[derive(Clone)]
pub struct SchemaRegistry {
    shared: Arc<Shared>,
}

impl Default for SchemaRegistry {
    fn default() -> Self {
        SchemaRegistry::new()
    }
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("ids", &self.ids())
            .finish()
    }
}

/// A registry lookup result that keeps the registry's read lock (if any) while it is used.
pub(crate) enum Found<'a> {
    Builtin(&'a WriterSchema),
    Dynamic(RwLockReadGuard<'a, Tables>, SchemaRef),
}

impl Found<'_> {
    pub(crate) fn get(&self) -> Option<&WriterSchema> {
        match self {
            Found::Builtin(w) => Some(w),
            Found::Dynamic(tables, SchemaRef::Id(id)) => tables.by_id.get(id).map(|w| &**w),
            Found::Dynamic(tables, SchemaRef::Fingerprint(fp)) => {
                tables.by_fingerprint.get(fp).map(|w| &**w)
            }
        }
    }
}

impl SchemaRegistry {
    /// A registry holding the current schemas: [`TOUCHPOINT_V1_SCHEMA_ID`] = touchpoint v1 and
    /// [`SURVEY_V1_SCHEMA_ID`] = survey v1 (and their fingerprints).
    pub fn new() -> SchemaRegistry {
        let builtin = RecordKind::ALL
            .into_iter()
            .map(|kind| {
                // The embedded schemas are checked by this crate's tests.
                let w = WriterSchema::build(kind.builtin_schema_id(), kind.reader_schema_json())
                    .expect("embedded schema registers");
                Arc::new(w)
            })
            .collect();
        SchemaRegistry {
            shared: Arc::new(Shared {
                builtin,
                dynamic: RwLock::new(Tables::default()),
            }),
        }
    }

    /// A registry without any schema (every id must be [`SchemaRegistry::register`]ed).
    pub fn empty() -> SchemaRegistry {
        SchemaRegistry {
            shared: Arc::new(Shared {
                builtin: Vec::new(),
                dynamic: RwLock::new(Tables::default()),
            }),
        }
    }

    fn read_tables(&self) -> RwLockReadGuard<'_, Tables> {
        // A panic while holding the write lock cannot leave the maps half-updated (inserts are
        // single calls), so a poisoned lock is still usable.
        self.shared
            .dynamic
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn find(&self, r: SchemaRef) -> Found<'_> {
        let builtin = self.shared.builtin.iter().find(|w| match r {
            SchemaRef::Id(id) => w.id == id,
            SchemaRef::Fingerprint(fp) => w.fingerprint == fp,
        });
        match builtin {
            Some(w) => Found::Builtin(w),
            None => Found::Dynamic(self.read_tables(), r),
        }
    }

    /// Registers `schema_json` as the writer schema of `id` (and of its fingerprint).
    ///
    /// The schema must be one of the cxpulse records (full name `io.cxpulse.v1.TouchpointEvent`
    /// or `io.cxpulse.v1.SurveyResponse`) and fully resolvable by the current reader schema.
    /// Registering the same schema again under the same id is a no-op; a different schema
    /// under a taken id is an [`RegistryError::IdConflict`].
    pub fn register(&self, id: u32, schema_json: &str) -> Result<Arc<WriterSchema>, RegistryError> {
        let new = WriterSchema::build(id, schema_json)?;
        let same = |w: &WriterSchema| w.logical_form == new.logical_form;
        if let Some(b) = self.shared.builtin.iter().find(|w| w.id == id) {
            return if same(b) {
                Ok(Arc::clone(b))
            } else {
                Err(RegistryError::IdConflict { id })
            };
        }
        let builtin_fp = self
            .shared
            .builtin
            .iter()
            .find(|w| w.fingerprint == new.fingerprint);
        if let Some(b) = builtin_fp {
            if !same(b) {
                return Err(RegistryError::FingerprintConflict {
                    id,
                    fingerprint: new.fingerprint,
                });
            }
        }
        let mut tables = self
            .shared
            .dynamic
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = tables.by_id.get(&id) {
            return if same(existing) {
                Ok(Arc::clone(existing))
            } else {
                Err(RegistryError::IdConflict { id })
            };
        }
        if let Some(existing) = tables.by_fingerprint.get(&new.fingerprint) {
            if !same(existing) {
                return Err(RegistryError::FingerprintConflict {
                    id,
                    fingerprint: new.fingerprint,
                });
            }
        }
        let new = Arc::new(new);
        tables.by_id.insert(id, Arc::clone(&new));
        if builtin_fp.is_none() {
            tables
                .by_fingerprint
                .entry(new.fingerprint)
                .or_insert_with(|| Arc::clone(&new));
        }
        Ok(new)
    }

    /// The writer schema registered under `id`.
    pub fn by_id(&self, id: u32) -> Option<Arc<WriterSchema>> {
        if let Some(b) = self.shared.builtin.iter().find(|w| w.id == id) {
            return Some(Arc::clone(b));
        }
        self.read_tables().by_id.get(&id).cloned()
    }

    /// The writer schema whose canonical form has this CRC-64-AVRO fingerprint.
    pub fn by_fingerprint(&self, fingerprint: u64) -> Option<Arc<WriterSchema>> {
        if let Some(b) = self
            .shared
            .builtin
            .iter()
            .find(|w| w.fingerprint == fingerprint)
        {
            return Some(Arc::clone(b));
        }
        self.read_tables().by_fingerprint.get(&fingerprint).cloned()
    }

    /// All registered ids, ascending.
    pub fn ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.shared.builtin.iter().map(|w| w.id).collect();
        ids.extend(self.read_tables().by_id.keys().copied());
        ids.sort_unstable();
        ids
    }
}
