//! The `process_asset` worker: staged upload → pipeline → storage and rows.

use std::path::PathBuf;

use chrono::NaiveDateTime;
use riverqueue::{Job, WorkContext, WorkOutcome, Worker};
use serde_json::{Map, Value};
use tracing::{info, warn};
use uuid::Uuid;

use super::{ProcessAsset, WorkerDeps, backfill};
use crate::db::assets::{self, KnownFacts, Status};
use crate::pipeline::{AssetFacts, FactValue, PipelineReport, StageFile, StageOutcome, Verdict};
use crate::storage::StorageError;
use crate::telemetry;

/// Room a stage needs beside the file itself (its code, stack and buffers).
const HEADROOM: u64 = 32 << 20;

/// Why a `process_asset` attempt failed (River retries it with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A query failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// River could not complete the job.
    #[error("queue error: {0}")]
    Queue(#[from] riverqueue::Error),
    /// Storing the original or a rendition failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Neither the staged upload nor the stored original is on disk.
    #[error("the bytes of asset {asset} are gone: neither {staged} nor the stored original exists")]
    MissingBytes {
        /// Asset id.
        asset: Uuid,
        /// Where the staged file was expected.
        staged: String,
    },
    /// A stage failed in a way that may pass on retry.
    #[error("stage {stage:?} failed: {error}")]
    Stage {
        /// The stage.
        stage: String,
        /// What happened.
        error: String,
    },
}

/// Works `process_asset` jobs.
pub struct ProcessAssetWorker {
    deps: WorkerDeps,
}

impl ProcessAssetWorker {
    /// A worker over these dependencies.
    pub fn new(deps: WorkerDeps) -> Self {
        Self { deps }
    }

