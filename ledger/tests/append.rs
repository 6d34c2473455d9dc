//! Appending: what the ledger assigns, what it persists, idempotency, batches and reads.

mod common;
use common::*;
use events::{Code, ContractId, Digest, Stream};
use ledger::{AppendError, AppendRequest, Mode};

#[test]
fn the_spec_examples_chain_with_gapless_seqs_and_versions() {
    let (dir, ledger) = fresh();
    let receipts = append_all(&ledger, SPEC_EXAMPLES);
    let seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=9).collect::<Vec<_>>());
    // The period close is ledger-wide: its own stream, version 1; the contract skips it.
    let versions: Vec<u64> = receipts.iter().map(|r| r.version).collect();
    assert_eq!(versions, [1, 2, 3, 1, 4, 5, 6, 7, 8]);
    assert_eq!(receipts[3].stream, Stream::Ledger);
    assert_eq!(receipts[0].prev_hash, Digest::ZERO);
    for pair in receipts.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert!(pair[1].recorded_at > pair[0].recorded_at);
    }
    assert_eq!(ledger.head().seq, 9);
    assert_eq!(ledger.head().hash, receipts[8].hash);

    // Everything survives a reopen, and the stored events are the receipts'.
    drop(ledger);
    let ledger = open(dir.path());
    assert_eq!(ledger.head().hash, receipts[8].hash);
    assert_eq!(ledger.verify(|_| {}).unwrap().seq, 9);
    let stored = ledger.events_after(0, 100).unwrap();
    assert_eq!(stored.len(), 9);
    for (s, r) in stored.iter().zip(&receipts) {
        assert_eq!((s.seq(), s.hash, s.event.version), (r.seq, r.hash, r.version));
        assert_eq!(Digest::of_event(&s.canonical), r.hash);
    }
    // The grant names its actor; the rest take the request's.
    assert_eq!(stored[0].event.actor, "deals@provider.example");
    assert_eq!(stored[1].event.actor, "test@example");
}

