//! Witnesses against split views (issue 13): real `cledger witness` processes speaking C2SP
//! tlog-witness, a real `cledger serve` collecting their cosignatures, and both verifiers
//! requiring a quorum of them.

use e2e::audit::{add_checkpoint_body, both_verify, cledger_verify, cledger_verify_bundle_with, import, open_note, python_verify_with, s, sample_invoice, signer_of, tree_of, Bundle, Histories};
use e2e::server::{Options, Server};
use e2e::witness::{self, WitnessProcess};
use events::checkpoint::{Checkpoint, Note, NoteSigner};
use events::cosignature::WitnessKey;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::time::{SystemTime, UNIX_EPOCH};

fn serve_with(data: &std::path::Path, witnesses: &[&WitnessProcess], quorum: usize) -> Server {
    let mut args = vec!["--checkpoint-interval-s".to_string(), "0".into(), "--witness-quorum".into(), quorum.to_string()];
    for w in witnesses {
        args.extend(["--witness".to_string(), w.serve_arg()]);
    }
    Server::on(data, Options { args, ..Options::default() })
}

/// `--witness K` for each witness key and `--witness-quorum N`.
fn quorum_args(vkeys: &[String], quorum: usize) -> Vec<String> {
    let mut args = vec![];
    for k in vkeys {
        args.extend(["--witness".to_string(), k.clone()]);
    }
    args.extend(["--witness-quorum".to_string(), quorum.to_string()]);
    args
}

fn checkpoint_now(server: &Server) -> Value {
    server.post("/v1/checkpoints", &serde_json::json!({})).expect(201)
}

/// An invoice of the sample contract after its closed period.
fn late_invoice(id: &str, amount: &str) -> Value {
    serde_json::from_str(&sample_invoice(id, amount)).unwrap()
}

