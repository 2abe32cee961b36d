//! HTTP routes (axum). Handlers are small: they parse, call `ingest`, `db`
//! and `queue`, and answer JSON; every error is an [`ApiError`] rendered as
//! `{"error": {"code", "message"}}`. The OpenAPI document is served at
//! `/api/openapi.json`; a test checks it lists every route in [`routes`].

mod assets;
mod auth;
mod error;
mod events;
mod extract;
mod favorite;
mod files;
mod immich;
mod intake;
mod jobs;
mod limits;
mod metrics;
mod openapi;
mod search;
mod serve;
mod status;
mod upload;
mod web;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::routing::{MethodRouter, delete, get, post};
use serde_json::{Value, json};
use sqlx::PgPool;

pub use error::ApiError;
pub use limits::UploadSlots;
pub use serve::serve;
pub use openapi::ApiDoc;
pub use status::StageLimits;

use crate::ingest::Staging;
use crate::storage::Storage;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub pool: PgPool,
    /// River client used to insert and look up jobs.
    pub river: riverqueue::Client,
    /// Where uploads stream to.
    pub staging: Staging,
    /// Where accepted uploads wait and originals live.
    pub storage: Storage,
    /// Largest accepted upload, in bytes.
    pub max_upload_bytes: u64,
    /// Most files in one batch upload.
    pub max_batch_parts: usize,
    /// CLIP, for text search; `None` when no inference service is configured.
    pub clip: Option<crate::clip::Dispatcher>,
    /// Cosine distance below which assets are listed as near-duplicates.
    pub near_duplicate_distance: f64,
    /// The pipeline's stages and their limits, for `GET /api/v1/status`.
    pub stages: std::sync::Arc<[StageLimits]>,
    /// Longest silence of a request body before it fails (408).
    pub body_idle_timeout: std::time::Duration,
    /// Uploads in flight per key, capped.
    pub upload_slots: UploadSlots,
}

/// Every route as (method, path, handler): the one list both the router and
/// the OpenAPI coverage test read.
pub fn routes() -> Vec<(&'static str, &'static str, MethodRouter<AppState>)> {
    vec![
        ("GET", "/health", get(health)),
        ("GET", "/api/openapi.json", get(openapi::document)),
        ("GET", "/metrics", get(metrics::metrics)),
        ("POST", "/api/v1/assets", post(upload::single)),
        ("GET", "/api/v1/assets", get(assets::list)),
        ("POST", "/api/v1/assets/batch", post(upload::batch)),
        ("POST", "/api/v1/assets/check", post(upload::check)),
        ("GET", "/api/v1/assets/{id}", get(assets::get_one)),
        ("DELETE", "/api/v1/assets/{id}", delete(assets::remove)),
        ("GET", "/api/v1/assets/{id}/original", get(files::original)),
        (
            "GET",
            "/api/v1/assets/{id}/renditions/{name}",
            get(files::rendition),
        ),
        (
            "POST",
            "/api/v1/assets/{id}/reprocess",
            post(assets::reprocess),
        ),
        ("GET", "/api/v1/assets/{id}/similar", get(search::similar)),
        ("POST", "/api/v1/search", post(search::search)),
        ("GET", "/api/v1/assets/{id}/sidecar", get(files::sidecar)),
        ("GET", "/api/v1/jobs/{id}", get(jobs::get_job)),
        // The web app and what it needs beyond the routes above.
        ("GET", "/", get(web::index)),
        ("GET", "/web/{file}", get(web::file)),
        ("GET", "/api/v1/events", get(events::events)),
        ("GET", "/api/v1/status", get(status::status)),
        (
            "POST",
            "/api/v1/assets/{id}/favorite",
            post(favorite::set_favorite),
        ),
        // Immich compatibility, for `immich upload` (see immich.rs).
        ("GET", "/.well-known/immich", get(immich::well_known)),
        ("GET", "/api/users/me", get(immich::users_me)),
        ("GET", "/api/api-keys/me", get(immich::api_key_me)),
        ("GET", "/api/server/media-types", get(immich::media_types)),
        ("GET", "/api/server/version", get(immich::version)),
        ("GET", "/api/server/ping", get(immich::ping)),
        ("GET", "/api/assets/statistics", get(immich::statistics)),
        (
            "POST",
            "/api/assets/bulk-upload-check",
            post(immich::bulk_upload_check),
        ),
        ("POST", "/api/assets", post(immich::upload_asset)),
    ]
}

/// The service's router.
pub fn router(state: AppState) -> Router {
    // Each file is bounded while it streams (and single-file routes check
    // Content-Length up front); the body limit only has to let a full batch
    // through, and bounds the JSON bodies.
    let body_limit = usize::try_from(
        state
            .max_upload_bytes
            .saturating_mul(state.max_batch_parts.max(2) as u64)
            .saturating_add(1 << 20),
    )
    .unwrap_or(usize::MAX);
    let native = intake::LengthLimit {
        file: state.max_upload_bytes,
        extra: 0,
    };
    let immich = intake::LengthLimit {
        extra: immich::MAX_SIDECAR_BYTES as u64,
        ..native
    };
    let mut router = Router::new();
    for (method, path, handler) in routes() {
        let limit = match (method, path) {
            ("POST", "/api/v1/assets") => Some(native),
            ("POST", "/api/assets") => Some(immich),
            _ => None,
        };
        let handler = match limit {
            Some(limit) => handler.layer(axum::middleware::from_fn_with_state(
                limit,
                intake::refuse_oversize,
            )),
            None => handler,
        };
        // The cap is outermost: a refused upload costs no more than its headers.
        let handler = if matches!(
            (method, path),
            ("POST", "/api/v1/assets" | "/api/v1/assets/batch" | "/api/assets")
        ) {
            handler.layer(axum::middleware::from_fn_with_state(
                state.upload_slots.clone(),
                limits::cap_uploads,
            ))
        } else {
            handler
        };
        router = router.route(path, handler);
    }
    let idle = state.body_idle_timeout;
    router
        .fallback(|| async { ApiError::not_found("route") })
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_request(move |req: Request| async move {
            limits::idle_body(req, idle)
        }))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Liveness and database reachability.
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, description = "The service and its database answer"),
              (status = 503, description = "The database is unreachable", body = openapi::ErrorBody)))]
async fn health(State(state): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    crate::db::ping(&state.pool).await?;
    Ok(axum::Json(json!({ "status": "ok", "database": "ok" })))
}
