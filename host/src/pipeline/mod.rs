//! The asset-processing pipeline: WebAssembly stages listed in
//! `pipeline.toml`, run in order on one asset.
//!
//! * [`Runtime`] is created once per process: one wasmtime `Engine` with the
//!   pooling allocator, an epoch ticker thread for deadlines, and an on-disk
//!   cache of compiled components keyed by the wasm file's BLAKE3 hash and the
//!   engine's compatibility hash.
//! * [`Pipeline::load`] reads and validates `pipeline.toml`, collecting every
//!   problem ([`PipelineConfigError`]), and pre-instantiates each stage once.
//! * [`Pipeline::run`] runs the stages in order on a blocking thread, each
//!   call in a fresh `Store` bounded by the stage's deadline (epoch
//!   interruption for wasm code, plus a timer that cancels a guest blocked in
//!   a WASI call) and memory cap (a limiter that traps on the failed grow),
//!   with stderr captured; it returns a [`PipelineReport`]: facts (later
//!   stages win), renditions, warnings and a [`Verdict`]. It stops at the
//!   first rejected or failed stage. Content-type filters match the
//!   `content_type` fact of an earlier stage if there is one, else the
//!   client's claim.
//! * [`check`] and [`run_single`] back `lumilio plugin check` and
//!   `lumilio plugin run`.
//!
//! This module is a leaf: it knows nothing of HTTP, database rows or jobs.
//! Stages see no filesystem, network or environment unless `pipeline.toml`
//! grants `read_only_dirs` or `env`. See [`bindings`] for how several WIT
//! versions are supported side by side.

pub mod bench;
pub mod bindings;
mod capture;
pub mod config;
pub mod error;
pub mod runtime;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use error::{ConfigIssue, PipelineConfigError, RuntimeError, StageError};
pub use runtime::{LoadStats, RuntimeOptions};

use config::StageSpec;
use runtime::{CallFailure, PreparedStage, RuntimeInner};

/// The process-wide WebAssembly runtime: engine, pooling allocator, epoch
/// ticker and compile cache. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

impl Runtime {
    /// Creates the runtime with default options, caching compiled components
    /// in `cache_dir` (created if missing).
    pub fn new(cache_dir: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        Self::with_options(cache_dir, RuntimeOptions::default())
    }

    /// Creates the runtime with explicit [`RuntimeOptions`].
    pub fn with_options(
        cache_dir: impl Into<PathBuf>,
        options: RuntimeOptions,
    ) -> Result<Self, RuntimeError> {
        Ok(Runtime {
            inner: RuntimeInner::new(cache_dir.into(), options)?,
        })
    }

    /// How many components this runtime compiled and how many it took from the cache.
    pub fn load_stats(&self) -> LoadStats {
        self.inner.stats()
    }

    /// The compile cache directory.
    pub fn cache_dir(&self) -> &Path {
        self.inner.cache_dir()
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache_dir", &self.inner.cache_dir())
            .finish()
    }
}

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
}

/// Loaded and validated stages, one `InstancePre` each. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<PipelineInner>,
}

struct PipelineInner {
    runtime: Arc<RuntimeInner>,
    stages: Vec<PreparedStage>,
    infos: Vec<StageInfo>,
    load_stats: LoadStats,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("stages", &self.inner.infos)
            .finish()
    }
}

impl Pipeline {
    /// Reads `path` (a pipeline.toml), validates every stage, compiles (or
    /// loads from cache) and pre-instantiates each component. On failure the
    /// error holds every problem found, each with file and key.
    pub fn load(path: &Path, runtime: &Runtime) -> Result<Pipeline, PipelineConfigError> {
        let mut issues = Vec::new();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                issues.push(ConfigIssue {
                    key: "(file)".into(),
                    message: format!("cannot read: {e}"),
                });
                return Err(PipelineConfigError {
                    file: path.to_path_buf(),
                    issues,
                });
            }
        };
        // Relative to the file's directory; for a bare `pipeline.toml` that
        // is the current directory, and joined paths stay as written.
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let specs = config::parse(&text, &base, &mut issues);

        let rt = &runtime.inner;
        let mut stats = LoadStats::default();
        let mut stages = Vec::new();
        let mut infos = Vec::new();
        for spec in specs {
            match prepare_stage(rt, spec, &mut stats) {
                Ok((stage, info)) => {
                    stages.push(stage);
                    infos.push(info);
                }
                Err(e) => issues.push(e.issue),
            }
        }
        if !issues.is_empty() {
            return Err(PipelineConfigError {
                file: path.to_path_buf(),
                issues,
            });
        }
        Ok(Pipeline {
            inner: Arc::new(PipelineInner {
                runtime: rt.clone(),
                stages,
                infos,
                load_stats: stats,
            }),
        })
    }

    /// The stages, in order.
    pub fn stages(&self) -> &[StageInfo] {
        &self.inner.infos
    }

    /// How this load obtained its components (compiled vs. from the cache).
    pub fn load_stats(&self) -> LoadStats {
        self.inner.load_stats
    }

    /// Runs every stage in order on a blocking thread; a fresh Store per call.
    pub async fn run(&self, asset: AssetFacts, bytes: Arc<[u8]>) -> PipelineReport {
        let inner = self.inner.clone();
        let first = self
            .inner
            .infos
            .first()
            .map(|i| i.name.clone())
            .unwrap_or_default();
        // Wait for room in the instance pool rather than fail when it is busy.
        let permit = self
            .inner
            .runtime
            .permits
            .clone()
            .acquire_owned()
            .await
            .ok();
        let handle = tokio::runtime::Handle::current();
        let job = tokio::task::spawn_blocking(move || {
            let report = handle.block_on(inner.run(&asset, &bytes));
            drop(permit);
            report
        });
        match job.await {
            Ok(report) => report,
            Err(e) => {
                let error = StageError::Host {
                    stage: first.clone(),
                    message: format!("the pipeline thread ended unexpectedly: {e}"),
                };
                PipelineReport {
                    stages: Vec::new(),
                    facts: Vec::new(),
                    renditions: Vec::new(),
                    warnings: Vec::new(),
                    verdict: Verdict::Failed {
                        stage: first,
                        error: error.to_string(),
                    },
                }
            }
        }
    }

    /// Same as [`run`](Self::run), on the calling thread (for CLIs and
    /// benchmarks); does not wait for room in the instance pool. Must not be
    /// called from async code (it blocks; tokio would panic).
    pub fn run_blocking(&self, asset: &AssetFacts, bytes: &[u8]) -> PipelineReport {
        block_on(self.inner.run(asset, bytes))
    }
}

