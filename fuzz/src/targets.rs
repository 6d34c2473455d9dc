//! The targets over parsers and verifiers. See the crate's documentation for what each checks.

use crate::params::Params;
use arbitrary::Unstructured;
use events::bundle::{self, BundleVerifier};
use events::checkpoint::{Checkpoint, NoteSigner, VerifierKey};
use events::merkle::{self, Frontier, MemoryTree};
use events::{ContractId, Currency, Date, Digest, Event, Proposal, RecordedEvent, Timestamp};
use projections::Granularity;

/// The key the seeds' notes and bundles are signed with, and the `checkpoint` target trusts.
/// A published test seed: nothing is protected by it.
pub const SIGNER_NAME: &str = "fuzz.example/ledger";
pub const SIGNER_SEED: [u8; 32] = [0x5e; 32];

pub fn signer() -> NoteSigner {
    NoteSigner::new(SIGNER_NAME, SIGNER_SEED).expect("a valid key name")
}

/// Currencies of different exponents (USD 2, JPY 0, KWD 3).
fn currencies() -> [Currency; 3] {
    ["USD", "JPY", "KWD"].map(|c| Currency::from_code(c).expect("a known currency"))
}

pub fn proposal(data: &[u8]) {
    let Ok(proposal) = Proposal::parse_json(data) else { return };
    // A batch parses its elements from JSON values: the two parsers must agree.
    let value: serde_json::Value = serde_json::from_slice(data).expect("text that parsed as a proposal is JSON");
    assert_eq!(Proposal::parse_value(value).as_ref(), Ok(&proposal), "parse_value disagrees with parse_json");
    let _ = proposal.resolve(None);
    for currency in currencies() {
        let Ok(body) = proposal.resolve(Some(currency)) else { continue };
        let event = Event {
            prev_hash: Digest([7; 32]),
            seq: 1,
            stream: proposal.stream.clone(),
            version: 1,
            effective_date: proposal.effective_date,
            recorded_at: Timestamp(1_795_000_000_000_000),
            actor: proposal.actor.clone().unwrap_or_else(|| "fuzz".into()),
            idempotency_key: proposal.idempotency_key.clone(),
            body: body.clone(),
        };
        let recorded = RecordedEvent::seal(event);
        if recorded.canonical.len() <= events::CANONICAL_LEN_MAX {
            assert_eq!(Event::decode(&recorded.canonical).as_ref(), Ok(&recorded.event), "a sealed event decodes to itself");
        }
        // What the ledger prints (log, export, HTTP) parses back to the same event.
        let printed = serde_json::to_vec(&recorded.event.to_wire()).expect("wire JSON serializes");
        let again = Proposal::parse_json(&printed).unwrap_or_else(|r| panic!("printed event does not parse: {r:?}"));
        assert_eq!(again.resolve(Some(currency)).as_ref(), Ok(&body), "printed event resolves to another body");
    }
}

pub fn canonical(data: &[u8]) {
    let Ok(event) = Event::decode(data) else { return };
    assert_eq!(event.encode(), data, "decoded bytes re-encode to themselves");
    let recorded = RecordedEvent::from_canonical(data.to_vec()).expect("bytes that decode make a recorded event");
    assert_eq!(recorded.hash, Digest::of_event(data));
    // Everything that prints a stored event must take any event that decodes.
    let line = bundle::event_line(&recorded);
    assert!(line.contains(&recorded.hash.to_hex()));
    let wire = serde_json::to_vec(&event.to_wire()).expect("wire JSON serializes");
    let _ = Proposal::parse_json(&wire);
}

pub fn bundle(data: &[u8]) {
    let Some((&options, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let key = (options & 1 == 1).then(|| signer().verifier());
    let root_at = (options & 2 == 2).then_some(u64::from(options >> 2));
    let mut verifier = BundleVerifier::new(key, root_at);
    // As `cledger verify FILE` reads it: newline-terminated lines, the first failure ends it.
    let Some(text) = text.strip_suffix('\n') else { return };
    for line in text.split('\n') {
        if verifier.line(line).is_err() {
            return;
        }
    }
    let _ = verifier.finish();
}

fn digest(u: &mut Unstructured<'_>) -> arbitrary::Result<Digest> {
    Ok(Digest(u.arbitrary()?))
}

/// Sizes near the edges of u64 as often as small ones.
fn size(u: &mut Unstructured<'_>) -> arbitrary::Result<u64> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 => u.int_in_range(0..=70)?,
        1 => u64::MAX - u.int_in_range(0..=70)?,
        2 => 1u64 << u.int_in_range(0..=63)?,
        _ => u.arbitrary()?,
    })
}

pub fn merkle(data: &[u8]) {
    let _ = merkle_checks(&mut Unstructured::new(data));
}

