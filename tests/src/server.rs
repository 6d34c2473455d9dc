//! A real `cledger serve` (or `cledger demo`) child process on a free loopback port, and
//! small HTTP clients to talk to it: reqwest (blocking) for requests, a raw `TcpStream` for
//! Server-Sent Events (so a test controls exactly when it reads and when it disconnects).

use crate::cledger_path;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to print its address, or to exit after SIGTERM, before the
/// test gives up. A bound against hangs, not a performance assertion.
const START_LIMIT: Duration = Duration::from_secs(60);
const STOP_LIMIT: Duration = Duration::from_secs(20);

/// How the server is started.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `cledger demo` instead of `cledger serve`.
    pub demo: bool,
    /// `--tokens FILE`.
    pub tokens: Option<PathBuf>,
    /// `--sse-stall-ms N`.
    pub sse_stall_ms: Option<u64>,
    /// `--listen` (default `127.0.0.1:0`).
    pub listen: Option<String>,
    /// The bearer token the `Api` of this server sends by default.
    pub token: Option<String>,
    /// More arguments for `serve` (`--nats URL`, `--follow`, ...).
    pub args: Vec<String>,
    /// Environment variables for the process.
    pub env: Vec<(String, String)>,
    /// The process's limit on open files (soft and hard), to run it out of descriptors.
    pub nofile: Option<u64>,
}

/// A running server. Dropping it sends SIGTERM and waits (SIGKILL after a while).
pub struct Server {
    child: Option<Child>,
    api: Api,
    pub port: u16,
    pub data: PathBuf,
    options: Options,
    /// Everything the process printed on stdout, this run.
    pub stdout: Arc<Mutex<String>>,
    stderr_path: PathBuf,
    starts: u32,
    // Last: the directory goes after the process is stopped.
    _work: Arc<tempfile::TempDir>,
}

impl std::ops::Deref for Server {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Server {
    /// `cledger serve` on a new, empty data directory, open (no tokens).
    pub fn start() -> Server {
        Server::with(Options::default())
    }

    /// A server on a new data directory with these options.
    pub fn with(options: Options) -> Server {
        let work = Arc::new(tempfile::tempdir().expect("tempdir"));
        let data = work.path().join("data");
        Server::spawn(work, data, options, 0)
    }

    /// A server on an existing (or to be created) data directory; `work` holds the logs.
    pub fn on(data: &Path, options: Options) -> Server {
        let work = Arc::new(tempfile::tempdir().expect("tempdir"));
        Server::spawn(work, data.to_path_buf(), options, 0)
    }

