//! The inference service's wire types, generated from `proto/inference.proto`
//! (package `home_native.v1`, service `Inference`).
//!
//! One build serves both sides: the host's `clip` module keeps these types
//! private behind its own plain types, and `lumilio-infer` implements the
//! server. Nothing else should depend on this crate.

#![allow(clippy::all, missing_docs)]
tonic::include_proto!("home_native.v1");
