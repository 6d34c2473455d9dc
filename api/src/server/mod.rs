//! `cledger serve`: the HTTP API (axum on tokio).
//!
//! Every route is registered through `utoipa_axum`'s `OpenApiRouter`, so `/openapi.json`
//! lists exactly the routes that exist.

pub mod auth;
pub mod checkpointing;
mod error;
mod handlers;
mod params;
mod stream;

use auth::Auth;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ledger::Ledger;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

/// Largest body of `POST /v1/events`.
pub const EVENT_BODY_BYTES_MAX: usize = 256 * 1024;
/// Largest body of `POST /v1/events/batch`.
pub const BATCH_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// How long connections may take to finish after SIGTERM before they are cut.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Most events in one batch request.
pub const BATCH_EVENTS_MAX: usize = 1_000;

/// How to reach NATS, and in which role.
#[derive(Clone, Debug, Default)]
pub struct NatsConfig {
    pub url: String,
    pub creds: Option<PathBuf>,
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
    /// A stream client that reads nothing for this long is dropped.
    pub sse_stall: Duration,
    pub log_json: bool,
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
}

pub type Shared = Arc<App>;

pub struct NatsHandle {
    pub client: async_nats::Client,
    pub status: Arc<ledger::nats::NatsStatus>,
    /// The JSON mirror's publisher, with `--nats-json`.
    pub json_status: Option<Arc<ledger::nats::NatsStatus>>,
    pub follow: bool,
    pub leader_url: Option<String>,
}

