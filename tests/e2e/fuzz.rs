//! Fuzzing the multipart upload handlers against the real server: a few
//! thousand malformed and odd multipart bodies (hand-built boundaries, missing
//! or wrong boundaries, bodies cut mid-part, header garbage, huge header
//! lines, no Content-Disposition, duplicate `file` fields, empty parts,
//! random bytes, non-UTF-8 and path-traversal file names, batch parts named
//! by random hashes) sent to `POST /api/v1/assets` and
//! `POST /api/v1/assets/batch`.
//!
//! Every answer must be a JSON error `{"error": {"code", "message"}}` with a
//! 4xx status or a JSON success (201/200), never a 5xx and never a hang
//! (10 s per request). Afterwards the server is still alive and healthy,
//! staging holds no `.part` file, and every `assets` row is one the server
//! answered as accepted, with its staged file while `processing` and none
//! once finished.
//!
//! `LUMILIO_FUZZ_CASES` changes the number of requests (default 2000) and
//! `LUMILIO_FUZZ_SEED` the seed; failing requests are listed by index and
//! their bodies saved under `target/tmp/fuzz-multipart/`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::harness::{Server, TestDb, files_under, staging_parts};

const DEFAULT_SEED: u64 = 0x1u64 << 40 | 0x6c75_6d69;

/// SplitMix64, as in the plugins' fuzz tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn pick<'a, T>(&mut self, list: &'a [T]) -> &'a T {
        &list[self.below(list.len())]
    }
    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16)]))
            .collect()
    }
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

/// One generated request.
struct Case {
    what: Vec<String>,
    batch: bool,
    content_type: Option<String>,
    hash_header: Option<String>,
    body: Vec<u8>,
}

