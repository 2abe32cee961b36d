//! Server push: `GET /api/v1/events` is a Server-Sent Events stream of the
//! caller's asset changes, fed by Postgres `LISTEN/NOTIFY`.
//!
//! Migration 005 puts a trigger on `assets` that sends
//! `NOTIFY lumilio_asset_events` with the asset id, owner id, status and
//! operation whenever an asset is inserted, deleted, or changes status or
//! favourite flag. Postgres delivers it at commit, so a listener never hears
//! of a row it cannot read yet. The host holds ONE listening connection per
//! process (started by the first stream) and fans events out over a broadcast
//! channel; each stream passes on only its owner's events, so a user never
//! learns even the ids of someone else's assets.
//!
//! Events (`event:` name, `data:` JSON):
//! - `ready`: the listener is listening; anything that changed before this may
//!   have been missed, so a client refreshes what it shows;
//! - `asset`: `{"op": "insert"|"update"|"delete", "asset_id", "status"}`;
//! - `resync`: events may have been lost (the listening connection dropped
//!   and was re-established, or this stream fell behind); refresh;
//! - `revoked`: the key this stream was opened with was revoked (or deleted
//!   with its user); the stream ends, and the next request with that key
//!   gets 401. Migration 007 notifies `lumilio_key_events` for this, so a key
//!   revoked by any process, or by plain SQL, ends its streams on every host.
//!
//! Browsers' `EventSource` cannot send an `Authorization` header, so the web
//! app reads this stream with `fetch()` and a `ReadableStream` (same key, same
//! header as every other call). `curl -N -H "Authorization: Bearer KEY"` works too.

use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};
use uuid::Uuid;

use super::auth::Caller;
use super::{ApiError, AppState};

/// The channel migration 005's trigger notifies.
pub const CHANNEL: &str = "lumilio_asset_events";

/// The channel migration 007's trigger notifies when a key is revoked or deleted.
pub const KEY_CHANNEL: &str = "lumilio_key_events";

/// One change, as the trigger sends it.
#[derive(Debug, Clone, Deserialize)]
struct Change {
    op: String,
    asset_id: Uuid,
    owner_id: Uuid,
    status: String,
}

/// A revoked or deleted key, as migration 007's trigger sends it.
#[derive(Debug, Clone, Deserialize)]
struct KeyGone {
    key_id: Uuid,
}

#[derive(Debug, Clone)]
enum Message {
    Change(Change),
    /// Streams opened with this key end.
    KeyRevoked(Uuid),
    /// Events may have been lost.
    Resync,
}

/// The process's one listener and its subscribers.
struct Hub {
    tx: broadcast::Sender<Message>,
    /// True once the listener is listening.
    ready: watch::Receiver<bool>,
    /// True once the process is shutting down: streams end so that the
    /// HTTP server's graceful shutdown is not held up by open streams.
    stopping: watch::Receiver<bool>,
}

static HUB: OnceLock<Hub> = OnceLock::new();

fn hub(pool: &PgPool) -> &'static Hub {
    HUB.get_or_init(|| {
        let (tx, _) = broadcast::channel(1024);
        let (ready_tx, ready) = watch::channel(false);
        let (stop_tx, stopping) = watch::channel(false);
        tokio::spawn(listen(pool.clone(), tx.clone(), ready_tx));
        tokio::spawn(async move {
            crate::signal::shutdown().await;
            let _ = stop_tx.send(true);
        });
        Hub {
            tx,
            ready,
            stopping,
        }
    })
}

/// Keeps one `LISTEN` connection, reconnecting after a loss (and telling
/// subscribers to resync, as notifications in the gap are gone).
async fn listen(pool: PgPool, tx: broadcast::Sender<Message>, ready: watch::Sender<bool>) {
    let mut first = true;
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "events: cannot connect the listener; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen_all([CHANNEL, KEY_CHANNEL]).await {
            warn!(error = %e, "events: LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if first {
            info!(channel = CHANNEL, "events: listening");
            first = false;
        } else {
            info!(channel = CHANNEL, "events: listening again; subscribers resync");
        }
        let _ = ready.send(true);
        // Anything between the loss and now is unknown.
        let _ = tx.send(Message::Resync);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => match parse(n.channel(), n.payload()) {
                    Ok(m) => {
                        let _ = tx.send(m);
                    }
                    Err(e) => warn!(error = %e, channel = n.channel(), payload = n.payload(), "events: bad payload"),
                },
                // The connection was lost; try_recv reconnects on the next call.
                Ok(None) => {
                    warn!("events: listener connection lost; reconnecting");
                    let _ = tx.send(Message::Resync);
                }
                Err(e) => {
                    warn!(error = %e, "events: listener failed; reconnecting");
                    let _ = tx.send(Message::Resync);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

/// One notification as a message for the streams.
fn parse(channel: &str, payload: &str) -> Result<Message, serde_json::Error> {
    if channel == KEY_CHANNEL {
        serde_json::from_str::<KeyGone>(payload).map(|k| Message::KeyRevoked(k.key_id))
    } else {
        serde_json::from_str::<Change>(payload).map(Message::Change)
    }
}

/// The caller's asset changes as Server-Sent Events (`ready`, `asset`, `resync`).
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    responses((status = 200, description = "`text/event-stream`. Events: `ready` (listening; refresh what you show), \
`asset` with data `{\"op\": \"insert\"|\"update\"|\"delete\", \"asset_id\", \"status\"}` for each of the caller's assets \
that is added, deleted or changes status or favourite flag, `resync` (events may have been lost; refresh), and \
`revoked` (the stream's key was revoked; the stream ends). \
A comment line every 15 s keeps the connection open. Send the key as `Authorization: Bearer KEY`; browsers read \
the stream with fetch(), since EventSource cannot send headers."),
              (status = 401, body = super::openapi::ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let hub = hub(&state.pool);
    // Subscribe first, so nothing falls between `ready` and the first event.
    let rx = hub.tx.subscribe();
    let mut ready = hub.ready.clone();
    let mut stopping = hub.stopping.clone();
    let (me, my_key) = (caller.owner, caller.key_id);
    let hello = stream::once(async move {
        let _ = ready.wait_for(|r| *r).await;
        Event::default().event("ready").data("{}")
    });
    // `None` state: the `revoked` event has been sent, so the stream ends.
    let changes = stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        loop {
            let event = match rx.recv().await {
                Ok(Message::KeyRevoked(k)) if k == my_key => {
                    info!(key_id = %k, "events: key revoked; ending its stream");
                    return Some((Event::default().event("revoked").data("{}"), None));
                }
                Ok(Message::KeyRevoked(_)) => continue,
                Ok(Message::Change(c)) if c.owner_id == me => Event::default().event("asset").data(
                    json!({ "op": c.op, "asset_id": c.asset_id, "status": c.status }).to_string(),
                ),
                Ok(Message::Change(_)) => continue,
                Ok(Message::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    Event::default().event("resync").data("{}")
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            return Some((event, Some(rx)));
        }
    });
    let stop = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let stream = hello.chain(changes).map(Ok::<_, Infallible>).take_until(stop);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
