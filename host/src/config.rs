//! Service configuration. Every setting is a flag with an environment
//! variable behind it; a flag overrides the variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// Postgres URL, e.g. postgres://user:pass@127.0.0.1:5432/lumilio (`make db` prints one).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

/// Settings of `lumilio serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Database connection.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// Address to listen on.
    #[arg(long, env = "LUMILIO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The pipeline definition.
    #[arg(long, env = "LUMILIO_PIPELINE", default_value = "pipeline.toml")]
    pub pipeline: PathBuf,
    /// Where uploads wait for processing.
    #[arg(long, env = "STAGING_PATH", default_value = "data/staging")]
    pub staging_path: PathBuf,
    /// Where originals and renditions are stored.
    #[arg(long, env = "STORAGE_PATH", default_value = "data/storage")]
    pub storage_path: PathBuf,
    /// Where compiled WASM components are cached across restarts.
    #[arg(long, env = "LUMILIO_CACHE_PATH", default_value = "data/cache")]
    pub cache_path: PathBuf,
    /// Largest accepted upload in bytes. Default: the largest `max_bytes` a
    /// stage of the pipeline sets (larger files would be rejected anyway), else 256 MiB.
    #[arg(long, env = "LUMILIO_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Most files in one batch upload.
    #[arg(long, env = "LUMILIO_MAX_BATCH_PARTS", default_value_t = 1000)]
    pub max_batch_parts: usize,
    /// Concurrent `process_asset` jobs.
    #[arg(long, env = "LUMILIO_PROCESS_ASSET_WORKERS", default_value_t = 5)]
    pub process_asset_workers: usize,
    /// The inference service for CLIP embeddings and labels, e.g. http://127.0.0.1:50051.
    /// Unset: CLIP is skipped (uploads and the pipeline work as before).
    #[arg(long, env = "ML_SERVICE_ADDR")]
    pub ml_service_addr: Option<String>,
    /// Images per CLIP batch (one gRPC stream each).
    #[arg(long, env = "LUMILIO_CLIP_BATCH_SIZE", default_value_t = 8)]
    pub clip_batch_size: usize,
    /// Longest wait for a CLIP batch to fill, in milliseconds.
    #[arg(long, env = "LUMILIO_CLIP_WINDOW_MS", default_value_t = 1500)]
    pub clip_window_ms: u64,
    /// Send a partial CLIP batch once no image joined it for this long, in milliseconds.
    #[arg(long, env = "LUMILIO_CLIP_IDLE_MS", default_value_t = 100)]
    pub clip_idle_ms: u64,
    /// Concurrent `process_clip` jobs (never fewer than the batch size).
    #[arg(long, env = "LUMILIO_CLIP_WORKERS", default_value_t = 16)]
    pub clip_workers: usize,
    /// Cosine distance below which two photos count as near-duplicates.
    #[arg(long, env = "LUMILIO_NEAR_DUPLICATE_DISTANCE", default_value_t = 0.02)]
    pub near_duplicate_distance: f64,
    /// This host's stable id among the hosts sharing the database (default
    /// HOSTNAME:PORT): jobs it held when it died are taken back by its restart
    /// at once, or by another host within seconds (see `queue::nodes`).
    #[arg(long, env = "LUMILIO_NODE_ID")]
    pub node_id: Option<String>,
    /// Seconds after which a running job whose worker vanished is retried
    /// (River's rescuer: the backstop for a job that hangs, and for clients
    /// outside `queue::nodes`).
    #[arg(long, env = "LUMILIO_RESCUE_AFTER_SECS", default_value_t = 120)]
    pub rescue_after_secs: u64,
    /// Seconds after which an untouched partial or uncommitted upload in staging is deleted.
    #[arg(long, env = "LUMILIO_STALE_UPLOAD_SECS", default_value_t = 600)]
    pub stale_upload_secs: u64,
    /// Seconds a client may take to send a request's headers before its
    /// connection is closed (slow-header clients hold no connection longer).
    #[arg(long, env = "LUMILIO_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may send nothing before the request fails with
    /// 408 and its connection closes; a stalled upload's staged part is removed then.
    #[arg(long, env = "LUMILIO_BODY_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    pub body_idle_timeout_secs: u64,
    /// Concurrent uploads one API key may run; over it, 429 with `Retry-After`.
    #[arg(long, env = "LUMILIO_MAX_UPLOADS_PER_KEY", default_value_t = 8)]
    pub max_uploads_per_key: usize,
    /// Seconds a single pipeline job may run before it is cancelled and retried.
    #[arg(long, env = "LUMILIO_JOB_TIMEOUT_SECS", default_value_t = 60)]
    pub job_timeout_secs: u64,
}

/// The upload limit when neither the flag nor a stage's `max_bytes` sets one.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 256 << 20;