    /// The asset's bytes on disk, for the stages to read as far as they need
    /// (not read into memory here: a 200 MiB file that `validate` turns away on
    /// its first bytes costs no 200 MiB buffer), and the path they are at.
    async fn open_file(&self, asset: &assets::Asset) -> Result<(StageFile, PathBuf), ProcessError> {
        let open = |path: PathBuf| async move {
            let p = path.clone();
            let file = telemetry::blocking(move || StageFile::open(&p)).await?;
            Ok::<_, std::io::Error>((file, path))
        };
        let staged = self.deps.storage.staged_path(asset.id);
        match open(staged.clone()).await {
            Ok(opened) => return Ok(opened),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StorageError::Io {
                    path: staged,
                    source: e,
                }
                .into());
            }
            Err(_) => {}
        }
        // A retried job may find the original already moved into storage.
        let original = self.deps.storage.original_path(&asset.content_hash)?;
        open(original)
            .await
            .map_err(|_| ProcessError::MissingBytes {
                asset: asset.id,
                staged: staged.display().to_string(),
            })
    }

    /// Moves the staged bytes into storage. Rejected files are kept too: the
    /// upload was accepted, and a client may already have deleted its copy
    /// (`immich upload --delete`); `reprocess` can try them again.
    async fn keep_original(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        asset: &assets::Asset,
    ) -> Result<(), ProcessError> {
        // Under the hash lock, so a concurrent delete of another asset with
        // the same bytes cannot remove the original we are about to rely on.
        assets::lock_hash(tx, &asset.content_hash).await?;
        let staged = self.deps.storage.staged_path(asset.id);
        self.deps
            .storage
            .put_original(&staged, &asset.content_hash)
            .await?;
        Ok(())
    }

    /// For files whose own metadata has no date: the XMP sidecar's date,
    /// else the file time the client reported (UTC).
    async fn date_fallback(
        &self,
        asset: &assets::Asset,
        known: &mut KnownFacts,
    ) -> Result<(), ProcessError> {
        if let Some(sidecar) = assets::sidecar(&self.deps.pool, asset.id).await?
            && let Some(at) = crate::ingest::sidecar::taken_at(&sidecar.data)
        {
            (known.taken_at, known.taken_at_offset) = parse_taken_at(&at);
            known.taken_at_source = known.taken_at.map(|_| "sidecar");
            return Ok(());
        }
        if let Some(at) = asset.file_created_at.or(asset.file_modified_at) {
            known.taken_at = Some(at.naive_utc());
            known.taken_at_offset = Some("+00:00".into());
            known.taken_at_source = Some("file_time");
        }
        Ok(())
    }

    async fn process(
        &self,
        context: &WorkContext,
        job: &Job<ProcessAsset>,
    ) -> Result<WorkOutcome, ProcessError> {
        let pool = &self.deps.pool;
        let id = job.args.asset_id;
        let Some(asset) = assets::get_any(pool, id).await? else {
            info!(asset = %id, "asset was deleted before processing; nothing to do");
            return Ok(WorkOutcome::Complete);
        };
        if asset.status != Status::Processing.as_str() {
            // Already finished by an earlier attempt whose completion was lost.
            self.deps.storage.remove_staged(id).await?;
            return Ok(WorkOutcome::Complete);
        }
        // Every stage gets the whole file in its own memory: a file that cannot
        // fit would fail the same way on every retry, so it is rejected up front.
        if let Some(stage) = self
            .deps
            .pipeline
            .stages()
            .iter()
            .find(|s| (asset.size as u64).saturating_add(HEADROOM) > s.memory_limit_mb << 20)
        {
            let reason = format!(
                "the file ({} MiB) does not fit in stage {:?}'s memory limit of {} MiB; raise memory_limit_mb in the pipeline to accept such files",
                asset.size >> 20,
                stage.name,
                stage.memory_limit_mb
            );
            if asset.sha1.is_none() {
                // No bytes are read for the pipeline here: hash them from disk.
                backfill::fill_one(pool, &self.deps.storage, id, &asset.content_hash).await?;
            }
            let mut tx = riverqueue::database::begin_postgres(&self.deps.pool).await?;
            self.keep_original(&mut tx, &asset).await?;
            assets::finish(
                &mut tx,
                id,
                Status::Rejected,
                Some(&reason),
                &KnownFacts::default(),
                &Value::Object(Map::new()),
                None,
            )
            .await?;
            context.job_complete_tx(&mut tx).await?;
            tx.commit().await?;
            self.deps.storage.remove_staged(id).await?;
            info!(asset = %id, reason, "asset rejected before the pipeline");
            return Ok(WorkOutcome::Complete);
        }
        let (file, path) = telemetry::timed("asset.open", self.open_file(&asset)).await?;
        // Native uploads leave SHA-1 to the worker (issue 15 §5): it is here
        // for the Immich duplicate check only; hashed from the file, and
        // saved with the outcome (no statement or commit of its own).
        let sha1 = match asset.sha1 {
            Some(_) => None,
            None => Some(
                telemetry::timed("asset.sha1", backfill::sha1_of(&path))
                    .await
                    .map_err(|source| StorageError::Io { path, source })?,
            ),
        };
        let facts = AssetFacts {
            id: id.to_string(),
            file_name: asset.file_name.clone(),
            content_type: asset.content_type.clone(),
            size: asset.size as u64,
            content_hash: asset.content_hash.clone(),
        };
        let report = telemetry::timed("asset.pipeline", self.deps.pipeline.run(facts, file)).await;
        let results = stage_results(&report);
        let (mut known, facts_json) = facts_of(&report);
        if known.taken_at.is_some() {
            known.taken_at_source = Some("metadata");
        } else {
            self.date_fallback(&asset, &mut known).await?;
        }

        let (status, reason) = match &report.verdict {
            Verdict::Ready => {
                let mut tx = riverqueue::database::begin_postgres(pool).await?;
                telemetry::timed("asset.store_original", self.keep_original(&mut tx, &asset)).await?;
                let mut rows = Vec::with_capacity(report.renditions.len());
                let mut files = Vec::with_capacity(report.renditions.len());
                for r in report.renditions {
                    rows.push(assets::Rendition {
                        name: r.name.clone(),
                        content_type: r.content_type,
                        width: r.width as i32,
                        height: r.height as i32,
                        size: r.bytes.len() as i64,
                    });
                    files.push((r.name, r.bytes));
                }
                let stored = self.deps.storage.put_renditions(&asset.content_hash, files);
                telemetry::timed("asset.store_renditions", stored).await?;
                assets::save_renditions(&mut tx, id, &rows).await?;
                // The next step is enqueued with the outcome, in the same transaction.
                if self.deps.clip.is_some() && rows.iter().any(|r| r.name == super::CLIP_RENDITION)
                {
                    let client = context
                        .client()
                        .expect("jobs worked by a client have a client");
                    client
                        .insert(super::ProcessClip { asset_id: id })
                        .tx(&mut tx)
                        .await?;
                }
                let outcome = Outcome {
                    status: Status::Ready,
                    reason: None,
                    results: &results,
                    known: &known,
                    facts: &facts_json,
                    sha1: sha1.as_ref(),
                };
                save_outcome(&mut tx, id, outcome, context).await?;
                tx.commit().await?;
                (Status::Ready, None)
            }
            Verdict::Rejected { stage, reason } => {
                let reason = format!("{stage}: {reason}");
                let mut tx = riverqueue::database::begin_postgres(pool).await?;
                self.keep_original(&mut tx, &asset).await?;
                let outcome = Outcome {
                    status: Status::Rejected,
                    reason: Some(&reason),
                    results: &results,
                    known: &known,
                    facts: &facts_json,
                    sha1: sha1.as_ref(),
                };
                save_outcome(&mut tx, id, outcome, context).await?;
                tx.commit().await?;
                (Status::Rejected, Some(reason))
            }
            Verdict::Failed { stage, error } => {
                // A trap, panic or out-of-memory would repeat on every retry.
                let retryable = report.stages.iter().all(|s| match &s.outcome {
                    StageOutcome::Failed(e) => e.may_succeed_on_retry(),
                    _ => true,
                });
                let give_up = !retryable || job.row.attempt >= job.row.max_attempts;
                let mut tx = riverqueue::database::begin_postgres(pool).await?;
                assets::save_stage_results(&mut tx, id, &results).await?;
                if !give_up {
                    // Kept for the next attempt, which then skips the hash.
                    if let Some(digest) = &sha1 {
                        assets::set_sha1(&mut *tx, id, digest).await?;
                    }
                    tx.commit().await?;
                    return Err(ProcessError::Stage {
                        stage: stage.clone(),
                        error: error.clone(),
                    });
                }
                // The asset is failed; the staged bytes stay for a reprocess.
                let why = if retryable {
                    format!("gave up after {} attempts", job.row.attempt)
                } else {
                    "not retried: it would fail the same way".into()
                };
                let reason = format!("{stage}: {error} ({why})");
                assets::finish(
                    &mut tx,
                    id,
                    Status::Failed,
                    Some(&reason),
                    &known,
                    &facts_json,
                    sha1.as_ref(),
                )
                .await?;
                context.job_complete_tx(&mut tx).await?;
                tx.commit().await?;
                warn!(asset = %id, reason, "asset failed");
                return Ok(WorkOutcome::Complete);
            }
        };
        self.deps.storage.remove_staged(id).await?;
        info!(asset = %id, status = status.as_str(), reason = reason.as_deref().unwrap_or(""), "asset processed");
        Ok(WorkOutcome::Complete)
    }
}

