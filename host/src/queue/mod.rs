//! The River client, job arguments and workers.
//!
//! `process_asset` runs the configured WASM pipeline on an upload, stores the
//! original and its renditions, and records the outcome. Workers are the only
//! place where pipeline results meet the database and storage.

pub mod backfill;
mod process_asset;
mod process_clip;
pub mod sweep;

use std::sync::Arc;
use std::time::Duration;

use riverqueue::{Client, QueueConfig, Workers};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

pub use process_asset::ProcessAssetWorker;
pub use process_clip::{CLIP_RENDITION, ProcessClipWorker};

use crate::clip::Dispatcher;
use crate::pipeline::Pipeline;
use crate::storage::Storage;

/// Queue name of [`ProcessAsset`] jobs.
pub const PROCESS_ASSET_QUEUE: &str = "process_asset";

/// Runs the pipeline on one uploaded asset. Carries only the id: the bytes
/// stay on disk.
#[derive(Clone, Debug, Deserialize, Serialize, riverqueue::JobArgs)]
#[river(kind = "process_asset", queue = "process_asset", max_attempts = 5)]
pub struct ProcessAsset {
    /// The asset to process.
    pub asset_id: Uuid,
}

/// Queue name of [`ProcessClip`] jobs.
pub const PROCESS_CLIP_QUEUE: &str = "process_clip";

/// Embeds one ready asset's `clip` rendition. Carries only the id, never image bytes.
#[derive(Clone, Debug, Deserialize, Serialize, riverqueue::JobArgs)]
#[river(kind = "process_clip", queue = "process_clip", max_attempts = 25)]
pub struct ProcessClip {
    /// The asset to embed.
    pub asset_id: Uuid,
}

/// Queue settings.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Concurrent `process_asset` jobs in this process.
    pub process_asset_workers: usize,
    /// A running job older than this is considered stuck (its worker died) and retried.
    pub rescue_after: Duration,
    /// Longest a single pipeline job may run.
    pub job_timeout: Duration,
    /// Concurrent `process_clip` jobs; at least a CLIP batch, or batches never fill.
    pub process_clip_workers: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            process_asset_workers: 5,
            rescue_after: Duration::from_secs(120),
            job_timeout: Duration::from_secs(60),
            process_clip_workers: 16,
        }
    }
}

/// What the workers need.
#[derive(Clone)]
pub struct WorkerDeps {
    /// The database.
    pub pool: PgPool,
    /// The loaded pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Staging and storage directories.
    pub storage: Storage,
    /// The CLIP dispatcher, when an inference service is configured.
    pub clip: Option<Dispatcher>,
}

/// Builds a client that can insert jobs but works none (for the API alone and for tests).
pub fn insert_only_client(pool: PgPool) -> Result<Client, riverqueue::Error> {
    Client::builder(pool).build()
}

/// Builds the client that works every queue.
pub fn worker_client(
    deps: WorkerDeps,
    settings: &QueueSettings,
) -> Result<Client, riverqueue::Error> {
    let mut workers = Workers::new();
    workers.add(ProcessAssetWorker::new(deps.clone()))?;
    let maintenance =
        riverqueue::MaintenanceConfig::default().with_rescue_after(settings.rescue_after);
    let mut builder = Client::builder(deps.pool.clone());
    if let Some(dispatcher) = &deps.clip {
        workers.add(ProcessClipWorker::new(
            deps.pool.clone(),
            deps.storage.clone(),
            dispatcher.clone(),
        ))?;
        // One worker blocks on its own submission, so a batch holds at most as
        // many items as there are workers: never run fewer than a batch.
        let n = settings
            .process_clip_workers
            .max(dispatcher.config().batch_size);
        builder = builder.queue(PROCESS_CLIP_QUEUE, QueueConfig::new(n));
    }
    builder
        .workers(workers)
        .queue(
            PROCESS_ASSET_QUEUE,
            QueueConfig::new(settings.process_asset_workers),
        )
        .job_timeout(settings.job_timeout)
        .maintenance(maintenance)
        .soft_stop_timeout(Duration::from_secs(20))
        .build()
}