fn merkle_checks(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    // Arbitrary proofs of arbitrary sizes: refused or accepted, never a panic.
    let (index, tree_size, first, second) = (size(u)?, size(u)?, size(u)?, size(u)?);
    let proof_len = u.int_in_range(0..=70)?;
    let proof = (0..proof_len).map(|_| digest(u)).collect::<arbitrary::Result<Vec<_>>>()?;
    let (leaf, root_a, root_b) = (digest(u)?, digest(u)?, digest(u)?);
    let _ = merkle::verify_inclusion(&leaf, index, tree_size, &proof, &root_a);
    let _ = merkle::verify_consistency(first, second, &root_a, &root_b, &proof);

    // A real tree over distinct leaves: its proofs verify; one changed bit refuses them.
    let n = u.int_in_range(1u64..=200)?;
    let salt: u64 = u.arbitrary()?;
    let leaves: Vec<Digest> =
        (0..n).map(|i| Digest(*blake3::hash(&[salt.to_le_bytes(), i.to_le_bytes()].concat()).as_bytes())).collect();
    let mut tree = MemoryTree::new();
    let mut frontier = Frontier::new();
    for leaf in &leaves {
        tree.push(leaf);
        frontier.append(leaf);
    }
    assert_eq!(frontier.root(), merkle::root(&tree, n).unwrap(), "frontier and stored nodes agree on the root");
    let size = u.int_in_range(1..=n)?;
    assert_eq!(Frontier::load(&tree, size).unwrap().root(), merkle::root(&tree, size).unwrap());
    let index = u.int_in_range(0..=size - 1)?;
    let root = merkle::root(&tree, size).unwrap();
    let path = merkle::inclusion_proof(&tree, index, size).unwrap();
    merkle::verify_inclusion(&leaves[index as usize], index, size, &path, &root).expect("a real inclusion proof verifies");
    let other = u.int_in_range(0..=size - 1)?;
    if other != index {
        assert!(merkle::verify_inclusion(&leaves[index as usize], other, size, &path, &root).is_err(), "a proof for another index");
    }
    if !path.is_empty() {
        let mut bad = path.clone();
        let at = u.choose_index(bad.len())?;
        bad[at].0[u.int_in_range(0..=31)?] ^= 1 << u.int_in_range(0..=7)?;
        assert!(merkle::verify_inclusion(&leaves[index as usize], index, size, &bad, &root).is_err(), "a changed inclusion proof");
    }
    let first = u.int_in_range(0..=size)?;
    let first_root = merkle::root(&tree, first).unwrap();
    let path = merkle::consistency_proof(&tree, first, size).unwrap();
    merkle::verify_consistency(first, size, &first_root, &root, &path).expect("a real consistency proof verifies");
    if !path.is_empty() {
        let mut bad = path.clone();
        let at = u.choose_index(bad.len())?;
        bad[at].0[u.int_in_range(0..=31)?] ^= 1 << u.int_in_range(0..=7)?;
        assert!(merkle::verify_consistency(first, size, &first_root, &root, &bad).is_err(), "a changed consistency proof");
    }
    Ok(())
}

pub fn checkpoint(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(checkpoint) = Checkpoint::parse(text) {
        assert_eq!(checkpoint.body(), text, "a checkpoint has one spelling");
        if let Ok(signer) = NoteSigner::new(&checkpoint.origin, SIGNER_SEED) {
            assert_eq!(signer.verifier().verify(&signer.sign(&checkpoint)).as_ref(), Ok(&checkpoint), "a signed checkpoint verifies");
        }
    }
    if let Ok(key) = VerifierKey::parse(text) {
        assert_eq!(VerifierKey::parse(&key.to_string()).as_ref(), Ok(&key), "a verifier key prints and parses back");
        let _ = key.verify(text);
    }
    let trusted = signer().verifier();
    if let Ok(checkpoint) = trusted.verify(text) {
        assert_eq!(checkpoint.origin, SIGNER_NAME);
    }
}

/// The query parameters of each route that has any (api/src/server/handlers.rs, stream.rs).
const ROUTES: &[&[&str]] = &[
    &["after", "limit"],
    &["as_of", "known_at"],
    &["as_of", "known_at", "granularity"],
    &["seq", "tree_size"],
    &["from", "to"],
    &["after"],
];

pub fn query(data: &[u8]) {
    let Some((&route, rest)) = data.split_first() else { return };
    let Ok(query) = std::str::from_utf8(rest) else { return };
    let allowed = ROUTES[usize::from(route) % ROUTES.len()];
    let query = (route & 0x80 == 0).then_some(query);
    let Ok(params) = Params::parse(query, allowed) else { return };
    // Every accessor a handler applies to a parameter of that name.
    for name in allowed {
        let _ = params.u64(name);
        let _ = params.date(name);
        if let Some(value) = params.str(name) {
            assert!(query.is_some_and(|q| !q.is_empty()), "a value from an empty query");
            let _ = Granularity::parse(value);
            let _ = ContractId::parse(value);
            if let Ok(date) = Date::parse(value) {
                assert_eq!(date.to_string(), value, "a date has one spelling");
            }
        }
    }
    if let Ok(limit) = params.limit() {
        assert!((1..=crate::params::LIMIT_MAX).contains(&limit));
    }
}
