//! A contract state's stored bytes are those of the struct it was before its id indexes
//! became `IdIndex` and its per-event facts `EventFacts` (derived, with `BTreeMap`s): ids
//! out of order, a duplicate id (folded from a chain; the rules refuse one), invoices,
//! payments and a reversed payment.

use events::{Currency, ContractId, Date, Digest, Event, EventBody, Proposal, Timestamp};
use projections::*;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize)]
struct Before<'a> {
    contract_id: &'a ContractId,
    version: u64,
    last_seq: u64,
    grant: &'a Grant,
    tranches: &'a Vec<TrancheFact>,
    capacity_changes: &'a Vec<CapacityFact>,
    resolutions: &'a Vec<ResolutionFact>,
    invoices: &'a Vec<InvoiceFact>,
    payments: &'a Vec<PaymentFact>,
    credits: &'a Vec<CreditFact>,
    terminations: &'a Vec<TerminationFact>,
    reversals: &'a Vec<ReversalFact>,
    events: BTreeMap<u64, EventFact>,
    invoice_index: BTreeMap<String, usize>,
    payment_index: BTreeMap<String, usize>,
    paid_by_invoice: BTreeMap<String, i128>,
    latest_non_billing_date: Date,
    magnitude_total: i128,
}

/// Per invoice id, the sum of its payments not reversed (no zero entries): the map the
/// state kept before its sums were kept by invoice position.
fn paid_by_invoice(s: &ContractState) -> BTreeMap<String, i128> {
    let mut paid = BTreeMap::new();
    for p in s.payments.iter().filter(|p| !s.is_reversed(p.origin.seq)) {
        if let Some(id) = &p.invoice_id {
            *paid.entry(id.clone()).or_insert(0) += p.amount;
        }
    }
    paid.retain(|_, sum| *sum != 0);
    paid
}

fn first_positions<'a>(ids: impl Iterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut map = BTreeMap::new();
    for (i, id) in ids.enumerate() {
        map.entry(id.to_string()).or_insert(i);
    }
    map
}

#[test]
fn the_stored_bytes_are_those_of_the_btreemap_indexes() {
    let lines = [
        r#"{"contract_id":"c1","type":"lease_granted","effective_date":"2026-05-01","data":{"provider":"P","customer":"C","currency":"USD","term":{"start":"2026-06-01","end":"2027-06-01"},"cluster":{"site":"s","gpu_model":"H100","gpus":8},"headline":"1000.00","tranches":[{"id":"base","amount":"1000.00","window":{"start":"2026-06-01","end":"2027-06-01"},"firm":true}]}}"#,
        r#"{"contract_id":"c1","type":"invoice_issued","effective_date":"2026-06-01","data":{"invoice_id":"I2","amount":"10.00","due_date":"2026-07-01"}}"#,
        r#"{"contract_id":"c1","type":"invoice_issued","effective_date":"2026-06-02","data":{"invoice_id":"I10","amount":"20.00","due_date":"2026-07-01"}}"#,
        r#"{"contract_id":"c1","type":"payment_received","effective_date":"2026-06-03","data":{"payment_id":"Pz","amount":"5.00","invoice_id":"I10"}}"#,
        r#"{"contract_id":"c1","type":"invoice_issued","effective_date":"2026-06-04","data":{"invoice_id":"I1","amount":"30.00","due_date":"2026-07-01"}}"#,
        r#"{"contract_id":"c1","type":"payment_received","effective_date":"2026-06-05","data":{"payment_id":"Pa","amount":"7.00","invoice_id":"I2"}}"#,
        r#"{"contract_id":"c1","type":"event_reversed","effective_date":"2026-06-06","data":{"target_seq":4,"reason":"bounced"}}"#,
    ];
    let mut facts = LedgerFacts::default();
    let mut state: Option<ContractState> = None;
    let mut bodies: Vec<EventBody> = vec![];
    let fold_body = |state: &mut Option<ContractState>, facts: &mut LedgerFacts, seq: u64, stream: events::Stream, date: Date, body: EventBody| {
        let event = Event { prev_hash: Digest([0; 32]), seq, stream, version: seq, effective_date: date, recorded_at: Timestamp(1_800_000_000_000_000), actor: "a".into(), body, idempotency_key: None };
        if let Some(new) = fold(&event, state.as_mut(), facts).unwrap() {
            *state = Some(new);
        }
    };
    for (i, line) in lines.iter().enumerate() {
        let p = Proposal::parse_json(line.as_bytes()).unwrap();
        let body = admit(&p, state.as_ref(), &facts, i as u64 + 1, None).unwrap();
        bodies.push(body.clone());
        fold_body(&mut state, &mut facts, i as u64 + 1, p.stream.clone(), p.effective_date, body);
    }
    // I2 and Pz once more, as a chain from elsewhere could hold them: the first keeps its id.
    let stream = events::Stream::Contract(ContractId::parse("c1").unwrap());
    fold_body(&mut state, &mut facts, 8, stream.clone(), Date::parse("2026-06-06").unwrap(), bodies[1].clone());
    fold_body(&mut state, &mut facts, 9, stream, Date::parse("2026-06-07").unwrap(), bodies[3].clone());
    let s = state.unwrap();
    assert_eq!((s.invoices.len(), s.payments.len()), (4, 3));
    assert_eq!(s.invoice("I2").unwrap().origin.seq, 2, "the first I2 keeps the id");
    assert_eq!(s.currency(), Currency::from_code("USD").unwrap());
    assert_eq!(s.events.get(&4).unwrap().reversed_by.map(|r| r.seq), Some(7), "Pz reversed");
    let before = Before {
        contract_id: &s.contract_id,
        version: s.version,
        last_seq: s.last_seq,
        grant: &s.grant,
        tranches: &s.tranches,
        capacity_changes: &s.capacity_changes,
        resolutions: &s.resolutions,
        invoices: &s.invoices,
        payments: &s.payments,
        credits: &s.credits,
        terminations: &s.terminations,
        reversals: &s.reversals,
        events: s.events.iter().collect(),
        invoice_index: first_positions(s.invoices.iter().map(|i| i.invoice_id.as_str())),
        payment_index: first_positions(s.payments.iter().map(|p| p.payment_id.as_str())),
        paid_by_invoice: paid_by_invoice(&s),
        latest_non_billing_date: s.latest_non_billing_date,
        magnitude_total: s.magnitude_total,
    };
    let bytes = postcard::to_stdvec(&s).unwrap();
    assert_eq!(bytes, postcard::to_stdvec(&before).unwrap(), "the same bytes as before IdIndex and EventFacts");
    let back: ContractState = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.invoice("I10").unwrap().origin.seq, 3);
    assert_eq!(back.payment("Pz").unwrap().origin.seq, 4);
    assert!(back.invoice("I3").is_none());
    let paid = BTreeMap::from([("I10".to_string(), 500), ("I2".to_string(), 700)]);
    assert_eq!(paid_by_invoice(&s), paid, "Pa and the second Pz count; the first Pz is reversed");
}

