//! A real database restart (issue 14, point 2): the test's own PostgreSQL
//! ([`OwnDb`], run by `scripts/db.sh`) is stopped as a crash would stop it
//! (`pg_ctl stop -m immediate`) and started again, at three moments: idle,
//! while an upload's body is streaming, and while jobs run. The host is never
//! restarted. While the database is down every API call answers 503 with
//! `Retry-After`; afterwards every accepted upload ends `ready` exactly once,
//! nothing is half-stored, and the host holds its node lock again.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{
    OwnDb, Server, TestDb, all_done, eventually, files_under, running_jobs, scalar, slow_pipeline,
    staging_parts,
};

/// The node id the host runs under, so that its advisory lock can be found.
const NODE: &str = "outage-test";

/// An API call while the database is down: 503, `Retry-After`, and the
/// `database_unavailable` code.
async fn assert_503(what: &str, r: reqwest::Response) {
    let code = r.status().as_u16();
    let retry = r.headers().get("retry-after").cloned();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    assert_eq!(code, 503, "{what} while the database is down: {body}");
    assert!(retry.is_some(), "{what}: 503 without Retry-After");
    assert_eq!(body["error"]["code"], "database_unavailable", "{what}: {body}");
}

/// Uploads until one is accepted (bounded); returns its id and how long it took.
async fn first_2xx(server: &Server, name: &str, bytes: &[u8]) -> (String, Duration) {
    let start = Instant::now();
    let last = std::cell::RefCell::new(String::new());
    let id = eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            let (code, up) = server.upload(name, bytes.to_vec(), "image/jpeg").await;
            *last.borrow_mut() = format!("{code} {up}");
            (code == 201).then(|| up["asset_id"].as_str().unwrap().to_owned())
        },
        || {
            let (last, log) = (last.borrow(), server.log_text());
            format!("an upload accepted after the database came back (last: {last}):\n{log}")
        },
    )
    .await;
    (id, start.elapsed())
}

/// Whether the host holds its node's advisory lock (`queue/nodes.rs`).
async fn holds_node_lock(conn: &mut PgConnection) -> bool {
    scalar(
        conn,
        &format!(
            "SELECT count(*) FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
               AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended('lumilio:{NODE}', 0)"
        ),
    )
    .await
        == 1
}

async fn wait_node_lock(url: &str, within: Duration) {
    eventually(
        within,
        Duration::from_millis(100),
        async || match PgConnection::connect(url).await {
            Ok(mut c) => holds_node_lock(&mut c).await.then_some(()),
            Err(_) => None,
        },
        || "the host holding its node lock again".into(),
    )
    .await
}

/// One multipart upload written by hand, so that the test decides when each
/// byte is sent.
struct RawUpload {
    head: Vec<u8>,
    body: Vec<u8>,
}

