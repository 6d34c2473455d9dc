//! NATS transport security and credentials against real nats-servers that require them
//! (issue 14): TLS, mutual TLS, user/password and NKEY each work with the right credential
//! (publishing and following) and stop the start with exit code 2 and a message naming
//! what was refused with a wrong or missing one; the least-privilege users of
//! `scripts/nats/permissions.conf` are enough for their roles and no more (a follower's
//! publish is refused by NATS).

use e2e::nats::{self, NatsNode};
use e2e::server::{invoice, small_grant, Options, Server};
use e2e::tls::TestCa;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A leader on `url` with `flags`; appends a grant and an invoice and waits until
/// JetStream has acknowledged both.
fn leader_publishes(url: &str, flags: &[&str]) -> Server {
    let mut a = args(&["--nats", url, "--checkpoint-interval-s", "0"]);
    a.extend(args(flags));
    let server = Server::with(Options { args: a, ..Options::default() });
    server.append_ok(&small_grant("c"));
    server.append_ok(&invoice("c", "I-1", "1.00"));
    nats::eventually(WAIT, "both events acknowledged by JetStream", || server.get("/readyz").json()["nats"]["confirmed"] == 2);
    server
}

/// A follower on `url` with `flags` that copies the stream up to seq 2.
fn follower_follows(url: &str, flags: &[&str]) -> Server {
    let mut a = args(&["--nats", url, "--follow"]);
    a.extend(args(flags));
    let follower = Server::with(Options { args: a, ..Options::default() });
    nats::eventually(WAIT, "the follower copied the stream", || follower.get("/readyz").json()["head"] == 2);
    follower
}

/// `cledger serve` that must refuse to start: (exit code, stderr). Killed (and failed) if it
/// is still running after 30 s.
fn refused_start(url: &str, flags: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(e2e::cledger_path())
        .args(["serve", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0", "--nats", url])
        .args(flags)
        .env_remove("NATS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            return (status.code().unwrap_or(-1), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let mut stderr = String::new();
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            panic!("cledger started with a credential NATS should refuse; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_refused(url: &str, flags: &[&str], names: &[&str]) {
    let (code, stderr) = refused_start(url, flags);
    assert_eq!(code, 2, "{stderr}");
    for name in names {
        assert!(stderr.contains(name), "the message names `{name}`:\n{stderr}");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn tls_and_mutual_tls_work_with_the_right_certificates_and_stop_the_start_without() {
    if !nats::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("nats CA");
    let ca_file = ca.write(dir.path(), "ca.pem").display().to_string();
    let server_cert = ca.issue(dir.path(), "nats", "nats", &["127.0.0.1", "localhost"]);
    let tls = format!("tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n", server_cert.cert.display(), server_cert.key.display());
    let node = NatsNode::start_with(&tls);
    let url = node.url();
    let leader = leader_publishes(&url, &["--nats-tls-ca", &ca_file]);
    let reader_ok = leader.get("/readyz").json();
    assert_eq!(reader_ok["nats"]["connected"], true, "{reader_ok}");
    drop(follower_follows(&url, &["--nats-tls-ca", &ca_file]));
    // Another CA, or none (the system's roots do not know the test CA): refused, exit 2.
    let other = TestCa::new("other CA").write(dir.path(), "other.pem").display().to_string();
    assert_refused(&url, &["--nats-tls-ca", &other], &["refused the TLS connection", &url]);
    assert_refused(&url, &[], &["refused"]);

    // Mutual TLS: the server also wants a client certificate from the CA.
    let mtls = format!("tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{ca_file}\"\n  verify: true\n}}\n", server_cert.cert.display(), server_cert.key.display());
    let node = NatsNode::start_with(&mtls);
    let url = node.url();
    let client = ca.issue(dir.path(), "ledger", "ledger", &["ledger"]);
    let (cert, key) = (client.cert.display().to_string(), client.key.display().to_string());
    let leader = leader_publishes(&url, &["--nats-tls-ca", &ca_file, "--nats-tls-cert", &cert, "--nats-tls-key", &key]);
    drop(follower_follows(&url, &["--nats-tls-ca", &ca_file, "--nats-tls-cert", &cert, "--nats-tls-key", &key]));
    drop(leader);
    assert_refused(&url, &["--nats-tls-ca", &ca_file], &["refused", &url]);
    let rogue = TestCa::new("rogue").issue(dir.path(), "rogue", "rogue", &["rogue"]);
    assert_refused(&url, &["--nats-tls-ca", &ca_file, "--nats-tls-cert", rogue.cert.to_str().unwrap(), "--nats-tls-key", rogue.key.to_str().unwrap()], &["refused"]);
}

/// Users with the permissions of scripts/nats/permissions.conf.
const USERS: &str = r#"
include "permissions.conf"
authorization {
  users: [
    { user: "ledger-writer",   password: "writer-secret",   permissions: $LEDGER_WRITER }
    { user: "ledger-follower", password: "follower-secret", permissions: $LEDGER_FOLLOWER }
    { user: "ledger-reader",   password: "reader-secret",   permissions: $LEDGER_SUBSCRIBER }
  ]
}
"#;

/// Connects as `user` and tries to publish an event to the stream; whether JetStream
/// acknowledged it.
fn publish_as(url: &str, user: &str, password: &str) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into()).connect(url).await.expect("connect");
        let js = async_nats::jetstream::ContextBuilder::new().timeout(Duration::from_secs(2)).build(client);
        match js.publish("ledger.events.c.invoice_issued", "forged".into()).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        }
    })
}

/// Connects as `user` and reads the stream with an ordered consumer: the seqs it got.
fn consume_as(url: &str, user: &str, password: &str, n: usize) -> Vec<u64> {
    use futures::StreamExt;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into()).connect(url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream("LEDGER").await.expect("stream info");
        let consumer = stream.create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default()).await.expect("an ordered consumer");
        let mut messages = consumer.messages().await.expect("messages");
        let mut seqs = vec![];
        while seqs.len() < n {
            let m = tokio::time::timeout(Duration::from_secs(10), messages.next()).await.expect("a message in time").expect("a message").expect("no error");
            seqs.push(m.info().unwrap().stream_sequence);
        }
        seqs
    })
}

