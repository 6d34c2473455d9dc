//! Export bundles: a good bundle verifies; every single-byte change anywhere in it is
//! detected (exhaustively, for a small bundle); ranges verify through their proofs.

use events::bundle::*;
use events::checkpoint::{Checkpoint, NoteSigner, VerifierKey};
use events::merkle::{self, MemoryTree};
use events::*;

const SPEC_EXAMPLES: &str = include_str!("../../examples/colossus.ndjson");

fn events() -> Vec<RecordedEvent> {
    events_cycling(SPEC_EXAMPLES.lines().count())
}

/// The example events sealed in a chain, then again from the first, up to `n` events (the
/// bundle checks hashes, links and versions, not the rules of the history).
fn events_cycling(n: usize) -> Vec<RecordedEvent> {
    let mut versions = std::collections::HashMap::new();
    let mut prev = Digest::ZERO;
    let mut currency = None;
    SPEC_EXAMPLES
        .lines()
        .cycle()
        .take(n)
        .enumerate()
        .map(|(i, line)| {
            let p = Proposal::parse_json(line.as_bytes()).unwrap();
            let body = p.resolve(currency).unwrap();
            currency = currency.or(body.currency());
            let version = versions.entry(p.stream.clone()).or_insert(0u64);
            *version += 1;
            let r = RecordedEvent::seal(Event {
                prev_hash: prev,
                seq: i as u64 + 1,
                stream: p.stream.clone(),
                version: *version,
                effective_date: p.effective_date,
                recorded_at: Timestamp(1_795_824_000_000_000 + i as i64),
                actor: "a".into(),
                idempotency_key: None,
                body,
            });
            prev = r.hash;
            r
        })
        .collect()
}

fn signer() -> NoteSigner {
    NoteSigner::new("bundle.test", [5u8; 32]).unwrap()
}

/// A bundle of events `from..=to` with a checkpoint of all of them.
fn bundle(from: u64, to: u64) -> String {
    bundle_of(&events(), from, to)
}

/// A bundle of events `from..=to` of `all`, with a checkpoint of all of them.
fn bundle_of(all: &[RecordedEvent], from: u64, to: u64) -> String {
    let mut tree = MemoryTree::new();
    for e in all {
        tree.push(&e.hash);
    }
    let size = all.len() as u64;
    let s = signer();
    let note = s.sign(&Checkpoint { origin: s.name().into(), size, root: tree.root() });
    let header = Header { format: FORMAT.into(), version: VERSION, origin: s.name().into(), verifier_key: s.verifier().to_string(), from, to };
    let mut out = header_line(&header) + "\n";
    for e in &all[(from - 1) as usize..to as usize] {
        out += &(event_line(e) + "\n");
    }
    let whole = from == 1 && to == size;
    let proofs = (!whole).then(|| Proofs {
        inclusion: (to >= from).then(|| InclusionProof { seq: to, tree_size: size, hashes: hexes(&merkle::inclusion_proof(&tree, to - 1, size).unwrap()) }),
        consistency: (from > 1).then(|| ConsistencyProof {
            from: from - 1,
            to: size,
            from_root: merkle::root(&tree, from - 1).unwrap().to_hex(),
            hashes: hexes(&merkle::consistency_proof(&tree, from - 1, size).unwrap()),
        }),
    });
    out + &checkpoint_line(&CheckpointLine { checkpoint: note, proofs }) + "\n"
}

fn verify(bytes: &[u8], key: Option<VerifierKey>) -> Result<Verified, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let body = text.strip_suffix('\n').ok_or("no final newline")?;
    let mut v = BundleVerifier::new(key, Some(4));
    for line in body.split('\n') {
        v.line(line).map_err(|f| f.to_string())?;
    }
    v.finish().map_err(|f| f.to_string())
}

#[test]
fn a_whole_bundle_verifies_and_gives_the_root_at_a_kept_size() {
    let b = bundle(1, 9);
    let v = verify(b.as_bytes(), Some(signer().verifier())).unwrap();
    assert_eq!((v.from, v.to, v.checkpoint.size), (1, 9, 9));
    let mut tree = MemoryTree::new();
    for e in events() {
        tree.push(&e.hash);
    }
    assert_eq!(v.root_at_requested, Some(merkle::root(&tree, 4).unwrap()));
    assert!(verify(b.as_bytes(), None).is_ok(), "trusting the header's key");
}