    fn spawn(work: Arc<tempfile::TempDir>, data: PathBuf, options: Options, starts: u32) -> Server {
        let stderr_path = work.path().join(format!("stderr-{starts}.log"));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr log");
        let mut command = Command::new(cledger_path());
        let listen = options.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        command.arg(if options.demo { "demo" } else { "serve" });
        command.arg("--data").arg(&data).arg("--listen").arg(&listen);
        if let Some(tokens) = &options.tokens {
            command.arg("--tokens").arg(tokens);
        }
        if let Some(ms) = options.sse_stall_ms {
            command.arg("--sse-stall-ms").arg(ms.to_string());
        }
        command.args(&options.args);
        command.envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command.env_remove("CLEDGER_DATA").env_remove("CLEDGER_TOKENS").env_remove("NATS_URL");
        if let Some(files) = options.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit(2), async-signal-safe, between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit { rlim_cur: files, rlim_max: files };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr).spawn().expect("spawn cledger");
        let stdout = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = mpsc::channel::<u16>();
        let out = child.stdout.take().unwrap();
        let captured = stdout.clone();
        // Reads stdout for the whole life of the process, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                captured.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(address) = line.strip_prefix("listening on http://").or_else(|| line.strip_prefix("listening on https://")) {
                    let port = address.rsplit(':').next().and_then(|p| p.trim().parse().ok()).expect("port in the listening line");
                    let _ = port_tx.send(port);
                }
            }
        });
        let port = match port_rx.recv_timeout(START_LIMIT) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "cledger did not start ({status:?})\nstdout:\n{}\nstderr:\n{}",
                    stdout.lock().unwrap(),
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        };
        let api = Api::new(port, options.token.clone());
        Server { child: Some(child), api, port, data, options, stdout, stderr_path, starts, _work: work }
    }

    /// What the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// SIGKILL: the process dies at once, mid-whatever, and is reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit (on its own, or as asked) and returns its status;
    /// SIGKILL and a panic after `limit`.
    pub fn wait_crash(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("cledger did not exit within {limit:?}; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Changes the options used by the next `start_again`.
    pub fn set_options(&mut self, options: Options) {
        self.options = options;
    }

    pub fn options(&self) -> Options {
        self.options.clone()
    }

    /// Starts the server again on the same data directory and options (after `kill` or
    /// `stop`). The port changes.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        let next = Server::spawn(self._work.clone(), self.data.clone(), self.options.clone(), self.starts + 1);
        let old = std::mem::replace(self, next);
        drop(old);
    }

    /// Sends SIGTERM without waiting.
    pub fn sigterm(&self) {
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        assert_eq!(r, 0, "kill SIGTERM");
    }

    /// Sends SIGHUP (reload the tokens file and the certificate).
    pub fn sighup(&self) {
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.pid(), libc::SIGHUP) };
        assert_eq!(r, 0, "kill SIGHUP");
    }

    /// SIGTERM, then waits for the exit (SIGKILL and a panic if it does not come).
    pub fn stop(&mut self) -> ExitStatus {
        let status = self.terminate();
        status.unwrap_or_else(|| panic!("cledger did not exit within {STOP_LIMIT:?} of SIGTERM; stderr:\n{}", self.stderr()))
    }

    /// Stops with SIGTERM and asserts the exit code is 0.
    pub fn stop_ok(&mut self) {
        let status = self.stop();
        assert_eq!(status.code(), Some(0), "cledger exit status {status:?}; stderr:\n{}", self.stderr());
    }

    /// Waits for an exit already asked for (after `sigterm`).
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.wait_crash(STOP_LIMIT)
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_LIMIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server if it runs (asserting exit 0) and starts it again on the same data directory
    /// with the same options. The port changes.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop_ok();
        }
        let next = Server::spawn(self._work.clone(), self.data.clone(), self.options.clone(), self.starts + 1);
        let old = std::mem::replace(self, next);
        drop(old);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// One HTTP answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.text))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII header").to_string())
    }

    /// `error.code` of an error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_else(|| panic!("no error.code in {}", self.text)).to_string()
    }

    /// `error.field`, if any.
    pub fn field(&self) -> Option<String> {
        self.json()["error"]["field"].as_str().map(str::to_string)
    }

    /// Asserts the status and returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        self.json()
    }

    /// Asserts an error reply: status, `error.code` and `error.field`.
    pub fn expect_error(&self, status: u16, code: &str, field: Option<&str>) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        let v = self.json();
        let error = v["error"].as_object().unwrap_or_else(|| panic!("no error object: {}", self.text));
        assert_eq!(error.get("code").and_then(Value::as_str), Some(code), "{}", self.text);
        assert!(error.get("message").and_then(Value::as_str).is_some_and(|m| !m.is_empty()), "no message: {}", self.text);
        assert_eq!(error.get("field").and_then(Value::as_str), field, "{}", self.text);
        v
    }
}

/// An HTTP client of one server, with an optional default bearer token. Cheap to clone and
/// usable from many threads.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub port: u16,
    client: reqwest::blocking::Client,
    pub token: Option<String>,
}

impl Api {
    pub fn new(port: u16, token: Option<String>) -> Api {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("reqwest client");
        Api { base: format!("http://127.0.0.1:{port}"), port, client, token }
    }

    /// The same server, as another caller.
    pub fn as_token(&self, token: Option<&str>) -> Api {
        Api { token: token.map(str::to_string), ..self.clone() }
    }

