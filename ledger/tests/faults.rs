//! The writer under faults: what is acknowledged when a commit fails, and what happens when
//! the writer panics (issue 9, defects 1 and 2). The full sweep over every durable-path
//! operation is in tests/tests/fault_sweep.rs.

mod common;
use common::*;
use events::Timestamp;
use ledger::io::{FaultAction, FaultPlan, Op};
use ledger::{AppendError, AppendRequest, FailureKind, Ledger, Mode, Options};
use std::sync::{Arc, Condvar, Mutex};

/// A clock whose first reading waits until the test opens the gate, so the test can queue
/// requests behind the writer's first group and have them decided together in the next.
struct Gate {
    state: Mutex<(bool, bool)>, // (entered, open)
    changed: Condvar,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate { state: Mutex::new((false, false)), changed: Condvar::new() })
    }

    fn clock(self: &Arc<Gate>) -> Arc<dyn Fn() -> Timestamp + Send + Sync> {
        let gate = self.clone();
        let tick = ticking_clock();
        Arc::new(move || {
            let mut state = gate.state.lock().unwrap();
            state.0 = true;
            gate.changed.notify_all();
            while !state.1 {
                state = gate.changed.wait(state).unwrap();
            }
            tick()
        })
    }

    fn wait_entered(&self) {
        let mut state = self.state.lock().unwrap();
        while !state.0 {
            state = self.changed.wait(state).unwrap();
        }
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

fn keyed(json: &str, key: &str) -> AppendRequest {
    AppendRequest { events: vec![proposal(json)], mode: Mode::Atomic, idempotency_key: Some(key.into()), actor: "t@example".into() }
}

#[test]
fn a_retry_staged_in_the_same_failed_group_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::new();
    // Opening a new store saves its (empty) views: operation 1. Group 1 (the first grant)
    // runs commit batch, flush, sync: operations 2-4. Group 2 holds the keyed request and
    // its retry; its commit batch, operation 5, fails.
    let options = Options {
        clock: gate.clock(),
        faults: Some(FaultPlan { nth: 5, action: FaultAction::Error }),
        record_io: true,
        ..Options::default()
    };
    let ledger = Ledger::open(dir.path(), options).unwrap();
    let first = ledger.submit(AppendRequest::one(proposal(&small_grant("first")), "t")).unwrap();
    gate.wait_entered();
    let original = ledger.submit(keyed(&small_grant("x"), "key-x")).unwrap();
    let retry = ledger.submit(keyed(&small_grant("x"), "key-x")).unwrap();
    gate.open();

    assert_eq!(first.recv().unwrap().unwrap().receipts[0].seq, 1);
    let original = original.recv().unwrap();
    let retry = retry.recv().unwrap();
    assert!(matches!(&original, Err(AppendError::Stopped(Some(f))) if f.kind == FailureKind::Commit), "{original:?}");
    // Before the fix this was Ok(receipt of seq 2, replayed): acknowledged, never durable.
    assert!(matches!(&retry, Err(AppendError::Stopped(Some(f))) if f.kind == FailureKind::Commit), "{retry:?}");
    assert_eq!(ledger.io_trace(), [Op::OpenBatch, Op::CommitBatch, Op::Flush, Op::SyncLog, Op::CommitBatch]);
    assert_eq!(ledger.head().seq, 1, "the failed group is not durable");
    let failure = ledger.failure().expect("the failure is recorded");
    assert!(failure.reason.contains("injected fault"), "{}", failure.reason);
    // The writer stopped for good: a later request is refused, not queued forever.
    let later = ledger.append(AppendRequest::one(proposal(&small_grant("y")), "t"));
    assert!(matches!(later, Err(AppendError::Stopped(Some(_)))), "{later:?}");
    drop(ledger);

    // After a restart the key is unused: the request appends anew, at seq 2.
    let ledger = open(dir.path());
    assert_eq!(ledger.head().seq, 1);
    let appended = ledger.append(keyed(&small_grant("x"), "key-x")).unwrap();
    assert_eq!((appended.receipts[0].seq, appended.receipts[0].replayed), (2, false));
    assert_eq!(ledger.verify(|_| {}).unwrap().seq, 2);
}

