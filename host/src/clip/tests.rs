//! Dispatcher tests against an in-process inference server on 127.0.0.1:0.
//!
//! The fake server answers every request of a stream only after the client has
//! sent them all, in reverse order (so `smart` comes before `emb`, last item
//! first), and can be told to drop, error, stall or cut off answers.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use super::pb;
use super::pb::inference_server::{Inference, InferenceServer};
use super::*;

/// How the fake server misbehaves.
#[derive(Clone, Default)]
enum Mode {
    /// Answer everything, in reverse order.
    #[default]
    Reverse,
    /// Never send the answer with this correlation id.
    Drop(String),
    /// Answer this correlation id with an INVALID_ARGUMENT error.
    Error(String),
    /// Answer the first `n` items (both tasks), then fail the stream.
    FailAfter(usize),
    /// Answer nothing and keep the stream open.
    Hang,
}

/// What the fake server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    correlation_id: String,
    task: String,
    seq: u64,
    total: u64,
    topk: Option<String>,
    mime: String,
}

#[derive(Default)]
struct FakeState {
    mode: Mode,
    /// Wait this long after the last request before answering (a slow GPU).
    delay: Duration,
    streams: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

#[derive(Clone, Default)]
struct Fake(Arc<FakeState>);

/// The embedding the fake returns for a payload: its first byte, then 1s; dim 4.
fn fake_vector(payload: &[u8]) -> Vec<f32> {
    vec![payload.first().copied().unwrap_or(0) as f32, 1.0, 1.0, 1.0]
}

fn answer(req: &pb::InferRequest) -> pb::InferResponse {
    let (result, mime, meta) = match req.task.as_str() {
        "smart_classify" => (
            serde_json::json!({"labels": [{"label": format!("byte{}", req.payload[0]), "score": 0.75}], "model_id": "fake-1"}),
            "application/json;schema=labels_v1",
            [("source".to_owned(), "fake-stats".to_owned())].into(),
        ),
        _ => (
            serde_json::json!({"vector": fake_vector(&req.payload), "dim": 4, "model_id": "fake-1"}),
            "application/json;schema=embedding_v1",
            Default::default(),
        ),
    };
    pb::InferResponse {
        correlation_id: req.correlation_id.clone(),
        is_final: true,
        result: serde_json::to_vec(&result).unwrap(),
        meta,
        error: None,
        seq: req.seq,
        total: 1,
        offset: 0,
        result_mime: mime.to_owned(),
        result_schema: String::new(),
    }
}

fn error_answer(req: &pb::InferRequest) -> pb::InferResponse {
    pb::InferResponse {
        correlation_id: req.correlation_id.clone(),
        is_final: true,
        error: Some(pb::Error {
            code: pb::ErrorCode::InvalidArgument as i32,
            message: "cannot decode image".to_owned(),
            detail: String::new(),
        }),
        seq: req.seq,
        ..Default::default()
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Inference for Fake {
    type InferStream = BoxStream<pb::InferResponse>;
    type StreamCapabilitiesStream = BoxStream<pb::Capability>;

    async fn infer(
        &self,
        request: Request<Streaming<pb::InferRequest>>,
    ) -> Result<Response<Self::InferStream>, Status> {
        self.0.streams.fetch_add(1, Ordering::SeqCst);
        let mut incoming = request.into_inner();
        let state = self.0.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut reqs = Vec::new();
            while let Some(Ok(req)) = incoming.next().await {
                state.seen.lock().unwrap().push(Seen {
                    correlation_id: req.correlation_id.clone(),
                    task: req.task.clone(),
                    seq: req.seq,
                    total: req.total,
                    topk: req.meta.get("topk").cloned(),
                    mime: req.payload_mime.clone(),
                });
                reqs.push(req);
            }
            tokio::time::sleep(state.delay).await;
            match &state.mode {
                Mode::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Mode::FailAfter(n) => {
                    for req in reqs.iter().take(2 * n).rev() {
                        let _ = tx.send(Ok(answer(req))).await;
                    }
                    let _ = tx.send(Err(Status::internal("model crashed"))).await;
                }
                mode => {
                    for req in reqs.iter().rev() {
                        let msg = match mode {
                            Mode::Drop(cid) if *cid == req.correlation_id => continue,
                            Mode::Error(cid) if *cid == req.correlation_id => error_answer(req),
                            _ => answer(req),
                        };
                        let _ = tx.send(Ok(msg)).await;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_capabilities(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::Capability>, Status> {
        Ok(Response::new(pb::Capability {
            service_name: "fake".into(),
            model_ids: vec!["fake-1".into()],
            runtime: "test double".into(),
            max_concurrency: 2,
            extra: [("embedding_dim".to_owned(), "4".to_owned())].into(),
            tasks: vec![pb::IoTask {
                name: "clip_image_embed".into(),
                input_mimes: vec!["image/jpeg".into()],
                ..Default::default()
            }],
            ..Default::default()
        }))
    }

    async fn stream_capabilities(
        &self,
        r: Request<pb::Empty>,
    ) -> Result<Response<Self::StreamCapabilitiesStream>, Status> {
        let cap = self.get_capabilities(r).await?.into_inner();
        Ok(Response::new(Box::pin(tokio_stream::once(Ok(cap)))))
    }

    async fn health(&self, _: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        Ok(Response::new(pb::Empty {}))
    }
}

/// Starts the fake on an ephemeral port; returns its state and address.
async fn start(mode: Mode, delay: Duration) -> (Arc<FakeState>, String) {
    let fake = Fake(Arc::new(FakeState {
        mode,
        delay,
        ..Default::default()
    }));
    let state = fake.0.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(InferenceServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (state, format!("http://{addr}"))
}

/// No idle flush: only `window` and a full batch send.
fn config(addr: &str, batch_size: usize, window: Duration) -> ClipConfig {
    ClipConfig {
        addr: addr.to_owned(),
        batch_size,
        window,
        idle: window,
        topk: 5,
        request_timeout: Duration::from_secs(10),
    }
}

/// Submits `n` images concurrently (payload byte = index + 1); returns ids and results in order.
async fn submit_all(d: &Dispatcher, n: usize) -> Vec<(Uuid, Result<ClipResult, ClipError>)> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let futs = ids.iter().enumerate().map(|(i, id)| {
        let d = d.clone();
        let id = *id;
        tokio::spawn(async move { d.submit(id, vec![i as u8 + 1, 0, 0], "image/jpeg").await })
    });
    let mut out = Vec::new();
    for (id, f) in ids.iter().zip(futs.collect::<Vec<_>>()) {
        out.push((*id, f.await.unwrap()));
    }
    out
}

const LONG_WINDOW: Duration = Duration::from_secs(30);

#[tokio::test]
async fn reordered_answers_are_matched_by_correlation_id() {
    let (state, addr) = start(Mode::Reverse, Duration::ZERO).await;
    let d = Dispatcher::connect(config(&addr, 4, LONG_WINDOW))
        .await
        .unwrap();
    let results = submit_all(&d, 4).await;
    for (i, (_, r)) in results.iter().enumerate() {
        let r = r.as_ref().expect("every item succeeds");
        assert_eq!(
            r.embedding.vector,
            fake_vector(&[i as u8 + 1]),
            "item {i} got another item's embedding"
        );
        assert_eq!(r.embedding.model_id, "fake-1");
        assert_eq!(
            r.labels,
            vec![Label {
                label: format!("byte{}", i + 1),
                score: 0.75
            }]
        );
        assert_eq!(r.label_source, "fake-stats");
    }
    // The wire shape: one stream, seq 2i / 2i+1, total 2n, topk on smart only, correlation ids.
    assert_eq!(state.streams.load(Ordering::SeqCst), 1);
    let seen = state.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 8);
    for s in &seen {
        let (id, suffix) = s.correlation_id.rsplit_once('|').unwrap();
        let item = results
            .iter()
            .position(|(rid, _)| rid.to_string() == id)
            .expect("known asset id");
        assert_eq!(s.total, 8);
        assert_eq!(s.mime, "image/jpeg");
        match suffix {
            "emb" => {
                assert_eq!(s.task, "clip_image_embed");
                assert_eq!(s.topk, None);
                assert_eq!(s.seq % 2, 0);
            }
            "smart" => {
                assert_eq!(s.task, "smart_classify");
                assert_eq!(s.topk.as_deref(), Some("5"));
                assert_eq!(s.seq % 2, 1);
            }
            other => panic!("unexpected suffix {other}"),
        }
        assert!(s.seq / 2 < 4 && item < 4);
    }
    let seqs: HashSet<u64> = seen.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, (0..8).collect());
    let m = d.metrics();
    assert_eq!(
        (m.batches_sent, m.items_sent, m.items_ok, m.items_failed),
        (1, 4, 4, 0)
    );
}

#[tokio::test]
async fn concurrent_submits_fill_one_batch() {
    let (state, addr) = start(Mode::Reverse, Duration::ZERO).await;
    let d = Dispatcher::connect(config(&addr, 8, LONG_WINDOW))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let results = submit_all(&d, 8).await;
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    // A full batch goes out at once, not when the window ends.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "full batch waited for the window"
    );
    let m = d.metrics();
    assert_eq!(m.batches_sent, 1);
    assert_eq!(m.items_sent, 8);
    assert!(
        (m.mean_fill_ratio() - 1.0).abs() < 1e-9,
        "fill {}",
        m.mean_fill_ratio()
    );
    assert_eq!(state.streams.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn window_flushes_a_partial_batch() {
    let (_state, addr) = start(Mode::Reverse, Duration::ZERO).await;
    let window = Duration::from_millis(200);
    let d = Dispatcher::connect(config(&addr, 8, window)).await.unwrap();
    let started = std::time::Instant::now();
    let results = submit_all(&d, 3).await;
    let elapsed = started.elapsed();
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    assert!(
        elapsed >= window,
        "sent before the window ended: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "partial batch not flushed: {elapsed:?}"
    );
    let m = d.metrics();
    assert_eq!((m.batches_sent, m.items_sent), (1, 3));
    assert!((m.mean_fill_ratio() - 3.0 / 8.0).abs() < 1e-6);
}

#[tokio::test]
async fn a_dropped_answer_fails_only_that_item() {
    let victim = Uuid::new_v4();
    let (_state, addr) = start(Mode::Drop(format!("{victim}|smart")), Duration::ZERO).await;
    let d = Dispatcher::connect(config(&addr, 3, LONG_WINDOW))
        .await
        .unwrap();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (ra, rv, rb) = tokio::join!(
        d.submit(a, vec![1], "image/jpeg"),
        d.submit(victim, vec![2], "image/jpeg"),
        d.submit(b, vec![3], "image/jpeg"),
    );
    assert_eq!(
        rv.unwrap_err(),
        ClipError::MissingAnswer {
            task: "smart_classify".into()
        }
    );
    assert_eq!(ra.unwrap().embedding.vector, fake_vector(&[1]));
    assert_eq!(rb.unwrap().embedding.vector, fake_vector(&[3]));
    let m = d.metrics();
    assert_eq!((m.batches_sent, m.items_ok, m.items_failed), (1, 2, 1));
}

#[tokio::test]
async fn an_item_error_fails_only_that_item() {
    let victim = Uuid::new_v4();
    let (_state, addr) = start(Mode::Error(format!("{victim}|emb")), Duration::ZERO).await;
    let d = Dispatcher::connect(config(&addr, 3, LONG_WINDOW))
        .await
        .unwrap();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (ra, rv, rb) = tokio::join!(
        d.submit(a, vec![1], "image/jpeg"),
        d.submit(victim, vec![2], "image/jpeg"),
        d.submit(b, vec![3], "image/jpeg"),
    );
    let err = rv.unwrap_err();
    match &err {
        ClipError::ItemError {
            task,
            code,
            message,
        } => {
            assert_eq!(task, "clip_image_embed");
            assert_eq!(*code, ErrorCode::InvalidArgument);
            assert!(message.contains("cannot decode image"), "{message}");
        }
        other => panic!("expected ItemError, got {other:?}"),
    }
    assert!(!err.is_retryable(), "bad input must not be retried");
    assert!(ra.is_ok() && rb.is_ok());
}

#[tokio::test]
async fn an_early_stream_failure_fails_only_outstanding_items() {
    // The fake answers the first two items (by send order), then fails the stream.
    let (_state, addr) = start(Mode::FailAfter(2), Duration::ZERO).await;
    let d = Dispatcher::connect(config(&addr, 4, LONG_WINDOW))
        .await
        .unwrap();
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    // Submit one at a time so the send order (and so which items get answered) is known.
    let mut handles = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (d, id) = (d.clone(), *id);
        handles.push(tokio::spawn(async move {
            d.submit(id, vec![i as u8 + 1], "image/jpeg").await
        }));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    assert!(
        results[0].is_ok() && results[1].is_ok(),
        "answered items must succeed: {results:?}"
    );
    for r in &results[2..] {
        match r {
            Err(ClipError::StreamClosed(msg)) => assert!(msg.contains("model crashed"), "{msg}"),
            other => panic!("expected StreamClosed, got {other:?}"),
        }
    }
    let m = d.metrics();
    assert_eq!((m.items_ok, m.items_failed, m.stream_errors), (2, 2, 1));
}

#[tokio::test]
async fn a_submitter_that_gives_up_does_not_break_the_batch() {
    // The server takes 400 ms; one submitter waits only 150 ms (after its item was sent).
    let (state, addr) = start(Mode::Reverse, Duration::from_millis(400)).await;
    let d = Dispatcher::connect(config(&addr, 3, Duration::from_millis(20)))
        .await
        .unwrap();
    let (a, quitter, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (ra, rq, rb) = tokio::join!(
        d.submit(a, vec![1], "image/jpeg"),
        tokio::time::timeout(
            Duration::from_millis(150),
            d.submit(quitter, vec![2], "image/jpeg")
        ),
        d.submit(b, vec![3], "image/jpeg"),
    );
    assert!(rq.is_err(), "the quitter should have timed out");
    assert_eq!(ra.unwrap().embedding.vector, fake_vector(&[1]));
    assert_eq!(rb.unwrap().embedding.vector, fake_vector(&[3]));
    assert_eq!(state.streams.load(Ordering::SeqCst), 1);
    // The dispatcher still works afterwards.
    assert!(
        d.submit(Uuid::new_v4(), vec![4], "image/jpeg")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_submitter_that_gives_up_before_sending_is_left_out() {
    let (state, addr) = start(Mode::Reverse, Duration::ZERO).await;
    let d = Dispatcher::connect(config(&addr, 4, Duration::from_millis(300)))
        .await
        .unwrap();
    let quitter = Uuid::new_v4();
    let (rq, ra) = tokio::join!(
        tokio::time::timeout(
            Duration::from_millis(50),
            d.submit(quitter, vec![9], "image/jpeg")
        ),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            d.submit(Uuid::new_v4(), vec![1], "image/jpeg").await
        },
    );
    assert!(rq.is_err());
    assert!(ra.is_ok());
    let seen = state.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|s| !s.correlation_id.starts_with(&quitter.to_string())),
        "an abandoned item was still sent"
    );
    assert_eq!(d.metrics().items_sent, 1);
}

#[tokio::test]
async fn the_same_asset_twice_goes_into_separate_batches() {
    let (state, addr) = start(Mode::Reverse, Duration::ZERO).await;
    let d = Dispatcher::connect(config(&addr, 4, Duration::from_millis(100)))
        .await
        .unwrap();
    let id = Uuid::new_v4();
    let (r1, r2) = tokio::join!(
        d.submit(id, vec![1], "image/jpeg"),
        d.submit(id, vec![2], "image/jpeg")
    );
    assert!(r1.is_ok() && r2.is_ok());
    assert_eq!(state.streams.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_stalled_server_times_out() {
    let (_state, addr) = start(Mode::Hang, Duration::ZERO).await;
    let mut cfg = config(&addr, 1, LONG_WINDOW);
    cfg.request_timeout = Duration::from_millis(300);
    let d = Dispatcher::connect(cfg).await.unwrap();
    let err = d
        .submit(Uuid::new_v4(), vec![1], "image/jpeg")
        .await
        .unwrap_err();
    assert_eq!(err, ClipError::Timeout(Duration::from_millis(300)));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn an_unreachable_server_gives_unavailable() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let d = Dispatcher::connect(config(
        &format!("127.0.0.1:{port}"),
        2,
        Duration::from_millis(10),
    ))
    .await
    .expect("connect is lazy and succeeds while the server is down");
    let err = d
        .submit(Uuid::new_v4(), vec![1], "image/jpeg")
        .await
        .unwrap_err();
    assert!(matches!(err, ClipError::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(
        err.to_string().contains(&port.to_string()),
        "message names the address: {err}"
    );
    assert!(matches!(
        d.capabilities().await,
        Err(ClipError::Unavailable { .. })
    ));
    assert!(matches!(
        d.embed_text("cat").await,
        Err(ClipError::Unavailable { .. })
    ));
    assert_eq!(d.metrics().stream_errors, 1);
}

#[tokio::test]
async fn capabilities_and_text_embedding() {
    let (_state, addr) = start(Mode::Reverse, Duration::ZERO).await;
    let d = Dispatcher::connect(config(&addr, 8, LONG_WINDOW))
        .await
        .unwrap();
    let caps = d.capabilities().await.unwrap();
    assert_eq!(caps.embedding_dim, Some(4));
    assert_eq!(caps.model_ids, vec!["fake-1".to_owned()]);
    assert_eq!(caps.tasks, vec!["clip_image_embed".to_owned()]);
    d.health().await.unwrap();
    let e = d.embed_text("A").await.unwrap();
    assert_eq!(e.vector, fake_vector(b"A"));
    assert_eq!(e.model_id, "fake-1");
    // Text goes on its own stream, not into a batch.
    assert_eq!(d.metrics().batches_sent, 0);
}

#[tokio::test]
async fn a_bad_address_is_refused_at_connect() {
    let err = Dispatcher::connect(config("http://bad host:1", 8, LONG_WINDOW))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClipError::InvalidAddress { .. }), "{err:?}");
}

#[tokio::test]
async fn a_batch_that_stops_growing_goes_before_its_window() {
    let (_state, addr) = start(Mode::Reverse, Duration::ZERO).await;
    let idle = Duration::from_millis(100);
    let cfg = ClipConfig {
        idle,
        ..config(&addr, 8, LONG_WINDOW)
    };
    let d = Dispatcher::connect(cfg).await.unwrap();
    let started = std::time::Instant::now();
    let results = submit_all(&d, 3).await;
    let elapsed = started.elapsed();
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    assert!(elapsed >= idle, "sent before it was idle: {elapsed:?}");
    assert!(
        elapsed < LONG_WINDOW / 2,
        "waited for the window ({LONG_WINDOW:?}), not the idle time: {elapsed:?}"
    );
    let m = d.metrics();
    assert_eq!((m.batches_sent, m.items_sent), (1, 3), "the three arrived together: one batch");
}
