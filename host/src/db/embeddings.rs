//! Embeddings (pgvector) and predictions, and the searches over them.

use pgvector::Vector;
use sqlx::Arguments as _;
use sqlx::postgres::PgArguments;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::assets::Asset;
use super::browse::Filter;

/// Dimensions of the `embeddings.embedding` column.
pub const DIMENSION: usize = 512;

/// Stores an asset's embedding, replacing an earlier one.
pub async fn save_embedding(
    conn: &mut PgConnection,
    asset: Uuid,
    model_id: &str,
    vector: Vec<f32>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO embeddings (asset_id, model_id, embedding) VALUES ($1, $2, $3)
         ON CONFLICT (asset_id) DO UPDATE SET model_id = EXCLUDED.model_id, embedding = EXCLUDED.embedding, created_at = now()",
    )
    .bind(asset)
    .bind(model_id)
    .bind(Vector::from(vector))
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces an asset's predictions, in one statement: the new labels are
/// upserted and any other label deleted.
pub async fn save_predictions(
    conn: &mut PgConnection,
    asset: Uuid,
    labels: &[(String, f32)],
    source: &str,
) -> Result<(), sqlx::Error> {
    // A label named twice keeps its best score.
    sqlx::query(
        "WITH gone AS (DELETE FROM predictions WHERE asset_id = $1 AND label <> ALL($2))
         INSERT INTO predictions (asset_id, label, score, source)
         SELECT $1, label, max(score), $4 FROM unnest($2::text[], $3::float4[]) AS p(label, score)
         GROUP BY label
         ON CONFLICT (asset_id, label) DO UPDATE SET score = EXCLUDED.score, source = EXCLUDED.source",
    )
    .bind(asset)
    .bind(labels.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>())
    .bind(labels.iter().map(|(_, s)| *s).collect::<Vec<f32>>())
    .bind(source)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// An asset's predictions, best first, as JSON objects.
pub async fn predictions(
    pool: &PgPool,
    asset: Uuid,
) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT jsonb_build_object('label', label, 'score', score, 'source', source)
         FROM predictions WHERE asset_id = $1 ORDER BY score DESC, label",
    )
    .bind(asset)
    .fetch_all(pool)
    .await
}

/// An asset's embedding and model, if it has one.
pub async fn embedding_of(
    pool: &PgPool,
    asset: Uuid,
) -> Result<Option<(Vector, String)>, sqlx::Error> {
    sqlx::query_as("SELECT embedding, model_id FROM embeddings WHERE asset_id = $1")
        .bind(asset)
        .fetch_optional(pool)
        .await
}

/// One search hit.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The asset.
    pub asset: Asset,
    /// Cosine distance to the query (0 = same direction).
    pub distance: f64,
}

/// The owner's assets ranked by cosine distance to `query`, among embeddings of `model_id`.
#[allow(clippy::too_many_arguments)]
pub async fn nearest(
    pool: &PgPool,
    owner: Uuid,
    query: &Vector,
    model_id: &str,
    exclude: Option<Uuid>,
    max_distance: Option<f64>,
    offset: i64,
    limit: i64,
) -> Result<Vec<Hit>, sqlx::Error> {
    let filter = Filter::default();
    let r = Ranking {
        owner,
        query,
        model_id,
        filter: &filter,
        exclude,
        max_distance,
        offset,
        limit,
    };
    Ok(rank(pool, &r).await?.0)
}

/// pgvector's largest `hnsw.ef_search`: the most candidates one index scan returns.
pub const MAX_EF_SEARCH: i64 = 1000;

/// The fewest candidates asked of the index. At 100, `bench-queries` measured
/// recall@10 between 0.945 and 0.98 for `/similar` over 100,000 clustered
/// embeddings (the HNSW graph differs from build to build; target 0.95).
pub const MIN_EF_SEARCH: i64 = 200;

