//! Route handlers: writes, reads, operations.

use super::auth::{Access, Caller};
use super::error::{ApiError, ErrorBody};
use super::params::Params;
use super::checkpointing::{Checkpointing, RoundError};
use super::{Shared, BATCH_BODY_BYTES_MAX, BATCH_EVENTS_MAX, BODY_READ_LIMIT, EVENT_BODY_BYTES_MAX};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use events::{Code, ContractId, EventKind, Proposal, RecordedEvent, Rejection, Stream};
use ledger::{AppendError, AppendRequest, Appended, Mode, Receipt, TrySubmitError};
use crate::reports::today;
use projections::report::contract_json;
use projections::Granularity;
use ledger::checkpoints::Issued;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// Receipt of an appended event.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ReceiptBody {
    pub seq: u64,
    pub contract_id: Option<String>,
    pub version: u64,
    /// Event hash, hex.
    pub hash: String,
    pub prev_hash: String,
    /// RFC 3339, UTC, microseconds.
    pub recorded_at: String,
}

fn receipt_json(r: &Receipt) -> Value {
    json!({
        "seq": r.seq,
        "contract_id": r.stream.contract_id().map(ContractId::as_str),
        "version": r.version,
        "hash": r.hash.to_hex(),
        "prev_hash": r.prev_hash.to_hex(),
        "recorded_at": r.recorded_at.to_rfc3339(),
    })
}

async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    match tokio::time::timeout(BODY_READ_LIMIT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(ApiError::too_large(format!("the body is larger than {limit} bytes (or was cut off)"))),
        Err(_) => Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", format!("the body did not arrive within {} s", BODY_READ_LIMIT.as_secs()))),
    }
}

/// SPEC section 7: over an authenticated API the actor is the caller. A body `actor` that
/// names someone else is refused unless the caller is an admin (an import on someone's
/// behalf); closing a period needs the admin role. An open server authenticates no one:
/// there the body's actor stands and every role applies.
fn check_principal(caller: &Caller, proposals: &[Proposal], batch: bool) -> Result<(), ApiError> {
    for (i, p) in proposals.iter().enumerate() {
        let field = |name: &str| if batch { format!("events[{i}].{name}") } else { name.to_string() };
        let indexed = |e: ApiError| if batch { e.with("index", json!(i)) } else { e };
        let role = caller.role.map_or("none", |r| r.as_str());
        if p.kind() == EventKind::PeriodClosed && !caller.is_admin() {
            return Err(indexed(
                ApiError::new(StatusCode::FORBIDDEN, "period_close_requires_admin", format!("closing a period needs the admin role; `{}` has role `{role}`", caller.name))
                    .field(field("type")),
            ));
        }
        if let Some(actor) = &p.actor
            && !caller.is_admin()
            && *actor != caller.name
        {
            return Err(indexed(
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "actor_mismatch",
                    format!("the event names actor `{actor}` but the token is `{}`; leave `actor` out (it is the token's name) or ask an admin to write on someone's behalf", caller.name),
                )
                .field(field("actor")),
            ));
        }
    }
    Ok(())
}

fn idempotency_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let key = v.to_str().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_header", "Idempotency-Key must be printable ASCII").field("Idempotency-Key"))?;
            events::check_idempotency_key("Idempotency-Key", key)?;
            Ok(Some(key.to_string()))
        }
    }
}

/// A follower holds a copy of its leader's ledger: writes go to the leader. In replicated
/// mode, a node that does not lead names the leader (421 `not_leader`), or, with no leader
/// yet, answers 503 `no_leader` with `Retry-After`.
fn refuse_on_follower(app: &Shared) -> Result<(), ApiError> {
    if let Some(cluster) = app.nats.as_ref().and_then(|n| n.cluster.as_ref()) {
        return if app.ledger.is_leading() { Ok(()) } else { Err(not_leader(cluster)) };
    }
    match &app.nats {
        Some(n) if n.follow => {
            let leader = n.leader_url.clone();
            let message = match &leader {
                Some(url) => format!("this server is a read-only follower; send writes to the leader at {url}"),
                None => "this server is a read-only follower; send writes to the leader".to_string(),
            };
            Err(ApiError::new(StatusCode::MISDIRECTED_REQUEST, "follower_read_only", message).with("leader", json!(leader)))
        }
        _ => Ok(()),
    }
}

