//! Who is calling: an API key in `Authorization: Bearer KEY` (or
//! `x-api-key: KEY`, as Immich clients send it) names the user. Handlers
//! only ever see that user's rows; other users' ids answer 404.

use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, StatusCode};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::db::users::{self, KeyView};

/// The user a request acts for.
#[derive(Debug, Clone, Copy)]
pub struct Owner(pub Uuid);

/// The key a request carries, if any.
pub(super) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, key) = v.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then_some(key.trim());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// 401 for a request without a key.
fn missing_key() -> ApiError {
    unauthorized(
        "send an API key as `Authorization: Bearer KEY` or `x-api-key: KEY`; `lumilio user create NAME` makes one",
    )
}

/// 401 for a key that is not (or no longer) valid.
fn unknown_key() -> ApiError {
    unauthorized(
        "the API key is unknown or revoked; `lumilio user create-key NAME` makes a new one",
    )
}

/// The one lookup every extractor of the caller shares: the key the request
/// presents and its user, or 401 when it has none or an unknown one.
pub(super) async fn presented(parts: &Parts, state: &AppState) -> Result<KeyView, ApiError> {
    let key = presented_key(&parts.headers).ok_or_else(missing_key)?;
    users::describe_key(&state.pool, key)
        .await?
        .ok_or_else(unknown_key)
}

impl FromRequestParts<AppState> for Owner {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Owner(presented(parts, state).await?.user_id))
    }
}

/// The user a request acts for and the key it came with: for long-lived
/// responses (event streams) that must end when that key is revoked.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The user.
    pub owner: Uuid,
    /// The key's id (`api_keys.id`).
    pub key_id: Uuid,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = presented(parts, state).await?;
        Ok(Caller {
            owner: key.user_id,
            key_id: key.key_id,
        })
    }
}
