//! `GET /v1/stream`: every ledger event as a Server-Sent Event, `id:` = seq.
//!
//! A producer task reads durable events from storage after the client's position, in
//! pages, and when caught up waits for the durable head to move; so catching up and
//! following live are one loop over one cursor, with no gap or duplicate at the seam.
//! Writers are never slowed by a client: the producer only reads. Between producer and
//! client is a bounded buffer. A client that takes nothing for `sse_stall` has its
//! connection closed by the server's write-stall bound (`edge`), which frees the buffer; it
//! resumes with `Last-Event-ID` = the last whole event it got. A client that still reads but
//! lets its buffer stay full for `sse_stall` is dropped by the producer: after the buffered
//! events it receives a final `event: end` naming where to resume.

use super::auth::Access;
use super::error::{ApiError, ErrorBody};
use super::params::Params;
use super::Shared;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use std::convert::Infallible;
use std::time::Duration;

/// Events buffered for one client.
const BUFFER_EVENTS: usize = 1_024;
/// Events read from storage at a time.
const PAGE_EVENTS: usize = 256;

/// Why a stream ended (sent as the last event).
enum End {
    TooSlow,
    Shutdown,
    Storage(String),
}

struct ClientGauge;

impl ClientGauge {
    fn new() -> ClientGauge {
        metrics::gauge!("sse_clients").increment(1.0);
        ClientGauge
    }
}

impl Drop for ClientGauge {
    fn drop(&mut self) {
        metrics::gauge!("sse_clients").decrement(1.0);
    }
}

/// Subscribe to events after `after` (or after `Last-Event-ID`), then follow live.
#[utoipa::path(get, path = "/v1/stream", tag = "audit",
    params(("after" = Option<u64>, Query, description = "Start after this seq (default 0)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this seq; wins over `after`")),
    responses((status = 200, description = "text/event-stream: `id: <seq>`, `event: ledger_event`, data = the event JSON with its hash; a final `event: end` says why and where to resume", content_type = "text/event-stream"),
        (status = 400, body = ErrorBody), (status = 503, description = "Too many streams (`too_many_streams`)", body = ErrorBody)))]
pub async fn stream(
    State(app): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    app.auth.authorize(&headers, Access::Audit)?;
    let params = Params::parse(query.as_deref(), &["after"])?;
    // One permit per client, held by its response body: returned when the body is dropped
    // (the client went away, or its connection was closed for not reading).
    let permit = app.streams.clone().try_acquire_owned().map_err(|_| {
        metrics::counter!("sse_clients_refused_total").increment(1);
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_streams", format!("this server already serves {} streams; retry later or subscribe on NATS", app.max_streams))
            .with("retry_after_s", serde_json::json!(5))
    })?;
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_parameter("Last-Event-ID", "must be a sequence number"))?,
        ),
        None => None,
    };
    let after = resume.or(params.u64("after")?).unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(BUFFER_EVENTS);
    let (end_tx, end_rx) = tokio::sync::oneshot::channel::<(End, u64)>();
    tokio::spawn(produce(app.clone(), after, tx, end_tx));
    let events = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |e| {
        let _held = &permit;
        Ok(e)
    });
    // After the buffer drains and the producer has stopped: the end event, if it said why.
    let end = futures::stream::once(end_rx).filter_map(|r| async move {
        let (end, last) = r.ok()?;
        let reason = match end {
            End::TooSlow => "too_slow".to_string(),
            End::Shutdown => "shutdown".to_string(),
            End::Storage(e) => format!("storage: {e}"),
        };
        let data = serde_json::json!({"reason": reason, "resume_after": last}).to_string();
        Some(Ok(Event::default().event("end").data(data)))
    });
    Ok(Sse::new(events.chain(end)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn produce(app: Shared, mut cursor: u64, tx: tokio::sync::mpsc::Sender<Event>, end: tokio::sync::oneshot::Sender<(End, u64)>) {
    let _gauge = ClientGauge::new();
    let mut head = app.ledger.watch_head();
    let mut shutdown = app.shutdown.clone();
    let reason = loop {
        if *shutdown.borrow() {
            break End::Shutdown;
        }
        let ledger = app.ledger.clone();
        let from = cursor;
        let page = match tokio::task::spawn_blocking(move || ledger.events_after(from, PAGE_EVENTS)).await {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => break End::Storage(e.to_string()),
            Err(e) => break End::Storage(e.to_string()),
        };
        if page.is_empty() {
            // Caught up: wait for the next commit (or the end).
            head.mark_unchanged();
            if app.ledger.head().seq > cursor {
                continue;
            }
            tokio::select! {
                changed = head.changed() => if changed.is_err() { break End::Shutdown },
                _ = shutdown.changed() => break End::Shutdown,
                _ = tx.closed() => return,
            }
            continue;
        }
        for recorded in page {
            let event = Event::default().id(recorded.seq().to_string()).event("ledger_event").data(recorded.to_json().to_string());
            match tokio::time::timeout(app.sse_stall, tx.send(event)).await {
                Ok(Ok(())) => cursor = recorded.seq(),
                // The client went away.
                Ok(Err(_)) => return,
                Err(_) => {
                    metrics::counter!("sse_clients_dropped_total").increment(1);
                    tracing::info!(resume_after = cursor, "dropping a stream client that stopped reading");
                    let _ = end.send((End::TooSlow, cursor));
                    return;
                }
            }
        }
    };
    let _ = end.send((reason, cursor));
}