impl RawUpload {
    fn new(key: &str, file: &[u8]) -> RawUpload {
        let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.jpg\"\r\n\
            Content-Type: image/jpeg\r\n\r\n"
            .to_vec();
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n--XyZ--\r\n");
        let head = format!(
            "POST /api/v1/assets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        RawUpload { head: head.into_bytes(), body }
    }
}

/// The status code and `Retry-After` of a raw HTTP/1.1 answer.
fn parse_answer(raw: &[u8]) -> (u16, Option<String>, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let retry = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("retry-after:"))
        .map(|l| l[12..].trim().to_owned());
    (code, retry, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_database_restart_loses_and_duplicates_nothing() {
    let test_start = Instant::now();
    let own = OwnDb::start();
    let db = TestDb::new_at(&own.url).await;
    db.migrate();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = slow_pipeline(dir.path(), 1500);
    let server = Server::start_at(
        &db.url,
        &db,
        &pipeline,
        &[("LUMILIO_NODE_ID", NODE), ("LUMILIO_PROCESS_ASSET_WORKERS", "3")],
    )
    .await;
    let staging = server.data.path().join("staging");
    let mut accepted: Vec<String> = Vec::new();
    let mut faults: Vec<String> = Vec::new();
    let photo = testdata::read("jpg/gps/DSCN0010.jpg");
    let distinct = |tag: &str| {
        let mut b = photo.clone();
        b.extend_from_slice(tag.as_bytes());
        b
    };
    let (code, up) = server.upload("first.jpg", distinct("first"), "image/jpeg").await;
    assert_eq!(code, 201, "{up}");
    accepted.push(up["asset_id"].as_str().unwrap().to_owned());
    let first = accepted[0].clone();
    assert_eq!(server.wait_done(&first).await["status"], "ready");
    wait_node_lock(&db.url, Duration::from_secs(10)).await;

    // (c) Idle: crash, and every kind of call answers 503 with Retry-After.
    let mut conn = db.conn().await;
    assert_eq!(scalar(&mut conn, "SELECT count(*) FROM assets WHERE status = 'processing'").await, 0);
    drop(conn);
    own.crash();
    let down = Instant::now();
    let client = server.client();
    let part = reqwest::multipart::Part::bytes(distinct("while-down")).file_name("down.jpg");
    let (list, upload, status, health) = tokio::join!(
        client.get(format!("{}/api/v1/assets", server.base)).send(),
        client
            .post(format!("{}/api/v1/assets", server.base))
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send(),
        client.get(format!("{}/api/v1/assets/{first}", server.base)).send(),
        client.get(format!("{}/health", server.base)).send(),
    );
    assert_503("list", list.unwrap()).await;
    assert_503("upload", upload.unwrap()).await;
    assert_503("status", status.unwrap()).await;
    assert_503("/health", health.unwrap()).await;
    let answered_in = down.elapsed();
    own.start_again();
    let (id, idle_recovery) = first_2xx(&server, "after-idle.jpg", &distinct("after-idle")).await;
    accepted.push(id.clone());
    assert_eq!(server.wait_done(&id).await["status"], "ready", "jobs resume");
    faults.push(format!(
        "idle: 503s answered within {answered_in:.1?} of the crash; DB back -> first 2xx {idle_recovery:.1?}"
    ));

    // (a) While an upload's body streams, after auth: the staged part exists
    // when the database dies; the rest of the body arrives while it is down.
    let file: Vec<u8> = (0..4u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let raw = RawUpload::new(&server.key, &file);
    let mut sock = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    sock.write_all(&raw.head).await.unwrap();
    // More than the staging writer buffers (256 KiB), so bytes are on disk.
    let first_part = 1 << 20;
    sock.write_all(&raw.body[..first_part]).await.unwrap();
    let part = eventually(
        Duration::from_secs(10),
        Duration::from_millis(20),
        async || match staging_parts(&staging).as_slice() {
            [p] if std::fs::metadata(p).is_ok_and(|m| m.len() > 0) => Some(p.clone()),
            _ => None,
        },
        || "the upload in staging (auth failed?)".into(),
    )
    .await;
    own.crash();
    let staged_at_crash = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(
        staged_at_crash > 0 && staged_at_crash < file.len() as u64,
        "the crash landed while the body streamed ({staged_at_crash} of {} bytes staged)",
        file.len()
    );
    for chunk in raw.body[first_part..].chunks(512 << 10) {
        sock.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), sock.read_to_end(&mut answer))
        .await
        .expect("an answer within 30 s")
        .unwrap();
    let (code, retry, text) = parse_answer(&answer);
    assert_eq!(code, 503, "the streamed upload, finished while the database is down: {text}");
    assert!(retry.is_some(), "503 without Retry-After: {text}");
    assert!(text.contains("database_unavailable"), "{text}");
    assert!(files_under(&staging).is_empty(), "nothing left in staging: {:?}", files_under(&staging));
    own.start_again();
    let (id, stream_recovery) = first_2xx(&server, "after-stream.jpg", &distinct("after-stream")).await;
    accepted.push(id);
    faults.push(format!(
        "mid-stream upload ({staged_at_crash} of {} bytes staged at the crash): 503 + Retry-After; DB back -> first 2xx {stream_recovery:.1?}",
        file.len()
    ));

    // (b) While jobs run: 9 uploads on 3 workers, 1.5 s each.
    for i in 0..9 {
        let (code, up) = server
            .upload(&format!("busy-{i}.jpg"), distinct(&format!("busy-{i}")), "image/jpeg")
            .await;
        assert_eq!(code, 201, "{up}");
        accepted.push(up["asset_id"].as_str().unwrap().to_owned());
    }
    let mut conn = db.conn().await;
    let running = running_jobs(&mut conn, 2, Duration::from_secs(20)).await;
    drop(conn);
    own.crash();
    // Down for longer than a job, so that running jobs end while it is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    own.start_again();
    let back = Instant::now();
    let (id, busy_recovery) = first_2xx(&server, "after-busy.jpg", &distinct("after-busy")).await;
    accepted.push(id);
    let drained = all_done(&db.url, Duration::from_secs(60), || server.log_text()).await;
    let drained = drained.max(back.elapsed());
    faults.push(format!(
        "while jobs ran ({} running at the crash): DB back -> first 2xx {busy_recovery:.1?}, -> all in-flight jobs done {drained:.1?}",
        running.len()
    ));

    // Afterwards, without a host restart: every accepted upload ended once.
    let mut conn = db.conn().await;
    let n = accepted.len() as i64;
    assert_eq!(scalar(&mut conn, "SELECT count(*) FROM assets").await, n, "no asset lost, none extra");
    let client = server.client();
    for id in &accepted {
        let done = server.wait_done_as(&client, id).await;
        assert_eq!(done["status"], "ready", "{done}");
    }
    assert_eq!(
        scalar(
            &mut conn,
            "SELECT count(*) FROM river_job j JOIN assets a ON a.job_id = j.id
             WHERE j.kind = 'process_asset' AND j.state = 'completed'"
        )
        .await,
        n,
        "each asset's own job completed"
    );
    assert_eq!(
        scalar(&mut conn, "SELECT count(*) FROM river_job WHERE kind = 'process_asset'").await,
        n,
        "assets and jobs one to one"
    );
    assert_eq!(
        scalar(&mut conn, "SELECT count(*) FROM stage_results").await,
        n,
        "one stage result per asset: no job's work stored twice"
    );
    let ids = running.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    assert_eq!(
        scalar(
            &mut conn,
            &format!("SELECT count(*) FROM river_job WHERE id IN ({ids}) AND state = 'completed'")
        )
        .await,
        running.len() as i64,
        "the jobs running at the crash completed"
    );
    assert_eq!(
        scalar(
            &mut conn,
            "SELECT count(*) FROM river_job, unnest(errors) e
             WHERE e->>'error' LIKE '%another host took the job back%'"
        )
        .await,
        0,
        "the host never judged itself dead"
    );
    assert!(files_under(&staging).is_empty(), "staged leftovers: {:?}", files_under(&staging));
    assert_eq!(
        files_under(&server.data.path().join("storage/originals")).len(),
        accepted.len(),
        "one original per accepted upload"
    );
    assert!(holds_node_lock(&mut conn).await, "the host holds its node lock again");
    let (code, _) = server.get("/health").await;
    assert_eq!(code, 200);
    eprintln!(
        "outage: 3 database crashes (pg_ctl stop -m immediate), {} uploads accepted, 0 lost, 0 duplicated, test took {:.1?}",
        accepted.len(),
        test_start.elapsed()
    );
    for f in faults {
        eprintln!("outage: {f}");
    }
}

/// The host's pool pings a connection before use only when it sat idle
/// (`lumilio::db::connect`, issue 15 §1): one the server closed meanwhile
/// (a restart, `idle_session_timeout`, a killed backend) is replaced, not
/// handed to a query that would fail with it.
#[tokio::test]
async fn a_pooled_connection_closed_while_idle_is_replaced_before_use() {
    let db = TestDb::new().await;
    let pool = lumilio::db::connect(&db.url, 1).await.unwrap();
    let pid = "SELECT pg_backend_pid()";
    let first: i32 = sqlx::query_scalar(pid).fetch_one(&pool).await.unwrap();
    let mut admin = db.conn().await;
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(first)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(killed, "the pool's only backend ({first}) was terminated");
    // Past the pool's idle threshold (one second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second: i32 = sqlx::query_scalar(pid)
        .fetch_one(&pool)
        .await
        .expect("the closed connection is replaced before the query runs");
    assert_ne!(first, second, "a new backend answered");
    pool.close().await;
}
