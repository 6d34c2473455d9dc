//! docs/verify_bundle.py, a verifier written from docs/FORMAT.md alone in another language,
//! must agree with `cledger verify` on every bundle: accept the good ones, reject every
//! tampered one (issue 6).
//!
//! It runs with `$CLEDGER_TEST_PYTHON` (scripts/test.sh sets it, with blake3 and
//! cryptography installed), else `python3` if that has the modules; otherwise the Python
//! half is skipped with a message and only `cledger verify` is checked.

use base64::Engine;
use e2e::audit::{both_verify, export, flip_char, import, key_of, python, sample_lines, Bundle, Histories, Verdict};
use e2e::server::{Options, Server};
use serde_json::Value;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Both verifiers accept (or, with Python missing, cledger alone).
fn both_accept(what: &str, bundle: &Bundle, key: Option<&str>) {
    let (cledger, python) = both_verify(bundle, key);
    cledger.assert_ok(&format!("cledger verify, {what}"));
    if let Some(p) = python {
        p.assert_ok(&format!("verify_bundle.py, {what}"));
    }
}

/// A tampered bundle and what `cledger verify` must say about it.
struct Case {
    what: &'static str,
    bundle: Bundle,
    key: Option<String>,
    /// Text `cledger verify` must print (e.g. "FAILED at seq 5").
    cledger_says: &'static str,
}

