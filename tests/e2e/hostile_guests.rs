//! Hostile plugins through the real server: a pipeline with the `spin`,
//! `oom` and `panic` test guests and an `echo` that sleeps past its
//! deadline, each routed to its own asset by content type, beside a
//! well-behaved stage for ordinary photos. Each hostile asset must end as
//! docs/troubleshooting.md ("Rejected vs failed") promises, the ordinary
//! assets must not notice, and `/health` must answer throughout.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Server, TestDb, repo};

fn guest(name: &str) -> String {
    let p: PathBuf = repo().join(format!("target/guests/wasm32-wasip2/release/guest_{name}.wasm"));
    assert!(p.is_file(), "{} is missing: run `make guests` (make test does)", p.display());
    p.display().to_string()
}

/// What an asset ended as: (status, reason, its job's attempts).
async fn outcome(db: &TestDb, id: &str) -> (String, String, i16) {
    let mut conn = db.conn().await;
    sqlx::query_as(
        "SELECT a.status, coalesce(a.reason, ''), j.attempt FROM assets a JOIN river_job j ON j.id = a.job_id
         WHERE a.id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_plugins_end_as_documented_and_the_server_stays_up() {
    let db = TestDb::new().await;
    db.migrate();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("hostile.toml");
    let stage = |name: &str, component: &str, config: &str, timeout: u32, memory: u32, ty: &str| {
        format!(
            "[[stage]]\nname = {name:?}\ncomponent = {component:?}\nconfig = {{ {config} }}\n\
             timeout_ms = {timeout}\nmemory_limit_mb = {memory}\ncontent_types = [{ty:?}]\n\n"
        )
    };
    let toml = [
        stage("spin", &guest("spin"), "", 500, 64, "image/x-spin"),
        stage("oom", &guest("oom"), "", 5000, 64, "image/x-oom"),
        stage("panic", &guest("panic"), "", 5000, 64, "image/x-panic"),
        // Blocked in a host call (WASI sleep), where the epoch deadline cannot reach.
        stage("sleepy", &guest("echo"), "sleep_ms = 60000", 500, 64, "image/x-sleep"),
        stage("fine", &guest("echo"), "\"fact.seen\" = \"yes\"", 5000, 64, "image/jpeg"),
    ]
    .concat();
    std::fs::write(&pipeline, toml).unwrap();
    let server = Server::start_with(&db, &pipeline, &[]).await;

    // /health every 100 ms for the whole test.
    let (asked, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let probe = {
        let (asked, failed, url) = (asked.clone(), failed.clone(), format!("{}/health", server.base));
        tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
            loop {
                asked.fetch_add(1, Ordering::Relaxed);
                if !client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let mut ids = std::collections::HashMap::new();
    for (name, ty) in [
        ("spin", "image/x-spin"),
        ("oom", "image/x-oom"),
        ("panic", "image/x-panic"),
        ("sleepy", "image/x-sleep"),
        ("fine-1", "image/jpeg"),
        ("fine-2", "image/jpeg"),
    ] {
        let (code, up) = server.upload(&format!("{name}.bin"), name.as_bytes().to_vec(), ty).await;
        assert_eq!(code, 201, "{name}: {up}");
        ids.insert(name, up["asset_id"].as_str().unwrap().to_owned());
    }

    // Traps (out of memory, panic) are not retried: failed after one attempt.
    for (name, says) in [("oom", "ran out of memory"), ("panic", "panicked")] {
        let a = server.wait_done(&ids[name]).await;
        let (status, reason, attempts) = outcome(&db, &ids[name]).await;
        assert_eq!(status, "failed", "{name}: {a}");
        assert!(reason.contains(says), "{name}: {reason}");
        assert!(reason.contains("not retried"), "{name}: {reason}");
        assert_eq!(attempts, 1, "{name} is not retried");
    }
    // Ordinary photos in the same run are untouched.
    for name in ["fine-1", "fine-2"] {
        let a = server.wait_done(&ids[name]).await;
        assert_eq!(a["status"], "ready", "{name}: {a}");
    }

    // Timeouts are retried, 5 attempts in all, then failed. River waits
    // attempt^4 s between attempts; the test moves each retry to now
    // instead of waiting the backoff (minutes) out.
    let mut conn = db.conn().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    for name in ["spin", "sleepy"] {
        loop {
            let (status, _, _) = outcome(&db, &ids[name]).await;
            if status != "processing" {
                break;
            }
            sqlx::query(
                "UPDATE river_job SET scheduled_at = now()
                 WHERE state = 'retryable' AND id = (SELECT job_id FROM assets WHERE id = $1::uuid)",
            )
            .bind(&ids[name])
            .execute(&mut conn)
            .await
            .unwrap();
            assert!(Instant::now() < deadline, "{name} still processing after 90 s:\n{}", server.log_text());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (status, reason, attempts) = outcome(&db, &ids[name]).await;
        assert_eq!(status, "failed", "{name}");
        assert!(reason.contains("timed out after 500 ms"), "{name}: {reason}");
        assert!(reason.contains("gave up after 5 attempts"), "{name}: {reason}");
        assert_eq!(attempts, 5, "{name}: retried up to 5 attempts");
        let (errors, timeouts): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE e->>'error' LIKE '%timed out%')
             FROM river_job j JOIN assets a ON a.job_id = j.id, unnest(j.errors) e WHERE a.id = $1::uuid",
        )
        .bind(&ids[name])
        .fetch_one(&mut conn)
        .await
        .unwrap();
        // The fifth attempt's error is the asset's reason: the job itself ends.
        assert_eq!((errors, timeouts), (4, 4), "{name}: each retried attempt timed out");
    }

    probe.abort();
    let (asked, failed) = (asked.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("/health asked {asked} times during the run, {failed} failed");
    assert!(asked > 20, "the probe ran ({asked})");
    assert_eq!(failed, 0, "/health failed {failed} of {asked} times");
}
