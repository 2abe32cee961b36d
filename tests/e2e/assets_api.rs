//! The upload API and the asset lifecycle: batch, verified hashes, dedup,
//! storage, retrieval, reprocess, delete, jobs, OpenAPI.

use reqwest::header;
use serde_json::{Value, json};

use crate::harness::{Server, TestDb, eventually};


fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

async fn started() -> (TestDb, Server) {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;
    (db, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn client_hash_is_verified() {
    let (db, server) = started().await;
    let jpeg = testdata::read("jpg/gps/DSCN0010.jpg");
    let client = server.client();
    let form = || {
        reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(jpeg.clone()).file_name("gps.jpg"),
        )
    };
    let wrong = "0".repeat(64);
    let r = client
        .post(format!("{}/api/v1/assets", server.base))
        .header("X-Content-Hash", &wrong)
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "hash_mismatch", "{body}");
    let mut conn = db.conn().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM assets")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 0, "a mismatched upload keeps nothing");
    let staged = walk(&server.data.path().join("staging"));
    assert!(staged.is_empty(), "no staged bytes left: {staged:?}");

    let r = client
        .post(format!("{}/api/v1/assets", server.base))
        .header("X-Content-Hash", hash(&jpeg).to_uppercase())
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_reports_each_part_and_check_finds_them() {
    let (_db, server) = started().await;
    let a = testdata::read("jpg/gps/DSCN0010.jpg");
    let b = testdata::read("jpg/orientation/landscape_6.jpg");
    let form = reqwest::multipart::Form::new()
        .part(
            hash(&a),
            reqwest::multipart::Part::bytes(a.clone()).file_name("a.jpg"),
        )
        .part(
            "f".repeat(64),
            reqwest::multipart::Part::bytes(b.clone()).file_name("lies.jpg"),
        )
        .part(
            "not-a-hash",
            reqwest::multipart::Part::bytes(b.clone()).file_name("bad.jpg"),
        )
        .part(
            hash(&b),
            reqwest::multipart::Part::bytes(b.clone()).file_name("b.jpg"),
        )
        .part(
            hash(&a),
            reqwest::multipart::Part::bytes(a.clone()).file_name("again.jpg"),
        );
    let r = server
        .client()
        .post(format!("{}/api/v1/assets/batch", server.base))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 5, "{body}");
    assert_eq!(results[0]["success"], true);
    assert!(results[0]["task_id"].as_i64().is_some());
    assert_eq!(results[0]["size"], a.len());
    assert_eq!(results[1]["success"], false);
    assert_eq!(results[1]["error"]["code"], "hash_mismatch");
    assert_eq!(results[2]["error"]["code"], "bad_hash");
    assert_eq!(results[3]["success"], true);
    assert_eq!(results[3]["file_name"], "b.jpg");
    assert_eq!(results[4]["status"], "duplicate");
    assert_eq!(results[4]["asset_id"], results[0]["asset_id"]);

    let unknown = "a".repeat(64);
    let r = server
        .client()
        .post(format!("{}/api/v1/assets/check", server.base))
        .json(&json!({ "hashes": [hash(&a), unknown, hash(&b)] }))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["existing"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(body["missing"], json!([unknown]));
}

#[tokio::test(flavor = "multi_thread")]
async fn processed_asset_serves_original_renditions_and_job() {
    let (db, server) = started().await;
    let jpeg = testdata::read("jpg/orientation/landscape_6.jpg");
    let (code, up) = server
        .upload("landscape_6.jpg", jpeg.clone(), "image/jpeg")
        .await;
    assert_eq!(code, 201);
    let id = up["asset_id"].as_str().unwrap();
    let done = server.wait_done(id).await;
    assert_eq!(done["status"], "ready", "{done}\n{}", server.log_text());

    // Facts: typed and complete.
    assert_eq!(done["facts"]["orientation"], 6, "{done}");
    let stages: Vec<&str> = done["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["validate", "metadata", "places", "thumbnail"]);
    assert!(
        done["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["outcome"] == "ok"),
        "{done}"
    );
    let renditions = done["renditions"].as_array().unwrap();
    let names: Vec<&str> = renditions
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for want in ["small", "medium", "large", "clip"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let mut conn = db.conn().await;
    let orientation: Option<i16> =
        sqlx::query_scalar("SELECT orientation FROM assets WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(orientation, Some(6));

    // Original: bytes, type, ETag, conditional and range requests.
    let client = server.client();
    let url = format!("{}/api/v1/assets/{id}/original", server.base);
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "image/jpeg");
    let etag = r.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", hash(&jpeg)));
    assert_eq!(r.bytes().await.unwrap().as_ref(), jpeg.as_slice());
    let r = client
        .get(&url)
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 304);
    let r = client
        .get(&url)
        .header(header::RANGE, "bytes=2-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(
        r.headers()[header::CONTENT_RANGE],
        format!("bytes 2-9/{}", jpeg.len())
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &jpeg[2..10]);
    let r = client
        .get(&url)
        .header(header::RANGE, format!("bytes={}-", jpeg.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 416);

    // Renditions: a JPEG within its box, upright: the file stores 450×600
    // pixels with orientation 6, which shows them as a 600×450 landscape.
    let r = client
        .get(format!(
            "{}/api/v1/assets/{id}/renditions/small",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "image/jpeg");
    let etag = r.headers()[header::ETAG].to_str().unwrap().to_owned();
    let small = r.bytes().await.unwrap();
    assert_eq!(&small[..3], &[0xFF, 0xD8, 0xFF]);
    let meta = renditions.iter().find(|r| r["name"] == "small").unwrap();
    assert_eq!(meta["size"], small.len());
    assert!(meta["width"].as_i64().unwrap() <= 400 && meta["height"].as_i64().unwrap() <= 400);
    assert_eq!(
        (meta["width"].as_i64(), meta["height"].as_i64()),
        (Some(400), Some(300)),
        "upright: {meta}"
    );
    assert_eq!(
        (done["width"].as_i64(), done["height"].as_i64()),
        (Some(450), Some(600)),
        "as stored: {done}"
    );
    let r = client
        .get(format!(
            "{}/api/v1/assets/{id}/renditions/small",
            server.base
        ))
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 304);
    let (code, _) = server
        .get(&format!("/api/v1/assets/{id}/renditions/nope"))
        .await;
    assert_eq!(code, 404);

    // The job as River sees it.
    let (code, job) = server.get(&format!("/api/v1/jobs/{}", up["task_id"])).await;
    assert_eq!(code, 200, "{job}");
    assert_eq!(job["state"], "completed");
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["kind"], "process_asset");
    let (code, _) = server.get("/api/v1/jobs/999999").await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_pages_and_filters() {
    let (_db, server) = started().await;
    let (_, a) = server.upload("a.jpg", testdata::read("jpg/gps/DSCN0010.jpg"), "image/jpeg").await;
    let (_, t) = server
        .upload("t.txt", b"hello".to_vec(), "text/plain")
        .await;
    let (_, b) = server
        .upload("b.jpg", testdata::read("jpg/orientation/landscape_6.jpg"), "image/jpeg")
        .await;
    for x in [&a, &t, &b] {
        server.wait_done(x["asset_id"].as_str().unwrap()).await;
    }
    let (code, page) = server.get("/api/v1/assets?limit=2").await;
    assert_eq!(code, 200, "{page}");
    let ids: Vec<&Value> = page["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| &x["asset_id"])
        .collect();
    assert_eq!(ids, [&b["asset_id"], &t["asset_id"]], "newest first");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page2) = server
        .get(&format!("/api/v1/assets?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(page2["assets"].as_array().unwrap().len(), 1);
    assert_eq!(page2["assets"][0]["asset_id"], a["asset_id"]);
    assert!(page2["next_cursor"].is_null());

    let (_, ready) = server.get("/api/v1/assets?status=ready").await;
    assert_eq!(ready["assets"].as_array().unwrap().len(), 2);
    let (_, rejected) = server.get("/api/v1/assets?status=rejected").await;
    assert_eq!(rejected["assets"][0]["asset_id"], t["asset_id"]);
    // gps.jpg was taken in 2008, landscape_6.jpg has no date.
    let (_, taken) = server
        .get("/api/v1/assets?taken_from=2008-01-01T00:00:00&taken_to=2009-01-01T00:00:00")
        .await;
    assert_eq!(taken["assets"].as_array().unwrap().len(), 1, "{taken}");
    assert_eq!(taken["assets"][0]["asset_id"], a["asset_id"]);
    let (code, err) = server.get("/api/v1/assets?status=bogus").await;
    assert_eq!(code, 400);
    assert_eq!(err["error"]["code"], "bad_status");
}

#[tokio::test(flavor = "multi_thread")]
async fn reprocess_and_delete() {
    let (db, server) = started().await;
    let jpeg = testdata::read("jpg/gps/DSCN0010.jpg");
    let (_, up) = server.upload("gps.jpg", jpeg.clone(), "image/jpeg").await;
    let id = up["asset_id"].as_str().unwrap().to_owned();
    server.wait_done(&id).await;

    let r = server
        .client()
        .post(format!("{}/api/v1/assets/{id}/reprocess", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let again: Value = r.json().await.unwrap();
    assert_ne!(again["task_id"], up["task_id"]);
    let done = server.wait_done(&id).await;
    assert_eq!(done["status"], "ready", "{done}");
    assert_eq!(done["job_id"], again["task_id"]);
    let mut conn = db.conn().await;
    let renditions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM renditions WHERE asset_id = $1::uuid")
            .bind(&id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        renditions, 4,
        "a reprocess replaces renditions instead of adding rows"
    );

    let stored = walk(&server.data.path().join("storage"));
    assert_eq!(stored.len(), 5, "original + 4 renditions: {stored:?}");
    assert_eq!(server.delete(&format!("/api/v1/assets/{id}")).await, 204);
    let (code, _) = server.get(&format!("/api/v1/assets/{id}")).await;
    assert_eq!(code, 404);
    assert!(
        walk(&server.data.path().join("storage")).is_empty(),
        "files go with the last reference"
    );
    assert_eq!(server.delete(&format!("/api/v1/assets/{id}")).await, 404);
}

/// `lumilio_phase_seconds_total{phase="NAME"}` from a `/metrics` text.
fn phase(metrics: &str, name: &str) -> Option<f64> {
    Server::sample(metrics, &format!("lumilio_phase_seconds_total{{phase=\"{name}\"}}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn phases_report_their_cpu_time_blocking_work_included() {
    let (_db, server) = started().await;
    let (_, up) = server
        .upload("gps.jpg", testdata::read("jpg/gps/DSCN0010.jpg"), "image/jpeg")
        .await;
    let done = server.wait_done(up["asset_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "ready", "{done}");
    // The job's phases are recorded as it returns, just after the asset is ready.
    let text = eventually(
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(50),
        async || {
            let text = server.metrics().await;
            phase(&text, "asset.total.cpu").is_some().then_some(text)
        },
        || "asset.total.cpu in /metrics".into(),
    )
    .await;
    let get = |name: &str| phase(&text, name).unwrap_or_else(|| panic!("no phase {name}: {text}"));
    for name in ["upload.receive.cpu", "upload.record.cpu", "asset.store_renditions.cpu"] {
        assert!(get(name) > 0.0, "{name} is zero");
    }
    // The stages run on a blocking-pool thread: their CPU time reaches the
    // phase that waits for them only if that thread's work is charged to it.
    let (pipeline, stage) = (get("asset.pipeline.cpu"), get("stage.thumbnail.cpu"));
    assert!(stage > 0.0, "the thumbnail stage used no CPU time");
    assert!(pipeline >= stage, "asset.pipeline.cpu {pipeline} < stage.thumbnail.cpu {stage}");
    // One thread's CPU time cannot exceed its wall time; the outer phase holds the inner.
    assert!(pipeline <= get("asset.pipeline") * 1.05, "CPU {pipeline} over wall");
    assert!(get("asset.total.cpu") >= pipeline, "asset.total.cpu under asset.pipeline.cpu");
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_is_served() {
    let (_db, server) = started().await;
    let (code, doc) = server.get("/api/openapi.json").await;
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/assets",
        "/api/v1/assets/batch",
        "/api/v1/assets/{id}/original",
        "/api/v1/jobs/{id}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    let r = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("# TYPE lumilio_jobs gauge") && text.contains("# TYPE lumilio_assets gauge"),
        "{text}"
    );
    let (code, err) = server.get("/no/such/route").await;
    assert_eq!(code, 404);
    assert_eq!(err["error"]["code"], "not_found");
}
