//! Loading a pipeline: reading `pipeline.toml` (parsed and checked in
//! [`config`](super::config)), compiling or fetching each component from the
//! cache, checking it implements the world, and pre-instantiating it.

use std::path::Path;
use std::sync::Arc;

use super::config::{self, StageSpec};
use super::engine::{LoadStats, PreparedStage, Runtime, RuntimeInner};
use super::{ConfigIssue, PipelineConfigError, StageInfo};

/// Loaded and validated stages, one `InstancePre` each. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    pub(super) inner: Arc<PipelineInner>,
}

pub(super) struct PipelineInner {
    pub(super) runtime: Arc<RuntimeInner>,
    pub(super) stages: Vec<PreparedStage>,
    pub(super) infos: Vec<StageInfo>,
    pub(super) load_stats: LoadStats,
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

        let rt = runtime.inner();
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

    /// The largest `max_bytes` any stage's config sets: files above it are
    /// rejected by that stage, so uploads need not be larger. `None` if no
    /// stage sets one.
    pub fn max_input_bytes(&self) -> Option<u64> {
        self.inner
            .stages
            .iter()
            .flat_map(|s| &s.spec.config)
            .filter(|(k, _)| k == "max_bytes")
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .max()
    }

    /// How this load obtained its components (compiled vs. from the cache).
    pub fn load_stats(&self) -> LoadStats {
        self.inner.load_stats
    }
}

/// Why a stage's component could not be prepared: the message with the
/// component's path (for pipeline.toml) and without (for `plugin run`).
pub(super) struct PrepareError {
    pub(super) issue: ConfigIssue,
    pub(super) bare: String,
}

pub(super) fn prepare_stage(
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

/// Validates `path` like [`Pipeline::load`] and returns the stages, for
/// `lumilio plugin check`.
pub fn check(path: &Path, runtime: &Runtime) -> Result<Vec<StageInfo>, PipelineConfigError> {
    Pipeline::load(path, runtime).map(|p| p.stages().to_vec())
}
