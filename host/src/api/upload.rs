//! Uploads: single, batch, and the pre-upload hash check.

use axum::Json;
use axum::extract::multipart::Field;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Owner;
use super::{ApiError, AppState};
use crate::db::assets::{self, ClientFacts, Inserted, NewAsset, Sidecar};
use crate::ingest::{self, Staged};
use crate::queue::ProcessAsset;

/// The answer to an accepted single upload.
#[derive(Debug, Serialize, ToSchema)]
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

/// How much of a refused upload is still read, so the client receives the answer.
const DRAIN_AFTER_ERROR: usize = 16 << 20;

/// Normalises a client-supplied BLAKE3 hex digest.
fn parse_hash(raw: &str, what: &str) -> Result<String, ApiError> {
    let h = raw.trim().to_ascii_lowercase();
    if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(h)
    } else {
        Err(ApiError::bad_request(
            "bad_hash",
            format!("{what} must be a BLAKE3 digest in hex (64 characters), got {raw:?}"),
        ))
    }
}

/// Streams one multipart field to staging and checks it against `expected`.
pub(super) async fn stage(
    state: &AppState,
    field: &mut Field<'_>,
    expected: Option<&str>,
) -> Result<Staged, ApiError> {
    let mut upload = state.staging.begin(state.max_upload_bytes).await?;
    while let Some(chunk) = field.chunk().await.map_err(bad_multipart)? {
        if let Err(e) = upload.write(&chunk).await {
            // The bytes so far are already deleted. Read (and drop) a little
            // more so that the client sees the 413 instead of a reset.
            let mut drained = 0usize;
            while drained < DRAIN_AFTER_ERROR
                && let Ok(Some(chunk)) = field.chunk().await
            {
                drained += chunk.len();
            }
            return Err(e.into());
        }
    }
    if upload.size() == 0 {
        return Err(ApiError::bad_request(
            "empty_file",
            "the file is empty; send the file's bytes",
        ));
    }
    let staged = upload.finish().await?;
    if let Some(expected) = expected
        && expected != staged.content_hash
    {
        // `staged` is dropped on return, deleting the bytes.
        return Err(ApiError::bad_request(
            "hash_mismatch",
            format!(
                "the client's hash {expected} does not match the received bytes ({}); nothing was stored, upload again",
                staged.content_hash
            ),
        ));
    }
    Ok(staged)
}

/// A staged file and what the client said about it.
pub(super) struct Accepting<'a> {
    /// The bytes, in staging.
    pub staged: Staged,
    /// Sanitised file name.
    pub file_name: &'a str,
    /// The client's content type.
    pub content_type: &'a str,
    /// File times and flags the client sent.
    pub client: &'a ClientFacts,
    /// An XMP sidecar sent with the file.
    pub sidecar: Option<&'a Sidecar>,
}

/// What a client that says nothing besides the file name and type says.
static NO_CLIENT_FACTS: ClientFacts = ClientFacts {
    file_created_at: None,
    file_modified_at: None,
    is_favorite: false,
    visibility: None,
};

impl<'a> Accepting<'a> {
    /// A file with nothing else to record (the native API's uploads).
    pub fn bare(staged: Staged, file_name: &'a str, content_type: &'a str) -> Self {
        Self {
            staged,
            file_name,
            content_type,
            client: &NO_CLIENT_FACTS,
            sidecar: None,
        }
    }
}

/// Records a staged upload (every upload route ends here), its sidecar and
/// its job in one transaction.
pub(super) async fn accept(
    state: &AppState,
    owner: Owner,
    upload: Accepting<'_>,
) -> Result<(StatusCode, UploadResponse), ApiError> {
    let Accepting {
        staged,
        file_name,
        content_type,
        client,
        sidecar,
    } = upload;
    let size = staged.size;
    let content_hash = staged.content_hash.clone();
    let new = NewAsset {
        id: Uuid::new_v4(),
        owner_id: owner.0,
        file_name,
        content_type,
        size: size as i64,
        content_hash: &content_hash,
        sha1: &staged.sha1,
        client,
    };
    let response = |task_id, asset_id, status| UploadResponse {
        task_id,
        asset_id,
        status,
        file_name: file_name.to_owned(),
        size,
        content_hash: content_hash.clone(),
    };
    let mut tx = riverqueue::database::begin_postgres(&state.pool).await?;
    match assets::insert(&mut tx, &new).await? {
        Inserted::Duplicate(existing) => {
            // `staged` is dropped here, deleting the second copy; no job is inserted.
            tx.rollback().await?;
            Ok((StatusCode::OK, response(None, existing, "duplicate")))
        }
        Inserted::New(asset_id) => {
            let job = state
                .river
                .insert(ProcessAsset { asset_id })
                .tx(&mut tx)
                .await?;
            let task_id = job.job.row.id;
            assets::set_job(&mut tx, asset_id, task_id).await?;
            if let Some(sidecar) = sidecar {
                assets::save_sidecar(&mut tx, asset_id, sidecar).await?;
            }
            // The file is in place before the row commits, so a worker never sees
            // a row without bytes; if the commit fails, the file is removed.
            let dest = state.storage.staged_path(asset_id);
            staged
                .keep_as(&dest)
                .await
                .map_err(|e| ApiError::internal("could not keep the staged upload", e))?;
            if let Err(e) = tx.commit().await {
                let _ = tokio::fs::remove_file(&dest).await;
                return Err(e.into());
            }
            info!(asset = %asset_id, task_id, size, "upload accepted");
            Ok((
                StatusCode::CREATED,
                response(Some(task_id), asset_id, "processing"),
            ))
        }
    }
}

