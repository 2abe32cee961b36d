//! Serving originals and renditions: `Content-Type`, an `ETag` from the
//! content hash, `If-None-Match`, and single `Range` requests.

use std::io::SeekFrom;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::assets::owned;
use super::auth::Owner;
use super::extract::AssetId;
use super::{ApiError, AppState};
use crate::db::assets;

/// What to send and how to label it.
struct FileResponse {
    path: PathBuf,
    content_type: String,
    etag: String,
    file_name: Option<String>,
}

/// A parsed `Range: bytes=...` header for one range.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// Send everything.
    Full,
    /// Send `start..=end`.
    Part(u64, u64),
    /// Cannot be satisfied.
    Unsatisfiable,
}

/// Parses a single byte range against a file of `len` bytes. Several ranges
/// are answered with the whole file, which RFC 9110 allows.
fn parse_range(header: Option<&HeaderValue>, len: u64) -> Range {
    let Some(spec) = header
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("bytes="))
    else {
        return Range::Full;
    };
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Full;
    };
    let (start, end) = match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (Some(s), Some(e)) => (s, e.min(len.saturating_sub(1))),
        (Some(s), None) if b.is_empty() => (s, len.saturating_sub(1)),
        (None, Some(n)) if a.is_empty() && n > 0 => (len.saturating_sub(n), len.saturating_sub(1)),
        _ => return Range::Full,
    };
    if len == 0 || start >= len || start > end {
        Range::Unsatisfiable
    } else {
        Range::Part(start, end)
    }
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|t| {
                t.trim() == etag || t.trim() == "*" || t.trim().trim_start_matches("W/") == etag
            })
        })
}

async fn send(headers: &HeaderMap, f: FileResponse) -> Result<Response, ApiError> {
    let etag = HeaderValue::from_str(&f.etag).map_err(|e| ApiError::internal("bad etag", e))?;
    if etag_matches(headers, &f.etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let mut file = match tokio::fs::File::open(&f.path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found("file"));
        }
        Err(e) => return Err(ApiError::internal("cannot open the stored file", e)),
    };
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal("cannot stat the stored file", e))?
        .len();
    let mut res = match parse_range(headers.get(header::RANGE), len) {
        Range::Unsatisfiable => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "bad_range",
                format!("the file has {len} bytes"),
            )
            .into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).unwrap(),
            );
            return Ok(r);
        }
        Range::Full => {
            let mut r = Response::new(Body::from_stream(ReaderStream::new(file)));
            r.headers_mut().insert(header::CONTENT_LENGTH, len.into());
            r
        }
        Range::Part(start, end) => {
            file.seek(SeekFrom::Start(start))
                .await
                .map_err(|e| ApiError::internal("cannot seek the stored file", e))?;
            let count = end - start + 1;
            let mut r = Response::new(Body::from_stream(ReaderStream::new(file.take(count))));
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = r.headers_mut();
            h.insert(header::CONTENT_LENGTH, count.into());
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")).unwrap(),
            );
            r
        }
    };
    let h = res.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&f.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Some(v) = f.file_name.as_deref().and_then(disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// `inline; filename*=UTF-8''…`, percent-encoded so any stored name is a valid header.
fn disposition(name: &str) -> Option<HeaderValue> {
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    HeaderValue::from_str(&format!("inline; filename*=UTF-8''{encoded}")).ok()
}

/// The uploaded file, byte for byte.
#[utoipa::path(get, path = "/api/v1/assets/{id}/original", tag = "files",
    params(("id" = Uuid, Path, description = "asset id"),
           ("Range" = Option<String>, Header, description = "one byte range, e.g. bytes=0-1023"),
           ("If-None-Match" = Option<String>, Header, description = "an ETag from an earlier answer")),
    responses((status = 200, description = "The original"), (status = 206, description = "The requested range"),
              (status = 304, description = "Unchanged"), (status = 404, body = super::openapi::ErrorBody),
              (status = 416, body = super::openapi::ErrorBody)))]
