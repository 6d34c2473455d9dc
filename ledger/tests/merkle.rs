//! The Merkle tree kept in sled: roots and proofs at every size agree with a tree built in
//! memory from the event hashes; a store without tree nodes gets them built on open.

mod common;
use common::*;
use events::merkle::{self, MemoryTree};

fn grow(ledger: &ledger::Ledger, n: usize) {
    append(ledger, &small_grant("m")).unwrap();
    for i in 1..n {
        append(ledger, &event("m", "invoice_issued", "2026-02-01", &format!(r#"{{"invoice_id":"I{i}","amount":"1.00","due_date":"2026-03-01"}}"#))).unwrap();
    }
}

/// `n` events (a grant and invoices) in atomic batches of up to 100.
fn grow_in_batches(ledger: &ledger::Ledger, n: usize) {
    append(ledger, &small_grant("m")).unwrap();
    let invoices: Vec<_> = (1..n)
        .map(|i| proposal(&event("m", "invoice_issued", "2026-02-01", &format!(r#"{{"invoice_id":"I{i}","amount":"1.00","due_date":"2026-03-01"}}"#))))
        .collect();
    for chunk in invoices.chunks(100) {
        ledger.append(ledger::AppendRequest { events: chunk.to_vec(), mode: ledger::Mode::Atomic, idempotency_key: None, actor: "t".into() }).unwrap();
    }
}

fn memory_tree(ledger: &ledger::Ledger) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for e in ledger.events_after(0, 10_000).unwrap() {
        tree.push(&e.hash);
    }
    tree
}

#[test]
fn stored_roots_and_proofs_match_the_memory_tree() {
    let (_dir, ledger) = fresh();
    assert_eq!(ledger.merkle_root(0).unwrap(), merkle::empty_root());
    grow(&ledger, 70);
    let memory = memory_tree(&ledger);
    let hashes: Vec<_> = ledger.events_after(0, 100).unwrap().iter().map(|e| e.hash).collect();
    for size in 1..=70u64 {
        let root = ledger.merkle_root(size).unwrap();
        assert_eq!(root, merkle::root(&memory, size).unwrap(), "size {size}");
        for seq in 1..=size {
            let proof = ledger.inclusion_proof(seq, size).unwrap();
            merkle::verify_inclusion(&hashes[seq as usize - 1], seq - 1, size, &proof, &root).unwrap();
        }
        for from in 0..=size {
            let proof = ledger.consistency_proof(from, size).unwrap();
            merkle::verify_consistency(from, size, &ledger.merkle_root(from).unwrap(), &root, &proof).unwrap();
        }
    }
    assert!(ledger.merkle_root(71).is_err());
    assert!(ledger.inclusion_proof(0, 5).is_err());
    assert!(ledger.inclusion_proof(6, 5).is_err());
    assert!(ledger.consistency_proof(6, 5).is_err());
}

#[test]
fn a_store_without_tree_nodes_gets_them_on_open() {
    let (dir, ledger) = fresh();
    grow_in_batches(&ledger, 600);
    let root = ledger.merkle_root(600).unwrap();
    drop(ledger);
    {
        let db = raw_sled(dir.path());
        let tree = db.open_tree("ledger").unwrap();
        let keys: Vec<_> = tree.scan_prefix(b"T").keys().map(|k| k.unwrap()).collect();
        // Nodes are stored from level 8 up: two of level 8 (256 leaves each), one of level 9;
        // the rest are recomputed from the blocks' event hashes.
        assert_eq!(keys.len(), 3);
        for k in keys {
            tree.remove(k).unwrap();
        }
        tree.remove(b"Mtree").unwrap();
        db.flush().unwrap();
    }
    let ledger = open(dir.path());
    assert_eq!(ledger.merkle_root(600).unwrap(), root);
    append(&ledger, &event("m", "invoice_issued", "2026-02-01", r#"{"invoice_id":"X","amount":"1.00","due_date":"2026-03-01"}"#)).unwrap();
    assert_eq!(ledger.merkle_root(601).unwrap(), memory_tree(&ledger).root());
}
