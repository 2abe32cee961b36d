//! End-to-end tests: the real `lumilio` binary, a real Postgres, real WASM
//! plugins. See tests/README.md.

mod abuse;
mod assets_api;
mod auth;
mod bombs;
mod clip;
mod fuzz;
mod harness;
mod hostile_guests;
mod hosts;
mod immich;
mod migrations;
mod outage;
mod plugin_new;
mod py_stage;
mod places;
mod queue_guide;
mod similar;
mod trust;
mod upload;
mod web;