pub(super) fn bad_multipart(err: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::new(
        err.status(),
        "bad_multipart",
        format!(
            "the multipart body could not be read ({}); nothing of this file was stored",
            err.body_text()
        ),
    )
}

pub(super) fn field_meta(field: &Field<'_>) -> (String, String) {
    let name = ingest::sanitize_file_name(field.file_name().unwrap_or(""));
    let content_type = field
        .content_type()
        .unwrap_or("application/octet-stream")
        .to_owned();
    (name, content_type)
}

/// Upload one photo as multipart field `file`.
#[utoipa::path(post, path = "/api/v1/assets", tag = "assets",
    params(("X-Content-Hash" = Option<String>, Header, description = "BLAKE3 of the file in hex; verified")),
    request_body(content_type = "multipart/form-data", description = "field `file`: the photo"),
    responses(
        (status = 201, description = "Accepted; processing", body = UploadResponse),
        (status = 200, description = "The owner already has these bytes (`status: duplicate`)", body = UploadResponse),
        (status = 400, description = "missing_file, empty_file, bad_hash, hash_mismatch, bad_multipart", body = super::openapi::ErrorBody),
        (status = 413, description = "too_large", body = super::openapi::ErrorBody),
        (status = 503, description = "database_unavailable", body = super::openapi::ErrorBody)))]
pub async fn single(
    State(state): State<AppState>,
    owner: Owner,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Result<(StatusCode, Json<UploadResponse>), ApiError> {
    let expected = match headers.get("x-content-hash") {
        Some(v) => Some(parse_hash(v.to_str().unwrap_or(""), "X-Content-Hash")?),
        None => None,
    };
    while let Some(mut field) = multipart.next_field().await.map_err(bad_multipart)? {
        if field.name() != Some("file") {
            continue;
        }
        let (file_name, content_type) = field_meta(&field);
        let staged = stage(&state, &mut field, expected.as_deref()).await?;
        let upload = Accepting::bare(staged, &file_name, &content_type);
        let (status, body) = accept(&state, owner, upload).await?;
        return Ok((status, Json(body)));
    }
    Err(ApiError::bad_request(
        "missing_file",
        "no multipart field named `file`; send the photo as `-F file=@photo.jpg`",
    ))
}

/// One file's result in a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItem {
    /// Whether the file was accepted (new or duplicate).
    pub success: bool,
    /// The stored file name.
    pub file_name: String,
    /// The hash the part was named with (or computed, when it was accepted).
    pub content_hash: String,
    /// `processing` or `duplicate` when accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    /// The River job id, for new assets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<i64>,
    /// The asset id, when accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<Uuid>,
    /// Bytes received, when accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// A human summary for accepted files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why the file was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<super::openapi::ErrorDetail>,
}

/// The answer to a batch upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    /// One entry per part, in order.
    pub results: Vec<BatchItem>,
    /// Set (with status 400) when the batch had more parts than allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<super::openapi::ErrorDetail>,
}

/// Upload many photos; each part's field name is that file's BLAKE3 hash.
#[utoipa::path(post, path = "/api/v1/assets/batch", tag = "assets",
    request_body(content_type = "multipart/form-data", description = "one part per file, named by its BLAKE3 hex digest"),
    responses(
        (status = 200, description = "One result per part; a bad part does not fail the others", body = BatchResponse),
        (status = 400, description = "bad_multipart (the body itself is broken), or too_many_parts: then the body is a BatchResponse whose `error` says so and whose `results` list the parts handled before the limit", body = super::openapi::ErrorBody)))]
