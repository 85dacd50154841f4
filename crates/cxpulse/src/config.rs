//! Configuration: built-in defaults < `cxpulse.toml` < `CXPULSE_<SECTION>__<KEY>` environment
//! variables < command-line flags.
//!
//! * The file is TOML with the sections `[engine]`, `[kafka]`, `[clickhouse]`, `[metrics]`,
//!   `[generator]` and `[demo]` (see `cxpulse.example.toml`, which sets every key to its
//!   default). Every key is optional; an unknown key or section is an error that names it.
//! * The file is `--config FILE`, else `$CXPULSE_CONFIG`, else `./cxpulse.toml` when it
//!   exists, else none (built-in defaults only).
//! * Environment overrides: `CXPULSE_` + the key path in upper case with `__` between the
//!   parts, e.g. `CXPULSE_KAFKA__BOOTSTRAP=broker:9092` sets `kafka.bootstrap`,
//!   `CXPULSE_KAFKA__TOPICS__SURVEYS=cx.surveys.v2` sets `kafka.topics.surveys`. Only
//!   variables with a `__` are overrides (so `CXPULSE_CONFIG`, `CXPULSE_TEST_KAFKA`, … are
//!   not). The value is taken by the type of the key: text as is; numbers and `true`/`false`
//!   parsed; lists as a TOML array (`["a", "b"]`) or, for lists of text, comma-separated
//!   (`a,b`); `engine.windows` only as a TOML array of inline tables. Maps:
//!   `CXPULSE_KAFKA__PROPERTIES__SASL_PASSWORD=…` sets the property `sasl.password` (the
//!   part after `PROPERTIES__` lower-cased, `_` → `.`), and `CXPULSE_KAFKA__PROPERTIES='{
//!   "ssl_engine_id" = "x" }'` (an inline table) adds keys that contain `_`.
//!
//! Every error names the key (`engine.windows[1].length: "24x" is not a duration …`) and
//! where its value came from (the file, an environment variable or a flag).

use crate::duration::parse_millis;
use cxpulse_core::window::{Tier, TimeGrid, WindowConfigError, WindowSpec, DAY_WINDOW_NAME};
use cxpulse_core::{EngineConfig, Millis};
use cxpulse_gen::{GeneratorConfig, Scenario};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use toml::{Table, Value};

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "CXPULSE_";
/// Names the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "CXPULSE_CONFIG";
/// Looked up in the working directory when neither `--config` nor `$CXPULSE_CONFIG` is set.
pub const DEFAULT_FILE: &str = "cxpulse.toml";
/// What secrets are printed as.
pub const REDACTED: &str = "<redacted>";

/// A secret as it may be shown: empty stays empty (so "not set" is visible), anything else
/// is [`REDACTED`].
fn redact_secret(value: &str) -> &'static str {
    if value.is_empty() {
        ""
    } else {
        REDACTED
    }
}
/// Tables whose keys are free (not part of the schema).
const FREE_MAPS: &[&str] = &["kafka.properties"];

// ---------------------------------------------------------------------------------------
// The file model: what `cxpulse.toml` holds (durations as written, e.g. "24h").
// ---------------------------------------------------------------------------------------

/// The whole configuration as written (and as `config check` prints it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub engine: EngineSection,
    pub kafka: KafkaSection,
    pub clickhouse: ClickHouseSection,
    pub metrics: MetricsSection,
    pub generator: GeneratorSection,
    pub demo: DemoSection,
    pub job: JobSection,
}

/// `[engine]`: windows, lateness and the joins (see `docs/windows.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    pub calendar_days: bool,
    /// Fixed local offset for minute/hour/day alignment: `+03:30`, `-05:00`, `Z`.
    pub utc_offset: String,
    pub allowed_lateness: String,
    pub correction_horizon: String,
    pub idle_timeout: String,
    pub max_segments: u64,
    pub preset_segments: Vec<String>,
    pub case_ttl: String,
    pub response_target: String,
    pub follow_up_deadline: String,
    /// Memory per partition for cached window bodies (MiB; 0 disables them). Results do
    /// not depend on it; throughput with many long windows over busy series does.
    pub window_body_mib: u64,
    /// Rolling windows; setting the list replaces the defaults.
    pub windows: Vec<WindowSection>,
}

/// One `[[engine.windows]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSection {
    pub name: String,
    pub length: String,
    /// `minute`, `hour` or `day`: granularity of the window start. Default: minute below
    /// 24 h, hour below 28 d, else day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<String>,
    /// Evaluation step (whole minutes). Default `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide: Option<String>,
}

