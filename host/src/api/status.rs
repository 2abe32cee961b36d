//! `GET /api/v1/status`: what the web app's status page shows. Queue counts,
//! failures and totals are the caller's own (jobs about their assets); the
//! pipeline and the inference service are the same for everyone.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::auth::Owner;
use super::{ApiError, AppState};
use crate::db::status;

/// One pipeline stage and the bounds it runs under (from `pipeline.toml`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StageLimits {
    /// Stage name.
    pub name: String,
    /// WIT world version the component implements.
    pub world_version: String,
    /// Wall-clock deadline per call.
    pub timeout_ms: u64,
    /// Memory cap.
    pub memory_limit_mb: u64,
    /// Content types it runs on (empty: all).
    pub content_types: Vec<String>,
    /// Directories granted read-only (normally none).
    pub read_only_dirs: Vec<String>,
    /// Environment variables granted (names only).
    pub env: Vec<String>,
}

/// River's job states, so that every count is present (0 when none).
const STATES: [&str; 8] = [
    "available",
    "scheduled",
    "pending",
    "running",
    "retryable",
    "completed",
    "discarded",
    "cancelled",
];

/// How long a look at the inference service's capabilities is reused.
const CAPABILITIES_TTL: Duration = Duration::from_secs(30);

/// What the inference service last said about itself, with when.
static CAPABILITIES: Mutex<Option<(Instant, Value)>> = Mutex::new(None);

/// The inference service as the status page and search report it:
/// `{"configured", "addr", "reachable", "service_name", "models", "runtime", "semantic", "error"}`.
pub(super) async fn inference(state: &AppState) -> Value {
    let Some(clip) = &state.clip else {
        return json!({ "configured": false, "reachable": false, "semantic": null,
                       "error": "no inference service configured (ML_SERVICE_ADDR is unset): search is off" });
    };
    if let Some((at, v)) = CAPABILITIES.lock().unwrap().as_ref()
        && at.elapsed() < CAPABILITIES_TTL
    {
        return v.clone();
    }
    let addr = clip.config().addr.clone();
    let v = match tokio::time::timeout(Duration::from_secs(3), clip.capabilities()).await {
        Ok(Ok(c)) => json!({
            "configured": true, "addr": addr, "reachable": true,
            "service_name": c.service_name, "models": c.model_ids, "runtime": c.runtime,
            "embedding_dim": c.embedding_dim, "tasks": c.tasks, "semantic": c.semantic,
        }),
        Ok(Err(e)) => {
            json!({ "configured": true, "addr": addr, "reachable": false, "semantic": null, "error": e.to_string() })
        }
        Err(_) => json!({ "configured": true, "addr": addr, "reachable": false, "semantic": null,
                          "error": "no answer to GetCapabilities within 3 s" }),
    };
    // Only a good answer is kept: an outage shows until the service is back.
    if v["reachable"] == true {
        *CAPABILITIES.lock().unwrap() = Some((Instant::now(), v.clone()));
    }
    v
}

/// Queue counts, recent failures, pipeline stages, the inference service and totals.
#[utoipa::path(get, path = "/api/v1/status", tag = "service",
    responses((status = 200, description = "`queues`: for `process_asset` and `process_clip`, the caller's jobs by River state; \
`failures`: the caller's 20 most recent failed or rejected assets and retrying or discarded jobs, with error text; \
`pipeline`: the stages with their limits; `inference`: the inference service's address, reachability, models and \
whether its text search is semantic; `totals`: the caller's assets and bytes stored."),
              (status = 401, body = super::openapi::ErrorBody)))]
pub async fn status(State(state): State<AppState>, owner: Owner) -> Result<Json<Value>, ApiError> {
    let counts = status::queue_counts(&state.pool, owner.0).await?;
    let mut queues = Map::new();
    for kind in ["process_asset", "process_clip"] {
        let mut by_state: Map<String, Value> =
            STATES.iter().map(|s| (s.to_string(), json!(0))).collect();
        for c in counts.iter().filter(|c| c.kind == kind) {
            by_state.insert(c.state.clone(), json!(c.count));
        }
        queues.insert(kind.to_owned(), Value::Object(by_state));
    }
    let failures = status::recent_failures(&state.pool, owner.0, 20).await?;
    let totals = status::totals(&state.pool, owner.0).await?;
    Ok(Json(json!({
        "queues": queues,
        "failures": failures,
        "pipeline": &*state.stages,
        "inference": inference(&state).await,
        "totals": totals,
    })))
}