/// Hands a request to the ledger and waits until it is durable (or refused).
async fn append(app: &Shared, request: AppendRequest) -> Result<Appended, AppendError> {
    let events = request.events.len();
    let started = Instant::now();
    let answer = match app.ledger.try_submit(request) {
        Ok(answer) => answer,
        Err(TrySubmitError::Unavailable(e)) => return Err(e),
        // The writer's queue is full: wait for room on a blocking thread, not the executor.
        Err(TrySubmitError::Full(request)) => {
            let ledger = app.ledger.clone();
            tokio::task::spawn_blocking(move || ledger.submit(request))
                .await
                .map_err(|e| AppendError::Internal(format!("the submitting task failed: {e}")))??
        }
    };
    // The writer answers every request it took, even when it stops; a dropped answer means it
    // ended without one, and `failure()` says why.
    let outcome = answer.await.unwrap_or_else(|_| Err(AppendError::Stopped(app.ledger.failure())));
    metrics::histogram!("http_append_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("http_append_request_events").record(events as f64);
    if outcome.is_ok() {
        metrics::counter!("http_appends_total").increment(1);
    }
    outcome
}

/// Replicated mode: where writes go now. The leader as last seen in the lease, unless that
/// is this node (its writer was fenced a moment ago, or it is taking over): then none yet.
pub(crate) fn not_leader(cluster: &bus::replicated::Cluster) -> ApiError {
    match cluster.leader().filter(|url| *url != cluster.advertise) {
        Some(url) => ApiError::new(StatusCode::MISDIRECTED_REQUEST, "not_leader", format!("this node is not the leader; send writes to the leader at {url}"))
            .with("leader", json!(url)),
        None => ApiError::unavailable_code("no_leader", "no node leads the cluster right now (a failover is under way); retry shortly with the same Idempotency-Key")
            .with("leader", Value::Null)
            .retry_after(1),
    }
}

fn append_error_in(app: &Shared, e: AppendError, batch: bool) -> ApiError {
    match (e, app.nats.as_ref().and_then(|n| n.cluster.as_ref())) {
        (AppendError::NotLeader, Some(cluster)) => not_leader(cluster),
        (AppendError::NotReplicated(m), Some(_)) => ApiError::from(AppendError::NotReplicated(m)).retry_after(1),
        (e @ AppendError::ReplicationOutcomeUnknown(_), Some(_)) => ApiError::from(e).retry_after(1),
        (e, _) => append_error(e, batch),
    }
}

fn append_error(e: AppendError, batch: bool) -> ApiError {
    match e {
        AppendError::Rejected { index, rejection } => {
            let mut r = rejection;
            if batch {
                r.field = Some(match r.field.take() {
                    Some(f) => format!("events[{index}].{f}"),
                    None => format!("events[{index}]"),
                });
            }
            let error = ApiError::from(r);
            if batch { error.with("index", json!(index)) } else { error }
        }
        other => ApiError::from(other),
    }
}

fn created(body: Value, replayed: bool) -> Response {
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Append one event.
///
/// Responds only after the event is durable. `Idempotency-Key` makes a retry safe: the same
/// request gets the original answer (header `Idempotent-Replayed: true`), a different one 409.
#[utoipa::path(post, path = "/v1/events", tag = "writes",
    request_body(content = Object, description = "One event in the wire form of SPEC section 3, with optional `expected_version`"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the request idempotent")),
    responses(
        (status = 201, description = "Durable", body = ReceiptBody),
        (status = 400, description = "Malformed", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "Unknown contract", body = ErrorBody),
        (status = 409, description = "Version conflict (with `current_version`) or idempotency key reused", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 421, description = "A follower: writes go to the leader (named in `leader`)", body = ErrorBody),
        (status = 422, description = "A rule of SPEC section 4, with its code", body = ErrorBody),
        (status = 503, description = "The ledger stopped taking writes", body = ErrorBody),
    ))]
pub async fn append_event(State(app): State<Shared>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let caller = app.auth.authorize(&headers, Access::Write)?;
    refuse_on_follower(&app)?;
    let key = idempotency_header(&headers)?;
    let bytes = read_body(body, EVENT_BODY_BYTES_MAX).await?;
    let proposal = Proposal::parse_json(&bytes)?;
    check_principal(&caller, std::slice::from_ref(&proposal), false)?;
    let request = AppendRequest { events: vec![proposal], mode: Mode::Atomic, idempotency_key: key, actor: caller.name };
    let appended = append(&app, request).await.map_err(|e| append_error_in(&app, e, false))?;
    let receipt = &appended.receipts[0];
    Ok(created(receipt_json(receipt), receipt.replayed))
}

/// Why a batch body was not read.
enum BatchFailure {
    TooMany,
    EventTooLarge(usize, usize),
    Event(usize, Rejection),
}

/// The outside of a batch body; its `events` is kept as raw JSON text, borrowed.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody<'a> {
    #[serde(borrow)]
    events: &'a serde_json::value::RawValue,
}

/// Reads the `events` array one event at a time: each element is taken as raw JSON text
/// (borrowed from the body, nothing allocated), bounded in size, and parsed into a
/// `Proposal` before the next is looked at; the 1,001st element stops the parse. So a batch
/// costs about its body plus its proposals, whatever its shape (8M tiny values included).
struct EventsSeed<'a> {
    failure: &'a mut Option<BatchFailure>,
}

impl<'de> serde::de::DeserializeSeed<'de> for EventsSeed<'_> {
    type Value = Vec<Proposal>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Proposal>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EventsSeed<'_> {
    type Value = Vec<Proposal>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Proposal>, A::Error> {
        use serde::de::Error;
        let mut proposals = Vec::new();
        while let Some(raw) = seq.next_element::<&'de serde_json::value::RawValue>()? {
            let i = proposals.len();
            let stop = if i == BATCH_EVENTS_MAX {
                Some(BatchFailure::TooMany)
            } else if raw.get().len() > EVENT_BODY_BYTES_MAX {
                Some(BatchFailure::EventTooLarge(i, raw.get().len()))
            } else {
                match Proposal::parse_json(raw.get().as_bytes()) {
                    Ok(p) => {
                        proposals.push(p);
                        None
                    }
                    Err(r) => Some(BatchFailure::Event(i, r)),
                }
            };
            if let Some(failure) = stop {
                *self.failure = Some(failure);
                return Err(A::Error::custom("stopped"));
            }
        }
        Ok(proposals)
    }
}

