//! `GET /metrics`: Prometheus text for queues, stages, assets and the CLIP
//! dispatcher. Queue, asset and stage counts are read from the database, so
//! every host of a cluster agrees; the CLIP counters and the phase totals
//! ([`crate::telemetry`]) are this process's own.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{ApiError, AppState};
use crate::db::metrics;

/// Service metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text: jobs by queue and state, assets by status, stage outcomes and durations, CLIP batches")))]
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let mut out = String::new();
    let jobs = metrics::jobs_by_queue_and_state(&state.pool).await?;
    out.push_str("# HELP lumilio_jobs River jobs by queue and state.\n# TYPE lumilio_jobs gauge\n");
    for (queue, job_state, n) in jobs {
        let _ = writeln!(
            out,
            "lumilio_jobs{{queue=\"{queue}\",state=\"{job_state}\"}} {n}"
        );
    }
    let assets = metrics::assets_by_status(&state.pool).await?;
    out.push_str("# HELP lumilio_assets Assets by status.\n# TYPE lumilio_assets gauge\n");
    for (status, n) in assets {
        let _ = writeln!(out, "lumilio_assets{{status=\"{status}\"}} {n}");
    }
    let stages = metrics::stage_runs(&state.pool).await?;
    out.push_str("# HELP lumilio_stage_runs Latest stage outcome per asset.\n# TYPE lumilio_stage_runs gauge\n");
    for (stage, outcome, n, _) in &stages {
        let _ = writeln!(
            out,
            "lumilio_stage_runs{{stage=\"{stage}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    out.push_str("# HELP lumilio_stage_duration_ms_sum Total wall time of those runs.\n# TYPE lumilio_stage_duration_ms_sum gauge\n");
    for (stage, outcome, _, ms) in &stages {
        let _ = writeln!(
            out,
            "lumilio_stage_duration_ms_sum{{stage=\"{stage}\",outcome=\"{outcome}\"}} {ms}"
        );
    }
    phases(&mut out);
    if let Some(clip) = &state.clip {
        let m = clip.metrics();
        out.push_str("# HELP lumilio_clip_batches_total Infer streams sent by this process.\n# TYPE lumilio_clip_batches_total counter\n");
        let _ = writeln!(out, "lumilio_clip_batches_total {}", m.batches_sent);
        let _ = writeln!(
            out,
            "# TYPE lumilio_clip_items_total counter\nlumilio_clip_items_total {}",
            m.items_sent
        );
        let _ = writeln!(
            out,
            "# TYPE lumilio_clip_items_failed_total counter\nlumilio_clip_items_failed_total {}",
            m.items_failed
        );
        let _ = writeln!(
            out,
            "# TYPE lumilio_clip_batch_fill_ratio gauge\nlumilio_clip_batch_fill_ratio {}",
            m.mean_fill_ratio()
        );
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

/// This process's time per phase of an upload and its processing
/// ([`crate::telemetry`]): receive, each stage's call and instantiate,
/// storage writes, CLIP; each also as `NAME.cpu`, its CPU time.
fn phases(out: &mut String) {
    let phases = crate::telemetry::snapshot();
    out.push_str("# HELP lumilio_phase_seconds_total Time spent per phase by this process (a phase ending in .cpu is CPU time, the rest wall time).\n# TYPE lumilio_phase_seconds_total counter\n");
    for (phase, t) in &phases {
        let _ = writeln!(
            out,
            "lumilio_phase_seconds_total{{phase=\"{phase}\"}} {}",
            t.total.as_secs_f64()
        );
    }
    out.push_str("# HELP lumilio_phase_runs_total Runs per phase by this process.\n# TYPE lumilio_phase_runs_total counter\n");
    for (phase, t) in &phases {
        let _ = writeln!(out, "lumilio_phase_runs_total{{phase=\"{phase}\"}} {}", t.runs);
    }
}
