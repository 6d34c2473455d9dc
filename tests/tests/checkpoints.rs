//! Every checkpoint kept (issue 13): `GET /v1/checkpoints?after=&limit=` over HTTP, across
//! restarts, and in the JetStream stream `LEDGER_CHECKPOINTS` (deletes denied) that a late
//! consumer reads from the start; with witnesses, each checkpoint signed and then cosigned.

use e2e::audit::{key_of, open_note, Histories};
use e2e::nats::{self, NatsNode, StreamReader};
use e2e::server::{small_grant, Options, Server};
use e2e::witness::WitnessProcess;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn on_request_only(extra: &[String]) -> Options {
    let mut args = vec!["--checkpoint-interval-s".to_string(), "0".into()];
    args.extend_from_slice(extra);
    Options { args, ..Options::default() }
}

fn checkpoint_now(server: &Server) -> Value {
    server.post("/v1/checkpoints", &json!({})).expect(201)
}

fn grow(server: &Server, contract: &str) {
    server.append_ok(&small_grant(contract));
}

#[test]
fn every_checkpoint_is_kept_and_listed_in_order_across_restarts() {
    let mut server = Server::with(on_request_only(&[]));
    let key = server.get_json("/v1/checkpoints/latest")["verifier_key"].as_str().unwrap().to_string();
    for c in ["a", "b", "c", "d", "e"] {
        grow(&server, c);
        checkpoint_now(&server);
    }
    let all = server.get_json("/v1/checkpoints?limit=1000");
    let sizes: Vec<u64> = all["checkpoints"].as_array().unwrap().iter().map(|c| c["tree_size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [0, 1, 2, 3, 4, 5], "the empty tree's (GET latest issued it) and one per growth");
    assert_eq!(all["next_after"], Value::Null);
    for c in all["checkpoints"].as_array().unwrap() {
        let cp = open_note(&key, c["checkpoint"].as_str().unwrap());
        assert_eq!((cp.size, cp.root.to_hex()), (c["tree_size"].as_u64().unwrap(), c["root"].as_str().unwrap().to_string()));
    }
    // Pages.
    let page = server.get_json("/v1/checkpoints?after=1&limit=2");
    assert_eq!(page["checkpoints"].as_array().unwrap().iter().map(|c| c["tree_size"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(page["next_after"], 3);
    let mut paged = vec![];
    let mut after = None;
    loop {
        let page = server.get_json(&format!("/v1/checkpoints?limit=2{}", after.map(|a: u64| format!("&after={a}")).unwrap_or_default()));
        paged.extend(page["checkpoints"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_u64() {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    assert_eq!(&paged, all["checkpoints"].as_array().unwrap(), "pages of 2 add up to the whole history");
    assert!(server.get_json("/v1/checkpoints?after=5")["checkpoints"].as_array().unwrap().is_empty());
    server.get("/v1/checkpoints?after=x").expect_error(400, "invalid_parameter", Some("after"));
    server.get("/v1/checkpoints?limit=0").expect_error(400, "invalid_parameter", Some("limit"));
    server.get("/v1/checkpoints?since=1").expect_error(400, "invalid_parameter", Some("since"));
    // Issuing again at the same size keeps one entry.
    checkpoint_now(&server);
    assert_eq!(server.get_json("/v1/checkpoints?after=4")["checkpoints"].as_array().unwrap().len(), 1);
    // Kept across a restart and a crash.
    server.restart();
    assert_eq!(server.get_json("/v1/checkpoints?limit=1000"), all);
    server.kill();
    server.start_again();
    assert_eq!(server.get_json("/v1/checkpoints?limit=1000"), all);
}

/// A store from before the history kept only its latest note (`Mcheckpoint`): it becomes
/// the history's first entry.
#[test]
fn an_older_stores_latest_checkpoint_joins_the_history() {
    let h = Histories::new();
    let bundle = e2e::audit::export(&h.main, None, None);
    let note = bundle.note();
    {
        let db = sled::open(&h.main).unwrap();
        db.drop_tree("checkpoints").unwrap();
        db.open_tree("ledger").unwrap().insert(b"Mcheckpoint", note.as_bytes()).unwrap();
        db.flush().unwrap();
    }
    let server = Server::on(&h.main, on_request_only(&[]));
    let all = server.get_json("/v1/checkpoints");
    assert_eq!(all["checkpoints"][0]["checkpoint"], note.as_str(), "{all}");
    assert_eq!(server.get_json("/v1/checkpoints/latest")["checkpoint"], note.as_str());
}

#[test]
fn checkpoints_go_to_a_stream_a_late_consumer_reads_from_the_start() {
    if !nats::available() {
        return;
    }
    let mut node = NatsNode::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = key_of(&data);
    // One witness, quorum 1: each checkpoint is kept signed, then cosigned.
    let witness = WitnessProcess::start(&dir.path().join("w.key"), std::slice::from_ref(&key), Some("witness.test/w1"));
    let mut server = Server::on(&data, on_request_only(&["--nats".into(), node.url(), "--witness".into(), witness.serve_arg(), "--witness-quorum".into(), "1".into()]));
    assert_eq!(server.get_json("/v1/checkpoints/latest")["verifier_key"], key.as_str());
    grow(&server, "a");
    assert_eq!(checkpoint_now(&server)["cosigned"], true);
    grow(&server, "b");
    assert_eq!(checkpoint_now(&server)["cosigned"], true);
    let history: Vec<Value> = server.all_pages("/v1/checkpoints", "checkpoints");
    assert_eq!(history.len(), 3, "sizes 0, 1, 2");
    let reader = StreamReader::connect(&node.url());
    // Each size as soon as it is kept (signed), and again once cosigned (unless the
    // cosignatures came before the publisher read it): in the order kept, each size's last
    // message its final note.
    let finals: Vec<String> = history.iter().map(|c| c["checkpoint"].as_str().unwrap().to_string()).collect();
    nats::eventually(WAIT, "every checkpoint's final note on the stream", || {
        let Some((n, _, _)) = reader.state("LEDGER_CHECKPOINTS") else { return false };
        let notes: Vec<String> = (1..=n).map(|i| String::from_utf8(reader.message("LEDGER_CHECKPOINTS", i).payload).unwrap()).collect();
        finals.iter().all(|f| notes.contains(f))
    });
    let n = reader.state("LEDGER_CHECKPOINTS").unwrap().0 as usize;
    assert!((3..=6).contains(&n), "{n} messages for 3 checkpoints, each signed and cosigned");
    let messages = reader.consume_from_start("LEDGER_CHECKPOINTS", n);
    let mut sizes = vec![];
    for (i, m) in messages.iter().enumerate() {
        let note = String::from_utf8(m.payload.clone()).unwrap();
        let cp = open_note(&key, &note);
        assert_eq!((m.sequence, m.subject.as_str()), (i as u64 + 1, "ledger.checkpoints"));
        assert_eq!(m.headers.get("Ledger-Checkpoint-Size"), Some(&cp.size.to_string()));
        let kept = &finals[cp.size as usize];
        let kept_note = events::checkpoint::Note::parse(kept).unwrap();
        let this = events::checkpoint::Note::parse(&note).unwrap();
        assert_eq!(this.text, kept_note.text, "the kept checkpoint of size {}", cp.size);
        assert!(this.signatures.iter().all(|s| kept_note.signatures.contains(s)), "a message's signatures are all on the kept note");
        if messages.get(i + 1).is_none_or(|next| open_note(&key, &String::from_utf8(next.payload.clone()).unwrap()).size != cp.size) {
            assert_eq!(&note, kept, "the last message of size {} is its final note", cp.size);
        }
        sizes.push(cp.size);
    }
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "in the order kept: {sizes:?}");
    assert_eq!(sizes.iter().collect::<std::collections::BTreeSet<_>>().len(), 3);
    let refused = reader.delete("LEDGER_CHECKPOINTS", 1).expect_err("deletes are denied");
    assert!(refused.contains("not permitted") || refused.contains("10057"), "{refused}");
    // NATS down: checkpoints are kept, and published in order when it returns.
    node.stop();
    grow(&server, "c");
    checkpoint_now(&server);
    node.restart();
    let reader = StreamReader::connect(&node.url());
    let size_3 = server.get_json("/v1/checkpoints/latest")["checkpoint"].as_str().unwrap().to_string();
    let last_note = |reader: &StreamReader| {
        let (n, _, _) = reader.state("LEDGER_CHECKPOINTS")?;
        Some(String::from_utf8(reader.message("LEDGER_CHECKPOINTS", n).payload).unwrap())
    };
    nats::eventually(WAIT, "the checkpoint kept while NATS was down", || last_note(&reader).as_deref() == Some(size_3.as_str()));
    // A restart of the server publishes nothing twice.
    let before = reader.state("LEDGER_CHECKPOINTS").unwrap().0;
    server.restart();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(reader.state("LEDGER_CHECKPOINTS").unwrap().0, before, "nothing published again after a restart");
    grow(&server, "d");
    let size_4 = checkpoint_now(&server)["checkpoint"].as_str().unwrap().to_string();
    nats::eventually(WAIT, "the next checkpoint", || last_note(&reader).as_deref() == Some(size_4.as_str()));
}