/// Builds one odd multipart request.
fn case(rng: &mut Rng, jpeg: &[u8]) -> Case {
    let mut what = Vec::new();
    let batch = rng.chance(40);
    let boundary = match rng.below(10) {
        0 => "x".repeat(200),
        1 => "a b\"c".to_owned(),
        _ => format!("----fuzz{}", rng.hex(16)),
    };
    let content_type = match rng.below(12) {
        0 => {
            what.push("no content-type".into());
            None
        }
        1 => {
            what.push("no boundary parameter".into());
            Some("multipart/form-data".into())
        }
        2 => {
            what.push("wrong boundary".into());
            Some(format!("multipart/form-data; boundary=other{}", rng.hex(8)))
        }
        3 => {
            what.push("empty boundary".into());
            Some("multipart/form-data; boundary=".into())
        }
        4 => {
            what.push("not multipart".into());
            Some(
                (*rng.pick(&[
                    "application/json",
                    "text/plain",
                    "image/jpeg",
                    "multipart/mixed; boundary=b",
                    "multipart/form-data; boundary=",
                ]))
                .into(),
            )
        }
        5 => Some(format!("multipart/form-data; boundary=\"{boundary}\"")),
        _ => Some(format!("multipart/form-data; boundary={boundary}")),
    };
    let hash_header = match rng.below(10) {
        0 => Some(rng.hex(64)),
        1 => Some((*rng.pick(&["", "zz", "not-a-hash", "é"])).into()),
        _ => None,
    };
    if rng.chance(5) {
        what.push("random bytes".into());
        let n = rng.below(4096);
        return Case {
            what,
            batch,
            content_type,
            hash_header,
            body: rng.bytes(n),
        };
    }
    let mut body = Vec::new();
    if rng.chance(10) {
        body.extend_from_slice(b"preamble junk\r\n");
    }
    let parts = match rng.below(10) {
        0 => 0,
        1..=6 => 1,
        _ => 2 + rng.below(4),
    };
    for p in 0..parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let content: Vec<u8> = match rng.below(8) {
            0 => Vec::new(),
            1 => jpeg.to_vec(),
            2 => b"--".to_vec(),
            _ => {
                let n = rng.below(3000) + 1;
                rng.bytes(n)
            }
        };
        let name = if batch {
            match rng.below(5) {
                0 => rng.hex(64),
                1 => {
                    let n = rng.below(70);
                    rng.hex(n)
                }
                2 => "file".to_owned(),
                _ => blake3::hash(&content).to_hex().to_string(),
            }
        } else {
            match rng.below(6) {
                0 => rng.hex(8),
                1 => String::new(),
                _ => "file".to_owned(),
            }
        };
        let filename: Vec<u8> = match rng.below(9) {
            0 => b"../../etc/passwd".to_vec(),
            1 => b"/abs/path/photo.jpg".to_vec(),
            2 => vec![0xFF, 0xFE, b'.', b'j', b'p', b'g'],
            3 => b"a\x00b\x01c\r.jpg".to_vec(),
            4 => vec![b'n'; 10_000],
            5 => b"..".to_vec(),
            6 => b"C:\\Users\\x\\photo.jpg".to_vec(),
            _ => format!("photo{p}.jpg").into_bytes(),
        };
        let mut headers: Vec<Vec<u8>> = Vec::new();
        match rng.below(12) {
            0 => what.push(format!("part {p}: no content-disposition")),
            1 => headers.push(format!("Content-Disposition: form-data; name={name}").into_bytes()),
            2 => {
                let mut h = b"Content-Disposition: form-data; name=\"".to_vec();
                h.extend_from_slice(name.as_bytes());
                h.extend_from_slice(b"\"; filename=\"");
                h.extend_from_slice(&filename);
                h.extend_from_slice(b"\"; filename*=UTF-8''%FF%00x");
                headers.push(h);
            }
            _ => {
                let mut h = b"Content-Disposition: form-data; name=\"".to_vec();
                h.extend_from_slice(name.as_bytes());
                h.extend_from_slice(b"\"; filename=\"");
                h.extend_from_slice(&filename);
                h.push(b'"');
                headers.push(h);
            }
        }
        match rng.below(10) {
            0 => {
                what.push(format!("part {p}: header garbage"));
                let n = rng.below(200);
                headers.push(
                    rng.bytes(n)
                        .into_iter()
                        .filter(|&b| b != b'\r' && b != b'\n')
                        .collect(),
                );
            }
            1 => {
                what.push(format!("part {p}: huge header line"));
                let mut h = b"X-Long: ".to_vec();
                h.extend(std::iter::repeat_n(b'a', 20_000 + rng.below(80_000)));
                headers.push(h);
            }
            2 => headers.push(b"Content-Type: \x7f\xff/\x00".to_vec()),
            3 => headers.push(b"Content-Type: image/jpeg".to_vec()),
            4 => headers.push(b"no colon here".to_vec()),
            _ => {}
        }
        for h in headers {
            body.extend(h);
            body.extend_from_slice(b"\r\n");
        }
        if rng.chance(5) {
            what.push(format!("part {p}: no blank line after headers"));
        } else {
            body.extend_from_slice(b"\r\n");
        }
        let name_ok = !batch && name == "file";
        what.push(format!(
            "part {p}: name {:?}{}, {} bytes",
            &name[..name.len().min(16)],
            if name_ok { " (file)" } else { "" },
            content.len()
        ));
        body.extend(content);
        body.extend_from_slice(b"\r\n");
    }
    match rng.below(10) {
        0 => {
            what.push("no closing boundary".into());
        }
        1 => {
            let at = rng.below(body.len() + 1);
            body.truncate(at);
            what.push(format!("truncated at {at}"));
        }
        2 => {
            body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            let n = rng.below(500);
            body.extend(rng.bytes(n));
            what.push("trailing garbage".into());
        }
        3 => {
            body.extend_from_slice(format!("--{boundary}").as_bytes());
            what.push("closing boundary without --".into());
        }
        _ => body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes()),
    }
    Case {
        what,
        batch,
        content_type,
        hash_header,
        body,
    }
}

/// Whether `v` is `{"error": {"code": "...", "message": "..."}}`.
fn is_error_body(v: &Value) -> bool {
    let s = |k: &str| v["error"][k].as_str().is_some_and(|s| !s.trim().is_empty());
    s("code") && s("message")
}

