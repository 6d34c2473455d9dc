//! Test vectors for other implementations: every SPEC wire example, chained as the ledger
//! would store it, with its canonical bytes and hash; and byte strings that must be refused.
//!
//! `testdata/vectors/events.json` is checked in. This test recomputes it and fails on any
//! difference; `UPDATE_EXPECT=1 cargo test -p events --test vectors` rewrites it, which
//! should only ever be needed when a vector is added, never because an old one changed.

use events::*;
use serde_json::json;
use std::collections::HashMap;

const SPEC_EXAMPLES: &str = include_str!("../../examples/colossus.ndjson");
const DEFAULT_ACTOR: &str = "vectors@compute-ledger.example";
/// 2026-11-28T00:00:00Z in microseconds; event `seq` is recorded `seq` seconds later.
const BASE_MICROS: i64 = 1_795_824_000_000_000;

fn chain() -> Vec<(serde_json::Value, RecordedEvent)> {
    let mut versions: HashMap<Stream, u64> = HashMap::new();
    let mut currencies: HashMap<Stream, Currency> = HashMap::new();
    let mut prev_hash = Digest::ZERO;
    let mut out = vec![];
    for (i, line) in SPEC_EXAMPLES.lines().enumerate() {
        let seq = i as u64 + 1;
        let proposal = Proposal::parse_json(line.as_bytes()).unwrap();
        let body = proposal.resolve(currencies.get(&proposal.stream).copied()).unwrap();
        if let Some(c) = body.currency() {
            currencies.entry(proposal.stream.clone()).or_insert(c);
        }
        let version = versions.entry(proposal.stream.clone()).or_default();
        *version += 1;
        let recorded = RecordedEvent::seal(Event {
            prev_hash,
            seq,
            stream: proposal.stream.clone(),
            version: *version,
            effective_date: proposal.effective_date,
            recorded_at: Timestamp(BASE_MICROS + seq as i64 * 1_000_000),
            actor: proposal.actor.clone().unwrap_or_else(|| DEFAULT_ACTOR.to_string()),
            idempotency_key: proposal.idempotency_key.clone(),
            body,
        });
        prev_hash = recorded.hash;
        out.push((serde_json::from_str(line).unwrap(), recorded));
    }
    out
}

#[test]
fn event_vectors_match_the_checked_in_file() {
    let events: Vec<_> = chain()
        .into_iter()
        .map(|(wire, r)| {
            json!({
                "seq": r.event.seq,
                "version": r.event.version,
                "recorded_at": r.event.recorded_at.to_rfc3339(),
                "actor": r.event.actor,
                "prev_hash": r.event.prev_hash.to_hex(),
                "wire": wire,
                "canonical_hex": hex::encode(&r.canonical),
                "hash": r.hash.to_hex(),
            })
        })
        .collect();

    let first = chain().remove(0).1.canonical;
    let mut overlong = first[..32].to_vec();
    overlong.extend([0x81, 0x00]);
    overlong.extend(&first[33..]);
    let mut trailing = first.clone();
    trailing.push(0);
    let mut future = first.clone();
    future[33] = 2;
    let refused = [
        ("seq 1 written as the overlong varint 81 00", overlong, DecodeError::NotCanonical),
        ("one byte after the end of the event", trailing, DecodeError::TrailingBytes(1)),
        ("envelope format 2, unknown to format-1 readers", future, DecodeError::UnknownFormat(2)),
    ];
    let refused: Vec<_> = refused
        .into_iter()
        .map(|(why, bytes, error)| {
            assert_eq!(Event::decode(&bytes), Err(error.clone()), "{why}");
            json!({"why": why, "canonical_hex": hex::encode(&bytes), "error": error.to_string()})
        })
        .collect();

    let document = json!({
        "about": "compute-ledger event test vectors: the wire examples of SPEC section 3, chained from seq 1. \
                  canonical_hex is the postcard encoding of the envelope (docs/FORMAT.md); \
                  hash = BLAKE3 derive_key(context, canonical bytes). Amounts are in the grant's currency (USD). \
                  Events without an actor in the wire JSON carry the default actor below.",
        "hash_context": EVENT_HASH_CONTEXT,
        "default_actor": DEFAULT_ACTOR,
        "events": events,
        "refused": refused,
    });
    let text = serde_json::to_string_pretty(&document).unwrap() + "\n";
    expect_test::expect_file!["../../testdata/vectors/events.json"].assert_eq(&text);
}