/// The proposals of a batch body, or the refusal naming what is wrong with it.
fn parse_batch(bytes: &[u8]) -> Result<Vec<Proposal>, ApiError> {
    let invalid = |e: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("expected {{\"events\": [...]}}: {e}"));
    // An object, not serde's positional spelling of the struct.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(invalid("the body is not a JSON object".into()));
    }
    let body: BatchBody = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    let mut failure = None;
    let mut de = serde_json::Deserializer::from_str(body.events.get());
    let parsed = serde::de::DeserializeSeed::deserialize(EventsSeed { failure: &mut failure }, &mut de);
    match (parsed, failure) {
        (Ok(proposals), _) => Ok(proposals),
        (Err(_), Some(BatchFailure::TooMany)) => Err(ApiError::too_large(format!("at most {BATCH_EVENTS_MAX} events a batch")).field("events")),
        (Err(_), Some(BatchFailure::EventTooLarge(i, len))) => Err(ApiError::too_large(format!("event {i} is {len} bytes; an event is at most {EVENT_BODY_BYTES_MAX}"))
            .field(format!("events[{i}]"))
            .with("index", json!(i))),
        (Err(_), Some(BatchFailure::Event(i, r))) => Err(ApiError::from(r.under(&format!("events[{i}]"))).with("index", json!(i))),
        (Err(e), None) => Err(invalid(format!("events: {e}"))),
    }
}

/// Append many events atomically: all are durable, or none is written.
#[utoipa::path(post, path = "/v1/events/batch", tag = "writes",
    request_body(content = Object, description = "`{\"events\": [event, ...]}`, at most 1,000"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the whole batch idempotent")),
    responses(
        (status = 201, description = "All durable: `{\"receipts\": [...]}`", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, description = "An event was refused; `index` and `field` name it", body = ErrorBody),
    ))]
pub async fn append_batch(State(app): State<Shared>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let caller = app.auth.authorize(&headers, Access::Write)?;
    refuse_on_follower(&app)?;
    let key = idempotency_header(&headers)?;
    let bytes = read_body(body, BATCH_BODY_BYTES_MAX).await?;
    let proposals = parse_batch(&bytes)?;
    drop(bytes);
    if proposals.is_empty() {
        return Err(Rejection::new(Code::EmptyBatch, Some("events".into()), "a batch needs at least one event").into());
    }
    check_principal(&caller, &proposals, true)?;
    let request = AppendRequest { events: proposals, mode: Mode::Atomic, idempotency_key: key, actor: caller.name };
    let appended = append(&app, request).await.map_err(|e| append_error_in(&app, e, true))?;
    let replayed = appended.receipts.iter().all(|r| r.replayed);
    let receipts: Vec<Value> = appended.receipts.iter().map(receipt_json).collect();
    Ok(created(json!({ "receipts": receipts }), replayed))
}

fn page(events: Vec<Value>, last: Option<u64>, more: bool) -> Json<Value> {
    Json(json!({ "events": events, "next_after": if more { last } else { None } }))
}

/// Events in seq order, after `after` (default 0), at most `limit` (default 100, max 1,000).
#[utoipa::path(get, path = "/v1/events", tag = "audit",
    params(("after" = Option<u64>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, description = "`{\"events\": [...], \"next_after\": seq or null}`", body = Object), (status = 400, body = ErrorBody)))]
pub async fn list_events(State(app): State<Shared>, headers: HeaderMap, RawQuery(query): RawQuery) -> Result<Json<Value>, ApiError> {
    app.auth.authorize(&headers, Access::Audit)?;
    let params = Params::parse(query.as_deref(), &["after", "limit"])?;
    let after = params.u64("after")?.unwrap_or(0);
    let limit = params.limit()?;
    let ledger = app.ledger.clone();
    let events = tokio::task::spawn_blocking(move || ledger.events_after(after, limit))
        .await
        .map_err(ApiError::task)??;
    let last = events.last().map(|e| e.seq());
    let more = last.is_some_and(|l| l < app.ledger.head().seq);
    Ok(page(events.iter().map(RecordedEvent::to_json).collect(), last, more))
}

/// One event by its seq.
#[utoipa::path(get, path = "/v1/events/{seq}", tag = "audit",
    params(("seq" = u64, Path)),
    responses((status = 200, description = "The event: seq, hash, canonical (base64), event JSON", body = Object), (status = 404, body = ErrorBody)))]
pub async fn get_event(State(app): State<Shared>, headers: HeaderMap, Path(seq): Path<String>) -> Result<Json<Value>, ApiError> {
    app.auth.authorize(&headers, Access::Audit)?;
    let seq: u64 = seq.parse().map_err(|_| ApiError::bad_parameter("seq", format!("`{seq}` is not a sequence number")))?;
    let event = app.ledger.event(seq)?;
    let event = event.ok_or_else(|| ApiError::not_found("unknown_event", format!("no event {seq} (the head is {})", app.ledger.head().seq)))?;
    Ok(Json(event.to_json()))
}

