//! Batching: gathers concurrent submissions, runs one `Infer` stream per batch,
//! and hands each submitter its own result.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::client::{
    self, Assembler, Client, SUFFIX_EMB, SUFFIX_SMART, TASK_IMAGE_EMBED, TASK_SMART,
};
use super::pb;
use super::{Capabilities, ClipConfig, ClipError, ClipResult, DispatcherMetrics, Embedding, Label};

/// Submissions waiting for the batcher; bounded so a stalled service pushes back on workers.
const QUEUE_DEPTH: usize = 1024;

/// Cloneable handle to the CLIP dispatcher; the batcher stops when the last handle is dropped.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Job>,
}

/// What the batcher and the batch tasks share.
struct Shared {
    cfg: ClipConfig,
    addr: String,
    client: Client,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    items: AtomicU64,
    /// Fill ratio sum in millionths, so it fits an integer atomic.
    fill_ppm: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    stream_errors: AtomicU64,
}

/// One submission on its way to a batch.
struct Job {
    asset_id: Uuid,
    image: Vec<u8>,
    mime: String,
    reply: oneshot::Sender<Result<ClipResult, ClipError>>,
}

impl Dispatcher {
    /// Creates the dispatcher and its batching task; the channel connects lazily,
    /// so this succeeds while the service is down (calls then fail with `Unavailable`).
    pub async fn connect(cfg: ClipConfig) -> Result<Dispatcher, ClipError> {
        let mut cfg = cfg;
        // A batch of zero would never be sent; a zero window would make every batch a batch of one.
        cfg.batch_size = cfg.batch_size.max(1);
        let (client, addr) = client::lazy_client(&cfg)?;
        let shared = Arc::new(Shared {
            cfg,
            addr,
            client,
            counters: Counters::default(),
        });
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(batcher(rx, shared.clone()));
        info!(
            addr = %shared.addr,
            batch_size = shared.cfg.batch_size,
            window_ms = shared.cfg.window.as_millis() as u64,
            idle_ms = shared.cfg.idle.as_millis() as u64,
            "clip: dispatcher ready (connects on first use)"
        );
        Ok(Dispatcher {
            inner: Arc::new(Inner { shared, tx }),
        })
    }

    /// Asks the service what it runs (`GetCapabilities`).
    pub async fn capabilities(&self) -> Result<Capabilities, ClipError> {
        let s = &self.inner.shared;
        client::capabilities(&s.client, &s.addr, s.cfg.request_timeout).await
    }

    /// Checks that the service answers (`Health`).
    pub async fn health(&self) -> Result<(), ClipError> {
        let s = &self.inner.shared;
        client::health(&s.client, &s.addr, s.cfg.request_timeout).await
    }

    /// Embeds and classifies one image, batched with concurrent submissions.
    ///
    /// Dropping the returned future gives up on the item without disturbing its batch.
    pub async fn submit(
        &self,
        asset_id: Uuid,
        image: Vec<u8>,
        mime: &str,
    ) -> Result<ClipResult, ClipError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            asset_id,
            image,
            mime: mime.to_owned(),
            reply,
        };
        self.inner
            .tx
            .send(job)
            .await
            .map_err(|_| ClipError::Closed)?;
        answer.await.unwrap_or_else(|_| {
            Err(ClipError::StreamClosed(
                "the batch was abandoned before this item was answered".into(),
            ))
        })
    }

    /// Embeds a text query (`clip_embed`) on its own short stream, not batched.
    pub async fn embed_text(&self, text: &str) -> Result<Embedding, ClipError> {
        let s = &self.inner.shared;
        client::embed_text(&s.client, &s.addr, s.cfg.request_timeout, text).await
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> DispatcherMetrics {
        let c = &self.inner.shared.counters;
        DispatcherMetrics {
            batches_sent: c.batches.load(Ordering::Relaxed),
            items_sent: c.items.load(Ordering::Relaxed),
            fill_ratio_sum: c.fill_ppm.load(Ordering::Relaxed) as f64 / 1e6,
            items_ok: c.ok.load(Ordering::Relaxed),
            items_failed: c.failed.load(Ordering::Relaxed),
            stream_errors: c.stream_errors.load(Ordering::Relaxed),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClipConfig {
        &self.inner.shared.cfg
    }
}

/// Cuts batches: full at `batch_size`, or when `window` has passed since the
/// batch's first item, or `idle` since its last.
async fn batcher(mut rx: mpsc::Receiver<Job>, shared: Arc<Shared>) {
    // Jobs held back because their asset was already in the batch being cut
    // (two items with one correlation id could not be told apart).
    let mut carry: VecDeque<Job> = VecDeque::new();
    loop {
        let first = match carry.pop_front() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => break,
            },
        };
        if first.reply.is_closed() {
            continue; // its submitter already gave up
        }
        let deadline = Instant::now() + shared.cfg.window;
        let mut batch = vec![first];
        let mut deferred = Vec::new();
        while batch.len() < shared.cfg.batch_size {
            let until = deadline.min(Instant::now() + shared.cfg.idle);
            let job = match carry.pop_front() {
                Some(job) => job,
                None => tokio::select! {
                    job = rx.recv() => match job {
                        Some(job) => job,
                        None => break,
                    },
                    _ = tokio::time::sleep_until(until) => break,
                },
            };
            if job.reply.is_closed() {
                continue;
            }
            if batch.iter().any(|b| b.asset_id == job.asset_id) {
                deferred.push(job);
                continue;
            }
            batch.push(job);
        }
        carry.extend(deferred);
        // Submitters may have given up while the batch filled: leave their items out.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        // Batches run concurrently: the next one fills while this one is at the service.
        tokio::spawn(run_batch(shared.clone(), batch));
    }
    debug!("clip: batcher stopped (no dispatcher handles left)");
}