    /// Sends a request; transport errors panic.
    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Reply {
        self.try_call(method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Sends a request; transport errors are returned.
    pub fn try_call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Result<Reply, reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let post = method == reqwest::Method::POST;
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body);
        } else if post {
            // A JSON client says so even without a body (the server requires it on POST).
            request = request.header("Content-Type", "application/json");
        }
        let response = request.send()?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text()?;
        Ok(Reply { status, headers, text })
    }

    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, &[], None)
    }

    /// GET, asserting 200, the JSON body.
    pub fn get_json(&self, path: &str) -> Value {
        self.get(path).expect(200)
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.call("POST", path, &[], Some(body.to_string().into_bytes()))
    }

    /// POST /v1/events.
    pub fn append(&self, event: &Value) -> Reply {
        self.post("/v1/events", event)
    }

    /// POST /v1/events with an `Idempotency-Key`.
    pub fn append_keyed(&self, event: &Value, key: &str) -> Reply {
        self.call("POST", "/v1/events", &[("Idempotency-Key", key)], Some(event.to_string().into_bytes()))
    }

    /// POST /v1/events, asserting 201; the receipt.
    pub fn append_ok(&self, event: &Value) -> Value {
        let reply = self.append(event);
        assert_eq!(reply.status, 201, "append {event}: {}", reply.text);
        reply.json()
    }

    /// POST /v1/events/batch.
    pub fn batch(&self, events: &[Value]) -> Reply {
        self.post("/v1/events/batch", &json!({ "events": events }))
    }

    /// POST /v1/events/batch, asserting 201; the receipts.
    pub fn batch_ok(&self, events: &[Value]) -> Vec<Value> {
        let reply = self.batch(events);
        assert_eq!(reply.status, 201, "batch: {}", reply.text);
        reply.json()["receipts"].as_array().expect("receipts").clone()
    }

    /// GET /v1/chain/head.
    pub fn head(&self) -> Value {
        self.get_json("/v1/chain/head")
    }

    pub fn head_seq(&self) -> u64 {
        self.head()["seq"].as_u64().expect("head seq")
    }

    /// Every event, following `next_after` across pages.
    pub fn all_events(&self) -> Vec<Value> {
        self.all_pages("/v1/events", "events")
    }

    /// Every item of a paged list.
    pub fn all_pages(&self, path: &str, key: &str) -> Vec<Value> {
        let mut items = vec![];
        let mut after: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &after {
                None => format!("{path}{sep}limit=1000"),
                Some(a) => format!("{path}{sep}limit=1000&after={a}"),
            };
            let page = self.get_json(&url);
            items.extend(page[key].as_array().expect("items").iter().cloned());
            match &page["next_after"] {
                Value::Null => return items,
                Value::String(s) => after = Some(s.clone()),
                other => after = Some(other.to_string()),
            }
        }
    }

    /// GET /metrics as text.
    pub fn metrics(&self) -> String {
        let reply = self.get("/metrics");
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.text
    }
}

/// The value of a Prometheus sample `name` (exact name with its labels, if any, e.g.
/// `sse_clients` or `http_append_seconds_count`), if present.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

/// Polls `check` until it returns `Some` or `limit` passes (then panics with `what`). A
/// bound against hangs, not a timing assertion.
pub fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------------------------------
// Tokens.

/// Secrets of one token per role, and the tokens file that admits them.
pub struct Tokens {
    pub file: PathBuf,
    pub writer: String,
    pub finance: String,
    pub auditor: String,
    pub admin: String,
    _dir: tempfile::TempDir,
}

impl Tokens {
    /// Makes one token per role with `cledger token` and writes the tokens file.
    pub fn create() -> Tokens {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file_text = String::new();
        let mut secrets = vec![];
        for role in ["writer", "finance", "auditor", "admin"] {
            let (entry, secret) = make_token(&format!("test-{role}"), role);
            file_text.push_str(&entry);
            secrets.push(secret);
        }
        let file = dir.path().join("tokens.toml");
        std::fs::write(&file, file_text).expect("write tokens");
        let [writer, finance, auditor, admin] = <[String; 4]>::try_from(secrets).unwrap();
        Tokens { file, writer, finance, auditor, admin, _dir: dir }
    }

    pub fn of(&self, role: &str) -> &str {
        match role {
            "writer" => &self.writer,
            "finance" => &self.finance,
            "auditor" => &self.auditor,
            "admin" => &self.admin,
            other => panic!("no role {other}"),
        }
    }
}

/// `cledger token --name NAME --role ROLE`: (tokens-file entry, secret).
pub fn make_token(name: &str, role: &str) -> (String, String) {
    let out = Command::new(cledger_path()).args(["token", "--name", name, "--role", role]).output().expect("cledger token");
    assert!(out.status.success(), "cledger token: {}", String::from_utf8_lossy(&out.stderr));
    let entry = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let secret = stderr.lines().nth(1).expect("the secret on stderr line 2").trim().to_string();
    assert_eq!(secret.len(), 64, "a 32-byte hex secret: {stderr}");
    assert!(entry.starts_with("[[tokens]]\n"), "{entry}");
    assert!(entry.contains(&format!("role = \"{role}\"")), "{entry}");
    assert!(!entry.contains(&secret), "the tokens file must not hold the secret");
    (entry, secret)
}

