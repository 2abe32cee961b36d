//! Upload → River job → WASM stages → Postgres.

use crate::harness::{Server, TestDb};

#[tokio::test(flavor = "multi_thread")]
async fn jpeg_becomes_ready_and_text_is_rejected() {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;

    let jpeg = testdata::read("jpg/gps/DSCN0010.jpg");
    let (code, up) = server.upload("gps.jpg", jpeg.clone(), "image/jpeg").await;
    assert_eq!(code, 201, "{up}");
    assert_eq!(up["status"], "processing");
    assert_eq!(up["file_name"], "gps.jpg");
    assert_eq!(up["size"], jpeg.len());
    assert_eq!(up["content_hash"], blake3::hash(&jpeg).to_hex().as_str());
    assert!(up["task_id"].as_i64().unwrap() > 0);

    let (code, text) = server
        .upload(
            "notes.txt",
            b"just some text, not a photo\n".to_vec(),
            "text/plain",
        )
        .await;
    assert_eq!(code, 201, "{text}");

    let done = server.wait_done(up["asset_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "ready", "{done}\n{}", server.log_text());
    assert_eq!(done["content_type"], "image/jpeg");
    assert_eq!(done["facts"]["width"], 640, "{done}");

    let done = server.wait_done(text["asset_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "rejected", "{done}");
    let reason = done["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("validate: "),
        "the reason names the stage: {reason}"
    );
    // A rejected file is still kept, as it was sent: the client may have
    // deleted its copy once the upload was accepted.
    let r = server
        .client()
        .get(format!(
            "{}/api/v1/assets/{}/original",
            server.base,
            text["asset_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        &r.bytes().await.unwrap()[..],
        b"just some text, not a photo\n"
    );

    // The job is finished and the staged bytes are gone; the original is stored by hash.
    let staging = server.data.path().join("staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().unwrap().is_file())
        .collect();
    assert!(left.is_empty(), "staged leftovers: {left:?}");
    let hash = up["content_hash"].as_str().unwrap();
    let original = server.data.path().join(format!(
        "storage/originals/{}/{}/{hash}",
        &hash[..2],
        &hash[2..4]
    ));
    assert_eq!(std::fs::read(original).unwrap(), jpeg);
    let mut conn = db.conn().await;
    let state: String = sqlx::query_scalar("SELECT state::text FROM river_job WHERE id = $1")
        .bind(up["task_id"].as_i64().unwrap())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(state, "completed");
}

#[tokio::test(flavor = "multi_thread")]
async fn same_bytes_twice_is_a_duplicate_without_a_job() {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;
    let jpeg = testdata::read("jpg/orientation/landscape_6.jpg");
    let (code, first) = server.upload("a.jpg", jpeg.clone(), "image/jpeg").await;
    assert_eq!(code, 201, "{first}");
    let (code, second) = server.upload("b.jpg", jpeg, "image/jpeg").await;
    assert_eq!(code, 200, "{second}");
    assert_eq!(second["status"], "duplicate");
    assert_eq!(second["asset_id"], first["asset_id"]);
    let mut conn = db.conn().await;
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM river_job")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(jobs, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_json_errors() {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;
    let (code, body) = server.upload("empty.jpg", Vec::new(), "image/jpeg").await;
    assert_eq!(code, 400);
    assert_eq!(body["error"]["code"], "empty_file");
    let (code, body) = server
        .get("/api/v1/assets/00000000-0000-0000-0000-00000000abcd")
        .await;
    assert_eq!(code, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (code, body) = server.get("/api/v1/assets/not-a-uuid").await;
    assert_eq!(code, 404, "{body}");
    let form = reqwest::multipart::Form::new().text("other", "x");
    let r = server
        .client()
        .post(format!("{}/api/v1/assets", server.base))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_file");
}
