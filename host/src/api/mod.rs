//! HTTP routes (axum). Handlers are small: they parse, call `ingest`, `db`
//! and `queue`, and answer JSON; every error is an [`ApiError`].

mod assets;
mod error;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sqlx::PgPool;

pub use error::ApiError;

use crate::ingest::Staging;
use crate::storage::Storage;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub pool: PgPool,
    /// River client used to insert jobs.
    pub river: riverqueue::Client,
    /// Where uploads stream to.
    pub staging: Staging,
    /// Where accepted uploads wait and originals live.
    pub storage: Storage,
    /// Largest accepted upload, in bytes.
    pub max_upload_bytes: u64,
}

/// The service's routes.
pub fn router(state: AppState) -> Router {
    // Multipart framing adds a little to the file itself; the exact limit is
    // enforced on the file's bytes while streaming.
    let body_limit = usize::try_from(state.max_upload_bytes.saturating_add(1 << 20)).unwrap_or(usize::MAX);
    Router::new()
        .route("/health", get(health))
        .route("/api/v1/assets", post(assets::upload))
        .route("/api/v1/assets/{id}", get(assets::get_asset))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// `GET /health`: 200 when the database answers, 503 otherwise.
async fn health(State(state): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    sqlx::query("SELECT 1").execute(&state.pool).await?;
    Ok(axum::Json(json!({ "status": "ok", "database": "ok" })))
}
