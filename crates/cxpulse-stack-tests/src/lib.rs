//! Helpers for the tests of what people see (`tests/`): the Grafana dashboards in
//! `grafana/dashboards/`, their queries and template variables, the ClickHouse plugin's
//! macros, the TypeScript file that type-checks a dashboard against `@grafana/schema`, and
//! the locations of the tools the tests run. See `docs/grafana.md`.
//!
//! Nothing here talks to a server; the tests do.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `uid` of the Prometheus datasource (grafana/provisioning/datasources/cxpulse.yaml).
pub const PROMETHEUS_UID: &str = "cxpulse-prometheus";
/// `uid` of the ClickHouse datasource.
pub const CLICKHOUSE_UID: &str = "cxpulse-clickhouse";
/// Plugin id of the official ClickHouse datasource.
pub const CLICKHOUSE_TYPE: &str = "grafana-clickhouse-datasource";

/// The repository root.
pub fn repo_root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}

/// One dashboard file.
#[derive(Clone, Debug)]
pub struct Dashboard {
    /// File name without `.json`, e.g. `cx-overview`.
    pub name: String,
    pub path: PathBuf,
    pub json: Value,
}

impl Dashboard {
    pub fn title(&self) -> &str {
        self.json["title"].as_str().unwrap_or("")
    }

    pub fn uid(&self) -> &str {
        self.json["uid"].as_str().unwrap_or("")
    }

    /// Every panel, the panels inside rows included, in file order.
    pub fn panels(&self) -> Vec<&Value> {
        let mut out = Vec::new();
        fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
            for p in panels.as_array().into_iter().flatten() {
                out.push(p);
                if let Some(inner) = p.get("panels") {
                    walk(inner, out);
                }
            }
        }
        walk(&self.json["panels"], &mut out);
        out
    }
}

/// Every `grafana/dashboards/*.json`, sorted by name. Panics on unreadable or invalid JSON.
pub fn dashboards() -> Vec<Dashboard> {
    let dir = repo_root().join("grafana/dashboards");
    let mut out: Vec<Dashboard> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()));
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Dashboard { name, path, json }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!out.is_empty(), "no dashboards in {}", dir.display());
    out
}

/// Which datasource a query goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Prometheus,
    ClickHouse,
}

/// One query of one panel.
#[derive(Clone, Debug)]
pub struct Query {
    pub dashboard: String,
    pub panel: String,
    pub ref_id: String,
    pub source: Source,
    /// PromQL (`expr`) or SQL (`rawSql`), as written (variables and macros not expanded).
    pub text: String,
    /// The panel's relative time override (`timeFrom`, e.g. `56d`), if any.
    pub time_from: Option<String>,
}

impl Query {
    /// `dashboard / panel / refId`, for messages.
    pub fn name(&self) -> String {
        format!("{} / {} / {}", self.dashboard, self.panel, self.ref_id)
    }
}

fn datasource_of(v: &Value) -> Option<&str> {
    v.get("datasource")?.get("type")?.as_str()
}

/// Every query of every panel of `d`. A target whose datasource is neither Prometheus nor
/// the ClickHouse plugin, or that has no query text, is an error.
pub fn queries(d: &Dashboard) -> Result<Vec<Query>, String> {
    let mut out = Vec::new();
    for p in d.panels() {
        let panel = p["title"].as_str().unwrap_or("?").to_string();
        let panel_ds = datasource_of(p);
        for t in p["targets"].as_array().into_iter().flatten() {
            let ref_id = t["refId"].as_str().unwrap_or("?").to_string();
            let ds = datasource_of(t).or(panel_ds);
            let (source, field) = match ds {
                Some("prometheus") => (Source::Prometheus, "expr"),
                Some(CLICKHOUSE_TYPE) => (Source::ClickHouse, "rawSql"),
                other => {
                    return Err(format!(
                        "{} / {panel} / {ref_id}: unsupported datasource type {other:?}",
                        d.name
                    ))
                }
            };
            let text = t[field].as_str().unwrap_or("").to_string();
            if text.trim().is_empty() {
                return Err(format!("{} / {panel} / {ref_id}: empty `{field}`", d.name));
            }
            out.push(Query {
                dashboard: d.name.clone(),
                panel: panel.clone(),
                ref_id,
                source,
                text,
                time_from: p["timeFrom"].as_str().map(str::to_string),
            });
        }
    }
    Ok(out)
}

