//! Which host holds which running job, so that a dead host's jobs are taken
//! back in seconds, not after River's rescue window
//! (`LUMILIO_RESCUE_AFTER_SECS`, 120 s), and a live host's never are.
//!
//! Each host runs its River client under a stable id, `lumilio:NODE`, where
//! NODE is `LUMILIO_NODE_ID` or, by default, `HOSTNAME:PORT` of its listen
//! address; River writes that id into `river_job.attempted_by` on every
//! claim. For as long as the process lives it holds a session advisory lock
//! named by the id, on a connection of its own. Postgres frees the lock the
//! moment that connection closes, which it does when the process dies, even
//! by `kill -9`. So a free lock means "no process of that node is alive":
//!
//! * **At start**, a host takes its own lock (if another live process holds it,
//!   two hosts share one id: it refuses to start), then puts the jobs its
//!   previous process left `running` back to `available` at once.
//! * **Every 3 s** it looks at the other `lumilio:` nodes named by running
//!   jobs. A node whose lock is free at two looks in a row, 3 s apart, is
//!   dead (a live node checks its lock connection every second and re-takes
//!   a lost lock at once): its running jobs go back to `available`, for any
//!   host to take.
//! * **After a database restart** every lock is gone at once, so no host judges
//!   another until the server has been up for 15 s (`pg_postmaster_start_time`),
//!   by which time live hosts hold their locks again.
//!
//! A job whose attempts are used up is discarded instead, and a
//! `process_asset` job's asset is marked `failed` with a reason, rather
//! than left `processing`. Jobs claimed by clients without the `lumilio:` prefix
//! are left to River's own rescuer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::{Connection, PgPool};
use tracing::{info, warn};

/// How often a host looks for dead nodes.
const PERIOD: Duration = Duration::from_secs(3);
/// How often a host checks its own lock connection: well inside [`PERIOD`],
/// so that a live node re-takes a lost lock before a second look judges it.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// Minimum uptime of the database server before any node is judged dead.
const DB_UP_GRACE_SECS: f64 = 15.0;
/// How long a starting host waits for its own lock before refusing to start.
const START_WAIT: Duration = Duration::from_secs(10);

/// What can go wrong taking a node's place.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Another live process holds this node's lock.
    #[error(
        "another lumilio process is running as node {0:?} on this database; give each host its own \
         LUMILIO_NODE_ID (or its own listen port), or stop the other process"
    )]
    InUse(String),
    /// The database failed.
    #[error("node lock: {0}")]
    Db(#[from] sqlx::Error),
}

/// The River client id of node `node`.
pub fn client_id(node: &str) -> String {
    format!("lumilio:{node}")
}

/// The default node id: this machine's host name and the listen port.
pub fn default_node_id(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{port}")
}

