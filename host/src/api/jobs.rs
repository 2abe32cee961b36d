//! River's view of a job, for status look-ups.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::auth::Owner;
use super::{ApiError, AppState};
use crate::db::assets;
use crate::queue::ProcessAsset;

/// A job that processes one of the caller's assets.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "River job id (`task_id` of an upload)")),
    responses((status = 200, description = "state, attempt, max_attempts, errors and timestamps"),
              (status = 404, body = super::openapi::ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::not_found("job"))?;
    let job = match state.river.jobs().get(id).await {
        Ok(job) => job,
        Err(riverqueue::Error::NotFound(_)) => return Err(ApiError::not_found("job")),
        Err(e) => return Err(e.into()),
    };
    // Only jobs about the caller's own assets are visible.
    let args: ProcessAsset = job.decode_args().map_err(|_| ApiError::not_found("job"))?;
    if assets::get(&state.pool, owner.0, args.asset_id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("job"));
    }
    let errors: Vec<Value> = job
        .errors
        .iter()
        .map(|e| json!({ "at": e.at.to_string(), "attempt": e.attempt, "error": e.error }))
        .collect();
    Ok(Json(json!({
        "id": job.id,
        "kind": job.kind,
        "queue": job.queue,
        "state": job.state.to_string(),
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "asset_id": args.asset_id,
        "errors": errors,
        "created_at": job.created_at.to_string(),
        "scheduled_at": job.scheduled_at.to_string(),
        "attempted_at": job.attempted_at.map(|t| t.to_string()),
        "finalized_at": job.finalized_at.map(|t| t.to_string()),
    })))
}
