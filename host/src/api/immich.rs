//! Immich compatibility: the part of Immich's API its uploaders use, so that
//! `immich upload` (the `@immich/cli` npm package, checked with 3.2.2) moves
//! a library into this host with no new tool.
//!
//! A thin layer: requests are translated into the same calls `/api/v1`
//! makes. Uploads go through the same staging, per-user dedup, pipeline and
//! jobs ([`super::intake`]); the duplicate check looks up the SHA-1
//! every upload records beside its BLAKE3 hash. Answers use Immich's field
//! names (camelCase); errors keep this host's JSON error shape.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{self, Owner};
use super::intake::{self, Accepting, Intake, bad_multipart};
use super::error::quoted;
use super::{ApiError, AppState};
use crate::db::assets::{self, ClientFacts, Sidecar};
use crate::db::users::KeyView;
use crate::ingest::multipart::{Field, Multipart};
use crate::ingest::{self, Digests, Staged};

/// File extensions the default pipeline accepts (see the validate plugin),
/// which Immich clients use to decide what to crawl.
const IMAGE_EXTENSIONS: &[&str] = &[
    ".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif",
];

/// Most items in one duplicate check (Immich's CLI sends at most 5000).
const MAX_CHECK_ITEMS: usize = 10_000;

/// Largest XMP sidecar kept (they are kilobytes; this bounds memory).
pub(super) const MAX_SIDECAR_BYTES: usize = 16 << 20;

/// Visibilities Immich knows.
const VISIBILITIES: &[&str] = &["timeline", "archive", "hidden", "locked"];

/// The caller's key and user, for the "who am I" routes.
pub struct Caller(KeyView);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Caller(auth::presented(parts, state).await?))
    }
}

/// Where the API lives, so clients can be given the bare host URL.
#[utoipa::path(get, path = "/.well-known/immich", tag = "immich",
    responses((status = 200, description = "`{\"api\":{\"endpoint\":\"/api\"}}`; no key needed")))]
pub async fn well_known() -> Json<Value> {
    Json(json!({ "api": { "endpoint": "/api" } }))
}

/// The caller, as Immich's `UserAdminResponseDto` (the user name stands in for `email`).
#[utoipa::path(get, path = "/api/users/me", tag = "immich",
    responses((status = 200, description = "The caller"), (status = 401, body = super::openapi::ErrorBody)))]
pub async fn users_me(Caller(k): Caller) -> Json<Value> {
    Json(json!({
        "id": k.user_id,
        "email": k.user_name,
        "name": k.user_name,
        "isAdmin": false,
        "status": "active",
        "profileImagePath": "",
        "avatarColor": "primary",
        "shouldChangePassword": false,
        "storageLabel": null,
        "quotaSizeInBytes": null,
        "quotaUsageInBytes": null,
        "oauthId": "",
        "license": null,
        "createdAt": k.user_created_at,
        "updatedAt": k.user_created_at,
        "profileChangedAt": k.user_created_at,
        "deletedAt": null,
    }))
}

/// The key in use. A key here can do everything its user can, hence `all`.
#[utoipa::path(get, path = "/api/api-keys/me", tag = "immich",
    responses((status = 200, description = "The key, with `permissions: [\"all\"]`"), (status = 401, body = super::openapi::ErrorBody)))]
pub async fn api_key_me(Caller(k): Caller) -> Json<Value> {
    Json(json!({
        "id": k.key_id,
        "name": k.prefix,
        "createdAt": k.key_created_at,
        "updatedAt": k.key_created_at,
        "permissions": ["all"],
    }))
}

/// Which file extensions to send.
#[utoipa::path(get, path = "/api/server/media-types", tag = "immich",
    responses((status = 200, description = "`{image, video, sidecar}` extensions; no videos yet")))]
pub async fn media_types() -> Json<Value> {
    Json(json!({ "image": IMAGE_EXTENSIONS, "video": [], "sidecar": [".xmp"] }))
}

/// This host's version, in Immich's shape.
#[utoipa::path(get, path = "/api/server/version", tag = "immich",
    responses((status = 200, description = "`{major, minor, patch}` of this host")))]