fn contract_id(text: &str) -> Result<ContractId, ApiError> {
    ContractId::parse(text).map_err(|r| ApiError::from(r).field("id"))
}

fn unknown_contract(id: &ContractId, known_at: u64) -> ApiError {
    ApiError::not_found("unknown_contract", format!("no contract `{id}` known at seq {known_at}"))
}

fn point_of_view(app: &Shared, params: &Params) -> Result<projections::AsOf, ApiError> {
    let date = params.date("as_of")?.unwrap_or_else(today);
    app.ledger.as_of(date, params.u64("known_at")?).map_err(|e| ApiError::bad_parameter("known_at", e.to_string()))
}

/// Contracts in id order, after `after`, at most `limit`.
#[utoipa::path(get, path = "/v1/contracts", tag = "finance",
    params(("after" = Option<String>, Query, description = "A contract id"), ("limit" = Option<usize>, Query)),
    responses((status = 200, description = "`{\"contracts\": [...], \"next_after\": id or null}`", body = Object), (status = 400, body = ErrorBody)))]
pub async fn list_contracts(State(app): State<Shared>, headers: HeaderMap, RawQuery(query): RawQuery) -> Result<Json<Value>, ApiError> {
    app.auth.authorize(&headers, Access::Finance)?;
    let params = Params::parse(query.as_deref(), &["after", "limit"])?;
    let after = params.str("after").map(|a| contract_id(a).map_err(|e| e.field("after"))).transpose()?;
    let limit = params.limit()?;
    // One more than asked tells whether there is a next page.
    let mut ids = app.ledger.contracts(after.as_ref(), limit + 1)?;
    let more = ids.len() > limit;
    ids.truncate(limit);
    let at = app.ledger.as_of(today(), None).map_err(|e| ApiError::unavailable(e.to_string()))?;
    let contracts: Vec<Value> = ids
        .iter()
        .filter_map(|(id, grant_seq)| {
            app.ledger.with_contract(id, &at, |s| {
                json!({
                    "contract_id": id.as_str(),
                    "currency": s.currency().code(),
                    "provider": s.grant.provider,
                    "customer": s.grant.customer,
                    "grant_seq": grant_seq,
                    "version": s.version_at(at.known_at),
                })
            })
            .transpose()
        })
        .collect::<Result<_, _>>()?;
    let last = ids.last().map(|(id, _)| id.to_string());
    Ok(Json(json!({ "contracts": contracts, "next_after": if more { last } else { None } })))
}

/// A contract's state as of a date (default today), known at a position (default the head).
#[utoipa::path(get, path = "/v1/contracts/{id}", tag = "finance",
    params(("id" = String, Path), ("as_of" = Option<String>, Query, description = "YYYY-MM-DD"), ("known_at" = Option<u64>, Query)),
    responses((status = 200, description = "Parties, term, cluster, tranches with status, milestones, invoices, payments, credits, termination, reversals, figures", body = Object),
        (status = 404, body = ErrorBody), (status = 400, body = ErrorBody)))]
pub async fn get_contract(State(app): State<Shared>, headers: HeaderMap, Path(id): Path<String>, RawQuery(query): RawQuery) -> Result<Json<Value>, ApiError> {
    app.auth.authorize(&headers, Access::Finance)?;
    let id = contract_id(&id)?;
    let params = Params::parse(query.as_deref(), &["as_of", "known_at"])?;
    let at = point_of_view(&app, &params)?;
    let view = app.ledger.with_contract(&id, &at, |s| s.view(&at))?.ok_or_else(|| unknown_contract(&id, at.known_at))?;
    let view = view.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "overflow", e.to_string()))?;
    Ok(Json(contract_json(&view)))
}

/// A contract's events in version order, after version `after`.
#[utoipa::path(get, path = "/v1/contracts/{id}/events", tag = "audit",
    params(("id" = String, Path), ("after" = Option<u64>, Query, description = "A version"), ("limit" = Option<usize>, Query)),
    responses((status = 200, description = "`{\"events\": [...], \"next_after\": version or null}`", body = Object), (status = 404, body = ErrorBody)))]
pub async fn contract_events(State(app): State<Shared>, headers: HeaderMap, Path(id): Path<String>, RawQuery(query): RawQuery) -> Result<Json<Value>, ApiError> {
    app.auth.authorize(&headers, Access::Audit)?;
    let id = contract_id(&id)?;
    let params = Params::parse(query.as_deref(), &["after", "limit"])?;
    let after = params.u64("after")?.unwrap_or(0);
    let limit = params.limit()?;
    let at = app.ledger.as_of(today(), None).map_err(|e| ApiError::unavailable(e.to_string()))?;
    let version = app.ledger.with_contract(&id, &at, |s| s.version_at(at.known_at))?.ok_or_else(|| unknown_contract(&id, at.known_at))?;
    let ledger = app.ledger.clone();
    let stream = Stream::Contract(id);
    let events = tokio::task::spawn_blocking(move || ledger.stream_events(&stream, after, limit))
        .await
        .map_err(ApiError::task)??;
    let last = events.last().map(|e| e.event.version);
    let more = last.is_some_and(|l| l < version);
    Ok(page(events.iter().map(RecordedEvent::to_json).collect(), last, more))
}