fn cosigners(v: &Value) -> Vec<String> {
    v["cosignatures"].as_array().expect("cosignatures").iter().map(|c| c["witness"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_witness_speaks_tlog_witness_and_never_forgets() {
    let h = Histories::new();
    import(&h.fork, &[sample_invoice("INV-FORK-2", "2.00")]);
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("w.key");
    let mut w = WitnessProcess::start(&key_file, std::slice::from_ref(&h.key), None);
    // The key is created on first start, private, and printed as a type 0x04 vkey.
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    let witness_key = WitnessKey::parse(&w.vkey).unwrap_or_else(|e| panic!("{}: {e}", w.vkey));
    assert!(witness_key.name.starts_with("cledger-witness-"), "{}", w.vkey);
    assert!(w.stdout.contains(&format!("witnessing {} (cosigned: nothing yet)", h.key)), "{}", w.stdout);

    let (log, main, fork) = (signer_of(&h.main), tree_of(&h.main), tree_of(&h.fork));
    // First contact: old size 0, size 5.
    let (status, _, body) = w.add_checkpoint(&add_checkpoint_body(&log, &main, 0, 5));
    assert_eq!(status, 200, "{body}");
    let lines = events::witness::parse_response(&body).expect("signature lines");
    assert_eq!(lines.len(), 1, "{body}");
    let text = Checkpoint { origin: log.name().into(), size: 5, root: events::merkle::root(&main, 5).unwrap() }.body();
    let timestamp = witness_key.verify_line(&text, &lines[0]).expect("a valid cosignature/v1");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(timestamp.abs_diff(now) < 120, "timestamped now: {timestamp} vs {now}");

    // A client that does not know the witness's size learns it from a 409.
    let (status, content_type, body) = w.add_checkpoint(&add_checkpoint_body(&log, &main, 0, 9));
    assert_eq!((status, content_type.as_str(), body.as_str()), (409, "text/x.tlog.size", "5\n"));
    assert_eq!(w.add_checkpoint(&add_checkpoint_body(&log, &main, 5, 9)).0, 200, "5 -> 9 with its proof");
    assert_eq!(w.add_checkpoint(&add_checkpoint_body(&log, &main, 9, 9)).0, 200, "the same checkpoint again");

    // The fork (same key, another history from seq 6): refused at the same size (409) and
    // when it claims to extend (422: the proof cannot lead from the witnessed root).
    let (status, content_type, body) = w.add_checkpoint(&add_checkpoint_body(&log, &fork, 9, 9));
    assert_eq!((status, content_type.as_str(), body.as_str()), (409, "text/x.tlog.size", "9\n"), "same size, another root");
    let (status, _, body) = w.add_checkpoint(&add_checkpoint_body(&log, &fork, 9, 10));
    assert_eq!(status, 422, "a fork extending the witnessed size: {body}");
    // A rollback: an old size beyond the checkpoint's (400), a stale old size (409).
    let mut rollback = add_checkpoint_body(&log, &main, 0, 5);
    rollback = rollback.replacen("old 0\n", "old 9\n", 1);
    assert_eq!(w.add_checkpoint(&rollback).0, 400, "old size beyond the checkpoint");
    assert_eq!(w.add_checkpoint(&add_checkpoint_body(&log, &main, 5, 5)).2, "9\n", "a stale old size gets the witness's");
    // A log it does not witness (404), the log's origin signed by another key (403),
    // malformed bodies (400), a body beyond the limit (413).
    let other = NoteSigner::new("some-other-log", [9; 32]).unwrap();
    assert_eq!(w.add_checkpoint(&add_checkpoint_body(&other, &main, 0, 3)).0, 404);
    let impostor = NoteSigner::new(log.name(), [8; 32]).unwrap();
    assert_eq!(w.add_checkpoint(&add_checkpoint_body(&impostor, &main, 9, 9)).0, 403);
    for garbage in ["", "old 9\n", "old 09\n\nx\n", "hello\n\nworld\n"] {
        assert_eq!(w.add_checkpoint(garbage).0, 400, "{garbage:?}");
    }
    assert_eq!(w.add_checkpoint(&"x".repeat(events::witness::REQUEST_BYTES_MAX + 1)).0, 413);

    // Killed and started again: the same key, and it still knows size 9.
    w.kill();
    w.start_again();
    assert_eq!(WitnessKey::parse(&w.vkey).unwrap(), witness_key, "the same key after a restart");
    assert!(w.stdout.contains("(cosigned: size 9)"), "{}", w.stdout);
    assert_eq!(w.add_checkpoint(&add_checkpoint_body(&log, &main, 0, 9)).2, "9\n", "the state survived SIGKILL");
    assert_eq!(w.add_checkpoint(&add_checkpoint_body(&log, &fork, 9, 10)).0, 422, "and the fork is still refused");
    // The state file holds the cosigned checkpoint: the log's signature and the witness's.
    let state: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("w.state")).unwrap()).unwrap();
    assert_eq!(state["witness"], w.vkey.as_str());
    let note = state["logs"][0]["note"].as_str().unwrap();
    assert_eq!(open_note(&h.key, note).size, 9);
    assert!(witness_key.check(&Note::parse(note).unwrap()).unwrap().is_some(), "{note}");
    w.stop();
    // Another key on this state: refused, never silently reset.
    let (code, _, stderr) = e2e::run(&["witness", "--key", s(&dir.path().join("other.key")), "--state", s(&dir.path().join("w.state")), "--log", &h.key]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("belongs to witness"), "{stderr}");
}

#[test]
fn a_ledger_collects_cosignatures_and_verify_requires_a_quorum() {
    let h = Histories::new();
    let dir = tempfile::tempdir().unwrap();
    let mut ws = witness::three(dir.path(), std::slice::from_ref(&h.key));
    let server = serve_with(&h.main, &[&ws[0], &ws[1], &ws[2]], 2);
    let all: Vec<String> = ws.iter().map(|w| w.vkey.clone()).collect();
    let v = checkpoint_now(&server);
    assert_eq!((v["tree_size"].as_u64(), v["cosigned"].as_bool(), v["witness_quorum"].as_u64()), (Some(9), Some(true), Some(2)), "{v}");
    assert_eq!(cosigners(&v), ["witness.test/w1", "witness.test/w2", "witness.test/w3"]);
    let bundle = Bundle::parse(&server.get("/v1/export").text);
    assert_eq!(bundle.note(), v["checkpoint"].as_str().unwrap(), "the export ends at the cosigned checkpoint");
    for quorum in [1, 2, 3] {
        let (cledger, python) = both_verify_quorum(&bundle, &h.key, &all, quorum);
        cledger.assert_ok(&format!("quorum {quorum}"));
        assert!(cledger.stdout.contains("cosigned by 3 witness(es)"), "{}", cledger.stdout);
        if let Some(p) = python {
            p.assert_ok(&format!("python, quorum {quorum}"));
        }
    }
    let mut url_args = vec!["--url".to_string(), server.base.clone(), "--key".into(), h.key.clone()];
    url_args.extend(quorum_args(&all, 3));
    cledger_verify(&url_args.iter().map(String::as_str).collect::<Vec<_>>()).assert_ok("verify --url with a quorum of 3");

    // One witness down: cosigning goes on with the two others; appends never wait.
    ws[2].stop();
    server.batch_ok(&[late_invoice("W-1", "1.00"), late_invoice("W-2", "2.00")]);
    let v = checkpoint_now(&server);
    assert_eq!((v["tree_size"].as_u64(), v["cosigned"].as_bool()), (Some(11), Some(true)), "{v}");
    assert_eq!(cosigners(&v), ["witness.test/w1", "witness.test/w2"]);
    let ready = server.get_json("/readyz");
    assert_eq!(ready["ready"], true, "a witness down does not make the ledger unready: {ready}");
    let w3 = &ready["witnessing"]["witnesses"][2];
    assert!(w3["last_error"].as_str().is_some_and(|e| e.contains("unreachable")), "{ready}");
    let bundle = Bundle::parse(&server.get("/v1/export").text);
    let (cledger, python) = both_verify_quorum(&bundle, &h.key, &all, 3);
    cledger.assert_failed("two of three cosignatures, quorum 3", "2 valid cosignature(s)");
    if let Some(p) = python {
        p.assert_failed("python: two of three, quorum 3", "2 valid cosignature(s), 3 required");
    }
    both_verify_quorum(&bundle, &h.key, &all, 2).0.assert_ok("two of three, quorum 2");

    // Two down: no quorum; the checkpoint is kept signed, the cosigned one stays the latest.
    ws[1].stop();
    server.append_ok(&late_invoice("W-3", "3.00"));
    let v = checkpoint_now(&server);
    assert_eq!((v["tree_size"].as_u64(), v["cosigned"].as_bool()), (Some(12), Some(false)), "{v}");
    assert_eq!(server.get_json("/v1/checkpoints/latest")["tree_size"], 11, "the latest cosigned");
    let bundle = Bundle::parse(&server.get("/v1/export").text);
    assert_eq!((bundle.to(), open_note(&h.key, &bundle.note()).size), (11, 11), "exports end at the latest cosigned checkpoint");
    assert_eq!(server.head_seq(), 12);
    let history: Vec<u64> = server.all_pages("/v1/checkpoints", "checkpoints").iter().map(|c| c["tree_size"].as_u64().unwrap()).collect();
    assert_eq!(history, [9, 11, 12], "every checkpoint is kept, cosigned or not");

    // Both back (same ports): the next round catches them up from the sizes they keep.
    // A second later, so that w1, had it been asked again, would cosign with a newer
    // timestamp. That used to replace its kept line, the ledger refused to edit the kept
    // note, and the round lost every new cosignature (it failed whenever the round crossed
    // a second, so only sometimes).
    let w1_line = v["cosignatures"][0].clone();
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    ws[1].start_again();
    ws[2].start_again();
    let v = checkpoint_now(&server);
    assert_eq!((v["tree_size"].as_u64(), v["cosigned"].as_bool()), (Some(12), Some(true)), "{v}");
    assert_eq!(cosigners(&v).len(), 3, "{v}");
    assert_eq!(v["cosignatures"][0], w1_line, "the kept line of w1 stays as it was: {v}");
    assert_eq!(ws[0].stderr().matches("size=12").count(), 1, "w1 is not asked again for a size it cosigned: {}", ws[0].stderr());
    assert!(ws[2].stderr().contains("cosigned"), "{}", ws[2].stderr());
    let bundle = Bundle::parse(&server.get("/v1/export").text);
    both_verify_quorum(&bundle, &h.key, &all, 3).0.assert_ok("all three again");
}

fn both_verify_quorum(bundle: &Bundle, key: &str, witnesses: &[String], quorum: usize) -> (e2e::audit::Verdict, Option<e2e::audit::Verdict>) {
    let args = quorum_args(witnesses, quorum);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (cledger_verify_bundle_with(bundle, key, &args), python_verify_with(bundle, Some(key), &args))
}

#[test]
fn a_forked_ledger_with_the_same_key_is_refused_by_witnesses_and_by_verify() {
    let h = Histories::new();
    import(&h.fork, &[sample_invoice("INV-FORK-2", "2.00")]);
    let dir = tempfile::tempdir().unwrap();
    let ws = witness::three(dir.path(), std::slice::from_ref(&h.key));
    let processes: Vec<&WitnessProcess> = ws.iter().collect();
    let all: Vec<String> = ws.iter().map(|w| w.vkey.clone()).collect();
    {
        let main = serve_with(&h.main, &processes, 2);
        assert_eq!(checkpoint_now(&main)["cosigned"], true);
    }
    // The same key and origin, another history after seq 5, one event longer.
    let fork = serve_with(&h.fork, &processes, 2);
    let v = checkpoint_now(&fork);
    assert_eq!((v["tree_size"].as_u64(), v["cosigned"].as_bool()), (Some(10), Some(false)), "{v}");
    assert!(cosigners(&v).is_empty(), "no witness cosigned the fork: {v}");
    let ready = fork.get_json("/readyz");
    for w in ready["witnessing"]["witnesses"].as_array().unwrap() {
        assert!(w["last_error"].as_str().is_some_and(|e| e.contains("another history")), "{ready}");
    }
    for w in &ws {
        assert!(w.stderr().contains("refused"), "the witness logs the refusal: {}", w.stderr());
    }
    // Its exports: nothing cosigned to end at (503) unless asked for a fresh checkpoint,
    // which verifies on its own key alone, and is refused as soon as a quorum is required.
    let reply = fork.get("/v1/export");
    reply.expect_error(503, "not_cosigned", None);
    let bundle = Bundle::parse(&fork.get("/v1/export?checkpoint=fresh").text);
    let (cledger, python) = both_verify(&bundle, Some(&h.key));
    cledger.assert_ok("the fork alone, on its key: the split view a key cannot catch");
    if let Some(p) = python {
        p.assert_ok("python: the fork on its key");
    }
    let (cledger, python) = both_verify_quorum(&bundle, &h.key, &all, 2);
    cledger.assert_failed("the fork with a quorum", "0 valid cosignature(s)");
    if let Some(p) = python {
        p.assert_failed("python: the fork with a quorum", "0 valid cosignature(s), 2 required");
    }
    drop(fork);
    let mut args = vec!["--data".to_string(), s(&h.fork).to_string(), "--key".into(), h.key.clone()];
    args.extend(quorum_args(&all, 2));
    cledger_verify(&args.iter().map(String::as_str).collect::<Vec<_>>()).assert_failed("the fork's data with a quorum", "no kept checkpoint has 2");
    let mut args = vec!["--data".to_string(), s(&h.main).to_string(), "--key".into(), h.key.clone()];
    args.extend(quorum_args(&all, 3));
    cledger_verify(&args.iter().map(String::as_str).collect::<Vec<_>>()).assert_ok("the witnessed history's data");
}
