//! The River client, job arguments and workers.
//!
//! `process_asset` runs the configured WASM pipeline on an upload, stores the
//! original and its renditions, and records the outcome; `process_clip`
//! embeds a ready asset's `clip` rendition. Workers are the only place where
//! pipeline results meet the database and storage. [`Queues`] builds the
//! client from the queues `app::queues` registers (docs/adding-a-queue.md);
//! `sweep` and `backfill` are the start-up and background chores.

pub mod backfill;
pub mod nodes;
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
    /// The River client id ([`nodes::client_id`]); `None`: River's random one.
    pub client_id: Option<String>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            process_asset_workers: 5,
            rescue_after: Duration::from_secs(120),
            job_timeout: Duration::from_secs(60),
            process_clip_workers: 16,
            client_id: None,
        }
    }
}

/// The least time between two fetches of one queue. River fetches when a job
/// exits, but not sooner than this after its last fetch; at River's default
/// (100 ms) a worker that finished waited on average half of it for its next
/// job, and 5 `process_asset` workers at about 80 ms a photo were busy only
/// 43% of a bench-ingest 4g run (88% at 5 ms). A fetch is one query, so even
/// a busy queue costs at most one every few milliseconds.
pub const FETCH_COOLDOWN: Duration = Duration::from_millis(5);

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

/// The queues a River client works, each with its worker and worker count,
/// plus the client-wide settings: the one place a queue is registered
/// (`app::queues` adds the service's; docs/adding-a-queue.md).
pub struct Queues {
    pool: PgPool,
    settings: QueueSettings,
    workers: Workers,
    queues: Vec<(&'static str, usize)>,
}

impl Queues {
    /// No queues yet; `settings` gives the rescue delay and job timeout.
    pub fn new(pool: PgPool, settings: &QueueSettings) -> Self {
        Self {
            pool,
            settings: settings.clone(),
            workers: Workers::new(),
            queues: Vec::new(),
        }
    }

    /// Works jobs of `A`'s kind on `queue` with `worker`, `count` at a time.
    /// A kind registered twice is an error; a queue named twice keeps the
    /// larger count (several kinds may share one queue).
    pub fn add<A, W>(
        &mut self,
        queue: &'static str,
        count: usize,
        worker: W,
    ) -> Result<&mut Self, riverqueue::Error>
    where
        A: riverqueue::JobArgs,
        W: riverqueue::Worker<A>,
    {
        self.workers.add(worker)?;
        match self.queues.iter_mut().find(|(q, _)| *q == queue) {
            Some((_, n)) => *n = (*n).max(count),
            None => self.queues.push((queue, count)),
        }
        Ok(self)
    }

    /// The client that works every added queue (start it with `start()`).
    pub fn build(self) -> Result<Client, riverqueue::Error> {
        let maintenance =
            riverqueue::MaintenanceConfig::default().with_rescue_after(self.settings.rescue_after);
        let mut builder = Client::builder(self.pool).workers(self.workers);
        if let Some(id) = self.settings.client_id {
            builder = builder.id(id);
        }
        for (queue, count) in self.queues {
            builder = builder.queue(queue, QueueConfig::new(count).with_fetch_cooldown(FETCH_COOLDOWN));
        }
        builder
            .job_timeout(self.settings.job_timeout)
            .maintenance(maintenance)
            .soft_stop_timeout(Duration::from_secs(20))
            .build()
    }
}
