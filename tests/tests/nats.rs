//! NATS JetStream, end to end, with real nats-server processes (`sync_interval: always`):
//! every event published exactly once and in order, through NATS outages and leader
//! crashes; followers rebuild from the stream and refuse a broken one.

use base64::Engine;
use e2e::nats::{self, NatsNode, StreamReader};
use e2e::server::{invoice, small_grant, Options, Server};
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn leader(urls: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--nats".to_string(), urls.to_string(), "--checkpoint-interval-s".into(), "0".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Server::with(Options { args, ..Options::default() })
}

fn follower(urls: &str, leader_url: &str) -> Server {
    let args = ["--nats", urls, "--follow", "--leader-url", leader_url].iter().map(|s| s.to_string()).collect();
    Server::with(Options { args, ..Options::default() })
}

/// The `nats` object of /readyz.
fn nats_state(server: &Server) -> Value {
    server.get("/readyz").json()["nats"].clone()
}

fn wait_published(server: &Server, what: &str) -> u64 {
    let head = server.head_seq();
    nats::eventually(WAIT, what, || nats_state(server)["confirmed"].as_u64() == Some(head));
    head
}

/// Appends `n` invoices to contract `c` (granted first if `grant`), in batches of 25.
fn append_invoices(server: &Server, c: &str, from: usize, n: usize, grant: bool) {
    if grant {
        server.append_ok(&small_grant(c));
    }
    let events: Vec<Value> = (from..from + n).map(|i| invoice(c, &format!("I{i}"), "1.00")).collect();
    for chunk in events.chunks(25) {
        server.batch_ok(chunk);
    }
}

/// Every stream message 1..=head is the ledger's event at that seq: same bytes, hash,
/// headers and subject; and the stream holds nothing else. Returns how many went in
/// atomic batches.
fn assert_stream_is_the_ledger(reader: &StreamReader, server: &Server) -> usize {
    let mut batched = 0;
    let events = server.all_events();
    let head = events.len() as u64;
    assert_eq!(reader.state("LEDGER"), Some((head, 1, head)), "stream holds exactly the ledger's events, seq for seq");
    for e in &events {
        let seq = e["seq"].as_u64().unwrap();
        let m = reader.message("LEDGER", seq);
        assert_eq!(m.sequence, seq);
        let canonical = base64::engine::general_purpose::STANDARD.decode(e["canonical"].as_str().unwrap()).unwrap();
        assert_eq!(m.payload, canonical, "seq {seq}: body = canonical bytes");
        let mut hasher = blake3::Hasher::new_derive_key("compute-ledger 2026-11 event v1");
        hasher.update(&m.payload);
        let hash = hasher.finalize().to_hex().to_string();
        assert_eq!(e["hash"], hash.as_str());
        let contract = e["contract_id"].as_str().unwrap_or("~ledger");
        assert_eq!(m.subject, format!("ledger.events.{contract}.{}", e["type"].as_str().unwrap()));
        let h = |name: &str| m.headers.get(name).cloned().unwrap_or_default();
        // Published alone, a message carries the hash as its Nats-Msg-Id; in an atomic batch
        // (which refuses Msg-Ids) it carries its batch's id instead.
        match m.headers.get("Nats-Msg-Id") {
            Some(id) => assert_eq!(id, &hash, "seq {seq}"),
            None => assert!(m.headers.contains_key("Nats-Batch-Id"), "seq {seq}: neither a Msg-Id nor a batch"),
        }
        assert_eq!(h("Ledger-Hash"), hash);
        assert_eq!(h("Ledger-Seq"), seq.to_string());
        assert_eq!(h("Ledger-Prev-Hash"), e["prev_hash"].as_str().unwrap());
        assert_eq!(h("Ledger-Contract"), contract);
        assert_eq!(h("Ledger-Type"), e["type"].as_str().unwrap());
        if m.headers.contains_key("Nats-Batch-Id") {
            batched += 1;
        }
    }
    batched
}

