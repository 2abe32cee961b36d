//! Who is calling: an API key in `Authorization: Bearer KEY` (or
//! `x-api-key: KEY`, as Immich clients send it) names the user. Handlers
//! only ever see that user's rows; other users' ids answer 404.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::db::users;

/// The user a request acts for.
#[derive(Debug, Clone, Copy)]
pub struct Owner(pub Uuid);

/// The key a request carries, if any.
pub(super) fn presented_key(parts: &Parts) -> Option<&str> {
    if let Some(v) = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, key) = v.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then_some(key.trim());
    }
    parts
        .headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// 401 for a request without a key.
pub(super) fn missing_key() -> ApiError {
    unauthorized(
        "send an API key as `Authorization: Bearer KEY` or `x-api-key: KEY`; `lumilio user create NAME` makes one",
    )
}

/// 401 for a key that is not (or no longer) valid.
pub(super) fn unknown_key() -> ApiError {
    unauthorized(
        "the API key is unknown or revoked; `lumilio user create-key NAME` makes a new one",
    )
}

impl FromRequestParts<AppState> for Owner {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = presented_key(parts).ok_or_else(missing_key)?;
        match users::authenticate(&state.pool, key).await? {
            Some(user) => Ok(Owner(user)),
            None => Err(unknown_key()),
        }
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
        let key = presented_key(parts).ok_or_else(missing_key)?;
        match users::describe_key(&state.pool, key).await? {
            Some(k) => Ok(Caller {
                owner: k.user_id,
                key_id: k.key_id,
            }),
            None => Err(unknown_key()),
        }
    }
}
