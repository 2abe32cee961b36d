//! Filters shared by the asset list and text search (the web app's search
//! page), and the filtered form of the nearest-neighbour query.

use chrono::NaiveDateTime;
use pgvector::Vector;
use sqlx::PgPool;
use uuid::Uuid;

use super::embeddings::Hit;

/// Which assets to consider; every `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this status.
    pub status: Option<String>,
    /// Only this content type.
    pub content_type: Option<String>,
    /// Taken at or after.
    pub taken_from: Option<NaiveDateTime>,
    /// Taken before.
    pub taken_to: Option<NaiveDateTime>,
    /// Camera make contains this (case-insensitive).
    pub make: Option<String>,
    /// Camera model contains this (case-insensitive).
    pub model: Option<String>,
    /// With (true) or without (false) GPS coordinates.
    pub has_location: Option<bool>,
    /// City, region, country or country code equals this (case-insensitive).
    pub place: Option<String>,
}

/// The owner's assets among `filter`, ranked by cosine distance to `query`
/// among embeddings of `model_id` (see [`super::embeddings::rank`]).
pub async fn nearest_filtered(
    pool: &PgPool,
    owner: Uuid,
    query: &Vector,
    model_id: &str,
    filter: &Filter,
    offset: i64,
    limit: i64,
) -> Result<Vec<Hit>, sqlx::Error> {
    let r = super::embeddings::Ranking {
        owner,
        query,
        model_id,
        filter,
        exclude: None,
        max_distance: None,
        offset,
        limit,
    };
    Ok(super::embeddings::rank(pool, &r).await?.0)
}

/// The rendition names of each of these assets (one query for a page of a list).
pub async fn rendition_names(
    pool: &PgPool,
    assets: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<String>>, sqlx::Error> {
    let rows: Vec<(Uuid, Vec<String>)> = sqlx::query_as(
        "SELECT asset_id, array_agg(name ORDER BY name) FROM renditions
         WHERE asset_id = ANY($1) GROUP BY asset_id",
    )
    .bind(assets)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Sets an owner's asset's favourite flag; false if the owner has no such asset.
pub async fn set_favorite(
    pool: &PgPool,
    owner: Uuid,
    id: Uuid,
    favorite: bool,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE assets SET is_favorite = $3, updated_at = now() WHERE id = $1 AND owner_id = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(favorite)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}