// ---------------------------------------------------------------------------------------
// Server-Sent Events over a raw socket.

/// One Server-Sent Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("SSE data not JSON ({e}): {}", self.data))
    }

    /// `id:` as a seq.
    pub fn seq(&self) -> u64 {
        self.id.as_deref().and_then(|i| i.parse().ok()).unwrap_or_else(|| panic!("no numeric id: {self:?}"))
    }
}

/// Decodes an HTTP/1.1 chunked body.
struct Chunked<R> {
    inner: R,
    remaining: usize,
    after_chunk: bool,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            if self.after_chunk {
                let mut crlf = String::new();
                self.inner.read_line(&mut crlf)?;
                self.after_chunk = false;
            }
            let mut line = String::new();
            if self.inner.read_line(&mut line)? == 0 {
                self.done = true;
                return Ok(0);
            }
            let size = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16).map_err(|_| std::io::Error::other(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.remaining = size;
        }
        let n = self.remaining.min(buf.len());
        let n = self.inner.read(&mut buf[..n])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed inside a chunk"));
        }
        self.remaining -= n;
        if self.remaining == 0 {
            self.after_chunk = true;
        }
        Ok(n)
    }
}

/// A `GET /v1/stream` client on a raw socket: the test decides when to read and when to
/// disconnect (drop it).
pub struct SseClient {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    body: Option<BufReader<Box<dyn Read + Send>>>,
    /// The body, when the reply is not a stream (an error).
    pub text: String,
}

impl SseClient {
    /// Connects and sends `GET path` with `headers`; reads the status line and headers.
    pub fn connect(port: u16, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        SseClient::over(stream, port, path, headers, true)
    }

    /// Connects with a small receive buffer (set before connecting, so the advertised
    /// window stays small), sends the request and returns the socket without reading
    /// anything: a client that stopped reading.
    pub fn connect_unread(port: u16, path: &str, headers: &[(&str, &str)], rcvbuf: i32) -> TcpStream {
        let stream = small_buffer_socket(port, rcvbuf);
        let mut s = stream.try_clone().unwrap();
        s.write_all(request_text(port, path, headers).as_bytes()).expect("send request");
        stream
    }

    /// Continues a socket from `connect_unread`: reads the status line and headers now.
    pub fn resume_reading(stream: TcpStream) -> SseClient {
        SseClient::over(stream, 0, "", &[], false)
    }