fn check_cases(cases: Vec<Case>) {
    let mut failures = vec![];
    let mut checked_python = 0;
    for case in &cases {
        let (cledger, python) = both_verify(&case.bundle, case.key.as_deref());
        eprintln!("{}:\n  cledger: {}\n  python:  {}", case.what, cledger.stdout.trim(), python.as_ref().map_or("(skipped)", |p| p.stdout.trim()));
        let judge = |who: &str, v: &Verdict, says: &str| {
            if !v.rejected() || !v.stdout.contains(says) {
                Some(format!("{}: {who} should reject{}: exit {} {}{}", case.what, if says.is_empty() { String::new() } else { format!(" with {says:?}") }, v.code, v.stdout.trim(), v.stderr.trim()))
            } else {
                None
            }
        };
        failures.extend(judge("cledger verify", &cledger, case.cledger_says));
        if let Some(p) = python {
            checked_python += 1;
            failures.extend(judge("verify_bundle.py", &p, "FAILED"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases:\n{}", failures.len(), cases.len(), failures.join("\n"));
    if python().is_some() {
        assert_eq!(checked_python, cases.len());
    }
}

/// Changes byte `at` (negative: from the end) of an event line's canonical bytes.
fn change_canonical_byte(bundle: &Bundle, seq: u64, at: isize, recompute_hash: bool) -> Bundle {
    bundle.edit_event(seq, |line| {
        let mut bytes = B64.decode(line["canonical"].as_str().unwrap()).unwrap();
        let i = if at < 0 { (bytes.len() as isize + at) as usize } else { at as usize };
        bytes[i] ^= 0x01;
        line["canonical"] = B64.encode(&bytes).into();
        if recompute_hash {
            line["hash"] = e2e::audit::event_hash(&bytes).to_hex().into();
        }
    })
}

#[test]
fn both_verifiers_accept_good_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import(&data, &sample_lines());
    let key = key_of(&data);
    let whole = export(&data, None, None);
    both_accept("the whole sample, with --key", &whole, Some(&key));
    both_accept("the whole sample, key from the header", &whole, None);
    for (from, to) in [(4, 6), (1, 5), (2, 9), (9, 9), (1, 1), (5, 5), (5, 4)] {
        let range = export(&data, Some(from), Some(to));
        assert_eq!((range.from(), range.to()), (from, to));
        both_accept(&format!("events {from} to {to}"), &range, Some(&key));
    }
    // Editing a line without changing it leaves it byte for byte (the helper used for the
    // tampering below changes nothing else).
    for i in 0..whole.lines.len() {
        assert_eq!(whole.edit(i, |_| {}), whole, "line {i} does not survive a round trip");
    }
    // An empty ledger: no events, the empty tree's root.
    let empty = dir.path().join("empty");
    key_of(&empty);
    let bundle = export(&empty, None, None);
    assert_eq!((bundle.from(), bundle.to(), bundle.lines.len()), (1, 0, 2));
    both_accept("an empty ledger", &bundle, Some(&key_of(&empty)));
}

#[test]
fn both_verifiers_accept_the_demo_portfolio() {
    let server = Server::with(Options { demo: true, ..Options::default() });
    let head = server.head_seq();
    assert!(head >= 20, "the demo portfolio is loaded: {head} events");
    let latest = server.get_json("/v1/checkpoints/latest");
    let key = latest["verifier_key"].as_str().expect("verifier_key").to_string();
    let reply = server.get("/v1/export");
    assert_eq!(reply.status, 200, "{}", reply.text);
    let bundle = Bundle::parse(&reply.text);
    assert_eq!((bundle.from(), bundle.to()), (1, head));
    assert_eq!(bundle.lines.len() as u64, head + 2);
    both_accept("the demo portfolio", &bundle, Some(&key));
    let reply = server.get("/v1/export?from=7&to=15");
    let range = Bundle::parse(&reply.text);
    both_accept("events 7 to 15 of the demo portfolio", &range, Some(&key));
    // Several currencies, and ledger-wide events, are in it: the bytes of all of them parse.
    let currencies: std::collections::BTreeSet<String> =
        (1..=head).filter_map(|seq| bundle.json(seq as usize)["event"]["data"]["currency"].as_str().map(str::to_string)).collect();
    assert!(currencies.len() >= 4, "{currencies:?}");
}

#[test]
fn both_verifiers_reject_tampered_bundles() {
    let h = Histories::new();
    let key = h.key.clone();
    let w = export(&h.main, None, None);
    let range = export(&h.main, Some(4), Some(6));
    let fork = export(&h.fork, None, None);
    both_accept("the untouched bundle", &w, Some(&key));
    both_accept("the untouched range", &range, Some(&key));
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    import(&other, &sample_lines()[..2]);
    let other_key = key_of(&other);
    let other_name = other_key.split('+').next().unwrap().to_string();
    let k = || Some(key.clone());

    let mut swapped = w.clone();
    swapped.lines.swap(3, 4);
    let mut deleted = w.clone();
    deleted.lines.remove(5);
    let mut duplicated = w.clone();
    duplicated.lines.insert(5, w.lines[5].clone());
    let mut no_checkpoint = w.clone();
    no_checkpoint.lines.pop();
    let mut trailing = w.clone();
    trailing.lines.push(w.lines[9].clone());
    let note_line = |i: usize, f: &dyn Fn(&str) -> String| {
        w.edit_note(|note| {
            let mut lines: Vec<String> = note.split('\n').map(str::to_string).collect();
            lines[i] = f(&lines[i]);
            lines.join("\n")
        })
    };
    let proof_hash = |which: &'static str, i: usize| {
        range.edit_last(|v| {
            let h = v["proofs"][which]["hashes"][i].as_str().unwrap().to_string();
            v["proofs"][which]["hashes"][i] = flip_char(&h, 7).into();
        })
    };

    let cases = vec![
        Case { what: "a byte of event 5's canonical bytes changed", bundle: change_canonical_byte(&w, 5, 60, false), key: k(), cledger_says: "FAILED at seq 5" },
        Case { what: "a byte of event 2's prev_hash inside its canonical bytes changed", bundle: change_canonical_byte(&w, 2, 3, false), key: k(), cledger_says: "FAILED at seq 2" },
        Case {
            what: "a base64 character of event 7's canonical changed",
            bundle: w.edit_event(7, |l| l["canonical"] = flip_char(l["canonical"].as_str().unwrap(), 50).into()),
            key: k(),
            cledger_says: "FAILED at seq 7",
        },
        Case { what: "event 3's bytes changed and its hash recomputed", bundle: change_canonical_byte(&w, 3, -1, true), key: k(), cledger_says: "FAILED at seq" },
        Case { what: "the last event's bytes changed and its hash recomputed", bundle: change_canonical_byte(&w, 9, -1, true), key: k(), cledger_says: "FAILED" },
        Case {
            what: "event 3's hash field changed",
            bundle: w.edit_event(3, |l| l["hash"] = flip_char(l["hash"].as_str().unwrap(), 10).into()),
            key: k(),
            cledger_says: "FAILED at seq 3",
        },
        Case {
            what: "event 8's prev_hash field changed",
            bundle: w.edit_event(8, |l| l["prev_hash"] = flip_char(l["prev_hash"].as_str().unwrap(), 0).into()),
            key: k(),
            cledger_says: "FAILED at seq 8",
        },
        Case { what: "event lines 3 and 4 swapped", bundle: swapped, key: k(), cledger_says: "FAILED at seq 3" },
        Case { what: "event line 5 deleted", bundle: deleted, key: k(), cledger_says: "FAILED at seq 5" },
        Case { what: "event line 5 twice", bundle: duplicated, key: k(), cledger_says: "FAILED at seq 6" },
        Case { what: "the checkpoint line dropped", bundle: no_checkpoint, key: k(), cledger_says: "FAILED" },
        Case { what: "a line after the checkpoint", bundle: trailing, key: k(), cledger_says: "FAILED" },
        Case { what: "the checkpoint's root altered", bundle: note_line(2, &|l| flip_char(l, 3)), key: k(), cledger_says: "signature" },
        Case { what: "the checkpoint's size altered", bundle: note_line(1, &|_| "8".into()), key: k(), cledger_says: "signature" },
        Case { what: "the checkpoint's signature altered", bundle: note_line(4, &|l| flip_char(l, l.len() - 30)), key: k(), cledger_says: "FAILED" },
        Case { what: "another history's checkpoint, same key and size", bundle: w.with_last_line_of(&fork), key: k(), cledger_says: "Merkle root" },
        Case { what: "verified with another key", bundle: w.clone(), key: Some(other_key.clone()), cledger_says: "FAILED" },
        Case {
            what: "the header naming another key, no --key",
            bundle: w.edit(0, |hd| {
                hd["origin"] = other_name.clone().into();
                hd["verifier_key"] = other_key.clone().into();
            }),
            key: None,
            cledger_says: "checkpoint",
        },
        Case {
            what: "event 2's type changed in its JSON",
            bundle: w.edit_event(2, |l| {
                assert_eq!(l["event"]["type"], "invoice_issued");
                l["event"]["type"] = "payment_received".into();
            }),
            key: k(),
            cledger_says: "FAILED at seq 2",
        },
        Case {
            what: "event 3's contract_id changed in its JSON",
            bundle: w.edit_event(3, |l| l["event"]["contract_id"] = "colossus-2".into()),
            key: k(),
            cledger_says: "FAILED at seq 3",
        },
        Case {
            what: "event 6's effective_date changed in its JSON",
            bundle: w.edit_event(6, |l| l["event"]["effective_date"] = "2026-10-03".into()),
            key: k(),
            cledger_says: "FAILED at seq 6",
        },
        Case {
            what: "event 1's actor changed in its JSON",
            bundle: w.edit_event(1, |l| l["event"]["actor"] = "someone@else.example".into()),
            key: k(),
            cledger_says: "FAILED at seq 1",
        },
        Case {
            what: "the ledger-wide event 4 given a contract in its JSON",
            bundle: w.edit_event(4, |l| l["event"]["contract_id"] = "colossus-1".into()),
            key: k(),
            cledger_says: "FAILED at seq 4",
        },
        Case { what: "an inclusion proof hash altered (range 4 to 6)", bundle: proof_hash("inclusion", 1), key: k(), cledger_says: "FAILED" },
        Case { what: "a consistency proof hash altered (range 4 to 6)", bundle: proof_hash("consistency", 0), key: k(), cledger_says: "FAILED" },
        Case {
            what: "the consistency proof's from_root altered (range 4 to 6)",
            bundle: range.edit_last(|v| v["proofs"]["consistency"]["from_root"] = flip_char(v["proofs"]["consistency"]["from_root"].as_str().unwrap(), 0).into()),
            key: k(),
            cledger_says: "FAILED",
        },
        Case {
            what: "the inclusion proof dropped (range 4 to 6)",
            bundle: range.edit_last(|v| {
                v["proofs"].as_object_mut().unwrap().remove("inclusion");
            }),
            key: k(),
            cledger_says: "FAILED",
        },
        Case {
            what: "a range's event 5 changed, hash recomputed",
            bundle: change_canonical_byte(&range, 5, -1, true),
            key: k(),
            cledger_says: "FAILED",
        },
        Case {
            what: "a range claiming to start one event later",
            bundle: {
                let mut b = range.edit(0, |hd| hd["from"] = 5.into());
                b.lines.remove(1);
                b
            },
            key: k(),
            cledger_says: "FAILED",
        },
    ];
    // Every case really changed the bundle.
    for case in &cases {
        assert!(case.bundle != w && case.bundle != range || case.key != k(), "{}: nothing changed", case.what);
    }
    check_cases(cases);
}

/// FORMAT.md section 5: "a consistency proof ... between equal sizes is empty", and
/// section 7 allows an empty range (B = A - 1). Exporting from the kept size + 1 when
/// nothing was appended since gives exactly that bundle; both verifiers must accept it.
#[test]
fn both_verifiers_accept_an_empty_range_at_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import(&data, &sample_lines());
    let key = key_of(&data);
    let bundle = export(&data, Some(10), None);
    assert_eq!((bundle.from(), bundle.to(), bundle.lines.len()), (10, 9, 2));
    let consistency: &Value = &bundle.last()["proofs"]["consistency"];
    assert_eq!((consistency["from"].as_u64(), consistency["to"].as_u64()), (Some(9), Some(9)));
    both_accept("an empty range after the head", &bundle, Some(&key));
}

/// The Python verifier, written from FORMAT.md, against the checked-in vectors: it decodes
/// every vector event's canonical bytes to the JSON the vectors give, refuses every byte
/// string the vectors list as invalid, verifies the cosigned note of witness.json, and
/// makes the same cosignature from the same TEST seed (Ed25519 is deterministic).
#[test]
fn the_python_verifier_decodes_and_cosigns_as_the_vectors_say() {
    let Some(python) = python() else { return };
    let script = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import verify_bundle as v
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
events = json.load(open(sys.argv[2]))
for e in events["events"]:
    seq, prev, contract, version, recorded_at, wire = v.decode(bytes.fromhex(e["canonical_hex"]))
    expected = {k: x for k, x in e["wire"].items() if k != "expected_version"}
    expected.setdefault("actor", events["default_actor"])
    assert v.same(wire, expected), (seq, wire, expected)
    assert (seq, version, prev.hex()) == (e["seq"], e["version"], e["prev_hash"]), seq
refused = 0
for r in events["refused"]:
    try:
        v.decode(bytes.fromhex(r["canonical_hex"]))
    except v.Failed:
        refused += 1
assert refused == len(events["refused"]), (refused, len(events["refused"]))
w = json.load(open(sys.argv[3]))
log = v.parse_vkey(w["log_verifier_key"], 0x01)
witness = v.parse_vkey(w["witness"]["verifier_key"], 0x04)
size, root, cosigned = v.verify_checkpoint(w["cosigned_note"], log, [witness], 1)
assert cosigned == [w["witness"]["name"]], cosigned
key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(w["witness"]["test_signing_seed_hex"]))
assert w["signed_message"] == "cosignature/v1\ntime %d\n" % w["timestamp"] + w["cosigned_note"].split("\n\n")[0] + "\n"
blob = witness[2] + w["timestamp"].to_bytes(8, "big") + key.sign(w["signed_message"].encode())
import base64
assert w["cosignature_line"] == "\u2014 %s %s\n" % (w["witness"]["name"], base64.b64encode(blob).decode()), "the same bytes"
print("ok", len(events["events"]), refused)
"#;
    let vectors = e2e::workspace().join("testdata/vectors");
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(e2e::workspace().join("docs"))
        .arg(vectors.join("events.json"))
        .arg(vectors.join("witness.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.starts_with("ok "), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
}
