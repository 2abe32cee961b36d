//! The gRPC service: `home_native.v1.Inference` over the reference descriptor,
//! with a configurable cost model that makes it behave like a batching GPU.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info};

use crate::descriptor::{self, Analysis, DIM};
use crate::pb::inference_server::{Inference, InferenceServer};
use crate::pb::{self, Capability, Empty, ErrorCode, InferRequest, InferResponse, IoTask};
use crate::{MODEL_ID, RUNTIME, SERVICE_NAME, labels, text};

/// Task names this server runs.
pub const TASK_IMAGE_EMBED: &str = "clip_image_embed";
/// Labels from image statistics.
pub const TASK_SMART: &str = "smart_classify";
/// Text into the descriptor space.
pub const TASK_TEXT_EMBED: &str = "clip_embed";
/// `result_mime` of embedding answers.
pub const MIME_EMBEDDING: &str = "application/json;schema=embedding_v1";
/// `result_mime` of label answers.
pub const MIME_LABELS: &str = "application/json;schema=labels_v1";
/// Image types the decoder accepts.
pub const IMAGE_MIMES: [&str; 3] = ["image/jpeg", "image/png", "image/webp"];
/// Largest request accepted, so a stray huge upload fails cleanly.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Default and largest `topk` of `smart_classify`.
const DEFAULT_TOPK: usize = 5;
const MAX_TOPK: usize = 50;

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Fixed cost paid once per `Infer` stream, when its first group of requests is processed.
    pub batch_cost: Duration,
    /// Cost per request (an image sent for both tasks counts twice).
    pub item_cost: Duration,
    /// Groups processed at once across all streams (a GPU runs one batch at a time).
    pub max_concurrency: u32,
    /// When a stream does not say how many requests it will send (`total` 0),
    /// process what has arrived after this long without a new request.
    pub gather_idle: Duration,
    /// Length of the embeddings it makes and reports (`DIM`; other values,
    /// zero-padded or cut, exist only to test a host against a mismatch).
    pub embedding_dim: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch_cost: Duration::ZERO,
            item_cost: Duration::ZERO,
            max_concurrency: 1,
            gather_idle: Duration::from_millis(20),
            embedding_dim: DIM,
        }
    }
}

/// The `Inference` service implementation.
#[derive(Clone)]
pub struct InferService {
    opts: Arc<Options>,
    /// The simulated accelerator: one permit per concurrently processed group.
    gpu: Arc<Semaphore>,
}

impl InferService {
    /// A service with these options.
    pub fn new(opts: Options) -> Self {
        let permits = opts.max_concurrency.max(1) as usize;
        InferService {
            opts: Arc::new(opts),
            gpu: Arc::new(Semaphore::new(permits)),
        }
    }

