//! `cledger migrate`: a store of format 1 becomes format 2 with the same chain, keys,
//! contract index, checkpoint and signing key; a damaged one is refused at its seq and left
//! as it was.

mod common;
use common::*;
use events::merkle::MemoryTree;
use events::{Proposal, RecordedEvent, Stream, Timestamp};
use ledger::{AppendRequest, KeyRecord, Ledger, Mode, OpenError};
use projections::Book;
use std::path::Path;

/// The events of a format-1 store: the SPEC examples and more, one of them keyed.
fn chain() -> (Vec<RecordedEvent>, Proposal) {
    let mut book = Book::new();
    let mut out = vec![];
    // After the examples' period close (2026-06-30).
    let grant = small_grant("keyed").replace(r#""effective_date":"2026-01-01""#, r#""effective_date":"2026-07-01""#);
    let keyed = proposal(&grant.replacen('{', r#"{"idempotency_key":"k-1","#, 1));
    let lines: Vec<String> = SPEC_EXAMPLES.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    for (i, line) in lines.iter().enumerate() {
        out.push(book.propose(&proposal(line), "old@example", Timestamp(1_795_824_000_000_000 + i as i64)).unwrap());
    }
    out.push(book.propose(&keyed, "old@example", Timestamp(1_795_824_100_000_000)).unwrap());
    for i in 0..300 {
        let p = proposal(&event("keyed", "invoice_issued", "2026-08-01", &format!(r#"{{"invoice_id":"I{i}","amount":"1.00","due_date":"2026-03-01"}}"#)));
        out.push(book.propose(&p, "old@example", Timestamp(1_795_824_200_000_000 + i)).unwrap());
    }
    (out, keyed)
}

/// Writes a store exactly as format 1 laid it out (docs/FORMAT.md, "Store, format 1").
fn write_format_1(dir: &Path, chain: &[RecordedEvent], keyed: &Proposal) {
    let db = raw_sled(dir);
    let tree = db.open_tree("ledger").unwrap();
    let mut tree_nodes = MemoryTree::new();
    let mut frontier = events::merkle::Frontier::new();
    for e in chain {
        let mut key = vec![b'E'];
        key.extend_from_slice(&e.event.seq.to_be_bytes());
        tree.insert(key, [e.hash.0.to_vec(), e.canonical.clone()].concat()).unwrap();
        let id = e.event.stream.contract_id().map_or("", |c| c.as_str());
        let mut index = vec![b'S', id.len() as u8];
        index.extend_from_slice(id.as_bytes());
        index.extend_from_slice(&e.event.version.to_be_bytes());
        tree.insert(index, &e.event.seq.to_be_bytes()).unwrap();
        if let (Stream::Contract(c), 1) = (&e.event.stream, e.event.version) {
            tree.insert([&[b'C'][..], c.as_str().as_bytes()].concat(), &e.event.seq.to_be_bytes()).unwrap();
        }
        frontier.push(&e.hash, |level, index, node| {
            if level > 0 {
                let mut key = vec![b'T', level as u8];
                key.extend_from_slice(&index.to_be_bytes());
                tree.insert(key, &node.0).unwrap();
            }
        });
        tree_nodes.push(&e.hash);
    }
    let grant = chain.iter().find(|e| e.event.idempotency_key.as_deref() == Some("k-1")).unwrap();
    let record = KeyRecord { fingerprint: ledger::fingerprint("old@example", std::slice::from_ref(keyed)), first_seq: grant.event.seq, count: 1 };
    tree.insert(b"Ik-1", record.to_bytes().to_vec()).unwrap();
    let last = chain.last().unwrap();
    tree.insert(b"Mhead", [last.event.seq.to_be_bytes().to_vec(), last.hash.0.to_vec()].concat()).unwrap();
    tree.insert(b"Mtree", &last.event.seq.to_be_bytes()).unwrap();
    tree.insert(b"Mformat", &1u32.to_be_bytes()).unwrap();
    tree.insert(b"Mcheckpoint", b"old checkpoint note".as_slice()).unwrap();
    db.open_tree("views").unwrap().insert(b"Mformat", &1u32.to_be_bytes()).unwrap();
    db.flush().unwrap();
    std::fs::write(dir.join("checkpoint-signing.key"), "07".repeat(32) + "\n").unwrap();
}

#[test]
fn a_format_1_store_migrates_with_its_chain_keys_and_signing_key() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let (chain, keyed) = chain();
    write_format_1(&dir, &chain, &keyed);

    // Opening it without migrating says what to do.
    match Ledger::open(&dir, ledger::Options::default()) {
        Err(e @ OpenError::Format { .. }) => assert!(e.to_string().contains("cledger migrate"), "{e}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened a format-1 store"),
    }
    let report = ledger::migrate::migrate(&dir, |_| {}).unwrap();
    assert_eq!(report.events, chain.len() as u64);
    assert_eq!(report.backup, parent.path().join("data.format-1"));
    assert!(report.backup.join("db").exists(), "the old store is kept");

    let ledger = open(&dir);
    assert_eq!(ledger.head().seq, chain.len() as u64);
    assert_eq!(ledger.verify(|_| {}).unwrap().hash, chain.last().unwrap().hash);
    let stored = ledger.events_after(0, 10_000).unwrap();
    assert_eq!(stored.iter().map(|e| (e.hash, e.canonical.clone())).collect::<Vec<_>>(), chain.iter().map(|e| (e.hash, e.canonical.clone())).collect::<Vec<_>>());
    let mut tree = MemoryTree::new();
    chain.iter().for_each(|e| tree.push(&e.hash));
    assert_eq!(ledger.merkle_root(chain.len() as u64).unwrap(), tree.root());
    // The key replays; the contract index, checkpoint and signing key came along.
    let retry = ledger.append(AppendRequest { events: vec![keyed], mode: Mode::Atomic, idempotency_key: None, actor: "old@example".into() }).unwrap();
    assert!(retry.receipts[0].replayed);
    assert_eq!(ledger.contracts(None, 10).unwrap().len(), 2);
    assert_eq!(ledger.latest_checkpoint().err().map(|_| ()), Some(()), "the old note is carried as it was (not a valid note here)");
    assert_eq!(std::fs::read_to_string(dir.join("checkpoint-signing.key")).unwrap(), "07".repeat(32) + "\n");
    // The views were rebuilt: the live state folds the old events.
    let id = events::ContractId::parse("keyed").unwrap();
    let at = ledger.as_of(events::Date::parse("2026-12-31").unwrap(), None).unwrap();
    assert_eq!(ledger.with_contract(&id, &at, |s| s.version).unwrap(), Some(301));
    assert_eq!(ledger.stream_events(&Stream::Contract(id), 299, 10).unwrap().len(), 2);
    drop(ledger);
    assert!(matches!(ledger::migrate::migrate(&dir, |_| {}), Err(ledger::migrate::MigrateError::LeftOver(_))), "the backup must be removed first");
}

#[test]
fn a_damaged_format_1_store_is_refused_at_its_seq_and_left_as_it_was() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let (chain, keyed) = chain();
    write_format_1(&dir, &chain, &keyed);
    {
        let db = raw_sled(&dir);
        let tree = db.open_tree("ledger").unwrap();
        let mut key = vec![b'E'];
        key.extend_from_slice(&7u64.to_be_bytes());
        let mut record = tree.get(&key).unwrap().unwrap().to_vec();
        record[40] ^= 1;
        tree.insert(key, record).unwrap();
        db.flush().unwrap();
    }
    match ledger::migrate::migrate(&dir, |_| {}) {
        Err(ledger::migrate::MigrateError::Verify(f)) => assert_eq!(f.seq, 7, "{f}"),
        other => panic!("{other:?}"),
    }
    assert!(!parent.path().join("data.migrating").exists(), "the half-made copy is removed");
    assert!(!parent.path().join("data.format-1").exists());
    assert!(matches!(Ledger::open(&dir, ledger::Options::default()), Err(OpenError::Format { .. })), "the old store is untouched");
}