/// A template variable of a dashboard.
#[derive(Clone, Debug)]
pub struct Variable {
    pub name: String,
    pub kind: String,
    /// The query of a `query` variable (e.g. `label_values(metric{…}, label)`).
    pub query: String,
    /// The default value(s) saved in the dashboard (`$__all` for "All").
    pub current: Vec<String>,
    pub include_all: bool,
    pub all_value: Option<String>,
}

/// The template variables of `d`, in order (later ones may refer to earlier ones).
pub fn variables(d: &Dashboard) -> Vec<Variable> {
    let mut out = Vec::new();
    for v in d.json["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = match &v["query"] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("query")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            _ => String::new(),
        };
        let current = match &v["current"]["value"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        out.push(Variable {
            name: v["name"].as_str().unwrap_or("").to_string(),
            kind: v["type"].as_str().unwrap_or("").to_string(),
            query,
            current,
            include_all: v["includeAll"].as_bool().unwrap_or(false),
            all_value: v["allValue"].as_str().map(str::to_string),
        });
    }
    out
}

/// `label_values(SELECTOR, LABEL)` → (`SELECTOR`, `LABEL`); `None` for other forms.
pub fn parse_label_values(query: &str) -> Option<(String, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let comma = inner.rfind(',')?;
    let selector = inner[..comma].trim();
    let label = inner[comma + 1..].trim();
    if selector.is_empty()
        || label.is_empty()
        || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return None;
    }
    Some((selector.to_string(), label.to_string()))
}

/// Grafana's template interpolation: `$name`, `${name}` and `[[name]]` are replaced with
/// `vars[name]`. Built-ins (`$__rate_interval`, `$__interval`, `$__range`, …) are looked up in
/// `vars` too (key `__rate_interval`). A name not in `vars` is an error, except built-ins when
/// `keep_unknown_builtins` is set: then they stay for a later step (the ClickHouse plugin's
/// macros like `$__timeFilter(…)` are expanded by the plugin, after interpolation).
pub fn interpolate(
    text: &str,
    vars: &BTreeMap<String, String>,
    keep_unknown_builtins: bool,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let dollar = rest.find('$');
        let bracket = rest.find("[[");
        let at = match (dollar, bracket) {
            (None, None) => {
                out.push_str(rest);
                return Ok(out);
            }
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
        };
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (name, len) = if let Some(t) = tail.strip_prefix("${") {
            let end = t
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
            let inner = &t[..end];
            if inner.contains(':') {
                return Err(format!(
                    "variable format `${{{inner}}}` is not supported by the test (write ${{name}})"
                ));
            }
            (inner, end + 3)
        } else if let Some(t) = tail.strip_prefix("[[") {
            let end = t
                .find("]]")
                .ok_or_else(|| format!("unclosed [[ in {text:?}"))?;
            (&t[..end], end + 4)
        } else {
            let t = &tail[1..];
            let end = t
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(t.len());
            (&t[..end], end + 1)
        };
        if name.is_empty() {
            return Err(format!("a lone `$` in {text:?}"));
        }
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None if keep_unknown_builtins && name.starts_with("__") => out.push_str(&tail[..len]),
            None => return Err(format!("unknown template variable `{name}` in {text:?}")),
        }
        rest = &tail[len..];
    }
}

/// Grafana-style durations: `15s`, `30m`, `24h`, `56d`, `8w`, `1y`.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let n: i64 = text[..unit_at].parse().ok()?;
    let unit = match &text[unit_at..] {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "y" => 365 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// The time range and interval a panel query runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ms: i64,
    pub to_ms: i64,
    /// `$__interval` (Grafana: range / max data points, rounded).
    pub interval_ms: i64,
}

