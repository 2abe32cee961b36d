//! docs/adding-a-queue.md, followed step by step, so the guide cannot drift
//! from the code: job args with a kind and a queue, a worker, registration
//! through `lumilio::queue::Queues` (as `lumilio::app::queues` does), and
//! enqueueing inside the caller's transaction. A committed job is worked; a
//! rolled-back transaction leaves no job behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lumilio::queue::{QueueSettings, Queues};
use riverqueue::{Job, JobState, WorkContext, WorkOutcome, Worker};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::TestDb;

// Step 1: the job's arguments, its kind and its queue (guide: "Job args and kind").

/// Queue name of [`Touch`] jobs.
const TOUCH_QUEUE: &str = "touch";

/// Touches one asset. Carries only the id.
#[derive(Clone, Debug, Deserialize, Serialize, riverqueue::JobArgs)]
#[river(kind = "touch", queue = "touch", max_attempts = 5)]
struct Touch {
    asset_id: Uuid,
}

// Step 2: the worker (guide: "The worker").

/// Why a `touch` attempt failed (River retries it with backoff).
#[derive(Debug, thiserror::Error)]
enum TouchError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("queue error: {0}")]
    Queue(#[from] riverqueue::Error),
}

/// Works `touch` jobs.
struct TouchWorker {
    pool: PgPool,
    worked: Arc<AtomicUsize>,
}

impl Worker<Touch> for TouchWorker {
    type Error = TouchError;

    async fn work(&self, context: WorkContext, job: Job<Touch>) -> Result<WorkOutcome, TouchError> {
        // The job's effects and its completion commit together.
        let mut tx = riverqueue::database::begin_postgres(&self.pool).await?;
        assert_ne!(job.args.asset_id, Uuid::nil());
        self.worked.fetch_add(1, Ordering::SeqCst);
        context.job_complete_tx(&mut tx).await?;
        tx.commit().await?;
        Ok(WorkOutcome::Complete)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_added_as_the_guide_says_is_worked() {
    let db = TestDb::new().await;
    db.migrate();
    let pool = lumilio::db::connect(&db.url, 5).await.unwrap();
    let worked = Arc::new(AtomicUsize::new(0));

    // Steps 3 and 4: the queue's worker count, and registration.
    let settings = QueueSettings::default();
    let mut queues = Queues::new(pool.clone(), &settings);
    queues
        .add(
            TOUCH_QUEUE,
            2,
            TouchWorker {
                pool: pool.clone(),
                worked: worked.clone(),
            },
        )
        .unwrap();
    let river = queues.build().unwrap();

    // Step 5: enqueue inside the caller's transaction; rolled back, nothing is queued.
    let mut tx = riverqueue::database::begin_postgres(&pool).await.unwrap();
    let dropped = river
        .insert(Touch {
            asset_id: Uuid::new_v4(),
        })
        .tx(&mut tx)
        .await
        .unwrap()
        .job
        .row
        .id;
    tx.rollback().await.unwrap();
    let mut tx = riverqueue::database::begin_postgres(&pool).await.unwrap();
    let kept = river
        .insert(Touch {
            asset_id: Uuid::new_v4(),
        })
        .tx(&mut tx)
        .await
        .unwrap()
        .job
        .row
        .id;
    tx.commit().await.unwrap();

    let mut run = river.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = river.jobs().get(kept).await.unwrap();
        if job.state == JobState::Completed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job was not worked: {:?}",
            job.state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(worked.load(Ordering::SeqCst), 1, "worked exactly once");
    assert!(
        matches!(
            river.jobs().get(dropped).await,
            Err(riverqueue::Error::NotFound(_))
        ),
        "a rolled-back insert leaves no job"
    );
    run.stopper().stop();
    let _ = tokio::time::timeout(Duration::from_secs(10), run.wait()).await;
}