/// An owner with at most this many assets is ranked exactly, from their own
/// embeddings looked up by asset id ([`Plan::Lookup`]), since
/// the index, whose scan is shared by every owner, would mostly return other
/// people's photos and the page would be recomputed exactly anyway.
pub const EXACT_MAX_ASSETS: i64 = 2000;

/// How a ranking was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The HNSW index's nearest `hnsw.ef_search` embeddings, then the owner and filters.
    Index,
    /// Every embedding that passes the filters, found by a scan of all
    /// embeddings joined to the owner's assets, sorted: always complete.
    Exact,
    /// A small owner's embeddings, looked up one by one by asset id and
    /// sorted: always complete, and for [`EXACT_MAX_ASSETS`] assets several
    /// times cheaper than [`Plan::Exact`]'s scan of everyone's embeddings.
    Lookup,
}

/// One page of a similarity ranking: whose photos, near what, which ones, and where.
#[derive(Debug, Clone)]
pub struct Ranking<'a> {
    /// Only this owner's assets.
    pub owner: Uuid,
    /// The vector to rank against.
    pub query: &'a Vector,
    /// Only embeddings of this model.
    pub model_id: &'a str,
    /// The list's filters (status, dates, camera, place...).
    pub filter: &'a Filter,
    /// Leave this asset out (the photo whose similar ones are asked for).
    pub exclude: Option<Uuid>,
    /// Only hits closer than this.
    pub max_distance: Option<f64>,
    /// Hits to skip (the page's offset).
    pub offset: i64,
    /// Hits to return at most.
    pub limit: i64,
}

/// The `hnsw.ef_search` for a page: enough candidates to fill it, at least
/// [`MIN_EF_SEARCH`] (recall), at most [`MAX_EF_SEARCH`] (pgvector's limit).
/// `None` when the page lies deeper than any index scan reaches.
pub fn ef_search_for(offset: i64, limit: i64) -> Option<i64> {
    let need = offset.saturating_add(limit);
    (need <= MAX_EF_SEARCH).then_some(need.max(MIN_EF_SEARCH))
}

/// The ranking's SQL for `plan`. All order by distance, then id, so ties keep
/// their order from page to page; the candidates are MATERIALIZED so that the
/// index scan's LIMIT (the index path), the owner's whole set (the exact
/// path) or the owner's top of the page (the lookup path) is what gets
/// sorted, whatever the planner would prefer.
pub fn ranking_sql(plan: Plan) -> String {
    let columns = super::assets::asset_columns_of("a");
    let filters = format!(
        "a.owner_id = $1
           AND ($4::text IS NULL OR a.status = $4)
           AND ($5::text IS NULL OR a.content_type = $5)
           AND ($6::timestamp IS NULL OR a.taken_at >= $6)
           AND ($7::timestamp IS NULL OR a.taken_at < $7)
           AND ($8::text IS NULL OR strpos(lower(a.make), lower($8)) > 0)
           AND ($9::text IS NULL OR strpos(lower(a.model), lower($9)) > 0)
           AND ($10::bool IS NULL OR (a.gps_latitude IS NOT NULL AND a.gps_longitude IS NOT NULL) = $10)
           AND ({})
           AND ($12::uuid IS NULL OR a.id <> $12)",
        super::assets::place_matches(11, "a.")
    );
    let (candidates, outer_filters) = match plan {
        // The index scan cannot see owners or filters (pgvector applies them
        // after the scan), so they come after it.
        Plan::Index => (INDEX_CANDIDATES.to_owned(), filters.as_str()),
        Plan::Exact => (
            format!(
                "SELECT e.asset_id, e.embedding <=> $2 AS distance
                 FROM embeddings e JOIN assets a ON a.id = e.asset_id
                 WHERE e.model_id = $3 AND {filters}"
            ),
            "true",
        ),
        // `OFFSET 0` keeps the planner from flattening the lateral lookup into
        // a join, which it would answer with a scan of every owner's embeddings;
        // the distance is computed in it, so no ORDER BY can reach the HNSW index
        // (whose scan stops at ef_search rows). Only the page's top rows leave the
        // CTE, so only they are joined to their assets again.
        Plan::Lookup => (
            format!(
                "SELECT a.id AS asset_id, s.distance
                 FROM assets a CROSS JOIN LATERAL (
                     SELECT e.embedding <=> $2 AS distance FROM embeddings e
                     WHERE e.asset_id = a.id AND e.model_id = $3 OFFSET 0) s
                 WHERE {filters} AND ($13::float8 IS NULL OR s.distance < $13)
                 ORDER BY s.distance, a.id
                 LIMIT $14 + $15"
            ),
            "true",
        ),
    };
    format!(
        "WITH c AS MATERIALIZED ({candidates})
         SELECT {columns}, c.distance
         FROM c JOIN assets a ON a.id = c.asset_id
         WHERE {outer_filters} AND ($13::float8 IS NULL OR c.distance < $13)
         ORDER BY c.distance, a.id
         OFFSET $14 LIMIT $15"
    )
}