#[test]
fn reads_by_range_by_contract_and_contract_list() {
    let (_dir, ledger) = fresh();
    append(&ledger, &small_grant("b")).unwrap();
    append(&ledger, &small_grant("a")).unwrap();
    for i in 0..5 {
        let contract = if i % 2 == 0 { "a" } else { "b" };
        append(&ledger, &event(contract, "invoice_issued", "2026-02-01", &format!(r#"{{"invoice_id":"I{i}","amount":"1.00","due_date":"2026-03-01"}}"#))).unwrap();
    }
    let page: Vec<u64> = ledger.events_after(2, 3).unwrap().iter().map(|e| e.seq()).collect();
    assert_eq!(page, [3, 4, 5]);
    assert!(ledger.events_after(7, 10).unwrap().is_empty());
    let a = Stream::Contract(ContractId::parse("a").unwrap());
    let a_seqs: Vec<u64> = ledger.stream_events(&a, 0, 100).unwrap().iter().map(|e| e.seq()).collect();
    assert_eq!(a_seqs, [2, 3, 5, 7]);
    let a_after_2: Vec<u64> = ledger.stream_events(&a, 2, 1).unwrap().iter().map(|e| e.event.version).collect();
    assert_eq!(a_after_2, [3]);
    let contracts: Vec<(String, u64)> = ledger.contracts(None, 10).unwrap().into_iter().map(|(c, s)| (c.to_string(), s)).collect();
    assert_eq!(contracts, [("a".to_string(), 2), ("b".to_string(), 1)]);
    let after_a = ledger.contracts(Some(&ContractId::parse("a").unwrap()), 10).unwrap();
    assert_eq!(after_a.len(), 1);
    assert_eq!(ledger.event(7).unwrap().unwrap().seq(), 7);
    assert!(ledger.event(8).unwrap().is_none());
    assert!(ledger.event(0).unwrap().is_none());
}

#[test]
fn an_idempotency_key_replays_the_original_answer_even_after_a_restart() {
    let (dir, ledger) = fresh();
    let grant = small_grant("c");
    let first = append_keyed(&ledger, &grant, Some("grant-c")).unwrap();
    let again = append_keyed(&ledger, &grant, Some("grant-c")).unwrap();
    assert!(again.replayed && !first.replayed);
    assert_eq!((again.seq, again.hash, again.recorded_at), (first.seq, first.hash, first.recorded_at));
    assert_eq!(ledger.head().seq, 1);

    let other = event("c", "sla_credit_issued", "2026-02-01", r#"{"amount":"1.00","reason":"r"}"#);
    let r = append_keyed(&ledger, &other, Some("grant-c")).unwrap_err();
    assert_eq!(r.code, Code::IdempotencyKeyReused);
    assert_eq!(ledger.head().seq, 1);

    drop(ledger);
    let ledger = open(dir.path());
    let after_restart = append_keyed(&ledger, &grant, Some("grant-c")).unwrap();
    assert_eq!((after_restart.seq, after_restart.hash, after_restart.replayed), (1, first.hash, true));
    assert_eq!(append_keyed(&ledger, &other, Some("grant-c")).unwrap_err().code, Code::IdempotencyKeyReused);
    // The key is in the envelope, so it is part of the hashed history.
    assert_eq!(ledger.event(1).unwrap().unwrap().event.idempotency_key.as_deref(), Some("grant-c"));
}

#[test]
fn a_key_in_the_body_and_a_different_one_in_the_header_are_refused() {
    let (_dir, ledger) = fresh();
    let grant = small_grant("c").replace(r#""type":"lease_granted","#, r#""type":"lease_granted","idempotency_key":"body-key","#);
    let r = append_keyed(&ledger, &grant, Some("header-key")).unwrap_err();
    assert_eq!((r.code, r.field.as_deref()), (Code::InvalidValue, Some("idempotency_key")));
    assert_eq!(append_keyed(&ledger, &grant, Some("body-key")).unwrap().seq, 1);
    assert!(append_keyed(&ledger, &grant, None).unwrap().replayed, "the body's key alone replays too");
}

#[test]
fn an_atomic_batch_is_all_or_nothing() {
    let (_dir, ledger) = fresh();
    let good = [
        small_grant("c"),
        event("c", "invoice_issued", "2026-02-01", r#"{"invoice_id":"I","amount":"100.00","due_date":"2026-03-01"}"#),
        event("c", "payment_received", "2026-02-10", r#"{"payment_id":"P","amount":"40.00","invoice_id":"I"}"#),
    ];
    let bad = event("c", "payment_received", "2026-02-11", r#"{"payment_id":"Q","amount":"60.01","invoice_id":"I"}"#);
    let batch = |lines: &[String], key: Option<&str>| AppendRequest {
        events: lines.iter().map(|l| proposal(l)).collect(),
        mode: Mode::Atomic,
        idempotency_key: key.map(str::to_string),
        actor: "batch@example".into(),
    };
    let mut with_bad = good.to_vec();
    with_bad.push(bad);
    match ledger.append(batch(&with_bad, Some("b1"))) {
        Err(AppendError::Rejected { index, rejection }) => {
            assert_eq!((index, rejection.code), (3, Code::PaymentExceedsInvoice))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ledger.head().seq, 0);
    assert!(ledger.contract_state(&ContractId::parse("c").unwrap()).unwrap().is_none());
    // The refused batch did not consume its key.
    let appended = ledger.append(batch(&good, Some("b1"))).unwrap();
    assert_eq!(appended.receipts.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    let replay = ledger.append(batch(&good, Some("b1"))).unwrap();
    assert!(replay.receipts.iter().all(|r| r.replayed));
    assert_eq!(replay.receipts.iter().map(|r| r.hash).collect::<Vec<_>>(), appended.receipts.iter().map(|r| r.hash).collect::<Vec<_>>());
    assert!(matches!(ledger.append(batch(&[], None)), Err(AppendError::RequestRefused(rejection)) if rejection.code == Code::EmptyBatch));
}

#[test]
fn prefix_mode_appends_up_to_the_first_refusal_and_replays_keyed_lines() {
    let (_dir, ledger) = fresh();
    let keyed = |line: String, key: &str| line.replacen(r#""type""#, &format!(r#""idempotency_key":"{key}","type""#), 1);
    let lines = [
        keyed(small_grant("c"), "line-1"),
        keyed(event("c", "invoice_issued", "2026-02-01", r#"{"invoice_id":"I","amount":"100.00","due_date":"2026-03-01"}"#), "line-2"),
        keyed(event("c", "milestone_reached", "2026-02-01", r#"{"milestone":"nope","outcome":"achieved"}"#), "line-3"),
        keyed(event("c", "sla_credit_issued", "2026-02-01", r#"{"amount":"1.00","reason":"r"}"#), "line-4"),
    ];
    let request = AppendRequest { events: lines.iter().map(|l| proposal(l)).collect(), mode: Mode::Prefix, idempotency_key: None, actor: "import".into() };
    let first = ledger.append(request.clone()).unwrap();
    assert_eq!(first.receipts.len(), 2);
    let (index, rejection) = first.refused.unwrap();
    assert_eq!((index, rejection.code), (2, Code::UnknownMilestone));
    assert_eq!(ledger.head().seq, 2);
    // Running the same import again replays lines 1 and 2 and stops at line 3 again.
    let second = ledger.append(request).unwrap();
    assert!(second.receipts.iter().all(|r| r.replayed));
    assert_eq!(second.refused.unwrap().0, 2);
    assert_eq!(ledger.head().seq, 2);
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let (dir, _ledger) = fresh();
    match ledger::Ledger::open(dir.path(), ledger::Options::default()) {
        Err(ledger::OpenError::Locked(_)) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("opened twice"),
    }
}

#[test]
fn a_closed_ledger_refuses_writes_and_keeps_reading() {
    let (_dir, ledger) = fresh();
    append(&ledger, &small_grant("c")).unwrap();
    ledger.close();
    assert!(matches!(ledger.append(AppendRequest::one(proposal(&small_grant("d")), "a")), Err(AppendError::Stopped(None))));
    assert_eq!(ledger.events_after(0, 10).unwrap().len(), 1);
}