/// Checks one answer; returns the accepted asset ids, or what is wrong.
fn judge(batch: bool, status: u16, body: &[u8]) -> Result<Vec<String>, String> {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| format!("{status} with a non-JSON body: {text:?}"))?;
    match status {
        400..=499 if is_error_body(&v) => Ok(Vec::new()),
        400..=499 => Err(format!("{status} without an error object: {text}")),
        200 | 201 if !batch => {
            let id = v["asset_id"]
                .as_str()
                .ok_or(format!("{status} without asset_id: {text}"))?;
            let ok = (status == 201 && v["status"] == "processing")
                || (status == 200 && v["status"] == "duplicate");
            if !ok {
                return Err(format!("{status} with status {}", v["status"]));
            }
            Ok(if status == 201 {
                vec![id.to_owned()]
            } else {
                Vec::new()
            })
        }
        200 if batch => {
            let results = v["results"]
                .as_array()
                .ok_or(format!("batch 200 without results: {text}"))?;
            if results.is_empty() {
                return Err("batch 200 with no results".into());
            }
            let mut ids = Vec::new();
            for r in results {
                match r["success"].as_bool() {
                    Some(true) => {
                        let id = r["asset_id"]
                            .as_str()
                            .ok_or(format!("a batch success without asset_id: {r}"))?;
                        if r["status"] == "processing" {
                            ids.push(id.to_owned());
                        }
                    }
                    Some(false) if is_error_body(r) => {}
                    _ => {
                        return Err(format!(
                            "a batch result is neither a success nor an error: {r}"
                        ));
                    }
                }
            }
            Ok(ids)
        }
        _ => Err(format!("status {status}: {text}")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_fuzz_never_breaks_the_server() {
    let seed = env_num("LUMILIO_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let n = env_num("LUMILIO_FUZZ_CASES").unwrap_or(2000) as usize;
    let db = TestDb::new().await;
    db.migrate();
    let mut server = Server::start(&db).await;
    let jpeg = testdata::read("jpg/gps/DSCN0010.jpg");
    let started = Instant::now();

    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", server.key).parse().unwrap(),
    );
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(10))
        // A fresh connection per request: the server may close a connection
        // after answering early (without reading the rest of a broken body),
        // and a pooled connection reused at that moment fails on the client
        // side with `IncompleteMessage`, which is not what is tested here.
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    let mut rng = Rng(seed);
    let cases: Vec<Case> = (0..n).map(|_| case(&mut rng, &jpeg)).collect();
    let base = server.base.clone();
    let answers: Vec<(usize, Result<(u16, Vec<u8>), String>)> =
        futures_util::stream::iter(cases.iter().enumerate())
            .map(|(i, c)| {
                let client = client.clone();
                let base = base.clone();
                async move {
                    let path = if c.batch {
                        "/api/v1/assets/batch"
                    } else {
                        "/api/v1/assets"
                    };
                    let mut req = client.post(format!("{base}{path}")).body(c.body.clone());
                    if let Some(ct) = &c.content_type {
                        req = req.header("content-type", ct.as_bytes());
                    }
                    if let Some(h) = &c.hash_header {
                        req = req.header("x-content-hash", h.as_bytes());
                    }
                    let r = async {
                        let r = req
                            .send()
                            .await
                            .map_err(|e| format!("request failed: {e:?}"))?;
                        let status = r.status().as_u16();
                        let body = r
                            .bytes()
                            .await
                            .map_err(|e| format!("reading the answer failed: {e:?}"))?;
                        Ok((status, body.to_vec()))
                    }
                    .await;
                    (i, r)
                }
            })
            .buffer_unordered(6)
            .collect()
            .await;

    let save_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-multipart");
    let mut failures = Vec::new();
    let mut accepted = HashSet::new();
    let mut statuses = std::collections::BTreeMap::new();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    let mut answered = Vec::new();
    for (i, answer) in answers {
        let c = &cases[i];
        let verdict = answer.and_then(|(status, body)| {
            *statuses.entry(status).or_insert(0) += 1;
            answered.push((i, status, String::from_utf8_lossy(&body).into_owned()));
            judge(c.batch, status, &body)
        });
        match verdict {
            Ok(ids) => accepted.extend(ids),
            Err(e) => {
                *kinds
                    .entry(e.chars().take(90).collect::<String>())
                    .or_insert(0) += 1;
                let _ = std::fs::create_dir_all(&save_dir);
                let file = save_dir.join(format!("seed{seed}-case{i}.body"));
                let _ = std::fs::write(&file, &c.body);
                failures.push(format!(
                    "case {i} (seed {seed}) {} content-type {:?}, x-content-hash {:?}, {}: {e} (body saved to {})",
                    if c.batch { "POST /api/v1/assets/batch" } else { "POST /api/v1/assets" },
                    c.content_type,
                    c.hash_header,
                    c.what.join("; "),
                    file.display()
                ));
            }
        }
    }
    eprintln!(
        "fuzz multipart: {n} requests, seed {seed}, {:.1?}, statuses {statuses:?}, {} accepted",
        started.elapsed(),
        accepted.len()
    );

    // The server is alive and healthy.
    assert!(
        server.alive(),
        "the server died during the fuzz run:\n{}",
        server.log_text()
    );
    let (code, body) = server.get("/health").await;
    assert_eq!(code, 200, "health after the fuzz run: {body}");

    // No `.part` file is left once every request has been answered.
    let staging = server.data.path().join("staging");
    let deadline = Instant::now() + Duration::from_secs(10);
    let parts = loop {
        let parts = staging_parts(&staging);
        if parts.is_empty() || Instant::now() > deadline {
            break parts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !parts.is_empty() {
        failures.push(format!(
            "{} `.part` files left in staging: {parts:?}",
            parts.len()
        ));
    }

    // Every row is one the server answered as accepted: no half-written rows.
    let mut conn = db.conn().await;
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id::text, status FROM assets")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let ids: HashSet<String> = rows.iter().map(|(id, _)| id.clone()).collect();
    let strays: Vec<_> = ids.difference(&accepted).collect();
    let missing: Vec<_> = accepted.difference(&ids).collect();
    if !strays.is_empty() {
        // Which answers mention them (e.g. a duplicate of an unannounced row)?
        let seen: Vec<String> = answered
            .iter()
            .filter(|(_, _, body)| strays.iter().any(|id| body.contains(id.as_str())))
            .take(5)
            .map(|(i, status, body)| {
                format!("case {i} got {status} {}", &body[..body.len().min(400)])
            })
            .collect();
        failures.push(format!(
            "{} asset rows nobody was told about: {strays:?}; answers naming them: {seen:#?}",
            strays.len()
        ));
    }
    if !missing.is_empty() {
        failures.push(format!("accepted uploads without a row: {missing:?}"));
    }
    // Staged files belong to rows still processing; wait for the pipeline,
    // then every row is finished and staging is empty.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT id::text, status FROM assets")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let processing: HashSet<_> = rows
            .iter()
            .filter(|(_, s)| s == "processing")
            .map(|(id, _)| id.clone())
            .collect();
        let staged: Vec<String> = files_under(&staging)
            .iter()
            .filter_map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .collect();
        let orphans: Vec<_> = staged.iter().filter(|f| !processing.contains(*f)).collect();
        let unstaged: Vec<_> = processing
            .iter()
            .filter(|id| !staged.contains(id))
            .collect();
        if processing.is_empty() && orphans.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            failures.push(format!(
                "after 60 s: {} rows still processing, staged files without a processing row: {orphans:?}, processing rows without a staged file: {unstaged:?}",
                processing.len()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The state checks first, then the requests.
    failures.sort_by_key(|f| f.starts_with("case "));
    eprintln!(
        "fuzz multipart: checks done after {:.1?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {n} fuzz requests or checks failed; by kind: {kinds:#?}\n{}\n--- server log (tail) ---\n{}",
        failures.len(),
        failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        server
            .log_text()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// HEIC through the whole pipeline: every HEIC/HEIF sample ends `ready`
/// with all four renditions and a CLIP embedding, and damaged HEICs (cut,
/// or with random bytes over their boxes or coded data) end `ready` or
/// `rejected` with a reason naming the stage, never `failed` or stuck.
/// `LUMILIO_FUZZ_CASES` scales the damaged ones (default 2000 gives 40).
#[tokio::test(flavor = "multi_thread")]
async fn heic_uploads_get_renditions_or_a_reason() {
    let seed = env_num("LUMILIO_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let n = (env_num("LUMILIO_FUZZ_CASES").unwrap_or(2000) / 50).max(4) as usize;
    let db = TestDb::new().await;
    db.migrate();
    let port = crate::harness::free_port();
    let _infer = crate::harness::Infer::start_on(port);
    let addr = format!("http://127.0.0.1:{port}");
    let server = Server::start_with(
        &db,
        &crate::harness::repo().join("pipeline.toml"),
        &[("ML_SERVICE_ADDR", addr.as_str()), ("LUMILIO_CLIP_WINDOW_MS", "200")],
    )
    .await;

    let samples: Vec<(String, Vec<u8>)> = testdata::files_under("heic")
        .into_iter()
        .map(|p| (testdata::rel(&p), std::fs::read(&p).unwrap()))
        .collect();
    assert!(samples.len() >= 3, "HEIC samples: {}", samples.len());
    let mut ids = Vec::new();
    for (name, bytes) in &samples {
        let (code, up) = server.upload(name.rsplit('/').next().unwrap(), bytes.clone(), "image/heic").await;
        assert_eq!(code, 201, "{name}: {up}");
        ids.push((name.clone(), up["asset_id"].as_str().unwrap().to_owned()));
    }
    // Damaged copies of the small sample, so each decodes in well under a second.
    let base = testdata::read("heic/samplefilehub.heif");
    let mut rng = Rng(seed ^ 0x6865_6963);
    let mut damaged = Vec::new();
    for i in 0..n {
        let mut b = base.clone();
        let what = match i % 3 {
            0 => {
                let cut = 12 + rng.below(b.len() - 12);
                b.truncate(cut);
                format!("cut at {cut}")
            }
            1 => {
                // Inside `meta` (the first few KB): sizes, counts, offsets.
                let at = 12 + rng.below(b.len().min(4096) - 12);
                let len = 1 + rng.below(16);
                for k in at..(at + len).min(b.len()) {
                    b[k] = rng.next() as u8;
                }
                format!("{len} random bytes at {at}")
            }
            _ => {
                let at = b.len() / 4 + rng.below(b.len() / 2);
                let len = 64 + rng.below(2048);
                for k in at..(at + len).min(b.len()) {
                    b[k] = rng.next() as u8;
                }
                format!("{len} random bytes in the coded data at {at}")
            }
        };
        let (code, up) = server.upload(&format!("damaged-{i}.heic"), b, "image/heic").await;
        assert!(code == 201 || code == 409, "damaged {i} ({what}): {code} {up}");
        if code == 201 {
            damaged.push((what, up["asset_id"].as_str().unwrap().to_owned()));
        }
    }

    let mut conn = db.conn().await;
    for (name, id) in &ids {
        let done = server.wait_done(id).await;
        assert_eq!(done["status"], "ready", "{name}: {done}");
        let mut names: Vec<&str> = done["renditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["clip", "large", "medium", "small"], "{name}: {done}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let k: i64 = sqlx::query_scalar("SELECT count(*) FROM embeddings WHERE asset_id = $1::uuid")
                .bind(id)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            if k == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: no CLIP embedding:\n{}", server.log_text());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (mut ready, mut rejected) = (0, 0);
    for (what, id) in &damaged {
        let done = server.wait_done(id).await;
        match done["status"].as_str().unwrap() {
            "ready" => ready += 1,
            "rejected" => {
                let reason = done["reason"].as_str().unwrap_or("");
                assert!(reason.contains(": ") && reason.len() > 12, "{what}: reason {reason:?}");
                rejected += 1;
            }
            other => panic!("damaged HEIC ({what}) ended {other}: {done}"),
        }
    }
    println!("heic e2e: {} samples ready with 4 renditions and an embedding; damaged: {ready} ready, {rejected} rejected", ids.len());
    let (code, _) = server.get("/health").await;
    assert_eq!(code, 200, "the host keeps serving");
}
