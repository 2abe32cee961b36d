//! Search by text (CLIP text embedding) and by similar photo (the asset's
//! own embedding), ranked by cosine distance over the caller's assets.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use base64::Engine as _;
use pgvector::Vector;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::assets::owned;
use super::auth::Owner;
use super::extract::AssetId;
use super::{ApiError, AppState};
use crate::db::embeddings::{self, Hit};

/// A text search.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SearchRequest {
    /// Free text, embedded by the inference service's `clip_embed`.
    pub query: String,
    /// Results per page, 1-200 (default 20).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only assets with this status.
    pub status: Option<String>,
    /// Only this content type, e.g. `image/jpeg`.
    pub content_type: Option<String>,
    /// Taken at or after this time (`2024-05-01T00:00:00`).
    #[schema(value_type = Option<String>)]
    pub taken_from: Option<chrono::NaiveDateTime>,
    /// Taken before this time.
    #[schema(value_type = Option<String>)]
    pub taken_to: Option<chrono::NaiveDateTime>,
    /// Camera make contains this (case-insensitive).
    pub make: Option<String>,
    /// Camera model contains this (case-insensitive).
    pub model: Option<String>,
    /// With (`true`) or without (`false`) GPS coordinates.
    pub has_location: Option<bool>,
    /// City, region, country or country code, as the `places` stage named
    /// them; whole names, case-insensitive (`arezzo`, `Tuscany`, `it`).
    pub place: Option<String>,
}

/// Ranked results.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchPage {
    /// Best first; each has `asset_id`, `file_name`, `distance`, ...
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<Value>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// Text search only: whether the inference service's text embedding means
    /// what the words say (`false` for the bundled `lumilio-infer`, which
    /// matches colour words by colour; `null` when the service does not say,
    /// and for similar-photo search, which needs no words).
    pub semantic: Option<bool>,
    /// Text search only: photos that were left out because the query says
    /// nothing about them (cosine distance 1: no signal, so no rank either).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unranked: Option<i64>,
    /// Text search only: what a person should know about these results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// A distance this close to 1 is an orthogonal vector: the query carries no
/// information about the photo.
const NO_SIGNAL: f64 = 1.0 - 1e-6;

/// Splits off the hits the query says nothing about; returns the rest and how many went.
fn without_signal_dropped<T>(hits: Vec<T>, distance: impl Fn(&T) -> f64) -> (Vec<T>, usize) {
    let total = hits.len();
    let kept: Vec<T> = hits.into_iter().filter(|h| distance(h) < NO_SIGNAL).collect();
    let dropped = total - kept.len();
    (kept, dropped)
}

fn page_bounds(limit: Option<i64>, cursor: Option<&str>) -> Result<(i64, i64), ApiError> {
    let limit = limit.unwrap_or(20);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "bad_limit",
            "limit is between 1 and 200",
        ));
    }
    let offset = match cursor {
        None => 0,
        Some(c) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("o:").and_then(|n| n.parse::<i64>().ok()))
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ApiError::bad_request("bad_cursor", "the cursor is not one this server returned")
            })?,
    };
    Ok((limit, offset))
}

fn page(mut hits: Vec<Hit>, limit: i64, offset: i64) -> SearchPage {
    let more = hits.len() as i64 > limit;
    hits.truncate(limit as usize);
    let next_cursor = more.then(|| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("o:{}", offset + limit))
    });
    let results = hits
        .into_iter()
        .map(|h| {
            json!({
                "asset_id": h.asset.id,
                "file_name": h.asset.file_name,
                "content_type": h.asset.content_type,
                "taken_at": h.asset.taken_at,
                "distance": h.distance,
            })
        })
        .collect();
    SearchPage {
        results,
        next_cursor,
        semantic: None,
        unranked: None,
        notice: None,
    }
}

fn clip_off() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "search_unavailable",
        "search needs an inference service; start the host with ML_SERVICE_ADDR set (`make run` does)",
    )
}

/// Search the caller's photos by text.
#[utoipa::path(post, path = "/api/v1/search", tag = "search", request_body = SearchRequest,
    responses((status = 200, body = SearchPage), (status = 400, body = super::openapi::ErrorBody),
              (status = 503, description = "no inference service, or it is down", body = super::openapi::ErrorBody)))]
