//! The asset-processing pipeline: WebAssembly stages listed in
//! `pipeline.toml`, run in order on one asset.
//!
//! * [`Runtime`] is created once per process: one wasmtime `Engine` with the
//!   pooling allocator, an epoch ticker thread for deadlines, and an on-disk
//!   cache of compiled components keyed by the wasm file's BLAKE3 hash and the
//!   engine's compatibility hash.
//! * [`Pipeline::load`] reads and validates `pipeline.toml`, collecting every
//!   problem ([`PipelineConfigError`]), and pre-instantiates each stage once.
//! * [`Pipeline::run`] runs the stages in order on a blocking thread, each
//!   call in a fresh `Store` bounded by the stage's deadline (epoch
//!   interruption for wasm code, whose checks the patched code generator in
//!   `host/vendor/` compiles without forcing loops' values onto the stack;
//!   plus a timer that cancels a guest blocked in a WASI call) and memory cap
//!   (a limiter that traps on the failed grow),
//!   with stderr captured; it returns a [`PipelineReport`]: facts (later
//!   stages win), renditions, warnings and a [`Verdict`]. It stops at the
//!   first rejected or failed stage. Content-type filters match the
//!   `content_type` fact of an earlier stage if there is one, else the
//!   client's claim.
//! * [`check`] and [`run_single`] back `lumilio plugin check` and
//!   `lumilio plugin run`.
//!
//! Files, by concern: `types.rs` (facts, outputs, reports), `config.rs`
//! (parsing `pipeline.toml`), `load.rs` (loading and preparing stages),
//! `run.rs` (the stage loop), `engine.rs` (the wasmtime engine and one call),
//! `cache.rs` (the compile cache), `fault.rs` (what a trap means),
//! `host_state.rs` (per-call store data and limits), `bindings/` (WIT).
//!
//! This module is a leaf: it knows nothing of HTTP, database rows or jobs.
//! Stages see no filesystem, network or environment unless `pipeline.toml`
//! grants `read_only_dirs` or `env`. See [`bindings`] for how several WIT
//! versions are supported side by side.

#[cfg(any(test, feature = "bench"))]
#[doc(hidden)]
pub mod bench;
pub mod bindings;
mod cache;
mod capture;
pub mod config;
mod engine;
pub mod error;
mod fault;
mod file;
mod host_state;
mod load;
mod run;
mod types;

#[cfg(test)]
mod tests;

pub use engine::{LoadStats, Runtime, RuntimeOptions};
pub use file::StageFile;
pub use error::{ConfigIssue, PipelineConfigError, RuntimeError, StageError};
pub use load::{Pipeline, check};
pub use run::run_single;
pub use types::{
    AssetFacts, FactValue, PipelineReport, Rendition, SingleRun, StageInfo, StageOutcome,
    StageOutput, StageReport, Verdict,
};
