//! CLIP through the reference inference server over real gRPC: embeddings
//! and predictions stored, similar-photo and text search, and an ML outage
//! that delays CLIP without holding up uploads.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Infer, Server, TestDb, free_port, repo};

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

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_predictions_similar_and_search() {
    let db = TestDb::new().await;
    db.migrate();
    let port = free_port();
    let _infer = Infer::start_on(port);
    let addr = format!("http://127.0.0.1:{port}");
    let server = Server::start_with(
        &db,
        &repo().join("pipeline.toml"),
        &[
            ("ML_SERVICE_ADDR", addr.as_str()),
            ("LUMILIO_CLIP_WINDOW_MS", "200"),
        ],
    )
    .await;
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
    let addr = format!("http://127.0.0.1:{port}");
    let server = Server::start_with(
        &db,
        &repo().join("pipeline.toml"),
        &[
            ("ML_SERVICE_ADDR", addr.as_str()),
            ("LUMILIO_CLIP_WINDOW_MS", "100"),
        ],
    )
    .await;
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let errors: Option<i32> = sqlx::query_scalar(
            "SELECT coalesce(array_length(errors, 1), 0) FROM river_job WHERE kind = 'process_clip'",
        )
        .fetch_optional(&mut conn)
        .await
        .unwrap();
        if errors.unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "process_clip never failed while ML was down:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
