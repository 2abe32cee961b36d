//! Error types of the pipeline module.

use std::fmt;
use std::path::PathBuf;

/// Why a stage did not finish; every message names the stage and the cause.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StageError {
    /// The stage ran past its wall-clock deadline (`timeout_ms`).
    #[error("stage `{stage}` timed out after {limit_ms} ms (timeout_ms in pipeline.toml)")]
    Timeout {
        /// Stage name.
        stage: String,
        /// The deadline that was exceeded.
        limit_ms: u64,
    },
    /// The stage tried to grow its memory past `memory_limit_mb`.
    #[error(
        "stage `{stage}` ran out of memory: it tried to grow past its limit of {limit_mb} MB (memory_limit_mb in pipeline.toml)"
    )]
    OutOfMemory {
        /// Stage name.
        stage: String,
        /// The memory cap in MiB.
        limit_mb: u64,
    },
    /// The guest panicked; `message` is the panic message from its stderr.
    #[error("stage `{stage}` panicked: {message}")]
    Panic {
        /// Stage name.
        stage: String,
        /// The panic message (the text after `panicked at FILE:LINE:COL:`).
        message: String,
        /// Everything the guest wrote to stderr (the last 256 KiB by default: `RuntimeOptions::max_output_bytes`).
        stderr: String,
    },
    /// The guest trapped (e.g. `unreachable`, out-of-bounds access).
    #[error("stage `{stage}` trapped: {message}{}", stderr_suffix(stderr))]
    Trap {
        /// Stage name.
        stage: String,
        /// The trap as wasmtime describes it.
        message: String,
        /// Everything the guest wrote to stderr (the last 256 KiB by default: `RuntimeOptions::max_output_bytes`).
        stderr: String,
    },
    /// The stage returned `stage-error::failed` (the job may be retried).
    #[error("stage `{stage}` failed: {reason}")]
    Failed {
        /// Stage name.
        stage: String,
        /// The reason the stage gave.
        reason: String,
    },
    /// The host could not instantiate or call the stage (e.g. the instance
    /// pool is exhausted, or a WASI grant could not be opened).
    #[error("stage `{stage}` could not be started: {message}")]
    Host {
        /// Stage name.
        stage: String,
        /// What went wrong.
        message: String,
    },
}

impl StageError {
    /// The name of the stage the error belongs to.
    pub fn stage(&self) -> &str {
        match self {
            StageError::Timeout { stage, .. }
            | StageError::OutOfMemory { stage, .. }
            | StageError::Panic { stage, .. }
            | StageError::Trap { stage, .. }
            | StageError::Failed { stage, .. }
            | StageError::Host { stage, .. } => stage,
        }
    }

    /// Whether running the same stage on the same asset again could succeed:
    /// true for `Failed` (the stage said so), `Timeout` (the machine may have
    /// been busy) and `Host` (e.g. the instance pool was full); false for
    /// `OutOfMemory`, `Panic` and `Trap`, which a retry would repeat.
    pub fn may_succeed_on_retry(&self) -> bool {
        matches!(
            self,
            StageError::Failed { .. } | StageError::Timeout { .. } | StageError::Host { .. }
        )
    }

    /// The guest's captured stderr, if this error carries it.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            StageError::Panic { stderr, .. } | StageError::Trap { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        return String::new();
    }
    // Keep the error line readable: the last 2 KiB of stderr.
    let tail = if s.len() > 2048 {
        let mut i = s.len() - 2048;
        while !s.is_char_boundary(i) {
            i += 1;
        }
        &s[i..]
    } else {
        s
    };
    format!("; stderr: {tail}")
}

/// Failure to set up the [`Runtime`](super::Runtime).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime refused the engine configuration.
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
    /// The compile cache directory could not be created.
    #[error("cannot create the component cache directory {path}: {source}")]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The linker could not be set up.
    #[error("cannot set up the component linker: {0}")]
    Linker(String),
}

/// One problem found in `pipeline.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Where in the file, e.g. `stage[1] ("thumbnail").timeout_ms`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

/// Every problem found in a `pipeline.toml`, each with file and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfigError {
    /// The file, as it was given to [`Pipeline::load`](super::Pipeline::load).
    pub file: PathBuf,
    /// All problems, in file order.
    pub issues: Vec<ConfigIssue>,
}

impl PipelineConfigError {
    /// Each problem as one line: `FILE: KEY: MESSAGE`.
    pub fn messages(&self) -> Vec<String> {
        self.issues
            .iter()
            .map(|i| format!("{}: {}: {}", self.file.display(), i.key, i.message))
            .collect()
    }
}

impl fmt::Display for PipelineConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.issues.len();
        write!(
            f,
            "{} has {n} problem{}:",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for m in self.messages() {
            write!(f, "\n  {m}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PipelineConfigError {}