/// The index path's candidates: the `$16` (= `hnsw.ef_search`) nearest of every owner.
const INDEX_CANDIDATES: &str = "SELECT e.asset_id, e.embedding <=> $2 AS distance FROM embeddings e
     WHERE e.model_id = $3 ORDER BY e.embedding <=> $2 LIMIT $16";

/// The ranking's arguments, in the order [`ranking_sql`] numbers them.
fn ranking_args(r: &Ranking<'_>, ef_search: i64) -> Result<PgArguments, sqlx::Error> {
    let mut args = PgArguments::default();
    let f = r.filter;
    let add = |e: Result<(), sqlx::error::BoxDynError>| e.map_err(sqlx::Error::Encode);
    add(args.add(r.owner))?;
    add(args.add(r.query))?;
    add(args.add(r.model_id))?;
    add(args.add(&f.status))?;
    add(args.add(&f.content_type))?;
    add(args.add(f.taken_from))?;
    add(args.add(f.taken_to))?;
    add(args.add(&f.make))?;
    add(args.add(&f.model))?;
    add(args.add(f.has_location))?;
    add(args.add(&f.place))?;
    add(args.add(r.exclude))?;
    add(args.add(r.max_distance))?;
    add(args.add(r.offset))?;
    add(args.add(r.limit))?;
    add(args.add(ef_search))?;
    Ok(args)
}

/// Whether the owner has more than [`EXACT_MAX_ASSETS`] assets (an index-only
/// scan that stops there, so it costs the same for any library size).
async fn owner_is_large(conn: &mut PgConnection, owner: Uuid) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM assets WHERE owner_id = $1 LIMIT $2) s",
    )
    .bind(owner)
    .bind(EXACT_MAX_ASSETS + 1)
    .fetch_one(conn)
    .await?;
    Ok(n > EXACT_MAX_ASSETS)
}

/// One page of `r`, and how it was computed.
///
/// A small owner's page ([`EXACT_MAX_ASSETS`] assets at most) is computed
/// exactly by looking up their own embeddings ([`Plan::Lookup`]). A large
/// owner's page comes from the HNSW index (tens of ms at 100,000 embeddings,
/// where the exact sort took seconds). But pgvector's scan
/// returns at most `hnsw.ef_search` embeddings of every owner, and the owner
/// and filters only thin them afterwards; without iterative scans (pgvector
/// 0.6) that can leave a page short or empty although the owner has matches.
/// So a short page is asked again of the widest scan ([`MAX_EF_SEARCH`]), then
/// recomputed exactly, unless the scan already reached
/// past `max_distance` (then the page is short because few photos are that close).
pub async fn rank(pool: &PgPool, r: &Ranking<'_>) -> Result<(Vec<Hit>, Plan), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let large = owner_is_large(&mut tx, r.owner).await?;
    let Some(ef) = ef_search_for(r.offset, r.limit).filter(|_| large) else {
        let plan = if large { Plan::Exact } else { Plan::Lookup };
        let hits = run(&mut tx, r, plan, 0).await?;
        tx.commit().await?;
        return Ok((hits, plan));
    };
    let mut hits = run(&mut tx, r, Plan::Index, ef).await?;
    let mut done = complete(&mut tx, r, &hits, ef).await?;
    // A filter that keeps few photos (a place, a year) often fills its page
    // from the widest scan pgvector allows, at a fraction of an exact sort.
    if !done && ef < MAX_EF_SEARCH {
        hits = run(&mut tx, r, Plan::Index, MAX_EF_SEARCH).await?;
        done = complete(&mut tx, r, &hits, MAX_EF_SEARCH).await?;
    }
    let answer = if done {
        (hits, Plan::Index)
    } else {
        tracing::debug!(owner = %r.owner, found = hits.len(), "index page short; ranking exactly");
        (run(&mut tx, r, Plan::Exact, 0).await?, Plan::Exact)
    };
    tx.commit().await?;
    Ok(answer)
}

