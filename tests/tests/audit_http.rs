//! The auditor's HTTP endpoints on a real `cledger serve`: checkpoints, proofs, the export
//! bundle, `cledger verify --url` with a kept checkpoint, and the signing key's life across
//! restarts (issue 6).

use e2e::audit::{
    check_consistency_json, check_inclusion_json, cledger_verify, copy_dir, digest, hash_of_event_json, key_of, mth, open_note, python_verify, s, Bundle,
};
use e2e::server::{eventually, invoice, small_grant, Options, Server, Tokens};
use events::Digest;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// A server that signs checkpoints only when asked (no timer), so what the latest one is
/// depends on the test's requests alone.
fn on_request_only() -> Options {
    Options { args: vec!["--checkpoint-interval-s".into(), "0".into()], ..Options::default() }
}

/// Appends a grant of `c` and `n` invoices; returns the new head.
fn append_events(server: &Server, contract: &str, n: usize, first_invoice: usize) -> u64 {
    if first_invoice == 0 {
        server.append_ok(&small_grant(contract));
    }
    let invoices: Vec<Value> = (0..n).map(|i| invoice(contract, &format!("INV-{}", first_invoice + i), "1.00")).collect();
    if !invoices.is_empty() {
        server.batch_ok(&invoices);
    }
    server.head_seq()
}

/// The event hashes the server serves, recomputed from their canonical bytes.
fn served_hashes(server: &Server) -> Vec<Digest> {
    server.all_events().iter().map(hash_of_event_json).collect()
}

fn latest(server: &Server) -> Value {
    server.get_json("/v1/checkpoints/latest")
}

/// Checks a checkpoint reply: the note verifies with the key it names (and `key`, if given),
/// its fields repeat the note, and its root is the tree of the first `size` hashes.
fn check_checkpoint(v: &Value, key: Option<&str>, hashes: &[Digest]) -> u64 {
    let named = v["verifier_key"].as_str().expect("verifier_key");
    if let Some(k) = key {
        assert_eq!(named, k, "{v}");
    }
    let note = v["checkpoint"].as_str().expect("checkpoint");
    let checkpoint = open_note(named, note);
    assert_eq!(v["origin"], checkpoint.origin.as_str(), "{v}");
    assert_eq!(v["tree_size"], checkpoint.size, "{v}");
    assert_eq!(digest(&v["root"]), checkpoint.root, "{v}");
    assert!(named.starts_with(&format!("{}+", checkpoint.origin)), "the key's name is the origin: {v}");
    assert_eq!(checkpoint.root, mth(&hashes[..checkpoint.size as usize]), "the root of the first {} events", checkpoint.size);
    checkpoint.size
}

#[test]
fn proofs_verify_against_the_roots_of_the_served_events() {
    let server = Server::with(on_request_only());
    let head = append_events(&server, "c", 12, 0);
    assert_eq!(head, 13);
    let hashes = served_hashes(&server);
    assert_eq!(hashes.len(), 13);
    for size in 1..=head {
        for seq in 1..=size {
            let v = server.get_json(&format!("/v1/proofs/inclusion?seq={seq}&tree_size={size}"));
            check_inclusion_json(&v, seq, size, &hashes);
        }
    }
    // Default tree size: the head.
    check_inclusion_json(&server.get_json("/v1/proofs/inclusion?seq=7"), 7, head, &hashes);
    for to in 0..=head {
        for from in 0..=to {
            let v = server.get_json(&format!("/v1/proofs/consistency?from={from}&to={to}"));
            check_consistency_json(&v, from, to, &hashes);
        }
    }
    check_consistency_json(&server.get_json("/v1/proofs/consistency?from=5"), 5, head, &hashes);

    // Out of range: 400 out_of_range; a missing or malformed parameter: 400 naming it.
    for path in [
        "/v1/proofs/inclusion?seq=0",
        "/v1/proofs/inclusion?seq=14",
        "/v1/proofs/inclusion?seq=5&tree_size=4",
        "/v1/proofs/inclusion?seq=1&tree_size=14",
        "/v1/proofs/consistency?from=14",
        "/v1/proofs/consistency?from=5&to=4",
        "/v1/proofs/consistency?from=1&to=14",
        "/v1/export?from=16",
        "/v1/export?to=14",
        "/v1/export?from=5&to=3",
    ] {
        server.get(path).expect_error(400, "out_of_range", None);
    }
    server.get("/v1/proofs/inclusion").expect_error(400, "invalid_parameter", Some("seq"));
    server.get("/v1/proofs/inclusion?seq=x").expect_error(400, "invalid_parameter", Some("seq"));
    server.get("/v1/proofs/consistency?to=3").expect_error(400, "invalid_parameter", Some("from"));
    server.get("/v1/proofs/consistency?from=-1").expect_error(400, "invalid_parameter", Some("from"));
}

