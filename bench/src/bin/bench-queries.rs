//! Issue 15 §4: the queries behind the list, `/similar` and text search at
//! 100,000 photos.
//!
//! Seeds, in SQL, a fresh database migrated by the real `lumilio`: one large
//! user with 100,000 assets (`BENCH_QUERIES_ASSETS=N`; 20,000 with
//! `BENCH_QUICK=1`) and a small one with 1,000 beside it, with dates over ten
//! years, six cameras, eight places, some `failed`/`processing`, and one
//! 512-dimension CLIP embedding each: unit vectors clustered the way a
//! library is (a subject shared by both users, then an event, then the photo),
//! so that neighbours are neither all alike nor random.
//!
//! Then it times the queries as the handlers run them, in-process through
//! `lumilio::db` (p50/p95, each beside its target or its exact peer):
//!
//! * 15.4a the list's first page and a cursor page halfway down (the web app's
//!   `order=taken&limit=200`: `assets::list` + `browse::rendition_names`);
//! * 15.4b each list filter: date range, camera make and model, place, status, location;
//! * 15.4c `/similar` (`embeddings::nearest` as the handler calls it) for the
//!   large and the small user, with recall@10 against the exact ranking
//!   (`embeddings::rank_exact`, also timed), and the query it replaced
//!   (`ORDER BY distance, id`), whose short pages the small user saw;
//! * 15.4d text search's database part (`browse::nearest_filtered` with a fixed
//!   vector), unfiltered and with a place filter;
//! * 15.4e the list's first page and `/similar` over HTTP from the real `lumilio serve`.
//!
//! Every query's `EXPLAIN (ANALYZE, BUFFERS)` is printed, so a missing index shows.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use lumilio::db::assets::{self, ListQuery};
use lumilio::db::browse::{self, Filter};
use lumilio::db::embeddings::{self, Plan, Ranking};
use lumilio_bench::service::{BenchDb, Server, admin_and_host};
use lumilio_bench::library::{self, PAGE, base_query, year};
use lumilio_bench::{Row, Status, Summary, percentiles};
use lumilio_fuzzkit::Rng;
use pgvector::Vector;
use sqlx::PgPool;
use uuid::Uuid;

/// `/similar`'s default page (api/search.rs), plus the one the handler asks
/// for to know whether another page follows.
const SIMILAR_LIMIT: i64 = 21;
/// The model id the seeded embeddings carry.
const MODEL: &str = "bench-clip";
/// Photos of the small user, beside the large one.
const SMALL: usize = 1000;
/// Subjects shared by both users, and photos per event.
const SUBJECTS: u64 = 400;
const EVENT: usize = 25;

#[tokio::main]
async fn main() -> Result<()> {
    let (admin, bin) = admin_and_host()?;
    let n: usize = lumilio_bench::env_or("BENCH_QUERIES_ASSETS", lumilio_bench::rounds(100_000, 20_000));
    let work = lumilio_bench::scratch("bench-queries")?;
    println!("issue 15 §4 benchmarks: {n} assets for one user, {SMALL} for another");

    let db = BenchDb::create(&admin).await?;
    db.migrate(&bin)?;
    let key = db.user(&bin, "large").context("bench-queries needs its users")?;
    db.user(&bin, "small").context("bench-queries needs its users")?;
    let pool = PgPool::connect(&db.url).await?;
    let mut summary = Summary::default();
    let result = async {
        let large: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE name = 'large'").fetch_one(&pool).await?;
        let small: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE name = 'small'").fetch_one(&pool).await?;
        let version: String =
            sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetch_one(&pool).await?;
        println!("  pgvector {version}");
        seed(&pool, large, n, small).await?;
        list(&pool, large, &mut summary).await?;
        similar(&pool, large, small, &mut summary).await?;
        text(&pool, large, &mut summary).await?;
        let server = Server::start(&bin, &db.url, work.path(), Some(&key), &[]).await?;
        let http = over_http(&server, &pool, large, &mut summary).await;
        if http.is_err() {
            eprintln!("--- server log (tail) ---\n{}", server.log_tail(40));
        }
        http
    }
    .await;
    pool.close().await;
    drop(db);
    result?;
    summary.finish()
}

