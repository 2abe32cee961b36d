//! Lumilio host: a self-hosted photo ingest service.
//!
//! Uploads arrive over HTTP ([`api`]), stream to staging while being hashed
//! ([`ingest`]), and are recorded in Postgres ([`db`]) together with a River
//! job ([`queue`]). Workers run the WASM stages listed in `pipeline.toml`
//! ([`pipeline`]) and keep originals and renditions on disk ([`storage`]).
//!
//! [`app`] assembles them into the running service; the `lumilio` binary
//! (`src/bin/lumilio/`) is only its command line.
//!
//! Data flows one way: `api` → `ingest`/`queue` → `pipeline` → `storage`/`db`.
//! `pipeline`, `clip`, `db`, `storage` and `ingest` are leaves that use no
//! other module of the host, except two leaves below them: [`telemetry`]
//! (per-phase time totals for `/metrics`), which every module may record
//! into, and [`durable`] (directory syncs), which `ingest` and `storage` share.

pub mod api;
pub mod app;
pub mod clip;
pub mod config;
pub mod db;
pub mod durable;
pub mod ingest;
pub mod pipeline;
pub mod queue;
pub mod signal;
pub mod storage;
pub mod telemetry;