pub async fn version() -> Json<Value> {
    let part = |s: &str| s.parse::<u32>().unwrap_or(0);
    Json(json!({
        "major": part(env!("CARGO_PKG_VERSION_MAJOR")),
        "minor": part(env!("CARGO_PKG_VERSION_MINOR")),
        "patch": part(env!("CARGO_PKG_VERSION_PATCH")),
    }))
}

/// Liveness, as Immich clients probe it.
#[utoipa::path(get, path = "/api/server/ping", tag = "immich",
    responses((status = 200, description = "`{\"res\":\"pong\"}`")))]
pub async fn ping() -> Json<Value> {
    Json(json!({ "res": "pong" }))
}

/// How many assets the caller has (all images: videos are not accepted yet).
#[utoipa::path(get, path = "/api/assets/statistics", tag = "immich",
    responses((status = 200, description = "`{images, videos, total}`"), (status = 401, body = super::openapi::ErrorBody)))]
pub async fn statistics(
    State(state): State<AppState>,
    owner: Owner,
) -> Result<Json<Value>, ApiError> {
    let n = assets::count(&state.pool, owner.0).await?;
    Ok(Json(json!({ "images": n, "videos": 0, "total": n })))
}

/// Files a client is about to upload.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BulkCheckRequest {
    /// One entry per file.
    pub assets: Vec<BulkCheckItem>,
}

/// One file to check.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BulkCheckItem {
    /// The client's name for the file (its path); echoed back.
    pub id: String,
    /// SHA-1 of the whole file, hex or base64.
    pub checksum: String,
}

/// Whether to send one file.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkCheckResult {
    /// The client's name for the file.
    pub id: String,
    /// `accept` (send it) or `reject` (the caller already has it).
    pub action: &'static str,
    /// `duplicate`, when rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The asset that already holds these bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<Uuid>,
    /// Always false: deleted assets are gone, not in a trash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_trashed: Option<bool>,
}

/// The answer to a duplicate check.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkCheckResponse {
    /// One result per file, in request order.
    pub results: Vec<BulkCheckResult>,
}

/// A SHA-1 as Immich clients send it: 40 hex digits or base64 of 20 bytes.
fn parse_sha1(raw: &str) -> Option<Vec<u8>> {
    let raw = raw.trim();
    if raw.len() == 40 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut out = Vec::with_capacity(20);
        for pair in raw.as_bytes().chunks(2) {
            let hex = std::str::from_utf8(pair).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        }
        return Some(out);
    }
    base64::engine::general_purpose::STANDARD
        .decode(raw)
        .ok()
        .filter(|b| b.len() == 20)
}

/// Which files the caller already has, by SHA-1, so the client sends only new ones.
#[utoipa::path(post, path = "/api/assets/bulk-upload-check", tag = "immich", request_body = BulkCheckRequest,
    responses((status = 200, body = BulkCheckResponse),
              (status = 400, description = "bad_checksum or too_many_assets", body = super::openapi::ErrorBody)))]
