//! Real `nats-server` processes for tests: one node, or a JetStream cluster on loopback,
//! each started with `sync_interval: always`, plus a small async-nats client to read what
//! the stream holds.
//!
//! `scripts/test.sh` sets `CLEDGER_TEST_NATS=required`: then a missing `nats-server` fails
//! the test. Without it, tests that need NATS say so and return early.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_LIMIT: Duration = Duration::from_secs(30);
/// Ports are picked free, then bound by nats-server a moment later, and another test's
/// process may take one in between: such a start is tried again on other ports, this many
/// times in all.
const START_ATTEMPTS: usize = 5;

/// Why a node did not become ready: its log, and whether a port it was given was taken.
struct NotReady {
    log: String,
    port_taken: bool,
}

/// Is nats-server available? Panics (fails the test) when NATS is required and missing.
pub fn available() -> bool {
    let found = Command::new("nats-server").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !found {
        if std::env::var("CLEDGER_TEST_NATS").as_deref() == Ok("required") {
            panic!("nats-server is required (CLEDGER_TEST_NATS=required) but not on PATH: run scripts/test.sh, which installs it");
        }
        eprintln!("skipping: nats-server not on PATH (scripts/test.sh installs it)");
    }
    found
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// One nats-server process. Stopping and starting again keeps its ports and store.
pub struct NatsNode {
    child: Option<Child>,
    pub name: String,
    pub port: u16,
    pub monitor_port: u16,
    config: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl NatsNode {
    /// A single JetStream node.
    pub fn start() -> NatsNode {
        NatsNode::start_with("")
    }

    /// A single JetStream node with more configuration (authorization, TLS): `extra` is
    /// appended to the generated file; `{dir}` in it names the node's directory, which also
    /// holds a copy of `scripts/nats/permissions.conf` (`include "permissions.conf"`).
    pub fn start_with(extra: &str) -> NatsNode {
        let mut nodes = start_nodes(|| {
            let node = NatsNode::configure("n1", free_port(), None);
            std::fs::copy(crate::workspace().join("scripts/nats/permissions.conf"), node._dir.path().join("permissions.conf")).expect("copy permissions.conf");
            let mut config = std::fs::read_to_string(&node.config).expect("nats.conf");
            config.push_str(&extra.replace("{dir}", &node._dir.path().display().to_string()));
            std::fs::write(&node.config, config).expect("write nats.conf");
            vec![node]
        });
        nodes.pop().expect("one node")
    }

    /// The node's own directory (for files its configuration names).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    fn configure(name: &str, port: u16, cluster: Option<(u16, &[u16])>) -> NatsNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let monitor_port = free_port();
        let store = dir.path().join("jetstream");
        let mut config = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\njetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
            store.display()
        );
        if let Some((route_port, routes)) = cluster {
            let routes: Vec<String> = routes.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect();
            config += &format!("cluster {{\n  name: ledger-test\n  listen: 127.0.0.1:{route_port}\n  routes: [{}]\n}}\n", routes.join(", "));
        }
        let path = dir.path().join("nats.conf");
        std::fs::write(&path, config).expect("write nats.conf");
        let log = dir.path().join("nats.log");
        NatsNode { child: None, name: name.into(), port, monitor_port, config: path, log, _dir: dir }
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
    }

    /// Waits until the node's monitor says it (and JetStream) is healthy.
    pub fn wait_ready(&self) {
        if let Err(e) = self.try_wait_ready() {
            panic!("nats-server {} not ready; log:\n{}", self.name, e.log);
        }
    }

    /// Waits until the node is healthy, or it stopped on a fatal error, or the time is up.
    fn try_wait_ready(&self) -> Result<(), NotReady> {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
        let deadline = Instant::now() + READY_LIMIT;
        let url = format!("http://127.0.0.1:{}/healthz?js-enabled-only=true", self.monitor_port);
        while Instant::now() < deadline {
            if client.get(&url).send().is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            let log = self.log_text();
            if log.contains("[FTL]") {
                return Err(NotReady { port_taken: log.contains("address already in use"), log });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(NotReady { log: self.log_text(), port_taken: false })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the node (SIGTERM: it shuts down cleanly) and waits.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::terminate_child(child);
        }
    }

    /// SIGKILL: the node dies at once, mid-whatever (its store stays for a restart).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the node again with the same ports and store.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
        self.wait_ready();
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A JetStream cluster of `n` nodes on loopback.
pub fn cluster(n: usize) -> Vec<NatsNode> {
    start_nodes(|| {
        let route_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        (0..n).map(|i| NatsNode::configure(&format!("n{}", i + 1), free_port(), Some((route_ports[i], &route_ports)))).collect()
    })
}

/// Launches the nodes `configure` makes and waits until all are ready; if one of their
/// ports was taken meanwhile, makes them again (on fresh ports) and starts over.
fn start_nodes(mut configure: impl FnMut() -> Vec<NatsNode>) -> Vec<NatsNode> {
    for attempt in 1..=START_ATTEMPTS {
        let mut nodes = configure();
        for node in &mut nodes {
            node.launch();
        }
        match nodes.iter().map(|node| node.try_wait_ready().map_err(|e| (node.name.clone(), e))).collect::<Result<Vec<()>, _>>() {
            Ok(_) => return nodes,
            Err((_, e)) if e.port_taken && attempt < START_ATTEMPTS => {
                eprintln!("a port of nats-server was taken before it bound it; starting again on others");
            }
            Err((name, e)) => panic!("nats-server {name} not ready; log:\n{}", e.log),
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// A message to publish by hand: subject, headers, payload.
pub type RawMessage = (String, Vec<(String, String)>, Vec<u8>);

/// A message of the stream as stored.
#[derive(Clone, Debug)]
pub struct Stored {
    pub sequence: u64,
    pub subject: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

/// Reads the LEDGER stream through a real client.
pub struct StreamReader {
    runtime: tokio::runtime::Runtime,
    js: async_nats::jetstream::Context,
}

/// A core NATS subscription read from blocking tests.
pub struct Subscription {
    runtime: tokio::runtime::Runtime,
    subscriber: async_nats::Subscriber,
}

impl Subscription {
    pub fn subscribe(url: &str, subject: &str) -> Subscription {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let subscriber = runtime.block_on(async {
            let client = async_nats::connect(url).await.expect("connect to NATS");
            let subscriber = client.subscribe(subject.to_string()).await.expect("subscribe");
            client.flush().await.expect("flush");
            subscriber
        });
        Subscription { runtime, subscriber }
    }

    /// The next message's payload, waiting up to `limit`.
    pub fn next(&mut self, limit: Duration) -> Option<Vec<u8>> {
        use futures::StreamExt;
        let subscriber = &mut self.subscriber;
        self.runtime.block_on(async { tokio::time::timeout(limit, subscriber.next()).await.ok().flatten().map(|m| m.payload.to_vec()) })
    }
}

impl StreamReader {
    pub fn connect(urls: &str) -> StreamReader {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let js = runtime.block_on(async {
            let servers: Vec<async_nats::ServerAddr> = urls.split(',').map(|u| u.parse().expect("a NATS URL")).collect();
            let client = async_nats::connect(servers).await.expect("connect to NATS");
            async_nats::jetstream::new(client)
        });
        StreamReader { runtime, js }
    }

    /// (messages, first sequence, last sequence) of the stream, or None if it does not exist.
    pub fn state(&self, name: &str) -> Option<(u64, u64, u64)> {
        self.runtime.block_on(async {
            let mut stream = self.js.get_stream(name).await.ok()?;
            let info = stream.info().await.ok()?;
            Some((info.state.messages, info.state.first_sequence, info.state.last_sequence))
        })
    }

    pub fn replicas(&self, name: &str) -> usize {
        self.runtime.block_on(async {
            let mut stream = self.js.get_stream(name).await.expect("stream");
            stream.info().await.expect("info").config.num_replicas
        })
    }

    pub fn message(&self, name: &str, seq: u64) -> Stored {
        self.runtime.block_on(async {
            let stream = self.js.get_stream(name).await.expect("stream");
            let m = stream.get_raw_message(seq).await.unwrap_or_else(|e| panic!("message {seq}: {e}"));
            let headers = m.headers.iter().map(|(k, v)| (k.to_string(), v.iter().next().map(|x| x.as_str().to_string()).unwrap_or_default())).collect();
            Stored { sequence: m.sequence, subject: m.subject.to_string(), headers, payload: m.payload.to_vec() }
        })
    }

    /// Tries to delete message `seq` of stream `name` (streams of the ledger deny it).
    pub fn delete(&self, name: &str, seq: u64) -> Result<(), String> {
        self.runtime.block_on(async {
            let stream = self.js.get_stream(name).await.map_err(|e| e.to_string())?;
            stream.delete_message(seq).await.map(|_| ()).map_err(|e| e.to_string())
        })
    }

    /// Every message of stream `name`, read as a consumer that arrives late would: an
    /// ordered consumer from the first message, until `count` have come (30 s at most).
    pub fn consume_from_start(&self, name: &str, count: usize) -> Vec<Stored> {
        use futures::StreamExt;
        self.runtime.block_on(async {
            let stream = self.js.get_stream(name).await.expect("stream");
            let consumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                    deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
                    ..Default::default()
                })
                .await
                .expect("consumer");
            let mut messages = consumer.messages().await.expect("messages");
            let mut out = vec![];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while out.len() < count {
                let m = tokio::time::timeout_at(deadline, messages.next()).await.unwrap_or_else(|_| panic!("only {} of {count} messages of {name}", out.len()));
                let m = m.expect("a message").expect("no error");
                let info = m.info().expect("info");
                let headers = m
                    .headers
                    .as_ref()
                    .map(|h| h.iter().map(|(k, v)| (k.to_string(), v.iter().next().map(|x| x.as_str().to_string()).unwrap_or_default())).collect())
                    .unwrap_or_default();
                out.push(Stored { sequence: info.stream_sequence, subject: m.subject.to_string(), headers, payload: m.payload.to_vec() });
            }
            out
        })
    }

    /// Creates a stream named LEDGER by hand and publishes raw messages into it (to feed a
    /// follower something a leader would never publish).
    pub fn publish_raw(&self, messages: &[RawMessage]) {
        self.runtime.block_on(async {
            self.js
                .get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: "LEDGER".into(),
                    subjects: vec!["ledger.events.>".into()],
                    ..Default::default()
                })
                .await
                .expect("create stream");
            for (subject, headers, payload) in messages {
                let mut h = async_nats::HeaderMap::new();
                for (k, v) in headers {
                    h.insert(k.as_str(), v.as_str());
                }
                self.js
                    .publish_with_headers(subject.clone(), h, payload.clone().into())
                    .await
                    .expect("publish")
                    .await
                    .expect("ack");
            }
        });
    }
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after `limit`.
pub fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

/// NATS decentralized authentication (operator mode) for tests: an operator, one account
/// with JetStream, and users with creds files, as JWTs signed with NKEYs
/// (JWT = base64url(header) "." base64url(claims) "." base64url(Ed25519 signature)).
pub mod jwt {
    use base64::Engine;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A signed JWT of `claims` (the `nats` object) issued by `issuer` about `subject`.
    pub fn encode(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
        let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
        let mut claims = serde_json::json!({
            "jti": "",
            "iat": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            "iss": issuer.public_key(),
            "name": name,
            "sub": subject,
            "nats": nats,
        });
        let digest = blake3::hash(claims.to_string().as_bytes());
        claims["jti"] = serde_json::json!(hex::encode_upper(&digest.as_bytes()[..20]));
        let body = b64(claims.to_string().as_bytes());
        let signature = issuer.sign(format!("{header}.{body}").as_bytes()).expect("sign");
        format!("{header}.{body}.{}", b64(&signature))
    }

    /// An operator, its system account, and one account with unlimited JetStream.
    pub struct Operator {
        pub operator: nkeys::KeyPair,
        pub system: nkeys::KeyPair,
        pub account: nkeys::KeyPair,
    }

    impl Operator {
        pub fn new() -> Operator {
            Operator { operator: nkeys::KeyPair::new_operator(), system: nkeys::KeyPair::new_account(), account: nkeys::KeyPair::new_account() }
        }

        /// The nats-server configuration: the operator, a memory resolver preloaded with
        /// the account.
        pub fn server_config(&self) -> String {
            let operator = encode(
                &self.operator,
                &self.operator.public_key(),
                "test-operator",
                serde_json::json!({"system_account": self.system.public_key(), "type": "operator", "version": 2}),
            );
            let system = encode(&self.operator, &self.system.public_key(), "SYS", serde_json::json!({"type": "account", "version": 2}));
            let unlimited = serde_json::json!({
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
                "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
            });
            let account = encode(&self.operator, &self.account.public_key(), "ledger", serde_json::json!({"limits": unlimited, "type": "account", "version": 2}));
            format!(
                "operator: \"{operator}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{system}\"\n  {}: \"{account}\"\n}}\n",
                self.system.public_key(),
                self.system.public_key(),
                self.account.public_key()
            )
        }

        /// A creds file for a new user of the account (`signer`: the account, or another
        /// key the account does not know, to make a bad one).
        pub fn creds(&self, name: &str, signer: Option<&nkeys::KeyPair>) -> String {
            let user = nkeys::KeyPair::new_user();
            let nats = serde_json::json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2});
            let jwt = encode(signer.unwrap_or(&self.account), &user.public_key(), name, nats);
            format!(
                "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n************************* IMPORTANT *************************\n\n-----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n*************************************************************\n",
                user.seed().expect("seed")
            )
        }
    }

    impl Default for Operator {
        fn default() -> Operator {
            Operator::new()
        }
    }
}
