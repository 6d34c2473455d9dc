//! Evidence packs (issue 13): one contract's events with an inclusion proof of each, its
//! revenue report as of D known at K, and a manifest, from the command line and over HTTP;
//! `cledger verify` checks the proofs and recomputes the report, the Python verifier checks
//! the proofs and the chain of that contract's events.

use e2e::audit::{cledger_verify_bundle, digest, digests, hash_of_event_json, import, key_of, mth, open_note, python_verify, s, Bundle};
use e2e::server::{Options, Server};
use serde_json::Value;

fn demo() -> Vec<String> {
    std::fs::read_to_string(e2e::workspace().join("examples/demo-portfolio.ndjson")).unwrap().lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

fn cli(args: &[&str]) -> (i32, String, String) {
    e2e::run(args)
}

/// Checks a pack against what the test knows: every event of `contract` up to `known_at`,
/// each proven against the manifest's checkpoint with the tree computed here.
fn check_pack(pack: &Bundle, key: &str, log: &[Value], contract: &str, as_of: &str, known_at: u64) -> Value {
    let manifest = pack.json(0);
    let keys: Vec<&str> = manifest.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["format", "version", "origin", "verifier_key", "contract_id", "as_of", "known_at", "granularity", "checkpoint", "seqs"]);
    assert_eq!((manifest["format"].as_str(), manifest["contract_id"].as_str(), manifest["as_of"].as_str()), (Some("compute-ledger-evidence"), Some(contract), Some(as_of)));
    assert_eq!(manifest["known_at"], known_at);
    assert_eq!(manifest["verifier_key"], key);
    let checkpoint = open_note(key, manifest["checkpoint"].as_str().unwrap());
    let hashes: Vec<_> = log.iter().map(hash_of_event_json).collect();
    assert_eq!(checkpoint.root, mth(&hashes[..checkpoint.size as usize]), "the manifest's checkpoint is of this ledger");
    let expected: Vec<u64> = log.iter().filter(|e| e["contract_id"] == contract && e["seq"].as_u64().unwrap() <= known_at).map(|e| e["seq"].as_u64().unwrap()).collect();
    let seqs: Vec<u64> = manifest["seqs"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect();
    assert_eq!(seqs, expected, "every event of {contract} up to {known_at}, and nothing else");
    assert_eq!(pack.lines.len(), seqs.len() + 2);
    for (i, seq) in seqs.iter().enumerate() {
        let line = pack.json(i + 1);
        let logged = &log[*seq as usize - 1];
        assert_eq!((&line["seq"], &line["canonical"], &line["event"]), (&logged["seq"], &logged["canonical"], &logged["event"]), "the stored bytes");
        let hash = digest(&line["hash"]);
        events::merkle::verify_inclusion(&hash, seq - 1, checkpoint.size, &digests(&line["inclusion"]), &checkpoint.root).expect("each inclusion proof");
    }
    pack.json(pack.lines.len() - 1)["report"].clone()
}

#[test]
fn an_evidence_pack_from_the_command_line_is_verified_by_both_verifiers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import(&data, &demo());
    let key = key_of(&data);
    let log = e2e::server::log_json(&data);
    let out = dir.path().join("pack.ndjson");
    let (code, stdout, stderr) = cli(&["export", "--data", s(&data), "--contract", "colossus-1", "--as-of", "2027-12-31", "--known-at", "18", "--out", s(&out)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains("evidence pack of colossus-1"), "{stderr}");
    let pack = Bundle::read(&out);
    let report = check_pack(&pack, &key, &log, "colossus-1", "2027-12-31", 18);
    assert_eq!(pack.json(0)["seqs"], serde_json::json!([1, 2, 3]), "colossus-1's events up to 18");
    // The report is `cledger report`'s, as of that date and as known at that position.
    let (code, reported, stderr) = cli(&["report", "--data", s(&data), "--contract", "colossus-1", "--as-of", "2027-12-31", "--known-at", "18", "--format", "json"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report, serde_json::from_str::<Value>(&reported).unwrap());
    let verdict = cledger_verify_bundle(&pack, Some(&key), None);
    verdict.assert_ok("the pack");
    assert!(verdict.stdout.contains("revenue report as of 2027-12-31 known at 18 recomputed from them and equal"), "{}", verdict.stdout);
    if let Some(p) = python_verify(&pack, Some(&key)) {
        p.assert_ok("python: the pack");
        assert!(p.stdout.contains("evidence pack of contract colossus-1"), "{}", p.stdout);
    }
    // Without --known-at: everything up to the checkpoint; quarters.
    let (code, text, stderr) = cli(&["export", "--data", s(&data), "--contract", "aurora-eu", "--as-of", "2028-03-31", "--granularity", "quarter"]);
    assert_eq!(code, 0, "{stderr}");
    let pack = Bundle::parse(&text);
    let head = log.len() as u64;
    let report = check_pack(&pack, &key, &log, "aurora-eu", "2028-03-31", head);
    assert!(report["periods"][0]["period"].as_str().unwrap().contains("-Q"), "{report}");
    cledger_verify_bundle(&pack, Some(&key), None).assert_ok("the EUR pack");

    // Tampering the tests' corpus covers in bulk; here, what each verifier says.
    let dropped = {
        let mut b = pack.clone();
        b.lines.remove(2);
        b
    };
    cledger_verify_bundle(&dropped, Some(&key), None).assert_failed("an event dropped", "FAILED at seq");
    let figures = pack.edit_last(|v| v["report"]["recognized"] = "1.00".into());
    cledger_verify_bundle(&figures, Some(&key), None).assert_failed("the report's figure changed", "the report differs from the one its events give, at /recognized");
    if let Some(p) = python_verify(&figures, Some(&key)) {
        p.assert_ok("python: report figures are not its to recompute");
        assert!(p.stdout.contains("report figures not recomputed here"), "{}", p.stdout);
    }

    // Mistakes: exit 2 and why.
    for (args, says) in [
        (vec!["--contract", "nobody", "--as-of", "2027-12-31"], "no contract `nobody`"),
        (vec!["--contract", "colossus-1", "--as-of", "2027-12-31", "--known-at", "999"], "beyond the checkpoint"),
        (vec!["--contract", "colossus-1", "--as-of", "2027-13-01"], "--as-of"),
        (vec!["--contract", "colossus-1", "--as-of", "2027-12-31", "--from", "2"], "for bundles"),
    ] {
        let mut all = vec!["export", "--data", s(&data)];
        all.extend(args);
        let (code, stdout, stderr) = cli(&all);
        assert_eq!(code, 2, "{all:?}: {stdout}{stderr}");
        assert!(stderr.contains(says), "{all:?}: {stderr}");
    }
}

#[test]
fn an_evidence_pack_over_http_matches_the_revenue_route() {
    let server = Server::with(Options { args: vec!["--checkpoint-interval-s".into(), "0".into()], ..Options::default() });
    server.batch_ok(&demo().iter().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<Value>>());
    let key = server.get_json("/v1/checkpoints/latest")["verifier_key"].as_str().unwrap().to_string();
    let log = server.all_events();
    for (contract, as_of, known_at) in [("colossus-1", "2026-12-31", Some(9u64)), ("colossus-1", "2028-06-30", None), ("sakura-jp", "2027-09-30", Some(20))] {
        let query = match known_at {
            Some(k) => format!("as_of={as_of}&known_at={k}"),
            None => format!("as_of={as_of}"),
        };
        let reply = server.get(&format!("/v1/contracts/{contract}/evidence?{query}"));
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.header("content-type").as_deref(), Some("application/x-ndjson"));
        let pack = Bundle::parse(&reply.text);
        let size = open_note(&key, pack.json(0)["checkpoint"].as_str().unwrap()).size;
        let known_at = known_at.unwrap_or(size);
        let report = check_pack(&pack, &key, &log, contract, as_of, known_at);
        assert_eq!(report, server.get_json(&format!("/v1/contracts/{contract}/revenue?as_of={as_of}&known_at={known_at}")), "the pack's report is the revenue route's");
        cledger_verify_bundle(&pack, Some(&key), None).assert_ok(&format!("{contract} over HTTP"));
        if let Some(p) = python_verify(&pack, Some(&key)) {
            p.assert_ok(&format!("python: {contract} over HTTP"));
        }
    }
    server.get("/v1/contracts/nobody/evidence?as_of=2027-01-01").expect_error(404, "unknown_contract", None);
    server.get("/v1/contracts/colossus-1/evidence").expect_error(400, "invalid_parameter", Some("as_of"));
    server.get("/v1/contracts/colossus-1/evidence?as_of=2027-01-01&known_at=9999").expect_error(400, "invalid_parameter", Some("known_at"));
    server.get("/v1/contracts/colossus-1/evidence?as_of=2027-01-01&checkpoint=old").expect_error(400, "invalid_parameter", Some("checkpoint"));
    // `checkpoint=latest` ends at the latest kept checkpoint: issued now, then unchanged.
    let latest = server.post("/v1/checkpoints", &serde_json::json!({})).expect(201);
    let pack = Bundle::parse(&server.get("/v1/contracts/colossus-1/evidence?as_of=2027-01-01&checkpoint=latest").text);
    assert_eq!(pack.json(0)["checkpoint"], latest["checkpoint"]);
}
