//! Similarity ranking over the HNSW index (issue 15 §4), on a real database
//! through `lumilio::db`: pgvector's index scan returns at most
//! `hnsw.ef_search` embeddings of every owner before the owner and the filters
//! thin them, so a small library beside a large one, or a rare filter, must
//! still get full pages, equal to the exact ranking.

use lumilio::db::browse::{self, Filter};
use lumilio::db::embeddings::{self, EXACT_MAX_ASSETS, Hit, Plan, Ranking};
use pgvector::Vector;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::TestDb;

const MODEL: &str = "test-clip";

/// `axis` (a unit vector) plus small per-photo noise, deterministic in `seed`.
fn near(axis: &[f32], seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    axis.iter()
        .map(|a| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            a + ((x % 2001) as f32 / 1000.0 - 1.0) * 0.005
        })
        .collect()
}

fn axis(weights: &[(usize, f32)]) -> Vec<f32> {
    let mut v = vec![0.0; embeddings::DIMENSION];
    for (i, w) in weights {
        v[*i] = *w;
    }
    v
}

/// `count` assets for `owner`, the first `embedded` of them with an embedding near `axis`.
async fn library(pool: &PgPool, owner: Uuid, tag: &str, count: i32, embedded: usize, axis: &[f32]) -> Vec<Uuid> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO assets (id, owner_id, file_name, content_type, size, content_hash, status)
         SELECT md5($2 || g)::uuid, $1, 'p' || g || '.jpg', 'image/jpeg', 1, md5($2 || g) || md5(g::text),
                CASE WHEN g % 100 = 0 THEN 'failed' ELSE 'ready' END
         FROM generate_series(1, $3) g RETURNING id",
    )
    .bind(owner)
    .bind(tag)
    .bind(count)
    .fetch_all(pool)
    .await
    .unwrap();
    let with: Vec<Uuid> = ids.iter().take(embedded).copied().collect();
    let vectors: Vec<Vector> = (0..with.len()).map(|i| Vector::from(near(axis, i as u64 + 1))).collect();
    sqlx::query(
        "INSERT INTO embeddings (asset_id, model_id, embedding)
         SELECT id, $3, v FROM unnest($1::uuid[], $2::vector[]) AS s(id, v)",
    )
    .bind(&with)
    .bind(&vectors)
    .bind(MODEL)
    .execute(pool)
    .await
    .unwrap();
    ids
}

async fn user(pool: &PgPool, name: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM users WHERE name = $1").bind(name).fetch_one(pool).await.unwrap()
}

fn ids(hits: &[Hit]) -> Vec<Uuid> {
    hits.iter().map(|h| h.asset.id).collect()
}

/// Pages of 20 (asked as 21, as the handlers do) until one is short,
/// concatenated: what a client paging through `/similar` sees.
async fn paged(pool: &PgPool, owner: Uuid, query: &Vector, filter: &Filter) -> Vec<Uuid> {
    let mut all = vec![];
    for page in 0.. {
        let hits = browse::nearest_filtered(pool, owner, query, MODEL, filter, page * 20, 21).await.unwrap();
        all.extend(ids(&hits).into_iter().take(20));
        if hits.len() < 21 {
            return all;
        }
    }
    unreachable!()
}

#[tokio::test]
async fn a_small_library_beside_a_large_one_gets_full_pages() {
    let db = TestDb::new().await;
    db.migrate();
    for name in ["large", "small", "sparse"] {
        db.user(name);
    }
    let pool = lumilio::db::connect(&db.url, 4).await.unwrap();
    let (large, small, sparse) = (user(&pool, "large").await, user(&pool, "small").await, user(&pool, "sparse").await);
    // The large library lies right around the query; the others farther off,
    // so every embedding the index returns first is the large owner's.
    let query = Vector::from(axis(&[(0, 1.0)]));
    library(&pool, large, "l", 3000, 3000, &axis(&[(0, 1.0)])).await;
    library(&pool, small, "s", 45, 45, &axis(&[(0, 1.0), (1, 0.5)])).await;
    // More assets than the exact path takes at once, few of them embedded:
    // the index path runs, comes back short, and must fall back.
    let sparse_count = i32::try_from(EXACT_MAX_ASSETS).unwrap() + 10;
    library(&pool, sparse, "p", sparse_count, 45, &axis(&[(0, 1.0), (2, 0.5)])).await;
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();

    let none = Filter::default();
    for (who, owner, by) in [("small", small, Plan::Lookup), ("sparse", sparse, Plan::Exact)] {
        let r = Ranking { owner, query: &query, model_id: MODEL, filter: &none, exclude: None, max_distance: None, offset: 0, limit: 100 };
        let exact = ids(&embeddings::rank_exact(&pool, &r).await.unwrap());
        assert_eq!(exact.len(), 45, "{who}: the exact ranking sees all 45");
        let (hits, plan) = embeddings::rank(&pool, &r).await.unwrap();
        assert_eq!((ids(&hits), plan), (exact.clone(), by), "{who}: the whole ranking, and how");
        let first = embeddings::nearest(&pool, owner, &query, MODEL, None, None, 0, 21).await.unwrap();
        assert_eq!(ids(&first), exact[..21], "{who}: the first page is the exact top 21");
        assert_eq!(paged(&pool, owner, &query, &none).await, exact, "{who}: the pages add up to the exact ranking");
    }

    // The large owner's page comes from the index, full and exact here.
    let r = Ranking { owner: large, query: &query, model_id: MODEL, filter: &none, exclude: None, max_distance: None, offset: 0, limit: 21 };
    let (hits, plan) = embeddings::rank(&pool, &r).await.unwrap();
    assert_eq!(plan, Plan::Index);
    assert_eq!(ids(&hits), ids(&embeddings::rank_exact(&pool, &r).await.unwrap()));

    // A rare filter over the large library (30 failed photos of 3,000): the
    // index's candidates hold few of them, so the page is completed exactly.
    let failed = Filter { status: Some("failed".into()), ..Filter::default() };
    let r = Ranking { filter: &failed, limit: 100, ..r };
    let exact = ids(&embeddings::rank_exact(&pool, &r).await.unwrap());
    assert_eq!(exact.len(), 30);
    assert_eq!(paged(&pool, large, &query, &failed).await, exact);

    // Near-duplicates (a distance bound) closer than any photo: the index
    // scan went past the bound, so the empty page is the answer, not a reason
    // to scan 3,000 embeddings exactly.
    let r = Ranking { filter: &none, max_distance: Some(1e-9), limit: 21, ..r };
    let (hits, plan) = embeddings::rank(&pool, &r).await.unwrap();
    assert!(hits.is_empty());
    assert_eq!(plan, Plan::Index);
    pool.close().await;
}