#[test]
fn the_first_vector_by_hand() {
    // The grant: prev_hash is 32 zero bytes, then seq 1 (0x01), format 1 (0x01), then
    // contract_id Some (0x01) of length 10 (0x0a) "colossus-1", version 1 (0x01), and the
    // effective date 2026-05-01: year 2026 = 0xea 0x0f as LEB128, month 0x05, day 0x01.
    let first = chain().remove(0).1;
    let expected_prefix = [
        vec![0u8; 32],
        vec![0x01, 0x01, 0x01, 0x0a],
        b"colossus-1".to_vec(),
        vec![0x01, 0xea, 0x0f, 0x05, 0x01],
    ]
    .concat();
    assert_eq!(&first.canonical[..expected_prefix.len()], &expected_prefix[..]);
    let mut hasher = blake3::Hasher::new_derive_key("compute-ledger 2026-11 event v1");
    hasher.update(&first.canonical);
    assert_eq!(first.hash.0, *hasher.finalize().as_bytes());
}

/// Merkle and checkpoint vectors over the same nine events: roots at every size, every
/// inclusion and consistency proof, and a checkpoint signed by a published test key.
#[test]
fn merkle_and_checkpoint_vectors_match_the_checked_in_file() {
    use events::checkpoint::{Checkpoint, NoteSigner};
    use events::merkle::{self, MemoryTree};
    let hashes: Vec<Digest> = chain().into_iter().map(|(_, r)| r.hash).collect();
    let mut tree = MemoryTree::new();
    for h in &hashes {
        tree.push(h);
    }
    let n = hashes.len() as u64;
    let roots: Vec<_> = (0..=n).map(|size| json!({"tree_size": size, "root": merkle::root(&tree, size).unwrap().to_hex()})).collect();
    let mut inclusion = vec![];
    let mut consistency = vec![];
    for size in 1..=n {
        for seq in 1..=size {
            let proof = merkle::inclusion_proof(&tree, seq - 1, size).unwrap();
            inclusion.push(json!({"seq": seq, "leaf_index": seq - 1, "tree_size": size, "hashes": events::bundle::hexes(&proof)}));
        }
        for from in 0..=size {
            let proof = merkle::consistency_proof(&tree, from, size).unwrap();
            consistency.push(json!({"from": from, "to": size, "hashes": events::bundle::hexes(&proof)}));
        }
    }
    // A test key, published here on purpose: never use it for anything else.
    let seed = [0x42u8; 32];
    let signer = NoteSigner::new("vectors.compute-ledger.example", seed).unwrap();
    let checkpoint = Checkpoint { origin: signer.name().into(), size: n, root: merkle::root(&tree, n).unwrap() };
    let note = signer.sign(&checkpoint);
    assert_eq!(signer.verifier().verify(&note).unwrap(), checkpoint);
    let document = json!({
        "about": "Merkle tree (RFC 9162 shape, BLAKE3: leaf = H(0x00 || event hash), node = H(0x01 || left || right), empty = H()) \
                  over the event hashes of events.json, and a checkpoint of it signed as a C2SP signed note with Ed25519. \
                  The signing seed is a published TEST key.",
        "leaves": events::bundle::hexes(&hashes),
        "roots": roots,
        "inclusion_proofs": inclusion,
        "consistency_proofs": consistency,
        "checkpoint": {
            "test_signing_seed_hex": hex::encode(seed),
            "verifier_key": signer.verifier().to_string(),
            "text": checkpoint.body(),
            "note": note,
        },
    });
    let text = serde_json::to_string_pretty(&document).unwrap() + "\n";
    expect_test::expect_file!["../../testdata/vectors/merkle.json"].assert_eq(&text);
}