pub async fn bulk_upload_check(
    State(state): State<AppState>,
    owner: Owner,
    Json(req): Json<BulkCheckRequest>,
) -> Result<Json<BulkCheckResponse>, ApiError> {
    if req.assets.len() > MAX_CHECK_ITEMS {
        return Err(ApiError::bad_request(
            "too_many_assets",
            format!("check at most {MAX_CHECK_ITEMS} files per request"),
        ));
    }
    let digests = req
        .assets
        .iter()
        .map(|a| {
            parse_sha1(&a.checksum).ok_or_else(|| {
                ApiError::bad_request(
                    "bad_checksum",
                    format!(
                        "the checksum of {} is not a SHA-1 in hex (40 characters) or base64: {}",
                        quoted(&a.id),
                        quoted(&a.checksum)
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Native uploads get their SHA-1 from their worker; hash this caller's
    // not yet processed ones now, so that none is answered "accept" twice.
    crate::queue::backfill::fill_missing(&state.pool, &state.storage, Some(owner.0)).await?;
    let found: std::collections::HashMap<Vec<u8>, Uuid> =
        assets::existing_sha1(&state.pool, owner.0, &digests)
            .await?
            .into_iter()
            .collect();
    let results = req
        .assets
        .into_iter()
        .zip(&digests)
        .map(|(item, digest)| match found.get(digest) {
            Some(asset) => BulkCheckResult {
                id: item.id,
                action: "reject",
                reason: Some("duplicate"),
                asset_id: Some(*asset),
                is_trashed: Some(false),
            },
            None => BulkCheckResult {
                id: item.id,
                action: "accept",
                reason: None,
                asset_id: None,
                is_trashed: None,
            },
        })
        .collect();
    Ok(Json(BulkCheckResponse { results }))
}

/// The answer to an upload, in Immich's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImmichUploadResponse {
    /// The asset id.
    pub id: Uuid,
    /// `created`, or `duplicate` when the caller already has these bytes.
    pub status: &'static str,
}

/// Reads a small text field, refusing long ones.
async fn text_field(field: &mut Field<'_>, name: &str) -> Result<String, ApiError> {
    let mut out = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(bad_multipart)? {
        out.extend_from_slice(&chunk);
        if out.len() > 1024 {
            return Err(ApiError::bad_request(
                "bad_field",
                format!("the field `{name}` is longer than 1024 bytes"),
            ));
        }
    }
    String::from_utf8(out)
        .map(|s| s.trim().to_owned())
        .map_err(|_| ApiError::bad_request("bad_field", format!("the field `{name}` is not UTF-8")))
}

/// Reads the sidecar into memory (it is small, and is stored in the database).
async fn sidecar_field(field: &mut Field<'_>) -> Result<Sidecar, ApiError> {
    let file_name = ingest::sanitize_file_name(field.file_name().unwrap_or("sidecar.xmp"));
    let mut data = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(bad_multipart)? {
        data.extend_from_slice(&chunk);
        if data.len() > MAX_SIDECAR_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the sidecar is larger than {} MiB; nothing was stored. Upload the file without it",
                    MAX_SIDECAR_BYTES >> 20
                ),
            ));
        }
    }
    Ok(Sidecar { file_name, data })
}

fn parse_time(raw: &str, name: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::bad_request(
                "bad_field",
                format!(
                    "`{name}` must be an ISO 8601 time like 2024-05-01T12:00:00.000Z, got {}",
                    quoted(raw)
                ),
            )
        })
}

/// Immich's text fields, as sent.
#[derive(Debug, Default)]
struct TextFields {
    file_created_at: Option<String>,
    file_modified_at: Option<String>,
    file_size: Option<String>,
    is_favorite: Option<String>,
    visibility: Option<String>,
}

impl TextFields {
    /// The client's facts and its claimed file size, or what is wrong with them.
    fn parse(self) -> Result<(ClientFacts, Option<u64>), ApiError> {
        let bad = |message: String| ApiError::bad_request("bad_field", message);
        let time =
            |raw: Option<String>, name: &str| raw.map(|raw| parse_time(&raw, name)).transpose();
        let file_size = self
            .file_size
            .map(|raw| {
                raw.parse::<u64>()
                    .map_err(|_| bad(format!("`fileSize` must be a byte count, got {}", quoted(&raw))))
            })
            .transpose()?;
        let is_favorite = match self.is_favorite.as_deref() {
            Some("true") => true,
            None | Some("false" | "") => false,
            Some(other) => {
                return Err(bad(format!("`isFavorite` is true or false, got {}", quoted(other))));
            }
        };
        if let Some(v) = &self.visibility
            && !VISIBILITIES.contains(&v.as_str())
        {
            return Err(bad(format!(
                "`visibility` is one of {}, got {}",
                VISIBILITIES.join(", "),
                quoted(v)
            )));
        }
        let client = ClientFacts {
            file_created_at: time(self.file_created_at, "fileCreatedAt")?,
            file_modified_at: time(self.file_modified_at, "fileModifiedAt")?,
            is_favorite,
            visibility: self.visibility,
        };
        Ok((client, file_size))
    }
}

/// Upload one file as Immich clients do: multipart `assetData` (the file)
/// with `fileCreatedAt`, `fileModifiedAt`, `fileSize`, `isFavorite`, and
/// optional `visibility` and `sidecarData` (XMP). Other fields are ignored.
#[utoipa::path(post, path = "/api/assets", tag = "immich",
    params(("x-immich-checksum" = Option<String>, Header, description = "SHA-1 of the file, hex or base64; verified")),
    request_body(content_type = "multipart/form-data", description = "`assetData` (the file) and Immich's fields"),
    responses(
        (status = 201, description = "`{id, status: \"created\"}`: stored, processing", body = ImmichUploadResponse),
        (status = 200, description = "`{id, status: \"duplicate\"}`: the caller already has these bytes", body = ImmichUploadResponse),
        (status = 400, description = "missing_file, empty_file, bad_field, size_mismatch, checksum_mismatch, bad_multipart", body = super::openapi::ErrorBody),
        (status = 413, description = "too_large", body = super::openapi::ErrorBody),
        (status = 503, description = "database_unavailable", body = super::openapi::ErrorBody)))]
