//! The JSON mirror (`serve --nats-json`, issue 13) and the README's ten-line Python
//! subscriber, run as the README shows it against a real nats-server.

use e2e::nats::{self, NatsNode, StreamReader};
use e2e::server::{Options, Server};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn demo() -> Vec<Value> {
    std::fs::read_to_string(e2e::workspace().join("examples/demo-portfolio.ndjson"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn leader(url: &str) -> Server {
    let args = ["--nats", url, "--nats-json", "--checkpoint-interval-s", "0"].iter().map(|s| s.to_string()).collect();
    Server::with(Options { args, ..Options::default() })
}

#[test]
fn every_event_is_mirrored_as_json_once_in_order() {
    if !nats::available() {
        return;
    }
    let mut node = NatsNode::start();
    let server = leader(&node.url());
    server.batch_ok(&demo()[..10]);
    let reader = StreamReader::connect(&node.url());
    nats::eventually(WAIT, "ten events mirrored", || reader.state("LEDGER_JSON") == Some((10, 1, 10)));
    // An outage: both streams catch up, nothing lost or doubled.
    node.stop();
    server.batch_ok(&demo()[10..]);
    node.restart();
    let reader = StreamReader::connect(&node.url());
    // The two publishers retry on their own schedules: wait for each (neither waits for
    // the other, so the canonical stream may be a retry behind the mirror, or ahead).
    nats::eventually(WAIT, "all mirrored after the outage", || reader.state("LEDGER_JSON") == Some((20, 1, 20)));
    nats::eventually(WAIT, "all published after the outage", || reader.state("LEDGER") == Some((20, 1, 20)));
    for e in server.all_events() {
        let seq = e["seq"].as_u64().unwrap();
        let m = reader.message("LEDGER_JSON", seq);
        assert_eq!(m.sequence, seq, "stream sequence = ledger seq");
        let body: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(body, e, "seq {seq}: the body is the event's JSON, as GET /v1/events gives it");
        let contract = e["contract_id"].as_str().unwrap_or("~ledger");
        assert_eq!(m.subject, format!("ledger.json.{contract}.{}", e["type"].as_str().unwrap()));
        assert_eq!(m.headers.get("Ledger-Hash").map(String::as_str), e["hash"].as_str());
        assert_eq!(m.headers.get("Ledger-Prev-Hash").map(String::as_str), e["prev_hash"].as_str());
    }
    let ready = server.get_json("/readyz");
    assert_eq!(ready["nats"]["json_mirror"]["confirmed"], 20, "{ready}");
    assert!(reader.delete("LEDGER_JSON", 1).is_err(), "deletes are denied");
}

/// The Python of the README's "Subscribing from any language" block.
fn readme_subscriber() -> String {
    let readme = std::fs::read_to_string(e2e::workspace().join("README.md")).unwrap();
    let after = readme.split("<!-- subscriber: run by tests/tests/nats_mirror.rs -->").nth(1).expect("the README's subscriber marker");
    let code = after.split("```python\n").nth(1).and_then(|c| c.split("```").next()).expect("a python block after the marker");
    assert!(code.lines().count() <= 10, "ten lines at most:\n{code}");
    code.to_string()
}

/// The Python with nats-py and blake3: `$CLEDGER_TEST_PYTHON` (scripts/test.sh installs
/// them), else skipped with a message.
fn python_with_nats() -> Option<String> {
    let python = std::env::var("CLEDGER_TEST_PYTHON").ok();
    let candidate = python.clone().unwrap_or_else(|| "python3".into());
    let ok = Command::new(&candidate).args(["-c", "import nats, blake3"]).output().is_ok_and(|o| o.status.success());
    match (ok, python) {
        (true, _) => Some(candidate),
        (false, Some(p)) => panic!("CLEDGER_TEST_PYTHON={p} cannot import nats (nats-py) and blake3: run scripts/test.sh"),
        (false, None) => {
            eprintln!("SKIPPING the README subscriber: no Python with nats-py and blake3 (scripts/test.sh installs them)");
            None
        }
    }
}

#[test]
fn the_readme_subscriber_verifies_the_canonical_stream() {
    if !nats::available() {
        return;
    }
    let Some(python) = python_with_nats() else { return };
    let node = NatsNode::start();
    let server = leader(&node.url());
    server.batch_ok(&demo());
    let events = server.all_events();
    let mut child = Command::new(python)
        .args(["-c", &readme_subscriber()])
        .env("NATS_URL", node.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the README subscriber");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut lines = vec![];
    while lines.len() < events.len() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => lines.push(line),
            Err(_) => {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!("the subscriber printed {} of {} lines: {lines:?}\n{}", lines.len(), events.len(), String::from_utf8_lossy(&output.stderr));
            }
        }
    }
    // It verified each link and hash (an assert would have stopped it) and printed them.
    let expected: Vec<String> = events.iter().map(|e| format!("{} {}", e["seq"], e["hash"].as_str().unwrap())).collect();
    assert_eq!(lines, expected);
    // Still running, following live: the next event comes through too.
    server.batch_ok(&[serde_json::json!({"contract_id": "colossus-1", "type": "invoice_issued", "effective_date": "2026-08-01",
        "data": {"invoice_id": "LIVE-1", "amount": "1.00", "due_date": "2026-09-01"}})]);
    let next = rx.recv_timeout(WAIT).expect("the live event");
    assert!(next.starts_with(&format!("{} ", events.len() + 1)), "{next}");
    let _ = child.kill();
    let _ = child.wait();
}