impl Default for EngineSection {
    fn default() -> Self {
        let window = |name: &str, tail: &str| WindowSection {
            name: name.to_string(),
            length: name.to_string(),
            tail: Some(tail.to_string()),
            slide: Some("1m".to_string()),
        };
        EngineSection {
            calendar_days: true,
            utc_offset: "+00:00".to_string(),
            allowed_lateness: "2m".to_string(),
            correction_horizon: "1h".to_string(),
            idle_timeout: "30s".to_string(),
            max_segments: 200,
            preset_segments: Vec::new(),
            case_ttl: "7d".to_string(),
            response_target: "24h".to_string(),
            follow_up_deadline: "24h".to_string(),
            window_body_mib: (EngineConfig::default().window_body_bytes >> 20) as u64,
            windows: vec![
                window("1h", "minute"),
                window("24h", "hour"),
                window("7d", "hour"),
                window("28d", "day"),
            ],
        }
    }
}

/// `[kafka]`: the input topics and the consumer group.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSection {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub bootstrap: String,
    pub group_id: String,
    pub client_id: String,
    pub dead_letter_topic: String,
    pub topics: TopicsSection,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, `ssl.*`, …).
    pub properties: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_key(k) && !v.is_empty() {
                    REDACTED
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("KafkaSection")
            .field("bootstrap", &self.bootstrap)
            .field("group_id", &self.group_id)
            .field("client_id", &self.client_id)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("topics", &self.topics)
            .field("properties", &properties)
            .finish()
    }
}

/// `[kafka.topics]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsSection {
    pub touchpoints: String,
    pub surveys: String,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            bootstrap: "127.0.0.1:9092".to_string(),
            group_id: "cxpulse".to_string(),
            client_id: "cxpulse".to_string(),
            dead_letter_topic: "cx.dead-letters".to_string(),
            topics: TopicsSection::default(),
            properties: BTreeMap::new(),
        }
    }
}

impl Default for TopicsSection {
    fn default() -> Self {
        TopicsSection {
            touchpoints: "cx.touchpoints".to_string(),
            surveys: "cx.surveys".to_string(),
        }
    }
}

/// `[clickhouse]`: where rows go and how they are batched.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseSection {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: String,
    /// Flush when this many rows are pending …
    pub batch_rows: u64,
    /// … or this long after the last flush.
    pub batch_interval: String,
    /// Attempts after a failed insert (with exponential backoff from `retry_backoff`).
    pub retries: u32,
    pub retry_backoff: String,
    /// TTL of stored rows (windows, panes, survey responses).
    pub retention: String,
}

impl fmt::Debug for ClickHouseSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseSection")
            .field("url", &redact_url(&self.url))
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &redact_secret(&self.password))
            .field("batch_rows", &self.batch_rows)
            .field("batch_interval", &self.batch_interval)
            .field("retries", &self.retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("retention", &self.retention)
            .finish()
    }
}

impl Default for ClickHouseSection {
    fn default() -> Self {
        ClickHouseSection {
            url: "http://127.0.0.1:8123".to_string(),
            database: "cxpulse".to_string(),
            user: "default".to_string(),
            password: String::new(),
            batch_rows: 50_000,
            batch_interval: "1s".to_string(),
            retries: 5,
            retry_backoff: "500ms".to_string(),
            retention: "400d".to_string(),
        }
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// `ip:port` of `GET /metrics` and `GET /healthz`.
    pub listen: String,
    /// Window kinds exported as KPI series (empty: every configured kind and `day`).
    pub windows: Vec<String>,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            listen: "127.0.0.1:9898".to_string(),
            windows: Vec::new(),
        }
    }
}

/// `[generator]`: the synthetic traffic of `cxpulse demo`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorSection {
    pub seed: u64,
    /// Events per second of event time (touchpoints and survey responses together).
    pub events_per_second: f64,
    pub customers: u64,
    pub segments: Vec<String>,
    pub late_share: f64,
    pub late_max: String,
    pub duplicate_share: f64,
    /// `nps-drop:<points>:<channel|all>:<segment|all>:<minute>`, or empty for none.
    pub scenario: String,
}

impl Default for GeneratorSection {
    fn default() -> Self {
        let g = GeneratorConfig::default();
        GeneratorSection {
            seed: g.seed,
            events_per_second: 50.0,
            customers: g.customers,
            segments: g.segments,
            late_share: g.late_share,
            late_max: crate::duration::format_millis(g.late_max_ms),
            duplicate_share: g.duplicate_share,
            scenario: String::new(),
        }
    }
}

/// `[job]`: the stream job (`cxpulse run`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobSection {
    /// How often each partition's state is checkpointed to ClickHouse (and its offsets
    /// committed to Kafka). A restart replays at most this much input.
    pub checkpoint_interval: String,
    /// After SIGTERM/SIGINT: how long the final flush, checkpoint and commit may take.
    pub shutdown_timeout: String,
}

impl Default for JobSection {
    fn default() -> Self {
        JobSection {
            checkpoint_interval: "10s".to_string(),
            shutdown_timeout: "30s".to_string(),
        }
    }
}

/// `[demo]`: the self-contained demo.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoSection {
    /// Where `kpi_windows.jsonl` and `survey_responses.jsonl` are appended.
    pub output_dir: String,
    /// Event time generated and ingested at full speed before going live.
    pub backfill: String,
    /// Input partitions simulated (events are routed by customer).
    pub partitions: u32,
    /// How often the engine advances and the table is redrawn.
    pub tick: String,
}

