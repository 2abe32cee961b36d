//! Parsing and validating `pipeline.toml`.
//!
//! The file is an array of `[[stage]]` tables. Paths are relative to the
//! file's directory. Parsing never stops at the first problem: it collects
//! every one it finds, each with its key, so a self-hoster can fix them all at
//! once.

use std::path::{Path, PathBuf};

use super::error::ConfigIssue;

/// Keys a `[[stage]]` table may have.
pub const STAGE_KEYS: &[&str] = &[
    "name",
    "component",
    "config",
    "timeout_ms",
    "memory_limit_mb",
    "content_types",
    "read_only_dirs",
    "env",
];

/// Allowed `timeout_ms` range.
pub const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 1..=600_000;
/// Allowed `memory_limit_mb` range.
pub const MEMORY_LIMIT_MB: std::ops::RangeInclusive<u64> = 1..=4096;
/// `timeout_ms` when the stage does not set it.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// `memory_limit_mb` when the stage does not set it.
pub const DEFAULT_MEMORY_LIMIT_MB: u64 = 256;

/// One `[[stage]]` table, checked, with paths resolved.
#[derive(Debug, Clone)]
pub struct StageSpec {
    /// Position in the file (0-based, as in `stage[0]`).
    pub index: usize,
    /// Unique stage name.
    pub name: String,
    /// The component file, resolved against the toml file's directory.
    pub component: PathBuf,
    /// The `config` table flattened to strings.
    pub config: Vec<(String, String)>,
    /// Wall-clock deadline per call.
    pub timeout_ms: u64,
    /// Memory cap per call (all linear memories together).
    pub memory_limit_mb: u64,
    /// Content-type patterns; empty means all.
    pub content_types: Vec<String>,
    /// Host directories preopened read-only, at the same path in the guest.
    pub read_only_dirs: Vec<PathBuf>,
    /// Names of host environment variables copied into the guest.
    pub env: Vec<String>,
}

impl StageSpec {
    /// A spec with default limits and no grants, for `lumilio plugin run`.
    pub fn single(name: &str, component: PathBuf, config: Vec<(String, String)>) -> StageSpec {
        StageSpec {
            index: 0,
            name: name.to_string(),
            component,
            config,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            memory_limit_mb: DEFAULT_MEMORY_LIMIT_MB,
            content_types: Vec::new(),
            read_only_dirs: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The key prefix used in error messages, e.g. `stage[1] ("thumbnail")`.
    pub fn label(&self) -> String {
        stage_label(self.index, Some(&self.name))
    }
}

/// `stage[1] ("thumbnail")`, or `stage[1]` when the name is unknown.
pub fn stage_label(index: usize, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("stage[{index}] ({n:?})"),
        None => format!("stage[{index}]"),
    }
}

/// Parses `text` (the contents of a pipeline.toml in `base_dir`) into stage
/// specs, collecting every problem into `issues`. Stages with problems are
/// left out of the returned list.
pub fn parse(text: &str, base_dir: &Path, issues: &mut Vec<ConfigIssue>) -> Vec<StageSpec> {
    let mut push = |key: String, message: String| issues.push(ConfigIssue { key, message });
    let doc: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let e: toml::de::Error = e;
            let key = match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    format!("line {line}, column {col}")
                }
                None => "(file)".to_string(),
            };
            push(key, format!("invalid TOML: {}", e.message().trim()));
            return Vec::new();
        }
    };

    for key in doc.keys() {
        if key != "stage" {
            push(
                key.clone(),
                format!("unknown key (expected stage){}", suggest(key, &["stage"])),
            );
        }
    }

    let stages = match doc.get("stage") {
        None => {
            push(
                "stage".into(),
                "the pipeline has no stages (add at least one [[stage]] table)".into(),
            );
            return Vec::new();
        }
        Some(toml::Value::Array(a)) => a,
        Some(other) => {
            push(
                "stage".into(),
                format!(
                    "expected an array of [[stage]] tables, found {}",
                    type_name(other)
                ),
            );
            return Vec::new();
        }
    };
    if stages.is_empty() {
        push(
            "stage".into(),
            "the pipeline has no stages (add at least one [[stage]] table)".into(),
        );
        return Vec::new();
    }

    let mut specs = Vec::new();
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (index, value) in stages.iter().enumerate() {
        let Some(table) = value.as_table() else {
            push(
                stage_label(index, None),
                format!("expected a [[stage]] table, found {}", type_name(value)),
            );
            continue;
        };
        // Duplicates are found among all named stages, valid or not.
        let mut duplicate = false;
        if let Some(toml::Value::String(name)) = table.get("name") {
            if let Some((_, first)) = seen.iter().find(|(n, _)| n == name) {
                push(
                    format!("{}.name", stage_label(index, Some(name))),
                    format!("duplicate stage name (also used by stage[{first}])"),
                );
                duplicate = true;
            } else {
                seen.push((name.clone(), index));
            }
        }
        if let Some(spec) = parse_stage(index, table, base_dir, &mut push)
            && !duplicate
        {
            specs.push(spec);
        }
    }
    specs
}