/// Why a stage's component could not be prepared: the message with the
/// component's path (for pipeline.toml) and without (for `plugin run`).
struct PrepareError {
    issue: ConfigIssue,
    bare: String,
}

fn prepare_stage(
    rt: &RuntimeInner,
    spec: StageSpec,
    stats: &mut LoadStats,
) -> Result<(PreparedStage, StageInfo), PrepareError> {
    let key = format!("{}.component", spec.label());
    let shown = spec.component.display().to_string();
    let fail = |message: String, bare: String| PrepareError {
        issue: ConfigIssue {
            key: key.clone(),
            message,
        },
        bare,
    };
    let (component, hash, cached) = rt
        .load_component(&spec.component)
        .map_err(|m| fail(format!("{shown}: {m}"), m))?;
    if cached {
        stats.cache_hits += 1;
    } else {
        stats.compiled += 1;
    }
    let pre = rt
        .prepare(&component)
        .map_err(|m| fail(format!("{shown} {m}"), m))?;
    let mut env = Vec::new();
    for name in &spec.env {
        match std::env::var(name) {
            Ok(v) => env.push((name.clone(), v)),
            Err(_) => {
                tracing::warn!(stage = %spec.name, var = %name, "granted environment variable is not set; the stage will not see it")
            }
        }
    }
    let info = StageInfo {
        name: spec.name.clone(),
        component: spec.component.clone(),
        component_hash: hash,
        world_version: pre.version().to_string(),
        from_cache: cached,
        timeout_ms: spec.timeout_ms,
        memory_limit_mb: spec.memory_limit_mb,
        content_types: spec.content_types.clone(),
        read_only_dirs: spec.read_only_dirs.clone(),
        env: spec.env.clone(),
    };
    Ok((PreparedStage { spec, pre, env }, info))
}

/// Runs `fut` to completion on the calling, non-async thread: on the ambient
/// tokio runtime when there is one (e.g. in `spawn_blocking`), else on a
/// per-thread current-thread runtime.
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(fut),
        Err(_) => {
            thread_local! {
                static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("cannot build a tokio runtime");
            }
            RT.with(|rt| rt.block_on(fut))
        }
    }
}