impl Default for DemoSection {
    fn default() -> Self {
        DemoSection {
            output_dir: "./cxpulse-data".to_string(),
            backfill: "2h".to_string(),
            partitions: 4,
            tick: "1s".to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Typed settings.
// ---------------------------------------------------------------------------------------

/// The validated configuration, in the types the rest of the program uses.
#[derive(Clone, Debug)]
pub struct Settings {
    pub engine: EngineConfig,
    pub kafka: KafkaSection,
    pub clickhouse: ClickHouseSettings,
    pub metrics: MetricsSettings,
    /// `start` is set by whoever runs the generator.
    pub generator: GeneratorConfig,
    pub demo: DemoSettings,
    pub job: JobSettings,
}

/// `[job]`, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSettings {
    pub checkpoint_interval: Duration,
    pub shutdown_timeout: Duration,
}

#[derive(Clone)]
pub struct ClickHouseSettings {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: String,
    pub batch_rows: usize,
    pub batch_interval: Duration,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub retention: Duration,
}

impl fmt::Debug for ClickHouseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseSettings")
            .field("url", &redact_url(&self.url))
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &redact_secret(&self.password))
            .field("batch_rows", &self.batch_rows)
            .field("batch_interval", &self.batch_interval)
            .field("retries", &self.retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("retention", &self.retention)
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct MetricsSettings {
    pub listen: SocketAddr,
    /// `None`: every window kind.
    pub windows: Option<BTreeSet<String>>,
}

#[derive(Clone, Debug)]
pub struct DemoSettings {
    pub output_dir: PathBuf,
    pub backfill_ms: Millis,
    pub partitions: u32,
    pub tick: Duration,
}

// ---------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------

/// A configuration problem; the message names the key and where its value came from.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{key}: unknown key{from}; known keys here: {known}")]
    UnknownKey {
        key: String,
        from: String,
        known: String,
    },
    #[error("{key}: {message}{from}")]
    Invalid {
        key: String,
        message: String,
        from: String,
    },
}

// ---------------------------------------------------------------------------------------
// Loading.
// ---------------------------------------------------------------------------------------

/// One value set on top of the file (an environment variable or a flag).
#[derive(Clone, Debug)]
pub struct Override {
    /// Dotted key path, e.g. `kafka.properties.sasl.password` is `["kafka", "properties",
    /// "sasl.password"]`.
    pub path: Vec<String>,
    pub value: Value,
    /// `CXPULSE_KAFKA__BOOTSTRAP`, `--rate`, …
    pub origin: String,
}

impl Override {
    /// A flag's value for `key` (dotted, no free maps).
    pub fn flag(key: &str, value: impl Into<Value>, flag: &str) -> Override {
        Override {
            path: key.split('.').map(str::to_string).collect(),
            value: value.into(),
            origin: flag.to_string(),
        }
    }
}

/// A loaded configuration: as written (normalized) and typed.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub file: FileConfig,
    pub settings: Settings,
    /// The configuration file read, if any.
    pub path: Option<PathBuf>,
    /// Origins of the overrides applied, in order (environment variables, flags).
    pub overrides: Vec<String>,
}

/// Which file to read: `--config`, else `$CXPULSE_CONFIG`, else `<cwd>/cxpulse.toml` if it
/// exists.
pub fn resolve_path(
    explicit: Option<&Path>,
    env: &[(String, String)],
    cwd: &Path,
) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some((_, p)) = env.iter().find(|(k, v)| k == CONFIG_ENV && !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let default = cwd.join(DEFAULT_FILE);
    default.is_file().then_some(default)
}

/// Reads `path` (or nothing), applies the environment `env` and then `flags`, validates.
pub fn load(
    path: Option<&Path>,
    env: &[(String, String)],
    flags: &[Override],
) -> Result<Loaded, ConfigError> {
    let (table, origin) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?;
            (
                parse_file(&text, &p.display().to_string())?,
                Some(p.display().to_string()),
            )
        }
        None => (Table::new(), None),
    };
    let mut loaded = load_table(table, origin, env, flags)?;
    loaded.path = path.map(Path::to_path_buf);
    Ok(loaded)
}

/// Like [`load`] for configuration text (`origin` names it in errors).
pub fn load_str(
    text: &str,
    origin: &str,
    env: &[(String, String)],
    flags: &[Override],
) -> Result<Loaded, ConfigError> {
    let table = parse_file(text, origin)?;
    load_table(table, Some(origin.to_string()), env, flags)
}

fn parse_file(text: &str, origin: &str) -> Result<Table, ConfigError> {
    toml::from_str::<Table>(text).map_err(|e| ConfigError::Syntax {
        origin: origin.to_string(),
        message: format!("not valid TOML: {}", e.to_string().trim_end()),
    })
}