/// Normal samples and directions drawn from the fuzz tests' deterministic
/// generator ([`Rng`], SplitMix64), so every run seeds the same library.
trait Gaussian {
    /// A standard normal sample (Box-Muller).
    fn normal(&mut self) -> f32;
    /// A random direction, unnormalised (components N(0, 1)).
    fn direction(&mut self) -> Vec<f32>;
}

impl Gaussian for Rng {
    fn normal(&mut self) -> f32 {
        let u1 = ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    fn direction(&mut self) -> Vec<f32> {
        (0..embeddings::DIMENSION).map(|_| self.normal()).collect()
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// A subject's direction: the same for both users (they photograph the same things).
fn subject(s: u64) -> Vec<f32> {
    Rng::new(0x5eed_0000 + s).direction()
}

/// Embedding `i` of an owner whose events are numbered from `event_base`:
/// subject + event + photo, as a unit vector.
fn embedding(event_base: u64, i: usize) -> Vec<f32> {
    let event = event_base + (i / EVENT) as u64;
    let mut er = Rng::new(0xe7e7_0000 + event);
    let s = er.next() % SUBJECTS;
    let (subj, ev) = (subject(s), er.direction());
    let mut pr = Rng::new(event << 20 | (i % EVENT) as u64);
    unit(subj.iter().zip(&ev).map(|(s, e)| s + 0.7 * e + 0.5 * pr.normal()).collect())
}

/// The assets in SQL, the embeddings from Rust (in chunks), then the HNSW index
/// rebuilt once (faster than growing it row by row) from its own definition.
async fn seed(pool: &PgPool, large: Uuid, n: usize, small: Uuid) -> Result<()> {
    let t = Instant::now();
    for (owner, from, count) in [(large, 1, n), (small, n + 1, SMALL)] {
        // Ten years of photos, newest first in g; every 50th without a date (the
        // upload time stands in), 1 in 250 failed and 1 in 400 processing, two
        // in three with GPS and a place, six cameras.
        sqlx::query(
            "INSERT INTO assets (id, owner_id, file_name, content_type, size, content_hash, status, reason,
                                 taken_at, taken_at_source, make, model, gps_latitude, gps_longitude,
                                 place_city, place_region, place_country, place_country_code, created_at, updated_at)
             SELECT md5('bench-queries' || g)::uuid, $1, 'IMG_' || g || '.jpg', 'image/jpeg', 3000000,
                    md5('h' || g) || md5('i' || g),
                    CASE WHEN g % 250 = 0 THEN 'failed' WHEN g % 400 = 0 THEN 'processing' ELSE 'ready' END,
                    CASE WHEN g % 250 = 0 THEN 'seeded by bench-queries' END,
                    CASE WHEN g % 50 <> 0 THEN timestamp '2026-01-01' - make_interval(secs => (g - $2) * (315360000.0 / $3)) END,
                    CASE WHEN g % 50 <> 0 THEN 'metadata' END,
                    (ARRAY['Canon','NIKON CORPORATION','Apple','SONY','FUJIFILM','samsung'])[1 + g % 6],
                    (ARRAY['Canon EOS 40D','NIKON D750','iPhone 13','ILCE-7M3','X-T3','SM-G991B'])[1 + g % 6],
                    CASE WHEN g % 3 <> 0 THEN 40 + (g % 17) END, CASE WHEN g % 3 <> 0 THEN 10 + (g % 23) END,
                    CASE WHEN g % 3 <> 0 THEN (ARRAY['Arezzo','Paris','Berlin','Lyon','Florence','Munich','Oslo','Bergen'])[1 + g % 8] END,
                    CASE WHEN g % 3 <> 0 THEN (ARRAY['Tuscany','Ile-de-France','Berlin','Auvergne-Rhone-Alpes','Tuscany','Bavaria','Oslo','Vestland'])[1 + g % 8] END,
                    CASE WHEN g % 3 <> 0 THEN (ARRAY['Italy','France','Germany','France','Italy','Germany','Norway','Norway'])[1 + g % 8] END,
                    CASE WHEN g % 3 <> 0 THEN (ARRAY['IT','FR','DE','FR','IT','DE','NO','NO'])[1 + g % 8] END,
                    now() - make_interval(secs => g - $2), now()
             FROM generate_series($2::int, $2::int + $3::int - 1) g",
        )
        .bind(owner)
        .bind(from as i32)
        .bind(count as i32)
        .execute(pool)
        .await?;
    }
    println!("  assets inserted in {:.1} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let index: String = sqlx::query_scalar(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indexrelid = 'embeddings_hnsw_idx'::regclass",
    )
    .fetch_one(pool)
    .await?;
    sqlx::query("DROP INDEX embeddings_hnsw_idx").execute(pool).await?;
    for (owner, base) in [(large, 0u64), (small, 1 << 30)] {
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM assets WHERE owner_id = $1 ORDER BY file_name")
            .bind(owner)
            .fetch_all(pool)
            .await?;
        for (c, chunk) in ids.chunks(5000).enumerate() {
            let vectors: Vec<Vector> =
                (0..chunk.len()).map(|k| Vector::from(embedding(base, c * 5000 + k))).collect();
            sqlx::query(
                "INSERT INTO embeddings (asset_id, model_id, embedding)
                 SELECT id, $3, v FROM unnest($1::uuid[], $2::vector[]) AS s(id, v)",
            )
            .bind(chunk)
            .bind(&vectors)
            .bind(MODEL)
            .execute(pool)
            .await?;
        }
    }
    println!("  embeddings inserted in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let mut conn = pool.acquire().await?;
    // The default 64 MB would spill the graph to disk halfway and crawl.
    sqlx::query("SET maintenance_work_mem = '1GB'").execute(&mut *conn).await?;
    sqlx::query(sqlx::AssertSqlSafe(index)).execute(&mut *conn).await?;
    drop(conn);
    sqlx::query("ANALYZE").execute(pool).await?;
    println!("  HNSW index rebuilt and ANALYZE done in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// One list page in-process, as the handler runs it; its time and row count.
async fn db_page(pool: &PgPool, owner: Uuid, q: &ListQuery) -> Result<(Duration, usize)> {
    let (took, rows) = library::db_page(pool, owner, q).await?;
    Ok((took, rows.len().min(PAGE as usize)))
}

/// Prints a query plan, indented under its measure.
fn show_plan(what: &str, plan: &str) {
    println!("  EXPLAIN {what}:");
    for line in plan.lines() {
        // The query vector's 512 numbers say nothing about the plan.
        match (line.find("'["), line.find("]'")) {
            (Some(a), Some(b)) if b > a + 80 => println!("    {}'[...]'{}", &line[..a], &line[b + 2..]),
            _ => println!("    {line}"),
        }
    }
}

/// A p95 row against a budget (the peer column names it).
fn budget_row(summary: &mut Summary, measure: String, times: Vec<Duration>, budget_ms: f64) {
    let (p50, p95) = percentiles(times);
    println!("  {measure}: p50 {p50:.1} ms, p95 {p95:.1} ms");
    summary.push(Row {
        measure,
        ours: format!("{p95:.1} ms (p50 {p50:.1})"),
        peer: format!("{budget_ms:.0} ms budget"),
        ratio: format!("{:.2}x", p95 / budget_ms),
        target: format!("p95 < {budget_ms:.0} ms"),
        status: Status::from(p95 < budget_ms),
    });
}

async fn list(pool: &PgPool, owner: Uuid, summary: &mut Summary) -> Result<()> {
    let rounds = lumilio_bench::rounds(30, 10);
    // The cursor halfway down the timeline, as the web app would hold it there.
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM assets WHERE owner_id = $1").bind(owner).fetch_one(pool).await?;
    let (key, id): (DateTime<Utc>, Uuid) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {k}, id FROM assets WHERE owner_id = $1 ORDER BY {k} DESC, id DESC OFFSET $2 LIMIT 1",
        k = assets::TAKEN_KEY
    )))
    .bind(owner)
    .bind(total / 2)
    .fetch_one(pool)
    .await?;
    let mut cases: Vec<(String, ListQuery)> = vec![
        ("15.4a list, first page (order=taken, 200)".into(), base_query()),
        (format!("15.4a list, cursor page at {} of {total}", total / 2), ListQuery { after: Some((key, id)), ..base_query() }),
    ];
    let filters: [(&str, fn(&mut ListQuery)); 7] = [
        ("date range, one year (2019)", |q| { q.taken_from = Some(year(2019)); q.taken_to = Some(year(2020)); }),
        ("camera make=canon", |q| q.make = Some("canon".into())),
        ("camera model=40d", |q| q.model = Some("40d".into())),
        ("place=paris", |q| q.place = Some("paris".into())),
        ("place=no (country code)", |q| q.place = Some("no".into())),
        ("status=failed", |q| q.status = Some("failed".into())),
        ("has_location=true", |q| q.has_location = Some(true)),
    ];
    for (name, f) in filters {
        let mut q = base_query();
        f(&mut q);
        cases.push((format!("15.4b list filter {name}"), q));
    }
    for (measure, q) in cases {
        db_page(pool, owner, &q).await?;
        let mut times = vec![];
        let mut found = 0;
        for _ in 0..rounds {
            let (t, count) = db_page(pool, owner, &q).await?;
            times.push(t);
            found = count;
        }
        show_plan(&measure, &assets::explain_list(pool, owner, &q).await?);
        println!("  {found} assets on the page");
        budget_row(summary, measure, times, 50.0);
    }
    Ok(())
}

/// The `/similar` query before issue 15 (ordered by distance, then id), kept
/// as the peer that shows what the fix changed.
async fn old_similar(pool: &PgPool, owner: Uuid, query: &Vector, exclude: Uuid) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT a.id FROM embeddings e JOIN assets a ON a.id = e.asset_id
         WHERE a.owner_id = $1 AND e.model_id = $3 AND a.id <> $4
         ORDER BY e.embedding <=> $2, a.id LIMIT $5",
    )
    .bind(owner)
    .bind(query)
    .bind(MODEL)
    .bind(exclude)
    .bind(SIMILAR_LIMIT)
    .fetch_all(pool)
    .await?)
}

