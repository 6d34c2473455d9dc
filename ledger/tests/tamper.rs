//! Any single-byte change to any stored event is found, at that event's seq.

mod common;
use common::*;
use ledger::{ChainVerifier, OpenError, VerifyError};

/// The stored records (hash ++ canonical bytes) of a small ledger.
fn records() -> Vec<Vec<u8>> {
    let (_dir, ledger) = fresh();
    append_all(&ledger, SPEC_EXAMPLES);
    append(&ledger, &small_grant("d").replace(r#""effective_date":"2026-01-01""#, r#""effective_date":"2026-12-01""#)).unwrap();
    ledger.records_after(0).map(|r| r.unwrap()).map(|r| [r.hash.0.to_vec(), r.canonical].concat()).collect()
}

fn first_failure(records: &[Vec<u8>]) -> Option<u64> {
    let mut verifier = ChainVerifier::new();
    for (i, record) in records.iter().enumerate() {
        let seq = i as u64 + 1;
        if record.len() < 32 {
            return Some(seq);
        }
        let (hash, canonical) = record.split_at(32);
        if let Err(f) = verifier.check(seq, &events::Digest(hash.try_into().unwrap()), canonical) {
            return Some(f.seq);
        }
    }
    None
}

#[test]
fn every_single_byte_change_fails_at_its_seq() {
    let records = records();
    assert_eq!(first_failure(&records), None);
    let mut checked = 0;
    for i in 0..records.len() {
        for j in 0..records[i].len() {
            for xor in [0x01u8, 0x80, 0xff] {
                let mut tampered = records.clone();
                tampered[i][j] ^= xor;
                assert_eq!(first_failure(&tampered), Some(i as u64 + 1), "record {} byte {j} ^ {xor:#x}", i + 1);
                checked += 1;
            }
        }
    }
    assert!(checked > 3000, "{checked}");
}

#[test]
fn removed_reordered_and_truncated_records_are_found() {
    let records = records();
    let mut missing = records.clone();
    missing.remove(4);
    assert_eq!(first_failure(&missing), Some(5));
    let mut swapped = records.clone();
    swapped.swap(2, 3);
    assert_eq!(first_failure(&swapped), Some(3));
    let mut short = records.clone();
    short[6].truncate(31);
    assert_eq!(first_failure(&short), Some(7));
    let mut longer = records.clone();
    longer[6].push(0);
    assert_eq!(first_failure(&longer), Some(7));
}

#[test]
fn tampering_on_disk_fails_verify_and_the_head_check_on_open() {
    let (dir, ledger) = fresh();
    append_all(&ledger, SPEC_EXAMPLES);
    drop(ledger);

    // A middle event: open succeeds (the head is intact), verify names seq 5.
    tamper_on_disk(dir.path(), 5, 40);
    let ledger = open(dir.path());
    match ledger.verify(|_| {}) {
        Err(VerifyError::Failed(f)) => assert_eq!(f.seq, 5, "{f}"),
        other => panic!("{other:?}"),
    }
    drop(ledger);

    // The last event: open itself refuses.
    tamper_on_disk(dir.path(), 9, 100);
    match ledger::Ledger::open(dir.path(), ledger::Options::default()) {
        Err(OpenError::Corrupt(f)) => assert_eq!(f.seq, 9, "{f}"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("opened a ledger with a damaged head"),
    }
}