/// Witness vectors (C2SP tlog-witness and tlog-cosignature) over the checkpoint of
/// merkle.json: a witness key from a published TEST seed, the cosignature/v1 signed message
/// and line at a fixed time, the cosigned note, and an add-checkpoint request from size 5
/// with its consistency proof. Ed25519 is deterministic, so every byte is pinned.
#[test]
fn witness_vectors_match_the_checked_in_file() {
    use events::checkpoint::{Checkpoint, Note, NoteSigner};
    use events::cosignature::{self, Cosigner, WitnessPolicy};
    use events::merkle::{self, MemoryTree};
    use events::witness::{self, AddCheckpoint, Latest};
    let hashes: Vec<Digest> = chain().into_iter().map(|(_, r)| r.hash).collect();
    let mut tree = MemoryTree::new();
    for h in &hashes {
        tree.push(h);
    }
    let log = NoteSigner::new("vectors.compute-ledger.example", [0x42; 32]).unwrap();
    let checkpoint = Checkpoint { origin: log.name().into(), size: 9, root: merkle::root(&tree, 9).unwrap() };
    let note = log.sign(&checkpoint);
    // TEST keys, published here on purpose: never use them for anything else.
    let witness_seed = [0x57u8; 32];
    let witness = Cosigner::new("witness.compute-ledger.example/w1", witness_seed).unwrap();
    let timestamp = 1_795_824_000u64;
    let line = witness.cosign(&checkpoint, timestamp);
    let cosigned = cosignature::attach(&Note::parse(&note).unwrap(), std::slice::from_ref(&line));
    let policy = WitnessPolicy::new(vec![witness.verifier()], 1).unwrap();
    assert_eq!(policy.check(&cosigned).unwrap()[0].timestamp, timestamp);
    assert_eq!(log.verifier().verify(&cosigned.to_string()).unwrap(), checkpoint);
    // The request a log sends a witness that last cosigned size 5, and the witness's answer.
    let request = AddCheckpoint::new(5, merkle::consistency_proof(&tree, 5, 9).unwrap(), &note).unwrap();
    let latest = Latest { size: 5, root: merkle::root(&tree, 5).unwrap() };
    assert_eq!(witness::decide(&[log.verifier()], Some(latest), &request).unwrap(), checkpoint);
    assert_eq!(AddCheckpoint::parse(request.body().as_bytes()).unwrap(), request);
    let document = json!({
        "about": "C2SP witness vectors over the checkpoint of merkle.json: a cosignature/v1 (Ed25519, signature type 0x04) \
                  by a witness whose signing seed is a published TEST key, at a fixed POSIX time; the cosigned note; and \
                  the add-checkpoint request of a log to a witness that last cosigned size 5 (its consistency proof is \
                  RFC 9162's over the BLAKE3 tree of FORMAT.md section 5).",
        "log_verifier_key": log.verifier().to_string(),
        "witness": {
            "test_signing_seed_hex": hex::encode(witness_seed),
            "name": witness.name(),
            "verifier_key": witness.verifier().to_string(),
            "key_id_hex": hex::encode(witness.verifier().key_id()),
        },
        "timestamp": timestamp,
        "signed_message": cosignature::signed_message(&checkpoint.body(), timestamp),
        "cosignature_line": line.line(),
        "cosigned_note": cosigned.to_string(),
        "add_checkpoint": {
            "witness_latest_size": 5,
            "witness_latest_root": latest.root.to_hex(),
            "request_body": request.body(),
            "response_body": witness::response_body(&[line]),
        },
    });
    let text = serde_json::to_string_pretty(&document).unwrap() + "\n";
    expect_test::expect_file!["../../testdata/vectors/witness.json"].assert_eq(&text);
}

/// Cross-checks with other implementations' published values: a real witness's vkey (type
/// 0x04; its key id is SHA-256(name || "\n" || 0x04 || key)[:4]) from transparency-dev's
/// note tests parses, and a cosignature blob from the same tests carries its timestamp as
/// the 8 big-endian bytes after the key id.
#[test]
fn witness_keys_and_timestamps_agree_with_other_implementations() {
    use events::checkpoint::NoteSignature;
    use events::cosignature::WitnessKey;
    let key = WitnessKey::parse("remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2").unwrap();
    assert_eq!(hex::encode(key.key_id()), "da77ade7");
    assert_eq!(key.name, "remora.n621.de");
    let line = NoteSignature::parse_line("\u{2014} w ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==").unwrap();
    assert_eq!(hex::encode(line.key_id), "646846b9");
    assert_eq!(u64::from_be_bytes(line.signature[..8].try_into().unwrap()), 1_727_964_367);
    assert_eq!(line.signature.len(), 8 + 64);
}