impl PipelineInner {
    async fn run(&self, asset: &AssetFacts, bytes: &[u8]) -> PipelineReport {
        let mut report = PipelineReport {
            stages: Vec::new(),
            facts: Vec::new(),
            renditions: Vec::new(),
            warnings: Vec::new(),
            verdict: Verdict::Ready,
        };
        for stage in &self.stages {
            let name = &stage.spec.name;
            if !stage.spec.content_types.is_empty() {
                let ct = effective_content_type(asset, &report.facts);
                if !stage
                    .spec
                    .content_types
                    .iter()
                    .any(|p| config::content_type_matches(p, ct))
                {
                    report.stages.push(StageReport {
                        name: name.clone(),
                        duration: Duration::ZERO,
                        outcome: StageOutcome::Skipped,
                        warnings: Vec::new(),
                    });
                    continue;
                }
            }
            let call = self.runtime.call(stage, asset, bytes, &report.facts).await;
            match call.outcome {
                Ok(out) => {
                    for (k, v) in out.facts {
                        merge_fact(&mut report.facts, k, v);
                    }
                    for r in out.renditions {
                        if let Some(old) = report.renditions.iter_mut().find(|o| o.name == r.name) {
                            *old = r;
                        } else {
                            report.renditions.push(r);
                        }
                    }
                    report
                        .warnings
                        .extend(out.warnings.iter().map(|w| format!("{name}: {w}")));
                    report.stages.push(StageReport {
                        name: name.clone(),
                        duration: call.duration,
                        outcome: StageOutcome::Ok,
                        warnings: out.warnings,
                    });
                }
                Err(CallFailure::Rejected(reason)) => {
                    report.stages.push(StageReport {
                        name: name.clone(),
                        duration: call.duration,
                        outcome: StageOutcome::Rejected(reason.clone()),
                        warnings: Vec::new(),
                    });
                    report.verdict = Verdict::Rejected {
                        stage: name.clone(),
                        reason,
                    };
                    break;
                }
                Err(CallFailure::Error(e)) => {
                    tracing::warn!(stage = %name, asset = %asset.id, error = %e, "stage failed");
                    report.verdict = Verdict::Failed {
                        stage: name.clone(),
                        error: e.to_string(),
                    };
                    report.stages.push(StageReport {
                        name: name.clone(),
                        duration: call.duration,
                        outcome: StageOutcome::Failed(e),
                        warnings: Vec::new(),
                    });
                    break;
                }
            }
        }
        report
    }
}

/// The content type stages are matched against: the latest text fact
/// `content_type` from an earlier stage (validate's verdict), else the
/// client's claim.
fn effective_content_type<'a>(asset: &'a AssetFacts, facts: &'a [(String, FactValue)]) -> &'a str {
    facts
        .iter()
        .rev()
        .find_map(|(k, v)| match (k.as_str(), v) {
            ("content_type", FactValue::Text(t)) => Some(t.as_str()),
            _ => None,
        })
        .unwrap_or(&asset.content_type)
}

fn merge_fact(facts: &mut Vec<(String, FactValue)>, key: String, value: FactValue) {
    if let Some(slot) = facts.iter_mut().find(|(k, _)| *k == key) {
        slot.1 = value;
    } else {
        facts.push((key, value));
    }
}

/// Validates `path` like [`Pipeline::load`] and returns the stages, for
/// `lumilio plugin check`.
pub fn check(path: &Path, runtime: &Runtime) -> Result<Vec<StageInfo>, PipelineConfigError> {
    Pipeline::load(path, runtime).map(|p| p.stages().to_vec())
}

/// Runs one component on one asset with default limits and no grants, for
/// `lumilio plugin run PLUGIN.wasm FILE --config k=v`. A component that
/// cannot be loaded is reported as a [`PipelineConfigError`] naming the file.
pub async fn run_single(
    runtime: &Runtime,
    component: &Path,
    asset: AssetFacts,
    bytes: Arc<[u8]>,
    config: Vec<(String, String)>,
) -> Result<SingleRun, PipelineConfigError> {
    let rt = runtime.inner.clone();
    let component = component.to_path_buf();
    let handle = tokio::runtime::Handle::current();
    let joined = tokio::task::spawn_blocking(move || {
        handle.block_on(run_single_inner(&rt, &component, &asset, &bytes, config))
    })
    .await;
    match joined {
        Ok(r) => r,
        Err(e) => Err(PipelineConfigError {
            file: PathBuf::new(),
            issues: vec![ConfigIssue {
                key: "(run)".into(),
                message: format!("the run thread ended unexpectedly: {e}"),
            }],
        }),
    }
}

async fn run_single_inner(
    rt: &RuntimeInner,
    component: &Path,
    asset: &AssetFacts,
    bytes: &[u8],
    config: Vec<(String, String)>,
) -> Result<SingleRun, PipelineConfigError> {
    let name = component
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_string();
    let spec = StageSpec::single(&name, component.to_path_buf(), config);
    let err = |message: String| PipelineConfigError {
        file: component.to_path_buf(),
        issues: vec![ConfigIssue {
            key: "component".into(),
            message,
        }],
    };
    if !component.is_file() {
        return Err(err(format!("file not found: {}", component.display())));
    }
    let mut stats = LoadStats::default();
    let (stage, _info) = prepare_stage(rt, spec, &mut stats).map_err(|e| err(e.bare))?;
    let call = rt.call(&stage, asset, bytes, &[]).await;
    Ok(match call.outcome {
        Ok(out) => SingleRun {
            report: StageReport {
                name,
                duration: call.duration,
                outcome: StageOutcome::Ok,
                warnings: out.warnings.clone(),
            },
            output: Some(out),
        },
        Err(CallFailure::Rejected(r)) => SingleRun {
            report: StageReport {
                name,
                duration: call.duration,
                outcome: StageOutcome::Rejected(r),
                warnings: Vec::new(),
            },
            output: None,
        },
        Err(CallFailure::Error(e)) => SingleRun {
            report: StageReport {
                name,
                duration: call.duration,
                outcome: StageOutcome::Failed(e),
                warnings: Vec::new(),
            },
            output: None,
        },
    })
}