/// The stream's last sequence, read as `user`.
fn stream_last(url: &str, user: &str, password: &str) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into()).connect(url).await.expect("connect");
        let mut stream = async_nats::jetstream::new(client).get_stream("LEDGER").await.expect("stream");
        stream.info().await.expect("info").state.last_sequence
    })
}

#[test]
fn least_privilege_users_do_their_job_and_no_more() {
    if !nats::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = NatsNode::start_with(USERS);
    let url = node.url();
    let writer_pw = write(dir.path(), "writer.pw", "writer-secret\n");
    let follower_pw = write(dir.path(), "follower.pw", "follower-secret\n");
    let leader = leader_publishes(&url, &["--nats-user", "ledger-writer", "--nats-password-file", &writer_pw]);
    let follower = follower_follows(&url, &["--nats-user", "ledger-follower", "--nats-password-file", &follower_pw]);
    // More events reach the follower live.
    leader.append_ok(&invoice("c", "I-2", "1.00"));
    nats::eventually(WAIT, "the follower follows live", || follower.get("/readyz").json()["head"] == 3);
    // The read-only users' publishes are refused by NATS; the stream is unchanged.
    assert!(!publish_as(&url, "ledger-follower", "follower-secret"), "a follower published an event");
    assert!(!publish_as(&url, "ledger-reader", "reader-secret"), "a subscriber published an event");
    assert_eq!(consume_as(&url, "ledger-writer", "writer-secret", 3), [1, 2, 3]);
    assert_eq!(stream_last(&url, "ledger-writer", "writer-secret"), 3, "nothing but the ledger's events");
    let log = node.log_text();
    assert!(log.contains("Publish Violation") && log.contains("ledger-follower"), "NATS logged the refusal:\n{log}");
    // A subscriber consumes.
    assert_eq!(consume_as(&url, "ledger-reader", "reader-secret", 3), [1, 2, 3]);
    // The ledger's own work needed nothing it was not granted.
    let violations: Vec<&str> = log.lines().filter(|l| l.contains("Violation") && !l.contains("ledger.events.c.invoice_issued")).collect();
    assert!(violations.is_empty(), "permissions the roles lack:\n{}", violations.join("\n"));
    drop(follower);
    drop(leader);
    // Wrong or missing credentials stop the start, naming the user.
    let wrong = write(dir.path(), "wrong.pw", "guess\n");
    assert_refused(&url, &["--nats-user", "ledger-writer", "--nats-password-file", &wrong], &["refused user `ledger-writer`", "authorization"]);
    assert_refused(&url, &[], &["refused a connection without credentials"]);
}

#[test]
fn an_nkey_user_works_with_its_seed_and_a_wrong_seed_stops_the_start() {
    if !nats::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (writer, follower, reader) = (nkeys::KeyPair::new_user(), nkeys::KeyPair::new_user(), nkeys::KeyPair::new_user());
    let config = format!(
        "include \"permissions.conf\"\nauthorization {{\n  users: [\n    {{ nkey: \"{}\", permissions: $LEDGER_WRITER }}\n    {{ nkey: \"{}\", permissions: $LEDGER_FOLLOWER }}\n    {{ nkey: \"{}\", permissions: $LEDGER_SUBSCRIBER }}\n  ]\n}}\n",
        writer.public_key(),
        follower.public_key(),
        reader.public_key()
    );
    let node = NatsNode::start_with(&config);
    let url = node.url();
    let writer_seed = write(dir.path(), "writer.nk", &writer.seed().unwrap());
    let follower_seed = write(dir.path(), "follower.nk", &follower.seed().unwrap());
    let leader = leader_publishes(&url, &["--nats-nkey", &writer_seed]);
    drop(follower_follows(&url, &["--nats-nkey", &follower_seed]));
    drop(leader);
    let stranger = write(dir.path(), "stranger.nk", &nkeys::KeyPair::new_user().seed().unwrap());
    assert_refused(&url, &["--nats-nkey", &stranger], &["refused the NKEY seed in --nats-nkey", "stranger.nk"]);
    let garbage = write(dir.path(), "garbage.nk", "not a seed");
    assert_refused(&url, &["--nats-nkey", &garbage], &["--nats-nkey", "not an NKEY seed"]);
}

#[test]
fn a_creds_file_works_on_an_operator_mode_server_and_a_foreign_one_stops_the_start() {
    if !nats::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let operator = nats::jwt::Operator::new();
    let node = NatsNode::start_with(&operator.server_config());
    let url = node.url();
    let writer = write(dir.path(), "writer.creds", &operator.creds("ledger-writer", None));
    let follower = write(dir.path(), "follower.creds", &operator.creds("ledger-follower", None));
    let leader = leader_publishes(&url, &["--nats-creds", &writer]);
    drop(follower_follows(&url, &["--nats-creds", &follower]));
    drop(leader);
    // A user signed by an account the server does not know.
    let foreign = write(dir.path(), "foreign.creds", &operator.creds("intruder", Some(&nkeys::KeyPair::new_account())));
    assert_refused(&url, &["--nats-creds", &foreign], &["refused the credentials in --nats-creds", "foreign.creds"]);
    assert_refused(&url, &[], &["refused a connection without credentials"]);
}