#[test]
fn every_event_appears_once_in_order_with_its_headers() {
    if !nats::available() {
        return;
    }
    let node = NatsNode::start();
    let server = leader(&node.url(), &[]);
    let demo: Vec<Value> = std::fs::read_to_string(e2e::workspace().join("examples/demo-portfolio.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    server.batch_ok(&demo);
    // After the demo's closed period (2026-06-30): invoices dated in August.
    let late: Vec<Value> = (0..30)
        .map(|i| e2e::server::event("colossus-1", "invoice_issued", "2026-08-01", serde_json::json!({"invoice_id": format!("L{i}"), "amount": "1.00", "due_date": "2026-09-01"})))
        .collect();
    server.batch_ok(&late);
    let head = wait_published(&server, "all events acknowledged by JetStream");
    assert_eq!(head, 50);
    assert_stream_is_the_ledger(&StreamReader::connect(&node.url()), &server);
    let metrics = server.metrics();
    assert_eq!(e2e::server::metric(&metrics, "outbox_lag_events"), Some(0.0));
    assert_eq!(e2e::server::metric(&metrics, "nats_connected"), Some(1.0));
    assert!(e2e::server::metric(&metrics, "outbox_published_total").unwrap() >= 50.0);
}

#[test]
fn an_outage_delays_publishing_but_loses_and_repeats_nothing() {
    if !nats::available() {
        return;
    }
    let mut node = NatsNode::start();
    let server = leader(&node.url(), &[]);
    append_invoices(&server, "a", 0, 10, true);
    wait_published(&server, "the first events published");
    node.stop();
    // Writers do not wait for NATS: 150 more events are acknowledged while it is down.
    append_invoices(&server, "a", 10, 150, false);
    assert_eq!(server.head_seq(), 161);
    nats::eventually(WAIT, "the outbox notices the outage", || nats_state(&server)["connected"] == false);
    assert!(nats_state(&server)["lag_events"].as_u64().unwrap() >= 150);
    node.restart();
    wait_published(&server, "everything published after NATS came back");
    let batched = assert_stream_is_the_ledger(&StreamReader::connect(&node.url()), &server);
    assert!(batched >= 150, "the backlog went out in atomic batches ({batched} messages)");
}

#[test]
fn a_leader_killed_mid_publish_restarts_without_loss_or_duplicates() {
    if !nats::available() {
        return;
    }
    let mut node = NatsNode::start();
    // Events recorded while NATS is down, so the leader has a backlog to publish.
    node.stop();
    let mut server = leader(&node.url(), &[]);
    append_invoices(&server, "k", 0, 1_500, true);
    for round in 0..3 {
        node.restart();
        // Kill the leader while it publishes the backlog: between publishes and the
        // outbox cursor's update (written every 500 ms).
        nats::eventually(WAIT, "publishing under way", || nats_state(&server)["confirmed"].as_u64().unwrap_or(0) > 0 || round > 0);
        std::thread::sleep(Duration::from_millis(30 + 40 * round as u64));
        server.kill();
        node.stop();
        server.start_again();
        append_invoices(&server, "k", 1_500 + 100 * round, 100, false);
    }
    node.restart();
    wait_published(&server, "the backlog published after the kills");
    assert_stream_is_the_ledger(&StreamReader::connect(&node.url()), &server);
}

#[test]
fn a_leader_dying_right_after_an_ack_before_its_cursor_update_publishes_nothing_twice() {
    if !nats::available() {
        return;
    }
    let mut node = NatsNode::start();
    node.stop();
    // 2,500 events wait while NATS is down; the leader will abort the moment JetStream has
    // acknowledged event 1,200 (inside the second atomic batch), before the outbox cursor
    // records it.
    let mut options = Options {
        args: vec!["--nats".into(), node.url(), "--checkpoint-interval-s".into(), "0".into()],
        env: vec![("CLEDGER_CRASH_AFTER_PUBLISHED".into(), "1200".into())],
        ..Options::default()
    };
    let mut server = Server::with(options.clone());
    append_invoices(&server, "c", 0, 2_500, true);
    node.restart();
    let status = server.wait_crash(WAIT);
    assert!(!status.success(), "it aborted");
    assert!(server.stderr().contains("CLEDGER_CRASH_AFTER_PUBLISHED: aborting after event"), "{}", server.stderr());
    let reader = StreamReader::connect(&node.url());
    let (_, _, last) = reader.state("LEDGER").unwrap();
    assert!(last >= 1200, "the stream has what was acknowledged: {last}");
    // The outbox cursor was not moved past what was published before the abort.
    options.env.clear();
    server.set_options(options);
    server.start_again();
    wait_published(&server, "the rest published after the restart");
    assert_stream_is_the_ledger(&reader, &server);
}

#[test]
fn checkpoints_are_published_on_ledger_checkpoints() {
    if !nats::available() {
        return;
    }
    let node = NatsNode::start();
    let mut checkpoints = nats::Subscription::subscribe(&node.url(), "ledger.checkpoints");
    let server = leader(&node.url(), &[]);
    append_invoices(&server, "p", 0, 10, true);
    let issued = server.call("POST", "/v1/checkpoints", &[], None).expect(201);
    let note = checkpoints.next(WAIT).expect("a checkpoint on ledger.checkpoints");
    let note = String::from_utf8(note).unwrap();
    assert_eq!(note, issued["checkpoint"].as_str().unwrap());
    let key = events::checkpoint::VerifierKey::parse(issued["verifier_key"].as_str().unwrap()).unwrap();
    let checkpoint = key.verify(&note).unwrap();
    assert_eq!(checkpoint.size, 11);
    assert_eq!(checkpoint.root.to_hex(), server.get_json("/v1/proofs/consistency?from=0&to=11")["to_root"].as_str().unwrap());
}

#[test]
fn the_leader_refuses_a_stream_that_contradicts_its_ledger() {
    if !nats::available() {
        return;
    }
    let node = NatsNode::start();
    {
        let first = leader(&node.url(), &[]);
        append_invoices(&first, "x", 0, 5, true);
        wait_published(&first, "the first ledger published");
    }
    // Another ledger with other events at the same positions, on the same stream.
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("other");
    let (code, _, _) = e2e::run(&["import", "--data", data.to_str().unwrap(), e2e::sample_file().to_str().unwrap()]);
    assert_eq!(code, 0);
    let output = e2e::cledger()
        .args(["serve", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0", "--nats", &node.url()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "it must refuse to start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to run") && stderr.contains("seq"), "{stderr}");
}

#[test]
fn a_follower_converges_serves_reads_and_refuses_writes() {
    if !nats::available() {
        return;
    }
    let node = NatsNode::start();
    let leader_server = leader(&node.url(), &[]);
    append_invoices(&leader_server, "f", 0, 40, true);
    let leader_url = format!("http://127.0.0.1:{}", leader_server.port);
    // Started empty while the leader already has events; more arrive while it follows.
    let follower_server = follower(&node.url(), &leader_url);
    append_invoices(&leader_server, "f", 40, 40, false);
    let head = leader_server.head_seq();
    nats::eventually(WAIT, "the follower reaches the leader's head", || follower_server.head_seq() == head);
    assert_eq!(follower_server.head(), leader_server.head(), "same seq and hash");
    assert_eq!(follower_server.all_events(), leader_server.all_events());
    let revenue = "/v1/contracts/f/revenue?as_of=2026-12-31";
    assert_eq!(follower_server.get_json(revenue), leader_server.get_json(revenue));
    let refused = follower_server.append(&invoice("f", "nope", "1.00"));
    let error = refused.expect_error(421, "follower_read_only", None);
    assert_eq!(error["error"]["leader"], leader_url.as_str());
    let ready = follower_server.get("/readyz").json();
    assert_eq!(ready["nats"]["role"], "follower");
    assert_eq!(ready["nats"]["lag_events"], 0);
}

#[test]
fn a_follower_refuses_an_altered_message_and_names_its_seq() {
    if !nats::available() {
        return;
    }
    // A real ledger's events, published by hand with event 4's bytes altered (its headers
    // still claim the original hash), as a tampered stream would carry them.
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("source");
    assert_eq!(e2e::run(&["import", "--data", data.to_str().unwrap(), e2e::sample_file().to_str().unwrap()]).0, 0);
    let (_, log, _) = e2e::run(&["log", "--data", data.to_str().unwrap(), "--json"]);
    let messages: Vec<nats::RawMessage> = log
        .lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap();
            let mut payload = base64::engine::general_purpose::STANDARD.decode(e["canonical"].as_str().unwrap()).unwrap();
            if e["seq"] == 4 {
                let last = payload.len() - 1;
                payload[last] ^= 0x01;
            }
            let contract = e["contract_id"].as_str().unwrap_or("~ledger").to_string();
            let subject = format!("ledger.events.{contract}.{}", e["type"].as_str().unwrap());
            let headers = vec![
                ("Ledger-Seq".to_string(), e["seq"].to_string()),
                ("Ledger-Hash".to_string(), e["hash"].as_str().unwrap().to_string()),
            ];
            (subject, headers, payload)
        })
        .collect();
    let node = NatsNode::start();
    StreamReader::connect(&node.url()).publish_raw(&messages);
    let follower_server = follower(&node.url(), "http://leader.example");
    nats::eventually(WAIT, "the follower stops at the altered event", || follower_server.get("/readyz").status == 503);
    let ready = follower_server.get("/readyz").json();
    let reason = ready["reason"].as_str().unwrap();
    assert!(reason.contains("seq 4"), "{reason}");
    assert_eq!(follower_server.head_seq(), 3, "events before the altered one are stored, nothing after");
}

#[test]
fn a_three_node_cluster_keeps_publishing_with_a_node_down() {
    if !nats::available() {
        return;
    }
    let mut nodes = nats::cluster(3);
    let urls: String = nodes.iter().map(NatsNode::url).collect::<Vec<_>>().join(",");
    let leader_server = leader(&urls, &["--stream-replicas", "3"]);
    append_invoices(&leader_server, "r", 0, 30, true);
    wait_published(&leader_server, "published to the cluster");
    let reader = StreamReader::connect(&urls);
    assert_eq!(reader.replicas("LEDGER"), 3);
    let leader_url = format!("http://127.0.0.1:{}", leader_server.port);
    let follower_server = follower(&urls, &leader_url);
    // One node down while appends go on: the other two keep a quorum.
    nodes[2].stop();
    append_invoices(&leader_server, "r", 30, 120, false);
    let head = wait_published(&leader_server, "published with one node down");
    nats::eventually(WAIT, "the follower keeps up", || follower_server.head_seq() == head);
    assert_eq!(follower_server.head(), leader_server.head());
    nodes[2].restart();
    assert_stream_is_the_ledger(&StreamReader::connect(&urls), &leader_server);
}
