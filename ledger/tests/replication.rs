//! The ledger's side of replicated mode: every group goes through the `Replicator` before
//! the local commit; a group it refuses is rolled back and never acknowledged; fenced, the
//! node stops taking writes; events and idempotency records copied from the replicated log
//! are stored, so a retry after a failover replays.

mod common;
use common::*;
use events::RecordedEvent;
use ledger::{AppendError, AppendRequest, KeyRecord, Ledger, Mode, Options, ReplicationError, ReplicationGroup, Replicator};
use std::sync::{Arc, Mutex};

/// A replicated log in memory: takes a group only if it continues the log, as JetStream's
/// expected-last-sequence check does; can be told to refuse the next group.
#[derive(Default)]
struct Log {
    events: Mutex<Vec<RecordedEvent>>,
    keys: Mutex<Vec<(String, KeyRecord)>>,
    refuse_next: Mutex<Option<ReplicationError>>,
    /// Stores the next group, then answers this error (an acknowledgement lost on the way).
    store_then_fail_next: Mutex<Option<ReplicationError>>,
    /// Most events it takes at once (0: the ledger's own bound).
    max: usize,
    /// The size of every group it took.
    sizes: Mutex<Vec<usize>>,
}

impl Replicator for Log {
    fn replicate(&self, group: &ReplicationGroup<'_>) -> Result<(), ReplicationError> {
        if let Some(e) = self.refuse_next.lock().unwrap().take() {
            return Err(e);
        }
        let mut events = self.events.lock().unwrap();
        if events.len() as u64 != group.after {
            return Err(ReplicationError::Fenced(format!("the log ends at {}, not {}", events.len(), group.after)));
        }
        assert_eq!(group.events.first().map(|e| e.event.seq), Some(group.after + 1));
        self.sizes.lock().unwrap().push(group.events.len());
        events.extend(group.events.iter().map(|e| (*e).clone()));
        self.keys.lock().unwrap().extend(group.keys.iter().map(|(k, r)| (k.to_string(), *r)));
        match self.store_then_fail_next.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn group_events_max(&self) -> usize {
        if self.max == 0 { ledger::GROUP_EVENTS_MAX } else { self.max }
    }
}

fn replicated(dir: &std::path::Path, log: &Arc<Log>) -> Ledger {
    Ledger::open(dir, Options { clock: ticking_clock(), replicator: Some(log.clone()), ..Options::default() }).unwrap()
}

/// A fresh replicated ledger told it leads, with the log it replicates to.
fn leader() -> (tempfile::TempDir, Arc<Log>, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::default());
    let ledger = replicated(dir.path(), &log);
    ledger.set_leading(true);
    (dir, log, ledger)
}

fn keyed(json: &str, key: &str) -> AppendRequest {
    AppendRequest { events: vec![proposal(json)], mode: Mode::Atomic, idempotency_key: Some(key.into()), actor: "t@example".into() }
}

#[test]
fn a_group_is_replicated_before_it_is_committed_and_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::default());
    let ledger = replicated(dir.path(), &log);
    // A replicated node takes no writes until it is told it leads.
    assert_eq!(ledger.append(keyed(&small_grant("a"), "k-a")), Err(AppendError::NotLeader));
    ledger.set_leading(true);
    let receipt = ledger.append(keyed(&small_grant("a"), "k-a")).unwrap().receipts[0].clone();
    assert_eq!(log.events.lock().unwrap().iter().map(|e| (e.event.seq, e.hash)).collect::<Vec<_>>(), [(1, receipt.hash)]);
    assert_eq!(log.keys.lock().unwrap()[0].0, "k-a");
    assert_eq!(ledger.head().seq, 1);
}