/// The schema: the defaults as a TOML tree (every key present).
fn schema() -> Table {
    Table::try_from(FileConfig::default()).expect("the defaults serialize to TOML")
}

/// Where values came from, for error messages.
struct Origins {
    file: Option<String>,
    /// (dotted key, origin), in the order applied.
    overrides: Vec<(String, String)>,
}

impl Origins {
    fn source_note(&self, key: &str) -> String {
        let hit = self.overrides.iter().rev().find(|(k, _)| {
            key == k
                || key.starts_with(&format!("{k}."))
                || key.starts_with(&format!("{k}["))
                || k.starts_with(&format!("{key}."))
        });
        match (hit, &self.file) {
            (Some((_, origin)), _) => format!(" (set by {origin})"),
            (None, Some(file)) => format!(" (in {file})"),
            (None, None) => String::new(),
        }
    }

    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let key = key.into();
        ConfigError::Invalid {
            from: self.source_note(&key),
            key,
            message: message.into(),
        }
    }

    fn duration(&self, key: &str, text: &str) -> Result<Millis, ConfigError> {
        parse_millis(text).map_err(|m| self.invalid(key, m))
    }

    fn std_duration(&self, key: &str, text: &str, min_ms: Millis) -> Result<Duration, ConfigError> {
        let ms = self.duration(key, text)?;
        if ms < min_ms {
            return Err(self.invalid(
                key,
                format!(
                    "{text:?} is too short (at least {})",
                    crate::duration::format_millis(min_ms)
                ),
            ));
        }
        Ok(Duration::from_millis(ms.unsigned_abs()))
    }
}

fn load_table(
    mut table: Table,
    file: Option<String>,
    env: &[(String, String)],
    flags: &[Override],
) -> Result<Loaded, ConfigError> {
    let schema = schema();
    let mut overrides = env_overrides(env, &schema)?;
    overrides.extend(flags.iter().cloned());
    let mut origins = Origins {
        file,
        overrides: Vec::new(),
    };
    for o in &overrides {
        set_path(&mut table, &o.path, o.value.clone());
        origins.overrides.push((o.path.join("."), o.origin.clone()));
    }
    check_keys(&table, &schema, "", &origins)?;
    let mut file: FileConfig =
        serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            origins.invalid(key, e.inner().message().to_string())
        })?;
    normalize(&mut file);
    let settings = settings(&file, &origins)?;
    Ok(Loaded {
        file,
        settings,
        path: None,
        overrides: overrides.into_iter().map(|o| o.origin).collect(),
    })
}

/// The `CXPULSE_<SECTION>__<KEY>` variables of `env`, typed by the schema.
fn env_overrides(env: &[(String, String)], schema: &Table) -> Result<Vec<Override>, ConfigError> {
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k[ENV_PREFIX.len()..].contains("__"))
        .collect();
    vars.sort();
    let mut out = Vec::new();
    for (var, raw) in vars {
        let bad = |message: String| ConfigError::Invalid {
            key: var.clone(),
            message,
            from: String::new(),
        };
        let parts: Vec<String> = var[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if parts.iter().any(String::is_empty) {
            return Err(bad(
                "empty key part (use `__` only between the parts of the key)".into(),
            ));
        }
        // Walk the schema to the key, stopping at free maps.
        let mut path: Vec<String> = Vec::new();
        let mut node: &Table = schema;
        let mut leaf: Option<&Value> = None;
        let mut i = 0;
        while i < parts.len() {
            let dotted = path.join(".");
            if FREE_MAPS.contains(&dotted.as_str()) {
                let key = parts[i..].join(".").replace('_', ".");
                path.push(key);
                leaf = Some(&FREE_MAP_LEAF);
                break;
            }
            let part = &parts[i];
            let Some(v) = node.get(part) else {
                let full = if dotted.is_empty() {
                    part.clone()
                } else {
                    format!("{dotted}.{part}")
                };
                return Err(ConfigError::UnknownKey {
                    key: full,
                    from: format!(" (set by {var})"),
                    known: known_keys(node),
                });
            };
            path.push(part.clone());
            i += 1;
            match v {
                Value::Table(t) if i < parts.len() => node = t,
                _ if i < parts.len() => {
                    return Err(bad(format!(
                        "`{}` is not a table; set it whole with {ENV_PREFIX}{}",
                        path.join("."),
                        path.iter()
                            .map(|p| p.to_ascii_uppercase())
                            .collect::<Vec<_>>()
                            .join("__")
                    )))
                }
                _ => leaf = Some(v),
            }
        }
        let leaf = leaf.expect("the walk ends at a leaf");
        let dotted = path.join(".");
        let value = typed_env_value(raw, leaf).map_err(|m| bad(format!("{dotted}: {m}")))?;
        out.push(Override {
            path,
            value,
            origin: var.clone(),
        });
    }
    Ok(out)
}

/// The type of a free-map entry (text).
static FREE_MAP_LEAF: Value = Value::String(String::new());

