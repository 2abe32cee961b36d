//! Postgres access: the connection pool, schema migrations, and the queries
//! the API and the workers run. A leaf: it knows rows, not HTTP, jobs or WASM.

pub mod assets;
pub mod browse;
pub mod embeddings;
pub mod metrics;
pub mod migrate;
pub mod status;
pub mod users;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Why the database could not be reached.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot connect to the database at {url}: {source}. Is Postgres running? `make db` starts a local one and prints its DATABASE_URL"
)]
pub struct ConnectError {
    /// The URL with its password hidden.
    url: String,
    /// The driver's error.
    source: sqlx::Error,
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of `sql` with `args`, one plan line per line:
/// the plan a query really got (`bench-queries` prints them).
pub(crate) async fn explain<'c, E>(
    conn: E,
    sql: &str,
    args: sqlx::postgres::PgArguments,
) -> Result<String, sqlx::Error>
where
    E: sqlx::PgExecutor<'c>,
{
    let lines: Vec<String> = sqlx::query_scalar_with(
        sqlx::AssertSqlSafe(format!("EXPLAIN (ANALYZE, BUFFERS) {sql}")),
        args,
    )
    .fetch_all(conn)
    .await?;
    Ok(lines.join("\n"))
}

/// A pooled connection idle at least this long is pinged before it is used.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Opens a pool of at most `max_connections` connections and checks it works.
///
/// sqlx pings a connection (a round trip) each time it goes back to the pool,
/// and by default again each time it is taken out: two round trips beside
/// every statement or transaction, about 24 per photo (issue 15 §1). The ping
/// on the way out is kept only for a connection that sat idle (which the
/// server may have closed since, e.g. by restarting); one handed on within
/// [`PING_AFTER_IDLE`] passed the ping on its return.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, ConnectError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect(url)
        .await
        .map_err(|source| ConnectError {
            url: redact(url),
            source,
        })
}

/// One round trip, to tell whether the database answers.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

/// Hides the password in a connection URL so it can be logged.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_password_only() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5/d"),
            "postgres://u:***@h:5/d"
        );
        assert_eq!(super::redact("postgres://h/d"), "postgres://h/d");
    }
}
