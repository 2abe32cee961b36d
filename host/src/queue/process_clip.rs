//! The `process_clip` worker: the `clip` rendition → the CLIP dispatcher →
//! an embedding and predictions in Postgres.

use riverqueue::{Job, JobCancelError, WorkContext, WorkOutcome, Worker};
use sqlx::PgPool;
use tracing::{info, warn};
use uuid::Uuid;

use super::ProcessClip;
use crate::clip::{ClipError, Dispatcher};
use crate::db::{assets, embeddings};
use crate::db::embeddings::DIMENSION;
use crate::storage::{Storage, StorageError};

/// The rendition the thumbnail stage makes for CLIP (a 224×224 centre crop).
pub const CLIP_RENDITION: &str = "clip";

/// Why a `process_clip` attempt failed (River retries it with backoff, except
/// [`ClipJobError::Refused`]).
#[derive(Debug, thiserror::Error)]
pub enum ClipJobError {
    /// A query failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// River could not complete the job.
    #[error("queue error: {0}")]
    Queue(#[from] riverqueue::Error),
    /// The rendition could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The inference service failed; retried with backoff.
    #[error("CLIP inference failed: {0}")]
    Clip(#[from] ClipError),
    /// The service refused the image as bad input (`INVALID_ARGUMENT`) or
    /// answered unusably: a retry would get the same answer, so the job is
    /// cancelled at once, its recorded error ending with the service's reason.
    #[error("CLIP inference cannot succeed for this asset, so it is not retried (reprocess the asset once the cause is fixed)")]
    Refused(#[source] JobCancelError),
    /// The service's embeddings do not fit the `embeddings.embedding` column
    /// (it was swapped after start-up); retried, so fixing the address resumes.
    #[error(
        "the inference service sent a {got}-dimensional embedding, but the database stores {expected}; \
         point ML_SERVICE_ADDR at a service with {expected}-dimensional embeddings"
    )]
    Dimension {
        /// The vector's length.
        got: usize,
        /// The column's dimension.
        expected: usize,
    },
}

/// Works `process_clip` jobs.
pub struct ProcessClipWorker {
    pool: PgPool,
    storage: Storage,
    dispatcher: Dispatcher,
}

impl ProcessClipWorker {
    /// A worker that submits to `dispatcher`.
    pub fn new(pool: PgPool, storage: Storage, dispatcher: Dispatcher) -> Self {
        Self {
            pool,
            storage,
            dispatcher,
        }
    }

    async fn process(
        &self,
        context: &WorkContext,
        asset_id: Uuid,
    ) -> Result<WorkOutcome, ClipJobError> {
        let Some(asset) = assets::get_any(&self.pool, asset_id).await? else {
            info!(asset = %asset_id, "asset deleted before CLIP; nothing to do");
            return Ok(WorkOutcome::Complete);
        };
        let path = self
            .storage
            .rendition_path(&asset.content_hash, CLIP_RENDITION)?;
        let reading = path.clone();
        let image = match crate::telemetry::blocking(move || std::fs::read(reading)).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Nothing to embed (the pipeline made no clip rendition): not an error to retry.
                warn!(asset = %asset_id, "no clip rendition; skipping CLIP");
                return Ok(WorkOutcome::Complete);
            }
            Err(source) => return Err(StorageError::Io { path, source }.into()),
        };
        let submitted = self.dispatcher.submit(asset_id, image, "image/jpeg");
        let result = crate::telemetry::timed("clip.infer", submitted)
            .await
            .map_err(|e| {
                if e.is_retryable() {
                    ClipJobError::Clip(e)
                } else {
                    ClipJobError::Refused(JobCancelError::new(e))
                }
            })?;
        if result.embedding.vector.len() != DIMENSION {
            return Err(ClipJobError::Dimension {
                got: result.embedding.vector.len(),
                expected: DIMENSION,
            });
        }
        let labels: Vec<(String, f32)> = result
            .labels
            .into_iter()
            .map(|l| (l.label, l.score))
            .collect();
        let mut tx = riverqueue::database::begin_postgres(&self.pool).await?;
        // The asset may have been deleted while we waited for the service:
        // the foreign key then refuses the embedding (and holds the row
        // against a concurrent delete until we commit), so no lock is taken.
        let saved = embeddings::save_embedding(
            &mut tx,
            asset_id,
            &result.embedding.model_id,
            result.embedding.vector,
        )
        .await;
        if let Err(sqlx::Error::Database(e)) = &saved
            && e.is_foreign_key_violation()
        {
            tx.rollback().await?;
            info!(asset = %asset_id, "asset deleted during CLIP; nothing to save");
            let mut tx = riverqueue::database::begin_postgres(&self.pool).await?;
            context.job_complete_tx(&mut tx).await?;
            tx.commit().await?;
            return Ok(WorkOutcome::Complete);
        }
        saved?;
        embeddings::save_predictions(&mut tx, asset_id, &labels, &result.label_source).await?;
        context.job_complete_tx(&mut tx).await?;
        tx.commit().await?;
        Ok(WorkOutcome::Complete)
    }
}

/// Retry delay while the inference service is down: 2, 4, 8 ... seconds,
/// capped at five minutes, so jobs resume soon after it returns.
pub fn clip_retry_delay(attempt: i32) -> std::time::Duration {
    std::time::Duration::from_secs(2u64.saturating_pow(attempt.clamp(1, 16) as u32).min(300))
}

impl Worker<ProcessClip> for ProcessClipWorker {
    type Error = ClipJobError;

    fn next_retry(
        &self,
        job: &Job<ProcessClip>,
        _error: &riverqueue::WorkError,
        _now: riverqueue::jiff::Timestamp,
    ) -> Option<std::time::Duration> {
        Some(clip_retry_delay(job.row.attempt))
    }

    async fn work(
        &self,
        context: WorkContext,
        job: Job<ProcessClip>,
    ) -> Result<WorkOutcome, ClipJobError> {
        let result = crate::telemetry::timed("clip.total", self.process(&context, job.args.asset_id)).await;
        match &result {
            Err(ClipJobError::Refused(why)) => {
                let reason = std::error::Error::source(why).map(|s| s.to_string()).unwrap_or_default();
                warn!(asset = %job.args.asset_id, attempt = job.row.attempt, reason, "process_clip cancelled: the inference service refused the image; not retried");
            }
            Err(e) => {
                warn!(asset = %job.args.asset_id, attempt = job.row.attempt, error = %e, "process_clip attempt failed; will retry");
            }
            Ok(_) => {}
        }
        result
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn retry_backs_off_and_is_capped() {
        let d: Vec<u64> = [1, 2, 3, 8, 9, 25]
            .map(|a| super::clip_retry_delay(a).as_secs())
            .to_vec();
        assert_eq!(d, [2, 4, 8, 256, 300, 300]);
    }
}