#[test]
fn checkpoints_are_signed_with_the_published_key_and_move_when_issued() {
    let mut server = Server::with(on_request_only());
    append_events(&server, "c", 2, 0);
    let hashes = served_hashes(&server);
    // The first request issues one of the head.
    let first = latest(&server);
    let key = first["verifier_key"].as_str().unwrap().to_string();
    assert_eq!(check_checkpoint(&first, None, &hashes), 3);
    // Appends do not move it by themselves (no timer here); POST does.
    append_events(&server, "c", 2, 2);
    let hashes = served_hashes(&server);
    assert_eq!(latest(&server), first);
    let reply = server.call("POST", "/v1/checkpoints", &[], None);
    let issued = reply.expect(201);
    assert_eq!(check_checkpoint(&issued, Some(&key), &hashes), 5);
    assert_eq!(latest(&server), issued);
    // The two checkpoints are of one history: the consistency proof joins their roots.
    let proof = server.get_json("/v1/proofs/consistency?from=3&to=5");
    assert_eq!((&proof["from_root"], &proof["to_root"]), (&first["root"], &issued["root"]));
    check_consistency_json(&proof, 3, 5, &hashes);
    // Issuing again without appends signs the same tree.
    let again = server.call("POST", "/v1/checkpoints", &[], None).expect(201);
    assert_eq!(again["checkpoint"], issued["checkpoint"]);

    // The key file: created at first start, private.
    let file = server.data.join("checkpoint-signing.key");
    assert_eq!(std::fs::metadata(&file).expect("the signing key file").permissions().mode() & 0o777, 0o600);
    let seed = std::fs::read_to_string(&file).unwrap();
    assert_eq!(seed.trim().len(), 64);
    // After a restart: the same key, the same latest checkpoint.
    server.restart();
    assert_eq!(latest(&server), issued);
    append_events(&server, "c", 1, 4);
    let hashes = served_hashes(&server);
    let after = server.call("POST", "/v1/checkpoints", &[], None).expect(201);
    assert_eq!(check_checkpoint(&after, Some(&key), &hashes), 6);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), seed, "the key file is not rewritten");
    // A SIGKILL does not lose it either; `cledger key` (server stopped) publishes the same key.
    server.kill();
    assert_eq!(key_of(&server.data), key);
    server.start_again();
    let hashes = served_hashes(&server);
    let v = server.call("POST", "/v1/checkpoints", &[], None).expect(201);
    assert_eq!(check_checkpoint(&v, Some(&key), &hashes), 6);
    assert_eq!(v["checkpoint"], after["checkpoint"], "the same key signs the same tree identically");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), seed);
}

