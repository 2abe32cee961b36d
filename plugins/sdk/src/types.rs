//! Plain Rust mirrors of the WIT `types` interface.

use crate::config::{Config, ConfigError};

/// What the host knows about the file before any stage ran (WIT `asset`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asset {
    /// The asset id, a UUID in text form.
    pub id: String,
    /// The client's file name, sanitised; never a path.
    pub file_name: String,
    /// The content type the client claimed (may lie; `validate` decides).
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the bytes, lower-case hex (empty in inputs built with [`Input::new`]).
    pub content_hash: String,
}

/// One fact value (WIT `fact-value`).
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

/// A named fact such as `width` (WIT `fact`). Keys are lower `snake_case`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    /// The fact's name.
    pub key: String,
    /// Its value.
    pub value: Value,
}

impl Fact {
    /// A text fact.
    pub fn text(key: impl Into<String>, v: impl Into<String>) -> Self {
        Fact {
            key: key.into(),
            value: Value::Text(v.into()),
        }
    }
    /// An integer fact.
    pub fn int(key: impl Into<String>, v: i64) -> Self {
        Fact {
            key: key.into(),
            value: Value::Integer(v),
        }
    }
    /// A float fact.
    pub fn float(key: impl Into<String>, v: f64) -> Self {
        Fact {
            key: key.into(),
            value: Value::Float(v),
        }
    }
    /// A boolean fact.
    pub fn bool(key: impl Into<String>, v: bool) -> Self {
        Fact {
            key: key.into(),
            value: Value::Boolean(v),
        }
    }
}

/// Everything a stage is given for one asset (WIT `input`, and the `file`
/// its bytes are read through).
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// What the host knows about the file (`asset.size` is its length: no
    /// need to read it).
    pub asset: Asset,
    /// The stage's `config` table from pipeline.toml.
    pub config: Config,
    /// Facts from earlier stages, in pipeline order.
    pub facts: Vec<Fact>,
    source: Source,
}

/// Where an input's bytes come from.
#[derive(Debug, Clone)]
enum Source {
    /// In memory: inputs built with [`Input::new`].
    Memory(Vec<u8>),
    /// The host's file, read when the stage asks (wasm32 builds).
    #[cfg(target_arch = "wasm32")]
    Host(std::rc::Rc<crate::wit::HostFile>),
}

impl Default for Source {
    fn default() -> Self {
        Source::Memory(Vec::new())
    }
}