fn parse_toml_value(raw: &str) -> Result<Value, String> {
    let doc = format!("value = {raw}");
    let mut t: Table = toml::from_str(&doc)
        .map_err(|e| format!("{raw:?} is not a TOML value: {}", e.message()))?;
    t.remove("value")
        .ok_or_else(|| format!("{raw:?} is not a TOML value"))
}

fn typed_env_value(raw: &str, like: &Value) -> Result<Value, String> {
    match like {
        Value::String(_) => Ok(Value::String(raw.to_string())),
        Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("{raw:?} is not an integer")),
        Value::Float(_) => raw
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::Float)
            .ok_or_else(|| format!("{raw:?} is not a number")),
        Value::Boolean(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err(format!("{raw:?} is not true or false")),
        },
        Value::Array(items) => {
            if raw.trim_start().starts_with('[') {
                match parse_toml_value(raw)? {
                    v @ Value::Array(_) => Ok(v),
                    _ => Err(format!("{raw:?} is not a TOML array")),
                }
            } else if items.first().is_some_and(|v| !v.is_str()) {
                Err(format!(
                    "{raw:?}: this list takes a TOML array, e.g. '[{{ name = \"1h\", length = \"1h\" }}]'"
                ))
            } else {
                Ok(Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_string()))
                        .collect(),
                ))
            }
        }
        Value::Table(_) => match parse_toml_value(raw)? {
            v @ Value::Table(_) => Ok(v),
            _ => Err(format!(
                "{raw:?} is not a TOML inline table ({{ key = \"value\" }})"
            )),
        },
        Value::Datetime(_) => Err("date-times are not configurable".to_string()),
    }
}

