//! Path extractors: route parameters parsed once, with the project's JSON
//! error shape on a bad value, instead of `Path<String>` parsed in each handler.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use uuid::Uuid;

use super::ApiError;

/// The asset id in a route's `{id}`. A malformed id answers 404 `not_found`,
/// as an id the caller cannot see does: both are "no such asset" to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssetId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for AssetId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::internal("the route's parameters are unreadable", e))?;
        let raw = params
            .iter()
            .find_map(|(k, v)| (k == "id").then_some(v))
            .ok_or_else(|| ApiError::internal("AssetId on a route without {id}", "no {id}"))?;
        Uuid::parse_str(raw)
            .map(AssetId)
            .map_err(|_| ApiError::not_found("asset"))
    }
}
