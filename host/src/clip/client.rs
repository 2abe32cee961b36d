//! The gRPC side: the channel, status mapping, and decoding of task answers
//! into the module's plain types.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use tonic::transport::{Channel, Endpoint};

use super::pb;
use super::{Capabilities, ClipConfig, ClipError, Embedding, ErrorCode, Label};

/// Generated client over a (lazily connecting) channel.
pub(super) type Client = pb::inference_client::InferenceClient<Channel>;

/// Task names of the protocol.
pub(super) const TASK_IMAGE_EMBED: &str = "clip_image_embed";
pub(super) const TASK_SMART: &str = "smart_classify";
pub(super) const TASK_TEXT_EMBED: &str = "clip_embed";

/// Correlation-id suffixes of an item's two tasks (`{asset_id}|emb`, `{asset_id}|smart`).
pub(super) const SUFFIX_EMB: &str = "emb";
pub(super) const SUFFIX_SMART: &str = "smart";

/// Builds a client whose channel connects on first use, so the host starts
/// while the ML service is still down. Returns the client and the normalised address.
pub(super) fn lazy_client(cfg: &ClipConfig) -> Result<(Client, String), ClipError> {
    let addr = cfg.addr.trim();
    // Accept a bare `host:port`, as people type it into environment variables.
    let addr = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(addr.clone()).map_err(|e| ClipError::InvalidAddress {
        addr: cfg.addr.clone(),
        detail: e.to_string(),
    })?;
    let endpoint = endpoint
        // A refused or black-holed connection should fail fast, not eat the whole request timeout.
        .connect_timeout(cfg.request_timeout.min(Duration::from_secs(5)))
        .tcp_nodelay(true);
    let channel = endpoint.connect_lazy();
    // Images are small (224 px renditions) but answers of large models may not be.
    let client = Client::new(channel).max_decoding_message_size(64 << 20);
    Ok((client, addr))
}

/// Maps a gRPC status (from opening or reading a stream) to a [`ClipError`].
pub(super) fn status_error(addr: &str, status: &tonic::Status, timeout: Duration) -> ClipError {
    match status.code() {
        tonic::Code::Unavailable => ClipError::Unavailable {
            addr: addr.to_owned(),
            detail: status_detail(status),
        },
        tonic::Code::DeadlineExceeded => ClipError::Timeout(timeout),
        code => ClipError::StreamClosed(format!("{code:?}: {}", status_detail(status))),
    }
}

/// The status message plus its source chain (tonic hides "connection refused" in the source).
fn status_detail(status: &tonic::Status) -> String {
    let mut detail = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let text = err.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = err.source();
    }
    detail
}

/// The per-item error carried by an answer, if any.
pub(super) fn answer_error(task: &str, resp: &pb::InferResponse) -> Option<ClipError> {
    let err = resp.error.as_ref()?;
    // An empty Error message (code 0, no text) is "no error", as in the original client.
    if err.code == 0 && err.message.is_empty() {
        return None;
    }
    let mut message = err.message.clone();
    if !err.detail.is_empty() {
        message.push_str(" (");
        message.push_str(&err.detail);
        message.push(')');
    }
    Some(ClipError::ItemError {
        task: task.to_owned(),
        code: ErrorCode::from_wire(err.code),
        message,
    })
}

#[derive(Deserialize)]
struct EmbeddingJson {
    vector: Vec<f32>,
    #[serde(default)]
    dim: Option<usize>,
    #[serde(default)]
    model_id: Option<String>,
}

/// Decodes an `embedding_v1` answer (`{"vector":[...],"dim":N,"model_id":"..."}`).
pub(super) fn parse_embedding(resp: &pb::InferResponse) -> Result<Embedding, ClipError> {
    let json: EmbeddingJson = serde_json::from_slice(&resp.result).map_err(|e| {
        ClipError::BadAnswer(format!("{}: embedding JSON: {e}", resp.correlation_id))
    })?;
    if json.vector.is_empty() {
        return Err(ClipError::BadAnswer(format!(
            "{}: empty embedding vector",
            resp.correlation_id
        )));
    }
    if let Some(dim) = json.dim
        && dim != json.vector.len()
    {
        return Err(ClipError::BadAnswer(format!(
            "{}: embedding says dim {dim} but has {} values",
            resp.correlation_id,
            json.vector.len()
        )));
    }
    if json.vector.iter().any(|v| !v.is_finite()) {
        return Err(ClipError::BadAnswer(format!(
            "{}: embedding has NaN or infinite values",
            resp.correlation_id
        )));
    }
    let model_id = json
        .model_id
        .filter(|m| !m.is_empty())
        .or_else(|| resp.meta.get("model_id").cloned())
        .unwrap_or_default();
    Ok(Embedding {
        vector: json.vector,
        model_id,
    })
}

#[derive(Deserialize)]
struct LabelsJson {
    labels: Vec<LabelJson>,
    #[serde(default)]
    model_id: Option<String>,
}

#[derive(Deserialize)]
struct LabelJson {
    label: String,
    score: f32,
}

