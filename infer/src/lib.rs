//! `lumilio-infer`: the reference inference server for Lumilio.
//!
//! It speaks `home_native.v1.Inference` (`proto/inference.proto`), the API of
//! the original Lumilio ML service, so the host's CLIP dispatcher can be run and
//! measured without a GPU or model files. A real CLIP server that speaks the
//! same proto can replace it.
//!
//! What it computes is honest and deterministic, and **not** a neural model:
//! - `clip_image_embed`: a 512-d image descriptor (colour layout, colour
//!   histogram, edge layout; see [`descriptor`]). Near-duplicates and
//!   similar-looking photos land close together in cosine distance.
//! - `smart_classify`: labels from image statistics (see [`labels`]).
//! - `clip_embed`: text mapped into the same space by a fixed word rule (see
//!   [`text`]); colour words work, everything else matches nothing. It is not
//!   semantic search.
//!
//! A cost model ([`service::Options`]) makes it behave like a batching GPU:
//! a fixed cost per `Infer` stream plus a cost per request, one group at a time.

pub mod descriptor;
pub mod labels;
pub mod service;
pub mod text;

/// Generated protobuf and gRPC code (server, and a client for tests and tools).
pub use lumilio_proto as pb;

/// `Capability.service_name`.
pub const SERVICE_NAME: &str = "lumilio-infer";
/// The one model id this server reports on every answer.
pub const MODEL_ID: &str = "lumilio-infer/colour-layout-v1";
/// `Capability.runtime`: says plainly what this is.
pub const RUNTIME: &str = "cpu; reference descriptor, not a neural CLIP model: 512-d colour layout + colour \
histogram + edge layout; labels from image statistics; clip_embed maps colour words only, NOT semantic search";
