//! Both migration lines go up, down and up again; `serve` refuses a stale schema.

use crate::harness::{TestDb, repo};

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// How many migrations `migrate-list` shows in `state`.
fn count(list: &str, state: &str) -> usize {
    list.lines()
        .filter(|l| l.trim_end().ends_with(state))
        .count()
}

async fn tables(db: &TestDb) -> Vec<String> {
    let mut c = db.conn().await;
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn both_lines_up_down_up() {
    let db = TestDb::new().await;
    let list = ok(db.lumilio(&["migrate-list"]));
    assert_eq!(
        (count(&list, " pending"), count(&list, " applied")),
        (18, 0),
        "{list}"
    );

    db.migrate();
    let list = ok(db.lumilio(&["migrate-list"]));
    assert_eq!(
        (count(&list, " pending"), count(&list, " applied")),
        (0, 18),
        "{list}"
    );
    let t = tables(&db).await;
    for want in [
        "assets",
        "users",
        "stage_results",
        "renditions",
        "embeddings",
        "sidecars",
        "river_job",
        "river_migration",
    ] {
        assert!(t.contains(&want.to_owned()), "missing {want} in {t:?}");
    }
    // pgvector works: a 512-dimension vector round-trips.
    let mut c = db.conn().await;
    let dims: i32 =
        sqlx::query_scalar("SELECT vector_dims(array_fill(0.5, ARRAY[512])::vector(512))")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(dims, 512);

    // Down: the app line first (its tables reference nothing of River's), then main.
    ok(db.lumilio(&["migrate-down", "--line", "app", "--max-steps", "100"]));
    ok(db.lumilio(&["migrate-down", "--line", "main", "--max-steps", "100"]));
    let t = tables(&db).await;
    assert!(
        t.iter().all(|t| t == "lumilio_migration"),
        "only the app line's bookkeeping table may remain: {t:?}"
    );
    let list = ok(db.lumilio(&["migrate-list"]));
    assert_eq!(count(&list, " applied"), 0, "{list}");

    db.migrate();
    assert!(tables(&db).await.contains(&"assets".to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_to_start_with_missing_migrations() {
    let db = TestDb::new().await;
    ok(db.lumilio(&["migrate-up", "--line", "main"]));
    let out = std::process::Command::new(crate::harness::bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &db.url)
        .env("LUMILIO_PIPELINE", repo().join("pipeline.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lumilio migrate-up --line app"),
        "names the command to run: {err}"
    );
}