async fn connect_nats(config: &NatsConfig) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new()
        .name("cledger")
        // Start even if NATS is down: the outbox catches up when it returns.
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(3));
    if let Some(creds) = &config.creds {
        options = options.credentials_file(creds).await.map_err(|e| format!("--nats-creds {}: {e}", creds.display()))?;
    }
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => options = options.add_client_certificate(cert.clone(), key.clone()).require_tls(true),
        (None, None) => {}
        _ => return Err("--nats-tls-cert and --nats-tls-key go together".into()),
    }
    // A cluster is given as a comma-separated list of URLs.
    let servers = config
        .url
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>().map_err(|e| format!("NATS URL `{u}`: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    options.connect(servers).await.map_err(|e| format!("NATS at {}: {e}", config.url))
}

/// Checks the stream against the ledger before serving: a contradiction refuses to start;
/// NATS being unreachable does not (the outbox or follower catches up later).
async fn check_stream_at_start(ledger: &Ledger, client: &async_nats::Client, settings: &ledger::nats::StreamSettings, follow: bool) -> Result<(), String> {
    use ledger::nats::NatsError;
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
            let mut stream = ledger::nats::ensure_stream(&js, settings).await?;
            ledger::nats::resume_point(&mut stream, ledger, settings.flavor).await.map(|_| ())
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
        .routes(routes!(handlers::contract_revenue))
        .routes(routes!(handlers::portfolio))
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
        .routes(routes!(handlers::metrics))
        .routes(routes!(handlers::openapi))
        .split_for_parts();
    // The document is built from the routes above; the handler serves this copy.
    let _ = handlers::OPENAPI.set(api);
    router
        .fallback(|| async { ApiError::not_found("not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        .layer(tower_http::trace::TraceLayer::new_for_http())
        // A handler's panic (a bug) answers 500 `internal` in the one error shape, instead
        // of a connection closed without a reply; the panic hook has logged and counted it.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|payload: Box<dyn std::any::Any + Send>| {
            ApiError::internal("internal", format!("the server failed on this request: {}", panic_text(payload.as_ref()))).into_response()
        }))
        .with_state(app)
}

pub(crate) fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLEDGER_LOG").unwrap_or_else(|_| "info,tower_http=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
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

/// Runs the server until SIGTERM or SIGINT; then stops taking requests, finishes the ones in
/// flight (appends included), ends streams, and closes the ledger.
pub fn serve(config: ServeConfig, before_start: impl FnOnce(&Ledger) -> Result<(), String>) -> Result<ExitCode, String> {
    init_logging(config.log_json);
    let auth = match &config.tokens {
        Some(path) => Auth::load(path)?,
        None => Auth::open(),
    };
    if auth.is_open() && !config.listen.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {} without a tokens file: an open server listens on loopback only (give --tokens FILE)",
            config.listen
        ));
    }
    let metrics = install_metrics()?;
    let ledger = Arc::new(Ledger::open(&config.data, ledger_options()?).map_err(|e| e.to_string())?);
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
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let mut nats = None;
        let mut nats_tasks = vec![];
        if let Some(nc) = &config.nats {
            let client = connect_nats(nc).await?;
            let settings = ledger::nats::StreamSettings { replicas: nc.replicas.max(1), ..Default::default() };
            check_stream_at_start(&ledger, &client, &settings, nc.follow).await?;
            let status = Arc::new(ledger::nats::NatsStatus::default());
            let mut json_status = None;
            if nc.follow {
                nats_tasks.push(tokio::spawn(ledger::nats::run_follower(ledger.clone(), client.clone(), settings.name.clone(), status.clone(), shutdown_rx.clone())));
            } else {
                if nc.json {
                    let s = Arc::new(ledger::nats::NatsStatus::default());
                    nats_tasks.push(tokio::spawn(ledger::nats::run_publisher(ledger.clone(), client.clone(), settings.json_mirror(), s.clone(), shutdown_rx.clone())));
                    json_status = Some(s);
                }
                if let Some(c) = &checkpoints {
                    nats_tasks.push(tokio::spawn(ledger::nats::run_checkpoint_publisher(
                        ledger.clone(),
                        client.clone(),
                        settings.replicas,
                        status.clone(),
                        c.changed.subscribe(),
                        shutdown_rx.clone(),
                    )));
                }
                nats_tasks.push(tokio::spawn(ledger::nats::run_publisher(ledger.clone(), client.clone(), settings, status.clone(), shutdown_rx.clone())));
            }
            nats = Some(NatsHandle { client, status, json_status, follow: nc.follow, leader_url: nc.leader_url.clone() });
        }
        if let Some(c) = &checkpoints
            && !config.checkpoint_every.is_zero()
        {
            tokio::spawn(checkpointing::checkpoint_loop(ledger.clone(), c.clone(), config.checkpoint_every, shutdown_rx.clone()));
        }
        let app = Arc::new(App { ledger: ledger.clone(), checkpoints, nats, auth, metrics, shutdown: shutdown_rx, sse_stall: config.sse_stall });
        let app_for_grace = app.clone();
        if app.auth.is_open() {
            tracing::warn!("no tokens file: the server is OPEN to anyone who can reach {address} (loopback only)");
            eprintln!("warning: no tokens file, so every route is open; listening on loopback only");
        }
        tracing::info!(data = %config.data.display(), head = ledger.head().seq, "listening on http://{address}");
        // Tests and scripts read this line to find the port.
        println!("listening on http://{address}");
        use std::io::Write;
        std::io::stdout().flush().ok();
        let signal = async move {
            wait_for_signal().await;
            tracing::info!("shutting down: finishing requests in flight");
            let _ = shutdown_tx.send(true);
        };
        // After the signal, connections get SHUTDOWN_GRACE to finish; then the rest (a
        // stream client that stopped reading, say) are cut when the runtime stops.
        let mut signalled = app_for_grace.shutdown.clone();
        drop(app_for_grace);
        let grace = async move {
            let _ = signalled.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let serving = axum::serve(listener, router(app)).with_graceful_shutdown(signal);
        let served = tokio::select! {
            served = serving => served.map_err(|e| e.to_string()),
            () = grace => {
                tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after the shutdown signal are closed");
                Ok(())
            }
        };
        // The publisher stops at the shutdown signal; what it did not publish, the next
        // start publishes (the stream's last sequence says where to resume).
        let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(nats_tasks)).await;
        served
    });
    // Every request has been answered (or its connection cut after the grace period); drain
    // and sync whatever is queued, save the views, then stop the tasks that are left.
    ledger.close();
    tracing::info!(head = ledger.head().seq, "ledger closed");
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    result.map(|()| ExitCode::SUCCESS)
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
