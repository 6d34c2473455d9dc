//! The dashboard at `/`: one HTML page, its script and style sheet, compiled into the
//! binary (`include_str!`: no CDN, nothing built at build time), and the contracts' charts as
//! SVG drawn by the server. The page reads the same JSON routes as any client, with the
//! bearer token the user gives it (kept in the tab's session storage), and follows
//! `/v1/stream` for the live timeline.
//!
//! Served with the server's restrictive Content-Security-Policy for HTML: scripts, styles and
//! connections from this origin only, no inline script or style, no framing.

pub mod chart;

use crate::reports::{point_of_view, today};
use crate::server::params::Params;
use crate::server::auth::Access;
use crate::server::{ApiError, Shared};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use events::ContractId;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// The page's own headers; `X-Content-Type-Options: nosniff` (every response) and the CSP
/// of HTML ([`crate::server::HTML_CSP`], set by [`crate::server::html`]) come from the
/// server's edge rules.
fn with_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    with_headers(([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response())
}

/// The dashboard.
#[utoipa::path(get, path = "/", tag = "dashboard", responses((status = 200, description = "The dashboard (HTML)", content_type = "text/html")))]
pub async fn index() -> Response {
    with_headers(crate::server::html(INDEX_HTML))
}

/// The dashboard's script.
#[utoipa::path(get, path = "/assets/app.js", tag = "dashboard", responses((status = 200, content_type = "text/javascript")))]
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// The dashboard's style sheet.
#[utoipa::path(get, path = "/assets/app.css", tag = "dashboard", responses((status = 200, content_type = "text/css")))]
pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// The dashboard's icon.
#[utoipa::path(get, path = "/assets/icon.svg", tag = "dashboard", responses((status = 200, content_type = "image/svg+xml")))]
pub async fn icon() -> Response {
    asset("image/svg+xml", ICON_SVG)
}

/// A contract's chart: cumulative recognized revenue (to `as_of`) against the scheduled firm
/// value and the conditional value over the term, as SVG.
#[utoipa::path(get, path = "/v1/contracts/{id}/chart.svg", tag = "finance",
    params(("id" = String, Path), ("as_of" = Option<String>, Query), ("known_at" = Option<u64>, Query)),
    responses((status = 200, description = "image/svg+xml", content_type = "image/svg+xml"), (status = 400, body = crate::server::ErrorBody), (status = 404, body = crate::server::ErrorBody)))]
pub async fn contract_chart(State(app): State<Shared>, headers: HeaderMap, Path(id): Path<String>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    app.auth.authorize(&headers, Access::Finance)?;
    let id = ContractId::parse(&id).map_err(|r| ApiError::from(r).field("id"))?;
    let params = Params::parse(query.as_deref(), &["as_of", "known_at"])?;
    let at = point_of_view(&app.ledger, params.date("as_of")?.unwrap_or_else(today), &params, "known_at")?;
    let drawn = app
        .ledger
        .with_contract(&id, &at, |s| s.chart(&at).map(|points| chart::svg(id.as_str(), s.currency(), at.date, &points)))?
        .ok_or_else(|| ApiError::not_found("unknown_contract", format!("no contract `{id}` known at seq {}", at.known_at)))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "overflow", e.to_string()))?;
    let mut r = drawn.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
    Ok(r)
}
