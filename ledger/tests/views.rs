//! Materialized views: incremental and rebuilt views are byte-identical; a stale cursor
//! catches up on open without skipping; queries read the live views.

mod common;
use common::*;
use events::{ContractId, Date};
use ledger::Ledger;

fn history(ledger: &Ledger) {
    append_all(ledger, SPEC_EXAMPLES);
    let mut payment = 0;
    for c in ["a", "b"] {
        append(ledger, &small_grant(c).replace(r#""effective_date":"2026-01-01""#, r#""effective_date":"2026-07-01""#)).unwrap();
        append(ledger, &event(c, "invoice_issued", "2026-07-02", r#"{"invoice_id":"I1","amount":"100.00","due_date":"2026-08-01"}"#)).unwrap();
        payment = append(ledger, &event(c, "payment_received", "2026-07-10", r#"{"payment_id":"P1","amount":"60.00","invoice_id":"I1"}"#)).unwrap().seq;
    }
    append(ledger, &event("a", "milestone_reached", "2026-08-01", r#"{"milestone":"m1","outcome":"failed"}"#)).unwrap();
    append(ledger, &event("b", "event_reversed", "2026-07-20", &format!(r#"{{"target_seq":{payment},"reason":"bounced"}}"#))).unwrap();
    // A refused atomic batch that touched "a" before failing: its staged changes are undone.
    let batch = ledger::AppendRequest {
        events: vec![
            proposal(&event("a", "invoice_issued", "2026-08-02", r#"{"invoice_id":"I2","amount":"5.00","due_date":"2026-09-01"}"#)),
            proposal(&event("a", "payment_received", "2026-08-03", r#"{"payment_id":"P9","amount":"500.00","invoice_id":"I2"}"#)),
        ],
        mode: ledger::Mode::Atomic,
        idempotency_key: None,
        actor: "t".into(),
    };
    assert!(ledger.append(batch).is_err());
}

#[test]
fn incremental_views_equal_rebuilt_views() {
    let (dir, ledger) = fresh();
    history(&ledger);
    let head = ledger.head().seq;
    ledger.close();
    let incremental = ledger.persisted_views().unwrap();
    drop(ledger);
    assert_eq!((incremental.states.len(), incremental.cursor), (3, head));

    let report = Ledger::rebuild_views(dir.path(), |_, _| {}).unwrap();
    assert_eq!((report.events, report.contracts), (head, 3));
    let ledger = open(dir.path());
    assert_eq!(ledger.persisted_views().unwrap(), incremental);
    // And the live states equal a fold of each contract's events straight from the chain.
    let at = ledger.as_of(Date::parse("2027-12-31").unwrap(), None).unwrap();
    for id in ["colossus-1", "a", "b"] {
        let id = ContractId::parse(id).unwrap();
        let live = ledger.with_contract(&id, &at, |s| s.clone()).unwrap().unwrap();
        assert_eq!(Some(live), ledger.contract_state(&id).unwrap());
    }
}

#[test]
fn a_stale_cursor_catches_up_on_open_without_skipping() {
    let (dir, ledger) = fresh();
    append(&ledger, &small_grant("z")).unwrap();
    append(&ledger, &event("z", "invoice_issued", "2026-02-01", r#"{"invoice_id":"I1","amount":"1.00","due_date":"2026-03-01"}"#)).unwrap();
    ledger.close();
    let old = ledger.persisted_views_raw().unwrap();
    drop(ledger);

    let ledger = open(dir.path());
    history(&ledger);
    ledger.close();
    drop(ledger);

    // Put the old views (cursor 2) back, as if the process had died before persisting.
    {
        let db = raw_sled(dir.path());
        let views = db.open_tree("views").unwrap();
        views.clear().unwrap();
        for (k, v) in &old {
            views.insert(k, v.as_slice()).unwrap();
        }
        db.flush().unwrap();
    }
    let ledger = open(dir.path());
    ledger.close();
    let caught_up = ledger.persisted_views().unwrap();
    drop(ledger);
    Ledger::rebuild_views(dir.path(), |_, _| {}).unwrap();
    let ledger = open(dir.path());
    assert_eq!(ledger.persisted_views().unwrap(), caught_up);
}

#[test]
fn queries_see_only_durable_events_and_refuse_a_future_position() {
    let (_dir, ledger) = fresh();
    append_all(&ledger, SPEC_EXAMPLES);
    let head = ledger.head().seq;
    assert!(ledger.as_of(Date::parse("2026-12-31").unwrap(), Some(head + 1)).is_err());
    let at = ledger.as_of(Date::parse("2026-12-31").unwrap(), Some(4)).unwrap();
    let id = ContractId::parse("colossus-1").unwrap();
    let version = ledger.with_contract(&id, &at, |s| s.version_at(at.known_at)).unwrap().unwrap();
    assert_eq!(version, 3, "known at seq 4, the contract had 3 events");
    let mut seen = vec![];
    ledger.for_each_contract(&at, |s| seen.push(s.contract_id.to_string())).unwrap();
    assert_eq!(seen, ["colossus-1"]);
    assert_eq!(ledger.ledger_facts().period_end, Some(Date::parse("2026-06-30").unwrap()));
}

/// A store holding [`history`], closed: its directory and the views it saved.
fn closed_history() -> (tempfile::TempDir, ledger::views::PersistedViews) {
    let (dir, ledger) = fresh();
    history(&ledger);
    ledger.close();
    (dir, ledger.persisted_views().unwrap())
}

#[test]
fn views_that_do_not_decode_are_rebuilt_on_open() {
    let (dir, good) = closed_history();
    for damage in [&b"\xff\xff\xff not a state"[..], &[]] {
        {
            let db = raw_sled(dir.path());
            let views = db.open_tree("views").unwrap();
            views.insert(b"Ccolossus-1", damage).unwrap();
            db.flush().unwrap();
        }
        // Before the fix: Err(Corrupt(... view "colossus-1" does not decode ...)), no start.
        let ledger = open(dir.path());
        ledger.close();
        assert_eq!(ledger.persisted_views().unwrap(), good, "rebuilt views equal the incremental ones");
        drop(ledger);
    }
}

#[test]
fn views_of_another_format_are_rebuilt_and_saved_on_open_without_keeping_the_states() {
    let (dir, good) = closed_history();
    set_views_format(dir.path(), 999);
    let ledger = open(dir.path());
    // Saved whole before the ledger serves, as `cledger rebuild` saves them (in bounded
    // batches), and dropped: the first save then had every state of the ledger to write
    // in one batch, and a server kept them all past its resident budget until that save.
    assert!(good.states.len() > 1);
    assert_eq!(ledger.loaded_contracts(), 0, "no state kept from the rebuild");
    assert_eq!(ledger.persisted_views().unwrap(), good, "saved at open, equal to the incremental views");
    drop(ledger);
}

/// [`history`], then contracts `c0`..`c3` granted and three rounds of an invoice each,
/// interleaved; the events, oldest first.
fn interleaved_events() -> Vec<events::Event> {
    let (_dir, ledger) = fresh();
    history(&ledger);
    let ids = ["c0", "c1", "c2", "c3"];
    for id in ids {
        append(&ledger, &small_grant(id).replace(r#""effective_date":"2026-01-01""#, r#""effective_date":"2026-07-01""#)).unwrap();
    }
    for round in 0..3 {
        for id in ids {
            append(&ledger, &event(id, "invoice_issued", "2026-07-02", &format!(r#"{{"invoice_id":"I{round}","amount":"1.00","due_date":"2026-08-01"}}"#))).unwrap();
        }
    }
    ledger.events_after(0, usize::MAX).unwrap().into_iter().map(|r| r.event).collect()
}

fn sharded_fold(events: Vec<events::Event>) -> Result<(std::collections::BTreeMap<ContractId, projections::ContractState>, projections::LedgerFacts), ledger::ReadError> {
    let mut fold = ledger::views::ShardedFold::new().unwrap();
    let fed = events.into_iter().try_for_each(|e| fold.push(e));
    fold.finish(fed)
}

#[test]
fn contracts_folded_apart_equal_one_fold_in_order() {
    let events = interleaved_events();
    let mut states = std::collections::BTreeMap::new();
    let mut ledger_facts = projections::LedgerFacts::default();
    for event in &events {
        projections::fold_into(&mut states, event, &mut ledger_facts).unwrap();
    }
    assert!(ledger_facts.period_end.is_some() && states.len() > 6, "the history closes a period; {} contracts", states.len());
    assert_eq!(sharded_fold(events).unwrap(), (states, ledger_facts));
}

/// Whichever thread folds the contract whose event is the first that does not fold, its
/// seq is the one named, as a fold one event at a time names it.
#[test]
fn the_first_event_that_does_not_fold_is_named_whichever_thread_folds_it() {
    for first in ["c0", "c1", "c2", "c3"] {
        let mut events = interleaved_events();
        // Each contract's last invoice skips a version (round 2); `first`'s round-1 invoice
        // already does, so it is the lowest seq that does not fold.
        let tampered = |e: &events::Event, round: u64| e.version == 2 + round && e.stream.contract_id().is_some_and(|id| id.as_str().len() == 2);
        let mut expected = None;
        for e in events.iter_mut() {
            let id = e.stream.contract_id().map(|id| id.as_str().to_string()).unwrap_or_default();
            if (id == first && tampered(e, 1)) || (id != first && tampered(e, 2)) {
                expected = Some(expected.unwrap_or(u64::MAX).min(e.seq));
                e.version += 10;
            }
        }
        match sharded_fold(events) {
            Err(ledger::ReadError::Corrupt(f)) => {
                assert_eq!(Some(f.seq), expected, "{first}: {f}");
                assert!(f.reason.contains("version"), "{f}");
            }
            other => panic!("{first}: {other:?}"),
        }
    }
}

/// [`interleaved_events`] and `extra` more invoices, round robin over `c0`..`c3` (each
/// folding thread gets more than a batch of them), seqs and versions continuing.
fn many_interleaved_events(extra: u64) -> Vec<events::Event> {
    let mut events = interleaved_events();
    let invoice_of = |id: &str| events.iter().rev().find(|e| e.stream.contract_id().is_some_and(|c| c.as_str() == id)).unwrap().clone();
    let mut last: Vec<events::Event> = ["c0", "c1", "c2", "c3"].map(invoice_of).to_vec();
    let mut seq = events.last().unwrap().seq;
    for n in 0..extra {
        let e = &mut last[(n % 4) as usize];
        seq += 1;
        e.seq = seq;
        e.version += 1;
        events.push(e.clone());
    }
    events
}

/// Past a batch per folding thread, a thread that stopped is not fed any more, and the
/// error named is still the lowest seq's: a contract's before a ledger-wide one, and the
/// other way round.
#[test]
fn the_lowest_error_is_named_after_many_batches_whoever_finds_it() {
    let ledger_event = interleaved_events().into_iter().find(|e| e.stream.contract_id().is_none()).unwrap();
    for contract_first in [true, false] {
        let mut events = many_interleaved_events(8_000);
        let (early, late) = (events.len() - 6_000, events.len() - 3_000);
        let contract_at = if contract_first { early } else { late };
        events[contract_at].version += 10;
        // A ledger-wide event whose version does not follow, in place of an invoice.
        let ledger_at = if contract_first { late } else { early };
        let mut bad = ledger_event.clone();
        bad.seq = events[ledger_at].seq;
        bad.version = 99;
        events[ledger_at] = bad;
        let expected = events[early].seq;
        match sharded_fold(events) {
            Err(ledger::ReadError::Corrupt(f)) => {
                assert_eq!(f.seq, expected, "{f}");
                assert!(f.reason.contains("version") && !f.reason.contains("stopped"), "{f}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A rebuild of a chain that does not verify fails before it touches the views: the
/// store still opens with the views it had (before, they were cleared first, and every
/// later open failed trying to rebuild them from the damaged chain).
#[test]
fn a_rebuild_that_fails_leaves_the_views_as_they_were() {
    let (dir, good) = closed_history();
    tamper_on_disk(dir.path(), 5, 40);
    match Ledger::rebuild_views(dir.path(), |_, _| {}) {
        Err(e) => assert!(e.to_string().contains("seq 5"), "{e}"),
        Ok(report) => panic!("a damaged chain rebuilt: {report:?}"),
    }
    assert_eq!(open(dir.path()).persisted_views().unwrap(), good);
}

/// The persisted views' bytes are pinned: a change to `ContractState`'s layout that does not
/// bump `VIEWS_FORMAT` fails here (old stores would then decode into the wrong fields, or
/// not at all). After a deliberate change: bump `ledger::views::VIEWS_FORMAT`, then
/// `UPDATE_EXPECT=1 cargo test -p ledger --test views`.
#[test]
fn the_views_encoding_is_pinned() {
    let (dir, ledger) = fresh();
    append(&ledger, &small_grant("pin")).unwrap();
    append(&ledger, &event("pin", "invoice_issued", "2026-02-01", r#"{"invoice_id":"I1","amount":"10.00","due_date":"2026-03-01"}"#)).unwrap();
    drop(ledger);
    // A second save after two more events: a delta beside the snapshot.
    let ledger = open(dir.path());
    append(&ledger, &event("pin", "payment_received", "2026-02-10", r#"{"payment_id":"P1","amount":"4.00","invoice_id":"I1"}"#)).unwrap();
    append(&ledger, &event("pin", "event_reversed", "2026-02-11", r#"{"target_seq":3,"reason":"bounced"}"#)).unwrap();
    ledger.close();
    let mut text = format!("VIEWS_FORMAT {}\n", ledger::views::VIEWS_FORMAT);
    let raw = ledger.persisted_views_raw().unwrap();
    assert!(raw.iter().any(|(k, _)| k[0] == b'S') && raw.iter().any(|(k, _)| k[0] == b'D'), "a snapshot and a delta");
    for (key, value) in raw {
        text.push_str(&format!("{} = {}\n", key.escape_ascii(), hex(&value)));
    }
    expect_test::expect_file!["../../testdata/vectors/views.txt"].assert_eq(&text);
}

/// The store in `dir` opened with a resident budget of `events` (20: about 4 contracts of 5).
fn open_with_budget(dir: &std::path::Path, events: u64) -> Ledger {
    Ledger::open(dir, ledger::Options { clock: ticking_clock(), views_resident_events: events, ..ledger::Options::default() }).unwrap()
}

/// The views saved in `dir` (its ledger closed and dropped) equal the views rebuilt from its
/// chain: snapshots, deltas and summaries as they went equal to made at once.
fn assert_equal_to_a_rebuild(dir: &std::path::Path, saved: &ledger::views::PersistedViews) {
    Ledger::rebuild_views(dir, |_, _| {}).unwrap();
    assert_eq!(&open(dir).persisted_views().unwrap(), saved, "the views saved as they went equal a rebuild");
}

/// `count` contracts (`c00`, `c01`, ...), each a grant and `invoices` invoices; their ids.
fn contracts_with_invoices(ledger: &Ledger, count: usize, invoices: usize) -> Vec<String> {
    let ids: Vec<String> = (0..count).map(|i| format!("c{i:02}")).collect();
    for id in &ids {
        append(ledger, &small_grant(id)).unwrap();
        for n in 0..invoices {
            append(ledger, &event(id, "invoice_issued", "2026-02-01", &format!(r#"{{"invoice_id":"I{n}","amount":"1.00","due_date":"2026-03-01"}}"#))).unwrap();
        }
    }
    ids
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}


/// Saving views costs what changed: one event of one contract among many is saved as a delta
/// of that event, and the other contracts' snapshots are not rewritten. A reopened ledger
/// loads a contract only when it is used.
#[test]
fn views_save_what_changed_and_load_on_use() {
    let (dir, ledger) = fresh();
    contracts_with_invoices(&ledger, 40, 5);
    drop(ledger);
    let ledger = open(dir.path());
    let before = ledger.persisted_views_raw().unwrap();
    assert_eq!(ledger.loaded_contracts(), 0, "nothing is loaded until it is used");
    append(&ledger, &event("c07", "invoice_issued", "2026-02-02", r#"{"invoice_id":"X","amount":"1.00","due_date":"2026-03-01"}"#)).unwrap();
    assert_eq!(ledger.loaded_contracts(), 1, "the writer loaded the contract it changed");
    ledger.close();
    let after = ledger.persisted_views_raw().unwrap();
    let changed: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.iter().find(|(bk, _)| bk == k).map(|(_, bv)| bv) != Some(v))
        .map(|(k, _)| String::from_utf8_lossy(k).replace('\0', "/"))
        .collect();
    // The new delta of c07 (from version 7), its summary, and the cursor.
    assert_eq!(changed.len(), 3, "{changed:?}");
    assert!(changed.iter().any(|k| k.starts_with("Dc07/")), "{changed:?}");
    assert!(changed.iter().any(|k| k == "Uc07"), "{changed:?}");
    let delta = after.iter().find(|(k, _)| k.starts_with(b"Dc07")).unwrap();
    assert!(delta.1.len() < 400, "a delta of one event is small: {} bytes", delta.1.len());
    // The folded views equal a rebuild.
    let incremental = ledger.persisted_views().unwrap();
    drop(ledger);
    assert_equal_to_a_rebuild(dir.path(), &incremental);
}

/// Readers stay within the views' resident budget: past it, a state a reader loaded is
/// unloaded after the read (it is all saved), and reads give the same figures either way.
/// The writer's states are not unloaded, and a contract read again is loaded again.
#[test]
fn readers_keep_resident_states_within_the_budget() {
    let (dir, ledger) = fresh();
    let ids = contracts_with_invoices(&ledger, 30, 4);
    let at = ledger.as_of(Date::parse("2026-12-31").unwrap(), None).unwrap();
    let figures = |ledger: &Ledger| -> Vec<String> {
        let mut out = vec![];
        ledger.for_each_contract(&at, |s| out.push(format!("{} {} {:?}", s.contract_id, s.version, s.recognized(&at)))).unwrap();
        out
    };
    let unbounded = figures(&ledger);
    ledger.close();
    drop(ledger);
    // 5 events a contract: a budget of 20 events keeps about 4 or 5 contracts in memory.
    let ledger = open_with_budget(dir.path(), 20);
    assert_eq!(figures(&ledger), unbounded, "the same figures with states unloaded as they go");
    let resident = ledger.loaded_contracts();
    assert!((4..=6).contains(&resident), "{resident} contracts stayed loaded after a read of all 30");
    for id in &ids {
        let contract = ContractId::parse(id).unwrap();
        assert_eq!(ledger.with_contract(&contract, &at, |s| s.version).unwrap(), Some(5));
    }
    assert!(ledger.loaded_contracts() <= 6, "single reads stay within the budget too");
    // The writer loads what it changes and keeps it (not saved yet): never unloaded by reads.
    append(&ledger, &event("c29", "invoice_issued", "2026-02-02", r#"{"invoice_id":"X","amount":"1.00","due_date":"2026-03-01"}"#)).unwrap();
    let at = ledger.as_of(Date::parse("2026-12-31").unwrap(), None).unwrap();
    assert_eq!(ledger.with_contract(&ContractId::parse("c29").unwrap(), &at, |s| s.version).unwrap(), Some(6));
    assert_eq!(figures(&ledger).len(), 30);
    assert_eq!(ledger.with_contract(&ContractId::parse("c29").unwrap(), &at, |s| s.version).unwrap(), Some(6), "the writer's change is still there");
}

/// The writer's states are bounded too: after a save, states beyond the budget that are all
/// saved are unloaded (down to three quarters of it), and what the writer needs again is
/// loaded again; nothing of it is lost. (A credit needs the contract's state; an invoice,
/// only its billing state: see the test below.)
#[test]
fn after_a_save_the_writer_keeps_its_states_within_the_budget() {
    let (dir, ledger) = fresh();
    let ids = contracts_with_invoices(&ledger, 30, 4);
    ledger.close();
    drop(ledger);
    let ledger = open_with_budget(dir.path(), 20);
    // The writer loads every contract to change it (6 events each, 180 in all).
    for id in &ids {
        append(&ledger, &event(id, "sla_credit_issued", "2026-02-02", r#"{"amount":"1.00","reason":"sla"}"#)).unwrap();
    }
    assert_eq!(ledger.loaded_contracts(), 30, "no save yet: all of them stay");
    ledger.close(); // saves, then trims
    let loaded = ledger.loaded_contracts();
    assert!(loaded <= 2, "{loaded} contracts still loaded: at most 15 events' worth stay");
    assert_eq!(ledger.billing_contracts(), 0, "on close, nothing is kept for the writer");
    let saved = ledger.persisted_views().unwrap();
    drop(ledger);
    let ledger = open(dir.path());
    let at = ledger.as_of(Date::parse("2026-12-31").unwrap(), None).unwrap();
    for id in &ids {
        assert_eq!(ledger.with_contract(&ContractId::parse(id).unwrap(), &at, |s| s.version).unwrap(), Some(6), "{id}");
    }
    drop(ledger);
    assert_equal_to_a_rebuild(dir.path(), &saved);
}

/// A save while the writer goes on keeps the billing states of the contracts it changed
/// since the last save (its working set: unloading them would only load them all again, an
/// interleaved import past the budget went 8x slower that way), and drops the others.
#[test]
fn a_save_keeps_the_writers_working_set_and_unloads_idle_states() {
    let (dir, ledger) = fresh();
    let ids = contracts_with_invoices(&ledger, 30, 4);
    ledger.close();
    drop(ledger);
    let ledger = open_with_budget(dir.path(), 20);
    let invoice = |id: &str, n: u32| append(&ledger, &event(id, "invoice_issued", "2026-02-02", &format!(r#"{{"invoice_id":"X{n}","amount":"1.00","due_date":"2026-03-01"}}"#))).unwrap();
    let mut n = 0;
    let mut save_with_c00 = || {
        until_saved(&ledger, || {
            n += 1;
            invoice("c00", n);
        })
    };
    // Just saved: the 30 changes below come well within one save interval.
    save_with_c00();
    for id in &ids {
        invoice(id, 100);
    }
    // A save after all 30 changed: they stay, past the budget, as billing states but for
    // at most 15 events' worth of states.
    save_with_c00();
    let (loaded, billing) = (ledger.loaded_contracts(), ledger.billing_contracts());
    assert_eq!(loaded + billing, 30, "the working set stays: {loaded} states, {billing} billing states");
    assert!(loaded <= 3, "{loaded} states stayed whole");
    // A save after only c00 changed: the idle billing states go.
    save_with_c00();
    let (loaded, billing) = (ledger.loaded_contracts(), ledger.billing_contracts());
    assert!(billing <= 1 && loaded <= 3, "c00 and at most 15 events' worth of states stay: {loaded} states, {billing} billing states");
    ledger.close();
    drop(ledger);
    let ledger = open(dir.path());
    let at = ledger.as_of(Date::parse("2026-12-31").unwrap(), None).unwrap();
    let c00 = ledger.with_contract(&ContractId::parse("c00").unwrap(), &at, |s| s.version).unwrap().unwrap();
    assert!((9..=18).contains(&c00), "c00 at version {c00}");
    assert_eq!(ledger.with_contract(&ContractId::parse("c29").unwrap(), &at, |s| s.version).unwrap(), Some(6));
}

/// Each contract's figures and periods as the portfolio reads them (summaries where they
/// answer), and as its state gives them: one line per contract.
fn portfolio_lines(ledger: &Ledger, at: &projections::AsOf) -> (Vec<String>, Vec<String>) {
    let line = |c: projections::Contract<'_>| {
        format!("{} {:?} {:?}", c.contract_id(), c.figures(at).unwrap(), c.periods(at, projections::Granularity::Month).unwrap())
    };
    let from_summaries = ledger.map_contracts(at, |c| c.known_at(at.known_at).then(|| line(c))).unwrap().into_iter().flatten().collect();
    let mut from_states = vec![];
    ledger.for_each_contract(at, |s| from_states.push(line(projections::Contract::state(s)))).unwrap();
    (from_summaries, from_states)
}

/// The portfolio reads summaries: after a reopen it loads no state at all, its figures are
/// the states' at every point of view, it follows the writer (a new event, a refused batch
/// undone), and a point of view before a contract's last event is read from the state.
#[test]
fn the_portfolio_reads_summaries_that_follow_the_writer() {
    let (dir, ledger) = fresh();
    contracts_with_invoices(&ledger, 12, 3);
    let paid = append(&ledger, &event("c03", "payment_received", "2026-02-10", r#"{"payment_id":"P1","amount":"0.40","invoice_id":"I0"}"#)).unwrap().seq;
    let reversed = append(&ledger, &event("c04", "invoice_issued", "2026-02-03", r#"{"invoice_id":"R","amount":"7.00","due_date":"2026-03-01"}"#)).unwrap().seq;
    append(&ledger, &event("c04", "event_reversed", "2026-03-05", &format!(r#"{{"target_seq":{reversed},"reason":"wrong"}}"#))).unwrap();
    ledger.close();
    let summaries = ledger.persisted_views().unwrap().summaries;
    assert_eq!(summaries.len(), 12, "every saved contract has its summary in the tree");
    drop(ledger);

    let ledger = open(dir.path());
    let dates = ["2026-01-31", "2026-02-04", "2026-03-04", "2026-03-05", "2027-12-31"];
    for date in dates {
        let at = ledger.as_of(Date::parse(date).unwrap(), None).unwrap();
        let seen = ledger.map_contracts(&at, |c| c.is_summary()).unwrap();
        assert_eq!((seen.len(), seen.iter().all(|s| *s)), (12, true), "at the head every contract is read from its summary");
        assert_eq!(ledger.loaded_contracts(), 0, "no state was loaded for the portfolio at the head");
    }
    // One contract as a report reads it (the revenue endpoint): from its summary, no state
    // loaded, the state's figures and periods.
    let c03 = ContractId::parse("c03").unwrap();
    let read = |at: &projections::AsOf| {
        ledger.with_contract_as_reported(&c03, at, |c| (c.is_summary(), c.figures(at).unwrap(), c.periods(at, projections::Granularity::Quarter).unwrap())).unwrap().unwrap()
    };
    let reported: Vec<_> = dates.iter().map(|date| read(&ledger.as_of(Date::parse(date).unwrap(), None).unwrap())).collect();
    assert!(reported.iter().all(|(is_summary, _, _)| *is_summary), "at the head a contract is read from its summary");
    assert_eq!(ledger.loaded_contracts(), 0, "no state was loaded for one contract at the head");
    for (date, (_, figures, periods)) in dates.iter().zip(reported) {
        let at = ledger.as_of(Date::parse(date).unwrap(), None).unwrap();
        let from_state = ledger.with_contract(&c03, &at, |s| (s.figures(&at).unwrap(), s.periods(&at, projections::Granularity::Quarter).unwrap())).unwrap().unwrap();
        assert_eq!((figures, periods), from_state, "at {date}");
    }
    let before_c03 = ledger.as_of(Date::parse("2027-12-31").unwrap(), Some(1)).unwrap();
    assert_eq!(ledger.with_contract_as_reported(&c03, &before_c03, |c| c.is_summary()).unwrap(), None, "not known at seq 1");
    // Known, but not all of it: read from the state, as the state reads it.
    let before_payment = ledger.as_of(Date::parse("2027-12-31").unwrap(), Some(paid - 1)).unwrap();
    let (is_summary, figures, periods) = read(&before_payment);
    assert!(!is_summary, "before its last event a contract is read from its state");
    let from_state = ledger.with_contract(&c03, &before_payment, |s| (s.figures(&before_payment).unwrap(), s.periods(&before_payment, projections::Granularity::Quarter).unwrap())).unwrap().unwrap();
    assert_eq!((figures, periods), from_state);
    assert_ne!(from_state.0.collected, read(&ledger.as_of(Date::parse("2027-12-31").unwrap(), None).unwrap()).1.collected, "the payment is not seen before it");
    for date in dates {
        let at = ledger.as_of(Date::parse(date).unwrap(), None).unwrap();
        let (from_summaries, from_states) = portfolio_lines(&ledger, &at);
        assert_eq!(from_summaries, from_states, "at {date}");
    }
    // c04's reversed invoice counts from Feb 3 to Mar 4 only.
    let billed = |date: &str, known_at: Option<u64>| {
        let at = ledger.as_of(Date::parse(date).unwrap(), known_at).unwrap();
        let billed = ledger.map_contracts(&at, |c| (c.contract_id().as_str() == "c04").then(|| c.figures(&at).unwrap().billed)).unwrap();
        billed.into_iter().flatten().sum::<i128>()
    };
    assert_eq!((billed("2026-03-04", None), billed("2026-03-05", None)), (1000, 300));

    // A new event: the portfolio at the new head has it; at the old head it has not.
    let old_head = ledger.head().seq;
    append(&ledger, &event("c04", "invoice_issued", "2026-02-20", r#"{"invoice_id":"N","amount":"2.00","due_date":"2026-03-01"}"#)).unwrap();
    assert_eq!((billed("2026-12-31", None), billed("2026-12-31", Some(old_head))), (500, 300));
    let at = ledger.as_of(Date::parse("2026-12-31").unwrap(), Some(old_head)).unwrap();
    let c04 = ledger.map_contracts(&at, |c| (c.contract_id().as_str() == "c04").then(|| !c.is_summary())).unwrap();
    assert_eq!(c04.into_iter().flatten().collect::<Vec<_>>(), [true], "before its last event, a contract is read from its state");
    // A refused atomic batch that touched c05 first: undone, and so is what the summary saw.
    let batch = ledger::AppendRequest {
        events: vec![
            proposal(&event("c05", "invoice_issued", "2026-02-21", r#"{"invoice_id":"Z","amount":"9.00","due_date":"2026-03-01"}"#)),
            proposal(&event("c05", "payment_received", "2026-02-22", r#"{"payment_id":"PZ","amount":"900.00","invoice_id":"Z"}"#)),
        ],
        mode: ledger::Mode::Atomic,
        idempotency_key: None,
        actor: "t".into(),
    };
    assert!(ledger.append(batch).is_err());
    for date in dates {
        let at = ledger.as_of(Date::parse(date).unwrap(), None).unwrap();
        let (from_summaries, from_states) = portfolio_lines(&ledger, &at);
        assert_eq!(from_summaries, from_states, "after the writer's changes, at {date}");
    }
    ledger.close();
    let incremental = ledger.persisted_views().unwrap();
    drop(ledger);
    assert_equal_to_a_rebuild(dir.path(), &incremental);
}

/// Views saved by format 3 (no summaries) are used as they are, not rebuilt: the portfolio
/// makes each summary from its state when first asked, with the same figures, and a damaged
/// summary is made again from the state instead of answering wrong.
#[test]
fn views_without_summaries_are_used_as_they_are() {
    let (dir, ledger) = fresh();
    contracts_with_invoices(&ledger, 6, 2);
    ledger.close();
    drop(ledger);
    {
        let db = raw_sled(dir.path());
        let views = db.open_tree("views").unwrap();
        let summaries: Vec<_> = views.scan_prefix(b"U").keys().map(Result::unwrap).collect();
        assert_eq!(summaries.len(), 6);
        for key in &summaries[..5] {
            views.remove(key).unwrap();
        }
        views.insert(&summaries[5], b"not a summary".as_slice()).unwrap();
        views.insert(b"Mformat", 3u32.to_be_bytes().as_slice()).unwrap();
        // Two views lost too: those states are refolded from the chain, on the caller's
        // thread (a refold waits on work of its own on every core).
        for id in ["Sc01", "Sc04"] {
            views.remove(id.as_bytes()).unwrap();
        }
        db.flush().unwrap();
    }
    let ledger = open(dir.path());
    assert_eq!(ledger.loaded_contracts(), 0, "not rebuilt at open (a rebuild loads every state)");
    let at = ledger.as_of(Date::parse("2026-12-31").unwrap(), None).unwrap();
    let (from_summaries, from_states) = portfolio_lines(&ledger, &at);
    assert_eq!(from_summaries.len(), 6);
    assert_eq!(from_summaries, from_states);
}

/// Every contract's view lost (snapshots and summaries): a portfolio refolds each from the
/// chain, and finishes. (Refolds wait on work of their own on every core: run on the pool's
/// workers, under the slot locks, they hung the pool; found by review.)
#[test]
fn a_portfolio_over_lost_views_refolds_them_and_finishes() {
    let (dir, ledger) = fresh();
    contracts_with_invoices(&ledger, 12, 2);
    ledger.close();
    drop(ledger);
    {
        let db = raw_sled(dir.path());
        let views = db.open_tree("views").unwrap();
        let keys: Vec<_> = views.iter().keys().map(Result::unwrap).filter(|k| k[0] == b'S' || k[0] == b'U').collect();
        assert_eq!(keys.len(), 24);
        for key in keys {
            views.remove(key).unwrap();
        }
        db.flush().unwrap();
    }
    let ledger = std::sync::Arc::new(open(dir.path()));
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = ledger.clone();
    std::thread::spawn(move || {
        // What a server does after open: it reads no state, and leaves the missing
        // summaries to the report that needs them.
        reader.read_summaries_ahead();
        assert_eq!(reader.loaded_contracts(), 0, "reading summaries ahead loads no state");
        let at = reader.as_of(Date::parse("2026-12-31").unwrap(), None).unwrap();
        let _ = tx.send(reader.map_contracts(&at, |c| c.figures(&at).unwrap().billed).unwrap());
    });
    let billed = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("the portfolio finishes");
    assert_eq!(billed, vec![200; 12]);
}

/// The store in `dir` opened with a save writing `bound` bytes of snapshots at most.
fn open_with_snapshot_bound(dir: &std::path::Path, bound: usize) -> Ledger {
    Ledger::open(dir, ledger::Options { clock: ticking_clock(), views_save_snapshot_bytes: bound, ..ledger::Options::default() }).unwrap()
}

/// How many snapshot and delta keys contract `id` has in the views of `dir`.
fn snapshots_and_deltas(dir: &std::path::Path, id: &str) -> (usize, usize) {
    let raw = open(dir).persisted_views_raw().unwrap();
    let count = |tag: u8| raw.iter().filter(|(k, _)| k[0] == tag && k[1..].starts_with(id.as_bytes())).count();
    (count(b'S'), count(b'D'))
}

/// The views saved in `dir` (no ledger open on it) equal a rebuild of them.
fn assert_saved_views_equal_a_rebuild(dir: &std::path::Path) {
    let saved = open(dir).persisted_views().unwrap();
    assert_equal_to_a_rebuild(dir, &saved);
}

/// A closed ledger's directory, copied.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `n` invoices of `contract`, numbered from `first`, as one atomic request.
fn invoice_batch(ledger: &Ledger, contract: &str, first: usize, n: usize) {
    let events = (first..first + n)
        .map(|i| proposal(&event(contract, "invoice_issued", "2026-02-01", &format!(r#"{{"invoice_id":"I{i}","amount":"1.00","due_date":"2026-03-01"}}"#))))
        .collect();
    ledger.append(ledger::AppendRequest { events, mode: ledger::Mode::Atomic, idempotency_key: None, actor: "t".into() }).unwrap();
}

/// Contracts whose deltas come to outweigh their snapshots in the same save do not all
/// write a snapshot in it: past the save's snapshot bytes, the rest save a delta and
/// snapshot at later saves (one each here, with a bound of one byte), and the views stay
/// those a rebuild makes. With the default bound, all six snapshot at once.
#[test]
fn snapshots_due_together_are_spread_over_saves() {
    let all_snapshots_and_deltas = |dir: &std::path::Path| (0..6).map(|c| snapshots_and_deltas(dir, &format!("c{c:02}"))).collect::<Vec<_>>();
    for (bound, spread) in [(1, true), (ledger::views::SAVE_SNAPSHOT_BYTES_MAX, false)] {
        let (dir, ledger) = fresh();
        let ids: Vec<String> = (0..6).map(|c| format!("c{c:02}")).collect();
        for id in &ids {
            append(&ledger, &small_grant(id)).unwrap();
        }
        ledger.close();
        drop(ledger);
        // Enough invoices that each contract's delta outweighs its snapshot (16 KiB at least).
        let ledger = open_with_snapshot_bound(dir.path(), bound);
        for id in &ids {
            invoice_batch(&ledger, id, 0, 250);
        }
        ledger.close();
        drop(ledger);
        let after_one_save = all_snapshots_and_deltas(dir.path());
        if spread {
            // c00 snapshots (the first due), the five others add a delta to the snapshot
            // of their grant; loaded, they are what a rebuild makes.
            assert_eq!(after_one_save, [(1, 0), (1, 1), (1, 1), (1, 1), (1, 1), (1, 1)]);
            // (On a copy: a rebuild rewrites the views it is compared with.)
            let copy = tempfile::tempdir().unwrap();
            copy_dir(dir.path(), copy.path());
            assert_saved_views_equal_a_rebuild(copy.path());
        } else {
            assert_eq!(after_one_save, [(1, 0); 6]);
            continue;
        }
        // One more invoice each per save: one more of the contracts put off snapshots.
        for round in 1..=5 {
            let ledger = open_with_snapshot_bound(dir.path(), bound);
            for id in &ids {
                invoice_batch(&ledger, id, 250 + round, 1);
            }
            ledger.close();
            drop(ledger);
            let now = all_snapshots_and_deltas(dir.path());
            assert!(now[round].1 == 0, "round {round}: c{round:02} snapshots now: {now:?}");
            assert!(now[round + 1..].iter().all(|(_, deltas)| *deltas == round + 1), "round {round}: the others add a delta: {now:?}");
        }
        assert_saved_views_equal_a_rebuild(dir.path());
    }
}

/// A bound of zero puts every snapshot off, but only until a contract's deltas reach twice
/// its snapshot: then it snapshots whatever the bound, so no contract's deltas grow without
/// end.
#[test]
fn a_snapshot_put_off_is_written_once_its_deltas_reach_twice_it() {
    let (dir, ledger) = fresh();
    append(&ledger, &small_grant("c00")).unwrap();
    ledger.close();
    drop(ledger);
    // Due (over 16 KiB of deltas), put off: a delta; past twice 16 KiB: the snapshot is
    // written, the deltas go.
    for (first, expected) in [(0, (1, 1)), (250, (1, 0))] {
        let ledger = open_with_snapshot_bound(dir.path(), 0);
        invoice_batch(&ledger, "c00", first, 250);
        ledger.close();
        drop(ledger);
        assert_eq!(snapshots_and_deltas(dir.path(), "c00"), expected, "after invoices from {first}");
    }
    assert_saved_views_equal_a_rebuild(dir.path());
}

/// Past the budget, a save turns the states the writer changed into billing states, and
/// invoices and payments to those contracts are decided with them alone (no state is
/// loaded for them), with the rules' answers: a
/// duplicate or an overpayment is refused with the code and message the state gives, a
/// refused batch is undone (its invoice id is free again), a credit or a read loads the
/// state with every pending event, the portfolio follows, and what is saved (deltas, a
/// snapshot made from the tree and the pending events, summaries) equals a rebuild.
#[test]
fn billing_states_decide_and_save_as_the_states_would() {
    let (dir, ledger) = fresh();
    let ids = contracts_with_invoices(&ledger, 12, 2);
    ledger.close();
    drop(ledger);
    // A budget of one event: a save keeps none of the writer's states whole.
    let ledger = open_with_budget(dir.path(), 1);
    let invoice = |id: &str, invoice: &str, amount: &str| {
        append(&ledger, &event(id, "invoice_issued", "2026-02-02", &format!(r#"{{"invoice_id":"{invoice}","amount":"{amount}","due_date":"2026-03-01"}}"#)))
    };
    let pay = |id: &str, payment: &str, amount: &str, invoice: &str| {
        append(&ledger, &event(id, "payment_received", "2026-02-05", &format!(r#"{{"payment_id":"{payment}","amount":"{amount}","invoice_id":"{invoice}"}}"#)))
    };
    for id in &ids {
        invoice(id, "R1", "10.00").unwrap();
    }
    assert_eq!((ledger.loaded_contracts(), ledger.billing_contracts()), (12, 0), "the writer loaded what it changed");
    let mut n = 0;
    until_saved(&ledger, || {
        n += 1;
        invoice("c11", &format!("S{n}"), "1.00").unwrap();
    });
    assert_eq!((ledger.loaded_contracts(), ledger.billing_contracts()), (0, 12), "the save turned them into billing states");
    pay("c01", "P1", "4.00", "R1").unwrap();

    // Refusals are the rules': the billing state is not sure, the state decides.
    let overpaid = pay("c01", "P2", "6.01", "R1").unwrap_err();
    assert_eq!(overpaid.code.as_str(), "payment_exceeds_invoice", "{overpaid:?}");
    assert!(overpaid.message.contains("still owes 6.00"), "{}", overpaid.message);
    let duplicate = invoice("c02", "R1", "1.00").unwrap_err();
    assert_eq!(duplicate.code.as_str(), "duplicate_invoice", "{duplicate:?}");
    let duplicate_payment = pay("c01", "P1", "1.00", "R1").unwrap_err();
    assert_eq!(duplicate_payment.code.as_str(), "duplicate_payment", "{duplicate_payment:?}");
    assert_eq!((ledger.loaded_contracts(), ledger.billing_contracts()), (2, 10), "c01 and c02 were loaded to decide");

    // A refused atomic batch is undone from the billing state (its last event is refused
    // without c05's state): its invoice id is free again, its seqs go to other events.
    let batch = ledger::AppendRequest {
        events: vec![
            proposal(&event("c05", "invoice_issued", "2026-02-02", r#"{"invoice_id":"B1","amount":"5.00","due_date":"2026-03-01"}"#)),
            proposal(&event("c05", "payment_received", "2026-02-03", r#"{"payment_id":"PB","amount":"2.00","invoice_id":"B1"}"#)),
            proposal(&event("nobody", "invoice_issued", "2026-02-04", r#"{"invoice_id":"B1","amount":"9.00","due_date":"2026-03-01"}"#)),
        ],
        mode: ledger::Mode::Atomic,
        idempotency_key: None,
        actor: "t".into(),
    };
    assert!(ledger.append(batch).is_err());
    assert_eq!(ledger.billing_contracts(), 10, "c05 was undone without its state");
    invoice("c06", "B1", "5.00").unwrap();
    pay("c06", "PB", "5.00", "B1").unwrap();
    assert_eq!(invoice("c05", "B1", "5.00").unwrap().version, 5, "c05 is back at version 4");
    pay("c05", "PB", "5.00", "B1").unwrap();

    // A credit needs the state: loaded from the tree and the pending events.
    append(&ledger, &event("c07", "sla_credit_issued", "2026-02-06", r#"{"amount":"1.00","reason":"sla"}"#)).unwrap();
    // A read does too; the writer then goes on with the state.
    let at = ledger.as_of(Date::parse("2026-12-31").unwrap(), None).unwrap();
    assert_eq!(ledger.with_contract(&ContractId::parse("c08").unwrap(), &at, |s| s.version).unwrap(), Some(4));
    invoice("c08", "R2", "1.00").unwrap();
    let at = ledger.as_of(Date::parse("2026-12-31").unwrap(), None).unwrap();
    assert_eq!(ledger.with_contract(&ContractId::parse("c08").unwrap(), &at, |s| s.version).unwrap(), Some(5));

    // Enough invoices to c09 that its deltas outweigh its snapshot: the save writes a new
    // snapshot, made from the tree's view and the pending events.
    for n in 0..200 {
        invoice("c09", &format!("M{n}"), "1.00").unwrap();
    }
    assert_eq!((ledger.loaded_contracts(), ledger.billing_contracts()), (4, 8));
    // The portfolio reads summaries made from the saved ones and the pending events, and
    // loads nothing for them; they agree with the states read after the save, below.
    let at = ledger.as_of(Date::parse("2026-12-31").unwrap(), None).unwrap();
    let line = |c: projections::Contract<'_>| format!("{} {:?} {:?}", c.contract_id(), c.figures(&at).unwrap(), c.periods(&at, projections::Granularity::Month).unwrap());
    let from_summaries: Vec<String> = ledger.map_contracts(&at, line).unwrap();
    assert_eq!(ledger.billing_contracts(), 8, "the portfolio loaded no state");
    let before = ledger.persisted_views_raw().unwrap();
    ledger.close();
    let after = ledger.persisted_views_raw().unwrap();
    let snapshot = |entries: &ledger::views::RawEntries| entries.iter().find(|(k, _)| k.as_slice() == b"Sc09").map(|(_, v)| v.clone());
    assert_ne!(snapshot(&before), snapshot(&after), "c09's snapshot was written again");
    assert!(!after.iter().any(|(k, _)| k.starts_with(b"Dc09")), "and its deltas dropped");
    let mut from_states = vec![];
    ledger.for_each_contract(&at, |s| from_states.push(line(projections::Contract::state(s)))).unwrap();
    assert_eq!(from_summaries.len(), from_states.len());
    for (summary, state) in from_summaries.iter().zip(&from_states) {
        assert_eq!(summary, state, "the portfolio followed the billing states");
    }
    let saved = ledger.persisted_views().unwrap();
    drop(ledger);
    assert_equal_to_a_rebuild(dir.path(), &saved);
}
