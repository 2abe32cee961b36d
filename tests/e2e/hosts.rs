//! Hosts that die while jobs run, and hosts that share a database
//! (`host/src/queue/nodes.rs`): jobs held by a dead host are taken back in
//! seconds with default settings, never a live host's, and each asset is
//! processed once. The pipeline is one slow stage (the `echo` test guest
//! sleeping), so jobs are surely running when a host is killed.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

use crate::harness::{Server, TestDb, all_done, eventually, running_jobs, scalar, slow_pipeline};

/// Uploads `n` distinct small files to `server`; returns their asset ids.
async fn upload_many(server: &Server, tag: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (code, up) = server
            .upload(&format!("{tag}-{i}.jpg"), format!("{tag} {i}").into_bytes(), "image/jpeg")
            .await;
        assert_eq!(code, 201, "{up}");
        ids.push(up["asset_id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Assets and `process_asset` jobs match one to one, every job completed.
async fn one_job_per_asset(conn: &mut PgConnection, assets: usize) {
    assert_eq!(scalar(conn, "SELECT count(*) FROM assets").await, assets as i64);
    assert_eq!(
        scalar(conn, "SELECT count(*) FROM assets WHERE status = 'ready'").await,
        assets as i64,
        "every asset ready"
    );
    assert_eq!(
        scalar(
            conn,
            "SELECT count(*) FROM river_job j JOIN assets a ON a.job_id = j.id
             WHERE j.kind = 'process_asset' AND j.state = 'completed'"
        )
        .await,
        assets as i64,
        "each asset's own job completed"
    );
    assert_eq!(
        scalar(conn, "SELECT count(*) FROM river_job WHERE kind = 'process_asset'").await,
        assets as i64,
        "no job without its asset, none twice"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_host_takes_back_its_own_jobs_at_once() {
    let db = TestDb::new().await;
    db.migrate();
    let dir = tempfile::tempdir().unwrap();
    // Default settings (River's rescue window stays 120 s), 4 workers, 2 s a job.
    let pipeline = slow_pipeline(dir.path(), 2000);
    let mut server =
        Server::start_with(&db, &pipeline, &[("LUMILIO_PROCESS_ASSET_WORKERS", "4")]).await;
    let assets = upload_many(&server, "own", 8).await;
    let mut conn = db.conn().await;
    running_jobs(&mut conn, 2, Duration::from_secs(20)).await;
    server.kill9();
    // The fault landed: the dead process's jobs are left running.
    let interrupted = running_jobs(&mut conn, 1, Duration::ZERO).await;

    let restarted = Instant::now();
    server.restart().await;
    all_done(&db.url, Duration::from_secs(30), || server.log_text()).await;
    let took = restarted.elapsed();
    eprintln!(
        "{} interrupted jobs; everything done {:.1} s after the restart",
        interrupted.len(),
        took.as_secs_f64()
    );
    assert!(
        took <= Duration::from_secs(15),
        "in-flight work done {took:?} after the restart (goal: 15 s)"
    );
    let rows: Vec<(i64, i16, String, String)> = sqlx::query_as(
        "SELECT id, attempt, state::text, errors[1]->>'error' FROM river_job WHERE id = ANY($1)",
    )
    .bind(&interrupted)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for (id, attempt, state, error) in &rows {
        assert_eq!(state, "completed", "job {id}");
        assert_eq!(*attempt, 2, "job {id} was interrupted once, then completed");
        assert!(error.contains("restart took the job back"), "job {id}: {error}");
    }
    one_job_per_asset(&mut conn, assets.len()).await;
    assert!(server.log_text().contains("took back the jobs this node's previous process left running"));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_share_the_work_and_the_survivor_takes_a_dead_hosts_jobs() {
    let db = TestDb::new().await;
    db.migrate();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = slow_pipeline(dir.path(), 300);
    let workers = [("LUMILIO_PROCESS_ASSET_WORKERS", "4")];
    let a = Server::start_with(&db, &pipeline, &workers).await;
    // One database, one storage folder; its own port, so its own node id.
    let staging = a.data.path().join("staging").display().to_string();
    let storage = a.data.path().join("storage").display().to_string();
    let shared = [
        workers[0],
        ("STAGING_PATH", staging.as_str()),
        ("STORAGE_PATH", storage.as_str()),
    ];
    let mut b = Server::start_with(&db, &pipeline, &shared).await;

    // 200 uploads spread over both hosts.
    let (mut ids, mut next) = (Vec::new(), 0);
    while ids.len() < 200 {
        let server = if next % 2 == 0 { &a } else { &b };
        ids.extend(upload_many(server, &format!("h{next}"), 20).await);
        next += 1;
    }
    let mut conn = db.conn().await;
    // Kill b while it holds running jobs. Its node id is HOSTNAME:PORT by default.
    let b_port = b.base.rsplit(':').next().unwrap().to_owned();
    let held_by_b = "SELECT id FROM river_job WHERE state = 'running'
                       AND attempted_by[cardinality(attempted_by)] LIKE 'lumilio:%:' || $1";
    // Wait for a job b started within the last 100 ms of its 300 ms stage, so it
    // is surely still running when the kill lands.
    let fresh = format!("{held_by_b} AND attempted_at > now() - interval '100 milliseconds'");
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(20),
        async || {
            let fresh: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(fresh.as_str()))
                .bind(&b_port)
                .fetch_all(&mut conn)
                .await
                .unwrap();
            (!fresh.is_empty()).then_some(())
        },
        || "host b running a job".into(),
    )
    .await;
    b.kill9();
    let killed = Instant::now();
    // The fault landed: what b held when it died is left running.
    let held: Vec<i64> = sqlx::query_scalar(held_by_b)
        .bind(&b_port)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(!held.is_empty(), "killed while it held running jobs");
    // The survivor finishes b's jobs, with default settings.
    let left = std::cell::Cell::new(held.len() as i64);
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            left.set(
                sqlx::query_scalar(
                    "SELECT count(*) FROM river_job WHERE id = ANY($1) AND state <> 'completed'",
                )
                .bind(&held)
                .fetch_one(&mut conn)
                .await
                .unwrap(),
            );
            (left.get() == 0).then_some(())
        },
        || format!("the dead host's jobs done after the kill ({} left):\n{}", left.get(), a.log_text()),
    )
    .await;
    eprintln!(
        "{} jobs held by the killed host; all done {:.1} s after the kill",
        held.len(),
        killed.elapsed().as_secs_f64()
    );
    all_done(&db.url, Duration::from_secs(120), || a.log_text()).await;
    one_job_per_asset(&mut conn, ids.len()).await;
    // Both hosts worked; only the dead host's interrupted jobs ran twice.
    let per_host: Vec<(String, i64)> = sqlx::query_as(
        "SELECT attempted_by[1], count(*) FROM river_job WHERE kind = 'process_asset' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    eprintln!("first attempts per host: {per_host:?}");
    assert_eq!(per_host.len(), 2, "both hosts did work: {per_host:?}");
    let twice: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, errors[1]->>'error' FROM river_job WHERE kind = 'process_asset' AND attempt > 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for (id, error) in &twice {
        assert!(held.contains(id), "job {id} ran twice but the killed host did not hold it: {error}");
        assert!(error.contains("another host took the job back"), "job {id}: {error}");
    }
}
