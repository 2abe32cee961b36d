//! CLIP batch dispatcher: sends images to the inference service over gRPC.
//!
//! A leaf module: it knows no database and no jobs. The `process_clip` worker
//! calls [`Dispatcher::submit`] with an asset's `clip` rendition and stores the
//! [`ClipResult`] it gets back; text search calls [`Dispatcher::embed_text`].
//!
//! The wire protocol is `proto/inference.proto` (package `home_native.v1`,
//! service `Inference`), the API of the original Lumilio ML service. Concurrent
//! submissions are gathered into batches (full at [`ClipConfig::batch_size`],
//! or sent when [`ClipConfig::window`] has passed since the batch's first item,
//! or [`ClipConfig::idle`] since its last);
//! each batch is one `Infer` stream carrying, for item *i*, `clip_image_embed`
//! (seq 2i, correlation id `{asset_id}|emb`) and `smart_classify` (seq 2i+1,
//! `{asset_id}|smart`, meta `topk`). Answers are matched by correlation id in
//! whatever order they come, and an item is delivered once both are in. A
//! per-item error, a missing answer or a broken stream fails only the items it
//! concerns. The generated gRPC types stay in this module.

mod client;
mod dispatcher;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

pub use dispatcher::Dispatcher;

/// Code generated from `proto/inference.proto`; private so callers see only plain types.
use lumilio_proto as pb;

/// Where the inference service is and how submissions are batched.
#[derive(Debug, Clone)]
pub struct ClipConfig {
    /// gRPC address of the inference service, e.g. `http://127.0.0.1:50051`.
    pub addr: String,
    /// Items per `Infer` stream; a batch is sent as soon as it is full.
    pub batch_size: usize,
    /// Longest wait, from a batch's first item, before a partial batch is sent.
    pub window: Duration,
    /// A partial batch that got no new item for this long is sent before its
    /// window ends: a steady flow still fills batches, but the last photos of
    /// an upload no longer wait out the whole window (bench-ingest 4g saw
    /// 1.1 s of such a tail after a 4 s run).
    pub idle: Duration,
    /// Number of labels asked of `smart_classify` (meta `topk`).
    pub topk: u32,
    /// Bound on one batch's round trip (and on capability and text calls).
    pub request_timeout: Duration,
}

impl Default for ClipConfig {
    fn default() -> Self {
        ClipConfig {
            addr: "http://127.0.0.1:50051".to_owned(),
            batch_size: 8,
            window: Duration::from_millis(1500),
            idle: Duration::from_millis(100),
            topk: 5,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What the inference service says it runs (`GetCapabilities`).
#[derive(Debug, Clone, PartialEq)]
pub struct Capabilities {
    /// Service name, e.g. `lumilio-infer`.
    pub service_name: String,
    /// Model ids the service serves; embeddings carry one of these.
    pub model_ids: Vec<String>,
    /// Free-text description of what computes the results.
    pub runtime: String,
    /// Concurrency the service suggests.
    pub max_concurrency: u32,
    /// Embedding dimension, when stated (`extra["embedding_dim"]`, or a task limit `dim`).
    pub embedding_dim: Option<usize>,
    /// Names of the tasks the service lists.
    pub tasks: Vec<String>,
    /// Whether text search means what the words say (`extra["semantic"]`):
    /// `Some(false)` for a service that matches by rule, such as the bundled
    /// `lumilio-infer` (colour words only); `None` when the service does not say.
    pub semantic: Option<bool>,
}

/// An embedding vector and the model that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// The vector, as sent by the service (normally L2-normalised).
    pub vector: Vec<f32>,
    /// Model id, so vectors of different models are never compared.
    pub model_id: String,
}

/// One predicted label.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// Label text, e.g. `blue`.
    pub label: String,
    /// Score in [0, 1] (as the service reports it).
    pub score: f32,
}

/// Everything the service returned for one submitted image.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipResult {
    /// The image embedding (`clip_image_embed`).
    pub embedding: Embedding,
    /// Top labels (`smart_classify`), best first as the service sent them.
    pub labels: Vec<Label>,
    /// What produced the labels: the answer's meta `source`, else its model id.
    pub label_source: String,
}

