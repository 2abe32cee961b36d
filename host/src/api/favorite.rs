//! Marking an asset as a favourite (the web app's star).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::auth::Owner;
use super::extract::AssetId;
use super::{ApiError, AppState};
use crate::db::browse;

/// The new flag.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FavoriteRequest {
    /// `true` to mark, `false` to unmark.
    pub favorite: bool,
}

/// Mark or unmark one of the caller's assets as a favourite.
#[utoipa::path(post, path = "/api/v1/assets/{id}/favorite", tag = "assets",
    params(("id" = Uuid, Path, description = "asset id")), request_body = FavoriteRequest,
    responses((status = 200, description = "`{\"asset_id\", \"is_favorite\"}`"),
              (status = 404, body = super::openapi::ErrorBody)))]
pub async fn set_favorite(
    State(state): State<AppState>,
    owner: Owner,
    AssetId(id): AssetId,
    Json(req): Json<FavoriteRequest>,
) -> Result<Json<Value>, ApiError> {
    if !browse::set_favorite(&state.pool, owner.0, id, req.favorite).await? {
        return Err(ApiError::not_found("asset"));
    }
    Ok(Json(json!({ "asset_id": id, "is_favorite": req.favorite })))
}