#[test]
fn every_single_byte_change_of_a_bundle_is_detected() {
    let b = bundle(1, 9).into_bytes();
    let key = signer().verifier();
    let mut checked = 0;
    for i in 0..b.len() {
        for xor in [0x01u8, 0x20] {
            let mut bad = b.clone();
            bad[i] ^= xor;
            assert!(verify(&bad, Some(key.clone())).is_err(), "byte {i} ({:?}) ^ {xor:#x} accepted", b[i] as char);
            checked += 1;
        }
    }
    assert!(checked > 6_000, "{checked}");
}

#[test]
fn every_single_byte_change_of_a_range_bundle_is_detected() {
    let b = bundle(4, 6).into_bytes();
    let key = signer().verifier();
    assert!(verify(&b, Some(key.clone())).is_ok());
    for i in 0..b.len() {
        let mut bad = b.clone();
        bad[i] ^= 0x01;
        assert!(verify(&bad, Some(key.clone())).is_err(), "byte {i} accepted");
    }
}

#[test]
fn ranges_verify_through_their_proofs() {
    let key = signer().verifier();
    for (from, to) in [(1, 5), (2, 9), (4, 6), (9, 9), (3, 2)] {
        let v = verify(bundle(from, to).as_bytes(), Some(key.clone())).unwrap_or_else(|e| panic!("{from}..{to}: {e}"));
        assert_eq!((v.from, v.to), (from, to));
        if from > 1 {
            assert_eq!(v.consistent_from.map(|(s, _)| s), Some(from - 1));
        }
    }
}

#[test]
fn another_key_missing_lines_and_swapped_events_are_refused() {
    let other = NoteSigner::new("bundle.test", [6u8; 32]).unwrap().verifier();
    assert!(verify(bundle(1, 9).as_bytes(), Some(other)).unwrap_err().contains("another verifier key"));
    let b = bundle(1, 9);
    let lines: Vec<&str> = b.lines().collect();
    let without = |skip: usize| lines.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, l)| format!("{l}\n")).collect::<String>();
    assert!(verify(without(10).as_bytes(), None).unwrap_err().contains("seq 10") || verify(without(10).as_bytes(), None).is_err());
    assert!(verify(without(3).as_bytes(), None).unwrap_err().starts_with("seq 3"), "a missing event is named");
    let mut swapped = lines.clone();
    swapped.swap(2, 3);
    let swapped: String = swapped.iter().map(|l| format!("{l}\n")).collect();
    assert!(verify(swapped.as_bytes(), None).unwrap_err().starts_with("seq 2"));
}

/// Found by fuzzing (fuzz/regressions/bundle/): `to: u64::MAX` in the header, or a
/// consistency proof `from: u64::MAX`, overflowed the range checks (a panic in debug builds).
#[test]
fn ranges_at_the_end_of_u64_are_refused_not_overflowed() {
    let b = bundle(3, 6);
    let huge_to = b.replacen("\"to\":6}", &format!("\"to\":{}}}", u64::MAX), 1);
    assert_ne!(huge_to, b);
    let err = verify(huge_to.as_bytes(), Some(signer().verifier())).unwrap_err();
    // The header promises events up to u64::MAX: the checkpoint line stands where seq 7 must.
    assert!(err.starts_with("seq 7: not an event line"), "{err}");

    let huge_from = b.replacen("\"from\":2,", &format!("\"from\":{},", u64::MAX), 1);
    assert_ne!(huge_from, b);
    let err = verify(huge_from.as_bytes(), Some(signer().verifier())).unwrap_err();
    assert!(err.contains("the consistency proof is not from the tree before the bundle"), "{err}");
}

#[test]
fn lines_written_directly_are_the_text_of_their_json_values() {
    // Export writes each line without building a JSON value, and verification compares the
    // event's text with the directly written wire JSON before it parses anything: both rely
    // on that text being exactly what the value form prints, for every kind of event.
    for e in events() {
        let as_value = EventLine { seq: e.seq(), hash: e.hash.to_hex(), prev_hash: e.event.prev_hash.to_hex(), canonical: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &e.canonical), event: e.wire_json() };
        assert_eq!(event_line(&e), serde_json::to_string(&as_value).unwrap(), "seq {}", e.seq());
        let mut text = vec![];
        e.write_wire_json(&mut text);
        assert_eq!(String::from_utf8(text).unwrap(), serde_json::to_string(&e.wire_json()).unwrap(), "seq {}", e.seq());
        assert_eq!(e.hash.to_hex(), hex::encode(e.hash.0));
    }
}