/// Decodes a `labels_v1` answer; returns the labels and their source (meta `source`, else model id).
pub(super) fn parse_labels(resp: &pb::InferResponse) -> Result<(Vec<Label>, String), ClipError> {
    let json: LabelsJson = serde_json::from_slice(&resp.result)
        .map_err(|e| ClipError::BadAnswer(format!("{}: labels JSON: {e}", resp.correlation_id)))?;
    let source = resp
        .meta
        .get("source")
        .filter(|s| !s.is_empty())
        .cloned()
        .or(json.model_id)
        .unwrap_or_default();
    let labels = json
        .labels
        .into_iter()
        .map(|l| Label {
            label: l.label,
            score: l.score,
        })
        .collect();
    Ok((labels, source))
}

/// Joins answers that a server splits into parts (`is_final` false, `total` > 1).
///
/// A message is taken as a whole answer unless it explicitly says it is one of
/// several parts: the original client ignored `is_final`, so servers may not set it.
#[derive(Default)]
pub(super) struct Assembler {
    parts: HashMap<String, Vec<u8>>,
}

impl Assembler {
    /// Feeds one message; returns the whole answer once it is complete.
    pub(super) fn push(&mut self, mut resp: pb::InferResponse) -> Option<pb::InferResponse> {
        if resp.error.is_none() && !resp.is_final && resp.total > 1 {
            self.parts
                .entry(resp.correlation_id.clone())
                .or_default()
                .extend_from_slice(&resp.result);
            return None;
        }
        if let Some(mut head) = self.parts.remove(&resp.correlation_id) {
            head.extend_from_slice(&resp.result);
            resp.result = head;
        }
        Some(resp)
    }
}

impl From<pb::Capability> for Capabilities {
    fn from(cap: pb::Capability) -> Self {
        let from_task = || {
            cap.tasks
                .iter()
                .filter(|t| t.name == TASK_IMAGE_EMBED)
                .find_map(|t| {
                    t.limits
                        .get("dim")
                        .or_else(|| t.limits.get("embedding_dim"))
                })
        };
        let embedding_dim = cap
            .extra
            .get("embedding_dim")
            .or_else(|| cap.extra.get("dim"))
            .or_else(from_task)
            .and_then(|d| d.trim().parse().ok());
        let semantic = cap
            .extra
            .get("semantic")
            .and_then(|v| match v.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Some(true),
                "false" | "no" | "0" => Some(false),
                _ => None,
            });
        Capabilities {
            embedding_dim,
            semantic,
            tasks: cap.tasks.iter().map(|t| t.name.clone()).collect(),
            service_name: cap.service_name,
            model_ids: cap.model_ids,
            runtime: cap.runtime,
            max_concurrency: cap.max_concurrency,
        }
    }
}

/// `GetCapabilities`, bounded by `timeout`.
pub(super) async fn capabilities(
    client: &Client,
    addr: &str,
    timeout: Duration,
) -> Result<Capabilities, ClipError> {
    let mut client = client.clone();
    let call = client.get_capabilities(pb::Empty {});
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(ClipError::Timeout(timeout)),
        Ok(Err(status)) => Err(status_error(addr, &status, timeout)),
        Ok(Ok(resp)) => Ok(resp.into_inner().into()),
    }
}

/// `Health`, bounded by `timeout`.
pub(super) async fn health(
    client: &Client,
    addr: &str,
    timeout: Duration,
) -> Result<(), ClipError> {
    let mut client = client.clone();
    let call = client.health(pb::Empty {});
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(ClipError::Timeout(timeout)),
        Ok(Err(status)) => Err(status_error(addr, &status, timeout)),
        Ok(Ok(_)) => Ok(()),
    }
}

/// One `clip_embed` request on its own short `Infer` stream, bounded by `timeout`.
pub(super) async fn embed_text(
    client: &Client,
    addr: &str,
    timeout: Duration,
    text: &str,
) -> Result<Embedding, ClipError> {
    let correlation_id = format!("{}|text", uuid::Uuid::new_v4());
    let req = pb::InferRequest {
        correlation_id: correlation_id.clone(),
        task: TASK_TEXT_EMBED.to_owned(),
        payload: text.as_bytes().to_vec(),
        meta: HashMap::new(),
        payload_mime: "text/plain".to_owned(),
        seq: 0,
        total: 1,
        offset: 0,
    };
    let run = async {
        let mut stream = client
            .clone()
            .infer(tokio_stream::iter([req]))
            .await
            .map_err(|s| status_error(addr, &s, timeout))?
            .into_inner();
        let mut assembler = Assembler::default();
        while let Some(msg) = stream
            .message()
            .await
            .map_err(|s| status_error(addr, &s, timeout))?
        {
            if msg.correlation_id != correlation_id {
                tracing::warn!(correlation_id = %msg.correlation_id, "clip: ignoring an answer to a request not sent");
                continue;
            }
            let Some(answer) = assembler.push(msg) else {
                continue;
            };
            if let Some(err) = answer_error(TASK_TEXT_EMBED, &answer) {
                return Err(err);
            }
            return parse_embedding(&answer);
        }
        Err(ClipError::MissingAnswer {
            task: TASK_TEXT_EMBED.to_owned(),
        })
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or(Err(ClipError::Timeout(timeout)))
}
