//! Concurrent writers with `expected_version`: exactly one wins each version, no gap, no fork.

mod common;
use common::*;
use events::{Code, ContractId, Stream};
use ledger::{AppendError, AppendRequest};
use std::collections::BTreeMap;
use std::sync::Arc;

const WRITERS: usize = 16;
const WINS_PER_WRITER: usize = 20;

#[test]
fn racing_writers_get_one_winner_per_version() {
    let (_dir, ledger) = fresh();
    let ledger = Arc::new(ledger);
    append(&ledger, &small_grant("c")).unwrap();
    let id = ContractId::parse("c").unwrap();
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let ledger = ledger.clone();
            let id = id.clone();
            std::thread::spawn(move || {
                let (mut wins, mut conflicts) = (vec![], 0usize);
                while wins.len() < WINS_PER_WRITER {
                    let version = ledger.contract_state(&id).unwrap().unwrap().version;
                    let json = format!(
                        r#"{{"contract_id":"c","type":"invoice_issued","effective_date":"2026-02-01","expected_version":{version},"data":{{"invoice_id":"W{w}-{}","amount":"1.00","due_date":"2026-03-01"}}}}"#,
                        wins.len()
                    );
                    match ledger.append(AppendRequest::one(proposal(&json), "racer")) {
                        Ok(a) => {
                            assert_eq!(a.receipts[0].version, version + 1);
                            wins.push(a.receipts[0].clone());
                        }
                        Err(AppendError::Rejected { rejection, .. }) => {
                            assert_eq!(rejection.code, Code::VersionConflict);
                            assert!(rejection.current_version.unwrap() > version);
                            conflicts += 1;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                (wins, conflicts)
            })
        })
        .collect();
    let mut by_version = BTreeMap::new();
    let mut conflicts = 0;
    for t in threads {
        let (wins, c) = t.join().unwrap();
        conflicts += c;
        for r in wins {
            assert!(by_version.insert(r.version, r.seq).is_none(), "two winners for version {}", r.version);
        }
    }
    let total = WRITERS * WINS_PER_WRITER;
    // Versions 2..=total+1 each won once, by seqs 2..=total+1: no gap, no fork.
    assert_eq!(by_version.keys().copied().collect::<Vec<_>>(), (2..=total as u64 + 1).collect::<Vec<_>>());
    assert_eq!(by_version.values().copied().collect::<Vec<_>>(), (2..=total as u64 + 1).collect::<Vec<_>>());
    assert_eq!(ledger.verify(|_| {}).unwrap().seq, total as u64 + 1);
    let stored = ledger.stream_events(&Stream::Contract(id), 0, 10_000).unwrap();
    assert_eq!(stored.len(), total + 1);
    eprintln!("{conflicts} conflicts, {} commits for {} events", ledger.counters().commits.load(std::sync::atomic::Ordering::Relaxed), total + 1);
}