/// A chain the rules did not make can pay an invoice before it is issued: the sum is kept
/// for the id, counts once the invoice comes, goes back to the id when the invoice is
/// rolled back, and is stored and read back as the map it was.
#[test]
fn payments_naming_an_invoice_not_yet_issued_count_once_it_is() {
    let grant = Proposal::parse_json(br#"{"contract_id":"c1","type":"lease_granted","effective_date":"2026-05-01","data":{"provider":"P","customer":"C","currency":"USD","term":{"start":"2026-06-01","end":"2027-06-01"},"cluster":{"site":"s","gpu_model":"H100","gpus":8},"headline":"1000.00","tranches":[{"id":"base","amount":"1000.00","window":{"start":"2026-06-01","end":"2027-06-01"},"firm":true}]}}"#).unwrap();
    let body = |line: &str| {
        let p = Proposal::parse_json(line.as_bytes()).unwrap();
        p.resolve(Some(Currency::from_code("USD").unwrap())).unwrap()
    };
    let mut facts = LedgerFacts::default();
    let event = |seq: u64, body: EventBody| Event {
        prev_hash: Digest([0; 32]),
        seq,
        stream: events::Stream::Contract(ContractId::parse("c1").unwrap()),
        version: seq,
        effective_date: Date::parse("2026-06-01").unwrap(),
        recorded_at: Timestamp(1_800_000_000_000_000),
        actor: "a".into(),
        body,
        idempotency_key: None,
    };
    let grant_body = admit(&grant, None, &facts, 1, None).unwrap();
    let mut s = fold(&event(1, grant_body), None, &mut facts).unwrap().unwrap();
    let pay = body(r#"{"contract_id":"c1","type":"payment_received","effective_date":"2026-06-01","data":{"payment_id":"P1","amount":"4.00","invoice_id":"I9"}}"#);
    let issue = body(r#"{"contract_id":"c1","type":"invoice_issued","effective_date":"2026-06-01","data":{"invoice_id":"I9","amount":"10.00","due_date":"2026-07-01"}}"#);
    fold(&event(2, pay), Some(&mut s), &mut facts).unwrap();
    let unpaid_before = s.clone();
    assert_eq!(s.paid_by_invoice(), BTreeMap::from([("I9", 400)]));
    let mark = s.mark();
    fold(&event(3, issue.clone()), Some(&mut s), &mut facts).unwrap();
    assert_eq!(s.invoice_owed(s.invoice("I9").unwrap()), 600, "the earlier payment counts");
    assert_eq!(s.paid_by_invoice(), BTreeMap::from([("I9", 400)]));
    // A second invoice of the id (the rules refuse one) adds nothing to what is paid.
    fold(&event(4, issue), Some(&mut s), &mut facts).unwrap();
    assert_eq!(s.invoice_owed(s.invoice("I9").unwrap()), 600);
    for state in [&unpaid_before, &s] {
        let back: ContractState = postcard::from_bytes(&postcard::to_stdvec(state).unwrap()).unwrap();
        assert_eq!(&back, state);
        assert_eq!(back.paid_by_invoice(), BTreeMap::from([("I9", 400)]));
    }
    s.rollback(&mark);
    assert_eq!(s, unpaid_before, "rolled back: the sum is the id's again");
}