/// The last durable event.
#[utoipa::path(get, path = "/v1/chain/head", tag = "audit",
    responses((status = 200, description = "`{\"seq\", \"hash\", \"recorded_at\"}`", body = Object)))]
pub async fn chain_head(State(app): State<Shared>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    app.auth.authorize(&headers, Access::Audit)?;
    let head = app.ledger.head();
    Ok(Json(json!({
        "seq": head.seq,
        "hash": head.hash.to_hex(),
        "recorded_at": head.recorded_at.map(|t| t.to_rfc3339()),
    })))
}

fn no_signer() -> ApiError {
    ApiError::not_found("no_checkpoint", "this server does not sign checkpoints (a follower); ask the leader, or read the LEDGER_CHECKPOINTS stream")
}

fn checkpoints(app: &Shared) -> Result<Arc<Checkpointing>, ApiError> {
    app.checkpoints.clone().ok_or_else(no_signer)
}

fn round_error(e: RoundError) -> ApiError {
    match e {
        RoundError::Checkpoint(c) => c.into(),
        other => ApiError::internal("checkpoint_failed", other.to_string()),
    }
}

/// Which checkpoint an export or evidence pack ends at: `fresh` (one signed now) or
/// `latest` (the latest kept one a quorum of witnesses cosigned; the latest kept one
/// without witnesses). The default is `latest` when the server has witnesses, else `fresh`.
async fn chosen_checkpoint(app: &Shared, c: &Arc<Checkpointing>, params: &Params) -> Result<Issued, ApiError> {
    let latest = match params.str("checkpoint") {
        None => c.cosigning.is_some(),
        Some("latest") => true,
        Some("fresh") => false,
        Some(other) => return Err(ApiError::bad_parameter("checkpoint", format!("`{other}`: fresh or latest"))),
    };
    if !latest {
        return c.checkpoint_now(&app.ledger).await.map(|r| r.issued).map_err(round_error);
    }
    let (ledger, c2) = (app.ledger.clone(), c.clone());
    let found = tokio::task::spawn_blocking(move || c2.latest_cosigned(&ledger)).await.map_err(ApiError::task)?.map_err(|e| ApiError::unavailable(e.to_string()))?;
    match found {
        Some(issued) => Ok(issued),
        None if c.cosigning.is_some() => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_cosigned",
            "no checkpoint has a quorum of witness cosignatures yet (ask with checkpoint=fresh for an uncosigned one)",
        )),
        None => c.checkpoint_now(&app.ledger).await.map(|r| r.issued).map_err(round_error),
    }
}

/// The latest signed checkpoint (C2SP signed note), issuing one if none exists yet. With
/// witnesses: the latest that a quorum cosigned, if any.
#[utoipa::path(get, path = "/v1/checkpoints/latest", tag = "audit",
    responses((status = 200, description = "`{\"checkpoint\": note text, \"origin\", \"tree_size\", \"root\", \"verifier_key\"}`; with witnesses also `cosignatures`, `witness_quorum`, `cosigned`", body = Object), (status = 404, body = ErrorBody)))]
pub async fn latest_checkpoint(State(app): State<Shared>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    app.auth.authorize(&headers, Access::Audit)?;
    let c = checkpoints(&app)?;
    let (ledger, c2) = (app.ledger.clone(), c.clone());
    let found = tokio::task::spawn_blocking(move || -> Result<Option<Issued>, ledger::ReadError> {
        match c2.latest_cosigned(&ledger)? {
            Some(issued) => Ok(Some(issued)),
            None => ledger.latest_checkpoint(),
        }
    })
    .await
    .map_err(ApiError::task)?
    .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let issued = match found {
        Some(issued) => issued,
        None => c.checkpoint_now(&app.ledger).await.map_err(round_error)?.issued,
    };
    Ok(Json(c.json(&issued)))
}

/// Every kept checkpoint of size above `after` (default: all), smallest first, at most
/// `limit`: each as it is kept now (with the cosignatures witnesses added).
#[utoipa::path(get, path = "/v1/checkpoints", tag = "audit",
    params(("after" = Option<u64>, Query, description = "A tree size"), ("limit" = Option<usize>, Query)),
    responses((status = 200, description = "`{\"checkpoints\": [as /v1/checkpoints/latest], \"next_after\": size or null}`", body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_checkpoints(State(app): State<Shared>, headers: HeaderMap, RawQuery(query): RawQuery) -> Result<Json<Value>, ApiError> {
    app.auth.authorize(&headers, Access::Audit)?;
    let c = checkpoints(&app)?;
    let params = Params::parse(query.as_deref(), &["after", "limit"])?;
    let from = match params.u64("after")? {
        None => 0,
        Some(a) => a.checked_add(1).ok_or_else(|| ApiError::bad_parameter("after", "no tree is that large"))?,
    };
    let limit = params.limit()?;
    let ledger = app.ledger.clone();
    let mut page = tokio::task::spawn_blocking(move || ledger.checkpoints_from(from, limit + 1))
        .await
        .map_err(ApiError::task)?
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let more = page.len() > limit;
    page.truncate(limit);
    let last = page.last().map(|i| i.checkpoint.size);
    let items: Vec<Value> = page.iter().map(|i| c.json(i)).collect();
    Ok(Json(json!({ "checkpoints": items, "next_after": if more { last } else { None } })))
}

/// Sign a checkpoint of the current head now (and, with witnesses, have it cosigned).
#[utoipa::path(post, path = "/v1/checkpoints", tag = "audit",
    responses((status = 201, description = "The new checkpoint, as `GET /v1/checkpoints/latest`", body = Object), (status = 404, body = ErrorBody)))]