/// `YYYY-MM-DD` (UTC) of a Unix time in milliseconds.
pub fn utc_date(ms: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Expands the macros of the official ClickHouse datasource (`grafana-clickhouse-datasource`,
/// `pkg/macros/macros.go`) the way the plugin does before it sends a query: `$__timeFilter(c)`
/// → `c >= toDateTime(FROM) AND c <= toDateTime(TO)` (Unix seconds), `$__timeFilter_ms(c)`
/// with `fromUnixTimestamp64Milli(ms)`, `$__dateFilter(c)` with `toDate('YYYY-MM-DD')`,
/// `$__dateTimeFilter(d, t)` / `$__dt(d, t)`, `$__fromTime`, `$__toTime`, `$__fromTime_ms`,
/// `$__toTime_ms`, `$__timeInterval(c)` → `toStartOfInterval(toDateTime(c), INTERVAL N
/// second)`, `$__timeInterval_ms(c)`, `$__interval_s`. Any other `$__name` is an error.
pub fn expand_clickhouse_macros(sql: &str, r: TimeRange) -> Result<String, String> {
    let from_s = r.from_ms.div_euclid(1000);
    let to_s = r.to_ms.div_euclid(1000);
    let interval_s = (r.interval_ms / 1000).max(1);
    let interval_ms = r.interval_ms.max(1);
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(at) = rest.find("$__") {
        out.push_str(&rest[..at]);
        let t = &rest[at + 3..];
        let name_len = t
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(t.len());
        let name = &t[..name_len];
        let mut consumed = 3 + name_len;
        let mut args: Vec<String> = Vec::new();
        if t[name_len..].starts_with('(') {
            let body = &t[name_len + 1..];
            let mut depth = 0usize;
            let mut end = None;
            for (i, c) in body.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => {
                        end = Some(i);
                        break;
                    }
                    ')' => depth -= 1,
                    _ => {}
                }
            }
            let end = end.ok_or_else(|| format!("unclosed macro $__{name}( in {sql:?}"))?;
            let inner = &body[..end];
            if !inner.trim().is_empty() {
                args = inner.split(',').map(|a| a.trim().to_string()).collect();
            }
            consumed += end + 2;
        }
        let want = |n: usize| -> Result<(), String> {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "macro $__{name} expects {n} argument(s), got {}",
                    args.len()
                ))
            }
        };
        let expanded = match name {
            "fromTime" => format!("toDateTime({from_s})"),
            "toTime" => format!("toDateTime({to_s})"),
            "fromTime_ms" => format!("fromUnixTimestamp64Milli({})", r.from_ms),
            "toTime_ms" => format!("fromUnixTimestamp64Milli({})", r.to_ms),
            "timeFilter" => {
                want(1)?;
                let c = &args[0];
                format!("{c} >= toDateTime({from_s}) AND {c} <= toDateTime({to_s})")
            }
            "timeFilter_ms" => {
                want(1)?;
                let c = &args[0];
                format!(
                    "{c} >= fromUnixTimestamp64Milli({}) AND {c} <= fromUnixTimestamp64Milli({})",
                    r.from_ms, r.to_ms
                )
            }
            "dateFilter" => {
                want(1)?;
                let c = &args[0];
                format!(
                    "{c} >= toDate('{}') AND {c} <= toDate('{}')",
                    utc_date(r.from_ms),
                    utc_date(r.to_ms)
                )
            }
            "dateTimeFilter" | "dt" => {
                want(2)?;
                let (d, t) = (&args[0], &args[1]);
                format!(
                    "({d} >= toDate('{}') AND {d} <= toDate('{}')) AND ({t} >= toDateTime({from_s}) AND {t} <= toDateTime({to_s}))",
                    utc_date(r.from_ms),
                    utc_date(r.to_ms)
                )
            }
            "timeInterval" => {
                want(1)?;
                format!(
                    "toStartOfInterval(toDateTime({}), INTERVAL {interval_s} second)",
                    args[0]
                )
            }
            "timeInterval_ms" => {
                want(1)?;
                format!(
                    "toStartOfInterval(toDateTime64({}, 3), INTERVAL {interval_ms} millisecond)",
                    args[0]
                )
            }
            "interval_s" => interval_s.to_string(),
            other => return Err(format!("unknown ClickHouse plugin macro $__{other}")),
        };
        out.push_str(&expanded);
        rest = &rest[at + consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Names of the metrics (and recorded series) a PromQL expression reads: identifiers
/// starting with `cxpulse_` or `cxpulse:`, and `ALERTS` / `up`.
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut in_string: Option<u8> = None;
    while i < bytes.len() {
        let c = bytes[i];
        if let Some(q) = in_string {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == q {
                in_string = None;
            }
            i += 1;
            continue;
        }
        if c == b'"' || c == b'\'' || c == b'`' {
            in_string = Some(c);
            i += 1;
            continue;
        }
        if is_ident(c) && (i == 0 || !is_ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let wanted = word.starts_with("cxpulse_")
                || word.starts_with("cxpulse:")
                || word == "ALERTS"
                || (word == "up" && bytes.get(i) == Some(&b'{'));
            if wanted && !out.iter().any(|w| w == word) {
                out.push(word.to_string());
            }
            continue;
        }
        i += 1;
    }
    out
}