/// An item of a batch in flight: its submitter and the answers so far.
struct InFlight {
    reply: oneshot::Sender<Result<ClipResult, ClipError>>,
    embedding: Option<Embedding>,
    labels: Option<(Vec<Label>, String)>,
}

/// Sends one batch on one `Infer` stream and answers every submitter in it.
async fn run_batch(shared: Arc<Shared>, jobs: Vec<Job>) {
    let cfg = &shared.cfg;
    let n = jobs.len();
    let c = &shared.counters;
    c.batches.fetch_add(1, Ordering::Relaxed);
    c.items.fetch_add(n as u64, Ordering::Relaxed);
    c.fill_ppm.fetch_add(
        (n as u64 * 1_000_000) / cfg.batch_size as u64,
        Ordering::Relaxed,
    );

    let total = 2 * n as u64;
    let topk = cfg.topk.to_string();
    let mut requests = Vec::with_capacity(2 * n);
    let mut in_flight = HashMap::with_capacity(n);
    for (i, job) in jobs.into_iter().enumerate() {
        let i = i as u64;
        requests.push(pb::InferRequest {
            correlation_id: format!("{}|{SUFFIX_EMB}", job.asset_id),
            task: TASK_IMAGE_EMBED.to_owned(),
            payload: job.image.clone(),
            meta: HashMap::new(),
            payload_mime: job.mime.clone(),
            seq: 2 * i,
            total,
            offset: 0,
        });
        requests.push(pb::InferRequest {
            correlation_id: format!("{}|{SUFFIX_SMART}", job.asset_id),
            task: TASK_SMART.to_owned(),
            payload: job.image,
            meta: HashMap::from([("topk".to_owned(), topk.clone())]),
            payload_mime: job.mime,
            seq: 2 * i + 1,
            total,
            offset: 0,
        });
        in_flight.insert(
            job.asset_id,
            InFlight {
                reply: job.reply,
                embedding: None,
                labels: None,
            },
        );
    }

    let started = Instant::now();
    let outcome = tokio::time::timeout(
        cfg.request_timeout,
        drive(&shared, requests, &mut in_flight),
    )
    .await;
    let leftover = in_flight.len();
    match outcome {
        Ok(Ok(())) => {
            for (asset_id, item) in in_flight.drain() {
                let task = if item.embedding.is_none() {
                    TASK_IMAGE_EMBED
                } else {
                    TASK_SMART
                };
                warn!(%asset_id, task, "clip: the service ended the batch without answering this item");
                deliver(
                    &shared,
                    asset_id,
                    item.reply,
                    Err(ClipError::MissingAnswer {
                        task: task.to_owned(),
                    }),
                );
            }
        }
        Ok(Err(err)) => fail_outstanding(&shared, &mut in_flight, err),
        Err(_elapsed) => fail_outstanding(
            &shared,
            &mut in_flight,
            ClipError::Timeout(cfg.request_timeout),
        ),
    }
    info!(
        items = n,
        fill = n as f64 / cfg.batch_size as f64,
        failed_outstanding = leftover,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "clip: batch done"
    );
}