/// ARCHITECTURE.md: "Checkpoints only move forward". A checkpoint the server answered 201
/// for (and published) must still be the latest after the process dies.
#[test]
fn an_issued_checkpoint_is_still_the_latest_after_a_crash() {
    let mut server = Server::with(on_request_only());
    append_events(&server, "c", 2, 0);
    let first = server.call("POST", "/v1/checkpoints", &[], None).expect(201);
    assert_eq!(first["tree_size"], 3);
    append_events(&server, "c", 2, 2);
    let issued = server.call("POST", "/v1/checkpoints", &[], None).expect(201);
    assert_eq!(issued["tree_size"], 5);
    server.kill();
    server.start_again();
    assert_eq!(server.head_seq(), 5, "the events are durable");
    let after = latest(&server);
    assert_eq!(after["tree_size"], 5, "the latest checkpoint went back from the one issued (size 5) to {after}");
    assert_eq!(after, issued);
}

#[test]
fn a_configured_signing_key_and_origin_are_used_and_no_key_is_created() {
    let dir = tempfile::tempdir().unwrap();
    // A key made elsewhere (by `cledger key` on another directory).
    let elsewhere = dir.path().join("keys");
    key_of(&elsewhere);
    let key_file = elsewhere.join("checkpoint-signing.key");
    let origin = "ledger.example/compute";
    let server = Server::with(Options {
        args: vec!["--checkpoint-interval-s".into(), "0".into(), "--signing-key".into(), s(&key_file).into(), "--origin".into(), origin.into()],
        ..Options::default()
    });
    append_events(&server, "c", 1, 0);
    let v = server.call("POST", "/v1/checkpoints", &[], None).expect(201);
    assert_eq!(v["origin"], origin);
    let key = v["verifier_key"].as_str().unwrap().to_string();
    assert!(key.starts_with(&format!("{origin}+")), "{key}");
    check_checkpoint(&v, None, &served_hashes(&server));
    assert!(!server.data.join("checkpoint-signing.key").exists(), "no second key is made in the data directory");
    // The same seed, named by the origin: `cledger key --origin` gives the same verifier key.
    let (code, stdout, stderr) = e2e::run(&["key", "--data", s(&elsewhere), "--origin", origin]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), key);
    cledger_verify(&["--url", &server.base, "--key", &key]).assert_ok("verify --url with the configured key");
    let bundle = Bundle::parse(&server.get("/v1/export").text);
    assert_eq!(bundle.header()["origin"], origin);
}

#[test]
fn the_latest_checkpoint_follows_the_ledger_on_a_timer() {
    let server = Server::with(Options { args: vec!["--checkpoint-interval-s".into(), "1".into()], ..Options::default() });
    let head = append_events(&server, "c", 3, 0);
    let hashes = served_hashes(&server);
    // Nobody asks for one: the timer signs the grown ledger (a bound against hangs only).
    let v = eventually("a checkpoint of the head", Duration::from_secs(30), || {
        let v = latest(&server);
        (v["tree_size"] == head).then_some(v)
    });
    check_checkpoint(&v, None, &hashes);
}

#[test]
fn the_export_endpoint_streams_bundles_both_verifiers_accept() {
    let server = Server::with(on_request_only());
    let head = append_events(&server, "c", 8, 0);
    let hashes = served_hashes(&server);
    let key = latest(&server)["verifier_key"].as_str().unwrap().to_string();
    let reply = server.get("/v1/export");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("content-type").as_deref(), Some("application/x-ndjson"));
    let bundle = Bundle::parse(&reply.text);
    assert_eq!((bundle.from(), bundle.to(), bundle.lines.len() as u64), (1, head, head + 2));
    assert_eq!(bundle.header()["verifier_key"], key.as_str());
    assert_eq!(bundle.hashes(), hashes);
    let events = server.all_events();
    for seq in 1..=head {
        let line = bundle.json(seq as usize);
        let served = &events[seq as usize - 1];
        assert_eq!((&line["canonical"], &line["event"]), (&served["canonical"], &served["event"]), "seq {seq}");
    }
    let checkpoint = open_note(&key, &bundle.note());
    assert_eq!((checkpoint.size, checkpoint.root), (head, mth(&hashes)));
    // Exporting signed a checkpoint of the head: it is now the latest.
    assert_eq!(latest(&server)["checkpoint"], bundle.note().as_str());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.ndjson");
    let range = Bundle::parse(&server.get("/v1/export?from=4&to=6").text);
    assert_eq!((range.from(), range.to(), range.lines.len()), (4, 6, 5));
    for (what, b) in [("the whole ledger", &bundle), ("events 4 to 6", &range)] {
        b.write(&file);
        cledger_verify(&[s(&file), "--key", &key]).assert_ok(what);
        if let Some(p) = python_verify(b, Some(&key)) {
            p.assert_ok(&format!("verify_bundle.py, {what}"));
        }
    }
    // One changed byte of the served bundle: both refuse it.
    let tampered = bundle.edit_event(5, |l| l["event"]["type"] = "payment_received".into());
    tampered.write(&file);
    cledger_verify(&[s(&file), "--key", &key]).assert_failed("a tampered export", "FAILED at seq 5");
    if let Some(p) = python_verify(&tampered, Some(&key)) {
        p.assert_failed("verify_bundle.py, a tampered export", "FAILED at seq 5");
    }
}

