//! Connections: the accept loop, its bounds, and TLS.
//!
//! Every bound here holds before a request is authenticated, since that is where a stranger
//! can spend the server's resources:
//! - a **connection cap**: when it is reached, the connection that has been idle longest (no
//!   request in flight: a keep-alive wait, a half-sent request head, a TLS handshake) is
//!   closed to make room, so a flood of idle sockets cannot lock out a real client; when
//!   every connection is busy the new one is closed at once (`http_connections_refused_total`);
//! - a **header-read timeout** (hyper's): the time a connection may take to send the head of
//!   its next request, keep-alive waits included; the TLS handshake gets the same bound;
//! - an **idle timeout**: no byte moved either way for that long closes the connection (a
//!   request body that stops coming, say);
//! - a **write-stall timeout**: a response the client has not taken a byte of for that long
//!   (a Server-Sent Events client that stopped reading, an export nobody reads) closes the
//!   connection, which frees everything buffered for it.
//!
//! HTTP/1.1 only: every bound above is per connection, and one connection carries one
//! request at a time, so they are bounds per request too.

use super::tls::TlsState;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

/// File descriptors kept free for everything but client connections (sled's files, NATS,
/// the tokens and certificate files, logs).
pub const RESERVED_FILES: u64 = 64;

/// The bounds on connections (see the module documentation).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_stall: Duration,
}

impl Limits {
    /// The defaults of `cledger serve` (its flags name the same constants).
    pub const DEFAULT: Limits = Limits {
        max_connections: 1024,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        write_stall: Duration::from_secs(30),
    };
}

/// What the connection loop knows of one connection.
struct ConnState {
    /// Requests being answered on it (0 or 1 for HTTP/1.1; a response counts until its body
    /// is sent or dropped).
    active: AtomicUsize,
    /// Milliseconds since the registry's start at the last byte moved.
    last_progress_ms: AtomicU64,
    evict: Notify,
}

/// The open connections, to count them and to pick the idlest one to close.
struct Registry {
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    started: Instant,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn len(&self) -> usize {
        self.conns.lock().expect("registry lock").len()
    }

