//! One seal and one fold (issue 9, defect 11): the ledger's writer and `projections::Book`
//! (which the worked examples and property tests drive) make the same events from the same
//! proposals, byte for byte, and refuse the same ones.

mod common;
use common::*;
use events::{Code, Proposal, Rejection, Timestamp};
use ledger::{AppendError, AppendRequest, Ledger, Mode, Options};
use projections::Book;
use std::sync::Arc;

/// The ledger's clock for these tests: one fixed instant, so Book and ledger seal alike.
const NOW: Timestamp = Timestamp(1_795_824_000_000_000);

fn ledger_at_now() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), Options { clock: Arc::new(|| NOW), ..Options::default() }).unwrap();
    (dir, ledger)
}

fn via_ledger(ledger: &Ledger, proposal: &Proposal) -> Result<events::RecordedEvent, Rejection> {
    let request = AppendRequest { events: vec![proposal.clone()], mode: Mode::Atomic, idempotency_key: None, actor: "t@example".into() };
    match ledger.append(request) {
        Ok(appended) => Ok(ledger.event(appended.receipts[0].seq).unwrap().unwrap()),
        Err(AppendError::Rejected { rejection, .. } | AppendError::RequestRefused(rejection)) => Err(rejection),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn the_ledger_and_book_seal_the_same_bytes_and_refuse_the_same_events() {
    let (_dir, ledger) = ledger_at_now();
    let mut book = Book::new();
    let mut lines: Vec<String> = SPEC_EXAMPLES.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    // Refusals too: a duplicate grant, a payment over its invoice, a close of a period that
    // has not ended (NOW is 2026-11-28).
    lines.push(small_grant("colossus-1"));
    lines.push(event("colossus-1", "payment_received", "2027-02-01", r#"{"payment_id":"P9","amount":"9999999999.00","invoice_id":"INV-001"}"#));
    lines.push(r#"{"type":"period_closed","effective_date":"2026-11-28","data":{"period_end":"2026-11-28"}}"#.into());
    let mut refused = vec![];
    for line in &lines {
        let proposal = proposal(line);
        let from_ledger = via_ledger(&ledger, &proposal);
        let from_book = book.propose(&proposal, "t@example", NOW);
        match (&from_ledger, &from_book) {
            (Ok(l), Ok(b)) => assert_eq!((&l.canonical, l.hash), (&b.canonical, b.hash), "{line}"),
            (Err(l), Err(b)) => {
                assert_eq!(l, b, "{line}");
                refused.push(l.code);
            }
            _ => panic!("{line}: ledger {from_ledger:?}, book {from_book:?}"),
        }
    }
    assert_eq!(refused, [Code::ContractExists, Code::PaymentExceedsInvoice, Code::PeriodNotEnded]);
}

#[test]
fn book_refuses_an_event_too_large_to_store_as_the_ledger_does() {
    let (_dir, ledger) = ledger_at_now();
    // 600 tranches with 100-byte ids: well past the 64 KiB an event may take.
    let tranches: Vec<String> = (0..600)
        .map(|i| format!(r#"{{"id":"{}{i:04}","amount":"1.00","window":{{"start":"2026-01-01","end":"2027-01-01"}},"firm":true}}"#, "t".repeat(96)))
        .collect();
    let grant = format!(
        r#"{{"contract_id":"big","type":"lease_granted","effective_date":"2026-01-01","data":{{"provider":"P","customer":"C","currency":"USD","term":{{"start":"2026-01-01","end":"2027-01-01"}},"cluster":{{"site":"s","gpu_model":"g","gpus":1}},"headline":"600.00","tranches":[{}]}}}}"#,
        tranches.join(",")
    );
    let proposal = proposal(&grant);
    let from_ledger = via_ledger(&ledger, &proposal).unwrap_err();
    // Before the fix Book accepted it: the tests exercised a seal the writer does not use.
    let from_book = Book::new().propose(&proposal, "t@example", NOW).unwrap_err();
    assert_eq!(from_ledger, from_book);
    assert!(from_book.message.contains("at most 65536"), "{from_book}");
}
