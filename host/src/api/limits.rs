//! What keeps slow and greedy clients from holding the server: a cap on
//! concurrent uploads per API key ([`cap_uploads`], 429 with `Retry-After`
//! over it), and the request-body idle timeout ([`idle_body`], whose error
//! answers 408 [`body_timeout`]).
//! The header read timeout lives in the accept loop (`serve.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use tower_http::timeout::TimeoutBody;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::auth::presented_key;

/// Uploads in flight per presented key, with the cap they may reach.
#[derive(Debug, Clone)]
pub struct UploadSlots {
    /// Most concurrent uploads one key may run (`LUMILIO_MAX_UPLOADS_PER_KEY`).
    max: usize,
    /// Keyed by the key's BLAKE3, so the map never holds a secret.
    busy: Arc<Mutex<HashMap<[u8; 32], usize>>>,
}

impl UploadSlots {
    /// At most `max` concurrent uploads per key (0 counts as 1).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            busy: Arc::default(),
        }
    }

    /// A slot for `key`, or `None` when the key already runs `max` uploads.
    fn take(&self, key: &str) -> Option<Slot> {
        let id = *blake3::hash(key.as_bytes()).as_bytes();
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let n = busy.entry(id).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self.clone(),
            id,
        })
    }
}

/// One upload's place under the cap; given back when dropped.
struct Slot {
    slots: UploadSlots,
    id: [u8; 32],
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut busy = self.slots.busy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = busy.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                busy.remove(&self.id);
            }
        }
    }
}

/// Middleware of the upload routes: over the key's cap, 429 `too_many_uploads`
/// with `Retry-After` before a byte is read. A request without a key passes
/// on (the handler answers 401 before reading its body).
pub(super) async fn cap_uploads(
    State(slots): State<UploadSlots>,
    req: Request,
    next: Next,
) -> Response {
    let slot = match presented_key(req.headers()) {
        Some(key) => match slots.take(key) {
            Some(slot) => Some(slot),
            None => {
                return ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_uploads",
                    format!(
                        "this API key already has {} uploads in flight (LUMILIO_MAX_UPLOADS_PER_KEY); wait for one to finish and retry",
                        slots.max
                    ),
                )
                .into_response();
            }
        },
        None => None,
    };
    // Held until the handler has read the whole body and answered.
    let res = next.run(req).await;
    drop(slot);
    res
}

/// Gives a request's body the idle timeout: a body that sends nothing for
/// `idle` fails with an error [`is_body_timeout`] recognises.
pub(super) fn idle_body(req: Request, idle: Duration) -> Request {
    req.map(|body| Body::new(TimeoutBody::new(idle, body)))
}

/// Whether a body error is the idle timeout's (a client that stopped sending).
pub(super) fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<tower_http::timeout::TimeoutError>(err)
}

/// Whether `err`, or an error in its source chain, is a `T`.
pub(super) fn caused_by<T: std::error::Error + 'static>(
    err: &(dyn std::error::Error + 'static),
) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<T>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// 408 for a body that stalled longer than the idle timeout.
pub(super) fn body_timeout() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        "the request body stopped arriving for longer than the idle timeout (LUMILIO_BODY_IDLE_TIMEOUT_SECS); nothing of this file was stored, send it again",
    )
}