    /// The tonic server wrapper, with the message size limit raised for large images.
    pub fn into_server(self) -> InferenceServer<Self> {
        InferenceServer::new(self).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// Serves on an already bound listener until `shutdown` completes; in-flight streams finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    opts: Options,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(InferService::new(opts).into_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}

/// What `GetCapabilities` returns.
pub fn capability(opts: &Options) -> Capability {
    let task = |name: &str, inputs: &[&str], output: &str, limits: &[(&str, &str)]| IoTask {
        name: name.to_owned(),
        input_mimes: inputs.iter().map(|s| s.to_string()).collect(),
        output_mimes: vec![output.to_owned()],
        limits: limits
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let dim = opts.embedding_dim.to_string();
    let max_topk = MAX_TOPK.to_string();
    Capability {
        service_name: SERVICE_NAME.to_owned(),
        model_ids: vec![MODEL_ID.to_owned()],
        runtime: RUNTIME.to_owned(),
        max_concurrency: opts.max_concurrency.max(1),
        precisions: vec!["fp32".to_owned()],
        extra: HashMap::from([
            ("embedding_dim".to_owned(), dim.clone()),
            ("semantic".to_owned(), "false".to_owned()),
            (
                "batch_cost_ms".to_owned(),
                opts.batch_cost.as_millis().to_string(),
            ),
            (
                "item_cost_ms".to_owned(),
                opts.item_cost.as_millis().to_string(),
            ),
        ]),
        tasks: vec![
            task(
                TASK_IMAGE_EMBED,
                &IMAGE_MIMES,
                MIME_EMBEDDING,
                &[("dim", &dim)],
            ),
            task(
                TASK_SMART,
                &IMAGE_MIMES,
                MIME_LABELS,
                &[("max_topk", &max_topk)],
            ),
            task(
                TASK_TEXT_EMBED,
                &["text/plain"],
                MIME_EMBEDDING,
                &[("dim", &dim)],
            ),
        ],
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Inference for InferService {
    type InferStream = BoxStream<InferResponse>;
    type StreamCapabilitiesStream = BoxStream<Capability>;

    async fn infer(
        &self,
        request: Request<Streaming<InferRequest>>,
    ) -> Result<Response<Self::InferStream>, Status> {
        let peer = request.remote_addr();
        let incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(run_stream(self.clone(), incoming, tx, peer));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_capabilities(&self, _: Request<Empty>) -> Result<Response<Capability>, Status> {
        Ok(Response::new(capability(&self.opts)))
    }

    async fn stream_capabilities(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::StreamCapabilitiesStream>, Status> {
        // The reference server's capabilities never change: one message, then the end.
        let cap = capability(&self.opts);
        Ok(Response::new(Box::pin(tokio_stream::once(Ok(cap)))))
    }

    async fn health(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }
}

/// Reads one `Infer` stream in groups, processes each group like a GPU batch,
/// and answers its requests in reverse order (so clients must match by correlation id).
async fn run_stream(
    svc: InferService,
    mut incoming: Streaming<InferRequest>,
    tx: mpsc::Sender<Result<InferResponse, Status>>,
    peer: Option<std::net::SocketAddr>,
) {
    let mut received = 0u64;
    let mut expected = 0u64;
    let mut first_group = true;
    let mut ended = false;
    while !ended {
        // Wait as long as it takes for the group's first request.
        let mut group = match incoming.message().await {
            Ok(Some(req)) => vec![req],
            Ok(None) => break,
            Err(status) => {
                debug!(?peer, %status, "infer: request stream failed");
                break;
            }
        };
        received += 1;
        expected = expected.max(group[0].total);
        // Then gather the rest: up to the announced total, the end of the stream,
        // or a pause (for clients that announce no total).
        while expected == 0 || received < expected {
            match tokio::time::timeout(svc.opts.gather_idle, incoming.message()).await {
                Err(_idle) if expected == 0 => break,
                Err(_idle) => continue,
                Ok(Ok(Some(req))) => {
                    received += 1;
                    group.push(req);
                }
                Ok(Ok(None)) => {
                    ended = true;
                    break;
                }
                Ok(Err(status)) => {
                    debug!(?peer, %status, "infer: request stream failed; answering what arrived");
                    ended = true;
                    break;
                }
            }
        }

        let n = group.len();
        let started = Instant::now();
        let answers = {
            let _permit = svc.gpu.acquire().await.expect("semaphore never closed");
            let mut cost = svc.opts.item_cost * n as u32;
            if first_group {
                cost += svc.opts.batch_cost;
            }
            tokio::time::sleep(cost).await;
            let dim = svc.opts.embedding_dim;
            match tokio::task::spawn_blocking(move || answer_group(group, dim)).await {
                Ok(answers) => answers,
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::internal(format!("worker panicked: {e}"))))
                        .await;
                    return;
                }
            }
        };
        first_group = false;
        info!(
            ?peer,
            requests = n,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "infer: group answered"
        );
        for answer in answers.into_iter().rev() {
            if tx.send(Ok(answer)).await.is_err() {
                debug!(?peer, "infer: client went away");
                return;
            }
        }
    }
}

/// Answers a group; each distinct image is decoded and analysed once.
fn answer_group(group: Vec<InferRequest>, dim: usize) -> Vec<InferResponse> {
    let mut cache: HashMap<Vec<u8>, Arc<Result<Analysis, String>>> = HashMap::new();
    group
        .into_iter()
        .map(|req| {
            let mut analysis = |payload: &[u8]| {
                cache
                    .entry(payload.to_vec())
                    .or_insert_with(|| {
                        Arc::new(descriptor::analyse_bytes(payload).map_err(|e| e.to_string()))
                    })
                    .clone()
            };
            answer_one(&req, &mut analysis, dim)
        })
        .collect()
}

/// Answers one request with `dim`-long embeddings ([`DIM`] unless testing a
/// mismatch); bad input becomes a per-item INVALID_ARGUMENT, never a stream failure.
pub fn answer_one(
    req: &InferRequest,
    analysis: &mut dyn FnMut(&[u8]) -> Arc<Result<Analysis, String>>,
    dim: usize,
) -> InferResponse {
    let embedding_json = |v: &[f32]| {
        let mut v = v.to_vec();
        v.resize(dim, 0.0);
        embedding_json(&v)
    };
    let outcome: Result<(serde_json::Value, &str, &str, HashMap<String, String>), String> =
        match req.task.as_str() {
            TASK_IMAGE_EMBED | TASK_SMART if req.payload.is_empty() => {
                Err("empty image payload".to_owned())
            }
            TASK_IMAGE_EMBED => match &*analysis(&req.payload) {
                Ok(a) => Ok((
                    embedding_json(&a.vector),
                    MIME_EMBEDDING,
                    "embedding_v1",
                    HashMap::new(),
                )),
                Err(e) => Err(e.clone()),
            },
            TASK_SMART => match parse_topk(req.meta.get("topk")) {
                Err(e) => Err(e),
                Ok(topk) => match &*analysis(&req.payload) {
                    Ok(a) => Ok((
                        serde_json::json!({"labels": labels::top_labels(&a.stats, topk), "model_id": MODEL_ID}),
                        MIME_LABELS,
                        "labels_v1",
                        HashMap::from([("source".to_owned(), labels::SOURCE.to_owned())]),
                    )),
                    Err(e) => Err(e.clone()),
                },
            },
            TASK_TEXT_EMBED => match text::embed_text(&req.payload) {
                Ok(v) => Ok((
                    embedding_json(&v),
                    MIME_EMBEDDING,
                    "embedding_v1",
                    HashMap::new(),
                )),
                Err(e) => Err(e.to_string()),
            },
            other => Err(format!(
                "unknown task {other:?}; this server runs {TASK_IMAGE_EMBED}, {TASK_SMART} and {TASK_TEXT_EMBED}"
            )),
        };
    let mut resp = InferResponse {
        correlation_id: req.correlation_id.clone(),
        is_final: true,
        seq: req.seq,
        total: 1,
        ..Default::default()
    };
    match outcome {
        Ok((json, mime, schema, meta)) => {
            resp.result = serde_json::to_vec(&json).expect("JSON values serialise");
            resp.result_mime = mime.to_owned();
            resp.result_schema = schema.to_owned();
            resp.meta = meta;
        }
        Err(message) => {
            debug!(correlation_id = %req.correlation_id, task = %req.task, %message, "infer: item rejected");
            resp.error = Some(pb::Error {
                code: ErrorCode::InvalidArgument as i32,
                message,
                detail: format!("task {} correlation_id {}", req.task, req.correlation_id),
            });
        }
    }
    resp
}

fn embedding_json(v: &[f32]) -> serde_json::Value {
    serde_json::json!({"vector": v, "dim": v.len(), "model_id": MODEL_ID})
}

fn parse_topk(raw: Option<&String>) -> Result<usize, String> {
    match raw.map(|s| s.trim()) {
        None | Some("") => Ok(DEFAULT_TOPK),
        Some(s) => match s.parse::<usize>() {
            Ok(k) if (1..=MAX_TOPK).contains(&k) => Ok(k),
            _ => Err(format!(
                "meta topk must be a number from 1 to {MAX_TOPK}, got {s:?}"
            )),
        },
    }
}
