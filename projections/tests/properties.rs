//! Properties of the revenue projections over random histories.
//!
//! A history is a couple of random grants followed by random events of every kind (capacity
//! changes, milestone resolutions, invoices, payments, credits, terminations, reversals,
//! period closes), each proposed to a [`Book`] as the ledger would; the refused ones are
//! dropped, the accepted ones form the history. Then, for every contract:
//! - SPEC section 4's identity, `rpo = transaction_price - recognized`, the definitions of
//!   receivable, deferred revenue and contract asset hold at many dates (window edges, event
//!   dates and their neighbours);
//! - month and quarter periods add up to `recognized`, follow each other and end at D;
//! - appending an event effective after D changes nothing at D;
//! - on a day with no event of the contract and inside no tranche window, nothing changes;
//! - the figures at (D, known_at = K) are those of a book built from the first K events only;
//! - folding the recorded events again gives the same book; portfolio totals are the sums;
//! - the close reports: every rollforward walk has opening + movements = closing, its
//!   openings and closings are the revenue object at A and at B, and each movement line is
//!   zero when no event of its kind takes effect in (A, B]; the RPO buckets and every
//!   waterfall row add up to `rpo`, and when nothing happens after D they equal the revenue
//!   the contract then recognizes; corrections between two positions add up to the change in
//!   recognized revenue and name only events of (A, B].

/// Events are recorded on 2040-01-01 and after: later than every date the tests use, so
/// every period they close has ended (`period_not_ended` is tested in ledger/tests/rules.rs).
const RECORDED_FROM_MICROS: i64 = 2_208_988_800_000_000;

use events::{Date, Proposal, RecordedEvent, Timestamp};
use events::EventKind;
use projections::{add_years, AsOf, BillingState, Book, Contract, ContractState, Figures, Granularity, Line, Portfolio, Walked, report};
use projections::report::PortfolioReport;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const CONTRACTS: [&str; 2] = ["pa", "pb"];
const MILESTONES: [&str; 3] = ["m0", "m1", "m2"]; // tranches wait on m0 or m1; m2 is unknown

fn base_date() -> Date {
    Date::parse("2026-01-01").unwrap()
}

fn day(offset: i64) -> Date {
    base_date().add_days(offset).unwrap()
}

#[derive(Clone, Debug)]
struct TrancheSpec {
    start: u16,
    len: u16,
    amount: u32,
    milestone: Option<u8>,
}

#[derive(Clone, Debug)]
struct GrantSpec {
    currency: u8,
    effective: u16,
    term_offset: u16,
    term_len: u16,
    tranches: Vec<TrancheSpec>,
}

#[derive(Clone, Debug)]
enum Op {
    Capacity {
        c: u8,
        day: u16,
        gpus: i8,
        amount: i32,
    },
    Milestone {
        c: u8,
        day: u16,
        m: u8,
        outcome: u8,
    },
    Invoice {
        c: u8,
        day: u16,
        id: u8,
        amount: u32,
    },
    Payment {
        c: u8,
        day: u16,
        id: u8,
        amount: u32,
        invoice: Option<u8>,
    },
    Credit {
        c: u8,
        day: u16,
        amount: u32,
    },
    Terminate {
        c: u8,
        day: u16,
        fee: u32,
    },
    Reverse {
        c: u8,
        day: u16,
        target: u16,
    },
    Close {
        day: u16,
        lag: u8,
    },
}

fn currency(spec: &GrantSpec) -> (&'static str, u32) {
    [("USD", 2), ("JPY", 0), ("KWD", 3)][usize::from(spec.currency % 3)]
}

/// Minor units as a decimal string with `exponent` decimals.
fn decimal(minor: i64, exponent: u32) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{m}");
    }
    let scale = 10u64.pow(exponent);
    format!("{sign}{}.{:0w$}", m / scale, m % scale, w = exponent as usize)
}