/// Panel types the type check knows: panel type → `@grafana/schema` module of its options
/// (`raw/composable/<dir>/panelcfg/x/<Module>_types.gen`) and whether that module has a
/// `FieldConfig` (the panel's `fieldConfig.defaults.custom`).
pub const PANEL_TYPES: &[(&str, &str, bool)] = &[
    ("timeseries", "TimeSeriesPanelCfg", true),
    ("stat", "StatPanelCfg", false),
    ("table", "TablePanelCfg", true),
    ("bargauge", "BarGaugePanelCfg", false),
    ("gauge", "GaugePanelCfg", false),
    ("text", "TextPanelCfg", false),
];

const TS_HEADER: &str = r#"// Generated by crates/cxpulse-stack-tests from a dashboard JSON file: if this file
// type-checks (tsc --strict), the dashboard matches @grafana/schema.
import type { Dashboard, DataQuery, FieldConfig, FieldConfigSource, Panel } from '@grafana/schema';
"#;

const TS_TYPES: &str = r#"
// A JSON file holds an enum's value, not the enum: map every string enum to its literals.
type Json<T> = T extends string
  ? `${T}`
  : T extends (infer U)[]
    ? Json<U>[]
    : T extends object
      ? { [K in keyof T]: Json<T[K]> }
      : T;

// A panel whose `options` and `fieldConfig.defaults.custom` are those of its panel plugin.
type Typed<O, F> = Omit<Json<Panel>, 'options' | 'fieldConfig' | 'targets'> & {
  options: Json<O>;
  fieldConfig?: {
    defaults: Omit<Json<FieldConfig>, 'custom'> & { custom?: Json<F> };
    overrides: Json<FieldConfigSource>['overrides'];
  };
  targets?: unknown[];
};

// The query models of the two datasources the boards use.
interface PrometheusQuery extends DataQuery {
  datasource: { type: 'prometheus'; uid: string };
  expr: string;
  legendFormat?: string;
  range?: boolean;
  instant?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  editorMode?: 'code' | 'builder';
  interval?: string;
}
interface ClickHouseQuery extends DataQuery {
  datasource: { type: 'grafana-clickhouse-datasource'; uid: string };
  editorType: 'sql' | 'builder';
  rawSql: string;
  // 0 time series, 1 table, 2 logs, 3 traces, 4 auto
  format: 0 | 1 | 2 | 3 | 4;
  queryType?: 'timeseries' | 'table' | 'logs' | 'traces';
}
"#;

