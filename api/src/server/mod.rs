//! `cledger serve`: the HTTP API (axum on tokio).
//!
//! Every route is registered through `utoipa_axum`'s `OpenApiRouter`, so `/openapi.json`
//! lists exactly the routes that exist.

pub mod auth;
pub mod checkpointing;
mod edge;
mod error;
mod handlers;
pub(crate) mod params;
mod reports;
mod stream;
pub mod tls;

use auth::Auth;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ledger::Ledger;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use edge::Limits;
pub use error::{ApiError, ErrorBody};
pub use tls::TlsFiles;

/// Largest body of `POST /v1/events`.
pub const EVENT_BODY_BYTES_MAX: usize = 256 * 1024;
/// Largest body of `POST /v1/events/batch`.
pub const BATCH_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// How long connections may take to finish after SIGTERM before they are cut.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Most events in one batch request.
pub const BATCH_EVENTS_MAX: usize = 1_000;
/// Most Server-Sent Events clients at once, by default.
pub const MAX_STREAMS_DEFAULT: usize = 256;
/// How long a request body may take to arrive, whole.
pub const BODY_READ_LIMIT: Duration = Duration::from_secs(30);
/// How often the certificate files are checked for a change (besides SIGHUP).
const TLS_POLL: Duration = Duration::from_secs(2);

/// The Content-Security-Policy of every HTML response: nothing from elsewhere, no inline
/// script or style, no framing, no form posts, no plugins.
pub const HTML_CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// An HTML page with the restrictive Content-Security-Policy (the dashboard's pages use
/// this; any other `text/html` response gets the same policy from the router's edge layer).
pub fn html(body: impl Into<axum::body::Body>) -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body.into()).into_response();
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(HTML_CSP));
    response
}

/// How to reach NATS, and in which role.
#[derive(Clone, Debug, Default)]
pub struct NatsConfig {
    pub url: String,
    pub creds: Option<PathBuf>,
    /// User name, with the password read from `password_file`.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A file holding an NKEY seed (`SU...`).
    pub nkey: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub replicas: usize,
    /// Follow the stream instead of publishing to it.
    pub follow: bool,
    /// Where writes go, named in a follower's refusals.
    pub leader_url: Option<String>,
    /// Also publish every event's JSON on `ledger.json.<contract>.<type>` (stream LEDGER_JSON).
    pub json: bool,
    /// Replicated mode: the stream is the commit log; one node writes at a time, by lease.
    pub replicated: bool,
    /// Replicated mode: this node's URL as clients reach it (named in the lease).
    pub advertise: Option<String>,
    /// Replicated mode: the lease lapses this long after its last renewal.
    pub lease_ttl_ms: u64,
}

pub struct ServeConfig {
    /// Signing key file (default: the data directory's, created on first start).
    pub signing_key: Option<PathBuf>,
    /// Checkpoint origin (default: derived from the key).
    pub origin: Option<String>,
    /// Issue a checkpoint this often when the ledger grew (0: only on demand).
    pub checkpoint_every: Duration,
    /// Witnesses that cosign the checkpoints, and how many must.
    pub witnesses: checkpointing::WitnessConfig,
    pub nats: Option<NatsConfig>,
    pub data: PathBuf,
    pub listen: SocketAddr,
    pub tokens: Option<PathBuf>,
    /// A stream client that reads nothing for this long is dropped (and any connection
    /// whose response the client stops taking is closed after as long).
    pub sse_stall: Duration,
    pub log_json: bool,
    /// Serve HTTPS from these files.
    pub tls: Option<TlsFiles>,
    /// Allow plain HTTP on a non-loopback address (a TLS-terminating proxy in front).
    pub insecure_http: bool,
    /// Host names requests may name besides the listen address (checked on an open server,
    /// or whenever names are given).
    pub allowed_hosts: Vec<String>,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Most Server-Sent Events clients at once.
    pub max_streams: usize,
    /// [`ledger::Options::views_resident_events`].
    pub views_resident_events: u64,
}

