//! Round trip over loopback: a client talks to the real service.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lumilio_infer::pb::inference_client::InferenceClient;
use lumilio_infer::pb::{Empty, ErrorCode, InferRequest};
use lumilio_infer::service::{self, Options};
use tokio::sync::oneshot;

/// A small JPEG, generated so the test needs no files.
fn jpeg(rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_fn(96, 64, |x, y| {
        image::Rgb([
            rgb[0].saturating_add((x / 4) as u8),
            rgb[1],
            rgb[2].saturating_add((y / 4) as u8),
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode_image(&img)
        .unwrap();
    out
}

/// Starts the server on 127.0.0.1:0; returns its URL and a shutdown trigger.
async fn start(opts: Options) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        service::serve(listener, opts, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (format!("http://{addr}"), stop, task)
}

fn request(
    cid: &str,
    task: &str,
    payload: Vec<u8>,
    mime: &str,
    seq: u64,
    total: u64,
) -> InferRequest {
    InferRequest {
        correlation_id: cid.to_owned(),
        task: task.to_owned(),
        payload,
        meta: HashMap::from([("topk".to_owned(), "3".to_owned())]),
        payload_mime: mime.to_owned(),
        seq,
        total,
        offset: 0,
    }
}

#[tokio::test]
async fn infer_round_trip_over_loopback() {
    let opts = Options {
        batch_cost: Duration::from_millis(50),
        item_cost: Duration::from_millis(5),
        ..Options::default()
    };
    let (url, stop, task) = start(opts).await;
    let mut client = InferenceClient::connect(url).await.unwrap();

    client.health(Empty {}).await.unwrap();
    let cap = client
        .get_capabilities(Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cap.service_name, "lumilio-infer");
    assert_eq!(
        cap.model_ids,
        vec!["lumilio-infer/colour-layout-v1".to_owned()]
    );
    assert_eq!(
        cap.extra.get("embedding_dim").map(String::as_str),
        Some("512")
    );
    assert!(
        cap.runtime.contains("not a neural CLIP model"),
        "{}",
        cap.runtime
    );
    let names: Vec<&str> = cap.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["clip_image_embed", "smart_classify", "clip_embed"]);

    let blue = jpeg([20, 60, 200]);
    let reqs = vec![
        request(
            "a|emb",
            "clip_image_embed",
            blue.clone(),
            "image/jpeg",
            0,
            6,
        ),
        request("a|smart", "smart_classify", blue, "image/jpeg", 1, 6),
        request(
            "b|emb",
            "clip_image_embed",
            b"not an image".to_vec(),
            "image/jpeg",
            2,
            6,
        ),
        request(
            "b|smart",
            "smart_classify",
            b"not an image".to_vec(),
            "image/jpeg",
            3,
            6,
        ),
        request("q|text", "clip_embed", b"blue".to_vec(), "text/plain", 4, 6),
        request("z|what", "segment_everything", vec![1], "image/jpeg", 5, 6),
    ];
    let started = Instant::now();
    let mut stream = client
        .infer(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut answers = Vec::new();
    while let Some(msg) = stream.message().await.unwrap() {
        answers.push(msg);
    }
    // The cost model: 50 ms per stream + 6 × 5 ms per request.
    assert!(
        started.elapsed() >= Duration::from_millis(80),
        "cost model not applied: {:?}",
        started.elapsed()
    );
    assert_eq!(answers.len(), 6);
    // Answered out of order: smart before emb.
    let order: Vec<&str> = answers.iter().map(|a| a.correlation_id.as_str()).collect();
    assert!(
        order.iter().position(|c| *c == "a|smart") < order.iter().position(|c| *c == "a|emb"),
        "{order:?}"
    );
    let by_id: HashMap<&str, _> = answers
        .iter()
        .map(|a| (a.correlation_id.as_str(), a))
        .collect();

    let emb = by_id["a|emb"];
    assert!(emb.error.is_none() && emb.is_final);
    assert_eq!(emb.result_mime, "application/json;schema=embedding_v1");
    let json: serde_json::Value = serde_json::from_slice(&emb.result).unwrap();
    assert_eq!(json["dim"], 512);
    assert_eq!(json["vector"].as_array().unwrap().len(), 512);
    assert_eq!(json["model_id"], "lumilio-infer/colour-layout-v1");
    let image_vec: Vec<f32> = serde_json::from_value(json["vector"].clone()).unwrap();

    let smart = by_id["a|smart"];
    assert_eq!(smart.result_mime, "application/json;schema=labels_v1");
    assert_eq!(
        smart.meta.get("source").map(String::as_str),
        Some("lumilio-infer-stats")
    );
    let json: serde_json::Value = serde_json::from_slice(&smart.result).unwrap();
    let labels = json["labels"].as_array().unwrap();
    assert!(!labels.is_empty() && labels.len() <= 3, "{labels:?}");
    assert!(labels.iter().any(|l| l["label"] == "blue"), "{labels:?}");

    for bad in ["b|emb", "b|smart", "z|what"] {
        let err = by_id[bad]
            .error
            .as_ref()
            .unwrap_or_else(|| panic!("{bad} should fail"));
        assert_eq!(err.code, ErrorCode::InvalidArgument as i32, "{bad}");
        assert!(!err.message.is_empty());
    }

    let text = by_id["q|text"];
    let json: serde_json::Value = serde_json::from_slice(&text.result).unwrap();
    let text_vec: Vec<f32> = serde_json::from_value(json["vector"].clone()).unwrap();
    assert!(lumilio_infer::descriptor::cosine(&text_vec, &image_vec) > 0.3);

    // Graceful shutdown: the server stops when asked.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("server stopped")
        .unwrap();
}

#[tokio::test]
async fn streams_without_a_total_are_answered() {
    let (url, _stop, _task) = start(Options::default()).await;
    let mut client = InferenceClient::connect(url).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = client
        .infer(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // The request side stays open: the server answers after a short pause anyway.
    tx.send(request(
        "t|text",
        "clip_embed",
        b"red".to_vec(),
        "text/plain",
        0,
        0,
    ))
    .await
    .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("answered without end of stream")
        .unwrap()
        .unwrap();
    assert_eq!(msg.correlation_id, "t|text");
    assert!(msg.error.is_none());
    drop(tx);
}
