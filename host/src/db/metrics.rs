//! Counts behind `GET /metrics`, read from the database so that every host
//! of a cluster reports the same numbers.

use sqlx::PgPool;

/// River jobs by queue and state: `(queue, state, count)`, sorted.
pub async fn jobs_by_queue_and_state(pool: &PgPool) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT queue, state::text, count(*) FROM river_job GROUP BY 1, 2 ORDER BY 1, 2")
        .fetch_all(pool)
        .await
}

/// Assets by status: `(status, count)`, sorted.
pub async fn assets_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT status, count(*) FROM assets GROUP BY 1 ORDER BY 1")
        .fetch_all(pool)
        .await
}

/// The latest stage result per asset, by stage and outcome:
/// `(stage, outcome, count, total duration in ms)`, sorted.
pub async fn stage_runs(pool: &PgPool) -> Result<Vec<(String, String, i64, f64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT stage, outcome, count(*), coalesce(sum(duration_ms), 0) FROM stage_results GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
}
