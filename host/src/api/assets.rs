//! `/api/v1/assets`: upload and look up assets.

use axum::Json;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use tracing::info;
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::db::assets::{self, Inserted, LOCAL_USER, NewAsset};
use crate::ingest::{self, Staged};
use crate::queue::ProcessAsset;

/// The answer to an upload.
#[derive(Debug, Serialize)]
pub struct UploadResponse {
    /// The River job that processes the asset (absent for duplicates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<i64>,
    /// The asset id.
    pub asset_id: Uuid,
    /// `processing`, or `duplicate` when the owner already has these bytes.
    pub status: &'static str,
    /// The stored (sanitised) file name.
    pub file_name: String,
    /// Bytes.
    pub size: u64,
    /// BLAKE3, hex.
    pub content_hash: String,
}

/// `POST /api/v1/assets`: multipart field `file`, streamed to staging.
pub async fn upload(
    State(state): State<AppState>,
    mut multipart: Multipart,
) -> Result<(StatusCode, Json<UploadResponse>), ApiError> {
    while let Some(mut field) = multipart.next_field().await.map_err(bad_multipart)? {
        if field.name() != Some("file") {
            continue;
        }
        let file_name = ingest::sanitize_file_name(field.file_name().unwrap_or(""));
        let content_type = field.content_type().unwrap_or("application/octet-stream").to_owned();
        let mut upload = state.staging.begin(state.max_upload_bytes).await?;
        while let Some(chunk) = field.chunk().await.map_err(bad_multipart)? {
            upload.write(&chunk).await?;
        }
        if upload.size() == 0 {
            return Err(ApiError::bad_request("empty_file", "the `file` part is empty; send the file's bytes"));
        }
        let staged = upload.finish().await?;
        return accept(&state, staged, &file_name, &content_type).await;
    }
    Err(ApiError::bad_request(
        "missing_file",
        "no multipart field named `file`; send the photo as `-F file=@photo.jpg`",
    ))
}

/// Records a staged upload and its job in one transaction.
async fn accept(
    state: &AppState,
    staged: Staged,
    file_name: &str,
    content_type: &str,
) -> Result<(StatusCode, Json<UploadResponse>), ApiError> {
    let id = Uuid::new_v4();
    let size = staged.size;
    let content_hash = staged.content_hash.clone();
    let new = NewAsset {
        id,
        owner_id: LOCAL_USER,
        file_name,
        content_type,
        size: size as i64,
        content_hash: &content_hash,
    };
    let mut tx = riverqueue::database::begin_postgres(&state.pool).await?;
    let response = |task_id, asset_id, status| UploadResponse {
        task_id,
        asset_id,
        status,
        file_name: file_name.to_owned(),
        size,
        content_hash: content_hash.clone(),
    };
    match assets::insert(&mut tx, &new).await? {
        Inserted::Duplicate(existing) => {
            // `staged` is dropped here, deleting the second copy.
            tx.rollback().await?;
            Ok((StatusCode::OK, Json(response(None, existing, "duplicate"))))
        }
        Inserted::New(asset_id) => {
            let job = state.river.insert(ProcessAsset { asset_id }).tx(&mut tx).await?;
            let task_id = job.job.row.id;
            assets::set_job(&mut tx, asset_id, task_id).await?;
            // The file is in place before the row commits, so a worker never sees
            // a row without bytes; if the commit fails, the file is removed.
            let dest = state.storage.staged_path(asset_id);
            staged.keep_as(&dest).await.map_err(|e| ApiError::internal("could not keep the staged upload", e))?;
            if let Err(e) = tx.commit().await {
                let _ = tokio::fs::remove_file(&dest).await;
                return Err(e.into());
            }
            info!(asset = %asset_id, task_id, size, "upload accepted");
            Ok((StatusCode::CREATED, Json(response(Some(task_id), asset_id, "processing"))))
        }
    }
}

fn bad_multipart(err: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::new(
        err.status(),
        "bad_multipart",
        format!("the multipart body could not be read ({}); nothing was stored", err.body_text()),
    )
}

/// `GET /api/v1/assets/{id}`.
pub async fn get_asset(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("asset"))?;
    let asset = assets::get(&state.pool, LOCAL_USER, id).await?.ok_or_else(|| ApiError::not_found("asset"))?;
    let renditions = assets::renditions(&state.pool, id).await?;
    let stages = assets::stage_results(&state.pool, id).await?;
    Ok(Json(json!({
        "asset_id": asset.id,
        "file_name": asset.file_name,
        "content_type": asset.content_type,
        "size": asset.size,
        "content_hash": asset.content_hash,
        "status": asset.status,
        "reason": asset.reason,
        "job_id": asset.job_id,
        "facts": asset.facts,
        "stages": stages,
        "renditions": renditions,
        "created_at": asset.created_at,
        "updated_at": asset.updated_at,
    })))
}