impl Input {
    /// An input for native tests: `bytes` with an empty asset record
    /// (content type `application/octet-stream`, no hash), no config, no facts.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        let bytes = bytes.into();
        Input {
            asset: Asset {
                id: "00000000-0000-0000-0000-000000000000".into(),
                file_name: "input".into(),
                content_type: "application/octet-stream".into(),
                size: bytes.len() as u64,
                content_hash: String::new(),
            },
            config: Config::default(),
            facts: Vec::new(),
            source: Source::Memory(bytes),
        }
    }

    /// The input of a call from the host: `file` reads the bytes.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn from_host(
        asset: Asset,
        config: Config,
        facts: Vec<Fact>,
        file: crate::wit::HostFile,
    ) -> Self {
        Input {
            asset,
            config,
            facts,
            source: Source::Host(std::rc::Rc::new(file)),
        }
    }

    /// The whole file. In a component the first call copies it in from the
    /// host and later calls return the same bytes; a stage that needs only
    /// a part (a header, a trailer) should use [`read_at`](Self::read_at),
    /// and a stage that needs no bytes costs no copy at all.
    pub fn bytes(&self) -> &[u8] {
        match &self.source {
            Source::Memory(b) => b,
            #[cfg(target_arch = "wasm32")]
            Source::Host(f) => f.all(self.asset.size),
        }
    }

    /// Up to `len` bytes from `offset`: fewer only at the end of the file,
    /// none from past it. Copies only that range in from the host (unless
    /// [`bytes`](Self::bytes) already did).
    pub fn read_at(&self, offset: u64, len: usize) -> std::borrow::Cow<'_, [u8]> {
        use std::borrow::Cow;
        match &self.source {
            Source::Memory(b) => Cow::Borrowed(range(b, offset, len)),
            #[cfg(target_arch = "wasm32")]
            Source::Host(f) => match f.loaded() {
                Some(b) => Cow::Borrowed(range(b, offset, len)),
                None => Cow::Owned(f.read(offset, len)),
            },
        }
    }

    /// Sets the claimed content type.
    pub fn content_type(mut self, t: impl Into<String>) -> Self {
        self.asset.content_type = t.into();
        self
    }

    /// Sets the file name.
    pub fn file_name(mut self, name: impl Into<String>) -> Self {
        self.asset.file_name = name.into();
        self
    }

    /// Adds one config pair, as pipeline.toml would pass it.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push(key, value);
        self
    }

    /// Replaces the whole config.
    pub fn with_config(mut self, config: impl Into<Config>) -> Self {
        self.config = config.into();
        self
    }

    /// Adds a fact from an earlier stage.
    pub fn fact(mut self, fact: Fact) -> Self {
        self.facts.push(fact);
        self
    }

    /// The value of an earlier stage's fact; the last one with `key` wins.
    pub fn fact_value(&self, key: &str) -> Option<&Value> {
        self.facts
            .iter()
            .rev()
            .find(|f| f.key == key)
            .map(|f| &f.value)
    }

    /// An earlier integer fact, if present and an integer.
    pub fn fact_int(&self, key: &str) -> Option<i64> {
        match self.fact_value(key)? {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// An earlier float fact (integers are widened), if present and numeric.
    pub fn fact_float(&self, key: &str) -> Option<f64> {
        match self.fact_value(key)? {
            Value::Float(x) => Some(*x),
            Value::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// An earlier text fact, if present and text.
    pub fn fact_text(&self, key: &str) -> Option<&str> {
        match self.fact_value(key)? {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// A derived image such as a thumbnail (WIT `rendition`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    /// Unique within the asset, e.g. `small`.
    pub name: String,
    /// Media type of `bytes`.
    pub content_type: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The encoded image.
    pub bytes: Vec<u8>,
}

/// What a stage produced (WIT `output`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// New facts.
    pub facts: Vec<Fact>,
    /// Derived images.
    pub renditions: Vec<Rendition>,
    /// Problems worth telling the user that did not stop the stage.
    pub warnings: Vec<String>,
}

impl Output {
    /// Adds a fact.
    pub fn fact(mut self, fact: Fact) -> Self {
        self.facts.push(fact);
        self
    }

    /// Adds a rendition.
    pub fn rendition(mut self, r: Rendition) -> Self {
        self.renditions.push(r);
        self
    }

    /// Adds a warning shown to the user.
    pub fn warning(mut self, w: impl Into<String>) -> Self {
        self.warnings.push(w.into());
        self
    }
}

/// Why a stage produced no output (WIT `stage-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    /// The input is bad (not an image, truncated, too large): the asset is
    /// marked rejected and never retried. The reason is shown to the user.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The step broke (bad config, a bug, a missing resource): the job may
    /// be retried.
    #[error("failed: {0}")]
    Failed(String),
}

impl StageError {
    /// A rejection of the input, with a sentence for the user.
    pub fn rejected(reason: impl Into<String>) -> Self {
        StageError::Rejected(reason.into())
    }
    /// A failure of the step, which may be retried.
    pub fn failed(reason: impl Into<String>) -> Self {
        StageError::Failed(reason.into())
    }
}

/// A malformed config value is the self-hoster's mistake, not the asset's:
/// the step fails (and says which key), the asset is not rejected.
impl From<ConfigError> for StageError {
    fn from(e: ConfigError) -> Self {
        StageError::Failed(e.to_string())
    }
}

/// `len` bytes of `b` from `offset`, cut at its end.
fn range(b: &[u8], offset: u64, len: usize) -> &[u8] {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
    &b[start..start.saturating_add(len).min(b.len())]
}