pub async fn batch(
    State(state): State<AppState>,
    owner: Owner,
    mut multipart: Multipart,
) -> Result<(StatusCode, Json<BatchResponse>), ApiError> {
    let mut results = Vec::new();
    // Parts are handled one after another as they stream in; the batch is never buffered.
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if results.is_empty() => return Err(bad_multipart(e)),
            Err(e) => {
                // Parts before the break are stored: report them, and the break.
                results.push(BatchItem {
                    success: false,
                    file_name: String::new(),
                    content_hash: String::new(),
                    status: None,
                    task_id: None,
                    asset_id: None,
                    size: None,
                    message: None,
                    error: Some(bad_multipart(e).detail()),
                });
                break;
            }
        };
        let (file_name, content_type) = field_meta(&field);
        let claimed = field.name().unwrap_or("").to_owned();
        if results.len() >= state.max_batch_parts {
            // Earlier parts are already stored; say which, and refuse the rest.
            let error = ApiError::bad_request(
                "too_many_parts",
                format!(
                    "a batch holds at most {} files; the first {} were handled (see `results`), send the rest in another batch",
                    state.max_batch_parts,
                    results.len()
                ),
            );
            return Ok((
                StatusCode::BAD_REQUEST,
                Json(BatchResponse {
                    results,
                    error: Some(error.detail()),
                }),
            ));
        }
        let outcome = async {
            let expected = parse_hash(&claimed, "the part's field name")?;
            let staged = stage(&state, &mut field, Some(&expected)).await?;
            let upload = Accepting::bare(staged, &file_name, &content_type);
            accept(&state, owner, upload).await
        }
        .await;
        let broken_body = matches!(&outcome, Err(e) if e.code == "bad_multipart");
        results.push(match outcome {
            Ok((_, r)) => BatchItem {
                success: true,
                file_name,
                message: Some(if r.status == "duplicate" {
                    "already uploaded".into()
                } else {
                    "queued for processing".into()
                }),
                content_hash: r.content_hash,
                status: Some(r.status),
                task_id: r.task_id,
                asset_id: Some(r.asset_id),
                size: Some(r.size),
                error: None,
            },
            Err(e) => BatchItem {
                success: false,
                file_name,
                content_hash: claimed,
                status: None,
                task_id: None,
                asset_id: None,
                size: None,
                message: None,
                error: Some(e.detail()),
            },
        });
        if broken_body {
            // The body broke mid-part: what came before is kept and reported.
            break;
        }
    }
    if results.is_empty() {
        return Err(ApiError::bad_request(
            "missing_file",
            "the batch holds no files",
        ));
    }
    Ok((
        StatusCode::OK,
        Json(BatchResponse {
            results,
            error: None,
        }),
    ))
}

/// Hashes to look up.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CheckRequest {
    /// BLAKE3 hex digests (at most 10000).
    pub hashes: Vec<String>,
}

/// One hash the owner already has.
#[derive(Debug, Serialize, ToSchema)]
pub struct Existing {
    /// The digest.
    pub content_hash: String,
    /// The asset holding it.
    pub asset_id: Uuid,
}

/// Which hashes exist.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResponse {
    /// Already uploaded: skip these.
    pub existing: Vec<Existing>,
    /// Not uploaded yet.
    pub missing: Vec<String>,
}

/// Which of these hashes the caller already uploaded, so clients can skip them.
#[utoipa::path(post, path = "/api/v1/assets/check", tag = "assets", request_body = CheckRequest,
    responses((status = 200, body = CheckResponse),
              (status = 400, description = "bad_hash or too many hashes", body = super::openapi::ErrorBody)))]
pub async fn check(
    State(state): State<AppState>,
    owner: Owner,
    Json(req): Json<CheckRequest>,
) -> Result<Json<CheckResponse>, ApiError> {
    if req.hashes.len() > 10_000 {
        return Err(ApiError::bad_request(
            "too_many_hashes",
            "check at most 10000 hashes per request",
        ));
    }
    let hashes = req
        .hashes
        .iter()
        .map(|h| parse_hash(h, "each hash"))
        .collect::<Result<Vec<_>, _>>()?;
    let found = assets::existing_hashes(&state.pool, owner.0, &hashes).await?;
    let missing = hashes
        .iter()
        .filter(|h| !found.iter().any(|(f, _)| f == *h))
        .cloned()
        .collect();
    let existing = found
        .into_iter()
        .map(|(content_hash, asset_id)| Existing {
            content_hash,
            asset_id,
        })
        .collect();
    Ok(Json(CheckResponse { existing, missing }))
}
