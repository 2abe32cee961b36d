//! Looking up, listing, reprocessing and deleting assets.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{info, warn};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Owner;
use super::extract::AssetId;
use super::{ApiError, AppState};
use crate::db::assets::{self, Asset, ListQuery};
use crate::queue::ProcessAsset;

/// Loads an asset of the caller, or 404.
pub(super) async fn owned(state: &AppState, owner: Owner, AssetId(id): AssetId) -> Result<Asset, ApiError> {
    assets::get(&state.pool, owner.0, id)
        .await?
        .ok_or_else(|| ApiError::not_found("asset"))
}

fn summary(a: &Asset) -> Value {
    json!({
        "asset_id": a.id,
        "file_name": a.file_name,
        "content_type": a.content_type,
        "size": a.size,
        "content_hash": a.content_hash,
        "status": a.status,
        "reason": a.reason,
        "job_id": a.job_id,
        "width": a.width,
        "height": a.height,
        "taken_at": a.taken_at,
        "taken_at_offset": a.taken_at_offset,
        "taken_at_source": a.taken_at_source,
        "sha1": a.sha1.as_deref().map(hex),
        "file_created_at": a.file_created_at,
        "file_modified_at": a.file_modified_at,
        "is_favorite": a.is_favorite,
        "visibility": a.visibility,
        "created_at": a.created_at,
        "updated_at": a.updated_at,
        "place": place(a),
    })
}

/// `{city, region, country, country_code}` from the `places` stage, or null
/// when it named nothing (no GPS, at sea, or no such stage).
fn place(a: &Asset) -> Value {
    if a.place_country_code.is_none() && a.place_city.is_none() {
        return Value::Null;
    }
    json!({
        "city": a.place_city,
        "region": a.place_region,
        "country": a.place_country,
        "country_code": a.place_country_code,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Filters for the asset list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListParams {
    /// `processing`, `ready`, `rejected` or `failed`.
    status: Option<String>,
    /// e.g. `image/jpeg`.
    content_type: Option<String>,
    /// Taken at or after this time (`2024-05-01T00:00:00`).
    taken_from: Option<NaiveDateTime>,
    /// Taken before this time.
    taken_to: Option<NaiveDateTime>,
    /// From `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1-500 (default 50).
    limit: Option<i64>,
    /// Camera make contains this (case-insensitive), e.g. `canon`.
    make: Option<String>,
    /// Camera model contains this (case-insensitive), e.g. `40D`.
    model: Option<String>,
    /// `true`: only assets with GPS coordinates; `false`: only those without.
    has_location: Option<bool>,
    /// City, region, country or country code as the `places` stage named
    /// them, a whole name, case-insensitive: `arezzo`, `Tuscany`, `Italy`, `IT`.
    place: Option<String>,
    /// `uploaded` (default): newest upload first; `taken`: newest first by when
    /// the photo was taken (assets without a date by upload time), as the web app's timeline.
    order: Option<String>,
}

/// A page of assets.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssetPage {
    /// Assets, newest first.
    #[schema(value_type = Vec<Object>)]
    pub assets: Vec<Value>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn encode_cursor(a: &Asset) -> String {
    let raw = format!("{}|{}", a.created_at.timestamp_micros(), a.id);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// A cursor of `order=taken`: its key is `db::assets::TAKEN_KEY`, marked `t` so
/// that it is never mistaken for an upload-order cursor.
fn encode_taken_cursor(a: &Asset) -> String {
    let key = a.taken_at.map(|t| t.and_utc()).unwrap_or(a.created_at);
    let raw = format!("t{}|{}", key.timestamp_micros(), a.id);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_taken_cursor(c: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix('t').map(str::to_owned))
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_cursor",
                "the cursor is not one this server returned for this order; start without it",
            )
        })?;
    decode_cursor(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

fn decode_cursor(c: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "bad_cursor",
            "the cursor is not one this server returned; start without it",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, id) = raw.split_once('|').ok_or_else(bad)?;
    let at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

/// List the caller's assets, newest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/assets", tag = "assets", params(ListParams),
    responses((status = 200, body = AssetPage), (status = 400, body = super::openapi::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    owner: Owner,
    Query(p): Query<ListParams>,
) -> Result<Json<AssetPage>, ApiError> {
    if let Some(s) = &p.status
        && !["processing", "ready", "rejected", "failed"].contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "bad_status",
            "status is one of processing, ready, rejected, failed",
        ));
    }
    let limit = p.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "bad_limit",
            "limit is between 1 and 500",
        ));
    }
    let by_taken = match p.order.as_deref() {
        None | Some("uploaded") => false,
        Some("taken") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "bad_order",
                "order is `uploaded` (the default) or `taken`",
            ));
        }
    };
    let decode: fn(&str) -> Result<(DateTime<Utc>, Uuid), ApiError> = if by_taken {
        decode_taken_cursor
    } else {
        decode_cursor
    };
    let q = ListQuery {
        status: p.status,
        content_type: p.content_type,
        taken_from: p.taken_from,
        taken_to: p.taken_to,
        after: p.cursor.as_deref().map(decode).transpose()?,
        limit: limit + 1,
        make: p.make.filter(|s| !s.trim().is_empty()),
        model: p.model.filter(|s| !s.trim().is_empty()),
        has_location: p.has_location,
        place: p.place.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()),
        by_taken,
    };
    let mut rows = assets::list(&state.pool, owner.0, &q).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if !more {
        None
    } else if by_taken {
        rows.last().map(encode_taken_cursor)
    } else {
        rows.last().map(encode_cursor)
    };
    // Which renditions each has, so a client asks only for ones that exist.
    let ids: Vec<Uuid> = rows.iter().map(|a| a.id).collect();
    let mut names = crate::db::browse::rendition_names(&state.pool, &ids).await?;
    let assets = rows
        .iter()
        .map(|a| {
            let mut v = summary(a);
            v["renditions"] = names.remove(&a.id).unwrap_or_default().into();
            v
        })
        .collect();
    Ok(Json(AssetPage {
        assets,
        next_cursor,
    }))
}