/// Whether an index page is the whole answer: full, or short only because
/// the scan (`ef` candidates) already reached past `max_distance`.
async fn complete(
    conn: &mut PgConnection,
    r: &Ranking<'_>,
    hits: &[Hit],
    ef: i64,
) -> Result<bool, sqlx::Error> {
    let Some(max) = r.max_distance.filter(|_| (hits.len() as i64) < r.limit) else {
        return Ok(hits.len() as i64 >= r.limit);
    };
    // The same scan as the page's (same ef, same transaction), asked only how far it got.
    let reach: Option<f64> = sqlx::query_scalar_with(
        sqlx::AssertSqlSafe(format!("SELECT max(distance) FROM ({INDEX_CANDIDATES}) c")),
        ranking_args(r, ef)?,
    )
    .fetch_one(conn)
    .await?;
    Ok(reach.is_some_and(|reach| reach >= max))
}

/// One page by `plan` (`ef` sets `hnsw.ef_search` for this transaction).
async fn run(
    conn: &mut PgConnection,
    r: &Ranking<'_>,
    plan: Plan,
    ef: i64,
) -> Result<Vec<Hit>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        asset: Asset,
        distance: f64,
    }
    if plan == Plan::Index {
        set_ef_search(&mut *conn, ef).await?;
    }
    // Not a prepared statement: after five runs Postgres would switch to a
    // generic plan, which cannot see whose photos these are and picks a
    // parallel scan sized for the average owner (a small owner's lookup took
    // 10-12 ms that way instead of 5). Planning each time costs about 0.1 ms.
    let rows: Vec<Row> =
        sqlx::query_as_with(sqlx::AssertSqlSafe(ranking_sql(plan)), ranking_args(r, ef)?)
            .persistent(false)
            .fetch_all(conn)
            .await?;
    Ok(rows
        .into_iter()
        .map(|row| Hit {
            asset: row.asset,
            distance: row.distance,
        })
        .collect())
}

/// `SET LOCAL hnsw.ef_search`: for the current transaction only.
async fn set_ef_search(conn: &mut PgConnection, ef: i64) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('hnsw.ef_search', $1, true)")
        .bind(ef.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of `r` by `plan`, as [`rank`] would run it
/// (for `bench-queries`, which prints it so that a missing index shows).
pub async fn explain_ranking(
    pool: &PgPool,
    r: &Ranking<'_>,
    plan: Plan,
) -> Result<String, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ef = ef_search_for(r.offset, r.limit).unwrap_or(MAX_EF_SEARCH);
    if plan == Plan::Index {
        set_ef_search(&mut tx, ef).await?;
    }
    let plan_text = super::explain(&mut *tx, &ranking_sql(plan), ranking_args(r, ef)?).await?;
    tx.commit().await?;
    Ok(plan_text)
}

/// Exactly the ranking `r` (for `bench-queries`' recall, and tests): the
/// answer the index path approximates.
pub async fn rank_exact(pool: &PgPool, r: &Ranking<'_>) -> Result<Vec<Hit>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    run(&mut conn, r, Plan::Exact, 0).await
}