/// Per-item error codes of the inference protocol (`home_native.v1.ErrorCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The service gave no code.
    Unspecified,
    /// The input is bad (e.g. not a decodable image): retrying will not help.
    InvalidArgument,
    /// The service lacks a resource right now.
    Unavailable,
    /// The service ran out of time for this item.
    DeadlineExceeded,
    /// The service failed internally.
    Internal,
}

impl ErrorCode {
    fn from_wire(code: i32) -> ErrorCode {
        match pb::ErrorCode::try_from(code) {
            Ok(pb::ErrorCode::InvalidArgument) => ErrorCode::InvalidArgument,
            Ok(pb::ErrorCode::Unavailable) => ErrorCode::Unavailable,
            Ok(pb::ErrorCode::DeadlineExceeded) => ErrorCode::DeadlineExceeded,
            Ok(pb::ErrorCode::Internal) => ErrorCode::Internal,
            Ok(pb::ErrorCode::Unspecified) | Err(_) => ErrorCode::Unspecified,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorCode::Unspecified => "UNSPECIFIED",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ErrorCode::Internal => "INTERNAL",
        })
    }
}

/// Why a CLIP call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClipError {
    /// The service could not be reached (down, refusing, wrong port).
    #[error(
        "inference service at {addr} is unreachable ({detail}); retry later, or check ML_SERVICE_ADDR"
    )]
    Unavailable {
        /// The configured address.
        addr: String,
        /// What the transport said.
        detail: String,
    },
    /// The service answered this item (one of its tasks) with an error.
    #[error("inference service failed task {task} for this item: {code}: {message}")]
    ItemError {
        /// Task that failed: `clip_image_embed`, `smart_classify` or `clip_embed`.
        task: String,
        /// The protocol's error code; `InvalidArgument` means bad input.
        code: ErrorCode,
        /// The service's message.
        message: String,
    },
    /// The service ended the stream without answering this item's task.
    #[error(
        "inference service ended the stream without answering task {task} for this item; retry it"
    )]
    MissingAnswer {
        /// Task left unanswered.
        task: String,
    },
    /// The stream broke before this item was answered.
    #[error("inference stream failed before this item was answered ({0}); retry it")]
    StreamClosed(String),
    /// An answer that does not follow the task's schema.
    #[error(
        "inference service sent an unusable answer: {0}; check that it speaks the home_native.v1 tasks"
    )]
    BadAnswer(String),
    /// No complete answer within the configured request timeout.
    #[error(
        "no answer from the inference service within {0:?}; retry later or raise the request timeout"
    )]
    Timeout(Duration),
    /// The configured address is not a valid URI.
    #[error("invalid ML service address {addr:?}: {detail}; expected e.g. http://127.0.0.1:50051")]
    InvalidAddress {
        /// The configured address.
        addr: String,
        /// Why it was refused.
        detail: String,
    },
    /// The dispatcher's batching task is gone (the process is shutting down).
    #[error("the CLIP dispatcher has shut down")]
    Closed,
}

impl ClipError {
    /// Whether trying the same item again later may succeed (false for bad input or bad answers).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClipError::ItemError { code, .. } => *code != ErrorCode::InvalidArgument,
            ClipError::BadAnswer(_) | ClipError::InvalidAddress { .. } => false,
            ClipError::Unavailable { .. }
            | ClipError::MissingAnswer { .. }
            | ClipError::StreamClosed(_)
            | ClipError::Timeout(_)
            | ClipError::Closed => true,
        }
    }
}

/// Counters of the dispatcher since it started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DispatcherMetrics {
    /// `Infer` streams opened for image batches.
    pub batches_sent: u64,
    /// Items (images) sent in those batches.
    pub items_sent: u64,
    /// Sum over batches of items / batch_size; divide by `batches_sent` for the mean.
    pub fill_ratio_sum: f64,
    /// Items delivered with both answers.
    pub items_ok: u64,
    /// Items that failed (any [`ClipError`]).
    pub items_failed: u64,
    /// Batches whose stream failed to open or broke before every answer was in.
    pub stream_errors: u64,
}

impl DispatcherMetrics {
    /// Mean batch fill ratio (0 when no batch was sent).
    pub fn mean_fill_ratio(&self) -> f64 {
        if self.batches_sent == 0 {
            0.0
        } else {
            self.fill_ratio_sum / self.batches_sent as f64
        }
    }
}
