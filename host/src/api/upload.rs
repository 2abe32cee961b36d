//! Uploads: single, batch, and the pre-upload hash check.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Owner;
use super::intake::{self, Accepting, Intake, IntakeError, bad_multipart, field_meta};
use super::error::quoted;
use super::{ApiError, AppState};
use crate::db::assets;
use crate::ingest::Digests;
use crate::ingest::multipart::Multipart;

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

impl UploadResponse {
    /// The status and answer for what the intake made of a file.
    fn new(intake: Intake, file_name: String, size: u64, content_hash: String) -> (StatusCode, Self) {
        let (status, task_id, text) = match intake {
            Intake::New { job, .. } => (StatusCode::CREATED, Some(job), "processing"),
            Intake::Duplicate { .. } => (StatusCode::OK, None, "duplicate"),
        };
        let body = UploadResponse {
            task_id,
            asset_id: intake.asset(),
            status: text,
            file_name,
            size,
            content_hash,
        };
        (status, body)
    }
}

/// Normalises a client-supplied BLAKE3 hex digest.
fn parse_hash(raw: &str, what: &str) -> Result<String, ApiError> {
    let h = raw.trim().to_ascii_lowercase();
    if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(h)
    } else {
        Err(ApiError::bad_request(
            "bad_hash",
            format!(
                "{what} must be a BLAKE3 digest in hex (64 characters), got {}",
                quoted(raw)
            ),
        ))
    }
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
        let staged = intake::stage(&state, &mut field, expected.as_deref(), Digests::Blake3).await?;
        let (size, content_hash) = (staged.size, staged.content_hash.clone());
        let upload = Accepting::bare(staged, &file_name, &content_type);
        let intake = intake::accept(&state, owner, upload).await?;
        let (status, body) = UploadResponse::new(intake, file_name, size, content_hash);
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

impl BatchItem {
    /// A part that was refused, with why. The claimed hash is the client's
    /// field name: cut to a digest's 64 characters, so it is never echoed whole.
    fn refused(file_name: String, claimed_hash: String, error: ApiError) -> Self {
        BatchItem {
            success: false,
            file_name,
            content_hash: claimed_hash.chars().take(64).collect(),
            status: None,
            task_id: None,
            asset_id: None,
            size: None,
            message: None,
            error: Some(error.detail()),
        }
    }
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
                results.push(BatchItem::refused(String::new(), String::new(), bad_multipart(e)));
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
        let expected = match parse_hash(&claimed, "the part's field name") {
            Ok(h) => h,
            Err(e) => {
                results.push(BatchItem::refused(file_name, claimed, e));
                continue;
            }
        };
        let outcome = async {
            let staged = intake::stage(&state, &mut field, Some(&expected), Digests::Blake3).await?;
            let (size, content_hash) = (staged.size, staged.content_hash.clone());
            let upload = Accepting::bare(staged, &file_name, &content_type);
            let intake = intake::accept(&state, owner, upload).await?;
            Ok::<_, IntakeError>((intake, size, content_hash))
        }
        .await;
        let broken_body = matches!(outcome, Err(IntakeError::BadMultipart(_)));
        results.push(match outcome {
            Ok((intake, size, content_hash)) => {
                let (_, r) = UploadResponse::new(intake, file_name.clone(), size, content_hash);
                BatchItem {
                    success: true,
                    file_name,
                    message: Some(match intake {
                        Intake::Duplicate { .. } => "already uploaded".into(),
                        Intake::New { .. } => "queued for processing".into(),
                    }),
                    content_hash: r.content_hash,
                    status: Some(r.status),
                    task_id: r.task_id,
                    asset_id: Some(r.asset_id),
                    size: Some(r.size),
                    error: None,
                }
            }
            Err(e) => BatchItem::refused(file_name, claimed, e.into()),
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