/// Fails every item still waiting after the stream broke or timed out.
fn fail_outstanding(shared: &Shared, in_flight: &mut HashMap<Uuid, InFlight>, err: ClipError) {
    if in_flight.is_empty() {
        return;
    }
    shared
        .counters
        .stream_errors
        .fetch_add(1, Ordering::Relaxed);
    warn!(outstanding = in_flight.len(), error = %err, "clip: batch stream failed; failing its outstanding items");
    for (asset_id, item) in in_flight.drain() {
        deliver(shared, asset_id, item.reply, Err(err.clone()));
    }
}

/// Opens the stream, sends the requests and matches answers until every item
/// is answered or the stream ends. Items answered stay out of `in_flight`.
async fn drive(
    shared: &Shared,
    requests: Vec<pb::InferRequest>,
    in_flight: &mut HashMap<Uuid, InFlight>,
) -> Result<(), ClipError> {
    let timeout = shared.cfg.request_timeout;
    // Sending from an iterator half-closes the request side after the last item,
    // which tells the server the batch is complete.
    let mut stream = shared
        .client
        .clone()
        .infer(tokio_stream::iter(requests))
        .await
        .map_err(|s| client::status_error(&shared.addr, &s, timeout))?
        .into_inner();
    let mut assembler = Assembler::default();
    while !in_flight.is_empty() {
        let Some(msg) = stream
            .message()
            .await
            .map_err(|s| client::status_error(&shared.addr, &s, timeout))?
        else {
            return Ok(());
        };
        if let Some(answer) = assembler.push(msg) {
            on_answer(shared, answer, in_flight);
        }
    }
    // Every item is answered: dropping the stream here is fine even if the server has not closed it.
    Ok(())
}

/// Records one complete answer, and delivers its item when that finishes it.
fn on_answer(shared: &Shared, answer: pb::InferResponse, in_flight: &mut HashMap<Uuid, InFlight>) {
    let parsed = answer
        .correlation_id
        .rsplit_once('|')
        .and_then(|(id, suffix)| Some((Uuid::parse_str(id).ok()?, suffix)));
    let Some((asset_id, suffix)) = parsed else {
        warn!(correlation_id = %answer.correlation_id, "clip: ignoring an answer with an unknown correlation id");
        return;
    };
    let task = match suffix {
        SUFFIX_EMB => TASK_IMAGE_EMBED,
        SUFFIX_SMART => TASK_SMART,
        _ => {
            warn!(correlation_id = %answer.correlation_id, "clip: ignoring an answer with an unknown correlation id");
            return;
        }
    };
    let Some(item) = in_flight.get_mut(&asset_id) else {
        // Already failed (its other task errored) or a duplicate answer.
        debug!(correlation_id = %answer.correlation_id, "clip: ignoring an answer for an item already settled");
        return;
    };

    let outcome = match client::answer_error(task, &answer) {
        Some(err) => Err(err),
        None if task == TASK_IMAGE_EMBED => {
            client::parse_embedding(&answer).map(|e| item.embedding = Some(e))
        }
        None => client::parse_labels(&answer).map(|l| item.labels = Some(l)),
    };
    if let Err(err) = outcome {
        warn!(%asset_id, task, error = %err, "clip: item failed");
        let item = in_flight.remove(&asset_id).expect("present above");
        deliver(shared, asset_id, item.reply, Err(err));
        return;
    }
    if item.embedding.is_some() && item.labels.is_some() {
        let item = in_flight.remove(&asset_id).expect("present above");
        let (labels, label_source) = item.labels.expect("checked");
        let result = ClipResult {
            embedding: item.embedding.expect("checked"),
            labels,
            label_source,
        };
        deliver(shared, asset_id, item.reply, Ok(result));
    }
}

/// Hands a result to its submitter (who may have given up) and counts it.
fn deliver(
    shared: &Shared,
    asset_id: Uuid,
    reply: oneshot::Sender<Result<ClipResult, ClipError>>,
    result: Result<ClipResult, ClipError>,
) {
    let counter = if result.is_ok() {
        &shared.counters.ok
    } else {
        &shared.counters.failed
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if reply.send(result).is_err() {
        debug!(%asset_id, "clip: submitter gave up before its answer arrived");
    }
}
