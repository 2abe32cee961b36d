//! Lumilio host: a self-hosted photo ingest service.
//!
//! Uploads arrive over HTTP ([`api`]), stream to staging while being hashed
//! ([`ingest`]), and are recorded in Postgres ([`db`]) together with a River
//! job ([`queue`]). Workers run the WASM stages listed in `pipeline.toml`
//! ([`pipeline`]) and keep originals and renditions on disk ([`storage`]).
//!
//! Data flows one way: `api` → `ingest`/`queue` → `pipeline` → `storage`/`db`.
//! `pipeline`, `db`, `storage` and `ingest` are leaves that use no other
//! module of the host.

pub mod api;
pub mod clip;
pub mod config;
pub mod db;
pub mod ingest;
pub mod pipeline;
pub mod queue;
pub mod storage;