impl ServeConfig {
    /// A loopback server on `data` with every bound at its default (what `demo` runs).
    pub fn local(data: PathBuf, listen: SocketAddr) -> ServeConfig {
        ServeConfig {
            signing_key: None,
            origin: None,
            checkpoint_every: Duration::from_secs(60),
            witnesses: Default::default(),
            nats: None,
            data,
            listen,
            tokens: None,
            sse_stall: Limits::DEFAULT.write_stall,
            log_json: false,
            tls: None,
            insecure_http: false,
            allowed_hosts: vec![],
            max_connections: Limits::DEFAULT.max_connections,
            header_read_timeout: Limits::DEFAULT.header_read_timeout,
            idle_timeout: Limits::DEFAULT.idle_timeout,
            max_streams: MAX_STREAMS_DEFAULT,
            views_resident_events: ledger::views::RESIDENT_EVENTS_DEFAULT,
        }
    }
}

/// What every handler shares.
pub struct App {
    pub ledger: Arc<Ledger>,
    /// Signs checkpoints and has them cosigned; followers have none (they do not sign for
    /// their leader).
    pub checkpoints: Option<Arc<checkpointing::Checkpointing>>,
    pub nats: Option<NatsHandle>,
    pub auth: Auth,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub sse_stall: Duration,
    /// One permit per Server-Sent Events client.
    pub streams: Arc<tokio::sync::Semaphore>,
    pub max_streams: usize,
    /// Host names a request may name (lower case, without port); `None`: any.
    pub allowed_hosts: Option<Vec<String>>,
}

pub type Shared = Arc<App>;

pub struct NatsHandle {
    pub client: async_nats::Client,
    pub status: Arc<bus::NatsStatus>,
    /// The JSON mirror's publisher, with `--nats-json`.
    pub json_status: Option<Arc<bus::NatsStatus>>,
    pub follow: bool,
    pub leader_url: Option<String>,
    /// Replicated mode: this node's view of the cluster.
    pub cluster: Option<Arc<bus::replicated::Cluster>>,
}

/// Why `serve` could not connect to NATS. A refused credential stops the start (exit code
/// 2); an unreachable server does not (the outbox and follower catch up when it returns).
#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    #[error("{flag} {}: {source}", path.display())]
    ReadFile { flag: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{flag} {}: {reason}", path.display())]
    BadFile { flag: &'static str, path: PathBuf, reason: String },
    #[error("{0}")]
    Flags(&'static str),
    #[error("NATS URL `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error("NATS at {url} refused {what}: {reason}")]
    Refused { url: String, what: String, reason: String },
    #[error("NATS at {url}: {source}")]
    Connect { url: String, source: async_nats::ConnectError },
}

impl NatsConfig {
    /// What this server presents to NATS, in words for a refusal.
    fn credential(&self) -> String {
        let mut parts = vec![];
        if let Some(c) = &self.creds {
            parts.push(format!("the credentials in --nats-creds {}", c.display()));
        }
        if let Some(u) = &self.user {
            parts.push(format!("user `{u}` (--nats-user)"));
        }
        if let Some(k) = &self.nkey {
            parts.push(format!("the NKEY seed in --nats-nkey {}", k.display()));
        }
        if parts.is_empty() { "a connection without credentials".into() } else { parts.join(" and ") }
    }

    async fn options(&self, retry: bool) -> Result<async_nats::ConnectOptions, NatsConnectError> {
        let read = |flag: &'static str, path: &PathBuf| {
            std::fs::read_to_string(path).map(|t| t.trim().to_string()).map_err(|source| NatsConnectError::ReadFile { flag, path: path.clone(), source })
        };
        let mut options = async_nats::ConnectOptions::new().name("cledger").max_reconnects(None).connection_timeout(Duration::from_secs(3));
        if retry {
            // Start even if NATS is down: the outbox catches up when it returns.
            options = options.retry_on_initial_connect();
        }
        if let Some(creds) = &self.creds {
            options = options.credentials_file(creds).await.map_err(|source| NatsConnectError::ReadFile { flag: "--nats-creds", path: creds.clone(), source })?;
        }
        match (&self.user, &self.password_file) {
            (Some(user), Some(file)) => options = options.user_and_password(user.clone(), read("--nats-password-file", file)?),
            (None, None) => {}
            _ => return Err(NatsConnectError::Flags("--nats-user and --nats-password-file go together")),
        }
        if let Some(path) = &self.nkey {
            let seed = read("--nats-nkey", path)?;
            // Checked here so a bad file is named, not reported as a refusal by the server.
            nkeys::KeyPair::from_seed(&seed).map_err(|e| NatsConnectError::BadFile { flag: "--nats-nkey", path: path.clone(), reason: format!("not an NKEY seed: {e}") })?;
            options = options.nkey(seed);
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => options = options.add_client_certificate(cert.clone(), key.clone()).require_tls(true),
            (None, None) => {}
            _ => return Err(NatsConnectError::Flags("--nats-tls-cert and --nats-tls-key go together")),
        }
        Ok(options)
    }

    fn servers(&self) -> Result<Vec<async_nats::ServerAddr>, NatsConnectError> {
        // A cluster is given as a comma-separated list of URLs.
        self.url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>().map_err(|e| NatsConnectError::Url { url: u.to_string(), reason: e.to_string() }))
            .collect()
    }
}