/// Takes node `client`'s lock (waiting up to 10 s for a dying predecessor),
/// takes back the jobs its previous process left running, and starts the
/// watch for dead nodes. Call before the River client starts.
pub async fn join(pool: &PgPool, client: &str) -> Result<(), NodeError> {
    let mut conn = connect(pool).await?;
    let deadline = Instant::now() + START_WAIT;
    while !try_lock(&mut conn, client).await? {
        if Instant::now() > deadline {
            return Err(NodeError::InUse(client.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let n = take_back(
        pool,
        client,
        "the host process running this attempt stopped before it finished; its restart took the job back",
    )
    .await?;
    if n > 0 {
        info!(node = client, jobs = n, "took back the jobs this node's previous process left running");
    }
    tokio::spawn(watch(pool.clone(), client.to_owned(), conn));
    Ok(())
}

async fn connect(pool: &PgPool) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect_with(&pool.connect_options()).await
}

/// The advisory lock key of a node: its id, hashed by Postgres.
async fn try_lock(conn: &mut PgConnection, client: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(client)
        .fetch_one(conn)
        .await
}

async fn unlock(conn: &mut PgConnection, client: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(client)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Keeps this node's lock (re-taking it after a lost connection) and takes
/// back the running jobs of dead nodes.
async fn watch(pool: PgPool, me: String, mut conn: PgConnection) {
    // Nodes whose lock was free at the last look, and since when.
    let mut suspects: HashMap<String, Instant> = HashMap::new();
    let mut stopping = std::pin::pin!(crate::signal::shutdown());
    let mut last_sweep = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(KEEPALIVE) => {}
            _ = &mut stopping => return,
        }
        if sqlx::query("SELECT 1").execute(&mut conn).await.is_err() {
            warn!(node = me, "node lock connection lost; taking the lock again");
            conn = relock(&pool, &me).await;
            suspects.clear();
            continue;
        }
        if last_sweep.elapsed() < PERIOD {
            continue;
        }
        last_sweep = Instant::now();
        if let Err(e) = sweep(&pool, &mut conn, &me, &mut suspects).await {
            warn!(node = me, error = %e, "looking for dead nodes failed; trying again in 3 s");
        }
    }
}

/// A new connection holding this node's lock, retried every second.
async fn relock(pool: &PgPool, me: &str) -> PgConnection {
    loop {
        match connect(pool).await {
            Ok(mut c) => match try_lock(&mut c, me).await {
                Ok(true) => {
                    info!(node = me, "node lock held again");
                    return c;
                }
                Ok(false) => warn!(node = me, "node lock is held elsewhere; retrying"),
                Err(e) => warn!(node = me, error = %e, "cannot take the node lock; retrying"),
            },
            Err(e) => warn!(node = me, error = %e, "cannot reach the database for the node lock; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn sweep(
    pool: &PgPool,
    conn: &mut PgConnection,
    me: &str,
    suspects: &mut HashMap<String, Instant>,
) -> Result<(), sqlx::Error> {
    let up: f64 =
        sqlx::query_scalar("SELECT extract(epoch FROM now() - pg_postmaster_start_time())::float8")
            .fetch_one(&mut *conn)
            .await?;
    if up < DB_UP_GRACE_SECS {
        suspects.clear();
        return Ok(());
    }
    let holders: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT attempted_by[cardinality(attempted_by)] FROM river_job
         WHERE state = 'running' AND cardinality(attempted_by) > 0",
    )
    .fetch_all(pool)
    .await?;
    let others: Vec<String> = holders
        .into_iter()
        .filter(|h| h.starts_with("lumilio:") && h != me)
        .collect();
    suspects.retain(|s, _| others.contains(s));
    for node in others {
        if !try_lock(conn, &node).await? {
            suspects.remove(&node);
            continue;
        }
        // Free twice in a row, a period apart: dead. Take its jobs while
        // holding its lock, so that it cannot come back halfway.
        let dead = suspects
            .get(&node)
            .is_some_and(|since| since.elapsed() >= PERIOD - KEEPALIVE / 2);
        let result = if dead {
            take_back(
                pool,
                &node,
                "the host running this attempt died (its node lock was free); another host took the job back",
            )
            .await
            .map(|n| {
                if n > 0 {
                    warn!(dead = node, jobs = n, by = me, "took back a dead node's running jobs");
                }
            })
        } else {
            suspects.insert(node.clone(), Instant::now());
            Ok(())
        };
        unlock(conn, &node).await?;
        if dead {
            suspects.remove(&node);
        }
        result?;
    }
    Ok(())
}

/// Puts node `client`'s running jobs back to `available` (or discards those
/// out of attempts, failing their asset with a reason). Returns how many.
pub async fn take_back(pool: &PgPool, client: &str, why: &str) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "UPDATE river_job SET
            state = (CASE WHEN attempt >= max_attempts THEN 'discarded' ELSE 'available' END)::river_job_state,
            finalized_at = CASE WHEN attempt >= max_attempts THEN now() END,
            scheduled_at = now(),
            errors = array_append(errors, jsonb_build_object(
                'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                'attempt', attempt, 'error', $2::text, 'trace', '')),
            metadata = metadata || jsonb_build_object('lumilio_taken_back',
                coalesce((metadata ->> 'lumilio_taken_back')::int, 0) + 1)
         WHERE state = 'running' AND attempted_by[cardinality(attempted_by)] = $1
         RETURNING id, kind, state::text",
    )
    .bind(client)
    .bind(why)
    .fetch_all(&mut *tx)
    .await?;
    let discarded: Vec<i64> = rows
        .iter()
        .filter(|(_, kind, state)| kind == "process_asset" && state == "discarded")
        .map(|(id, _, _)| *id)
        .collect();
    if !discarded.is_empty() {
        sqlx::query(
            "UPDATE assets SET status = 'failed', updated_at = now(),
                reason = 'processing was interrupted on every attempt (the host stopped each time); reprocess the asset to try again'
             WHERE job_id = ANY($1) AND status = 'processing'",
        )
        .bind(&discarded)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(rows.len() as u64)
}
