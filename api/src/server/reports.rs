//! Finance report routes: each is a thin wrapper around [`crate::reports::render`], in JSON
//! or, with `format=csv` or `Accept: text/csv`, one CSV section (`section=`).

use super::auth::Access;
use super::error::{ApiError, ErrorBody};
use super::params::Params;
use super::Shared;
use crate::reports::{self, Kind, Rendered};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use events::ContractId;

fn accepts_csv(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/csv"))
}

/// Authorizes, parses the query strictly, builds the report off the executor, answers.
async fn respond(app: Shared, headers: HeaderMap, kind: Kind, contract: Option<String>, query: Option<String>) -> Result<Response, ApiError> {
    app.auth.authorize(&headers, Access::Finance)?;
    let contract = contract.map(|c| ContractId::parse(&c).map_err(|r| ApiError::from(r).field("id"))).transpose()?;
    let params = Params::parse(query.as_deref(), &kind.allowed())?;
    let output = reports::output(&params, accepts_csv(&headers), kind, contract.is_some())?;
    let ledger = app.ledger.clone();
    let started = std::time::Instant::now();
    let rendered = tokio::task::spawn_blocking(move || reports::render(&ledger, kind, contract.as_ref(), &params, output))
        .await
        .map_err(ApiError::task)??;
    metrics::histogram!("http_report_seconds", "report" => kind.name()).record(started.elapsed().as_secs_f64());
    let mut response = match rendered {
        Rendered::Json(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Rendered::Csv(text) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response(),
        Rendered::Tables(_) => unreachable!("the HTTP API answers JSON or CSV"),
    };
    response.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept"));
    Ok(response)
}

/// Revenue figures and periods (SPEC section 4's object); CSV sections `rows` (periods), `figures`.
#[utoipa::path(get, path = "/v1/contracts/{id}/revenue", tag = "finance",
    params(("id" = String, Path), ("as_of" = Option<String>, Query, description = "YYYY-MM-DD, default today"),
        ("known_at" = Option<u64>, Query, description = "Only events with seq <= known_at count"),
        ("granularity" = Option<String>, Query, description = "month (default) or quarter"),
        ("format" = Option<String>, Query, description = "json (default) or csv"), ("section" = Option<String>, Query, description = "CSV section")),
    responses((status = 200, description = "contract_id, as_of, known_at, currency, headline, transaction_price, recognized, rpo, remaining_conditional, forfeited, cancelled, billed, collected, receivable, deferred_revenue, contract_asset, periods", body = Object),
        (status = 404, body = ErrorBody), (status = 400, body = ErrorBody)))]
pub async fn contract_revenue(State(app): State<Shared>, headers: HeaderMap, Path(id): Path<String>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    respond(app, headers, Kind::Revenue, Some(id), q).await
}

/// Totals and revenue per period per currency (never summed across currencies), and every
/// contract's figures; CSV sections `rows`, `totals`, `periods`.
#[utoipa::path(get, path = "/v1/portfolio", tag = "finance",
    params(("as_of" = Option<String>, Query), ("known_at" = Option<u64>, Query), ("granularity" = Option<String>, Query),
        ("format" = Option<String>, Query), ("section" = Option<String>, Query)),
    responses((status = 200, description = "`{\"as_of\", \"known_at\", \"granularity\", \"totals\": [{\"currency\", \"contracts\", figures..., \"periods\"}], \"contracts\": [...]}`", body = Object), (status = 400, body = ErrorBody)))]
pub async fn portfolio(State(app): State<Shared>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    respond(app, headers, Kind::Revenue, None, q).await
}

/// A contract's rollforward for (from, to]: opening at `from`, movements, closing at `to`,
/// for the net contract position, receivable, RPO and remaining conditional.
#[utoipa::path(get, path = "/v1/contracts/{id}/rollforward", tag = "finance",
    params(("id" = String, Path), ("from" = String, Query, description = "A (exclusive), YYYY-MM-DD"), ("to" = String, Query, description = "B (inclusive)"),
        ("known_at" = Option<u64>, Query), ("format" = Option<String>, Query), ("section" = Option<String>, Query)),
    responses((status = 200, description = "Per balance: opening, movements by line, closing", body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn contract_rollforward(State(app): State<Shared>, headers: HeaderMap, Path(id): Path<String>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    respond(app, headers, Kind::Rollforward, Some(id), q).await
}

/// The portfolio rollforward for (from, to]: totals per currency and every contract's.
#[utoipa::path(get, path = "/v1/portfolio/rollforward", tag = "finance",
    params(("from" = String, Query), ("to" = String, Query), ("known_at" = Option<u64>, Query), ("format" = Option<String>, Query), ("section" = Option<String>, Query)),
    responses((status = 200, description = "`{\"from\", \"to\", \"known_at\", \"totals\": [...], \"contracts\": [...]}`", body = Object), (status = 400, body = ErrorBody)))]
