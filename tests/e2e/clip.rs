//! CLIP through the reference inference server over real gRPC: embeddings
//! and predictions stored, similar-photo and text search, an ML outage that
//! delays CLIP without holding up uploads, the service killed mid-batch, an
//! asset deleted while its batch is in flight, an image the service refuses,
//! and an embedding-dimension mismatch at start-up.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;

use crate::harness::{Infer, Server, TestDb, bin, eventually, files_under, free_port, repo};

async fn embedded(db: &TestDb, asset: &str, within: Duration) -> bool {
    let mut conn = db.conn().await;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM embeddings WHERE asset_id = $1::uuid")
                .bind(asset)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        if n == 1 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The same pixels with different bytes: a comment after the end of the image.
fn near_copy(jpeg: &[u8]) -> Vec<u8> {
    let mut v = jpeg.to_vec();
    v.extend_from_slice(b"near-duplicate");
    v
}

/// The real server with the default pipeline and CLIP sent to
/// 127.0.0.1:`port` (up or not), batches waiting at most `window_ms`.
async fn server_with_ml_at(db: &TestDb, port: u16, window_ms: u64) -> Server {
    let addr = format!("http://127.0.0.1:{port}");
    let window = window_ms.to_string();
    Server::start_with(
        db,
        &repo().join("pipeline.toml"),
        &[("ML_SERVICE_ADDR", addr.as_str()), ("LUMILIO_CLIP_WINDOW_MS", window.as_str())],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_predictions_similar_and_search() {
    let db = TestDb::new().await;
    db.migrate();
    let port = free_port();
    let _infer = Infer::start_on(port);
    let server = server_with_ml_at(&db, port, 200).await;
    let a = testdata::read("jpg/orientation/landscape_6.jpg");
    let other = testdata::read("jpg/gps/DSCN0010.jpg");
    let mut ids = Vec::new();
    for (name, bytes) in [
        ("a.jpg", a.clone()),
        ("other.jpg", other),
        ("a-copy.jpg", near_copy(&a)),
    ] {
        let (code, up) = server.upload(name, bytes, "image/jpeg").await;
        assert_eq!(code, 201, "{up}");
        ids.push(up["asset_id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        assert_eq!(server.wait_done(id).await["status"], "ready");
        assert!(
            embedded(&db, id, Duration::from_secs(30)).await,
            "no embedding for {id}:\n{}",
            server.log_text()
        );
    }
    let mut conn = db.conn().await;
    let (dims, model): (i32, String) = sqlx::query_as(
        "SELECT vector_dims(embedding), model_id FROM embeddings WHERE asset_id = $1::uuid",
    )
    .bind(&ids[0])
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(dims, 512);
    assert!(model.starts_with("lumilio-infer"), "{model}");

    let (_, view) = server.get(&format!("/api/v1/assets/{}", ids[0])).await;
    assert!(
        !view["predictions"].as_array().unwrap().is_empty(),
        "{view}"
    );
    assert!(view["predictions"][0]["source"].as_str().is_some());
    let near: Vec<&Value> = view["near_duplicates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["asset_id"])
        .collect();
    assert_eq!(
        near,
        [&json!(ids[2])],
        "the re-saved copy is a near-duplicate, the other photo is not: {view}"
    );

    let (code, similar) = server
        .get(&format!("/api/v1/assets/{}/similar", ids[0]))
        .await;
    assert_eq!(code, 200, "{similar}");
    let results = similar["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{similar}");
    assert_eq!(
        results[0]["asset_id"],
        ids[2].as_str(),
        "its near-duplicate first"
    );
    assert!(results[0]["distance"].as_f64().unwrap() < results[1]["distance"].as_f64().unwrap());

    let r = server
        .client()
        .post(format!("{}/api/v1/search", server.base))
        .json(&json!({ "query": "grey brown dark", "limit": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let page: Value = r.json().await.unwrap();
    // Colours these photos have: ranked, and paged. (A colour they lack, such
    // as "blue sky", ranks none of them: `unranked`, see web::search_says_when_it_is_not_semantic.)
    assert_eq!(page["semantic"], false, "{page}");
    assert_eq!(page["results"].as_array().unwrap().len(), 2, "{page}");
    assert!(
        page["next_cursor"].is_string(),
        "three assets, two per page: {page}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ml_outage_delays_clip_but_not_uploads() {
    let db = TestDb::new().await;
    db.migrate();
    let port = free_port();
    let server = server_with_ml_at(&db, port, 100).await;
    let jpeg = testdata::read("jpg/gps/DSCN0010.jpg");
    let (_, up) = server.upload("gps.jpg", jpeg, "image/jpeg").await;
    let id = up["asset_id"].as_str().unwrap().to_owned();
    assert_eq!(
        server.wait_done(&id).await["status"],
        "ready",
        "the asset is ready while ML is down"
    );

    // The process_clip job fails and is scheduled for a retry.
    let mut conn = db.conn().await;
    until(Duration::from_secs(30), "process_clip failed while ML was down", &server, async || {
        let errors: Option<i32> = sqlx::query_scalar(
            "SELECT coalesce(array_length(errors, 1), 0) FROM river_job WHERE kind = 'process_clip'",
        )
        .fetch_optional(&mut conn)
        .await
        .unwrap();
        errors.unwrap_or(0) >= 1
    })
    .await;
    assert!(!embedded(&db, &id, Duration::from_millis(10)).await);

    let _infer = Infer::start_on(port);
    assert!(
        embedded(&db, &id, Duration::from_secs(45)).await,
        "CLIP did not complete after ML came back:\n{}",
        server.log_text()
    );
    let state: String =
        sqlx::query_scalar("SELECT state::text FROM river_job WHERE kind = 'process_clip'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(state, "completed");
}

/// One counter of the host's `/metrics`.
async fn metric(server: &Server, name: &str) -> f64 {
    let text = server.metrics().await;
    Server::sample(&text, name).unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// Polls `f` every 100 ms until it holds, for at most `within`; a timeout
/// shows `what` (what was awaited) and the server's log.
async fn until(within: Duration, what: &str, server: &Server, mut f: impl AsyncFnMut() -> bool) {
    let every = Duration::from_millis(100);
    let log = || format!("{what}:\n{}", server.log_text());
    eventually(within, every, async || f().await.then_some(()), log).await
}

#[tokio::test(flavor = "multi_thread")]
async fn infer_killed_mid_batch_then_every_item_retries_and_completes() {
    let db = TestDb::new().await;
    db.migrate();
    let port = free_port();
    let logs = tempfile::tempdir().unwrap();
    let infer_log = logs.path().join("infer.log");
    // A batch takes 5 s: long enough to be surely in flight at the kill.
    let mut infer = Infer::start_logged(port, &["--batch-cost-ms", "5000"], &infer_log);
    let server = server_with_ml_at(&db, port, 300).await;
    let photos = [
        "jpg/gps/DSCN0010.jpg",
        "jpg/orientation/landscape_6.jpg",
        "jpg/Canon_40D.jpg",
        "jpg/Nikon_D70.jpg",
    ];
    let mut ids = Vec::new();
    for p in photos {
        let (code, up) = server.upload(p, testdata::read(p), "image/jpeg").await;
        assert_eq!(code, 201, "{up}");
        ids.push(up["asset_id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        assert_eq!(server.wait_done(id).await["status"], "ready");
    }

    // In flight: a batch was sent, nothing came back, nothing failed yet.
    until(Duration::from_secs(30), "a CLIP batch sent", &server, || async {
        metric(&server, "lumilio_clip_batches_total").await >= 1.0
    })
    .await;
    let mut conn = db.conn().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM embeddings")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, 0, "the batch must still be in flight at the kill");
    assert_eq!(metric(&server, "lumilio_clip_items_failed_total").await, 0.0);
    let in_flight = metric(&server, "lumilio_clip_items_total").await;
    assert!(in_flight >= 1.0);
    let running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM river_job WHERE kind = 'process_clip' AND state = 'running'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(running >= 1, "process_clip jobs wait on the batch");
    let log = std::fs::read_to_string(&infer_log).unwrap();
    assert!(!log.contains("group answered"), "answered before the kill:\n{log}");
    infer.kill9();
    let killed = Instant::now();

    // The broken stream fails exactly the items that were in it.
    until(Duration::from_secs(20), "the killed batch's items failed", &server, || async {
        metric(&server, "lumilio_clip_items_failed_total").await >= in_flight
    })
    .await;
    drop(infer);
    let _infer = Infer::start_logged(port, &[], &infer_log);
    let restarted = Instant::now();
    until(Duration::from_secs(60), "CLIP complete after the restart", &server, || {
        let url = db.url.clone();
        async move {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM river_job WHERE kind = 'process_clip' AND state = 'completed'",
            )
            .fetch_one(&mut c)
            .await
            .unwrap();
            n == 4
        }
    })
    .await;
    println!(
        "infer kill -9 mid-batch: {in_flight} items in flight; all 4 embedded {:.1} s after the restart ({:.1} s after the kill)",
        restarted.elapsed().as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    // Exactly once per asset: one embedding, one set of predictions, and the
    // in-flight items completed on a later attempt.
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT a.id::text,
                (SELECT count(*) FROM embeddings e WHERE e.asset_id = a.id),
                (SELECT count(*) FROM predictions p WHERE p.asset_id = a.id),
                (SELECT count(DISTINCT p.label) FROM predictions p WHERE p.asset_id = a.id)
         FROM assets a ORDER BY a.id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    for (id, emb, preds, distinct) in &rows {
        assert_eq!(*emb, 1, "{id}: one embedding");
        assert!(*preds >= 1 && preds == distinct, "{id}: predictions stored once ({preds} rows, {distinct} labels)");
    }
    let retried: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM river_job WHERE kind = 'process_clip' AND attempt >= 2
           AND coalesce(array_length(errors, 1), 0) >= 1",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(
        retried as f64 >= in_flight,
        "every item of the killed batch completed on a later attempt ({retried} of {in_flight})"
    );
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM river_job WHERE kind = 'process_clip'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(jobs, 4, "one process_clip job per asset");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_asset_deleted_while_its_batch_is_in_flight_completes_its_job() {
    let db = TestDb::new().await;
    db.migrate();
    let port = free_port();
    let logs = tempfile::tempdir().unwrap();
    // A batch takes 3 s: the delete surely lands while it is in flight.
    let _infer = Infer::start_logged(port, &["--batch-cost-ms", "3000"], &logs.path().join("infer.log"));
    let server = server_with_ml_at(&db, port, 100).await;
    let p = "jpg/gps/DSCN0010.jpg";
    let (code, up) = server.upload(p, testdata::read(p), "image/jpeg").await;
    assert_eq!(code, 201, "{up}");
    let id = up["asset_id"].as_str().unwrap().to_owned();
    assert_eq!(server.wait_done(&id).await["status"], "ready");
    until(Duration::from_secs(30), "a CLIP batch sent", &server, || async {
        metric(&server, "lumilio_clip_batches_total").await >= 1.0
    })
    .await;
    assert_eq!(server.delete(&format!("/api/v1/assets/{id}")).await, 204);
    let mut conn = db.conn().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (job_state, errors) = loop {
        let (s, e): (String, i64) = sqlx::query_as(
            "SELECT state::text, coalesce(array_length(errors, 1), 0)::int8 FROM river_job WHERE kind = 'process_clip'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if s != "running" && s != "available" || Instant::now() > deadline {
            break (s, e);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The fault landed: the answer came back for an asset that was gone.
    assert!(
        server.log_text().contains("asset deleted during CLIP"),
        "the delete did not land while the batch was in flight:\n{}",
        server.log_text()
    );
    assert_eq!((job_state.as_str(), errors), ("completed", 0), "completed, not retried:\n{}", server.log_text());
    for table in ["embeddings", "predictions"] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 0, "nothing saved in {table} for a deleted asset");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_the_service_refuses_is_not_retried() {
    let db = TestDb::new().await;
    db.migrate();
    let port = free_port();
    // ML down at first, so the job is still waiting when the rendition is spoilt.
    let server = server_with_ml_at(&db, port, 100).await;
    let (_, up) = server
        .upload("gps.jpg", testdata::read("jpg/gps/DSCN0010.jpg"), "image/jpeg")
        .await;
    let id = up["asset_id"].as_str().unwrap().to_owned();
    assert_eq!(server.wait_done(&id).await["status"], "ready");
    let url = db.url.clone();
    let errors = move || {
        let url = url.clone();
        async move {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            let row: (String, i16, i32, String) = sqlx::query_as(
                "SELECT state::text, attempt, coalesce(array_length(errors, 1), 0),
                        coalesce(errors[array_length(errors, 1)]->>'error', '')
                 FROM river_job WHERE kind = 'process_clip'",
            )
            .fetch_one(&mut c)
            .await
            .unwrap();
            row
        }
    };
    until(Duration::from_secs(30), "process_clip failed while ML was down", &server, || {
        let e = errors.clone();
        async move { e().await.2 >= 1 }
    })
    .await;
    // The clip rendition becomes bytes no decoder accepts.
    let clip = files_under(&server.data.path().join("storage"))
        .into_iter()
        .find(|p| p.ends_with("clip"))
        .expect("a clip rendition in storage");
    std::fs::write(&clip, b"not an image at all").unwrap();

    let _infer = Infer::start_on(port);
    until(Duration::from_secs(45), "process_clip cancelled", &server, || {
        let e = errors.clone();
        async move { e().await.0 == "cancelled" }
    })
    .await;
    let (_, attempt, _, last) = errors().await;
    assert!(
        last.contains("INVALID_ARGUMENT") && last.contains("not retried"),
        "the recorded error carries the service's reason: {last}"
    );
    println!("refused by the service: attempt {attempt}: {last}");
    // It stays cancelled: no further attempt, no embedding.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (state, again, _, _) = errors().await;
    assert_eq!((state.as_str(), again), ("cancelled", attempt));
    assert!(!embedded(&db, &id, Duration::from_millis(10)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn embedding_dimension_mismatch_at_start_up_is_refused() {
    let db = TestDb::new().await;
    db.migrate();
    // The dimension the host checks against is the column's.
    let mut conn = db.conn().await;
    let column: i32 = sqlx::query_scalar(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'embeddings'::regclass AND attname = 'embedding'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(column, 512);

    let port = free_port();
    let logs = tempfile::tempdir().unwrap();
    let _infer = Infer::start_logged(port, &["--embedding-dim", "768"], &logs.path().join("infer.log"));
    // Wait until it listens, so the host surely asks it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "lumilio-infer did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(bin())
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("LUMILIO_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("LUMILIO_PIPELINE", repo().join("pipeline.toml"))
        .env("STAGING_PATH", data.path().join("staging"))
        .env("STORAGE_PATH", data.path().join("storage"))
        .env("LUMILIO_CACHE_PATH", repo().join("target/e2e-cache"))
        .env("ML_SERVICE_ADDR", format!("http://127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("lumilio serve did not refuse the 768-dimensional service within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("makes 768-dimensional embeddings, but the database stores 512")
            && stderr.contains("point ML_SERVICE_ADDR at a service with 512-dimensional embeddings"),
        "the message says what to change:\n{stderr}"
    );
}
