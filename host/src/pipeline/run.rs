//! Running a pipeline: the stage loop (content-type filter, one call per
//! stage, facts and renditions merged, stop at the first rejection or
//! failure), on a blocking thread; and [`run_single`] for `lumilio plugin run`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::config::{self, StageSpec};
use super::engine::{LoadStats, Runtime, RuntimeInner};
use super::load::{Pipeline, PipelineInner, prepare_stage};
use super::{
    AssetFacts, ConfigIssue, FactValue, PipelineConfigError, PipelineReport, SingleRun,
    StageError, StageFile, StageOutcome, StageReport, Verdict,
};

impl Pipeline {
    /// Runs every stage in order on a blocking thread; a fresh Store per call.
    /// `file` is the bytes in memory (`Arc<[u8]>`) or a [`StageFile`] on disk.
    pub async fn run(&self, asset: AssetFacts, file: impl Into<StageFile>) -> PipelineReport {
        let file = file.into();
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
        let job = crate::telemetry::spawn_blocking(move || {
            let report = handle.block_on(inner.run(&asset, &file));
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
                PipelineReport::empty(Verdict::Failed {
                    stage: first,
                    error: error.to_string(),
                })
            }
        }
    }

    /// Same as [`run`](Self::run), on the calling thread (for CLIs and
    /// benchmarks); does not wait for room in the instance pool. Must not be
    /// called from async code (it blocks; tokio would panic). Copies `bytes`
    /// once, into the [`StageFile`] the stages read.
    pub fn run_blocking(&self, asset: &AssetFacts, bytes: &[u8]) -> PipelineReport {
        block_on(self.inner.run(asset, &StageFile::new(Arc::from(bytes))))
    }
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
    async fn run(&self, asset: &AssetFacts, file: &StageFile) -> PipelineReport {
        let mut report = PipelineReport::empty(Verdict::Ready);
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
                    report.stages.push(StageReport::skipped(name));
                    continue;
                }
            }
            let call = self.runtime.call(stage, asset, file, &report.facts).await;
            let (stage_report, output) = StageReport::from_call(name, call);
            if let Some(out) = output {
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
            }
            match &stage_report.outcome {
                StageOutcome::Ok | StageOutcome::Skipped => {
                    report.stages.push(stage_report);
                    continue;
                }
                StageOutcome::Rejected(reason) => {
                    report.verdict = Verdict::Rejected {
                        stage: name.clone(),
                        reason: reason.clone(),
                    };
                }
                StageOutcome::Failed(e) => {
                    tracing::warn!(stage = %name, asset = %asset.id, error = %e, "stage failed");
                    report.verdict = Verdict::Failed {
                        stage: name.clone(),
                        error: e.to_string(),
                    };
                }
            }
            report.stages.push(stage_report);
            break;
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

/// Runs one component on one asset with default limits and no grants, for
/// `lumilio plugin run PLUGIN.wasm FILE --config k=v --fact k=v`: `facts`
/// stand in for what earlier stages would have found. A component that
/// cannot be loaded is reported as a [`PipelineConfigError`] naming the file.
/// The component is loaded once and called `times` times (at least once,
/// `--repeat N`), each call in a fresh instance as in service; a call that
/// does not succeed is not repeated. Reports the last call, and
/// [`SingleRun::durations`] has every call's time.
pub async fn run_single(
    runtime: &Runtime,
    component: &Path,
    asset: AssetFacts,
    bytes: Arc<[u8]>,
    config: Vec<(String, String)>,
    facts: Vec<(String, FactValue)>,
    times: u32,
) -> Result<SingleRun, PipelineConfigError> {
    let rt = runtime.inner().clone();
    let component = component.to_path_buf();
    let handle = tokio::runtime::Handle::current();
    let joined = tokio::task::spawn_blocking(move || {
        handle.block_on(run_single_inner(
            &rt, &component, &asset, &StageFile::new(bytes), config, &facts, times,
        ))
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
    file: &StageFile,
    config: Vec<(String, String)>,
    facts: &[(String, FactValue)],
    times: u32,
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
    let mut durations = Vec::new();
    loop {
        let call = rt.call(&stage, asset, file, facts).await;
        let (report, output) = StageReport::from_call(&name, call);
        durations.push(report.duration);
        // A stage that did not succeed is not timed again.
        let done = !matches!(report.outcome, StageOutcome::Ok | StageOutcome::Skipped);
        if done || durations.len() >= times as usize {
            return Ok(SingleRun {
                report,
                output,
                durations,
            });
        }
    }
}