#[test]
fn verify_url_keeps_a_checkpoint_and_later_checks_the_ledger_extends_it() {
    let tokens = Tokens::create();
    let server = Server::with(Options { tokens: Some(tokens.file.clone()), token: Some(tokens.admin.clone()), ..on_request_only() });
    append_events(&server, "c", 4, 0);
    let key = latest(&server)["verifier_key"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("kept.note");
    let url = server.base.clone();
    let verify = |token: Option<&str>| {
        let mut args = vec!["--url", url.as_str(), "--key", key.as_str(), "--trusted-checkpoint", s(&kept)];
        if let Some(t) = token {
            args.extend(["--token", t]);
        }
        cledger_verify(&args)
    };
    // Without a token, or with a writer's: the export is refused, verify cannot run.
    for token in [None, Some(tokens.writer.as_str())] {
        let v = verify(token);
        assert_eq!(v.code, 2, "{}{}", v.stdout, v.stderr);
        assert!(!kept.exists());
    }
    let v = verify(Some(&tokens.auditor));
    v.assert_ok("first verification");
    assert!(v.stdout.contains("events 1 to 5 verified"), "{}", v.stdout);
    let first = std::fs::read_to_string(&kept).expect("kept");
    let hashes = served_hashes(&server);
    let checkpoint = open_note(&key, &first);
    assert_eq!((checkpoint.size, checkpoint.root), (5, mth(&hashes)));
    assert_eq!(latest(&server)["checkpoint"], first.as_str());

    append_events(&server, "c", 3, 4);
    let v = verify(Some(&tokens.auditor));
    v.assert_ok("after more appends");
    assert!(v.stdout.contains("extends the kept checkpoint"), "{}", v.stdout);
    let second = std::fs::read_to_string(&kept).unwrap();
    let hashes = served_hashes(&server);
    let checkpoint = open_note(&key, &second);
    assert_eq!((checkpoint.size, checkpoint.root), (8, mth(&hashes)));
    // Nothing new: still extends (itself), the file holds the same checkpoint.
    verify(Some(&tokens.admin)).assert_ok("again, nothing appended");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), second);
}

