//! The private WIT glue (wasm32 only): the generated bindings, the one
//! exported `process`, and conversions to and from the plain types. The
//! stage's own function is reached through the symbol `export_stage!`
//! defines, as Zed's extension API reaches the extension it registers.

wit_bindgen::generate!({ path: "../../wit/pipeline.wit", world: "stage" });

use std::cell::OnceCell;

use exports::lumilio::pipeline::runner::Guest;
use lumilio::pipeline::host::{self, LogLevel};
use lumilio::pipeline::types as w;

use crate::{Asset, Fact, Input, Output, StageError, Value};

unsafe extern "Rust" {
    /// Defined by `export_stage!` in the stage's crate. A missing
    /// `export_stage!(run);` shows up as an undefined symbol at link time.
    safe fn __lumilio_stage_run(input: &Input) -> Result<Output, StageError>;
}

struct Component;

impl Guest for Component {
    fn process(input: w::Input, file: w::File) -> Result<w::Output, w::StageError> {
        let asset = Asset {
            id: input.asset.id,
            file_name: input.asset.file_name,
            content_type: input.asset.content_type,
            size: input.asset.size,
            content_hash: input.asset.content_hash,
        };
        let facts = input.facts.into_iter().map(from_wit).collect();
        let file = HostFile {
            file,
            all: OnceCell::new(),
        };
        let input = Input::from_host(asset, input.config.into(), facts, file);
        match __lumilio_stage_run(&input) {
            Ok(out) => Ok(w::Output {
                facts: out.facts.into_iter().map(to_wit).collect(),
                renditions: out
                    .renditions
                    .into_iter()
                    .map(|r| w::Rendition {
                        name: r.name,
                        content_type: r.content_type,
                        width: r.width,
                        height: r.height,
                        bytes: r.bytes,
                    })
                    .collect(),
                warnings: out.warnings,
            }),
            Err(StageError::Rejected(m)) => Err(w::StageError::Rejected(m)),
            Err(StageError::Failed(m)) => Err(w::StageError::Failed(m)),
        }
    }
}

export!(Component);

/// The host's `file` and, once a stage asked for all of it, its bytes.
pub(crate) struct HostFile {
    file: w::File,
    all: OnceCell<Vec<u8>>,
}

impl std::fmt::Debug for HostFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFile")
            .field("loaded", &self.all.get().map(Vec::len))
            .finish()
    }
}

impl HostFile {
    /// The whole file, `size` bytes (read once; shorter if the file is).
    pub(crate) fn all(&self, size: u64) -> &[u8] {
        self.all.get_or_init(|| {
            // One read when it fits one `list<u8>`: the list the host writes
            // into this memory is the buffer kept, with no copy here.
            let mut all = self.file.read(0, size.min(u32::MAX as u64) as u32);
            if all.len() as u64 >= size {
                return all;
            }
            loop {
                let more = self.file.read(all.len() as u64, u32::MAX);
                if more.is_empty() {
                    break all;
                }
                all.extend_from_slice(&more);
            }
        })
    }

    /// The whole file if [`all`](Self::all) already read it.
    pub(crate) fn loaded(&self) -> Option<&[u8]> {
        self.all.get().map(Vec::as_slice)
    }

    /// Up to `len` bytes from `offset`, straight from the host.
    pub(crate) fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        self.file.read(offset, len.min(u32::MAX as usize) as u32)
    }
}

/// Sends one line to the host's log.
pub(crate) fn log(level: crate::log::Level, message: &str) {
    use crate::log::Level;
    let level = match level {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    };
    host::log(level, message);
}

fn from_wit(f: w::Fact) -> Fact {
    let value = match f.value {
        w::FactValue::Text(s) => Value::Text(s),
        w::FactValue::Integer(i) => Value::Integer(i),
        w::FactValue::Float(x) => Value::Float(x),
        w::FactValue::Boolean(b) => Value::Boolean(b),
    };
    Fact { key: f.key, value }
}

fn to_wit(f: Fact) -> w::Fact {
    let value = match f.value {
        Value::Text(s) => w::FactValue::Text(s),
        Value::Integer(i) => w::FactValue::Integer(i),
        Value::Float(x) => w::FactValue::Float(x),
        Value::Boolean(b) => w::FactValue::Boolean(b),
    };
    w::Fact { key: f.key, value }
}