/// The final state of an asset, written with its job's completion.
struct Outcome<'a> {
    status: Status,
    reason: Option<&'a str>,
    results: &'a [assets::StageResult],
    known: &'a KnownFacts,
    facts: &'a Value,
    /// The SHA-1 this attempt computed, if the row had none.
    sha1: Option<&'a [u8; 20]>,
}

/// Saves an outcome and completes the job in the same transaction, so a
/// crash never leaves a finished asset whose job runs again, or the reverse.
async fn save_outcome(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    id: Uuid,
    outcome: Outcome<'_>,
    context: &WorkContext,
) -> Result<(), ProcessError> {
    assets::save_stage_results(tx, id, outcome.results).await?;
    assets::finish(
        tx,
        id,
        outcome.status,
        outcome.reason,
        outcome.known,
        outcome.facts,
        outcome.sha1,
    )
    .await?;
    context.job_complete_tx(tx).await?;
    Ok(())
}

impl Worker<ProcessAsset> for ProcessAssetWorker {
    type Error = ProcessError;

    async fn work(
        &self,
        context: WorkContext,
        job: Job<ProcessAsset>,
    ) -> Result<WorkOutcome, ProcessError> {
        let result = telemetry::timed("asset.total", self.process(&context, &job)).await;
        if let Err(e) = &result {
            warn!(asset = %job.args.asset_id, attempt = job.row.attempt, error = %e, "process_asset attempt failed");
        }
        result
    }
}