/// The error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Whether a first connection failed because NATS could not be reached (worth retrying in
/// the background) rather than because it refused us.
fn unreachable(e: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as K;
    match e.kind() {
        K::TimedOut | K::Dns | K::MaxReconnects => true,
        K::Io => {
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                if let Some(io) = s.downcast_ref::<std::io::Error>() {
                    use std::io::ErrorKind as I;
                    return matches!(io.kind(), I::ConnectionRefused | I::TimedOut | I::HostUnreachable | I::NetworkUnreachable | I::AddrNotAvailable | I::NotFound);
                }
                source = s.source();
            }
            false
        }
        K::ServerParse | K::Authentication | K::AuthorizationViolation | K::Tls => false,
    }
}

/// Whether a connection error came from the TLS handshake (rustls reports through I/O).
fn tls_failure(e: &async_nats::ConnectError) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.get_ref().is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        source = s.source();
    }
    false
}

async fn connect_nats(config: &NatsConfig) -> Result<async_nats::Client, NatsConnectError> {
    let servers = config.servers()?;
    let url = config.url.clone();
    // The first attempt tells a refusal (stop now, naming what was refused) from an
    // unreachable server (start anyway and keep trying).
    match config.options(false).await?.connect(servers.clone()).await {
        Ok(client) => Ok(client),
        Err(e) if unreachable(&e) => {
            tracing::warn!("NATS at {url} is not reachable ({}); starting anyway and retrying in the background", error_chain(&e));
            config.options(true).await?.connect(servers).await.map_err(|source| NatsConnectError::Connect { url, source })
        }
        Err(e) => {
            let what = if e.kind() == async_nats::ConnectErrorKind::Tls || tls_failure(&e) { "the TLS connection".to_string() } else { config.credential() };
            Err(NatsConnectError::Refused { url, what, reason: error_chain(&e) })
        }
    }
}

/// How long a replicated node tries, at start, to reach JetStream to check its setup.
const SETUP_CHECK_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Replicated mode: refuses to start (exit 2, naming every problem) on a LEDGER stream or
/// lease bucket that cannot give what the mode promises (R < --stream-replicas, no atomic
/// batches, deletes or purges allowed, a bucket TTL other than --lease-ttl-ms). JetStream
/// out of reach does not stop the start: the cluster loop makes the same check before it
/// follows or leads, and stops loudly on an unfit setup.
async fn check_replicated_setup(client: &async_nats::Client, settings: &bus::StreamSettings, timing: bus::replicated::LeaseTiming) -> Result<(), String> {
    let js = async_nats::jetstream::new(client.clone());
    let deadline = tokio::time::Instant::now() + SETUP_CHECK_LIMIT;
    loop {
        match bus::replicated::open_setup(&js, settings, timing).await {
            Ok(_) => return Ok(()),
            Err(bus::NatsError::Contradiction(reason)) => return Err(format!("{reason}. Fix them (nats stream edit / nats kv), or start on a new stream and bucket")),
            Err(bus::NatsError::Transient(reason)) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!("cannot check the JetStream setup yet ({reason}); starting as a follower, the cluster loop checks it before following or leading");
                return Ok(());
            }
            Err(bus::NatsError::Transient(_)) => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
        }
    }
}

