//! End-to-end tests: the real `lumilio` binary, a real Postgres, real WASM
//! plugins. See tests/README.md.

mod harness;
mod assets_api;
mod auth;
mod clip;
mod migrations;
mod upload;