fn ts_ident(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The TypeScript module that type-checks `d`: the whole dashboard as `Dashboard` (enums as
/// their JSON values), every panel as a `Panel` with its plugin's `Options` and field
/// config, every query as the model of its datasource. A panel type or datasource not
/// listed here is an error (add it, with its type).
pub fn dashboard_typescript(d: &Dashboard) -> Result<String, String> {
    let mut ts = String::from(TS_HEADER);
    for (ty, module, _) in PANEL_TYPES {
        let _ = writeln!(
            ts,
            "import type * as {ty} from '@grafana/schema/dist/esm/raw/composable/{ty}/panelcfg/x/{module}_types.gen';"
        );
    }
    ts.push_str(TS_TYPES);
    let json = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let _ = writeln!(
        ts,
        "\nexport const dashboard: Json<Dashboard> = {};",
        json(&d.json)
    );
    for (i, p) in d.panels().into_iter().enumerate() {
        let ty = p["type"].as_str().unwrap_or("");
        let title = p["title"].as_str().unwrap_or("?");
        if ty == "row" {
            continue;
        }
        let Some((_, _, has_fc)) = PANEL_TYPES.iter().find(|(t, _, _)| *t == ty) else {
            return Err(format!(
                "{}: panel {title:?} has type {ty:?}, which the type check does not know (add it to PANEL_TYPES)",
                d.name
            ));
        };
        let fc = if *has_fc {
            format!("{ty}.FieldConfig")
        } else {
            "Record<string, never>".to_string()
        };
        let var = format!("panel_{i}_{}", ts_ident(title));
        let _ = writeln!(
            ts,
            "\n// {title}\nexport const {var}: Typed<{ty}.Options, {fc}> = {};",
            json(p)
        );
        for t in p["targets"].as_array().into_iter().flatten() {
            let model = match datasource_of(t).or(datasource_of(p)) {
                Some("prometheus") => "PrometheusQuery",
                Some(CLICKHOUSE_TYPE) => "ClickHouseQuery",
                other => {
                    return Err(format!(
                        "{}: panel {title:?}: datasource {other:?} has no query model in the type check",
                        d.name
                    ))
                }
            };
            let r = ts_ident(t["refId"].as_str().unwrap_or("?"));
            let _ = writeln!(ts, "export const {var}_{r}: Json<{model}> = {};", json(t));
        }
    }
    Ok(ts)
}

/// A tool: the path in `env_var` if it is a file, else `name` found on `PATH`.
pub fn tool(env_var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// URL-encodes a query-string value.
pub fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn interpolates_every_form_and_refuses_unknown_names() {
        let v = vars(&[
            ("window", "24h"),
            ("channel", "all"),
            ("__rate_interval", "1m"),
        ]);
        assert_eq!(
            interpolate(
                r#"x{window="$window",c="${channel}",d="[[channel]]"}[$__rate_interval]"#,
                &v,
                false
            )
            .unwrap(),
            r#"x{window="24h",c="all",d="all"}[1m]"#
        );
        assert!(interpolate("x{s=\"$segment\"}", &v, false)
            .unwrap_err()
            .contains("segment"));
        assert!(interpolate("$__interval", &v, false).is_err());
        assert_eq!(
            interpolate("a = '${channel}' AND $__timeFilter(end)", &v, true).unwrap(),
            "a = 'all' AND $__timeFilter(end)"
        );
        assert!(interpolate("${channel:csv}", &v, false).is_err());
    }

    #[test]
    fn clickhouse_macros_expand_like_the_plugin() {
        // 2026-01-02T03:04:05.678Z .. 2026-01-09T00:00:00Z, 1 h interval
        let r = TimeRange {
            from_ms: 1_767_323_045_678,
            to_ms: 1_767_916_800_000,
            interval_ms: 3_600_000,
        };
        let sql = "SELECT $__timeInterval(t) AS time FROM x WHERE $__timeFilter(`end`) AND \
                   $__timeFilter_ms(t) AND $__dateFilter(d) AND $__dt(d, t) AND \
                   f($__fromTime, $__toTime, $__fromTime_ms, $__toTime_ms) GROUP BY $__interval_s";
        assert_eq!(
            expand_clickhouse_macros(sql, r).unwrap(),
            "SELECT toStartOfInterval(toDateTime(t), INTERVAL 3600 second) AS time FROM x WHERE \
             `end` >= toDateTime(1767323045) AND `end` <= toDateTime(1767916800) AND \
             t >= fromUnixTimestamp64Milli(1767323045678) AND t <= fromUnixTimestamp64Milli(1767916800000) AND \
             d >= toDate('2026-01-02') AND d <= toDate('2026-01-09') AND \
             (d >= toDate('2026-01-02') AND d <= toDate('2026-01-09')) AND (t >= toDateTime(1767323045) AND t <= toDateTime(1767916800)) AND \
             f(toDateTime(1767323045), toDateTime(1767916800), fromUnixTimestamp64Milli(1767323045678), fromUnixTimestamp64Milli(1767916800000)) GROUP BY 3600"
        );
        assert!(expand_clickhouse_macros("$__timeFilter()", r).is_err());
        assert!(expand_clickhouse_macros("$__conditionalAll(x)", r)
            .unwrap_err()
            .contains("conditionalAll"));
    }

    #[test]
    fn dates_durations_label_values_and_metric_names() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400_000), "2000-02-29");
        assert_eq!(utc_date(-1), "1969-12-31");
        assert_eq!(parse_duration_ms("56d"), Some(56 * 86_400_000));
        assert_eq!(parse_duration_ms("8w"), Some(56 * 86_400_000));
        assert_eq!(parse_duration_ms("15s"), Some(15_000));
        assert_eq!(parse_duration_ms("5x"), None);
        assert_eq!(
            parse_label_values(r#"label_values(m{window="$window"}, channel)"#),
            Some((r#"m{window="$window"}"#.into(), "channel".into()))
        );
        assert_eq!(parse_label_values("query_result(up)"), None);
        assert_eq!(
            metric_names(
                r#"sum by (le) (rate(cxpulse_x_bucket{a="cxpulse_not_a_metric"}[5m])) / cxpulse:window_nps_n + up{job="cxpulse"} + ALERTS"#
            ),
            ["cxpulse_x_bucket", "cxpulse:window_nps_n", "up", "ALERTS"]
        );
    }
}