/// Checks the stream against the ledger before serving: a contradiction refuses to start;
/// NATS being unreachable does not (the outbox or follower catches up later).
async fn check_stream_at_start(ledger: &Ledger, client: &async_nats::Client, settings: &bus::StreamSettings, follow: bool) -> Result<(), String> {
    use bus::NatsError;
    let check = async {
        let js = async_nats::jetstream::new(client.clone());
        if follow {
            let stream = js.get_stream(&settings.name).await.map_err(|e| NatsError::Transient(e.to_string()))?;
            let last = stream.get_info().await.map_err(|e| NatsError::Transient(e.to_string()))?.state.last_sequence;
            let head = ledger.head().seq;
            if head > last {
                return Err(NatsError::Contradiction(format!("this follower holds seq {head}, the stream ends at {last}")));
            }
            Ok(())
        } else {
            let mut stream = bus::ensure_stream(&js, settings).await?;
            bus::resume_point(&mut stream, ledger, settings.flavor).await.map(|_| ())
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(NatsError::Contradiction(reason))) => Err(format!("refusing to run: {reason}")),
        Ok(Err(NatsError::Transient(reason))) => {
            tracing::warn!("cannot check the stream now ({reason}); will keep trying in the background");
            Ok(())
        }
        Err(_) => {
            tracing::warn!("NATS did not answer within 5 s; will keep trying in the background");
            Ok(())
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "compute-ledger", description = "An event-sourced, hash-chained ledger for compute-lease contracts (SPEC section 6)."),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

/// Builds the router and the OpenAPI document from the same route list.
pub fn router(app: Shared) -> axum::Router {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(handlers::append_event))
        .routes(routes!(handlers::append_batch))
        .routes(routes!(handlers::list_events))
        .routes(routes!(handlers::get_event))
        .routes(routes!(handlers::list_contracts))
        .routes(routes!(handlers::get_contract))
        .routes(routes!(handlers::contract_events))
        .routes(routes!(reports::contract_revenue))
        .routes(routes!(reports::contract_rollforward))
        .routes(routes!(reports::contract_rpo))
        .routes(routes!(reports::portfolio))
        .routes(routes!(reports::portfolio_rollforward))
        .routes(routes!(reports::portfolio_rpo))
        .routes(routes!(reports::portfolio_waterfall))
        .routes(routes!(reports::corrections))
        .routes(routes!(reports::periods))
        .routes(routes!(reports::periods_preview))
        .routes(routes!(handlers::chain_head))
        .routes(routes!(handlers::latest_checkpoint))
        .routes(routes!(handlers::list_checkpoints, handlers::issue_checkpoint))
        .routes(routes!(handlers::contract_evidence))
        .routes(routes!(handlers::inclusion))
        .routes(routes!(handlers::consistency))
        .routes(routes!(handlers::export))
        .routes(routes!(stream::stream))
        .routes(routes!(handlers::healthz))
        .routes(routes!(handlers::readyz))
        .routes(routes!(handlers::cluster))
        .routes(routes!(handlers::metrics))
        .routes(routes!(handlers::openapi))
        .routes(routes!(crate::dashboard::index))
        .routes(routes!(crate::dashboard::app_js))
        .routes(routes!(crate::dashboard::app_css))
        .routes(routes!(crate::dashboard::icon))
        .routes(routes!(crate::dashboard::contract_chart))
        .split_for_parts();
    // The document is built from the routes above; the handler serves this copy.
    let _ = handlers::OPENAPI.set(api);
    router
        .fallback(|| async { ApiError::not_found("not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        // Router-wide rules: every route added above (and any added later) gets them.
        .layer(axum::middleware::from_fn_with_state(app.clone(), edge_rules))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        // A handler's panic (a bug) answers 500 `internal` in the one error shape, instead
        // of a connection closed without a reply; the panic hook has logged and counted it.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|payload: Box<dyn std::any::Any + Send>| {
            ApiError::internal("internal", format!("the server failed on this request: {}", panic_text(payload.as_ref()))).into_response()
        }))
        .with_state(app)
}

/// The rules of every route, in one place:
/// - without tokens (or when names were given), the `Host` must name the listen address or
///   an allowed name: a page on another site cannot reach a loopback server by DNS
///   rebinding;
/// - a request that carries a body (POST, PUT, PATCH) must say
///   `Content-Type: application/json`: a browser sends that cross-site only after a CORS
///   preflight, which this server never grants, so no other site can post to it;
/// - every response says `X-Content-Type-Options: nosniff`, and HTML carries the
///   restrictive [`HTML_CSP`] unless its handler set one.
async fn edge_rules(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let checked = check_host(&app, &request).and_then(|()| check_content_type(&request));
    let mut response = match checked {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let html = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"));
    if html && !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(HTML_CSP));
    }
    response
}