    fn over(stream: TcpStream, port: u16, path: &str, headers: &[(&str, &str)], send: bool) -> SseClient {
        // A bound against hangs: the server sends a keep-alive comment every 15 s.
        stream.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
        if send {
            (&stream).write_all(request_text(port, path, headers).as_bytes()).expect("send request");
        }
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).expect("status line");
        let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = vec![];
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header line");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header");
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let body: Box<dyn Read + Send> = if chunked {
            Box::new(Chunked { inner: reader, remaining: 0, after_chunk: false, done: false })
        } else {
            let length = headers.iter().find(|(n, _)| n == "content-length").map(|(_, v)| v.parse::<u64>().unwrap());
            match length {
                Some(n) => Box::new(reader.take(n)),
                None => Box::new(reader),
            }
        };
        let mut client = SseClient { status, headers, body: Some(BufReader::new(body)), text: String::new() };
        if status != 200 {
            let mut text = String::new();
            client.body.take().unwrap().read_to_string(&mut text).expect("error body");
            client.text = text;
        }
        client
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Sends `request` (a whole HTTP/1.1 request as text) on a new connection and reads the
    /// reply: status, headers, and the whole body in `text`.
    pub fn exchange(port: u16, request: &str) -> SseClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        (&stream).write_all(request.as_bytes()).expect("send request");
        let mut client = SseClient::over(stream, port, "", &[], false);
        if let Some(mut body) = client.body.take() {
            body.read_to_string(&mut client.text).expect("body");
        }
        client
    }

    /// The next event (comments skipped), or `None` when the stream ended.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.try_next_event().unwrap_or_else(|e| panic!("reading the stream: {e}"))
    }

    /// The next whole event, `Ok(None)` at the end of the stream, or the error that cut the
    /// connection (a server that closed it mid-event).
    pub fn try_next_event(&mut self) -> std::io::Result<Option<SseEvent>> {
        let Some(body) = self.body.as_mut() else { return Ok(None) };
        let mut event = SseEvent { id: None, event: None, data: String::new() };
        let mut has_data = false;
        let mut any = false;
        loop {
            let mut line = String::new();
            let n = body.read_line(&mut line)?;
            if n == 0 {
                return Ok(None);
            }
            let line = line.strip_suffix('\n').unwrap_or(&line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                if any {
                    return Ok(Some(event));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            any = true;
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match name {
                "id" => event.id = Some(value.to_string()),
                "event" => event.event = Some(value.to_string()),
                "data" => {
                    if has_data {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                    has_data = true;
                }
                _ => {}
            }
        }
    }

    /// The next event, which must exist.
    pub fn expect_event(&mut self) -> SseEvent {
        self.next_event().expect("the stream ended early")
    }
}

/// Sends a request on a raw socket, writing the body from another thread while this one
/// reads the reply: a server may answer (413) and close before it has read a large body,
/// which an ordinary client reports as a send error. Returns (status, body).
pub fn raw_call(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut writer = stream.try_clone().unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let sender = std::thread::spawn(move || {
        // The server may stop reading: errors here are expected.
        let _ = writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(&body));
    });
    let reply = SseClient::over(stream, port, path, &[], false);
    let _ = sender.join();
    (reply.status, reply.text)
}

fn request_text(port: u16, path: &str, headers: &[(&str, &str)]) -> String {
    let mut text = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text
}

/// A field of /proc/PID/status in kB (`VmRSS`, `VmHWM`).
pub fn proc_kb(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Resets the process's peak resident size (VmHWM) to its current size.
pub fn reset_peak_rss(pid: i32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("clear_refs");
}

/// A TCP connection to 127.0.0.1:port whose receive buffer was made small before connecting.
fn small_buffer_socket(port: u16, rcvbuf: i32) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor we own; on success it is handed to TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let r = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &rcvbuf as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "setsockopt SO_RCVBUF");
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be() },
            sin_zero: [0; 8],
        };
        let r = libc::connect(fd, &addr as *const libc::sockaddr_in as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t);
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

// ---------------------------------------------------------------------------------------
// Events.

/// A wire event of a contract.
pub fn event(contract: &str, kind: &str, date: &str, data: Value) -> Value {
    json!({"contract_id": contract, "type": kind, "effective_date": date, "data": data})
}

/// A grant of 3,650.00 USD over 2026 (365 days): firm 3,000.00 and 650.00 on milestone `m1`.
pub fn small_grant(contract: &str) -> Value {
    event(
        contract,
        "lease_granted",
        "2026-01-01",
        json!({"provider": "P", "customer": "C", "currency": "USD",
               "term": {"start": "2026-01-01", "end": "2027-01-01"},
               "cluster": {"site": "s", "gpu_model": "H100", "gpus": 100},
               "headline": "3650.00",
               "tranches": [
                   {"id": "firm", "amount": "3000.00", "window": {"start": "2026-01-01", "end": "2027-01-01"}, "firm": true},
                   {"id": "cond", "amount": "650.00", "window": {"start": "2026-07-01", "end": "2027-01-01"}, "milestone": "m1"}]}),
    )
}

/// An invoice of `amount` USD on `contract`, dated 2026-02-01.
pub fn invoice(contract: &str, id: &str, amount: &str) -> Value {
    event(contract, "invoice_issued", "2026-02-01", json!({"invoice_id": id, "amount": amount, "due_date": "2026-03-01"}))
}

/// The events of examples/colossus.ndjson (SPEC section 4's wire examples).
pub fn colossus() -> Vec<Value> {
    std::fs::read_to_string(crate::sample_file())
        .expect("sample")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("sample line"))
        .collect()
}

/// `cledger log --data DIR --json`: every stored event (the server must be stopped).
pub fn log_json(data: &Path) -> Vec<Value> {
    let (code, stdout, stderr) = crate::run(&["log", "--data", data.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "cledger log: {stderr}");
    stdout.lines().map(|l| serde_json::from_str(l).expect("log line")).collect()
}

/// `cledger verify --data DIR` (the server must be stopped): the stdout, asserting exit 0.
pub fn verify_ok(data: &Path) -> String {
    let (code, stdout, stderr) = crate::run(&["verify", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0, "cledger verify failed: {stdout}{stderr}");
    stdout
}