/// Of the exact top 10, the share `got` has in its first 10.
fn recall_at_10(got: &[Uuid], exact: &[Uuid]) -> f64 {
    let truth: Vec<&Uuid> = exact.iter().take(10).collect();
    if truth.is_empty() {
        return 1.0;
    }
    let hit = got.iter().take(10).filter(|id| truth.contains(id)).count();
    hit as f64 / truth.len() as f64
}

fn ids(hits: &[embeddings::Hit]) -> Vec<Uuid> {
    hits.iter().map(|h| h.asset.id).collect()
}

async fn similar(pool: &PgPool, large: Uuid, small: Uuid, summary: &mut Summary) -> Result<()> {
    let rounds = lumilio_bench::rounds(40, 15);
    let none = Filter::default();
    for (who, owner) in [("large user", large), ("small user beside it", small)] {
        // Query photos spread over the library.
        let queries: Vec<(Uuid, Vector)> = sqlx::query_as(
            "SELECT a.id, e.embedding FROM assets a JOIN embeddings e ON e.asset_id = a.id
             WHERE a.owner_id = $1 ORDER BY md5(a.id::text) LIMIT $2",
        )
        .bind(owner)
        .bind(rounds as i64)
        .fetch_all(pool)
        .await?;
        let (mut ours, mut exact_t, mut old_t) = (vec![], vec![], vec![]);
        let (mut recall, mut old_recall, mut short, mut old_short, mut by_index) = (0.0, 0.0, 0, 0, 0);
        for (i, (id, v)) in queries.iter().enumerate() {
            let r = Ranking { owner, query: v, model_id: MODEL, filter: &none, exclude: Some(*id), max_distance: None, offset: 0, limit: SIMILAR_LIMIT };
            let t = Instant::now();
            let hits = embeddings::nearest(pool, owner, v, MODEL, Some(*id), None, 0, SIMILAR_LIMIT).await?;
            ours.push(t.elapsed());
            let t = Instant::now();
            let exact = embeddings::rank_exact(pool, &r).await?;
            exact_t.push(t.elapsed());
            let t = Instant::now();
            let old = old_similar(pool, owner, v, *id).await?;
            old_t.push(t.elapsed());
            let (hits, exact) = (ids(&hits), ids(&exact));
            recall += recall_at_10(&hits, &exact);
            old_recall += recall_at_10(&old, &exact);
            short += usize::from(hits.len() < exact.len());
            old_short += usize::from(old.len() < exact.len());
            if embeddings::rank(pool, &r).await?.1 == Plan::Index {
                by_index += 1;
            }
            if i == 0 {
                for plan in [Plan::Index, Plan::Exact, Plan::Lookup] {
                    show_plan(&format!("/similar, {who}, {plan:?} plan"), &embeddings::explain_ranking(pool, &r, plan).await?);
                }
            }
        }
        let k = queries.len().max(1) as f64;
        let ((o50, o95), (e50, e95), (p50, p95)) = (percentiles(ours), percentiles(exact_t), percentiles(old_t));
        println!(
            "  /similar, {who}: {} queries, {by_index} served by the index; p50 {o50:.1} ms p95 {o95:.1} ms, recall@10 {:.3}, \
             short pages {short}; exact scan p50 {e50:.1} ms p95 {e95:.1} ms; old query (ORDER BY distance, id) p50 {p50:.1} ms \
             p95 {p95:.1} ms, recall@10 {:.3}, short pages {old_short}",
            queries.len(), recall / k, old_recall / k
        );
        summary.push(Row {
            measure: format!("15.4c /similar p95, {who}"),
            ours: format!("{o95:.1} ms (p50 {o50:.1})"),
            peer: format!("{e95:.1} ms (exact scan)"),
            ratio: format!("{:.2}x", o95 / e95.max(0.001)),
            target: "p95 < 20 ms".into(),
            status: Status::from(o95 < 20.0),
        });
        summary.push(Row {
            measure: format!("15.4c /similar recall@10, {who}"),
            ours: format!("{:.3} ({short} short pages)", recall / k),
            peer: format!("{:.3} old ORDER BY distance, id ({old_short} short)", old_recall / k),
            ratio: "-".into(),
            target: ">= 0.95, no short page".into(),
            status: Status::from(recall / k >= 0.95 && short == 0),
        });
    }
    Ok(())
}