/// The host part of a `Host` header, lower case, without port or IPv6 brackets.
fn host_name(value: &str) -> String {
    let value = value.trim();
    let host = match value.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => value.rsplit_once(':').map_or(value, |(h, port)| if port.chars().all(|c| c.is_ascii_digit()) { h } else { value }),
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn check_host(app: &App, request: &Request) -> Result<(), ApiError> {
    let Some(allowed) = &app.allowed_hosts else { return Ok(()) };
    let given = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| request.uri().authority().map(|a| a.as_str()));
    let refuse = |message: String| {
        metrics::counter!("http_host_refused_total").increment(1);
        ApiError::new(StatusCode::BAD_REQUEST, "host_not_allowed", message).field("Host").with("allowed", serde_json::json!(allowed))
    };
    let Some(given) = given else { return Err(refuse("no Host header; this server answers only requests naming it".into())) };
    let name = host_name(given);
    if allowed.iter().any(|a| *a == name) {
        Ok(())
    } else {
        Err(refuse(format!("Host `{given}` is not this server's (a DNS-rebinding page?); allowed: {} (add names with --allowed-host)", allowed.join(", "))))
    }
}

fn check_content_type(request: &Request) -> Result<(), ApiError> {
    // The methods that carry a body. (A cross-site page may send only GET, HEAD and POST
    // without a preflight; PUT and PATCH are held to the same rule for one rule.)
    if !matches!(*request.method(), Method::POST | Method::PUT | Method::PATCH) {
        return Ok(());
    }
    let given = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let essence = given.map(|t| t.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    if essence.as_deref() == Some("application/json") {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("{} requests must send Content-Type: application/json (got {})", request.method(), given.map_or("none".into(), |g| format!("`{g}`"))),
    )
    .field("Content-Type"))
}

/// The names a request's `Host` may carry: the listen address, `localhost` when it is a
/// loopback one, and the operator's names. `None` (no check) on a server with tokens and no
/// names given.
fn allowed_hosts(config: &ServeConfig, open: bool, address: SocketAddr) -> Option<Vec<String>> {
    if !open && config.allowed_hosts.is_empty() {
        return None;
    }
    let mut names = vec![address.ip().to_string().to_ascii_lowercase()];
    if address.ip().is_loopback() {
        names.push("localhost".into());
    }
    names.extend(config.allowed_hosts.iter().map(|h| host_name(h)));
    names.dedup();
    Some(names)
}

pub(crate) fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLEDGER_LOG").unwrap_or_else(|_| "info,tower_http=warn".into());
    // Colours only on a terminal: a log file or journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    log_panics();
}

/// Every panic, in any thread, is logged (with where it happened) and counted, whatever
/// then catches it: a handler's panic ends only its request, the writer's stops the writer
/// (`ledger_writer_failed`, `/readyz`). The release build unwinds (`panic = "unwind"` in
/// Cargo.toml; ARCHITECTURE.md says why).
fn log_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        tracing::error!(thread = thread.name().unwrap_or("unnamed"), location, "panic: {}", panic_text(info.payload()));
        metrics::counter!("panics_total").increment(1);
        // Still print the default report (with a backtrace when RUST_BACKTRACE is set).
        previous(info);
    }));
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    // Latency buckets from 100 µs to 10 s; batch-size buckets from 1 to 20,000.
    let seconds = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    let sizes = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0];
    use metrics_exporter_prometheus::Matcher;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_events".into()), &sizes))
        .and_then(|b| b.install_recorder())
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))
}

/// The ledger's options; `CLEDGER_FAULT=N:ACTION` injects a storage fault (tests only).
fn ledger_options() -> Result<ledger::Options, String> {
    let mut options = ledger::Options::default();
    if let Ok(plan) = std::env::var("CLEDGER_FAULT") {
        let plan: ledger::io::FaultPlan = plan.parse().map_err(|e| format!("CLEDGER_FAULT: {e}"))?;
        tracing::warn!("FAULT INJECTION ENABLED (CLEDGER_FAULT): durable-path operation {} will {:?}; never set this in production", plan.nth, plan.action);
        options.faults = Some(plan);
    }
    Ok(options)
}