#[test]
fn verify_url_refuses_a_rolled_back_or_forked_server() {
    let mut server = Server::with(on_request_only());
    append_events(&server, "c", 4, 0);
    let key = latest(&server)["verifier_key"].as_str().unwrap().to_string();
    // Snapshots of the stopped ledger at 5 events, with its signing key.
    server.stop_ok();
    let dir = tempfile::tempdir().unwrap();
    let (old, fork) = (dir.path().join("old"), dir.path().join("fork"));
    copy_dir(&server.data, &old);
    copy_dir(&server.data, &fork);
    server.start_again();
    append_events(&server, "c", 4, 4);
    let kept = dir.path().join("kept.note");
    cledger_verify(&["--url", &server.base, "--key", &key, "--trusted-checkpoint", s(&kept)]).assert_ok("the live server");
    let note = std::fs::read_to_string(&kept).unwrap();
    assert_eq!(open_note(&key, &note).size, 9);

    // The same ledger served from the 5-event copy: a rollback.
    let rolled_back = Server::on(&old, on_request_only());
    assert_eq!(rolled_back.head_seq(), 5);
    assert_eq!(latest(&rolled_back)["verifier_key"], key.as_str(), "the copy signs with the same key");
    cledger_verify(&["--url", &rolled_back.base, "--key", &key]).assert_ok("the copy, on its own");
    cledger_verify(&["--url", &rolled_back.base, "--key", &key, "--trusted-checkpoint", s(&kept)]).assert_failed("the rolled-back server", "rollback");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), note, "a refusal keeps the old checkpoint");

    // The other copy goes on differently to the same size: a fork.
    let forked = Server::on(&fork, on_request_only());
    append_events(&forked, "d", 3, 0);
    assert_eq!(forked.head_seq(), 9);
    cledger_verify(&["--url", &forked.base, "--key", &key]).assert_ok("the fork, on its own");
    cledger_verify(&["--url", &forked.base, "--key", &key, "--trusted-checkpoint", s(&kept)]).assert_failed("the forked server", "rewrote history");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), note);
    // Another ledger's key: refused whatever is kept.
    let stranger = Server::with(on_request_only());
    append_events(&stranger, "c", 1, 0);
    cledger_verify(&["--url", &stranger.base, "--key", &key]).assert_failed("another ledger's server", "another verifier key");
    // The real one still extends it.
    cledger_verify(&["--url", &server.base, "--key", &key, "--trusted-checkpoint", s(&kept)]).assert_ok("the live server again");
}

#[test]
fn exports_and_verify_url_taken_while_events_are_appended_verify() {
    let server = Server::with(on_request_only());
    append_events(&server, "c", 0, 0);
    let key = latest(&server)["verifier_key"].as_str().unwrap().to_string();
    let api: e2e::server::Api = (*server).clone();
    let writer = std::thread::spawn(move || {
        for i in 0..150 {
            api.batch_ok(&[invoice("c", &format!("A-{i}"), "1.00"), invoice("c", &format!("B-{i}"), "2.00")]);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (file, kept) = (dir.path().join("bundle.ndjson"), dir.path().join("kept.note"));
    let mut sizes = vec![];
    let mut rounds = 0;
    // While the writer runs, and a few times after it finished.
    while !writer.is_finished() || rounds < 3 {
        if writer.is_finished() {
            rounds += 1;
        }
        let reply = server.get("/v1/export");
        assert_eq!(reply.status, 200, "{}", reply.text);
        let bundle = Bundle::parse(&reply.text);
        bundle.write(&file);
        cledger_verify(&[s(&file), "--key", &key]).assert_ok("an export taken during appends");
        let size = open_note(&key, &bundle.note()).size;
        assert_eq!(bundle.to(), size, "a whole export ends at its checkpoint");
        sizes.push(size);
        let v = cledger_verify(&["--url", &server.base, "--key", &key, "--trusted-checkpoint", s(&kept)]);
        v.assert_ok("verify --url during appends");
        let kept_size = open_note(&key, &std::fs::read_to_string(&kept).unwrap()).size;
        assert!(kept_size >= size, "the kept checkpoint went back: {kept_size} after an export of {size}");
        sizes.push(kept_size);
    }
    writer.join().unwrap();
    eprintln!("checkpoint sizes seen: {sizes:?}");
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "checkpoint sizes only grow: {sizes:?}");
    assert_eq!(sizes.last(), Some(&301), "{sizes:?}");
    // Proofs between the first and last checkpoint seen, against the final hashes.
    let hashes = served_hashes(&server);
    check_consistency_json(&server.get_json(&format!("/v1/proofs/consistency?from={}&to=301", sizes[0])), sizes[0], 301, &hashes);
}
