//! Slow and abusive clients, and racing ones: half-sent headers, bodies that
//! stall, more uploads than a key may run, values too long to echo, and the
//! same bytes uploaded many times at once. Each test first checks that its
//! fault is in place (connections open, a part staged, slots held), then
//! that the server ended it within its limit plus slack.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Server, TestDb, eventually, repo, staging_parts};

/// Time the server is given beyond a configured timeout (timer granularity,
/// a loaded 2-core CI machine).
const SLACK: Duration = Duration::from_secs(4);

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// The `.part` files (uploads in flight) in the server's staging folder.
fn parts(server: &Server) -> Vec<PathBuf> {
    staging_parts(&server.data.path().join("staging"))
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `within`.
async fn wait_for(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let every = Duration::from_millis(20);
    let what = || what.to_owned();
    eventually(within, every, async || cond().then_some(()), what).await
}

/// Reads until the server closes the connection (EOF or reset), at most
/// `within`; returns what was read and when it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Instant::now()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the server kept the connection open past {within:?}; read so far: {}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// Whether the server has closed `stream`, without waiting.
fn closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// A multipart upload of `body` as field `file`, split so that the caller
/// can send the head (request headers, part headers, `sent` bytes of the
/// file) and hold the rest back.
struct RawUpload {
    head: Vec<u8>,
    rest: Vec<u8>,
}

impl RawUpload {
    fn new(key: &str, name: &str, body: &[u8], sent: usize) -> RawUpload {
        let boundary = "lumilio-abuse-boundary";
        let mut multipart = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: image/jpeg\r\n\r\n"
        )
        .into_bytes();
        let split = multipart.len() + sent;
        multipart.extend_from_slice(body);
        multipart.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut head = format!(
            "POST /api/v1/assets HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
            multipart.len()
        )
        .into_bytes();
        let rest = multipart.split_off(split);
        head.extend_from_slice(&multipart);
        RawUpload { head, rest }
    }
}

