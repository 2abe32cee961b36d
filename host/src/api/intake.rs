//! The one intake every upload route ends in, native (`upload.rs`) and
//! Immich (`immich.rs`) alike: stream a multipart field to staging
//! ([`stage`]; [`refuse_oversize`] refuses a body that says up front it is
//! too large), then record it, its sidecar and its job in one transaction
//! ([`accept`]), which says what happened ([`Intake`]); each route words
//! that its own way.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use tracing::info;
use uuid::Uuid;

use super::auth::Owner;
use super::{ApiError, AppState};
use crate::db::assets::{self, ClientFacts, Inserted, NewAsset, Sidecar};
use crate::ingest::multipart::{Field, MultipartError};
use crate::ingest::{self, Digests, IngestError, Staged, Upload};
use crate::queue::ProcessAsset;
use crate::telemetry;

/// What an accepted upload became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// A new asset, and the `process_asset` job that will process it.
    New {
        /// The new asset's id.
        asset: Uuid,
        /// The River job id.
        job: i64,
    },
    /// The owner already has these bytes: nothing was stored, no job queued.
    Duplicate {
        /// The asset that holds them.
        asset: Uuid,
    },
}

impl Intake {
    /// The asset the upload ended up as.
    pub fn asset(self) -> Uuid {
        match self {
            Intake::New { asset, .. } | Intake::Duplicate { asset } => asset,
        }
    }
}