pub async fn search(
    State(state): State<AppState>,
    owner: Owner,
    Json(req): Json<SearchRequest>,
) -> Result<Json<SearchPage>, ApiError> {
    let (limit, offset) = page_bounds(req.limit, req.cursor.as_deref())?;
    if req.query.trim().is_empty() {
        return Err(ApiError::bad_request("empty_query", "the query is empty"));
    }
    let clip = state.clip.as_ref().ok_or_else(clip_off)?;
    let embedding = clip.embed_text(&req.query).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "inference_unavailable",
            format!("could not embed the query: {e}"),
        )
    })?;
    let query = Vector::from(embedding.vector);
    let filter = crate::db::browse::Filter {
        status: req.status.filter(|s| !s.is_empty()),
        content_type: req.content_type.filter(|s| !s.is_empty()),
        taken_from: req.taken_from,
        taken_to: req.taken_to,
        make: req.make.filter(|s| !s.trim().is_empty()),
        model: req.model.filter(|s| !s.trim().is_empty()),
        has_location: req.has_location,
        place: req.place.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()),
    };
    let hits = crate::db::browse::nearest_filtered(
        &state.pool,
        owner.0,
        &query,
        &embedding.model_id,
        &filter,
        offset,
        limit + 1,
    )
    .await?;
    // Hits are sorted by distance, so the ones without signal come last: they
    // are counted, not listed, and there is no page after them.
    let (hits, dropped) = without_signal_dropped(hits, |h: &Hit| h.distance);
    let mut answer = page(hits, limit, offset);
    if dropped > 0 {
        answer.next_cursor = None;
        answer.unranked = Some(dropped.min(limit as usize) as i64);
    }
    let semantic = super::status::inference(&state).await["semantic"].as_bool();
    answer.semantic = semantic;
    let mut notes = Vec::new();
    if semantic == Some(false) {
        notes.push(
            "The inference service says its text search is not semantic: it ranks photos by the \
             colour words in the query (red, blue, sky, sunset, snow, dark...) and ignores other words."
                .to_owned(),
        );
    }
    if answer.results.is_empty() && dropped > 0 {
        notes.push(format!(
            "Nothing matched: the query says nothing about {} photo(s), so they are not ranked.",
            answer.unranked.unwrap_or(0)
        ));
    }
    answer.notice = (!notes.is_empty()).then(|| notes.join(" "));
    Ok(Json(answer))
}

/// Paging for similar photos.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SimilarParams {
    /// Results per page, 1-200 (default 20).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The caller's photos that look most like this one.
#[utoipa::path(get, path = "/api/v1/assets/{id}/similar", tag = "search",
    params(("id" = Uuid, Path, description = "asset id"), SimilarParams),
    responses((status = 200, body = SearchPage), (status = 404, body = super::openapi::ErrorBody),
              (status = 409, description = "the asset has no embedding yet", body = super::openapi::ErrorBody)))]
pub async fn similar(
    State(state): State<AppState>,
    owner: Owner,
    id: AssetId,
    Query(p): Query<SimilarParams>,
) -> Result<Json<SearchPage>, ApiError> {
    let (limit, offset) = page_bounds(p.limit, p.cursor.as_deref())?;
    let asset = owned(&state, owner, id).await?;
    let (vector, model) = embeddings::embedding_of(&state.pool, asset.id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no_embedding",
                "this asset has no embedding yet; try again once CLIP ran",
            )
        })?;
    let hits = embeddings::nearest(
        &state.pool,
        owner.0,
        &vector,
        &model,
        Some(asset.id),
        None,
        offset,
        limit + 1,
    )
    .await?;
    Ok(Json(page(hits, limit, offset)))
}

/// Near-duplicates of an asset and its predictions, for the asset view.
pub(super) async fn clip_view(
    state: &AppState,
    owner: Owner,
    asset: uuid::Uuid,
) -> Result<Value, ApiError> {
    let predictions = embeddings::predictions(&state.pool, asset).await?;
    let near = match embeddings::embedding_of(&state.pool, asset).await? {
        None => Vec::new(),
        Some((vector, model)) => embeddings::nearest(
            &state.pool,
            owner.0,
            &vector,
            &model,
            Some(asset),
            Some(state.near_duplicate_distance),
            0,
            20,
        )
        .await?
        .into_iter()
        .map(|h| json!({ "asset_id": h.asset.id, "distance": h.distance }))
        .collect(),
    };
    Ok(json!({ "predictions": predictions, "near_duplicates": near }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_without_signal_are_not_ranked() {
        // "a dog on a beach" against the colour-only service: every distance is 1.
        let (kept, dropped) = without_signal_dropped(vec![1.0, 1.0, 1.0 - 1e-9], |d| *d);
        assert!(kept.is_empty());
        assert_eq!(dropped, 3);
        // "blue": ranked photos stay, in order; the tail without signal goes.
        let (kept, dropped) = without_signal_dropped(vec![0.2, 0.7, 1.0], |d| *d);
        assert_eq!(kept, vec![0.2, 0.7]);
        assert_eq!(dropped, 1);
    }
}
