//! The one error shape every route answers with:
//! `{"error": {"code": "...", "message": "..."}}` and a fitting status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::error;

use crate::ingest::IngestError;

/// An error as the client sees it.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code, snake_case.
    pub code: &'static str,
    /// What failed and what to do.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The code and message, as they appear inside `{"error": ...}`.
    pub fn detail(&self) -> super::openapi::ErrorDetail {
        super::openapi::ErrorDetail {
            code: self.code.to_owned(),
            message: self.message.clone(),
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 for an asset or job the caller cannot see.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 500 for a bug or an unexpected failure; the detail goes to the log only.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        error!(%err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context}; see the server log"),
        )
    }
}

/// Whether `err` means the database cannot be reached right now (down,
/// restarting, in crash recovery, connection cut) rather than a bad query:
/// the client should retry, and nothing was stored.
pub fn database_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
        // A connection that died mid-message (the server was killed).
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        // Class 57 operator intervention: 57P01 admin_shutdown, 57P02
        // crash_shutdown, 57P03 cannot_connect_now ("the database system is
        // starting up / in recovery mode"); class 08 connection exceptions.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}

/// Longest run of a client's value that an error message quotes back.
const QUOTE_CHARS: usize = 64;

/// A client-supplied value (header, field, file name) as an error message may
/// quote it: Debug-quoted and cut to [`QUOTE_CHARS`] characters, saying how
/// long it was, so that an answer never echoes unbounded input.
pub fn quoted(raw: &str) -> String {
    let total = raw.chars().count();
    if total <= QUOTE_CHARS {
        return format!("{raw:?}");
    }
    let head: String = raw.chars().take(QUOTE_CHARS).collect();
    format!("{head:?}… ({total} characters)")
}

/// Longest text of an axum rejection kept in its JSON message: serde's and
/// multer's errors can quote the request (a field, a path segment).
const REJECTION_CHARS: usize = 300;

/// A library's error text (which can quote the request: a field, a path
/// segment) cut to [`REJECTION_CHARS`] characters for an error message.
pub fn cut(text: &str) -> String {
    if text.chars().count() <= REJECTION_CHARS {
        return text.to_owned();
    }
    let head: String = text.chars().take(REJECTION_CHARS).collect();
    format!("{head}… (cut)")
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if database_unavailable(&err) {
            error!(%err, "database unavailable");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database is unavailable; nothing was stored, retry shortly",
            );
        }
        Self::internal("database query failed", err)
    }
}

impl From<riverqueue::Error> for ApiError {
    fn from(err: riverqueue::Error) -> Self {
        match err {
            // The job insert shares the upload's transaction: the same outage.
            riverqueue::Error::Database(db) if database_unavailable(&db) => db.into(),
            other => Self::internal("could not enqueue the processing job", other),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        match err {
            IngestError::TooLarge { limit } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the upload exceeds the limit of {limit} bytes (LUMILIO_MAX_UPLOAD_BYTES)"),
            ),
            io @ IngestError::Io { .. } => {
                Self::internal("could not write the upload to staging", io)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut res = (self.status, Json(body)).into_response();
        // When to come back: the database's usual restart, or an upload slot.
        let retry_after = match self.status {
            StatusCode::SERVICE_UNAVAILABLE => Some("5"),
            StatusCode::TOO_MANY_REQUESTS => Some("2"),
            _ => None,
        };
        if let Some(secs) = retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
        }
        res
    }
}

/// Gives axum's own rejections (a malformed multipart or JSON body, a bad
/// query string, a body over the limit) the same JSON shape as every other
/// error, so clients parse one format.
pub async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let text = match axum::body::to_bytes(res.into_body(), 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(_) => String::new(),
    };
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => "bad_request",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        cut(&text)
    };
    ApiError::new(status, code, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn quoted_values_are_bounded() {
        assert_eq!(quoted("abc"), "\"abc\"");
        let long = "x".repeat(10_000);
        let q = quoted(&long);
        assert!(q.len() < 100, "{q}");
        assert!(q.ends_with("(10000 characters)"), "{q}");
        // Cut on a character, not a byte.
        assert!(quoted(&"é".repeat(100)).starts_with("\"éé"));
    }
}