/// Sets `path` in `table`, creating tables on the way; tables merge key by key.
fn set_path(table: &mut Table, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = table;
    for p in parents {
        let entry = node
            .entry(p.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        node = entry.as_table_mut().expect("just made a table");
    }
    match (node.get_mut(last), value) {
        (Some(Value::Table(existing)), Value::Table(new)) => {
            for (k, v) in new {
                existing.insert(k, v);
            }
        }
        (_, value) => {
            node.insert(last.clone(), value);
        }
    }
}

fn known_keys(schema: &Table) -> String {
    schema
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every key of `table` must exist in `schema` (except inside free maps).
fn check_keys(
    table: &Table,
    schema: &Table,
    prefix: &str,
    origins: &Origins,
) -> Result<(), ConfigError> {
    if FREE_MAPS.contains(&prefix) {
        return Ok(());
    }
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let Some(s) = schema.get(k) else {
            return Err(ConfigError::UnknownKey {
                from: origins.source_note(&key),
                key,
                known: known_keys(schema),
            });
        };
        match (v, s) {
            (Value::Table(t), Value::Table(st)) => check_keys(t, st, &key, origins)?,
            (Value::Array(items), Value::Array(sitems)) => {
                if let Some(Value::Table(st)) = sitems.first() {
                    for (i, item) in items.iter().enumerate() {
                        if let Value::Table(t) = item {
                            check_keys(t, st, &format!("{key}[{i}]"), origins)?;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The default window tail for a length.
fn default_tail(length_ms: Option<Millis>) -> &'static str {
    match length_ms {
        Some(l) if l >= 28 * cxpulse_core::DAY_MS => "day",
        Some(l) if l >= cxpulse_core::DAY_MS => "hour",
        _ => "minute",
    }
}

/// Fills the optional keys with what they default to, so the printed configuration is
/// complete.
fn normalize(file: &mut FileConfig) {
    for w in &mut file.engine.windows {
        if w.tail.is_none() {
            w.tail = Some(default_tail(parse_millis(&w.length).ok()).to_string());
        }
        if w.slide.is_none() {
            w.slide = Some("1m".to_string());
        }
    }
}

fn parse_utc_offset(text: &str) -> Result<i32, String> {
    let bad = || {
        format!(
            "{text:?} is not a UTC offset (use e.g. \"+00:00\", \"+03:30\", \"-05:00\" or \"Z\")"
        )
    };
    let t = text.trim();
    if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") {
        return Ok(0);
    }
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => (&rest[..2], &rest[2..]),
        None => (rest, "0"),
    };
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    if !(0..60).contains(&m) || h < 0 {
        return Err(bad());
    }
    Ok(sign * (h * 60 + m))
}

fn parse_tier(text: &str) -> Option<Tier> {
    match text {
        "minute" => Some(Tier::Minute),
        "hour" => Some(Tier::Hour),
        "day" => Some(Tier::Day),
        _ => None,
    }
}

fn settings(f: &FileConfig, o: &Origins) -> Result<Settings, ConfigError> {
    Ok(Settings {
        engine: engine_settings(&f.engine, o)?,
        kafka: kafka_settings(&f.kafka, o)?,
        clickhouse: clickhouse_settings(&f.clickhouse, o)?,
        metrics: metrics_settings(f, o)?,
        generator: generator_settings(&f.generator, o)?,
        demo: demo_settings(&f.demo, o)?,
        job: job_settings(&f.job, o)?,
    })
}

/// `[engine]` → [`EngineConfig`], checked with [`EngineConfig::validate`].
fn engine_settings(e: &EngineSection, o: &Origins) -> Result<EngineConfig, ConfigError> {
    let mut windows = Vec::new();
    let mut names = BTreeSet::new();
    for (i, w) in e.windows.iter().enumerate() {
        let key = format!("engine.windows[{i}]");
        if w.name.is_empty() {
            return Err(o.invalid(format!("{key}.name"), "must not be empty"));
        }
        if w.name == DAY_WINDOW_NAME {
            return Err(o.invalid(
                format!("{key}.name"),
                "`day` is reserved for the calendar days (engine.calendar_days)",
            ));
        }
        if !names.insert(w.name.clone()) {
            return Err(o.invalid(format!("{key}.name"), format!("{:?} is used twice", w.name)));
        }
        let length = o.duration(&format!("{key}.length"), &w.length)?;
        let tail_text = w
            .tail
            .clone()
            .unwrap_or_else(|| default_tail(Some(length)).to_string());
        let tail = parse_tier(&tail_text).ok_or_else(|| {
            o.invalid(
                format!("{key}.tail"),
                format!("{tail_text:?} is not one of \"minute\", \"hour\", \"day\""),
            )
        })?;
        let slide = o.duration(&format!("{key}.slide"), w.slide.as_deref().unwrap_or("1m"))?;
        let spec = WindowSpec::new(&w.name, length, tail, slide);
        spec.validate().map_err(|err| match err {
            WindowConfigError::BadWindow { problem, .. } => {
                o.invalid(key.clone(), format!("window {:?}: {problem}", w.name))
            }
            other => o.invalid(key.clone(), other.to_string()),
        })?;
        windows.push(spec);
    }
    let utc_offset_minutes =
        parse_utc_offset(&e.utc_offset).map_err(|m| o.invalid("engine.utc_offset", m))?;
    TimeGrid::new(utc_offset_minutes)
        .map_err(|err| o.invalid("engine.utc_offset", err.to_string()))?;
    let cfg = EngineConfig {
        windows,
        calendar_days: e.calendar_days,
        utc_offset_minutes,
        allowed_lateness_ms: o.duration("engine.allowed_lateness", &e.allowed_lateness)?,
        correction_horizon_ms: o.duration("engine.correction_horizon", &e.correction_horizon)?,
        idle_timeout_ms: o.duration("engine.idle_timeout", &e.idle_timeout)?,
        max_segments: usize::try_from(e.max_segments)
            .map_err(|_| o.invalid("engine.max_segments", "is too large"))?,
        preset_segments: e.preset_segments.clone(),
        case_ttl_ms: o.duration("engine.case_ttl", &e.case_ttl)?,
        response_target_ms: o.duration("engine.response_target", &e.response_target)?,
        follow_up_deadline_ms: o.duration("engine.follow_up_deadline", &e.follow_up_deadline)?,
        window_body_bytes: e
            .window_body_mib
            .checked_mul(1 << 20)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(|| o.invalid("engine.window_body_mib", "is too large"))?,
        // Runtime choices (e.g. persist_panes) are made by the command that runs the engine.
        ..EngineConfig::default()
    };
    if let Some(i) = e
        .preset_segments
        .iter()
        .position(|s| s.is_empty() || s == "all")
    {
        return Err(o.invalid(
            format!("engine.preset_segments[{i}]"),
            "segment names must be non-empty and not the reserved `all`",
        ));
    }
    cfg.validate().map_err(|err| match err {
        cxpulse_core::engine::EngineConfigError::Out { field, rule, value } => {
            let unit = if field == "preset_segments" {
                ""
            } else {
                " ms"
            };
            o.invalid(
                format!("engine.{field}"),
                format!("must be {rule} (got {value}{unit})"),
            )
        }
        cxpulse_core::engine::EngineConfigError::Window(WindowConfigError::NoWindows) => o.invalid(
            "engine.windows",
            "no rolling windows and engine.calendar_days = false: nothing to compute",
        ),
        other => o.invalid("engine", other.to_string()),
    })?;
    Ok(cfg)
}

fn kafka_settings(k: &KafkaSection, o: &Origins) -> Result<KafkaSection, ConfigError> {
    for (key, value) in [
        ("kafka.bootstrap", &k.bootstrap),
        ("kafka.group_id", &k.group_id),
        ("kafka.client_id", &k.client_id),
        ("kafka.dead_letter_topic", &k.dead_letter_topic),
        ("kafka.topics.touchpoints", &k.topics.touchpoints),
        ("kafka.topics.surveys", &k.topics.surveys),
    ] {
        if value.trim().is_empty() {
            return Err(o.invalid(key, "must not be empty"));
        }
    }
    if k.topics.touchpoints == k.topics.surveys {
        return Err(o.invalid(
            "kafka.topics.surveys",
            format!("{:?} is also the touchpoint topic", k.topics.surveys),
        ));
    }
    if k.properties.keys().any(|p| p.trim().is_empty()) {
        return Err(o.invalid("kafka.properties", "property names must not be empty"));
    }
    Ok(k.clone())
}

fn clickhouse_settings(
    c: &ClickHouseSection,
    o: &Origins,
) -> Result<ClickHouseSettings, ConfigError> {
    if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
        return Err(o.invalid(
            "clickhouse.url",
            format!("{:?} is not an http:// or https:// URL", redact_url(&c.url)),
        ));
    }
    let identifier = |s: &str| {
        !s.is_empty()
            && s.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            && !s.starts_with(|ch: char| ch.is_ascii_digit())
    };
    if !identifier(&c.database) {
        return Err(o.invalid(
            "clickhouse.database",
            format!(
                "{:?} is not a plain identifier (letters, digits, _)",
                c.database
            ),
        ));
    }
    if c.batch_rows == 0 {
        return Err(o.invalid("clickhouse.batch_rows", "must be at least 1"));
    }
    if c.retries > 100 {
        return Err(o.invalid("clickhouse.retries", "must be at most 100"));
    }
    Ok(ClickHouseSettings {
        url: c.url.clone(),
        database: c.database.clone(),
        user: c.user.clone(),
        password: c.password.clone(),
        batch_rows: usize::try_from(c.batch_rows)
            .map_err(|_| o.invalid("clickhouse.batch_rows", "is too large"))?,
        batch_interval: o.std_duration("clickhouse.batch_interval", &c.batch_interval, 1)?,
        retries: c.retries,
        retry_backoff: o.std_duration("clickhouse.retry_backoff", &c.retry_backoff, 0)?,
        retention: o.std_duration("clickhouse.retention", &c.retention, cxpulse_core::DAY_MS)?,
    })
}

fn metrics_settings(f: &FileConfig, o: &Origins) -> Result<MetricsSettings, ConfigError> {
    let m = &f.metrics;
    let listen: SocketAddr = m.listen.trim().parse().map_err(|_| {
        o.invalid(
            "metrics.listen",
            format!(
                "{:?} is not an ip:port address (e.g. \"127.0.0.1:9898\", \"0.0.0.0:9898\")",
                m.listen
            ),
        )
    })?;
    let mut known: Vec<String> = f.engine.windows.iter().map(|w| w.name.clone()).collect();
    if f.engine.calendar_days {
        known.push(DAY_WINDOW_NAME.to_string());
    }
    for (i, w) in m.windows.iter().enumerate() {
        if !known.contains(w) {
            return Err(o.invalid(
                format!("metrics.windows[{i}]"),
                format!(
                    "{w:?} is not a configured window (configured: {})",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(MetricsSettings {
        listen,
        windows: (!m.windows.is_empty()).then(|| m.windows.iter().cloned().collect()),
    })
}

fn generator_settings(g: &GeneratorSection, o: &Origins) -> Result<GeneratorConfig, ConfigError> {
    if !(g.events_per_second > 0.0 && g.events_per_second <= 1e6) {
        return Err(o.invalid(
            "generator.events_per_second",
            format!(
                "must be above 0 and at most 1000000 (got {})",
                g.events_per_second
            ),
        ));
    }
    if g.customers == 0 {
        return Err(o.invalid("generator.customers", "must be at least 1"));
    }
    if g.segments.is_empty() {
        return Err(o.invalid("generator.segments", "needs at least one segment"));
    }
    if let Some(i) = g.segments.iter().position(|s| s.is_empty()) {
        return Err(o.invalid(format!("generator.segments[{i}]"), "must not be empty"));
    }
    for (key, share) in [
        ("generator.late_share", g.late_share),
        ("generator.duplicate_share", g.duplicate_share),
    ] {
        if !(0.0..=1.0).contains(&share) {
            return Err(o.invalid(key, format!("must be between 0 and 1 (got {share})")));
        }
    }
    let scenario = if g.scenario.trim().is_empty() {
        None
    } else {
        Some(
            Scenario::parse(g.scenario.trim())
                .map_err(|e| o.invalid("generator.scenario", e.to_string()))?,
        )
    };
    let cfg = GeneratorConfig {
        seed: g.seed,
        start: GeneratorConfig::default().start,
        events_per_second: g.events_per_second,
        customers: g.customers,
        segments: g.segments.clone(),
        late_share: g.late_share,
        late_max_ms: o.duration("generator.late_max", &g.late_max)?,
        duplicate_share: g.duplicate_share,
        scenario,
    };
    cfg.validate()
        .map_err(|e| o.invalid("generator", e.to_string()))?;
    Ok(cfg)
}

fn job_settings(j: &JobSection, o: &Origins) -> Result<JobSettings, ConfigError> {
    let checkpoint_interval =
        o.std_duration("job.checkpoint_interval", &j.checkpoint_interval, 100)?;
    if checkpoint_interval > Duration::from_secs(3600) {
        return Err(o.invalid(
            "job.checkpoint_interval",
            format!("{:?} is more than 1h", j.checkpoint_interval),
        ));
    }
    let shutdown_timeout = o.std_duration("job.shutdown_timeout", &j.shutdown_timeout, 1000)?;
    Ok(JobSettings {
        checkpoint_interval,
        shutdown_timeout,
    })
}

fn demo_settings(d: &DemoSection, o: &Origins) -> Result<DemoSettings, ConfigError> {
    if d.output_dir.trim().is_empty() {
        return Err(o.invalid("demo.output_dir", "must not be empty"));
    }
    let backfill_ms = o.duration("demo.backfill", &d.backfill)?;
    if backfill_ms > 7 * cxpulse_core::DAY_MS {
        return Err(o.invalid("demo.backfill", format!("{:?} is more than 7d", d.backfill)));
    }
    if !(1..=1024).contains(&d.partitions) {
        return Err(o.invalid(
            "demo.partitions",
            format!("must be between 1 and 1024 (got {})", d.partitions),
        ));
    }
    let tick = o.std_duration("demo.tick", &d.tick, 100)?;
    if tick > Duration::from_secs(60) {
        return Err(o.invalid("demo.tick", format!("{:?} is more than 1m", d.tick)));
    }
    Ok(DemoSettings {
        output_dir: PathBuf::from(&d.output_dir),
        backfill_ms,
        partitions: d.partitions,
        tick,
    })
}

// ---------------------------------------------------------------------------------------
// Printing with secrets redacted.
// ---------------------------------------------------------------------------------------

/// True for keys whose values are secrets: names containing `password`, `secret`, `token`
/// or `credential`, ending in `key.pem`, `.key` or `_key`, and `sasl.jaas.config` /
/// `sasl.oauthbearer.config`; but not `*.url`, `*.location`, `*.endpoint` (addresses and
/// file paths).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    if [".url", "_url", ".location", ".endpoint", ".file"]
        .iter()
        .any(|s| k.ends_with(s))
    {
        return false;
    }
    ["password", "secret", "token", "credential"]
        .iter()
        .any(|s| k.contains(s))
        || k.ends_with("key.pem")
        || k.ends_with(".key")
        || k.ends_with("_key")
        || k == "sasl.jaas.config"
        || k == "sasl.oauthbearer.config"
}

/// `scheme://user:password@host/…` → `scheme://user:<redacted>@host/…`.
pub fn redact_url(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_string();
    };
    let rest = &text[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return text.to_string();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    if !userinfo.contains(':') {
        return text.to_string();
    }
    format!("{}://{user}:{REDACTED}{}", &text[..scheme_end], &rest[at..])
}

fn redact(value: &mut Value) {
    match value {
        Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                match v {
                    Value::String(s) if is_secret_key(k) && !s.is_empty() => {
                        *s = REDACTED.to_string();
                    }
                    _ => redact(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) => *s = redact_url(s),
        _ => {}
    }
}

impl Loaded {
    /// The resolved configuration as TOML, secrets replaced by `<redacted>`.
    pub fn redacted_toml(&self) -> String {
        let mut value = Value::try_from(&self.file).expect("the configuration serializes");
        redact(&mut value);
        toml::to_string_pretty(&value).expect("a TOML table serializes")
    }

    /// `defaults < FILE < CXPULSE_… < --flag`.
    pub fn sources(&self) -> String {
        let mut parts = vec!["defaults".to_string()];
        if let Some(p) = &self.path {
            parts.push(p.display().to_string());
        }
        parts.extend(self.overrides.iter().cloned());
        parts.join(" < ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys() {
        for k in [
            "password",
            "sasl.password",
            "ssl.key.password",
            "sasl.oauthbearer.client.secret",
            "api_token",
            "ssl.key.pem",
            "sasl.jaas.config",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "user",
            "sasl.mechanism",
            "ssl.key.location",
            "sasl.oauthbearer.token.endpoint.url",
            "security.protocol",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
        assert_eq!(
            redact_url("http://u:p@h:8123/x"),
            "http://u:<redacted>@h:8123/x"
        );
        assert_eq!(redact_url("http://h:8123"), "http://h:8123");
    }

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_utc_offset("+03:30"), Ok(210));
        assert_eq!(parse_utc_offset("-05:00"), Ok(-300));
        assert_eq!(parse_utc_offset("Z"), Ok(0));
        assert_eq!(parse_utc_offset("+0545"), Ok(345));
        assert!(parse_utc_offset("03:30").is_err());
        assert!(parse_utc_offset("+03:75").is_err());
    }

    #[test]
    fn defaults_are_valid_and_match_the_engine_defaults() {
        let loaded = load(None, &[], &[]).unwrap();
        assert_eq!(loaded.settings.engine, EngineConfig::default());
        assert_eq!(loaded.file, FileConfig::default());
    }
}
