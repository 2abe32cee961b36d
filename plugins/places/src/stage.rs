//! Plain Rust mirror of the WIT `types` interface, so the stage logic can be
//! called and tested natively without generated bindings.

/// One fact value, as in WIT `fact-value`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Text(String),
    /// A signed integer.
    Integer(i64),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Boolean(bool),
}

/// A named fact, as in WIT `fact`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    /// The fact's name, e.g. `width`.
    pub key: String,
    /// The fact's value.
    pub value: Value,
}

impl Fact {
    /// Builds a text fact.
    pub fn text(key: &str, v: impl Into<String>) -> Self {
        Fact {
            key: key.into(),
            value: Value::Text(v.into()),
        }
    }
    /// Builds an integer fact.
    pub fn int(key: &str, v: i64) -> Self {
        Fact {
            key: key.into(),
            value: Value::Integer(v),
        }
    }
}

/// Everything the stage is given, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The content type the client claimed.
    pub claimed_type: &'a str,
    /// The whole file.
    pub bytes: &'a [u8],
    /// The stage's config pairs.
    pub config: &'a [(String, String)],
    /// Facts from earlier stages.
    pub facts: &'a [Fact],
}

/// What the stage produced, as in WIT `output` (this stage makes no renditions).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// New facts.
    pub facts: Vec<Fact>,
    /// User-visible problems that did not stop the stage.
    pub warnings: Vec<String>,
    /// Lines for the host log only (not shown to users).
    pub log: Vec<String>,
}

/// Why the stage produced no output, as in WIT `stage-error`.
#[derive(Debug, Clone, PartialEq)]
pub enum StageError {
    /// Bad input; never retried.
    Rejected(String),
    /// The step broke (e.g. bad config); may be retried.
    Failed(String),
}
