//! Embeddings (pgvector) and predictions, and the searches over them.

use pgvector::Vector;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::assets::Asset;

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

/// Replaces an asset's predictions.
pub async fn save_predictions(
    conn: &mut PgConnection,
    asset: Uuid,
    labels: &[(String, f32)],
    source: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM predictions WHERE asset_id = $1")
        .bind(asset)
        .execute(&mut *conn)
        .await?;
    for (label, score) in labels {
        sqlx::query(
            "INSERT INTO predictions (asset_id, label, score, source) VALUES ($1, $2, $3, $4)
             ON CONFLICT (asset_id, label) DO UPDATE SET score = GREATEST(predictions.score, EXCLUDED.score)",
        )
        .bind(asset)
        .bind(label)
        .bind(score)
        .bind(source)
        .execute(&mut *conn)
        .await?;
    }
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
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        asset: Asset,
        distance: f64,
    }
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {}, (e.embedding <=> $2) AS distance
         FROM embeddings e JOIN assets a ON a.id = e.asset_id
         WHERE a.owner_id = $1 AND e.model_id = $3 AND ($4::uuid IS NULL OR a.id <> $4)
           AND ($5::float8 IS NULL OR (e.embedding <=> $2) < $5)
         ORDER BY e.embedding <=> $2, a.id
         OFFSET $6 LIMIT $7",
        super::assets::asset_columns_of("a")
    )))
    .bind(owner)
    .bind(query)
    .bind(model_id)
    .bind(exclude)
    .bind(max_distance)
    .bind(offset)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Hit {
            asset: r.asset,
            distance: r.distance,
        })
        .collect())
}
