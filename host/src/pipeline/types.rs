//! The plain types a pipeline run takes and returns: an asset's facts, what
//! a stage produced, and the per-stage and overall reports.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::StageError;
use super::engine::{CallFailure, CallResult};

/// What the host knows about an asset before any stage ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssetFacts {
    /// Asset id (a UUID in text form).
    pub id: String,
    /// The client's file name, sanitised; never a path.
    pub file_name: String,
    /// The content type the client claimed.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the bytes, lower-case hex.
    pub content_hash: String,
}

/// One value a stage learned about the asset; serialises untagged (as the bare value).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FactValue {
    /// Text.
    Text(String),
    /// A signed integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Boolean(bool),
}

/// A derived image, such as a thumbnail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    /// Unique within the asset, e.g. `small`.
    pub name: String,
    /// MIME type of `bytes`.
    pub content_type: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The encoded image.
    pub bytes: Vec<u8>,
}

/// What one stage produced on success.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageOutput {
    /// New facts, in the order the stage gave them.
    pub facts: Vec<(String, FactValue)>,
    /// New renditions.
    pub renditions: Vec<Rendition>,
    /// Problems worth telling the user that did not stop the stage.
    pub warnings: Vec<String>,
}

/// A loaded, validated stage as `lumilio plugin check` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageInfo {
    /// Stage name.
    pub name: String,
    /// The component file.
    pub component: PathBuf,
    /// BLAKE3 of the component file, hex.
    pub component_hash: String,
    /// The `lumilio:pipeline` version the component implements, e.g. `0.1.0`.
    pub world_version: String,
    /// Whether the compiled component came from the on-disk cache.
    pub from_cache: bool,
    /// Wall-clock deadline per call.
    pub timeout_ms: u64,
    /// Memory cap per call, MiB.
    pub memory_limit_mb: u64,
    /// Content-type patterns; empty means all.
    pub content_types: Vec<String>,
    /// Host directories granted read-only.
    pub read_only_dirs: Vec<PathBuf>,
    /// Names of environment variables granted.
    pub env: Vec<String>,
}

/// How one stage ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StageOutcome {
    /// The stage produced an output.
    Ok,
    /// The stage was not run: the asset's content type did not match.
    Skipped,
    /// The stage rejected the asset (bad input; do not retry).
    Rejected(String),
    /// The stage failed, trapped, timed out or ran out of memory.
    Failed(StageError),
}

/// One stage's part of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct StageReport {
    /// Stage name.
    pub name: String,
    /// Wall-clock time of instantiate + call.
    pub duration: Duration,
    /// How it ended.
    pub outcome: StageOutcome,
    /// Warnings the stage returned.
    pub warnings: Vec<String>,
    /// Bytes of the asset copied into the stage: the whole file for a 0.1.0
    /// stage, what it read for a 0.2.0 one.
    pub bytes_read: u64,
}

impl StageReport {
    /// A stage not run because the asset's content type did not match.
    pub(crate) fn skipped(name: &str) -> Self {
        StageReport {
            name: name.to_owned(),
            duration: Duration::ZERO,
            outcome: StageOutcome::Skipped,
            warnings: Vec::new(),
            bytes_read: 0,
        }
    }

    /// The report of one call, and the stage's output when it succeeded.
    pub(crate) fn from_call(name: &str, call: CallResult) -> (Self, Option<StageOutput>) {
        let (outcome, output) = match call.outcome {
            Ok(out) => (StageOutcome::Ok, Some(out)),
            Err(CallFailure::Rejected(reason)) => (StageOutcome::Rejected(reason), None),
            Err(CallFailure::Error(e)) => (StageOutcome::Failed(e), None),
        };
        let report = StageReport {
            name: name.to_owned(),
            duration: call.duration,
            outcome,
            warnings: output.as_ref().map(|o| o.warnings.clone()).unwrap_or_default(),
            bytes_read: call.bytes_read,
        };
        (report, output)
    }
}

/// The overall result of a pipeline run.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every stage succeeded or was skipped.
    Ready,
    /// A stage rejected the asset; do not retry.
    Rejected {
        /// The stage that rejected it.
        stage: String,
        /// Its reason.
        reason: String,
    },
    /// A stage failed; the job may be retried.
    Failed {
        /// The stage that failed.
        stage: String,
        /// The error, naming the stage and the cause.
        error: String,
    },
}

/// Everything a pipeline run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineReport {
    /// One report per stage that was reached, in order.
    pub stages: Vec<StageReport>,
    /// All facts, merged by key: a later stage's value replaces an earlier one
    /// in place.
    pub facts: Vec<(String, FactValue)>,
    /// All renditions; a later one with the same name replaces the earlier.
    pub renditions: Vec<Rendition>,
    /// Every stage's warnings, prefixed with `STAGE: `.
    pub warnings: Vec<String>,
    /// The outcome.
    pub verdict: Verdict,
}

impl PipelineReport {
    /// An empty report that ends in `verdict`.
    pub(crate) fn empty(verdict: Verdict) -> Self {
        PipelineReport {
            stages: Vec::new(),
            facts: Vec::new(),
            renditions: Vec::new(),
            warnings: Vec::new(),
            verdict,
        }
    }

    /// The value of fact `key`, if any stage produced it.
    pub fn fact(&self, key: &str) -> Option<&FactValue> {
        self.facts.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A `run_single` result: the stage's report and, if it succeeded, its output.
#[derive(Debug, Clone, PartialEq)]
pub struct SingleRun {
    /// The stage's report (name = the component's file stem).
    pub report: StageReport,
    /// The output when the outcome is `Ok`.
    pub output: Option<StageOutput>,
    /// Every call's duration, in order (one per call [`run_single`](super::run_single) made).
    pub durations: Vec<std::time::Duration>,
}