async fn text(pool: &PgPool, owner: Uuid, summary: &mut Summary) -> Result<()> {
    let rounds = lumilio_bench::rounds(30, 10);
    // A text embedding stands near one subject, like "a dog on a beach" near the dog photos.
    let query = Vector::from(unit(subject(7).iter().zip(Rng::new(77).direction()).map(|(s, n)| s + 0.8 * n).collect()));
    let place = Filter { place: Some("paris".into()), ..Filter::default() };
    for (name, filter) in [("no filter", Filter::default()), ("place=paris", place)] {
        let r = Ranking { owner, query: &query, model_id: MODEL, filter: &filter, exclude: None, max_distance: None, offset: 0, limit: 21 };
        let exact = ids(&embeddings::rank_exact(pool, &r).await?);
        let (mut times, mut recall) = (vec![], 0.0);
        for _ in 0..rounds {
            let t = Instant::now();
            let hits = browse::nearest_filtered(pool, owner, &query, MODEL, &filter, 0, 21).await?;
            times.push(t.elapsed());
            recall += recall_at_10(&ids(&hits), &exact);
        }
        let plan = embeddings::rank(pool, &r).await?.1;
        show_plan(&format!("text search, {name}, {plan:?} plan"), &embeddings::explain_ranking(pool, &r, plan).await?);
        println!("  text search {name}: {plan:?} plan, recall@10 {:.3}", recall / rounds as f64);
        budget_row(summary, format!("15.4d text search (db part, fixed vector), {name}"), times, 50.0);
    }
    Ok(())
}

async fn over_http(server: &Server, pool: &PgPool, owner: Uuid, summary: &mut Summary) -> Result<()> {
    let rounds = lumilio_bench::rounds(30, 10);
    let id: Uuid = sqlx::query_scalar("SELECT id FROM assets WHERE owner_id = $1 ORDER BY md5(id::text) LIMIT 1")
        .bind(owner)
        .fetch_one(pool)
        .await?;
    for (name, path) in [
        ("15.4e list API first page over HTTP", format!("/api/v1/assets?order=taken&limit={PAGE}")),
        ("15.4e /similar over HTTP, large user", format!("/api/v1/assets/{id}/similar")),
    ] {
        server.get(&path).await?;
        let mut times = vec![];
        for _ in 0..rounds {
            let t = Instant::now();
            server.get(&path).await?;
            times.push(t.elapsed());
        }
        let budget = if path.ends_with("similar") { 20.0 } else { 50.0 };
        budget_row(summary, name.into(), times, budget);
    }
    Ok(())
}