/// Every event line of `bundle` with the keys of its event in reverse order: the same JSON
/// value, which `change` then edits (given the line's seq), written by `write` with the
/// line's keys in their order.
fn respelled(bundle: &str, write: fn(&serde_json::Value) -> String, change: impl Fn(u64, &mut serde_json::Map<String, serde_json::Value>)) -> String {
    let lines: Vec<String> = bundle
        .lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            let Some(event) = v.get("event").and_then(|e| e.as_object()) else { return line.to_string() };
            let mut reversed: serde_json::Map<String, serde_json::Value> = event.clone().into_iter().rev().collect();
            change(v["seq"].as_u64().unwrap(), &mut reversed);
            v["event"] = serde_json::Value::Object(reversed);
            write(&v)
        })
        .collect();
    lines.join("\n") + "\n"
}

/// JSON on one line with no spaces, as the exporter writes it.
fn compact(v: &serde_json::Value) -> String {
    serde_json::to_string(v).unwrap()
}

#[test]
fn a_bundle_respelled_throughout_is_still_checked_on_every_line() {
    // Past a run of 32 lines not spelled as exported, the exported-line check is tried on
    // one line in 64 only: the lines it skips must still get every check. Each line keeps
    // its canonical field where the exporter puts it, so that check decodes it and only
    // then finds the line differs.
    let all = events_cycling(300);
    let b = bundle_of(&all, 1, 300);
    let key = signer().verifier();
    let same = respelled(&b, compact, |_, _| {});
    assert_ne!(same, b);
    let verified = verify(same.as_bytes(), Some(key.clone())).unwrap();
    assert_eq!((verified.from, verified.to), (1, 300));
    // A change on a skipped line (past the run, not a multiple of 64), on a retried line,
    // and on a line tried again because one spelled as exported ended the run.
    for seq in [250, 256] {
        let changed = respelled(&b, compact, |s, e| {
            if s == seq {
                e.insert("actor".into(), "b".into());
            }
        });
        let err = verify(changed.as_bytes(), Some(key.clone())).unwrap_err();
        assert!(err.starts_with(&format!("seq {seq}: the event JSON is not what the canonical bytes say")), "{err}");
    }
    let mut lines: Vec<String> = respelled(&b, compact, |_, _| {}).lines().map(str::to_string).collect();
    // Line `seq` is line `seq` of the file (the header is line 0); 192 is a retried line.
    lines[192] = b.lines().nth(192).unwrap().to_string();
    lines[210] = lines[210].replacen("\"actor\":\"a\"", "\"actor\":\"b\"", 1);
    let err = verify((lines.join("\n") + "\n").as_bytes(), Some(key)).unwrap_err();
    assert!(err.starts_with("seq 210: the event JSON is not what the canonical bytes say"), "{err}");
}

#[test]
fn the_event_json_is_compared_as_a_value_not_as_text() {
    // The same JSON value spelled otherwise (keys in another order, spaces) verifies, as it
    // always did; any other value does not, wherever it differs.
    let key = signer().verifier();
    // With spaces: each line pretty-printed, its newlines made spaces.
    let respell = |b: &str, change: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| -> String {
        respelled(b, |v| serde_json::to_string_pretty(v).unwrap().replace('\n', " "), |_, e| change(e))
    };
    let b = bundle(1, 9);
    let same = respell(&b, &|_| {});
    assert_ne!(same, b);
    verify(same.as_bytes(), Some(key.clone())).unwrap();
    let other_actor = respell(&b, &|e| {
        e.insert("actor".into(), "b".into());
    });
    assert!(verify(other_actor.as_bytes(), Some(key.clone())).unwrap_err().contains("seq 1: the event JSON is not what the canonical bytes say"));
    let extra = respell(&b, &|e| {
        e.insert("extra".into(), 1.into());
    });
    assert!(verify(extra.as_bytes(), Some(key.clone())).unwrap_err().contains("seq 1: the event JSON is not what the canonical bytes say"));
    // A hash in uppercase is the same number, but not its one spelling.
    let upper = b.replacen(&events()[0].hash.to_hex(), &events()[0].hash.to_hex().to_uppercase(), 1);
    assert!(verify(upper.as_bytes(), Some(key)).unwrap_err().contains("seq 1: hash is not lowercase hex"));
}