pub async fn upload_asset(
    State(state): State<AppState>,
    owner: Owner,
    headers: axum::http::HeaderMap,
    mut multipart: Multipart,
) -> Result<(StatusCode, Json<ImmichUploadResponse>), ApiError> {
    let mut fields = TextFields::default();
    let mut file: Option<(Staged, String, String)> = None;
    let mut sidecar = None;
    // The whole body is read before the text fields are judged, so a client
    // told "bad field" receives the answer rather than a reset connection.
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(bad_multipart)?
    {
        let name = field.name().unwrap_or("").to_owned();
        let slot = match name.as_str() {
            "assetData" => {
                if file.is_some() {
                    return Err(ApiError::bad_request(
                        "bad_field",
                        "send one `assetData` per request",
                    ));
                }
                let (file_name, content_type) = intake::field_meta(&field);
                let staged = intake::stage(&state, &mut field, None, Digests::Blake3AndSha1).await?;
                file = Some((staged, file_name, content_type));
                continue;
            }
            "sidecarData" => {
                sidecar = Some(sidecar_field(&mut field).await?);
                continue;
            }
            "fileCreatedAt" => &mut fields.file_created_at,
            "fileModifiedAt" => &mut fields.file_modified_at,
            "fileSize" => &mut fields.file_size,
            "isFavorite" => &mut fields.is_favorite,
            "visibility" => &mut fields.visibility,
            // deviceAssetId, deviceId, duration, filename, ...: nothing to keep.
            _ => continue,
        };
        *slot = Some(text_field(&mut field, &name).await?);
    }
    let (client, claimed_size) = fields.parse()?;
    let Some((staged, file_name, content_type)) = file else {
        return Err(ApiError::bad_request(
            "missing_file",
            "no multipart field named `assetData`; send the photo in it",
        ));
    };
    if let Some(claimed) = claimed_size
        && claimed != staged.size
    {
        return Err(ApiError::bad_request(
            "size_mismatch",
            format!(
                "`fileSize` says {claimed} bytes but {} arrived; nothing was stored, upload again",
                staged.size
            ),
        ));
    }
    if let Some(expected) = headers
        .get("x-immich-checksum")
        .and_then(|v| v.to_str().ok())
        && parse_sha1(expected).as_deref() != staged.sha1.as_ref().map(|d| &d[..])
    {
        return Err(ApiError::bad_request(
            "checksum_mismatch",
            format!(
                "x-immich-checksum {} is not the SHA-1 of the received bytes; nothing was stored, upload again",
                quoted(expected)
            ),
        ));
    }
    let accepting = Accepting {
        staged,
        file_name: &file_name,
        content_type: &content_type,
        client: &client,
        sidecar: sidecar.as_ref(),
    };
    let taken = intake::accept(&state, owner, accepting).await?;
    let (status, text) = match taken {
        Intake::New { .. } => (StatusCode::CREATED, "created"),
        Intake::Duplicate { .. } => (StatusCode::OK, "duplicate"),
    };
    Ok((
        status,
        Json(ImmichUploadResponse {
            id: taken.asset(),
            status: text,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_sha1;

    #[test]
    fn sha1_in_hex_or_base64() {
        let hex = "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed";
        let bytes = parse_sha1(hex).unwrap();
        assert_eq!(bytes.len(), 20);
        assert_eq!(parse_sha1(&hex.to_uppercase()), Some(bytes.clone()));
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes);
        assert_eq!(parse_sha1(&b64), Some(bytes));
        for bad in [
            "",
            "zz",
            &"g".repeat(40),
            &"+a".repeat(20),
            "AAAA",
            &hex[..39],
        ] {
            assert_eq!(parse_sha1(bad), None, "{bad:?}");
        }
    }
}
