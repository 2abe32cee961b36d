//! Extractors: route parameters parsed once, with the project's JSON error
//! shape on a bad value, instead of `Path<String>` parsed in each handler;
//! and the upload routes' multipart body.

use axum::RequestExt as _;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use uuid::Uuid;

use super::ApiError;
use crate::ingest::multipart::Multipart;

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

/// The upload routes' multipart body ([`Multipart`], which hands file bytes
/// on without copying them), under the route's body limit. A request that is
/// not `multipart/form-data` with a boundary answers 400 `bad_request` with
/// the text axum's own extractor used.
impl<S: Send + Sync> FromRequest<S> for Multipart {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let boundary = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::ingest::multipart::boundary)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "Invalid `boundary` for `multipart/form-data` request",
                )
            })?;
        let body = req.with_limited_body().into_body().into_data_stream();
        Ok(Multipart::new(body, &boundary))
    }
}