pub async fn portfolio_rollforward(State(app): State<Shared>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    respond(app, headers, Kind::Rollforward, None, q).await
}

/// A contract's RPO at `as_of`: next 12 months, thereafter, yearly buckets.
#[utoipa::path(get, path = "/v1/contracts/{id}/rpo", tag = "finance",
    params(("id" = String, Path), ("as_of" = Option<String>, Query), ("known_at" = Option<u64>, Query), ("format" = Option<String>, Query), ("section" = Option<String>, Query)),
    responses((status = 200, description = "`{\"rpo\", \"next_12_months\", \"thereafter\", \"years\": [...]}`", body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn contract_rpo(State(app): State<Shared>, headers: HeaderMap, Path(id): Path<String>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    respond(app, headers, Kind::Rpo, Some(id), q).await
}

/// The portfolio's RPO disclosure per currency, and every contract's.
#[utoipa::path(get, path = "/v1/portfolio/rpo", tag = "finance",
    params(("as_of" = Option<String>, Query), ("known_at" = Option<u64>, Query), ("format" = Option<String>, Query), ("section" = Option<String>, Query)),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
pub async fn portfolio_rpo(State(app): State<Shared>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    respond(app, headers, Kind::Rpo, None, q).await
}

/// Scheduled recognition per future period, a row per contract (adding up to its RPO),
/// remaining conditional apart; totals per currency.
#[utoipa::path(get, path = "/v1/portfolio/waterfall", tag = "finance",
    params(("as_of" = Option<String>, Query), ("known_at" = Option<u64>, Query), ("granularity" = Option<String>, Query, description = "month (default) or quarter"),
        ("format" = Option<String>, Query), ("section" = Option<String>, Query)),
    responses((status = 200, description = "`{\"columns\": [...], \"totals\": [...], \"rows\": [{\"contract_id\", \"rpo\", \"remaining_conditional\", \"scheduled\": [...]}]}`", body = Object), (status = 400, body = ErrorBody)))]
pub async fn portfolio_waterfall(State(app): State<Shared>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    respond(app, headers, Kind::Waterfall, None, q).await
}

/// Every (contract, period) whose recognized revenue differs as known at `from_known_at` and
/// at `to_known_at` (default the head), with the seqs that caused it and the period each was
/// posted in.
#[utoipa::path(get, path = "/v1/corrections", tag = "finance",
    params(("as_of" = Option<String>, Query), ("from_known_at" = u64, Query), ("to_known_at" = Option<u64>, Query), ("granularity" = Option<String>, Query),
        ("format" = Option<String>, Query), ("section" = Option<String>, Query)),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
pub async fn corrections(State(app): State<Shared>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    respond(app, headers, Kind::Corrections, None, q).await
}

/// Every period close: period end, seq, effective date, actor, recorded_at.
#[utoipa::path(get, path = "/v1/periods", tag = "finance",
    params(("format" = Option<String>, Query)),
    responses((status = 200, description = "`{\"period_end\": latest or null, \"closes\": [...]}`", body = Object)))]
pub async fn periods(State(app): State<Shared>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    respond(app, headers, Kind::Closes, None, q).await
}

/// What closing `period_end` would freeze: the portfolio rollforward of the open window and
/// of each open month, and what blocks the close.
#[utoipa::path(get, path = "/v1/periods/preview", tag = "finance",
    params(("period_end" = String, Query), ("format" = Option<String>, Query), ("section" = Option<String>, Query)),
    responses((status = 200, description = "`{\"period_end\", \"last_closed\", \"can_close\", \"blockers\", \"rollforward\", \"months\"}`", body = Object), (status = 400, body = ErrorBody)))]
pub async fn periods_preview(State(app): State<Shared>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    respond(app, headers, Kind::ClosePreview, None, q).await
}