/// Refuses a listen address that would expose the API unsafely: an open server anywhere but
/// loopback; a server with tokens on a non-loopback address without TLS, unless the
/// operator said `--insecure-http` (a TLS-terminating proxy in front).
fn check_listen(config: &ServeConfig, open: bool) -> Result<(), String> {
    let loopback = config.listen.ip().is_loopback();
    if open && !loopback {
        return Err(format!(
            "refusing to listen on {} without a tokens file: an open server listens on loopback only (give --tokens FILE)",
            config.listen
        ));
    }
    if !loopback && config.tls.is_none() && !config.insecure_http {
        return Err(format!(
            "refusing to listen on {} over plain HTTP: bearer tokens and contract figures would cross the network in clear. Give --tls-cert FILE --tls-key FILE, or --insecure-http if a TLS-terminating proxy is in front",
            config.listen
        ));
    }
    if !loopback && config.tls.is_none() {
        tracing::warn!(listen = %config.listen, "--insecure-http: serving plain HTTP on a non-loopback address; only safe behind a TLS-terminating proxy");
        eprintln!("warning: --insecure-http: plain HTTP on {}; tokens and figures are readable on the network unless a TLS proxy is in front", config.listen);
    }
    Ok(())
}

/// The first portfolio report after open would read every contract's saved summary (about
/// 100 ms at 10,000 contracts): read them on a thread of their own while the server starts
/// answering. A report that comes first reads whatever is still missing itself.
fn read_summaries_ahead(ledger: &Arc<Ledger>) {
    let ledger = ledger.clone();
    let started = std::thread::Builder::new().name("summaries-ahead".into()).spawn(move || {
        let began = std::time::Instant::now();
        ledger.read_summaries_ahead();
        tracing::info!(contracts = ledger.contract_count(), ms = began.elapsed().as_millis() as u64, "read the contracts' summaries ahead");
    });
    if let Err(e) = started {
        tracing::warn!("cannot start a thread to read summaries ahead ({e}); the first portfolio report reads them");
    }
}