/// Why an upload was not taken in; becomes an [`ApiError`] for the client.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The multipart body broke: nothing after this point can be read.
    #[error("bad multipart body: {0}")]
    BadMultipart(#[from] MultipartError),
    /// The file has no bytes.
    #[error("empty file")]
    Empty,
    /// The bytes do not match the hash the client named.
    #[error("hash mismatch: expected {expected}, received {actual}")]
    HashMismatch {
        /// The client's hash.
        expected: String,
        /// The received bytes' hash.
        actual: String,
    },
    /// Too large, or staging could not be written.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// Recording the asset failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Inserting the job failed.
    #[error(transparent)]
    Queue(#[from] riverqueue::Error),
    /// The staged file could not be moved where the worker finds it.
    #[error("could not keep the staged upload: {0}")]
    Keep(std::io::Error),
}

impl From<IntakeError> for ApiError {
    fn from(err: IntakeError) -> Self {
        match err {
            IntakeError::BadMultipart(e) => bad_multipart(e),
            IntakeError::Empty => ApiError::bad_request(
                "empty_file",
                "the file is empty; send the file's bytes",
            ),
            IntakeError::HashMismatch { expected, actual } => ApiError::bad_request(
                "hash_mismatch",
                format!(
                    "the client's hash {expected} does not match the received bytes ({actual}); nothing was stored, upload again"
                ),
            ),
            IntakeError::Ingest(e) => e.into(),
            IntakeError::Database(e) => e.into(),
            IntakeError::Queue(e) => e.into(),
            IntakeError::Keep(e) => ApiError::internal("could not keep the staged upload", e),
        }
    }
}

/// How much of a refused upload is still read, so the client receives the answer.
const DRAIN_AFTER_ERROR: usize = 16 << 20;

/// Room for multipart framing and the small text fields beside the file.
const FRAMING: u64 = 1 << 20;

/// The limits [`refuse_oversize`] checks a single-file upload's length against.
#[derive(Debug, Clone, Copy)]
pub(super) struct LengthLimit {
    /// The largest file (`LUMILIO_MAX_UPLOAD_BYTES`).
    pub file: u64,
    /// What else the route's body may carry besides the file (e.g. a sidecar).
    pub extra: u64,
}

/// Middleware of the single-file upload routes: a body whose `Content-Length`
/// alone is over the limit is refused with 413 `too_large` before a byte is
/// staged. A body without one (chunked) is cut off by [`stage`] instead.
pub(super) async fn refuse_oversize(
    State(limit): State<LengthLimit>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let allowed = limit.file.saturating_add(limit.extra).saturating_add(FRAMING);
    if declared.is_some_and(|n| n > allowed) {
        // Read (and drop) a little, so that the client sees the 413 instead of a reset.
        let mut body = req.into_body().into_data_stream();
        let mut drained = 0usize;
        while drained < DRAIN_AFTER_ERROR
            && let Some(Ok(chunk)) = body.next().await
        {
            drained += chunk.len();
        }
        return ApiError::from(IngestError::TooLarge { limit: limit.file }).into_response();
    }
    next.run(req).await
}

/// Streams one multipart field to staging, computing `digests`, and checks it
/// against `expected`.
pub(super) async fn stage(
    state: &AppState,
    field: &mut Field<'_>,
    expected: Option<&str>,
    digests: Digests,
) -> Result<Staged, IntakeError> {
    let upload = telemetry::timed("upload.receive", receive(state, field, digests)).await?;
    let staged = telemetry::timed("upload.finish", upload.finish()).await?;
    if let Some(expected) = expected
        && expected != staged.content_hash
    {
        // `staged` is dropped on return, deleting the bytes.
        return Err(IntakeError::HashMismatch {
            expected: expected.to_owned(),
            actual: staged.content_hash.clone(),
        });
    }
    Ok(staged)
}

/// [`stage`]'s first part: the field's bytes, streamed to a staging file.
async fn receive(
    state: &AppState,
    field: &mut Field<'_>,
    digests: Digests,
) -> Result<Upload, IntakeError> {
    let mut upload = state.staging.begin(state.max_upload_bytes, digests).await?;
    while let Some(chunk) = field.chunk().await? {
        if let Err(e) = upload.write(chunk).await {
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
        return Err(IntakeError::Empty);
    }
    Ok(upload)
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
) -> Result<Intake, IntakeError> {
    telemetry::timed("upload.record", record(state, owner, upload)).await
}

/// [`accept`]'s transaction: the row, its job, its sidecar, and the staged
/// file kept where the worker finds it.
async fn record(
    state: &AppState,
    owner: Owner,
    upload: Accepting<'_>,
) -> Result<Intake, IntakeError> {
    let Accepting {
        staged,
        file_name,
        content_type,
        client,
        sidecar,
    } = upload;
    let size = staged.size;
    let asset_id = Uuid::new_v4();
    let mut tx = riverqueue::database::begin_postgres(&state.pool).await?;
    // The job first, so the row is inserted with its id (one statement fewer
    // per upload); a duplicate rolls both back.
    let job = state
        .river
        .insert(ProcessAsset { asset_id })
        .tx(&mut tx)
        .await?;
    let task_id = job.job.row.id;
    let new = NewAsset {
        id: asset_id,
        owner_id: owner.0,
        file_name,
        content_type,
        size: size as i64,
        content_hash: &staged.content_hash,
        sha1: staged.sha1.as_ref(),
        job_id: task_id,
        client,
    };
    match assets::insert(&mut tx, &new).await? {
        Inserted::Duplicate(existing) => {
            // `staged` is dropped here, deleting the second copy; the job is rolled back.
            tx.rollback().await?;
            Ok(Intake::Duplicate { asset: existing })
        }
        Inserted::New(asset_id) => {
            if let Some(sidecar) = sidecar {
                assets::save_sidecar(&mut tx, asset_id, sidecar).await?;
            }
            // The file is in place before the row commits, so a worker never sees
            // a row without bytes; if the commit fails, the file is removed.
            let dest = state.storage.staged_path(asset_id);
            staged.keep_as(&dest).await.map_err(IntakeError::Keep)?;
            if let Err(e) = tx.commit().await {
                let _ = tokio::fs::remove_file(&dest).await;
                return Err(e.into());
            }
            info!(asset = %asset_id, task_id, size, "upload accepted");
            Ok(Intake::New {
                asset: asset_id,
                job: task_id,
            })
        }
    }
}

/// 4xx `bad_multipart` with the status and text axum's multer extractor
/// gave (400 for broken framing, 413 past the body limit, 500 for another
/// failure of the stream); 408 `body_timeout` when the body stalled past the
/// idle timeout (the connection then closes, and what was staged of the file
/// is already gone).
pub(super) fn bad_multipart(err: MultipartError) -> ApiError {
    if super::limits::is_body_timeout(&err) {
        return super::limits::body_timeout();
    }
    let (status, text) = match &err {
        // The body limit's (`DefaultBodyLimit`) error.
        MultipartError::StreamReadFailed(e)
            if super::limits::caused_by::<http_body_util::LengthLimitError>(e.as_ref()) =>
        {
            (
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "Request payload is too large".to_owned(),
            )
        }
        MultipartError::StreamReadFailed(_) => {
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
        }
        _ => (axum::http::StatusCode::BAD_REQUEST, err.to_string()),
    };
    ApiError::new(
        status,
        "bad_multipart",
        format!(
            "the multipart body could not be read ({}); nothing of this file was stored",
            super::error::cut(&text)
        ),
    )
}

/// The field's sanitised file name and claimed content type.
pub(super) fn field_meta(field: &Field<'_>) -> (String, String) {
    let name = ingest::sanitize_file_name(field.file_name().unwrap_or(""));
    let content_type = field
        .content_type()
        .unwrap_or("application/octet-stream")
        .to_owned();
    (name, content_type)
}