pub async fn issue_checkpoint(State(app): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.auth.authorize(&headers, Access::Audit)?;
    let c = checkpoints(&app)?;
    // Replicated mode: only the leader signs, so checkpoints move forward in one order.
    if let Some(cluster) = app.nats.as_ref().and_then(|n| n.cluster.as_ref())
        && !super::checkpointing::may_sign(&app.ledger, Some(cluster))
    {
        return Err(not_leader(cluster));
    }
    let round = c.checkpoint_now(&app.ledger).await.map_err(round_error)?;
    Ok((StatusCode::CREATED, Json(c.json(&round.issued))).into_response())
}

/// RFC 9162 inclusion proof of event `seq` in the tree of `tree_size` events (default: head).
#[utoipa::path(get, path = "/v1/proofs/inclusion", tag = "audit",
    params(("seq" = u64, Query), ("tree_size" = Option<u64>, Query)),
    responses((status = 200, description = "`{\"seq\", \"leaf_index\", \"tree_size\", \"hash\", \"hashes\": [hex...], \"root\"}`", body = Object), (status = 400, body = ErrorBody)))]
pub async fn inclusion(State(app): State<Shared>, headers: HeaderMap, RawQuery(query): RawQuery) -> Result<Json<Value>, ApiError> {
    app.auth.authorize(&headers, Access::Audit)?;
    let params = Params::parse(query.as_deref(), &["seq", "tree_size"])?;
    let seq = params.u64("seq")?.ok_or_else(|| ApiError::bad_parameter("seq", "seq is required"))?;
    let size = params.u64("tree_size")?.unwrap_or(app.ledger.head().seq);
    let ledger = app.ledger.clone();
    let value = tokio::task::spawn_blocking(move || -> Result<Value, ledger::ProofError> {
        let proof = ledger.inclusion_proof(seq, size)?;
        let root = ledger.merkle_root(size)?;
        let hash = ledger.event(seq).map_err(ledger::ProofError::Storage)?.map(|e| e.hash).unwrap_or_default();
        Ok(super::inclusion_json(seq, size, &hash, &proof, &root))
    })
    .await
    .map_err(ApiError::task)??;
    Ok(Json(value))
}

/// RFC 9162 consistency proof from the tree of `from` events to the tree of `to` (default: head).
#[utoipa::path(get, path = "/v1/proofs/consistency", tag = "audit",
    params(("from" = u64, Query), ("to" = Option<u64>, Query)),
    responses((status = 200, description = "`{\"from\", \"to\", \"hashes\": [hex...], \"from_root\", \"to_root\"}`", body = Object), (status = 400, body = ErrorBody)))]
pub async fn consistency(State(app): State<Shared>, headers: HeaderMap, RawQuery(query): RawQuery) -> Result<Json<Value>, ApiError> {
    app.auth.authorize(&headers, Access::Audit)?;
    let params = Params::parse(query.as_deref(), &["from", "to"])?;
    let from = params.u64("from")?.ok_or_else(|| ApiError::bad_parameter("from", "from is required"))?;
    let to = params.u64("to")?.unwrap_or(app.ledger.head().seq);
    let ledger = app.ledger.clone();
    let value = tokio::task::spawn_blocking(move || -> Result<Value, ledger::ProofError> {
        let proof = ledger.consistency_proof(from, to)?;
        Ok(super::consistency_json(from, to, &proof, &ledger.merkle_root(from)?, &ledger.merkle_root(to)?))
    })
    .await
    .map_err(ApiError::task)??;
    Ok(Json(value))
}