/// Runs the server until SIGTERM or SIGINT; then stops taking requests, finishes the ones in
/// flight (appends included), ends streams, and closes the ledger. SIGHUP reloads the tokens
/// file and the TLS certificate.
pub fn serve(config: ServeConfig, before_start: impl FnOnce(&Ledger) -> Result<(), String>) -> Result<ExitCode, String> {
    init_logging(config.log_json);
    let auth = match &config.tokens {
        Some(path) => Auth::load(path).map_err(|e| e.to_string())?,
        None => Auth::open(),
    };
    check_listen(&config, auth.is_open())?;
    let tls = config.tls.clone().map(tls::TlsState::load).transpose().map_err(|e| format!("TLS: {e}"))?.map(Arc::new);
    let max_connections = edge::connection_cap(config.max_connections);
    let metrics = install_metrics()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let mut options = ledger_options()?;
    options.views_resident_events = config.views_resident_events;
    // Replicated mode: NATS first, since the ledger's writer publishes every group through
    // it before committing; the node starts as a follower (the lease decides who writes).
    let replicated = match config.nats.as_ref().filter(|n| n.replicated) {
        Some(nc) => {
            let advertise = nc.advertise.clone().ok_or("--replicated needs --advertise URL: this node's address as clients reach it")?;
            if nc.follow || nc.json {
                return Err("--replicated excludes --follow (a replicated node follows by itself when it does not lead) and --nats-json".into());
            }
            let client = runtime.block_on(connect_nats(nc)).map_err(|e| e.to_string())?;
            let timing = bus::replicated::LeaseTiming::from_ttl_ms(nc.lease_ttl_ms);
            // The replica count is the flag's (default 3), never guessed from the URLs given.
            let settings = bus::StreamSettings { replicas: nc.replicas, ..Default::default() };
            runtime.block_on(check_replicated_setup(&client, &settings, timing))?;
            let cluster = Arc::new(bus::replicated::Cluster::new(advertise, timing));
            options.replicator = Some(Arc::new(bus::replicated::StreamReplicator::new(cluster.clone(), client.clone(), runtime.handle().clone())));
            Some((client, cluster, settings))
        }
        None => None,
    };
    let ledger = Arc::new(Ledger::open(&config.data, options).map_err(|e| e.to_string())?);
    let follow = config.nats.as_ref().is_some_and(|n| n.follow);
    let checkpoints = if follow {
        if !config.witnesses.witnesses.is_empty() {
            return Err("a follower signs no checkpoints: --witness goes to the leader".into());
        }
        None
    } else {
        let signer = ledger::checkpoints::load_or_create_signer(&config.data, config.signing_key.as_deref(), config.origin.as_deref()).map_err(|e| e.to_string())?;
        tracing::info!(verifier_key = %signer.verifier(), "checkpoints are signed by this key");
        let cosigning = checkpointing::Cosigning::new(&config.witnesses)?;
        if let Some(c) = &cosigning {
            tracing::info!(witnesses = c.policy().witnesses().len(), quorum = c.policy().quorum(), "checkpoints are cosigned by witnesses");
        }
        Some(Arc::new(checkpointing::Checkpointing::new(Arc::new(signer), cosigning)))
    };
    before_start(&ledger)?;
    read_summaries_ahead(&ledger);
    let result = runtime.block_on(async {
        // Before anything can send it: SIGHUP's default action ends the process.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
        let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let mut nats = None;
        let mut nats_tasks = vec![];
        if let Some((client, cluster, settings)) = replicated {
            tracing::info!(advertise = %cluster.advertise, replicas = settings.replicas, lease_ttl_ms = cluster.timing.ttl.as_millis() as u64, "replicated mode: following until this node takes the lease");
            nats_tasks.push(tokio::spawn(bus::replicated::run_cluster(ledger.clone(), client.clone(), settings, cluster.clone(), shutdown_rx.clone())));
            nats = Some(NatsHandle { client, status: cluster.status.clone(), json_status: None, follow: false, leader_url: None, cluster: Some(cluster) });
        } else if let Some(nc) = &config.nats {
            let client = connect_nats(nc).await.map_err(|e| e.to_string())?;
            let settings = bus::StreamSettings { replicas: nc.replicas.max(1), ..Default::default() };
            check_stream_at_start(&ledger, &client, &settings, nc.follow).await?;
            let status = Arc::new(bus::NatsStatus::default());
            let mut json_status = None;
            if nc.follow {
                nats_tasks.push(tokio::spawn(bus::run_follower(ledger.clone(), client.clone(), settings.name.clone(), status.clone(), shutdown_rx.clone())));
            } else {
                if nc.json {
                    let s = Arc::new(bus::NatsStatus::default());
                    nats_tasks.push(tokio::spawn(bus::run_publisher(ledger.clone(), client.clone(), settings.json_mirror(), s.clone(), shutdown_rx.clone())));
                    json_status = Some(s);
                }
                if let Some(c) = &checkpoints {
                    nats_tasks.push(tokio::spawn(bus::run_checkpoint_publisher(
                        ledger.clone(),
                        client.clone(),
                        settings.replicas,
                        status.clone(),
                        c.changed.subscribe(),
                        shutdown_rx.clone(),
                    )));
                }
                nats_tasks.push(tokio::spawn(bus::run_publisher(ledger.clone(), client.clone(), settings, status.clone(), shutdown_rx.clone())));
            }
            nats = Some(NatsHandle { client, status, json_status, follow: nc.follow, leader_url: nc.leader_url.clone(), cluster: None });
        }
        if let Some(c) = &checkpoints
            && !config.checkpoint_every.is_zero()
        {
            tokio::spawn(checkpointing::checkpoint_loop(ledger.clone(), c.clone(), nats.as_ref().and_then(|n| n.cluster.clone()), config.checkpoint_every, shutdown_rx.clone()));
        }
        let allowed_hosts = allowed_hosts(&config, auth.is_open(), address);
        let app = Arc::new(App {
            ledger: ledger.clone(),
            checkpoints,
            nats,
            auth,
            metrics,
            shutdown: shutdown_rx.clone(),
            sse_stall: config.sse_stall,
            streams: Arc::new(tokio::sync::Semaphore::new(config.max_streams)),
            max_streams: config.max_streams,
            allowed_hosts,
        });
        tokio::spawn(reload_on_signal(app.clone(), tls.clone(), hangup, shutdown_rx.clone()));
        if app.auth.is_open() {
            tracing::warn!("no tokens file: the server is OPEN to anyone who can reach {address} (loopback only)");
            eprintln!("warning: no tokens file, so every route is open; listening on loopback only");
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(data = %config.data.display(), head = ledger.head().seq, max_connections, "listening on {scheme}://{address}");
        // Tests and scripts read this line to find the port.
        println!("listening on {scheme}://{address}");
        println!("dashboard: {scheme}://{address}/");
        use std::io::Write;
        std::io::stdout().flush().ok();
        let signal = async move {
            wait_for_signal().await;
            tracing::info!("shutting down: finishing requests in flight");
            let _ = shutdown_tx.send(true);
        };
        tokio::spawn(signal);
        // After the signal, connections get SHUTDOWN_GRACE to finish; then the rest (a
        // stream client that stopped reading, say) are cut when the runtime stops.
        let mut signalled = shutdown_rx.clone();
        let grace = async move {
            let _ = signalled.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let limits = Limits { max_connections, header_read_timeout: config.header_read_timeout, idle_timeout: config.idle_timeout, write_stall: config.sse_stall };
        let serving = serve_app(listener, app, tls, limits, shutdown_rx);
        tokio::select! {
            () = serving => {}
            () = grace => tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after the shutdown signal are closed"),
        }
        // The publisher stops at the shutdown signal; what it did not publish, the next
        // start publishes (the stream's last sequence says where to resume).
        let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(nats_tasks)).await;
        Ok(())
    });
    // Every request has been answered (or its connection cut after the grace period); drain
    // and sync whatever is queued, save the views, then stop the tasks that are left.
    ledger.close();
    tracing::info!(head = ledger.head().seq, "ledger closed");
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    result.map(|()| ExitCode::SUCCESS)
}

/// Serves `app` on `listener` with the bounds of `limits` (and TLS) until `shutdown`.
pub async fn serve_app(listener: tokio::net::TcpListener, app: Shared, tls: Option<Arc<tls::TlsState>>, limits: Limits, shutdown: tokio::sync::watch::Receiver<bool>) {
    edge::serve(listener, router(app), tls, limits, shutdown).await
}

/// SIGHUP reloads the tokens file and the certificate; the certificate files are also
/// checked for a change every [`TLS_POLL`]. A file that does not load changes nothing.
async fn reload_on_signal(app: Shared, tls: Option<Arc<tls::TlsState>>, mut hangup: tokio::signal::unix::Signal, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut poll = tokio::time::interval(TLS_POLL);
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the tokens file and the certificate");
                match app.auth.reload() {
                    Ok(0) => {}
                    Ok(n) => {
                        metrics::counter!("tokens_reloads_total").increment(1);
                        tracing::info!(tokens = n, "tokens file reloaded");
                    }
                    Err(e) => {
                        metrics::counter!("tokens_reload_failures_total").increment(1);
                        tracing::error!("tokens file not reloaded, the tokens in force stay: {e}");
                    }
                }
                if let Some(tls) = &tls {
                    tls.reload_logged("SIGHUP");
                }
            }
            _ = poll.tick(), if tls.is_some() => {
                if let Some(tls) = &tls {
                    tls.reload_logged("the files changed");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// The JSON of an inclusion proof (HTTP and `cledger prove`).
pub fn inclusion_json(seq: u64, size: u64, hash: &events::Digest, proof: &[events::Digest], root: &events::Digest) -> serde_json::Value {
    serde_json::json!({
        "seq": seq,
        "leaf_index": seq - 1,
        "tree_size": size,
        "hash": hash.to_hex(),
        "hashes": events::bundle::hexes(proof),
        "root": root.to_hex(),
    })
}

/// The JSON of a consistency proof (HTTP and `cledger prove`).
pub fn consistency_json(from: u64, to: u64, proof: &[events::Digest], from_root: &events::Digest, to_root: &events::Digest) -> serde_json::Value {
    serde_json::json!({
        "from": from,
        "to": to,
        "hashes": events::bundle::hexes(proof),
        "from_root": from_root.to_hex(),
        "to_root": to_root.to_hex(),
    })
}

pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