fn grant_json(contract: &str, spec: &GrantSpec) -> String {
    let (code, exp) = currency(spec);
    let start = i64::from(spec.effective) + i64::from(spec.term_offset);
    let len = i64::from(spec.term_len);
    let mut tranches = vec![];
    let mut headline = 0i64;
    for (i, t) in spec.tranches.iter().enumerate() {
        let s = i64::from(t.start) % len;
        let e = (s + i64::from(t.len)).min(len);
        headline += i64::from(t.amount);
        let condition = match t.milestone {
            None => r#""firm": true"#.to_string(),
            Some(m) => format!(r#""milestone": "{}""#, MILESTONES[usize::from(m % 2)]),
        };
        tranches.push(format!(
            r#"{{"id": "t{i}", "amount": "{}", "window": {{"start": "{}", "end": "{}"}}, {condition}}}"#,
            decimal(i64::from(t.amount), exp),
            day(start + s),
            day(start + e)
        ));
    }
    format!(
        r#"{{"contract_id": "{contract}", "type": "lease_granted", "effective_date": "{}", "data": {{"provider": "P", "customer": "C", "currency": "{code}", "term": {{"start": "{}", "end": "{}"}}, "cluster": {{"site": "s", "gpu_model": "g", "gpus": 50}}, "headline": "{}", "tranches": [{}]}}}}"#,
        day(i64::from(spec.effective)),
        day(start),
        day(start + len),
        decimal(headline, exp),
        tranches.join(", ")
    )
}

fn event_json(contract: &str, kind: &str, date: Date, data: String) -> String {
    format!(r#"{{"contract_id": "{contract}", "type": "{kind}", "effective_date": "{date}", "data": {data}}}"#)
}

fn op_json(op: &Op, grants: &[GrantSpec], head_seq: u64) -> String {
    let exp = |c: u8| currency(&grants[usize::from(c) % grants.len()]).1;
    let name = |c: u8| CONTRACTS[usize::from(c) % grants.len()];
    let d = |offset: u16| day(i64::from(offset));
    match *op {
        Op::Capacity { c, day, gpus, amount } => event_json(
            name(c),
            "capacity_changed",
            d(day),
            format!(
                r#"{{"gpus_delta": {gpus}, "amount_delta": "{}"}}"#,
                decimal(i64::from(amount), exp(c))
            ),
        ),
        Op::Milestone { c, day, m, outcome } => event_json(
            name(c),
            "milestone_reached",
            d(day),
            format!(
                r#"{{"milestone": "{}", "outcome": "{}"}}"#,
                MILESTONES[[0, 0, 1, 1, 2][usize::from(m % 5)]],
                ["achieved", "failed", "waived"][usize::from(outcome % 3)]
            ),
        ),
        Op::Invoice { c, day, id, amount } => event_json(
            name(c),
            "invoice_issued",
            d(day),
            format!(
                r#"{{"invoice_id": "I{id}", "amount": "{}", "due_date": "{}"}}"#,
                decimal(i64::from(amount), exp(c)),
                d(day + 30)
            ),
        ),
        Op::Payment {
            c,
            day,
            id,
            amount,
            invoice,
        } => {
            let invoice = invoice
                .map(|i| format!(r#", "invoice_id": "I{i}""#))
                .unwrap_or_default();
            event_json(
                name(c),
                "payment_received",
                d(day),
                format!(
                    r#"{{"payment_id": "P{id}", "amount": "{}"{invoice}}}"#,
                    decimal(i64::from(amount), exp(c))
                ),
            )
        }
        Op::Credit { c, day, amount } => event_json(
            name(c),
            "sla_credit_issued",
            d(day),
            format!(
                r#"{{"amount": "{}", "reason": "sla"}}"#,
                decimal(i64::from(amount), exp(c))
            ),
        ),
        Op::Terminate { c, day, fee } => event_json(
            name(c),
            "contract_terminated",
            d(day),
            format!(r#"{{"fee": "{}"}}"#, decimal(i64::from(fee), exp(c))),
        ),
        Op::Reverse { c, day, target } => event_json(
            name(c),
            "event_reversed",
            d(day),
            // Mostly one of the last few events (likelier of the same contract), sometimes any.
            format!(
                r#"{{"target_seq": {}, "reason": "correction"}}"#,
                if target % 2 == 0 {
                    head_seq.saturating_sub(u64::from(target / 2) % 6).max(1)
                } else {
                    1 + u64::from(target / 2) % head_seq.max(1)
                }
            ),
        ),
        Op::Close { day, lag } => format!(
            r#"{{"type": "period_closed", "effective_date": "{}", "data": {{"period_end": "{}"}}}}"#,
            d(day + u16::from(lag)),
            d(day)
        ),
    }
}

fn tranche_spec() -> impl Strategy<Value = TrancheSpec> {
    (0u16..80, 1u16..80, 1u32..2_000_000, prop::option::of(0u8..2)).prop_map(|(start, len, amount, milestone)| {
        TrancheSpec {
            start,
            len,
            amount,
            milestone,
        }
    })
}

fn grant_spec() -> impl Strategy<Value = GrantSpec> {
    (
        0u8..3,
        0u16..30,
        0u16..20,
        3u16..90,
        prop::collection::vec(tranche_spec(), 1..5),
    )
        .prop_map(|(currency, effective, term_offset, term_len, tranches)| GrantSpec {
            currency,
            effective,
            term_offset,
            term_len,
            tranches,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0u8..2;
    let d = 0u16..150;
    prop_oneof![
        3 => (c.clone(), d.clone(), -20i8..20, -1_500_000i32..1_500_000)
            .prop_map(|(c, day, gpus, amount)| Op::Capacity { c, day, gpus, amount }),
        4 => (c.clone(), d.clone(), 0u8..5, 0u8..3).prop_map(|(c, day, m, outcome)| Op::Milestone { c, day, m, outcome }),
        3 => (c.clone(), d.clone(), 0u8..6, 1u32..3_000_000).prop_map(|(c, day, id, amount)| Op::Invoice { c, day, id, amount }),
        3 => (c.clone(), d.clone(), 0u8..8, 1u32..1_500_000, prop::option::of(0u8..6))
            .prop_map(|(c, day, id, amount, invoice)| Op::Payment { c, day, id, amount, invoice }),
        2 => (c.clone(), d.clone(), 1u32..300_000).prop_map(|(c, day, amount)| Op::Credit { c, day, amount }),
        1 => (c.clone(), d.clone(), 0u32..500_000).prop_map(|(c, day, fee)| Op::Terminate { c, day, fee }),
        4 => (c, d.clone(), any::<u16>()).prop_map(|(c, day, target)| Op::Reverse { c, day, target }),
        1 => (d, 0u8..5).prop_map(|(day, lag)| Op::Close { day, lag }),
    ]
}

fn op_day(op: &Op) -> u16 {
    match *op {
        Op::Capacity { day, .. }
        | Op::Milestone { day, .. }
        | Op::Invoice { day, .. }
        | Op::Payment { day, .. }
        | Op::Credit { day, .. }
        | Op::Terminate { day, .. }
        | Op::Reverse { day, .. }
        | Op::Close { day, .. } => day,
    }
}

/// Grants and ops; in about half the histories the ops come in date order (as a ledger mostly
/// sees them, and so that period closes refuse less), in the others in any order.
fn history() -> impl Strategy<Value = (Vec<GrantSpec>, Vec<Op>)> {
    (
        prop::collection::vec(grant_spec(), 1..3),
        prop::collection::vec(op(), 0..60),
        any::<bool>(),
    )
        .prop_map(|(grants, mut ops, sorted)| {
            if sorted {
                ops.sort_by_key(op_day);
            }
            (grants, ops)
        })
}

/// The accepted proposals and their recorded events, in seq order.
struct Replayed {
    book: Book,
    accepted: Vec<(Proposal, RecordedEvent)>,
    /// Events a contract's [`BillingState`] admitted (each checked against the rules).
    billing_admitted: usize,
}

fn now(seq: u64) -> Timestamp {
    Timestamp(RECORDED_FROM_MICROS + 1_000 * seq as i64)
}

fn all_dates(state: &ContractState, extra: &[Date]) -> Vec<Date> {
    let mut dates = BTreeSet::new();
    let mut add = |d: Date| {
        for delta in [-1, 0, 1] {
            if let Some(x) = d.add_days(delta) {
                dates.insert(x);
            }
        }
    };
    add(state.grant.origin.date);
    add(state.grant.term.start);
    add(state.grant.term.end);
    for t in &state.tranches {
        add(t.window.start);
        add(t.window.end);
    }
    for e in state.events.values() {
        add(e.origin.date);
    }
    for d in extra {
        add(*d);
    }
    dates.into_iter().collect()
}

fn check_figures(state: &ContractState, at: &AsOf) -> Result<Figures, TestCaseError> {
    let f = state
        .figures(at)
        .map_err(|e| TestCaseError::fail(format!("figures at {at:?}: {e}")))?;
    let ctx = || format!("{} at {} known at {}: {f:?}", state.contract_id, at.date, at.known_at);
    prop_assert_eq!(
        f.headline + f.fees - f.credits,
        f.transaction_price + f.remaining_conditional + f.forfeited + f.cancelled,
        "identity, {}",
        ctx()
    );
    prop_assert_eq!(f.rpo, f.transaction_price - f.recognized, "rpo, {}", ctx());
    prop_assert_eq!(f.receivable, f.billed - f.collected, "receivable, {}", ctx());
    prop_assert_eq!(
        f.deferred_revenue,
        (f.billed - f.recognized).max(0),
        "deferred, {}",
        ctx()
    );
    prop_assert_eq!(
        f.contract_asset,
        (f.recognized - f.billed).max(0),
        "contract asset, {}",
        ctx()
    );
    prop_assert!(
        f.remaining_conditional >= 0 && f.forfeited >= 0 && f.fees >= 0 && f.credits >= 0,
        "{}",
        ctx()
    );
    prop_assert!(f.billed >= 0 && f.collected >= 0, "{}", ctx());
    prop_assert_eq!(
        state.recognized(at).unwrap(),
        f.recognized,
        "ContractState::recognized, {}",
        ctx()
    );
    if at.date < state.grant.origin.date || !state.known_at(at.known_at) {
        prop_assert_eq!(f, Figures::default(), "nothing counts before the grant, {}", ctx());
    }
    for granularity in [Granularity::Month, Granularity::Quarter] {
        let periods = state.periods(at, granularity).unwrap();
        let sum: i128 = periods.iter().map(|p| p.recognized).sum();
        prop_assert_eq!(sum, f.recognized, "{:?} periods add up, {}", granularity, ctx());
        if at.date >= state.grant.origin.date && state.known_at(at.known_at) {
            prop_assert_eq!(
                &periods[0].period,
                &granularity.period_of(state.grant.origin.date),
                "{}",
                ctx()
            );
            prop_assert_eq!(periods.last().unwrap().end, at.date, "{}", ctx());
            for pair in periods.windows(2) {
                let next = pair[0].end.add_days(1).unwrap();
                prop_assert_eq!(
                    &pair[1].period,
                    &granularity.period_of(next),
                    "consecutive periods, {}",
                    ctx()
                );
                prop_assert_eq!(
                    pair[0].end,
                    granularity.period_of(pair[0].end).last_day(),
                    "periods end at period ends, {}",
                    ctx()
                );
            }
            // Each period's revenue is recognized(end) - recognized(previous end).
            let mut previous = 0;
            for p in &periods {
                let r = state.recognized(&at.with_date(p.end)).unwrap();
                prop_assert_eq!(p.recognized, r - previous, "period {} of {}", p.period, ctx());
                previous = r;
            }
        } else {
            prop_assert!(periods.is_empty(), "{}", ctx());
        }
    }
    Ok(f)
}

/// Proposes every op; checks on the way that an accepted event changes nothing at dates before
/// its effective date (nor anything at all known before it).
fn replay(grants: &[GrantSpec], ops: &[Op]) -> Result<Replayed, TestCaseError> {
    let mut book = Book::new();
    let mut accepted = vec![];
    let mut billing_admitted = 0;
    let mut live = BTreeMap::new();
    let texts = grants
        .iter()
        .enumerate()
        .map(|(i, g)| grant_json(CONTRACTS[i], g))
        .collect::<Vec<_>>();
    let mut queue: Vec<Result<String, &Op>> = texts.into_iter().map(Ok).collect();
    queue.extend(ops.iter().map(Err));
    for item in queue {
        let text = match item {
            Ok(t) => t,
            Err(op) => op_json(op, grants, book.head_seq),
        };
        let proposal =
            Proposal::parse_json(text.as_bytes()).map_err(|r| TestCaseError::fail(format!("{text}: {r}")))?;
        let before = book.clone();
        let outcome = book.propose(&proposal, "prop", now(book.head_seq + 1));
        billing_admitted += usize::from(check_billing_state(&before, &proposal, outcome.as_ref().ok(), &book)?);
        let recorded = match outcome {
            Ok(recorded) => recorded,
            Err(r) => {
                if std::env::var_os("PROP_DEBUG").is_some() {
                    eprintln!("REFUSED {}", r.code.as_str());
                }
                prop_assert_eq!(&book, &before, "a refused event changed the book");
                continue;
            }
        };
        prop_assert_eq!(recorded.event.seq, before.head_seq + 1);
        let date = recorded.event.effective_date;
        for (id, old) in &before.contracts {
            let new = &book.contracts[id];
            for back in [1, 2, 9, 40] {
                let Some(d) = date.add_days(-back) else { continue };
                let at = AsOf::date(d);
                prop_assert_eq!(
                    old.figures(&at).unwrap(),
                    new.figures(&at).unwrap(),
                    "appending seq {} effective {} changed {} at {}",
                    recorded.event.seq,
                    date,
                    id,
                    d
                );
            }
            // Known at the previous head, nothing changes at any date.
            let at = AsOf {
                date: date.add_days(30).unwrap(),
                known_at: before.head_seq,
            };
            prop_assert_eq!(old.figures(&at).unwrap(), new.figures(&at).unwrap());
        }
        check_live_billing(&mut live, &book, &recorded)?;
        accepted.push((proposal, recorded));
    }
    Ok(Replayed { book, accepted, billing_admitted })
}

/// A billing state kept over many events, as a writer keeps one: from the state after the
/// contract's last event other than an invoice or a payment (`base`), every later invoice
/// and payment folded into it.
struct LiveBilling {
    base: BillingState,
    base_mark: projections::Mark,
    base_summary: projections::Summary,
    folded: BillingState,
    since: Vec<events::Event>,
}

/// After each accepted event: a contract's live billing state, folded event after event,
/// is the billing state of its state; rolled back over every event since its base, it is
/// the base; and the base's summary extended by those events is the state's summary.
fn check_live_billing(live: &mut BTreeMap<events::ContractId, LiveBilling>, book: &Book, recorded: &RecordedEvent) -> Result<(), TestCaseError> {
    let event = &recorded.event;
    let Some(id) = event.stream.contract_id() else { return Ok(()) };
    let state = &book.contracts[id];
    let billing_kind = matches!(event.body.kind(), EventKind::InvoiceIssued | EventKind::PaymentReceived);
    let folds = billing_kind && live.get_mut(id).is_some_and(|l| l.folded.apply(event).is_ok());
    if !folds {
        live.remove(id);
        if let Some(base) = BillingState::of(state) {
            let summary = state.summary().unwrap();
            live.insert(id.clone(), LiveBilling { folded: base.clone(), base, base_mark: state.mark(), base_summary: summary, since: vec![] });
        }
        return Ok(());
    }
    let l = live.get_mut(id).expect("folded above");
    l.since.push(event.clone());
    let of_state = BillingState::of(state);
    prop_assert_eq!(Some(&l.folded), of_state.as_ref(), "a billing state folded over {} events", l.since.len());
    let mut undone = l.folded.clone();
    undone.rollback(&l.base_mark, l.since.iter().rev());
    prop_assert_eq!(&undone, &l.base, "rolled back over {} events", l.since.len());
    let extended = l.base_summary.with_billing_events(&l.since).unwrap().unwrap();
    prop_assert_eq!(extended, state.summary().unwrap(), "a summary extended by {} events", l.since.len());
    Ok(())
}

/// A contract's [`BillingState`] decides on `proposal` as the rules do on its full state
/// (`admitted`: what they recorded), whenever it decides at all: it admits exactly the
/// invoices and payments the rules admit, with the same body, and nothing else. Folding the
/// event into it gives the billing state of the full state after; rolling it back gives the
/// one before; the summary extended by it is the full state's. Whether it admitted.
fn check_billing_state(before: &Book, proposal: &Proposal, admitted: Option<&RecordedEvent>, after: &Book) -> Result<bool, TestCaseError> {
    let Some(state) = proposal.stream.contract_id().and_then(|id| before.contracts.get(id)) else { return Ok(false) };
    let Some(billing) = BillingState::of(state) else { return Ok(false) };
    let decided = billing.admit(proposal, &before.ledger);
    let billing_kind = matches!(proposal.kind(), EventKind::InvoiceIssued | EventKind::PaymentReceived);
    match (admitted, &decided) {
        (Some(recorded), Some(body)) => prop_assert_eq!(&recorded.event.body, body, "the billing state admits the same body"),
        (Some(recorded), None) => prop_assert!(!billing_kind, "the billing state was not sure of an admitted {:?}", recorded.event.body),
        (None, Some(body)) => prop_assert!(false, "the billing state admitted {:?}, which the rules refused", body),
        (None, None) => {}
    }
    let (Some(recorded), Some(_)) = (admitted, decided) else { return Ok(false) };
    let new_state = &after.contracts[&state.contract_id];
    let mut folded = billing.clone();
    folded.apply(&recorded.event).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let of_new = BillingState::of(new_state);
    prop_assert_eq!(Some(&folded), of_new.as_ref(), "folding into the billing state");
    folded.rollback(&state.mark(), [&recorded.event]);
    prop_assert_eq!(&folded, &billing, "rolling the billing state back");
    let extended = state.summary().unwrap().with_billing_events(std::slice::from_ref(&recorded.event)).unwrap().unwrap();
    prop_assert_eq!(extended, new_state.summary().unwrap(), "the summary extended by the event");
    Ok(true)
}

fn check_history(grants: Vec<GrantSpec>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let Replayed { book, accepted, .. } = replay(&grants, &ops)?;
    let far = [Date::parse("2027-06-30").unwrap(), Date::parse("2025-12-31").unwrap()];

    // Every figure at many dates, everything known; a contract's summary gives the same
    // figures and periods as its state, and answers for no point of view before its last
    // event.
    for state in book.contracts.values() {
        let summary = state.summary().unwrap();
        let before_last = AsOf { date: far[0], known_at: state.last_seq - 1 };
        prop_assert!(Contract::of_summary(&summary, &before_last).is_none());
        for d in all_dates(state, &far) {
            let at = AsOf::date(d);
            let f = check_figures(state, &at)?;
            let from_summary = Contract::of_summary(&summary, &at).unwrap();
            prop_assert_eq!(from_summary.figures(&at).unwrap(), f, "{}'s summary at {}", state.contract_id, d);
            for g in [Granularity::Month, Granularity::Quarter] {
                prop_assert_eq!(from_summary.periods(&at, g).unwrap(), state.periods(&at, g).unwrap());
            }
            // The close reports read summaries too: the same RPO, schedule and rollforward
            // (from a year before and from the grant's eve, billing lines included).
            prop_assert_eq!(from_summary.rpo_disclosure(&at).unwrap(), state.rpo_disclosure(&at).unwrap(), "{} rpo at {}", state.contract_id, d);
            prop_assert_eq!(from_summary.schedule(&at).unwrap(), state.schedule(&at).unwrap(), "{} schedule at {}", state.contract_id, d);
            prop_assert_eq!(from_summary.granted(), state.grant.origin.date);
            for from in [d.add_days(-365), state.grant.origin.date.add_days(-1)].into_iter().flatten().filter(|from| *from < d) {
                let from = at.with_date(from);
                prop_assert_eq!(from_summary.rollforward(&from, &at).unwrap(), state.rollforward(&from, &at).unwrap(), "{} rollforward to {}", state.contract_id, d);
            }
            let view = state.view(&at).unwrap();
            prop_assert_eq!(view.figures, f);
            let json = report::revenue_json(state, &at, Granularity::Quarter).unwrap();
            prop_assert_eq!(
                json["periods"].as_array().map(Vec::len),
                Some(state.periods(&at, Granularity::Quarter).unwrap().len())
            );
        }
    }

    check_close_reports(&book)?;

    // Quiet days: no event of the contract takes effect that day and no tranche window holds
    // it, so no figure changes from the day before.
    for state in book.contracts.values() {
        let event_days: BTreeSet<Date> = state.events.values().map(|e| e.origin.date).collect();
        let first = state.grant.origin.date.add_days(-2).unwrap();
        let last = event_days
            .iter()
            .copied()
            .chain([state.grant.term.end])
            .max()
            .unwrap()
            .add_days(3)
            .unwrap();
        let mut d = first;
        let mut previous = state.figures(&AsOf::date(d)).unwrap();
        while d < last {
            d = d.add_days(1).unwrap();
            let f = state.figures(&AsOf::date(d)).unwrap();
            let in_window = state.tranches.iter().any(|t| t.window.start <= d && d < t.window.end);
            if !event_days.contains(&d) && !in_window {
                prop_assert_eq!(f, previous, "{} changed on the quiet day {}", state.contract_id, d);
            }
            previous = f;
        }
    }

    // Truncation: known at K = a book of the first K events.
    let head = book.head_seq;
    let mut ks: BTreeSet<u64> = [0, 1, head / 4, head / 2, (3 * head) / 4, head.saturating_sub(1), head]
        .into_iter()
        .collect();
    ks.retain(|k| *k <= head);
    for k in ks {
        let mut truncated = Book::new();
        for (proposal, recorded) in accepted.iter().take(k as usize) {
            let again = truncated
                .propose(proposal, "prop", now(truncated.head_seq + 1))
                .map_err(|r| TestCaseError::fail(format!("seq {} refused on replay: {r}", recorded.event.seq)))?;
            prop_assert_eq!(
                again.hash,
                recorded.hash,
                "replaying seq {} gives the same event",
                recorded.event.seq
            );
        }
        prop_assert_eq!(truncated.head_seq, k);
        for (id, state) in &book.contracts {
            let Some(small) = truncated.contracts.get(id) else {
                prop_assert!(
                    !state.known_at(k),
                    "{} known at {} but not in the truncated book",
                    id,
                    k
                );
                let f = state
                    .figures(&AsOf {
                        date: Date::parse("2027-06-30").unwrap(),
                        known_at: k,
                    })
                    .unwrap();
                prop_assert_eq!(f, Figures::default());
                continue;
            };
            for d in all_dates(state, &far) {
                let at = AsOf { date: d, known_at: k };
                let full = check_figures(state, &at)?;
                prop_assert_eq!(
                    full,
                    small.figures(&AsOf::date(d)).unwrap(),
                    "{} at {} known at {}",
                    id,
                    d,
                    k
                );
                for g in [Granularity::Month, Granularity::Quarter] {
                    prop_assert_eq!(
                        state.periods(&at, g).unwrap(),
                        small.periods(&AsOf::date(d), g).unwrap()
                    );
                }
                let mut view = state.view(&at).unwrap();
                let small_view = small.view(&AsOf::date(d)).unwrap();
                view.at = small_view.at;
                prop_assert_eq!(view, small_view, "view of {} at {} known at {}", id, d, k);
            }
        }
    }

    // Folding the recorded events again gives the same book.
    let mut folded = Book::new();
    for (_, recorded) in &accepted {
        folded.apply(recorded).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    prop_assert_eq!(&folded, &book);

    // Rolling a state back to a mark undoes exactly what was folded after it: for every
    // contract and cut point, the state equals a fold of the events up to the cut.
    for id in book.contracts.keys() {
        let own: Vec<&RecordedEvent> = accepted.iter().map(|(_, r)| r).filter(|r| r.event.stream.contract_id() == Some(id)).collect();
        for cut in 1..=own.len() {
            let mut ledger = projections::LedgerFacts::default();
            let mut state = projections::fold(&own[0].event, None, &mut ledger).unwrap().unwrap();
            for r in &own[1..cut] {
                projections::fold(&r.event, Some(&mut state), &mut ledger).unwrap();
            }
            let before = state.clone();
            let mark = state.mark();
            for r in &own[cut..] {
                projections::fold(&r.event, Some(&mut state), &mut ledger).unwrap();
            }
            state.rollback(&mark);
            prop_assert_eq!(&state, &before, "{} rolled back to {} of {} events", id, cut, own.len());
        }
    }

    // A summary made from an earlier one (one, two and five events of the contract back)
    // equals one made whole, after every event.
    let mut states: BTreeMap<events::ContractId, (ContractState, Vec<projections::Summary>)> = BTreeMap::new();
    let mut ledger_facts = projections::LedgerFacts::default();
    for (_, recorded) in &accepted {
        let event = &recorded.event;
        let Some(id) = event.stream.contract_id() else {
            ledger_facts.apply(event).unwrap();
            continue;
        };
        match states.get_mut(id) {
            Some((state, _)) => {
                projections::fold(event, Some(state), &mut ledger_facts).unwrap();
            }
            None => {
                let state = projections::fold(event, None, &mut ledger_facts).unwrap().unwrap();
                states.insert(id.clone(), (state, vec![]));
            }
        }
        let (state, earlier) = states.get_mut(id).unwrap();
        let whole = state.summary().unwrap();
        for back in [1, 2, 5] {
            if let Some(before) = earlier.len().checked_sub(back).map(|i| &earlier[i]) {
                prop_assert_eq!(&state.summary_from(before).unwrap(), &whole, "{} at seq {} from {} back", id, event.seq, back);
            }
        }
        earlier.push(whole);
    }

    // The portfolio's revenue per period and currency is the sum of its contracts' (they
    // start in different periods), with their ends, whether read from states or from
    // summaries: at a month end, at a day within a month and within a quarter, and before
    // some contracts begin.
    for date in [far[0], "2026-02-14".parse().unwrap(), "2026-05-31".parse().unwrap(), "2025-11-03".parse().unwrap()] {
        let at = AsOf::date(date);
        for granularity in [Granularity::Month, Granularity::Quarter] {
            let mut expected: BTreeMap<(String, String), (Date, i128)> = BTreeMap::new();
            for state in book.contracts.values() {
                for p in state.periods(&at, granularity).unwrap() {
                    let slot = expected.entry((state.currency().to_string(), p.period.to_string())).or_insert((p.end, 0));
                    prop_assert_eq!(slot.0, p.end);
                    slot.1 += p.recognized;
                }
            }
            let summaries: Vec<_> = book.contracts.values().map(|s| s.summary().unwrap()).collect();
            let mut from_states = report::PortfolioRevenue::new(at, granularity);
            let mut from_summaries = report::PortfolioRevenue::new(at, granularity);
            for (state, summary) in book.contracts.values().zip(&summaries) {
                from_states.add(Contract::state(state)).unwrap();
                from_summaries.add(Contract::of_summary(summary, &at).unwrap()).unwrap();
            }
            prop_assert_eq!(&from_states, &from_summaries);
            // Its JSON written in pieces (rows in ranges, joined by commas) is its JSON.
            let whole = serde_json::to_vec(&from_states).unwrap();
            let n = from_states.contracts.len();
            for split in [0, n / 2, n] {
                let mut pieces = from_states.json_head();
                let (mut first, mut second) = (vec![], vec![]);
                from_states.write_rows(0..split, &mut first);
                from_states.write_rows(split..n, &mut second);
                pieces.extend(&first);
                if !first.is_empty() && !second.is_empty() {
                    pieces.push(b',');
                }
                pieces.extend(&second);
                pieces.extend(report::PortfolioRevenue::JSON_TAIL);
                prop_assert_eq!(String::from_utf8(pieces).unwrap(), String::from_utf8(whole.clone()).unwrap());
            }
            let got: BTreeMap<(String, String), (Date, i128)> = from_states
                .periods
                .iter()
                .flat_map(|(c, by_period)| by_period.iter(date).map(move |(p, end, r)| ((c.to_string(), p.to_string()), (end, r))))
                .collect();
            prop_assert_eq!(got, expected, "{} {:?}", date, granularity);
        }
    }

    // Portfolio totals are the per-currency sums.
    let at = AsOf::date(Date::parse("2026-03-31").unwrap());
    let mut portfolio = Portfolio::default();
    for state in book.contracts.values() {
        portfolio.add(state, &at).unwrap();
    }
    for (currency, totals) in &portfolio.totals {
        let mine: Vec<Figures> = book
            .contracts
            .values()
            .filter(|s| s.currency() == *currency)
            .map(|s| s.figures(&at).unwrap())
            .collect();
        prop_assert_eq!(totals.contracts, mine.len() as u64);
        prop_assert_eq!(
            totals.figures.recognized,
            mine.iter().map(|f| f.recognized).sum::<i128>()
        );
        prop_assert_eq!(totals.figures.headline, mine.iter().map(|f| f.headline).sum::<i128>());
        prop_assert_eq!(
            totals.figures.deferred_revenue,
            mine.iter().map(|f| f.deferred_revenue).sum::<i128>()
        );
    }
    Ok(())
}

/// Does an event of `kinds` take effect in (a, b] (known at `k`)?
fn happens(state: &ContractState, kinds: &[EventKind], a: Date, b: Date, k: u64) -> bool {
    state.events.values().any(|e| kinds.contains(&e.kind) && e.origin.seq <= k && a < e.origin.date && e.origin.date <= b)
}

fn check_rollforward(state: &ContractState, from: &AsOf, to: &AsOf) -> Result<(), TestCaseError> {
    let r = state.rollforward(from, to).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let (fa, fb) = (state.figures(from).unwrap(), state.figures(to).unwrap());
    let ctx = || format!("{} ({}, {}] known at {}: {r:?}", state.contract_id, from.date, to.date, to.known_at);
    prop_assert_eq!(r.opening, fa, "opening = the revenue object at A, {}", ctx());
    prop_assert_eq!(r.closing, fb, "closing = the revenue object at B, {}", ctx());
    for walk in &r.walks {
        let sum: i128 = walk.opening + walk.movements.iter().sum::<i128>();
        prop_assert_eq!(sum, walk.closing, "{} rolls forward, {}", walk.balance.as_str(), ctx());
    }
    let (net, receivable, rpo, cond) =
        (r.walk(Walked::NetContractPosition), r.walk(Walked::Receivable), r.walk(Walked::Rpo), r.walk(Walked::RemainingConditional));
    prop_assert_eq!((net.opening, net.closing), (fa.billed - fa.recognized, fb.billed - fb.recognized), "{}", ctx());
    prop_assert_eq!(net.opening, fa.deferred_revenue - fa.contract_asset, "{}", ctx());
    prop_assert_eq!((receivable.opening, receivable.closing), (fa.receivable, fb.receivable), "{}", ctx());
    prop_assert_eq!((rpo.opening, rpo.closing), (fa.rpo, fb.rpo), "{}", ctx());
    prop_assert_eq!((cond.opening, cond.closing), (fa.remaining_conditional, fb.remaining_conditional), "{}", ctx());
    prop_assert_eq!(rpo.line(Line::Recognized), fa.recognized - fb.recognized, "{}", ctx());
    prop_assert_eq!(receivable.line(Line::Billed), fb.billed - fa.billed, "{}", ctx());
    prop_assert_eq!(receivable.line(Line::Collected), fa.collected - fb.collected, "{}", ctx());
    // Each line moves only when an event of its kind takes effect in the period.
    let (a, b, k) = (from.date, to.date, to.known_at);
    use EventKind::*;
    let quiet = |line: Line, kinds: &[EventKind]| -> Result<(), TestCaseError> {
        if !happens(state, kinds, a, b, k) {
            prop_assert_eq!(rpo.line(line) + cond.line(line), 0, "{} without {:?} in the period, {}", line.as_str(), kinds, ctx());
        }
        Ok(())
    };
    quiet(Line::Reversals, &[EventReversed])?;
    quiet(Line::Fees, &[ContractTerminated])?;
    // A standing termination also cancels value that newly counts under it.
    quiet(Line::Cancellations, &[ContractTerminated, MilestoneReached, CapacityChanged, LeaseGranted])?;
    quiet(Line::Credits, &[SlaCreditIssued])?;
    quiet(Line::CapacityIncreases, &[CapacityChanged])?;
    quiet(Line::CapacityDecreases, &[CapacityChanged])?;
    quiet(Line::MilestonesAchieved, &[MilestoneReached, LeaseGranted])?;
    quiet(Line::Achieved, &[MilestoneReached, LeaseGranted])?;
    quiet(Line::Forfeited, &[MilestoneReached, ContractTerminated, LeaseGranted])?;
    quiet(Line::NewContracts, &[LeaseGranted])?;
    prop_assert!(rpo.line(Line::CapacityIncreases) >= 0 && rpo.line(Line::CapacityDecreases) <= 0, "{}", ctx());
    prop_assert!(rpo.line(Line::Credits) <= 0 && rpo.line(Line::Fees) >= 0 && cond.line(Line::Forfeited) <= 0, "{}", ctx());
    Ok(())
}

fn check_rpo_and_waterfall(state: &ContractState, at: &AsOf) -> Result<(), TestCaseError> {
    let f = state.figures(at).unwrap();
    let d = state.rpo_disclosure(at).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let ctx = || format!("{} at {} known at {}: {d:?}", state.contract_id, at.date, at.known_at);
    prop_assert_eq!(d.rpo, f.rpo, "{}", ctx());
    prop_assert_eq!(d.years.iter().map(|b| b.amount).sum::<i128>(), f.rpo, "the yearly buckets add up to rpo, {}", ctx());
    prop_assert_eq!(d.next_12_months + d.thereafter, f.rpo, "{}", ctx());
    prop_assert_eq!(d.years[0].amount, d.next_12_months, "{}", ctx());
    prop_assert_eq!(d.years[0].through, add_years(at.date, 1), "{}", ctx());
    for pair in d.years.windows(2) {
        prop_assert_eq!(pair[0].through, pair[1].after, "consecutive buckets, {}", ctx());
    }
    // When nothing of the contract takes effect after D, the schedule is what the revenue
    // object then recognizes (an independent check of "as it stands at D").
    let later = state.events.values().any(|e| e.origin.seq <= at.known_at && e.origin.date > at.date);
    let year = add_years(at.date, 1);
    if !later {
        let recognized = |date: Date| state.figures(&at.with_date(date)).unwrap().recognized;
        prop_assert_eq!(d.next_12_months, recognized(year) - f.recognized, "next 12 months, {}", ctx());
        prop_assert_eq!(d.thereafter, recognized(Date::parse("9999-12-31").unwrap()) - recognized(year), "thereafter, {}", ctx());
    }
    for g in [Granularity::Month, Granularity::Quarter] {
        let mut builder = report::WaterfallBuilder::new(*at, g);
        builder.add(state).unwrap();
        let w = builder.finish().map_err(|e| TestCaseError::fail(e.to_string()))?;
        if state.grant.origin.date > at.date || !state.known_at(at.known_at) {
            prop_assert!(w.rows.is_empty());
            continue;
        }
        let row = &w.rows[0];
        prop_assert_eq!(row.scheduled.iter().sum::<i128>(), f.rpo, "waterfall row adds up to rpo, {}", ctx());
        prop_assert_eq!(row.remaining_conditional, f.remaining_conditional);
        if !later {
            for (column, amount) in w.columns.iter().zip(&row.scheduled) {
                let recognized = |date: Date| state.figures(&at.with_date(date)).unwrap().recognized;
                prop_assert_eq!(*amount, recognized(column.through) - recognized(column.after), "waterfall {} of {}", column.label, ctx());
            }
        }
    }
    Ok(())
}

fn check_corrections(state: &ContractState, as_of: Date, a: u64, b: u64) -> Result<(), TestCaseError> {
    let corrections = state.corrections(as_of, a, b, Granularity::Month).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let recognized = |k: u64| state.figures(&AsOf { date: as_of, known_at: k }).unwrap().recognized;
    let delta: i128 = corrections.iter().map(|c| c.after - c.before).sum();
    prop_assert_eq!(delta, recognized(b) - recognized(a), "{} corrections at {} from {} to {}: {:?}", state.contract_id, as_of, a, b, corrections);
    let before = state.periods(&AsOf { date: as_of, known_at: a }, Granularity::Month).unwrap();
    let after = state.periods(&AsOf { date: as_of, known_at: b }, Granularity::Month).unwrap();
    for p in &after {
        let was = before.iter().find(|x| x.period == p.period).map_or(0, |x| x.recognized);
        let listed = corrections.iter().find(|c| c.period == p.period);
        prop_assert_eq!(listed.is_some(), was != p.recognized, "period {} listed iff it changed", p.period);
        if let Some(c) = listed {
            prop_assert_eq!((c.before, c.after), (was, p.recognized));
            prop_assert!(!c.causes.is_empty(), "a correction has causes: {:?}", c);
            for cause in &c.causes {
                prop_assert!(a < cause.seq && cause.seq <= b && cause.effective_date <= as_of, "{:?}", cause);
                prop_assert!(state.events.contains_key(&cause.seq));
            }
        }
    }
    Ok(())
}

/// The close reports of every contract, at a spread of dates and positions.
fn check_close_reports(book: &Book) -> Result<(), TestCaseError> {
    let head = book.head_seq;
    for state in book.contracts.values() {
        let dates = all_dates(state, &[Date::parse("2027-06-30").unwrap()]);
        // Every fourth date, so the check stays fast, plus the first and last.
        let mut sample: Vec<Date> = dates.iter().copied().step_by(4).chain(dates.last().copied()).collect();
        sample.dedup();
        for k in [head, head / 2] {
            for (i, a) in sample.iter().enumerate() {
                let at = AsOf { date: *a, known_at: k };
                check_rpo_and_waterfall(state, &at)?;
                for b in sample.iter().skip(i + 1).step_by(2) {
                    check_rollforward(state, &at, &AsOf { date: *b, known_at: k })?;
                }
            }
        }
        for d in sample.iter().step_by(3) {
            for (a, b) in [(0, head), (head / 3, head), (head / 2, (3 * head) / 4)] {
                if a < b {
                    check_corrections(state, *d, a, b)?;
                }
            }
        }
    }
    // Portfolio rollforward totals are the per-currency sums of the contracts'.
    let (from, to) = (AsOf::date(Date::parse("2026-02-28").unwrap()), AsOf::date(Date::parse("2026-05-31").unwrap()));
    let mut portfolio = report::PortfolioRollforward::new(from, to);
    for state in book.contracts.values() {
        portfolio.add(state).unwrap();
    }
    for (currency, (count, total)) in &portfolio.totals {
        let mine: Vec<_> = portfolio.contracts.iter().filter(|r| r.currency == *currency).collect();
        prop_assert_eq!(*count, mine.len() as u64);
        for balance in Walked::ALL {
            let w = total.walk(balance);
            prop_assert_eq!(w.closing, mine.iter().map(|r| r.rollforward.walk(balance).closing).sum::<i128>());
            prop_assert_eq!(w.opening + w.movements.iter().sum::<i128>(), w.closing);
        }
    }
    Ok(())
}

proptest! {
    // 256 cases by default (about 2 s in debug); PROPTEST_CASES=5000 for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn revenue_properties_hold_for_random_histories((grants, ops) in history()) {
        check_history(grants, ops)?;
    }
}

/// The generator must produce histories where most kinds of events are actually accepted,
/// or the properties above are vacuous.
#[test]
fn generated_histories_exercise_every_kind() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut kinds = std::collections::BTreeMap::<&'static str, usize>::new();
    let mut terminated_with_tranches = 0;
    let mut billing_admitted = 0;
    for _ in 0..120 {
        let (grants, ops) = history().new_tree(&mut runner).unwrap().current();
        let replayed = replay(&grants, &ops).unwrap();
        billing_admitted += replayed.billing_admitted;
        for (_, r) in &replayed.accepted {
            *kinds.entry(r.event.body.kind().as_str()).or_default() += 1;
        }
        for state in replayed.book.contracts.values() {
            let at = AsOf::date(Date::parse("2027-12-31").unwrap());
            let f = state.figures(&at).unwrap();
            if f.cancelled != 0 || f.forfeited != 0 {
                terminated_with_tranches += 1;
            }
        }
    }
    eprintln!(
        "accepted per kind over 120 histories: {kinds:?}; with cancelled/forfeited value: {terminated_with_tranches}"
    );
    for kind in [
        "lease_granted",
        "capacity_changed",
        "milestone_reached",
        "invoice_issued",
        "payment_received",
        "sla_credit_issued",
        "contract_terminated",
        "event_reversed",
        "period_closed",
    ] {
        assert!(
            kinds.get(kind).copied().unwrap_or(0) >= 5,
            "too few accepted {kind}: {kinds:?}"
        );
    }
    assert!(
        terminated_with_tranches >= 5,
        "too few histories with cancelled or forfeited value"
    );
    // Every accepted invoice and payment was one a billing state could decide on too.
    let billing = kinds["invoice_issued"] + kinds["payment_received"];
    eprintln!("admitted by a billing state: {billing_admitted} of {billing} invoices and payments");
    // Not a rule (a billing state may be unsure of what the rules admit: amounts past 64
    // bits, a payment id's hash seen before), but with these histories' amounts and ids it
    // is sure of every one, which is what makes it worth keeping.
    assert_eq!(billing_admitted, billing, "a billing state admits every invoice and payment the rules admit");
}

/// A payment copied from elsewhere (a follower does not decide again) that leaves an
/// invoice owed more than 64 bits hold is refused by the billing state, which is then
/// unchanged: it could not give back exactly what was owed if the group were rolled back.
/// The full state takes it.
#[test]
fn a_billing_state_refuses_a_copied_payment_it_could_not_roll_back() {
    let mut book = Book::new();
    let grant = r#"{"contract_id":"pa","type":"lease_granted","effective_date":"2026-01-01","data":{"provider":"P","customer":"C","currency":"USD","term":{"start":"2026-01-01","end":"2027-01-01"},"cluster":{"site":"s","gpu_model":"H100","gpus":100},"headline":"3650.00","tranches":[{"id":"firm","amount":"3650.00","window":{"start":"2026-01-01","end":"2027-01-01"},"firm":true}]}}"#;
    book.propose(&Proposal::parse_json(grant.as_bytes()).unwrap(), "prop", now(1)).unwrap();
    let invoice = Proposal::parse_json(event_json("pa", "invoice_issued", day(1), r#"{"invoice_id": "I1", "amount": "5.00", "due_date": "2026-03-01"}"#.into()).as_bytes()).unwrap();
    let invoiced = book.propose(&invoice, "prop", now(2)).unwrap();
    let billing = BillingState::of(&book.contracts[&events::ContractId::parse("pa").unwrap()]).unwrap();
    let mut payment = invoiced.event.clone();
    payment.seq += 1;
    payment.version += 1;
    payment.body = events::EventBody::PaymentReceived(events::PaymentReceived {
        payment_id: "P1".into(),
        amount: events::Money::new(i128::from(i64::MAX) * 4, events::Currency::from_code("USD").unwrap()).unwrap(),
        invoice_id: Some("I1".into()),
    });
    let mut copied = billing.clone();
    assert!(copied.apply(&payment).is_err());
    assert_eq!(copied, billing, "refused, it is unchanged");
    let mut state = book.contracts[&events::ContractId::parse("pa").unwrap()].clone();
    state.apply(&payment).unwrap();
}