/// The export bundle (NDJSON, streamed): header, one line per event, signed checkpoint.
#[utoipa::path(get, path = "/v1/export", tag = "audit",
    params(("from" = Option<u64>, Query), ("to" = Option<u64>, Query),
        ("checkpoint" = Option<String>, Query, description = "fresh or latest (default: latest cosigned with witnesses, else fresh)")),
    responses((status = 200, description = "application/x-ndjson, format in docs/FORMAT.md", content_type = "application/x-ndjson"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn export(State(app): State<Shared>, headers: HeaderMap, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    app.auth.authorize(&headers, Access::Audit)?;
    let c = checkpoints(&app)?;
    let params = Params::parse(query.as_deref(), &["from", "to", "checkpoint"])?;
    let (from, to) = (params.u64("from")?, params.u64("to")?);
    let issued = chosen_checkpoint(&app, &c, &params).await?;
    let ledger = app.ledger.clone();
    let plan = {
        let ledger = ledger.clone();
        let key = c.signer.verifier();
        tokio::task::spawn_blocking(move || ledger.plan_export_with(&issued, &key, from, to)).await.map_err(ApiError::task)??
    };
    // A bounded channel: the reader's pace sets the producer's, memory stays flat. A failure
    // part way ends the body with an error, so the client sees a broken transfer rather
    // than a shorter bundle.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, ChannelWriter(tx.clone()));
        if let Err(e) = ledger.write_export(&plan, &mut out) {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// An evidence pack of one contract (NDJSON, FORMAT.md "Evidence pack"): its events with an
/// inclusion proof each to one checkpoint, its revenue report as of `as_of` known at
/// `known_at` (default: the checkpoint's size), and a manifest.
#[utoipa::path(get, path = "/v1/contracts/{id}/evidence", tag = "audit",
    params(("id" = String, Path), ("as_of" = String, Query, description = "YYYY-MM-DD"),
        ("known_at" = Option<u64>, Query, description = "Only events with seq <= known_at (at most the checkpoint's size)"),
        ("granularity" = Option<String>, Query, description = "month (default) or quarter"),
        ("checkpoint" = Option<String>, Query, description = "fresh or latest (default: latest cosigned with witnesses, else fresh)")),
    responses((status = 200, description = "application/x-ndjson", content_type = "application/x-ndjson"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn contract_evidence(State(app): State<Shared>, headers: HeaderMap, Path(id): Path<String>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    app.auth.authorize(&headers, Access::Audit)?;
    let c = checkpoints(&app)?;
    let id = contract_id(&id)?;
    let params = Params::parse(query.as_deref(), &["as_of", "known_at", "granularity", "checkpoint"])?;
    let as_of = params.date("as_of")?.ok_or_else(|| ApiError::bad_parameter("as_of", "as_of is required"))?;
    let known_at = params.u64("known_at")?;
    let granularity = match params.str("granularity") {
        None => Granularity::Month,
        Some(g) => Granularity::parse(g).ok_or_else(|| ApiError::bad_parameter("granularity", "month or quarter"))?,
    };
    let issued = chosen_checkpoint(&app, &c, &params).await?;
    let (ledger, key) = (app.ledger.clone(), c.signer.verifier());
    let lines = tokio::task::spawn_blocking(move || ledger.evidence_pack(&issued, &key, &id, as_of, known_at, granularity))
        .await
        .map_err(ApiError::task)?
        .map_err(|e| match e {
            ledger::checkpoints::EvidenceError::UnknownContract(..) => ApiError::not_found("unknown_contract", e.to_string()),
            ledger::checkpoints::EvidenceError::BeyondCheckpoint { .. } => ApiError::bad_parameter("known_at", e.to_string()),
            ledger::checkpoints::EvidenceError::Proof(p) => p.into(),
            ledger::checkpoints::EvidenceError::Storage(s) => s.into(),
            other => ApiError::internal("evidence_failed", other.to_string()),
        })?;
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// Writes into a response body's channel, from a blocking thread.
struct ChannelWriter(tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.blocking_send(Ok(buf.to_vec())).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Object)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the views are caught up (they are before the server listens) and the ledger
/// takes writes.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, body = Object), (status = 503, body = Object)))]
pub async fn readyz(State(app): State<Shared>) -> Response {
    let head = app.ledger.head().seq;
    let nats = app.nats.as_ref().map(|n| {
        let confirmed = n.status.confirmed.load(std::sync::atomic::Ordering::Relaxed);
        let stream_last = n.status.stream_last.load(std::sync::atomic::Ordering::Relaxed);
        json!({
            "role": if n.follow { "follower" } else { "leader" },
            "connected": matches!(n.client.connection_state(), async_nats::connection::State::Connected),
            "confirmed": confirmed,
            "stream_last": stream_last,
            "lag_events": if n.follow { stream_last.saturating_sub(head) } else { head.saturating_sub(confirmed) },
            "failure": n.status.failure(),
            "json_mirror": n.json_status.as_ref().map(|j| json!({
                "confirmed": j.confirmed.load(std::sync::atomic::Ordering::Relaxed),
                "failure": j.failure(),
            })),
        })
    });
    // Witnesses being down delays cosigning; it is reported here, but the ledger is ready.
    let witnesses = app.checkpoints.as_ref().and_then(|c| c.cosigning.as_ref()).map(|w| {
        json!({"quorum": w.policy().quorum(), "witnesses": w.status()})
    });
    let writer = app.ledger.failure().map(|f| {
        json!({"kind": f.kind.as_str(), "reason": f.reason, "at": f.at.to_rfc3339()})
    });
    let cluster = app.nats.as_ref().and_then(|n| n.cluster.as_ref()).map(|c| cluster_json(&app, c));
    let failure = app
        .ledger
        .failure()
        .map(|f| format!("the ledger writer stopped: {}", f.reason))
        .or_else(|| app.nats.as_ref().and_then(|n| n.status.failure().or_else(|| n.json_status.as_ref().and_then(|j| j.failure()))))
        .or_else(|| app.nats.as_ref().and_then(|n| n.cluster.as_ref()).and_then(|c| c.status.failure()))
        .or_else(|| {
            // Cut off from JetStream: its role and lag (from the last stream position seen)
            // are unknown, and its reads may be arbitrarily stale.
            let cluster = app.nats.as_ref().and_then(|n| n.cluster.as_ref())?;
            cluster.out_of_touch().map(|age| {
                format!(
                    "this node has not heard from JetStream for {} ms (more than {} lease TTLs of {} ms): its role and lag are unknown",
                    age.as_millis(),
                    bus::replicated::OUT_OF_TOUCH_TTLS,
                    cluster.timing.ttl.as_millis()
                )
            })
        })
        .or_else(|| {
            // A follower too far behind serves stale reads: not ready until it catches up.
            let lag = cluster.as_ref().and_then(|c| c["lag_events"].as_u64()).unwrap_or(0);
            (lag > READY_LAG_EVENTS_MAX).then(|| format!("this node is {lag} events behind the stream (more than {READY_LAG_EVENTS_MAX})"))
        });
    match failure {
        None => Json(json!({"ready": true, "head": head, "nats": nats, "cluster": cluster, "witnessing": witnesses})).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": reason, "writer_failure": writer, "head": head, "nats": nats, "cluster": cluster, "witnessing": witnesses})),
        )
            .into_response(),
    }
}

/// A replicated node further behind the stream than this is not ready.
const READY_LAG_EVENTS_MAX: u64 = 10_000;

/// The cluster as this node sees it (replicated mode).
fn cluster_json(app: &super::App, c: &bus::replicated::Cluster) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let head = app.ledger.head().seq;
    let stream_last = c.status.stream_last.load(Relaxed).max(head);
    // A lease holder whose writer was just fenced is catching up, not taking writes.
    let role = match (app.ledger.is_leading(), c.role()) {
        (true, _) => "leader",
        (false, bus::replicated::Role::Leader) => "candidate",
        (false, role) => role.as_str(),
    };
    let members: Vec<Value> = c
        .members()
        .into_iter()
        .map(|m| json!({"url": m.url, "role": m.role, "head": m.head, "lag_events": stream_last.saturating_sub(m.head)}))
        .collect();
    json!({
        "mode": "replicated",
        "role": role,
        "leader": c.leader(),
        "self": c.advertise,
        "head": head,
        "stream_last": stream_last,
        "lag_events": stream_last.saturating_sub(head),
        "terms": c.terms.load(Relaxed),
        "fenced": c.fenced.load(Relaxed),
        "lease_ttl_ms": c.timing.ttl.as_millis() as u64,
        "jetstream_contact_age_ms": c.contact_age().as_millis() as u64,
        "members": members,
        "failure": c.status.failure(),
    })
}

/// Who leads the cluster, and this node's place in it.
#[utoipa::path(get, path = "/v1/cluster", tag = "operations",
    responses((status = 200, description = "`{\"role\": \"leader\"|\"follower\"|\"candidate\", \"leader\": URL or null, \"head\", \"stream_last\", \"lag_events\", \"members\": [...]}`", body = Object)))]
/// Unauthenticated, like `/readyz`: clients need it to find the leader, and it shows no
/// contract data.
pub async fn cluster(State(app): State<Shared>) -> Result<Json<Value>, ApiError> {
    let head = app.ledger.head().seq;
    Ok(Json(match &app.nats {
        Some(n) => match &n.cluster {
            Some(c) => cluster_json(&app, c),
            None if n.follow => json!({"mode": "follower", "role": "follower", "leader": n.leader_url, "head": head}),
            None => json!({"mode": "outbox", "role": "leader", "leader": null, "head": head}),
        },
        None => json!({"mode": "embedded", "role": "leader", "leader": null, "head": head}),
    }))
}

/// The OpenAPI document, built from the same route list the server runs.
pub static OPENAPI: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub async fn openapi() -> Json<Value> {
    Json(serde_json::to_value(OPENAPI.get()).unwrap_or(Value::Null))
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub async fn metrics(State(app): State<Shared>) -> Response {
    let head = app.ledger.head();
    metrics::gauge!("ledger_chain_length").set(head.seq as f64);
    metrics::gauge!("ledger_contracts").set(app.ledger.contract_count() as f64);
    if let Some(n) = &app.nats {
        use std::sync::atomic::Ordering::Relaxed;
        let connected = matches!(n.client.connection_state(), async_nats::connection::State::Connected);
        metrics::gauge!("nats_connected").set(if connected { 1.0 } else { 0.0 });
        if let Some(c) = &n.cluster {
            // Replicated mode: seconds since JetStream last answered the lease loop; more
            // than OUT_OF_TOUCH_TTLS lease TTLs makes /readyz 503.
            metrics::gauge!("cluster_jetstream_contact_age_seconds").set(c.contact_age().as_secs_f64());
        }
        let confirmed = n.status.confirmed.load(Relaxed);
        if n.follow {
            let stream_last = n.status.stream_last.load(Relaxed);
            metrics::gauge!("follower_lag_events").set(stream_last.saturating_sub(head.seq) as f64);
        } else {
            metrics::gauge!("outbox_lag_events").set(head.seq.saturating_sub(confirmed) as f64);
            // Age of the oldest event not yet acknowledged by JetStream.
            let lag_seconds = match app.ledger.event(confirmed + 1) {
                Ok(Some(oldest)) => (ledger::system_clock().micros() - oldest.event.recorded_at.micros()).max(0) as f64 / 1e6,
                _ => 0.0,
            };
            metrics::gauge!("outbox_lag_seconds").set(lag_seconds);
        }
    }
    let body = app.metrics.render();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