    fn add(&self) -> (u64, Arc<ConnState>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState { active: AtomicUsize::new(0), last_progress_ms: AtomicU64::new(self.now_ms()), evict: Notify::new() });
        self.conns.lock().expect("registry lock").insert(id, state.clone());
        (id, state)
    }

    fn remove(&self, id: u64) {
        self.conns.lock().expect("registry lock").remove(&id);
    }

    fn reinsert(&self, id: u64, state: Arc<ConnState>) {
        self.conns.lock().expect("registry lock").insert(id, state);
    }

    /// Closes the connection idle longest, if one is idle; whether one was.
    fn evict_idlest(&self) -> bool {
        let mut conns = self.conns.lock().expect("registry lock");
        let idlest = conns
            .iter()
            .filter(|(_, c)| c.active.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, c)| c.last_progress_ms.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match idlest.and_then(|id| conns.remove(&id)) {
            Some(state) => {
                state.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// The connection cap for this process: `wanted`, lowered to fit the file limit (raised to
/// its hard maximum first, as servers do).
pub fn connection_cap(wanted: usize) -> usize {
    let files = raise_file_limit();
    let fit = files.saturating_sub(RESERVED_FILES).max(1) as usize;
    if wanted > fit {
        tracing::warn!(wanted, files, cap = fit, "the file limit allows fewer connections than --max-connections; capping at {fit}");
        fit
    } else {
        wanted
    }
}

/// Raises the soft limit on open files to the hard limit; returns the limit now in force.
fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur as u64
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting, lets every
/// connection finish its request in flight, and returns when all have closed.
pub async fn serve(listener: TcpListener, router: axum::Router, tls: Option<Arc<TlsState>>, limits: Limits, mut shutdown: watch::Receiver<bool>) {
    let registry = Arc::new(Registry { conns: Mutex::new(HashMap::new()), next_id: AtomicU64::new(0), started: Instant::now() });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors (or a connection reset before accept): go on after
                // a short pause rather than spin.
                metrics::counter!("http_accept_errors_total").increment(1);
                if last_refusal_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!("accept failed: {e}");
                    last_refusal_log = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if registry.len() >= limits.max_connections && !registry.evict_idlest() {
            metrics::counter!("http_connections_refused_total").increment(1);
            if last_refusal_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(cap = limits.max_connections, "every connection is busy: refusing new ones");
                last_refusal_log = Some(Instant::now());
            }
            drop(tcp);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let (id, state) = registry.add();
        metrics::counter!("http_connections_total").increment(1);
        let connection = Connection { id, state, registry: registry.clone(), router: router.clone(), limits, peer };
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(connection.run(tcp, tls, watcher));
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Counts a connection open while it lives and takes it out of the registry at its end.
struct Registered {
    id: u64,
    registry: Arc<Registry>,
}

impl Registered {
    fn new(id: u64, registry: Arc<Registry>) -> Registered {
        metrics::gauge!("http_connections_open").increment(1.0);
        Registered { id, registry }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.remove(self.id);
        metrics::gauge!("http_connections_open").decrement(1.0);
    }
}

struct Connection {
    id: u64,
    state: Arc<ConnState>,
    registry: Arc<Registry>,
    router: axum::Router,
    limits: Limits,
    peer: SocketAddr,
}

impl Connection {
    async fn run(self, tcp: tokio::net::TcpStream, tls: Option<Arc<TlsState>>, watcher: hyper_util::server::graceful::Watcher) {
        let _registered = Registered::new(self.id, self.registry.clone());
        let io = Watched::new(tcp, self.state.clone(), self.registry.clone(), self.limits);
        match tls {
            None => self.drive(TokioIo::new(io), watcher).await,
            Some(tls) => {
                let handshake = tokio::time::timeout(self.limits.header_read_timeout, tls.acceptor().accept(io));
                let stream = tokio::select! {
                    s = handshake => s,
                    _ = self.state.evict.notified() => return,
                };
                match stream {
                    Ok(Ok(stream)) => self.drive(TokioIo::new(stream), watcher).await,
                    Ok(Err(e)) => {
                        metrics::counter!("tls_handshake_failures_total").increment(1);
                        tracing::debug!(peer = %self.peer, "TLS handshake failed: {e}");
                    }
                    Err(_) => {
                        metrics::counter!("tls_handshake_failures_total").increment(1);
                        tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                    }
                }
            }
        }
    }

    async fn drive<I>(self, io: I, watcher: hyper_util::server::graceful::Watcher)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (state, router, peer) = (self.state.clone(), self.router.clone(), self.peer);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let guard = ActiveGuard::new(state.clone());
            let router = router.clone();
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            async move {
                let response = router.oneshot(request).await.unwrap_or_else(|never| match never {});
                Ok::<_, std::convert::Infallible>(response.map(|body| Body::new(Tracked { body, _guard: guard })))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(self.limits.header_read_timeout).keep_alive(true);
        let connection = watcher.watch(builder.serve_connection(io, service));
        tokio::pin!(connection);
        loop {
            tokio::select! {
                _ = connection.as_mut() => break,
                _ = self.state.evict.notified() => {
                    if self.state.active.load(Ordering::Acquire) == 0 {
                        metrics::counter!("http_connections_evicted_total").increment(1);
                        return;
                    }
                    // A request started after it was picked: keep it, and count it again.
                    self.registry.reinsert(self.id, self.state.clone());
                }
            }
        }
    }
}

/// Marks its connection busy from the call of the service until the response body is sent
/// or dropped.
struct ActiveGuard(Arc<ConnState>);

impl ActiveGuard {
    fn new(state: Arc<ConnState>) -> ActiveGuard {
        state.active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(state)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection marked busy while it lives.
struct Tracked {
    body: Body,
    _guard: ActiveGuard,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A socket that fails (and so closes its connection) when no byte has moved either way for
/// the idle timeout, or when a write has waited for the client for the write-stall timeout.
struct Watched<T> {
    inner: T,
    state: Arc<ConnState>,
    registry: Arc<Registry>,
    limits: Limits,
    last_progress: Instant,
    write_blocked_since: Option<Instant>,
    timer: Pin<Box<tokio::time::Sleep>>,
    timer_at: Instant,
}

impl<T> Watched<T> {
    fn new(inner: T, state: Arc<ConnState>, registry: Arc<Registry>, limits: Limits) -> Watched<T> {
        let now = Instant::now();
        let at = now + limits.idle_timeout;
        Watched { inner, state, registry, limits, last_progress: now, write_blocked_since: None, timer: Box::pin(tokio::time::sleep_until(at.into())), timer_at: at }
    }

    fn progress(&mut self) {
        self.last_progress = Instant::now();
        self.write_blocked_since = None;
        self.state.last_progress_ms.store(self.registry.now_ms(), Ordering::Relaxed);
    }

    /// Called when the socket is not ready: an error if a deadline has passed, else the
    /// timer armed for the nearest one.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> Option<std::io::Error> {
        let idle_at = self.last_progress + self.limits.idle_timeout;
        let stall_at = self.write_blocked_since.map(|since| since + self.limits.write_stall);
        let deadline = stall_at.map_or(idle_at, |s| s.min(idle_at));
        if Instant::now() >= deadline {
            let why = if stall_at.is_some_and(|s| s <= idle_at) {
                metrics::counter!("http_connections_write_stalled_total").increment(1);
                "the client took nothing of the response for the write-stall timeout"
            } else {
                metrics::counter!("http_connections_idle_closed_total").increment(1);
                "no byte moved for the idle timeout"
            };
            return Some(std::io::Error::new(std::io::ErrorKind::TimedOut, why));
        }
        if deadline != self.timer_at {
            self.timer.as_mut().reset(deadline.into());
            self.timer_at = deadline;
        }
        // Registers the waker; when the timer fires the socket is polled again and the
        // deadline checked afresh (progress may have moved it).
        if self.timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        None
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.progress();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.check_deadline(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl<T> Watched<T> {
    fn after_write(&mut self, cx: &mut Context<'_>, written: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.progress();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.write_blocked_since.is_none() {
                    self.write_blocked_since = Some(Instant::now());
                }
                match self.check_deadline(cx) {
                    Some(e) => Poll::Ready(Err(e)),
                    None => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, data);
        self.after_write(cx, written)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
