//! Hostile input, crashes and faults against the real binary and database:
//! every case ends in a clear JSON error or a final asset state, nothing
//! half-stored, nothing lost.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgConnection;

use crate::harness::{Proxy, Server, TestDb, files_under, repo};

async fn count(conn: &mut PgConnection, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header claims 100000×100000 pixels: 40 GB decoded.
fn png_bomb() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let chunk = |png: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

/// A zip of 200 MB of zeros (about 200 KB on the wire).
fn zip_bomb() -> Vec<u8> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import io,sys,zipfile\nb=io.BytesIO()\nz=zipfile.ZipFile(b,'w',zipfile.ZIP_DEFLATED)\nz.writestr('zeros.bin',bytes(200*1024*1024))\nz.close()\nsys.stdout.buffer.write(b.getvalue())",
        ])
        .output()
        .expect("python3 makes the zip bomb");
    assert!(out.status.success() && out.stdout.starts_with(b"PK"));
    out.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_and_broken_files_end_rejected_with_a_reason() {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;
    let jpeg = testdata::read("jpg/gps/DSCN0010.jpg");
    let mut cases: Vec<(String, Vec<u8>, bool)> = vec![
        ("bomb.png".into(), png_bomb(), true),
        ("bomb.zip".into(), zip_bomb(), true),
        ("half.jpg".into(), jpeg[..jpeg.len() / 2].to_vec(), true),
    ];
    let mut odd = testdata::files_under("jpg/invalid");
    odd.extend(testdata::files_under("jpg/tests"));
    for p in odd {
        // Odd files may still be images a stage can use; they must end, not crash or stick.
        cases.push((
            p.file_name().unwrap().to_string_lossy().into_owned(),
            std::fs::read(&p).unwrap(),
            false,
        ));
    }
    let mut ids = Vec::new();
    for (name, bytes, _) in &cases {
        let (code, up) = server.upload(name, bytes.clone(), "image/jpeg").await;
        assert!(code == 201 || code == 200, "{name}: {code} {up}");
        ids.push(up["asset_id"].as_str().unwrap().to_owned());
    }
    for ((name, _, must_reject), id) in cases.iter().zip(&ids) {
        let done = server.wait_done(id).await;
        let status = done["status"].as_str().unwrap();
        if *must_reject {
            assert_eq!(status, "rejected", "{name}: {done}");
        } else {
            assert!(
                status == "ready" || status == "rejected",
                "{name} ended {status}: {done}"
            );
        }
        if status == "rejected" {
            let reason = done["reason"].as_str().unwrap_or("");
            assert!(
                reason.contains(": ") && reason.len() > 12,
                "{name}: a reason naming the stage: {reason:?}"
            );
        }
    }
    let (code, _) = server.get("/health").await;
    assert_eq!(code, 200, "the host keeps serving");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_errors_are_clear_and_leave_nothing() {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start_with(
        &db,
        &repo().join("pipeline.toml"),
        &[
            ("LUMILIO_MAX_UPLOAD_BYTES", "1048576"),
            ("LUMILIO_MAX_BATCH_PARTS", "2"),
        ],
    )
    .await;
    let staging = server.data.path().join("staging");
    let url = format!("{}/api/v1/assets", server.base);

    // Over the limit: 413, and the bytes are gone.
    let (code, body) = server
        .upload("big.jpg", vec![0xAB; 3 << 20], "image/jpeg")
        .await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_large");

    // Too many parts in a batch: 400, with the parts before the limit reported.
    let part = |b: &[u8]| reqwest::multipart::Part::bytes(b.to_vec()).file_name("x.jpg");
    let (a, b, c) = (b"one".as_slice(), b"two".as_slice(), b"three".as_slice());
    let h = |b: &[u8]| blake3::hash(b).to_hex().to_string();
    let form = reqwest::multipart::Form::new()
        .part(h(a), part(a))
        .part(h(b), part(b))
        .part(h(c), part(c));
    let r = server
        .client()
        .post(format!("{url}/batch"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_parts", "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 2);

    // A content type that lies: validate decides.
    let jpeg = testdata::read("jpg/gps/DSCN0010.jpg");
    let (_, up) = server.upload("photo.txt", jpeg.clone(), "text/plain").await;
    let done = server.wait_done(up["asset_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "ready", "{done}");
    assert_eq!(done["content_type"], "image/jpeg");

    // Hostile names are sanitised and never become paths.
    for (raw, stored) in [
        ("../../etc/passwd", "passwd"),
        ("/abs/evil.jpg", "evil.jpg"),
    ] {
        let mut bytes = jpeg.clone();
        bytes.extend_from_slice(raw.as_bytes()); // distinct bytes, so no dedup
        let (code, up) = server.upload(raw, bytes, "image/jpeg").await;
        assert_eq!(code, 201, "{raw}: {up}");
        assert_eq!(up["file_name"], stored);
    }
    // Control characters cannot appear in a part header at all: a clear 400.
    // (The sanitiser's handling of NUL and control characters is unit-tested.)
    let (code, body) = server
        .upload("a\u{1}b\u{7f}c.jpg", jpeg.clone(), "image/jpeg")
        .await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (400, Some("bad_multipart")),
        "{body}"
    );
    let long = "x".repeat(10_000) + ".jpg";
    let mut bytes = jpeg.clone();
    bytes.push(b'!');
    let (code, up) = server.upload(&long, bytes, "image/jpeg").await;
    assert_eq!(code, 201);
    assert!(up["file_name"].as_str().unwrap().len() <= 255);
    assert!(!Path::new("/etc/passwd.jpg").exists());

    // The connection drops mid-file: nothing is kept.
    let mut raw = std::net::TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    let head = format!(
        "POST /api/v1/assets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 1000000\r\n\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.jpg\"\r\n\r\n",
        server.key
    );
    raw.write_all(head.as_bytes()).unwrap();
    raw.write_all(&jpeg[..jpeg.len() / 2]).unwrap();
    drop(raw);

    // Everything settles: no staged leftovers, no rows for refused uploads.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = server.get("/api/v1/assets?status=processing").await;
        let left = files_under(&staging);
        if list["assets"].as_array().unwrap().is_empty() && left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "staging not empty: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut conn = db.conn().await;
    // 2 batch parts + the lying one + 3 hostile names; nothing for the 413, the
    // 3rd part, the control characters or the cut upload.
    assert_eq!(count(&mut conn, "SELECT count(*) FROM assets").await, 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn database_outage_answers_503_and_recovers() {
    let db = TestDb::new().await;
    db.migrate();
    let proxy = Proxy::start(&db.url).await;
    let server =
        Server::start_at(&proxy.url(&db.url), &db, &repo().join("pipeline.toml"), &[]).await;
    let jpeg = testdata::read("jpg/gps/DSCN0010.jpg");

    proxy.set_down(true);
    let part = || reqwest::multipart::Part::bytes(jpeg.clone()).file_name("gps.jpg");
    // The key check needs the database too: either way the answer is 503 with Retry-After.
    let r = server
        .client()
        .post(format!("{}/api/v1/assets", server.base))
        .multipart(reqwest::multipart::Form::new().part("file", part()))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
    let (code, _) = server.get("/health").await;
    assert_eq!(code, 503);
    assert!(
        files_under(&server.data.path().join("staging")).is_empty(),
        "nothing half-stored"
    );

    proxy.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let (code, up) = server.upload("gps.jpg", jpeg.clone(), "image/jpeg").await;
        if code == 201 {
            break up["asset_id"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after the outage: {code} {up}\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        server.wait_done(&id).await["status"],
        "ready",
        "jobs resume"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_within_bounds() {
    let db = TestDb::new().await;
    db.migrate();
    let mut server = Server::start(&db).await;
    let jpeg = testdata::read("jpg/gps/DSCN0010.jpg");
    let (_, up) = server.upload("gps.jpg", jpeg, "image/jpeg").await;
    let status = server
        .terminate(Duration::from_secs(40))
        .expect("exits within 40 s of SIGTERM");
    assert!(
        status.success(),
        "clean exit: {status:?}\n{}",
        server.log_text()
    );
    assert!(server.log_text().contains("shutdown signal received"));
    // The accepted upload survives: it is finished, or finishes after a restart.
    server.restart().await;
    let done = server.wait_done(up["asset_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "ready");
}

/// The kill -9 loop: `LUMILIO_SOAK_UPLOADS` uploads (default 200) in
/// `LUMILIO_SOAK_KILLS` rounds (default 10), each ended by a kill while jobs
/// run, with default rescue settings: each restart takes its jobs back.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_while_jobs_run_loses_and_duplicates_nothing() {
    let uploads: usize = std::env::var("LUMILIO_SOAK_UPLOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let kills: usize = std::env::var("LUMILIO_SOAK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let db = TestDb::new().await;
    db.migrate();
    let env = [
        ("LUMILIO_PROCESS_ASSET_WORKERS", "2"),
        ("LUMILIO_STALE_UPLOAD_SECS", "1"),
    ];
    let mut server = Server::start_with(&db, &repo().join("pipeline.toml"), &env).await;
    let base: Vec<Vec<u8>> = ["jpg/gps/DSCN0010.jpg", "jpg/orientation/landscape_6.jpg"]
        .iter()
        .map(|n| testdata::read(n))
        .collect();
    let mut conn = db.conn().await;
    let mut accepted = Vec::new();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut killed_running = 0;
    for round in 0..kills {
        let upto = uploads * (round + 1) / kills;
        while accepted.len() < upto {
            let i = accepted.len();
            let mut bytes = base[i % base.len()].clone();
            bytes.extend_from_slice(format!("soak-{i}").as_bytes());
            let (code, up) = server
                .upload(&format!("p{i}.jpg"), bytes, "image/jpeg")
                .await;
            assert_eq!(code, 201, "{up}");
            accepted.push(up["asset_id"].as_str().unwrap().to_owned());
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(seed % 300)).await;
        server.kill9();
        killed_running += count(
            &mut conn,
            "SELECT count(*) FROM river_job WHERE kind = 'process_asset' AND state = 'running'",
        )
        .await;
        server.restart().await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart().await; // sweeps parts left by the kills

    let deadline = Instant::now() + Duration::from_secs(180);
    while count(
        &mut conn,
        "SELECT count(*) FROM assets WHERE status = 'processing'",
    )
    .await
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "assets still processing after 180 s:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM assets").await,
        uploads as i64,
        "nothing lost, nothing extra"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM assets WHERE status = 'ready'"
        )
        .await,
        uploads as i64
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM river_job WHERE kind = 'process_asset' AND state <> 'completed'"
        )
        .await,
        0,
        "no job stuck in running or waiting"
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM renditions").await,
        4 * uploads as i64,
        "no duplicate renditions"
    );
    let stages = std::fs::read_to_string(repo().join("pipeline.toml"))
        .unwrap()
        .matches("[[stage]]")
        .count();
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM stage_results").await,
        (stages * uploads) as i64,
        "one result per stage and asset"
    );
    let staging = files_under(&server.data.path().join("staging"));
    assert!(staging.is_empty(), "staged leftovers: {staging:?}");
    let originals = files_under(&server.data.path().join("storage/originals"));
    assert_eq!(originals.len(), uploads, "one original per upload");
    // The faults landed: kills caught jobs running, and later attempts finished them.
    let taken_back = count(
        &mut conn,
        "SELECT count(*) FROM river_job WHERE kind = 'process_asset' AND attempt > 1
           AND errors[1]->>'error' LIKE '%restart took the job back%'",
    )
    .await;
    assert!(killed_running > 0, "no kill caught a job running");
    assert!(taken_back > 0, "no interrupted job was taken back and finished");
    eprintln!(
        "soak: {uploads} uploads, {kills} kills, {killed_running} jobs running at the kills, \
         {taken_back} taken back and finished, 0 lost, 0 duplicated"
    );
}
