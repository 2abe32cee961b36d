//! Users and their API keys. Keys are random, shown once, and stored only as
//! a BLAKE3 hash: high-entropy secrets need no slow password hash.

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

/// Prefix of every key, so a leaked key is recognisable in logs and scanners.
const KEY_PREFIX: &str = "lum_";

/// Why a user command failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The name is taken.
    #[error(
        "a user named {0:?} already exists; pick another name or use `lumilio user create-key {0}`"
    )]
    Exists(String),
    /// No such user.
    #[error("no user named {0:?}; `lumilio user list` shows who exists")]
    NoSuchUser(String),
    /// No key matched.
    #[error("no active key starts with {0:?}; `lumilio user list` shows key prefixes")]
    NoSuchKey(String),
    /// Several keys matched.
    #[error("{0:?} matches several keys; give more characters")]
    Ambiguous(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// A user with their key prefixes, for `lumilio user list`.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct UserRow {
    /// User id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Prefixes of active keys.
    pub active_keys: Vec<String>,
    /// How many assets the user owns.
    pub assets: i64,
}

fn new_key() -> (String, String, String) {
    let mut raw = [0u8; 24];
    rand::rng().fill_bytes(&mut raw);
    let key = format!(
        "{KEY_PREFIX}{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let prefix = key[..12].to_owned();
    (key.clone(), prefix, hash_key(&key))
}

/// The stored form of a key.
pub fn hash_key(key: &str) -> String {
    blake3::hash(key.as_bytes()).to_hex().to_string()
}

/// Creates a user and a first key; returns (user id, the key in clear).
pub async fn create(pool: &PgPool, name: &str) -> Result<(Uuid, String), UserError> {
    let mut tx = pool.begin().await?;
    let id = Uuid::new_v4();
    let inserted =
        sqlx::query("INSERT INTO users (id, name) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
    if inserted.rows_affected() == 0 {
        return Err(UserError::Exists(name.to_owned()));
    }
    let key = insert_key(&mut tx, id).await?;
    tx.commit().await?;
    Ok((id, key))
}

async fn insert_key(conn: &mut sqlx::PgConnection, user: Uuid) -> Result<String, sqlx::Error> {
    let (key, prefix, hash) = new_key();
    sqlx::query("INSERT INTO api_keys (id, user_id, prefix, key_hash) VALUES ($1, $2, $3, $4)")
        .bind(Uuid::new_v4())
        .bind(user)
        .bind(prefix)
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(key)
}

/// Adds a key to an existing user; returns it in clear.
pub async fn create_key(pool: &PgPool, name: &str) -> Result<String, UserError> {
    let user: Option<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    let user = user.ok_or_else(|| UserError::NoSuchUser(name.to_owned()))?;
    let mut conn = pool.acquire().await?;
    Ok(insert_key(&mut conn, user).await?)
}

/// Every user with their active key prefixes.
pub async fn list(pool: &PgPool) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.id, u.name, u.created_at,
                COALESCE(array_agg(k.prefix ORDER BY k.created_at) FILTER (WHERE k.id IS NOT NULL), '{}') AS active_keys,
                (SELECT count(*) FROM assets a WHERE a.owner_id = u.id) AS assets
         FROM users u LEFT JOIN api_keys k ON k.user_id = u.id AND k.revoked_at IS NULL
         GROUP BY u.id ORDER BY u.name",
    )
    .fetch_all(pool)
    .await
}

/// Revokes the one active key starting with `prefix` (or equal to a whole key).
pub async fn revoke_key(pool: &PgPool, prefix_or_key: &str) -> Result<String, UserError> {
    let hash = hash_key(prefix_or_key);
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, prefix FROM api_keys WHERE revoked_at IS NULL AND (key_hash = $1 OR starts_with(prefix, $2))",
    )
    .bind(&hash)
    .bind(prefix_or_key.get(..12.min(prefix_or_key.len())).unwrap_or(prefix_or_key))
    .fetch_all(pool)
    .await?;
    let (id, prefix) = match rows.as_slice() {
        [] => return Err(UserError::NoSuchKey(prefix_or_key.to_owned())),
        [one] => one.clone(),
        _ => return Err(UserError::Ambiguous(prefix_or_key.to_owned())),
    };
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(prefix)
}

/// The user an active key belongs to.
pub async fn authenticate(pool: &PgPool, key: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT user_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
        .bind(hash_key(key))
        .fetch_optional(pool)
        .await
}

/// An active key and its user, for clients that ask who they are.
#[derive(Debug, Clone, FromRow)]
pub struct KeyView {
    /// Key id.
    pub key_id: Uuid,
    /// The key's first characters, as listings show them.
    pub prefix: String,
    /// When the key was made.
    pub key_created_at: DateTime<Utc>,
    /// The user the key acts for.
    pub user_id: Uuid,
    /// The user's name.
    pub user_name: String,
    /// When the user was made.
    pub user_created_at: DateTime<Utc>,
}

/// The active key `key` and its user.
pub async fn describe_key(pool: &PgPool, key: &str) -> Result<Option<KeyView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT k.id AS key_id, k.prefix, k.created_at AS key_created_at,
                u.id AS user_id, u.name AS user_name, u.created_at AS user_created_at
         FROM api_keys k JOIN users u ON u.id = k.user_id
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
    )
    .bind(hash_key(key))
    .fetch_optional(pool)
    .await
}