pub async fn original(
    State(state): State<AppState>,
    owner: Owner,
    id: AssetId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let asset = owned(&state, owner, id).await?;
    let stored = state
        .storage
        .original_path(&asset.content_hash)
        .map_err(|e| ApiError::internal("bad hash", e))?;
    // While the asset waits for its worker, the bytes are still in staging.
    let path = if stored.exists() {
        stored
    } else {
        state.storage.staged_path(asset.id)
    };
    let f = FileResponse {
        path,
        content_type: asset.content_type.clone(),
        etag: format!("\"{}\"", asset.content_hash),
        file_name: Some(asset.file_name.clone()),
    };
    send(&headers, f).await
}

/// The rest of a rendition's path, beside its [`AssetId`].
#[derive(serde::Deserialize)]
pub struct RenditionPath {
    /// The rendition's name.
    name: String,
}

/// A rendition (thumbnail) by name.
#[utoipa::path(get, path = "/api/v1/assets/{id}/renditions/{name}", tag = "files",
    params(("id" = Uuid, Path, description = "asset id"), ("name" = String, Path, description = "e.g. small, medium, large, clip"),
           ("If-None-Match" = Option<String>, Header, description = "an ETag from an earlier answer")),
    responses((status = 200, description = "The rendition"), (status = 304, description = "Unchanged"),
              (status = 404, body = super::openapi::ErrorBody)))]
pub async fn rendition(
    State(state): State<AppState>,
    owner: Owner,
    id: AssetId,
    Path(RenditionPath { name }): Path<RenditionPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let asset = owned(&state, owner, id).await?;
    let list = assets::renditions(&state.pool, asset.id).await?;
    let r = list
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ApiError::not_found("rendition"))?;
    let path = state
        .storage
        .rendition_path(&asset.content_hash, &r.name)
        .map_err(|_| ApiError::not_found("rendition"))?;
    let f = FileResponse {
        path,
        content_type: r.content_type,
        // The size changes when a reprocess renders with other settings.
        etag: format!("\"{}-{}-{}\"", asset.content_hash, r.name, r.size),
        file_name: None,
    };
    send(&headers, f).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let h = |s: &str| Some(HeaderValue::from_str(s).unwrap());
        assert_eq!(parse_range(None, 10), Range::Full);
        assert_eq!(parse_range(h("bytes=0-3").as_ref(), 10), Range::Part(0, 3));
        assert_eq!(parse_range(h("bytes=5-").as_ref(), 10), Range::Part(5, 9));
        assert_eq!(parse_range(h("bytes=-4").as_ref(), 10), Range::Part(6, 9));
        assert_eq!(
            parse_range(h("bytes=0-100").as_ref(), 10),
            Range::Part(0, 9)
        );
        assert_eq!(
            parse_range(h("bytes=10-").as_ref(), 10),
            Range::Unsatisfiable
        );
        assert_eq!(parse_range(h("bytes=0-1,3-4").as_ref(), 10), Range::Full);
        assert_eq!(parse_range(h("items=0-1").as_ref(), 10), Range::Full);
    }
}

/// The XMP sidecar uploaded with an asset, as it was sent.
#[utoipa::path(get, path = "/api/v1/assets/{id}/sidecar", tag = "files",
    params(("id" = Uuid, Path, description = "asset id")),
    responses((status = 200, description = "The sidecar (`application/rdf+xml`)"),
              (status = 404, description = "No such asset, or it has no sidecar", body = super::openapi::ErrorBody)))]
pub async fn sidecar(
    State(state): State<AppState>,
    owner: Owner,
    id: AssetId,
) -> Result<Response, ApiError> {
    let asset = owned(&state, owner, id).await?;
    let sidecar = assets::sidecar(&state.pool, asset.id)
        .await?
        .ok_or_else(|| ApiError::not_found("sidecar"))?;
    let mut res = (
        [(header::CONTENT_TYPE, "application/rdf+xml")],
        sidecar.data,
    )
        .into_response();
    if let Some(v) = disposition(&sidecar.file_name) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}
