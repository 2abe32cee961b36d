//! What the status page shows about one user: the River jobs of their
//! assets by queue and state, recent failures, and totals.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

/// How many of the owner's jobs of one kind are in one River state.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct QueueCount {
    /// `process_asset` or `process_clip`.
    pub kind: String,
    /// River's state: `available`, `running`, `retryable`, `completed`, `discarded`, ...
    pub state: String,
    /// Jobs.
    pub count: i64,
}

/// Job counts by kind and state, over jobs about the owner's (existing) assets.
pub async fn queue_counts(pool: &PgPool, owner: Uuid) -> Result<Vec<QueueCount>, sqlx::Error> {
    sqlx::query_as(
        "SELECT j.kind, j.state::text AS state, count(*) AS count
         FROM river_job j JOIN assets a ON a.id = (j.args->>'asset_id')::uuid
         WHERE j.kind IN ('process_asset', 'process_clip') AND a.owner_id = $1
         GROUP BY j.kind, j.state ORDER BY j.kind, j.state",
    )
    .bind(owner)
    .fetch_all(pool)
    .await
}

/// Something that went wrong with one of the owner's assets.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Failure {
    /// The asset.
    pub asset_id: Uuid,
    /// Its file name.
    pub file_name: String,
    /// `process_asset` or `process_clip`.
    pub kind: String,
    /// The asset's status (`failed`, `rejected`) or the job's state (`retryable`, `discarded`, `cancelled`).
    pub state: String,
    /// The reason or the job's last error.
    pub error: Option<String>,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The River job, when known.
    pub job_id: Option<i64>,
}

/// The owner's most recent failures, newest first: assets that ended failed or
/// rejected, and jobs that are retrying or were given up on.
pub async fn recent_failures(
    pool: &PgPool,
    owner: Uuid,
    limit: i64,
) -> Result<Vec<Failure>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM (
            SELECT a.id AS asset_id, a.file_name, 'process_asset'::text AS kind, a.status AS state,
                   a.reason AS error, a.updated_at AS at, a.job_id
            FROM assets a WHERE a.owner_id = $1 AND a.status IN ('failed', 'rejected')
          UNION ALL
            SELECT a.id, a.file_name, j.kind, j.state::text,
                   j.errors[array_upper(j.errors, 1)]->>'error',
                   COALESCE(j.finalized_at, j.attempted_at, j.created_at), j.id
            FROM river_job j JOIN assets a ON a.id = (j.args->>'asset_id')::uuid
            WHERE j.kind IN ('process_asset', 'process_clip') AND a.owner_id = $1
              AND j.state IN ('retryable', 'discarded', 'cancelled')
              -- a failed asset is listed once, above
              AND NOT (j.kind = 'process_asset' AND a.status IN ('failed', 'rejected'))
         ) f ORDER BY at DESC LIMIT $2",
    )
    .bind(owner)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The owner's library in numbers.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Totals {
    /// Assets.
    pub assets: i64,
    /// Bytes of their originals.
    pub original_bytes: i64,
    /// Bytes of their renditions.
    pub rendition_bytes: i64,
    /// Assets in `processing`.
    pub processing: i64,
    /// Assets `ready`.
    pub ready: i64,
    /// Assets `rejected`.
    pub rejected: i64,
    /// Assets `failed`.
    pub failed: i64,
    /// Assets with a CLIP embedding.
    pub embedded: i64,
}

/// Totals over the owner's assets.
pub async fn totals(pool: &PgPool, owner: Uuid) -> Result<Totals, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) AS assets,
                COALESCE(sum(size), 0)::bigint AS original_bytes,
                (SELECT COALESCE(sum(r.size), 0)::bigint FROM renditions r JOIN assets b ON b.id = r.asset_id
                  WHERE b.owner_id = $1) AS rendition_bytes,
                count(*) FILTER (WHERE status = 'processing') AS processing,
                count(*) FILTER (WHERE status = 'ready') AS ready,
                count(*) FILTER (WHERE status = 'rejected') AS rejected,
                count(*) FILTER (WHERE status = 'failed') AS failed,
                (SELECT count(*) FROM embeddings e JOIN assets c ON c.id = e.asset_id
                  WHERE c.owner_id = $1) AS embedded
         FROM assets WHERE owner_id = $1",
    )
    .bind(owner)
    .fetch_one(pool)
    .await
}