fn parse_stage(
    index: usize,
    table: &toml::Table,
    base_dir: &Path,
    push: &mut impl FnMut(String, String),
) -> Option<StageSpec> {
    let mut ok = true;
    let mut fail = |key: String, msg: String, ok: &mut bool| {
        *ok = false;
        push(key, msg);
    };

    // The name first, so every other message can carry it.
    let name = match table.get("name") {
        None => {
            fail(
                format!("{}.name", stage_label(index, None)),
                "missing (every stage needs a unique name)".into(),
                &mut ok,
            );
            None
        }
        Some(toml::Value::String(s)) if valid_name(s) => Some(s.clone()),
        Some(toml::Value::String(s)) => {
            fail(
                format!("{}.name", stage_label(index, None)),
                format!("invalid stage name {s:?} (use 1 to 64 letters, digits, '-', '_' or '.')"),
                &mut ok,
            );
            None
        }
        Some(other) => {
            fail(
                format!("{}.name", stage_label(index, None)),
                format!("expected a string, found {}", type_name(other)),
                &mut ok,
            );
            None
        }
    };
    let label = stage_label(index, name.as_deref());
    let key = |k: &str| format!("{label}.{k}");

    for k in table.keys() {
        if !STAGE_KEYS.contains(&k.as_str()) {
            fail(
                key(k),
                format!(
                    "unknown key (expected one of {}){}",
                    STAGE_KEYS.join(", "),
                    suggest(k, STAGE_KEYS)
                ),
                &mut ok,
            );
        }
    }

    let component = match table.get("component") {
        None => {
            fail(
                key("component"),
                "missing (the path of the stage's .wasm component)".into(),
                &mut ok,
            );
            None
        }
        Some(toml::Value::String(s)) if s.trim().is_empty() => {
            fail(key("component"), "must not be empty".into(), &mut ok);
            None
        }
        Some(toml::Value::String(s)) => {
            let path = base_dir.join(s);
            if !path.is_file() {
                fail(
                    key("component"),
                    format!("file not found: {}", path.display()),
                    &mut ok,
                );
                None
            } else {
                Some(path)
            }
        }
        Some(other) => {
            fail(
                key("component"),
                format!("expected a string, found {}", type_name(other)),
                &mut ok,
            );
            None
        }
    };

    let mut config = Vec::new();
    match table.get("config") {
        None => {}
        Some(toml::Value::Table(t)) => {
            for (k, v) in t {
                config.push((k.clone(), config_value_to_string(v)));
            }
        }
        Some(other) => fail(
            key("config"),
            format!("expected a table, found {}", type_name(other)),
            &mut ok,
        ),
    }

    let mut int_in =
        |k: &str, range: std::ops::RangeInclusive<u64>, default: u64, ok: &mut bool| {
            let value = table.get(k);
            match value {
                None => default,
                Some(toml::Value::Integer(i)) => {
                    if *i >= 0 && range.contains(&(*i as u64)) {
                        *i as u64
                    } else {
                        fail(
                            key(k),
                            format!(
                                "{i} is out of range (expected {}..={})",
                                range.start(),
                                range.end()
                            ),
                            ok,
                        );
                        default
                    }
                }
                Some(other) => {
                    fail(
                        key(k),
                        format!("expected an integer, found {}", type_name(other)),
                        ok,
                    );
                    default
                }
            }
        };
    let timeout_ms = int_in("timeout_ms", TIMEOUT_MS, DEFAULT_TIMEOUT_MS, &mut ok);
    let memory_limit_mb = int_in(
        "memory_limit_mb",
        MEMORY_LIMIT_MB,
        DEFAULT_MEMORY_LIMIT_MB,
        &mut ok,
    );

    let mut strings = |k: &str, ok: &mut bool| -> Vec<String> {
        match table.get(k) {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => {
                let mut out = Vec::new();
                for (i, v) in a.iter().enumerate() {
                    match v {
                        toml::Value::String(s) => out.push(s.clone()),
                        other => fail(
                            format!("{}[{i}]", key(k)),
                            format!("expected a string, found {}", type_name(other)),
                            ok,
                        ),
                    }
                }
                out
            }
            Some(other) => {
                fail(
                    key(k),
                    format!("expected an array of strings, found {}", type_name(other)),
                    ok,
                );
                Vec::new()
            }
        }
    };
    let content_types = strings("content_types", &mut ok);
    let dirs = strings("read_only_dirs", &mut ok);
    let env = strings("env", &mut ok);

    for (i, ct) in content_types.iter().enumerate() {
        if !valid_content_pattern(ct) {
            fail(
                format!("{}[{i}]", key("content_types")),
                format!(
                    "invalid content type pattern {ct:?} (expected e.g. \"image/jpeg\" or \"image/*\")"
                ),
                &mut ok,
            );
        }
    }
    let mut read_only_dirs = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let path = base_dir.join(d);
        match std::fs::canonicalize(&path) {
            Ok(p) if p.is_dir() => read_only_dirs.push(p),
            Ok(_) => fail(
                format!("{}[{i}]", key("read_only_dirs")),
                format!("not a directory: {}", path.display()),
                &mut ok,
            ),
            Err(_) => fail(
                format!("{}[{i}]", key("read_only_dirs")),
                format!("directory not found: {}", path.display()),
                &mut ok,
            ),
        }
    }
    for (i, e) in env.iter().enumerate() {
        if e.is_empty() || e.contains('=') || e.contains('\0') {
            fail(
                format!("{}[{i}]", key("env")),
                format!("invalid environment variable name {e:?}"),
                &mut ok,
            );
        }
    }

    if !ok {
        return None;
    }
    Some(StageSpec {
        index,
        name: name?,
        component: component?,
        config,
        timeout_ms,
        memory_limit_mb,
        content_types,
        read_only_dirs,
        env,
    })
}

/// Converts one `config` value to the string a stage receives: strings as
/// they are, numbers, booleans and dates as TOML text, arrays and tables as JSON.
pub fn config_value_to_string(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(_) | toml::Value::Boolean(_) | toml::Value::Datetime(_) => v.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => toml_to_json(v).to_string(),
    }
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn valid_content_pattern(p: &str) -> bool {
    let Some((ty, sub)) = p.split_once('/') else {
        return false;
    };
    let tok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    (ty == "*" && sub == "*") || (tok(ty) && (sub == "*" || tok(sub)))
}

/// Whether `content_type` (parameters such as `; charset=` ignored) matches
/// `pattern` (`type/subtype`, `type/*` or `*/*`), case-insensitively.
pub fn content_type_matches(pattern: &str, content_type: &str) -> bool {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let pattern = pattern.trim().to_ascii_lowercase();
    let (Some((pt, ps)), Some((ct_t, ct_s))) = (pattern.split_once('/'), ct.split_once('/')) else {
        return false;
    };
    (pt == "*" || pt == ct_t) && (ps == "*" || ps == ct_s)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// `; did you mean timeout_ms?` when a known key is a small edit away.
fn suggest(unknown: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (edit_distance(unknown, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!("; did you mean {k}?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