/// Stage reports as rows.
fn stage_results(report: &PipelineReport) -> Vec<assets::StageResult> {
    report
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (outcome, error) = match &s.outcome {
                StageOutcome::Ok => ("ok", None),
                StageOutcome::Skipped => ("skipped", None),
                StageOutcome::Rejected(reason) => ("rejected", Some(reason.clone())),
                StageOutcome::Failed(e) => ("failed", Some(e.to_string())),
            };
            assets::StageResult {
                stage: s.name.clone(),
                position: i as i32,
                outcome,
                duration_ms: s.duration.as_secs_f64() * 1000.0,
                error,
                warnings: s.warnings.clone(),
            }
        })
        .collect()
}

/// The merged facts as JSON, and the well-known ones typed.
fn facts_of(report: &PipelineReport) -> (KnownFacts, Value) {
    let mut json = Map::new();
    let mut k = KnownFacts::default();
    for (key, value) in &report.facts {
        json.insert(
            key.clone(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        let text = || match value {
            FactValue::Text(s) => Some(s.clone()),
            _ => None,
        };
        let float = || match value {
            FactValue::Float(f) => Some(*f),
            FactValue::Integer(i) => Some(*i as f64),
            _ => None,
        };
        let int = || match value {
            FactValue::Integer(i) => i32::try_from(*i).ok(),
            _ => None,
        };
        match key.as_str() {
            "content_type" => k.content_type = text(),
            "width" => k.width = int(),
            "height" => k.height = int(),
            "taken_at" => {
                if let Some(s) = text() {
                    (k.taken_at, k.taken_at_offset) = parse_taken_at(&s);
                }
            }
            "make" => k.make = text(),
            "model" => k.model = text(),
            "lens" => k.lens = text(),
            "exposure_time" => k.exposure_time = float(),
            "f_number" => k.f_number = float(),
            "iso" => k.iso = int(),
            "focal_length" => k.focal_length = float(),
            "gps_latitude" => k.gps_latitude = float(),
            "gps_longitude" => k.gps_longitude = float(),
            "gps_altitude" => k.gps_altitude = float(),
            "orientation" => k.orientation = int().and_then(|o| i16::try_from(o).ok()),
            "place_city" => k.place_city = text(),
            "place_region" => k.place_region = text(),
            "place_country" => k.place_country = text(),
            "place_country_code" => k.place_country_code = text(),
            _ => {}
        }
    }
    (k, Value::Object(json))
}

/// `2021-06-01T12:30:00+02:00` → wall-clock time and offset text.
fn parse_taken_at(s: &str) -> (Option<NaiveDateTime>, Option<String>) {
    let Some(head) = s.get(..19) else {
        return (None, None);
    };
    let time = NaiveDateTime::parse_from_str(head, "%Y-%m-%dT%H:%M:%S").ok();
    let offset = s.get(19..).filter(|o| !o.is_empty()).map(str::to_owned);
    (time, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_at_keeps_offset() {
        let (t, o) = parse_taken_at("2021-06-01T12:30:00+02:00");
        assert_eq!(t.unwrap().to_string(), "2021-06-01 12:30:00");
        assert_eq!(o.as_deref(), Some("+02:00"));
        assert_eq!(parse_taken_at("2021-06-01T12:30:00").1, None);
        assert_eq!(parse_taken_at("garbage").0, None);
    }
}
