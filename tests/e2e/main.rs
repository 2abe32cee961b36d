//! End-to-end tests: the real `lumilio` binary, a real Postgres, real WASM
//! plugins. See tests/README.md.

mod harness;
mod migrations;
mod upload;