#[test]
fn a_panicking_writer_records_why_answers_everyone_and_refuses_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    append(&open(dir.path()), &small_grant("before")).unwrap();
    // Operation 1 after the reopen is the next commit's batch: the writer panics there.
    let options = Options { clock: ticking_clock(), faults: Some(FaultPlan { nth: 1, action: FaultAction::Panic }), ..Options::default() };
    let ledger = Ledger::open(dir.path(), options).unwrap();
    assert!(ledger.failure().is_none());
    let outcome = ledger.append(AppendRequest::one(proposal(&small_grant("during")), "t"));
    let Err(AppendError::Stopped(Some(failure))) = outcome else { panic!("{outcome:?}") };
    assert_eq!(failure.kind, FailureKind::Panic);
    assert!(failure.reason.contains("panicked") && failure.reason.contains("injected fault"), "{}", failure.reason);
    assert_eq!(ledger.failure().as_ref(), Some(&failure), "failure() says why the writer stopped");
    let later = ledger.append(AppendRequest::one(proposal(&small_grant("after")), "t"));
    assert!(matches!(&later, Err(AppendError::Stopped(Some(f))) if f.kind == FailureKind::Panic), "{later:?}");
    // Reads go on, at the durable head.
    assert_eq!(ledger.head().seq, 1);
    assert_eq!(ledger.events_after(0, 10).unwrap().len(), 1);
    drop(ledger);
    let ledger = open(dir.path());
    assert_eq!(ledger.verify(|_| {}).unwrap().seq, 1);
    append(&ledger, &small_grant("after")).unwrap();
}

#[test]
fn a_reader_that_panics_holding_a_contract_does_not_stop_the_writer() {
    let (_dir, ledger) = fresh();
    append(&ledger, &small_grant("c")).unwrap();
    let ledger = Arc::new(ledger);
    let id = events::ContractId::parse("c").unwrap();
    let at = ledger.as_of(events::Date::parse("2026-06-30").unwrap(), None).unwrap();
    let reader = {
        let ledger = ledger.clone();
        let id = id.clone();
        std::thread::spawn(move || ledger.with_contract(&id, &at, |_| panic!("a reader's bug")))
    };
    assert!(reader.join().is_err(), "the reader panicked holding the contract's lock");
    // Before the fix the poisoned lock made the writer's `lock().expect` panic: writes died.
    append(&ledger, &event("c", "invoice_issued", "2026-02-01", r#"{"invoice_id":"I1","amount":"1.00","due_date":"2026-03-01"}"#)).unwrap();
    assert!(ledger.failure().is_none());
    assert_eq!(ledger.with_contract(&id, &at, |s| s.version).unwrap(), Some(2));
}

/// Views rebuilt at open are written through the fault-injecting I/O: a failed batch fails
/// the open loudly, and the views cut short (their format removed first) are rebuilt at the
/// next open, equal to the ones they replace.
#[test]
fn a_failed_batch_of_views_rebuilt_at_open_fails_the_open_and_the_next_open_rebuilds_them() {
    let (dir, ledger) = fresh();
    append_all(&ledger, SPEC_EXAMPLES);
    ledger.close();
    let good = ledger.persisted_views().unwrap();
    drop(ledger);
    set_views_format(dir.path(), 999);
    let options = Options { faults: Some(FaultPlan { nth: 1, action: FaultAction::Error }), record_io: true, ..Options::default() };
    match Ledger::open(dir.path(), options) {
        Err(e) => assert!(e.to_string().contains("injected fault"), "{e}"),
        Ok(_) => panic!("the open's first batch failed, yet it opened"),
    }
    // The views were cleared before the failed batch: over a chain of events, empty views
    // are rebuilt (two batches: the contracts, then the facts and cursor), not caught up
    // from the first event (one batch of every state).
    let ledger = Ledger::open(dir.path(), Options { record_io: true, ..Options::default() }).unwrap();
    assert_eq!(ledger.io_trace(), [Op::OpenBatch, Op::OpenBatch]);
    assert_eq!(ledger.loaded_contracts(), 0, "no state kept from the rebuild");
    assert_eq!(ledger.persisted_views().unwrap(), good);
}
