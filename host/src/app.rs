//! The composition root: [`serve`] builds every part of the service from its
//! [`ServeConfig`] (database, pipeline, storage, CLIP, the queues and the
//! HTTP router), runs them until a shutdown signal, and stops them in order.
//! [`queues`] is where each queue and its worker are registered.
//!
//! The only module that knows all the others; none of them knows it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::config::{DEFAULT_MAX_UPLOAD_BYTES, ServeConfig};
use crate::db::migrate::{self, Line};
use crate::queue::{
    PROCESS_ASSET_QUEUE, PROCESS_CLIP_QUEUE, ProcessAssetWorker, ProcessClipWorker, QueueSettings,
    Queues, WorkerDeps,
};
use crate::{api, clip, db, ingest, pipeline, queue, storage};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database is unreachable.
    #[error(transparent)]
    Connect(#[from] db::ConnectError),
    /// Migrations could not be read.
    #[error(transparent)]
    Migrate(#[from] migrate::MigrateError),
    /// The schema is behind the binary.
    #[error(
        "the database is missing migrations on line(s) {lines:?}; run {} first (`make run` does this)",
        lines.iter().map(|l| format!("`lumilio migrate-up --line {l}`")).collect::<Vec<_>>().join(" and ")
    )]
    MissingMigrations {
        /// Lines with pending migrations.
        lines: Vec<Line>,
    },
    /// The WASM runtime could not start.
    #[error(transparent)]
    Runtime(#[from] pipeline::RuntimeError),
    /// `pipeline.toml` has problems, one per line.
    #[error(
        "{} is broken:\n  {}\n`lumilio plugin check` shows the same list",
        file.display(),
        messages.join("\n  ")
    )]
    Pipeline {
        /// The pipeline file.
        file: PathBuf,
        /// Every problem found.
        messages: Vec<String>,
    },
    /// The storage directories could not be created.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// The staging directory could not be created.
    #[error(transparent)]
    Staging(#[from] ingest::IngestError),
    /// The River client could not be built or started.
    #[error(transparent)]
    Queue(#[from] riverqueue::Error),
    /// This host's node id is taken, or its lock failed.
    #[error(transparent)]
    Node(#[from] queue::nodes::NodeError),
    /// The inference service could not be set up.
    #[error(transparent)]
    Clip(#[from] clip::ClipError),
    /// The inference service's embeddings do not fit the schema.
    #[error(
        "the inference service at {addr} makes {dim}-dimensional embeddings, but the database stores {expected}; \
         point ML_SERVICE_ADDR at a service with {expected}-dimensional embeddings"
    )]
    ClipDimension {
        /// The service's address.
        addr: String,
        /// Its embedding size.
        dim: usize,
        /// The schema's embedding size.
        expected: usize,
    },
    /// The listen address is taken or not allowed.
    #[error("cannot listen on {addr} (LUMILIO_LISTEN / --listen)")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the service until SIGINT or SIGTERM: checks migrations, loads the
/// pipeline, starts the sweeps, the backfill, CLIP, the queues and HTTP; on
/// the signal stops HTTP, then gives running jobs 30 s to finish.
pub async fn serve(cfg: ServeConfig) -> Result<(), ServeError> {
    let pool = db::connect(&cfg.database.database_url, 20).await?;
    let pending = migrate::pending_lines(&pool).await?;
    if !pending.is_empty() {
        return Err(ServeError::MissingMigrations { lines: pending });
    }
    let runtime = pipeline::Runtime::new(&cfg.cache_path)?;
    let pipeline = pipeline::Pipeline::load(&cfg.pipeline, &runtime).map_err(|e| {
        ServeError::Pipeline {
            file: cfg.pipeline.clone(),
            messages: e.messages(),
        }
    })?;
    info!(pipeline = %cfg.pipeline.display(), stages = pipeline.stages().len(), "pipeline loaded");
    let max_upload_bytes = cfg
        .max_upload_bytes
        .or_else(|| pipeline.max_input_bytes())
        .unwrap_or(DEFAULT_MAX_UPLOAD_BYTES);
    let storage = storage::Storage::open(&cfg.staging_path, &cfg.storage_path).await?;
    let staging = ingest::Staging::open(cfg.staging_path.join("incoming")).await?;

    let stale = Duration::from_secs(cfg.stale_upload_secs);
    queue::sweep::spawn(
        pool.clone(),
        storage.clone(),
        staging.dir().to_owned(),
        stale,
    )
    .await;
    queue::backfill::spawn(pool.clone(), storage.clone());
    let clip = start_clip(&cfg).await?;
    let settings = QueueSettings {
        process_asset_workers: cfg.process_asset_workers,
        rescue_after: Duration::from_secs(cfg.rescue_after_secs),
        job_timeout: Duration::from_secs(cfg.job_timeout_secs),
        process_clip_workers: cfg.clip_workers,
        client_id: Some(queue::nodes::client_id(
            &cfg.node_id.clone().unwrap_or_else(|| queue::nodes::default_node_id(cfg.listen.port())),
        )),
    };
    // What the status page shows of each stage.
    let stages: Arc<[api::StageLimits]> = pipeline
        .stages()
        .iter()
        .map(|s| api::StageLimits {
            name: s.name.clone(),
            world_version: s.world_version.clone(),
            timeout_ms: s.timeout_ms,
            memory_limit_mb: s.memory_limit_mb,
            content_types: s.content_types.clone(),
            read_only_dirs: s.read_only_dirs.iter().map(|d| d.display().to_string()).collect(),
            env: s.env.clone(),
        })
        .collect();
    let deps = WorkerDeps {
        pool: pool.clone(),
        pipeline: Arc::new(pipeline),
        storage: storage.clone(),
        clip: clip.clone(),
    };
    // Before the client starts: its previous process's jobs come back first.
    if let Some(client) = &settings.client_id {
        queue::nodes::join(&deps.pool, client).await?;
        info!(node = client, "node lock held");
    }
    let river = queues(deps, &settings)?.build()?;
    let mut run = river.start()?;
    let stopper = run.stopper();

    let state = api::AppState {
        pool,
        river,
        staging,
        storage,
        max_upload_bytes,
        max_batch_parts: cfg.max_batch_parts,
        clip,
        near_duplicate_distance: cfg.near_duplicate_distance,
        stages,
        body_idle_timeout: Duration::from_secs(cfg.body_idle_timeout_secs.max(1)),
        upload_slots: api::UploadSlots::new(cfg.max_uploads_per_key),
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: cfg.listen,
            source,
        })?;
    info!(
        listen = %cfg.listen,
        max_upload_bytes,
        header_read_timeout_secs = cfg.header_read_timeout_secs,
        body_idle_timeout_secs = cfg.body_idle_timeout_secs,
        max_uploads_per_key = cfg.max_uploads_per_key,
        "serving"
    );
    api::serve(
        listener,
        api::router(state),
        Duration::from_secs(cfg.header_read_timeout_secs.max(1)),
        shutdown_signal(),
    )
    .await;
    info!("HTTP stopped; letting running jobs finish");
    stopper.stop();
    if tokio::time::timeout(Duration::from_secs(30), run.wait())
        .await
        .is_err()
    {
        warn!("jobs still running after 30 s; their jobs will be rescued and retried");
    }
    Ok(())
}

/// Registers the service's queues: `process_asset` always, `process_clip`
/// when an inference service is configured. A new queue is added here.
pub fn queues(deps: WorkerDeps, settings: &QueueSettings) -> Result<Queues, riverqueue::Error> {
    let mut queues = Queues::new(deps.pool.clone(), settings);
    queues.add(
        PROCESS_ASSET_QUEUE,
        settings.process_asset_workers,
        ProcessAssetWorker::new(deps.clone()),
    )?;
    if let Some(dispatcher) = &deps.clip {
        // One worker blocks on its own submission, so a batch holds at most as
        // many items as there are workers: never run fewer than a batch.
        let n = settings
            .process_clip_workers
            .max(dispatcher.config().batch_size);
        queues.add(
            PROCESS_CLIP_QUEUE,
            n,
            ProcessClipWorker::new(deps.pool.clone(), deps.storage.clone(), dispatcher.clone()),
        )?;
    }
    Ok(queues)
}

/// Connects the CLIP dispatcher when an inference service is configured and
/// checks that its embeddings fit the schema.
async fn start_clip(cfg: &ServeConfig) -> Result<Option<clip::Dispatcher>, ServeError> {
    let Some(addr) = &cfg.ml_service_addr else {
        info!("ML_SERVICE_ADDR is not set: CLIP embeddings and search are off");
        return Ok(None);
    };
    let clip_cfg = clip::ClipConfig {
        addr: addr.clone(),
        batch_size: cfg.clip_batch_size.max(1),
        window: Duration::from_millis(cfg.clip_window_ms),
        idle: Duration::from_millis(cfg.clip_idle_ms),
        ..clip::ClipConfig::default()
    };
    let dispatcher = clip::Dispatcher::connect(clip_cfg).await?;
    match dispatcher.capabilities().await {
        Ok(caps) => {
            if let Some(dim) = caps.embedding_dim
                && dim != db::embeddings::DIMENSION
            {
                return Err(ServeError::ClipDimension {
                    addr: addr.clone(),
                    dim,
                    expected: db::embeddings::DIMENSION,
                });
            }
            info!(addr, service = caps.service_name, models = ?caps.model_ids, runtime = caps.runtime, "CLIP inference service ready");
        }
        // Down at start-up is fine: process_clip jobs retry until it is back.
        Err(e) => {
            warn!(addr, error = %e, "CLIP inference service not reachable yet; process_clip jobs will retry")
        }
    }
    Ok(Some(dispatcher))
}

async fn shutdown_signal() {
    crate::signal::shutdown().await;
    info!("shutdown signal received");
}