/// Distinct bytes per `i`, large enough that the head is surely staged.
fn filler(i: usize) -> Vec<u8> {
    let mut v = vec![0xA5u8; 1 << 20];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_headers_are_closed_after_the_header_read_timeout() {
    const CONNECTIONS: usize = 200;
    let timeout = Duration::from_secs(2);
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start_with(
        &db,
        &repo().join("pipeline.toml"),
        &[("LUMILIO_HEADER_READ_TIMEOUT_SECS", "2")],
    )
    .await;
    let started = Instant::now();
    let mut conns = Vec::new();
    for i in 0..CONNECTIONS {
        let mut s = TcpStream::connect(addr(&server)).await.unwrap();
        // Half a header: no blank line ever follows.
        s.write_all(format!("GET /api/v1/assets HTTP/1.1\r\nHost: localhost\r\nX-Slow-{i}: ").as_bytes())
            .await
            .unwrap();
        conns.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The fault landed: every connection is open, short of the timeout.
    let open = conns.iter().filter(|s| !closed(s)).count();
    assert!(
        started.elapsed() < timeout,
        "opening {CONNECTIONS} connections took {:?}, past the timeout; the check below would prove nothing",
        started.elapsed()
    );
    assert_eq!(open, CONNECTIONS, "all half-header connections open before the timeout");
    // While they hang, the server still answers others.
    let (code, _) = server.get("/api/v1/assets").await;
    assert_eq!(code, 200);

    let mut last = started;
    for s in &mut conns {
        let (_, at) = read_until_closed(s, timeout + SLACK).await;
        last = last.max(at);
    }
    let took = last - started;
    assert!(
        took <= timeout + SLACK,
        "the last half-header connection closed {took:?} after opening (timeout {timeout:?})"
    );
    eprintln!(
        "{CONNECTIONS} half-header connections: all open at 0.3 s, all closed by {took:?} (header read timeout {timeout:?})"
    );
    let (code, _) = server.get("/api/v1/assets").await;
    assert_eq!(code, 200, "the server serves on afterwards");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_upload_is_closed_and_its_staged_part_removed_at_the_idle_timeout() {
    let idle = Duration::from_secs(2);
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start_with(
        &db,
        &repo().join("pipeline.toml"),
        &[("LUMILIO_BODY_IDLE_TIMEOUT_SECS", "2")],
    )
    .await;
    let body = filler(0);
    let upload = RawUpload::new(&server.key, "stalled.jpg", &body, body.len() / 2);
    let mut s = TcpStream::connect(addr(&server)).await.unwrap();
    s.write_all(&upload.head).await.unwrap();
    let stalled_at = Instant::now();
    // The fault landed: the upload is mid-stream, its part in staging.
    wait_for(idle, "the stalled upload's part is in staging", || {
        parts(&server).len() == 1
    })
    .await;
    let (response, closed_at) = read_until_closed(&mut s, idle + SLACK).await;
    let took = closed_at - stalled_at;
    let text = String::from_utf8_lossy(&response);
    assert_eq!(status_of(&response), 408, "{text}");
    assert!(text.contains("\"body_timeout\""), "{text}");
    assert!(
        took >= idle - Duration::from_millis(200),
        "closed after {took:?}, before the idle timeout: something else ended it"
    );
    assert!(
        parts(&server).is_empty(),
        "the staged part is removed when the connection closes, not by the sweep: {:?}",
        parts(&server)
    );
    eprintln!("stalled upload: closed with 408 after {took:?} (idle timeout {idle:?}), part removed");
    let mut conn = db.conn().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM assets")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing half-stored");
    // A slow upload that keeps sending is not cut off.
    let upload = RawUpload::new(&server.key, "slow.jpg", &body, 0);
    let mut s = TcpStream::connect(addr(&server)).await.unwrap();
    s.write_all(&upload.head).await.unwrap();
    for chunk in upload.rest.chunks(upload.rest.len() / 6 + 1) {
        tokio::time::sleep(idle / 2).await;
        s.write_all(chunk).await.unwrap();
    }
    let mut response = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut response))
        .await
        .expect("an answer to the slow upload")
        .unwrap();
    assert_eq!(
        status_of(&response[..n]),
        201,
        "{}",
        String::from_utf8_lossy(&response[..n])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_over_the_per_key_cap_get_429_until_one_finishes() {
    const CAP: usize = 3;
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start_with(
        &db,
        &repo().join("pipeline.toml"),
        &[("LUMILIO_MAX_UPLOADS_PER_KEY", "3")],
    )
    .await;
    let mut held = Vec::new();
    for i in 0..CAP {
        let body = filler(i);
        let upload = RawUpload::new(&server.key, &format!("held{i}.jpg"), &body, body.len() / 2);
        let mut s = TcpStream::connect(addr(&server)).await.unwrap();
        s.write_all(&upload.head).await.unwrap();
        held.push((s, upload.rest));
    }
    // The fault landed: the cap's worth of uploads are inside the server.
    wait_for(Duration::from_secs(10), "the held uploads are staged", || {
        parts(&server).len() == CAP
    })
    .await;
    let photo = testdata::read("jpg/gps/DSCN0010.jpg");
    let (code, body) = server.upload("over.jpg", photo.clone(), "image/jpeg").await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_uploads", "{body}");
    let r = server
        .client()
        .post(format!("{}/api/v1/assets/batch", server.base))
        .multipart(reqwest::multipart::Form::new().part(
            blake3::hash(&photo).to_hex().to_string(),
            reqwest::multipart::Part::bytes(photo.clone()).file_name("over.jpg"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429, "batches share the cap");
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    // Another key is not held up by this one.
    let other = Server::client_with(Some(&db.user("other")));
    let r = other
        .post(format!("{}/api/v1/assets", server.base))
        .multipart(reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(photo.clone()).file_name("other.jpg"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // Reading routes are not capped.
    assert_eq!(server.get("/api/v1/assets").await.0, 200);

    // One held upload completes; its slot is free again.
    let (mut s, rest) = held.remove(0);
    s.write_all(&rest).await.unwrap();
    let mut response = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut response))
        .await
        .expect("an answer to the completed upload")
        .unwrap();
    assert_eq!(status_of(&response[..n]), 201, "{}", String::from_utf8_lossy(&response[..n]));
    let (code, body) = server.upload("after.jpg", photo.clone(), "image/jpeg").await;
    assert_eq!(code, 201, "a slot came free: {body}");
    // Clients that vanish give their slots back too.
    drop(held);
    wait_for(Duration::from_secs(10), "the dropped uploads' parts are gone", || {
        parts(&server).is_empty()
    })
    .await;
    let uploads = (0..CAP).map(|i| {
        let mut bytes = photo.clone();
        bytes.extend_from_slice(&[i as u8; 16]);
        server.upload("again.jpg", bytes, "image/jpeg")
    });
    let codes: Vec<u16> = futures_util::future::join_all(uploads)
        .await
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(codes, vec![201; CAP], "the whole cap is free again");
}

#[tokio::test(flavor = "multi_thread")]
async fn error_messages_never_echo_long_input_whole() {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;
    let long = "f".repeat(10_000);
    let photo = testdata::read("jpg/gps/DSCN0010.jpg");
    let form = |field: &str| {
        reqwest::multipart::Form::new().part(
            field.to_owned(),
            reqwest::multipart::Part::bytes(photo.clone()).file_name("x.jpg"),
        )
    };
    // The first request is refused before its body is read; no connection reuse.
    let c = server.client_without_reuse();
    let url = |p: &str| format!("{}{p}", server.base);
    let answers = vec![
        (
            "X-Content-Hash",
            c.post(url("/api/v1/assets"))
                .header("x-content-hash", &long)
                .multipart(form("file")),
        ),
        (
            "a hash to check",
            c.post(url("/api/v1/assets/check"))
                .json(&serde_json::json!({ "hashes": [long] })),
        ),
        (
            "an Immich checksum",
            c.post(url("/api/assets/bulk-upload-check")).json(
                &serde_json::json!({ "assets": [{ "id": long, "checksum": long }] }),
            ),
        ),
        ("a path segment", c.get(url(&format!("/api/v1/assets/{long}")))),
        ("a query value", c.get(url(&format!("/api/v1/assets?limit={long}")))),
    ];
    for (what, request) in answers {
        let r = request.send().await.unwrap();
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!((400..500).contains(&code), "{what}: {code} {text:.300}");
        assert!(
            text.len() < 1000,
            "{what}: a {}-byte answer echoes the input: {text:.300}",
            text.len()
        );
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {text}"));
        assert!(body["error"]["code"].is_string(), "{what}: {body}");
        eprintln!("{what}: {code}, {} bytes: {}", text.len(), body["error"]["message"]);
    }
    // A batch answers 200 with one result per part; the refused part's hash
    // (its field name) and message are bounded too.
    let r = c.post(url("/api/v1/assets/batch")).multipart(form(&long)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    assert!(text.len() < 1000, "a batch part's name: a {}-byte answer: {text:.300}", text.len());
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["results"][0]["success"], false, "{body}");
    assert_eq!(body["results"][0]["error"]["code"], "bad_hash", "{body}");
}

/// How many assets and `process_asset` jobs hold `hash`, per owner.
async fn copies(db: &TestDb, hash: &str) -> Vec<(String, i64, i64)> {
    let mut conn = db.conn().await;
    sqlx::query_as(
        "SELECT u.name, count(DISTINCT a.id), count(j.id)
         FROM assets a JOIN users u ON u.id = a.owner_id
         LEFT JOIN river_job j ON j.kind = 'process_asset' AND (j.args->>'asset_id')::uuid = a.id
         WHERE a.content_hash = $1 GROUP BY u.name ORDER BY u.name",
    )
    .bind(hash)
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_uploads_of_the_same_bytes_make_one_asset_per_user() {
    const RACERS: usize = 20;
    let db = TestDb::new().await;
    db.migrate();
    // Room for every racer at once: the race, not the cap, is under test.
    let server = Server::start_with(
        &db,
        &repo().join("pipeline.toml"),
        &[("LUMILIO_MAX_UPLOADS_PER_KEY", "64")],
    )
    .await;
    let photo = testdata::read("jpg/gps/DSCN0010.jpg");
    let hash = blake3::hash(&photo).to_hex().to_string();
    let owner = server.client();
    let bob_key = db.user("bob");
    let bob = Server::client_with(Some(&bob_key));

    let native = |c: &reqwest::Client| {
        c.post(format!("{}/api/v1/assets", server.base))
            .multipart(reqwest::multipart::Form::new().part(
                "file",
                reqwest::multipart::Part::bytes(photo.clone()).file_name("same.jpg"),
            ))
            .send()
    };
    // One user, 20 at once; then alice and bob, 10 each at once.
    let answers = futures_util::stream::iter(0..RACERS)
        .map(|_| native(&owner))
        .buffer_unordered(RACERS)
        .collect::<Vec<_>>()
        .await;
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for r in answers {
        let r = r.unwrap();
        let code = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        match code {
            201 => created += 1,
            200 => assert_eq!(body["status"], "duplicate", "{body}"),
            _ => panic!("a racing upload answered {code}: {body}"),
        }
        ids.insert(body["asset_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1, "exactly one of {RACERS} racing uploads creates the asset");
    assert_eq!(ids.len(), 1, "every answer names the same asset: {ids:?}");

    let both = (0..RACERS)
        .map(|i| if i % 2 == 0 { native(&bob) } else { native(&owner) })
        .collect::<Vec<_>>();
    let mut codes = Vec::new();
    for r in futures_util::future::join_all(both).await {
        codes.push(r.unwrap().status().as_u16());
    }
    assert_eq!(
        codes.iter().filter(|&&c| c == 201).count(),
        1,
        "bob's first copy is his new asset; alice's are duplicates: {codes:?}"
    );
    assert!(codes.iter().all(|&c| c == 200 || c == 201), "{codes:?}");

    // The Immich route has its own answer words but the same intake.
    let immich = |c: &reqwest::Client, i: usize| {
        c.post(format!("{}/api/assets", server.base))
            .multipart(
                reqwest::multipart::Form::new()
                    .text("deviceAssetId", format!("race-{i}"))
                    .text("deviceId", "abuse")
                    .text("fileCreatedAt", "2024-05-01T12:00:00.000Z")
                    .text("fileModifiedAt", "2024-05-01T12:00:00.000Z")
                    .part(
                        "assetData",
                        reqwest::multipart::Part::bytes(photo.clone()).file_name("same.jpg"),
                    ),
            )
            .send()
    };
    let carol = Server::client_with(Some(&db.user("carol")));
    let mut statuses = Vec::new();
    for r in futures_util::future::join_all((0..RACERS).map(|i| immich(&carol, i))).await {
        let r = r.unwrap();
        let code = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert!(code == 200 || code == 201, "Immich racer answered {code}: {body}");
        statuses.push(body["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        statuses.iter().filter(|s| *s == "created").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "duplicate").count(),
        RACERS - 1,
        "{statuses:?}"
    );

    let owner_name = format!("owner-{}", server.base.rsplit(':').next().unwrap());
    let mut want = vec![
        ("bob".to_owned(), 1, 1),
        ("carol".to_owned(), 1, 1),
        (owner_name, 1, 1),
    ];
    want.sort();
    assert_eq!(
        copies(&db, &hash).await,
        want,
        "one asset and one job per user, however many raced"
    );
    assert!(
        Path::new(&server.data.path().join("staging")).exists()
            && parts(&server).is_empty(),
        "the losers' staged copies are gone"
    );
}