/// One asset with its facts, stage results, job and renditions.
#[utoipa::path(get, path = "/api/v1/assets/{id}", tag = "assets",
    params(("id" = Uuid, Path, description = "asset id")),
    responses((status = 200, description = "The asset"), (status = 404, body = super::openapi::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    owner: Owner,
    id: AssetId,
) -> Result<Json<Value>, ApiError> {
    let asset = owned(&state, owner, id).await?;
    let renditions = assets::renditions(&state.pool, asset.id).await?;
    let stages = assets::stage_results(&state.pool, asset.id).await?;
    let mut body = summary(&asset);
    body["facts"] = asset.facts.clone();
    body["stages"] = stages.into();
    body["renditions"] = serde_json::to_value(renditions).unwrap_or_default();
    let clip = super::search::clip_view(&state, owner, asset.id).await?;
    body["predictions"] = clip["predictions"].clone();
    body["near_duplicates"] = clip["near_duplicates"].clone();
    // The XMP sidecar as text (it is XML); the raw bytes are at `url`.
    body["sidecar"] = match assets::sidecar(&state.pool, asset.id).await? {
        Some(s) => json!({
            "file_name": s.file_name,
            "size": s.data.len(),
            "url": format!("/api/v1/assets/{}/sidecar", asset.id),
            "xmp": String::from_utf8_lossy(&s.data),
        }),
        None => Value::Null,
    };
    Ok(Json(body))
}

/// Run the pipeline on an asset again.
#[utoipa::path(post, path = "/api/v1/assets/{id}/reprocess", tag = "assets",
    params(("id" = Uuid, Path, description = "asset id")),
    responses((status = 202, description = "Queued; `task_id` is the new job"),
              (status = 404, body = super::openapi::ErrorBody),
              (status = 409, description = "the original is not on disk (uploads rejected by earlier builds)", body = super::openapi::ErrorBody)))]
pub async fn reprocess(
    State(state): State<AppState>,
    owner: Owner,
    id: AssetId,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let asset = owned(&state, owner, id).await?;
    let staged = state.storage.staged_path(asset.id);
    let original = state
        .storage
        .original_path(&asset.content_hash)
        .map_err(|e| ApiError::internal("bad hash", e))?;
    if !staged.exists() && !original.exists() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "original_not_kept",
            "the original of this asset is not on disk (earlier builds discarded rejected uploads); upload the file again",
        ));
    }
    let mut tx = riverqueue::database::begin_postgres(&state.pool).await?;
    let job = state
        .river
        .insert(ProcessAsset { asset_id: asset.id })
        .tx(&mut tx)
        .await?;
    assets::restart(&mut tx, asset.id, job.job.row.id).await?;
    tx.commit().await?;
    info!(asset = %asset.id, task_id = job.job.row.id, "reprocess queued");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "asset_id": asset.id, "task_id": job.job.row.id, "status": "processing" })),
    ))
}

/// Delete an asset; its stored files go once no other asset holds the same bytes.
#[utoipa::path(delete, path = "/api/v1/assets/{id}", tag = "assets",
    params(("id" = Uuid, Path, description = "asset id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = super::openapi::ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    owner: Owner,
    AssetId(id): AssetId,
) -> Result<StatusCode, ApiError> {
    let mut tx = riverqueue::database::begin_postgres(&state.pool).await?;
    let Some(hash) = assets::delete(&mut tx, owner.0, id).await? else {
        return Err(ApiError::not_found("asset"));
    };
    // Under the hash lock: a worker storing the same bytes for another asset waits.
    assets::lock_hash(&mut tx, &hash).await?;
    let unreferenced = assets::hash_refs(&mut tx, &hash).await? == 0;
    if unreferenced && let Err(e) = state.storage.remove_stored(&hash).await {
        warn!(asset = %id, error = %e, "could not remove stored files");
    }
    let _ = state.storage.remove_staged(id).await;
    tx.commit().await?;
    info!(asset = %id, files_removed = unreferenced, "asset deleted");
    Ok(StatusCode::NO_CONTENT)
}