#[test]
fn a_refused_group_is_rolled_back_and_not_acknowledged() {
    let (dir, log, ledger) = leader();
    append(&ledger, &small_grant("a")).unwrap();
    *log.refuse_next.lock().unwrap() = Some(ReplicationError::Unavailable("no quorum".into()));
    let batch = AppendRequest {
        events: vec![proposal(&small_grant("b")), proposal(&event("a", "invoice_issued", "2026-02-01", r#"{"invoice_id":"I1","amount":"1.00","due_date":"2026-03-01"}"#))],
        mode: Mode::Atomic,
        idempotency_key: Some("k-batch".into()),
        actor: "t@example".into(),
    };
    assert!(matches!(ledger.append(batch.clone()), Err(AppendError::NotReplicated(m)) if m.contains("no quorum")));
    // Nothing of it stayed: not the head, not contract b, not a's invoice, not the key.
    assert_eq!(ledger.head().seq, 1);
    let at = ledger.as_of(events::Date::parse("2026-12-31").unwrap(), None).unwrap();
    assert_eq!(ledger.with_contract(&events::ContractId::parse("a").unwrap(), &at, |s| s.version).unwrap(), Some(1));
    assert_eq!(ledger.contract_count(), 1);
    // The same request goes through once the log takes it, at the same seqs.
    let appended = ledger.append(batch).unwrap();
    assert_eq!(appended.receipts.iter().map(|r| (r.seq, r.replayed)).collect::<Vec<_>>(), [(2, false), (3, false)]);
    assert_eq!(ledger.verify(|_| {}).unwrap().seq, 3);
    ledger.close();
    let incremental = ledger.persisted_views().unwrap();
    drop(ledger);
    Ledger::rebuild_views(dir.path(), |_, _| {}).unwrap();
    assert_eq!(open(dir.path()).persisted_views().unwrap(), incremental, "the rolled-back group left nothing in the views");
}

#[test]
fn a_fenced_writer_stops_writing_follows_and_replays_a_retry_after_failover() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = Arc::new(Log::default());
    let a = replicated(dir_a.path(), &log);
    let b = replicated(dir_b.path(), &log);
    a.set_leading(true);
    let grant = a.append(keyed(&small_grant("c"), "k-c")).unwrap().receipts[0].clone();
    // b takes over (a paused past its lease): it copies the log, then leads.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let copied = runtime.block_on(b.replicate_with_keys(log.events.lock().unwrap().clone(), log.keys.lock().unwrap().clone())).unwrap();
    assert_eq!((copied.stored, copied.refused), (1, None));
    b.set_leading(true);
    append(&b, &event("c", "invoice_issued", "2026-02-01", r#"{"invoice_id":"I1","amount":"1.00","due_date":"2026-03-01"}"#)).unwrap();
    // a wakes up believing it leads: the log refuses it by position; nothing is acknowledged,
    // a rolls back and stops writing.
    let stale = a.append(AppendRequest::one(proposal(&small_grant("zombie")), "t"));
    assert_eq!(stale, Err(AppendError::NotLeader));
    assert!(!a.is_leading());
    assert_eq!(a.head().seq, 1);
    assert_eq!(a.append(AppendRequest::one(proposal(&small_grant("zombie")), "t")), Err(AppendError::NotLeader));
    // The client retries its first request, with its key, on the new leader: a replay.
    let retry = b.append(keyed(&small_grant("c"), "k-c")).unwrap().receipts[0].clone();
    assert_eq!((retry.seq, retry.hash, retry.replayed), (grant.seq, grant.hash, true));
    // a follows the log: it copies what b appended.
    let rest: Vec<RecordedEvent> = log.events.lock().unwrap()[1..].to_vec();
    assert_eq!(runtime.block_on(a.replicate(rest)).unwrap().stored, 1);
    assert_eq!(a.head(), b.head());
}

#[test]
fn an_unknown_outcome_stops_the_writer_and_a_keyed_retry_after_catch_up_replays() {
    let (_dir, log, ledger) = leader();
    // The log stores the group, but its acknowledgement is lost (a timeout): the client is
    // told the outcome is unknown, not that nothing was written.
    *log.store_then_fail_next.lock().unwrap() = Some(ReplicationError::Unknown("no acknowledgement within 5s".into()));
    let first = ledger.append(keyed(&small_grant("u"), "k-u"));
    assert!(matches!(&first, Err(AppendError::ReplicationOutcomeUnknown(m)) if m.contains("no acknowledgement")), "{first:?}");
    assert_eq!(log.events.lock().unwrap().len(), 1, "the log did store it");
    // The writer rolled back and stopped at once: a retry now is refused, never a second copy.
    assert!(!ledger.is_leading());
    assert_eq!(ledger.head().seq, 0);
    assert_eq!(ledger.append(keyed(&small_grant("u"), "k-u")), Err(AppendError::NotLeader));
    assert_eq!(log.events.lock().unwrap().len(), 1);
    // The lease loop catches up with the log (events and idempotency records), then leads.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let stored = log.events.lock().unwrap().clone();
    let copied = runtime.block_on(ledger.replicate_with_keys(stored.clone(), log.keys.lock().unwrap().clone())).unwrap();
    assert_eq!((copied.stored, copied.refused), (1, None));
    ledger.set_leading(true);
    // The keyed retry replays the original seq and hash.
    let retry = ledger.append(keyed(&small_grant("u"), "k-u")).unwrap().receipts[0].clone();
    assert_eq!((retry.seq, retry.hash, retry.replayed), (1, stored[0].hash, true));
    assert_eq!(log.events.lock().unwrap().len(), 1, "no second copy");
    // And the next new write continues the log.
    append(&ledger, &small_grant("v")).unwrap();
    assert_eq!(log.events.lock().unwrap().len(), 2);
    assert_eq!(ledger.head().seq, 2);
}

#[test]
fn groups_never_exceed_what_the_log_takes_in_one_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log { max: 3, ..Log::default() });
    let ledger = Arc::new(replicated(dir.path(), &log));
    ledger.set_leading(true);
    // A request larger than one append of the log is refused whole, never split.
    let big = AppendRequest {
        events: (0..4).map(|i| proposal(&small_grant(&format!("big{i}")))).collect(),
        mode: Mode::Atomic,
        idempotency_key: None,
        actor: "t@example".into(),
    };
    assert!(matches!(ledger.append(big), Err(AppendError::RequestRefused(r)) if r.code == events::Code::BatchTooLarge));
    // Many requests at once: the writer closes each group at the bound.
    let answers: Vec<_> = (0..40)
        .map(|i| {
            let request = AppendRequest {
                events: (0..2).map(|j| proposal(&small_grant(&format!("c{i}-{j}")))).collect(),
                mode: Mode::Atomic,
                idempotency_key: Some(format!("k{i}")),
                actor: "t@example".into(),
            };
            ledger.submit(request).unwrap()
        })
        .collect();
    for answer in answers {
        assert_eq!(answer.recv().unwrap().unwrap().receipts.len(), 2);
    }
    let sizes = log.sizes.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 80);
    assert!(sizes.iter().all(|s| *s <= 3 && *s % 2 == 0), "{sizes:?}");
    assert_eq!(ledger.head().seq, 80);
}

/// A follower past its budget keeps billing states as a leader does, and folds the invoices
/// and payments it copies into them (anything else into the state, loaded for it); a group
/// the log refuses is undone from the leader's billing states. Both end with the views a
/// rebuild makes.
#[test]
fn billing_states_follow_the_log_and_are_rolled_back_with_a_refused_group() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = Arc::new(Log::default());
    // A budget of one event: each save turns the writer's states into billing states.
    let open = |dir: &std::path::Path| Ledger::open(dir, Options { clock: ticking_clock(), replicator: Some(log.clone()), views_resident_events: 1, ..Options::default() }).unwrap();
    let (a, b) = (open(dir_a.path()), open(dir_b.path()));
    a.set_leading(true);
    let invoice = |ledger: &Ledger, c: &str, n: u32| append(ledger, &event(c, "invoice_issued", "2026-02-01", &format!(r#"{{"invoice_id":"I{n}","amount":"1.00","due_date":"2026-03-01"}}"#)));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let follow = |from: usize| {
        let events: Vec<RecordedEvent> = log.events.lock().unwrap()[from..].to_vec();
        runtime.block_on(b.replicate(events)).unwrap();
    };
    for c in ["c0", "c1", "c2"] {
        append(&a, &small_grant(c)).unwrap();
        invoice(&a, c, 0).unwrap();
    }
    let mut n = 0;
    until_saved(&a, || {
        n += 1;
        invoice(&a, "c0", n).unwrap();
    });
    assert_eq!(a.billing_contracts(), 3, "the leader keeps billing states");
    // The log refuses a group whose invoice went to a billing state: undone.
    *log.refuse_next.lock().unwrap() = Some(ReplicationError::Unavailable("no quorum".into()));
    let refused = a.append(AppendRequest { events: vec![proposal(&event("c1", "invoice_issued", "2026-02-02", r#"{"invoice_id":"R","amount":"2.00","due_date":"2026-03-01"}"#))], mode: Mode::Atomic, idempotency_key: None, actor: "t".into() });
    assert!(matches!(refused, Err(AppendError::NotReplicated(_))));
    for c in ["c0", "c1", "c2"] {
        invoice(&a, c, 100).unwrap();
        append(&a, &event(c, "payment_received", "2026-02-03", r#"{"payment_id":"P","amount":"1.00","invoice_id":"I100"}"#)).unwrap();
    }
    assert_eq!(invoice(&a, "c1", 200).unwrap().version, 5, "c1 holds its grant, three invoices and a payment: not the refused invoice");
    assert_eq!(a.billing_contracts(), 3, "the invoices and payments went to the billing states");
    let mut copied = 0;
    until_saved(&b, || {
        follow(copied);
        copied = log.events.lock().unwrap().len();
    });
    assert_eq!(b.billing_contracts(), 3, "the follower keeps billing states too");
    let reversed = invoice(&a, "c0", 300).unwrap().seq;
    invoice(&a, "c1", 300).unwrap();
    invoice(&a, "c2", 300).unwrap();
    // A reversal is not for a billing state: the follower folds it into c0's state,
    // loaded from the tree and the pending events, and goes on with that state.
    append(&a, &event("c0", "event_reversed", "2026-02-04", &format!(r#"{{"target_seq":{reversed},"reason":"wrong"}}"#))).unwrap();
    invoice(&a, "c0", 400).unwrap();
    follow(copied);
    assert_eq!(b.billing_contracts(), 2, "the follower folded the invoices into the billing states, the reversal into c0's state");
    assert_eq!(b.loaded_contracts(), 1);
    assert_eq!(a.head(), b.head());
    for (dir, ledger) in [(dir_a.path(), a), (dir_b.path(), b)] {
        ledger.close();
        let incremental = ledger.persisted_views().unwrap();
        drop(ledger);
        Ledger::rebuild_views(dir, |_, _| {}).unwrap();
        assert_eq!(common::open(dir).persisted_views().unwrap(), incremental, "the views a rebuild makes");
    }
}
