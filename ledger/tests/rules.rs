//! Every validation rule of SPEC section 4: the event is refused with its own code, and
//! nothing is written (head, chain and contract unchanged).

mod common;
use common::*;
use events::{Code, ContractId};

struct Case {
    name: &'static str,
    setup: Vec<String>,
    refused: String,
    code: Code,
    field: &'static str,
}

fn grant_with(tranches: &str, headline: &str) -> String {
    event("c", "lease_granted", "2026-01-01", &format!(
        r#"{{"provider":"P","customer":"C","currency":"USD","term":{{"start":"2026-01-01","end":"2027-01-01"}},"cluster":{{"site":"s","gpu_model":"g","gpus":8}},"headline":"{headline}","tranches":[{tranches}]}}"#
    ))
}

fn cases() -> Vec<Case> {
    let g = small_grant("c");
    let e = |kind: &str, date: &str, data: &str| event("c", kind, date, data);
    let achieved = e("milestone_reached", "2026-08-01", r#"{"milestone":"m1","outcome":"achieved"}"#);
    let terminated = e("contract_terminated", "2026-09-01", r#"{"fee":"10.00"}"#);
    let invoice = e("invoice_issued", "2026-02-01", r#"{"invoice_id":"INV-1","amount":"100.00","due_date":"2026-03-01"}"#);
    let close = r#"{"type":"period_closed","effective_date":"2026-03-31","data":{"period_end":"2026-03-31"}}"#.to_string();
    vec![
        Case { name: "tranche window outside the term", setup: vec![],
            refused: grant_with(r#"{"id":"a","amount":"10","window":{"start":"2025-12-01","end":"2026-06-01"},"firm":true}"#, "10"),
            code: Code::WindowOutsideTerm, field: "data.tranches[0].window" },
        Case { name: "tranche amount not positive", setup: vec![],
            refused: grant_with(r#"{"id":"a","amount":"10","window":{"start":"2026-01-01","end":"2026-06-01"},"firm":true},{"id":"b","amount":"0","window":{"start":"2026-01-01","end":"2026-06-01"},"firm":true}"#, "10"),
            code: Code::NonPositiveAmount, field: "data.tranches[1].amount" },
        Case { name: "tranches not summing to the headline", setup: vec![],
            refused: grant_with(r#"{"id":"a","amount":"10","window":{"start":"2026-01-01","end":"2026-06-01"},"firm":true}"#, "10.01"),
            code: Code::TrancheSumMismatch, field: "data.tranches" },
        Case { name: "unknown milestone", setup: vec![g.clone()],
            refused: e("milestone_reached", "2026-08-01", r#"{"milestone":"m2","outcome":"achieved"}"#),
            code: Code::UnknownMilestone, field: "data.milestone" },
        Case { name: "milestone resolved twice", setup: vec![g.clone(), achieved.clone()],
            refused: e("milestone_reached", "2026-09-01", r#"{"milestone":"m1","outcome":"failed"}"#),
            code: Code::MilestoneAlreadyResolved, field: "data.milestone" },
        Case { name: "milestone resolved again before its earlier resolution's reversal",
            setup: vec![g.clone(), achieved.clone(), e("event_reversed", "2026-10-01", r#"{"target_seq":2,"reason":"wrong"}"#)],
            refused: e("milestone_reached", "2026-09-15", r#"{"milestone":"m1","outcome":"failed"}"#),
            code: Code::MilestoneResolvedBeforeReversal, field: "effective_date" },
        Case { name: "event before the grant", setup: vec![g.clone()],
            refused: e("invoice_issued", "2025-12-31", r#"{"invoice_id":"I","amount":"1.00","due_date":"2026-01-31"}"#),
            code: Code::BeforeGrant, field: "effective_date" },
        Case { name: "event for an unknown contract", setup: vec![g.clone()],
            refused: event("nobody", "invoice_issued", "2026-02-01", r#"{"invoice_id":"I","amount":"1.00","due_date":"2026-03-01"}"#),
            code: Code::UnknownContract, field: "contract_id" },
        Case { name: "event on a terminated contract", setup: vec![g.clone(), terminated.clone()],
            refused: e("sla_credit_issued", "2026-09-02", r#"{"amount":"1.00","reason":"late"}"#),
            code: Code::ContractTerminated, field: "type" },
        Case { name: "milestone on a terminated contract", setup: vec![g.clone(), terminated.clone()],
            refused: achieved.clone(),
            code: Code::ContractTerminated, field: "type" },
        Case { name: "termination before another event", setup: vec![g.clone(), achieved.clone()],
            refused: e("contract_terminated", "2026-07-31", r#"{"fee":"0"}"#),
            code: Code::TerminationBeforeEvent, field: "effective_date" },
        Case { name: "payment over what the invoice owes",
            setup: vec![g.clone(), invoice.clone(), e("payment_received", "2026-02-10", r#"{"payment_id":"P1","amount":"60.00","invoice_id":"INV-1"}"#)],
            refused: e("payment_received", "2026-02-20", r#"{"payment_id":"P2","amount":"40.01","invoice_id":"INV-1"}"#),
            code: Code::PaymentExceedsInvoice, field: "data.amount" },
        Case { name: "payment for an unknown invoice", setup: vec![g.clone()],
            refused: e("payment_received", "2026-02-20", r#"{"payment_id":"P2","amount":"1.00","invoice_id":"INV-9"}"#),
            code: Code::UnknownInvoice, field: "data.invoice_id" },
        Case { name: "invoice id used twice", setup: vec![g.clone(), invoice.clone()],
            refused: invoice.clone(),
            code: Code::DuplicateInvoice, field: "data.invoice_id" },
        Case { name: "payment id used twice", setup: vec![g.clone(), e("payment_received", "2026-02-10", r#"{"payment_id":"P1","amount":"1.00"}"#)],
            refused: e("payment_received", "2026-02-11", r#"{"payment_id":"P1","amount":"1.00"}"#),
            code: Code::DuplicatePayment, field: "data.payment_id" },
        Case { name: "amount with too many decimals for the currency", setup: vec![g.clone()],
            refused: e("invoice_issued", "2026-02-01", r#"{"invoice_id":"I","amount":"1.001","due_date":"2026-03-01"}"#),
            code: Code::TooManyDecimals, field: "data.amount" },
        Case { name: "amount overflow", setup: vec![g.clone()],
            refused: e("invoice_issued", "2026-02-01", r#"{"invoice_id":"I","amount":"10000000000000000000000000000.01","due_date":"2026-03-01"}"#),
            code: Code::AmountOverflow, field: "data.amount" },
        Case { name: "contract total overflow", setup: vec![g.clone(), e("invoice_issued", "2026-02-01", r#"{"invoice_id":"I","amount":"6000000000000000000000000000.00","due_date":"2026-03-01"}"#)],
            refused: e("invoice_issued", "2026-02-01", r#"{"invoice_id":"J","amount":"6000000000000000000000000000.00","due_date":"2026-03-01"}"#),
            code: Code::AmountOverflow, field: "data" },
        Case { name: "event on or before a closed period", setup: vec![g.clone(), close.clone()],
            refused: e("invoice_issued", "2026-03-31", r#"{"invoice_id":"I","amount":"1.00","due_date":"2026-04-30"}"#),
            code: Code::PeriodClosed, field: "effective_date" },
        Case { name: "period close on or before the closed period", setup: vec![close.clone()],
            refused: r#"{"type":"period_closed","effective_date":"2026-03-31","data":{"period_end":"2026-03-31"}}"#.into(),
            code: Code::PeriodClosed, field: "effective_date" },
        Case { name: "period end not advancing", setup: vec![close.clone()],
            refused: r#"{"type":"period_closed","effective_date":"2026-04-30","data":{"period_end":"2026-03-31"}}"#.into(),
            code: Code::PeriodEndNotAdvancing, field: "data.period_end" },
        Case { name: "period end moving backwards", setup: vec![close.clone()],
            refused: r#"{"type":"period_closed","effective_date":"2026-04-30","data":{"period_end":"2026-03-30"}}"#.into(),
            code: Code::PeriodEndNotAdvancing, field: "data.period_end" },
        // The test clock reads 2026-11-28 (UTC): a period ending that day or later has not
        // ended. Before the rule, a close of 2026-12-31 on 2026-11-30 was accepted for good.
        Case { name: "period close before the period ended", setup: vec![],
            refused: r#"{"type":"period_closed","effective_date":"2026-12-31","data":{"period_end":"2026-12-31"}}"#.into(),
            code: Code::PeriodNotEnded, field: "data.period_end" },
        Case { name: "period close on its last day", setup: vec![],
            refused: r#"{"type":"period_closed","effective_date":"2026-11-28","data":{"period_end":"2026-11-28"}}"#.into(),
            code: Code::PeriodNotEnded, field: "data.period_end" },
        // Counts bounded at admission, so no read can overflow (issue 9, defect 3).
        Case { name: "a grant of more GPUs than any cluster", setup: vec![],
            refused: event("c", "lease_granted", "2026-01-01", r#"{"provider":"P","customer":"C","currency":"USD","term":{"start":"2026-01-01","end":"2027-01-01"},"cluster":{"site":"s","gpu_model":"g","gpus":18446744073709551615},"headline":"1.00","tranches":[{"id":"a","amount":"1.00","window":{"start":"2026-01-01","end":"2027-01-01"},"firm":true}]}"#),
            code: Code::GpuCountTooLarge, field: "data.cluster.gpus" },
        Case { name: "a GPU change beyond the bound", setup: vec![g.clone()],
            refused: e("capacity_changed", "2026-06-01", r#"{"gpus_delta":-9223372036854775808,"amount_delta":"1.00"}"#),
            code: Code::GpuCountTooLarge, field: "data.gpus_delta" },
        Case { name: "GPU changes adding up past the bound", setup: vec![g.clone(), e("capacity_changed", "2026-06-01", r#"{"gpus_delta":999999900,"amount_delta":"1.00"}"#)],
            refused: e("capacity_changed", "2026-06-02", r#"{"gpus_delta":1,"amount_delta":"1.00"}"#),
            code: Code::GpuCountTooLarge, field: "data.gpus_delta" },
        Case { name: "reversal of a grant", setup: vec![g.clone()],
            refused: e("event_reversed", "2026-02-01", r#"{"target_seq":1,"reason":"oops"}"#),
            code: Code::ReversalOfGrant, field: "data.target_seq" },
        Case { name: "reversal of a reversal", setup: vec![g.clone(), invoice.clone(), e("event_reversed", "2026-02-02", r#"{"target_seq":2,"reason":"oops"}"#)],
            refused: e("event_reversed", "2026-02-03", r#"{"target_seq":3,"reason":"undo"}"#),
            code: Code::ReversalOfReversal, field: "data.target_seq" },
        Case { name: "an event reversed twice", setup: vec![g.clone(), invoice.clone(), e("event_reversed", "2026-02-02", r#"{"target_seq":2,"reason":"oops"}"#)],
            refused: e("event_reversed", "2026-02-03", r#"{"target_seq":2,"reason":"again"}"#),
            code: Code::AlreadyReversed, field: "data.target_seq" },
        Case { name: "reversal taking effect before its target", setup: vec![g.clone(), invoice.clone()],
            refused: e("event_reversed", "2026-01-31", r#"{"target_seq":2,"reason":"oops"}"#),
            code: Code::ReversalBeforeTarget, field: "effective_date" },
        Case { name: "reversal of another contract's event", setup: vec![g.clone(), small_grant("d")],
            refused: e("event_reversed", "2026-02-01", r#"{"target_seq":2,"reason":"oops"}"#),
            code: Code::ReversalOfOtherContract, field: "data.target_seq" },
        Case { name: "reversal of an event that does not exist", setup: vec![g.clone()],
            refused: e("event_reversed", "2026-02-01", r#"{"target_seq":99,"reason":"oops"}"#),
            code: Code::UnknownReversalTarget, field: "data.target_seq" },
        Case { name: "capacity change at the term's end", setup: vec![g.clone()],
            refused: e("capacity_changed", "2027-01-01", r#"{"gpus_delta":10,"amount_delta":"1.00"}"#),
            code: Code::CapacityOutsideTerm, field: "effective_date" },
        Case { name: "capacity decrease beyond the unrecognized firm value", setup: vec![g.clone()],
            // By the end of 2026-12-30 (the day before), 364 of 365 days are earned:
            // floor(300000 * 364 / 365) = 299178 cents, so 8.22 of the firm 3000.00 is not
            // yet recognized (the conditional 650.00 is pending, not firm): -8.23 is refused.
            refused: e("capacity_changed", "2026-12-31", r#"{"gpus_delta":0,"amount_delta":"-8.23"}"#),
            code: Code::CapacityDecreaseTooLarge, field: "data.amount_delta" },
        Case { name: "back-dated decreases adding up to more than the firm value",
            // 3000.00 firm over 2026. -1500.00 from 2026-07-01 leaves 3000.00 - 1487.67
            // (181 of 365 days by 06-30) - 1500.00 = 12.33 unrecognized on 06-30. A second
            // decrease dated 2026-01-02 sees 3000.00 - 8.21 (1 day) = 2991.79 unrecognized on
            // 01-01, less the later decrease of 1500.00: 1491.79 of headroom; 1491.80 is
            // refused (before this rule it was accepted and the firm value went negative).
            setup: vec![g.clone(), e("capacity_changed", "2026-07-01", r#"{"gpus_delta":0,"amount_delta":"-1500.00"}"#)],
            refused: e("capacity_changed", "2026-01-02", r#"{"gpus_delta":0,"amount_delta":"-1491.80"}"#),
            code: Code::CapacityDecreaseTooLarge, field: "data.amount_delta" },
        Case { name: "reversing an increase the decreases rely on",
            // +1000.00 then -3500.00 (allowed: 3000.00 + 1000.00 unrecognized less earned);
            // reversing the increase would leave 3000.00 - 3500.00 = -500.00 of firm value.
            setup: vec![g.clone(),
                e("capacity_changed", "2026-02-01", r#"{"gpus_delta":0,"amount_delta":"1000.00"}"#),
                e("capacity_changed", "2026-02-02", r#"{"gpus_delta":0,"amount_delta":"-3500.00"}"#)],
            refused: e("event_reversed", "2026-03-01", r#"{"target_seq":2,"reason":"increase entered in error"}"#),
            code: Code::FirmValueNegative, field: "data.target_seq" },
        Case { name: "payment taking effect before its invoice", setup: vec![g.clone(), invoice.clone()],
            refused: e("payment_received", "2026-01-31", r#"{"payment_id":"P1","amount":"1.00","invoice_id":"INV-1"}"#),
            code: Code::PaymentBeforeInvoice, field: "effective_date" },
        Case { name: "capacity change leaving a negative GPU count", setup: vec![g.clone()],
            refused: e("capacity_changed", "2026-06-01", r#"{"gpus_delta":-101,"amount_delta":"0"}"#),
            code: Code::GpuCountNegative, field: "data.gpus_delta" },
        Case { name: "a second grant for a contract", setup: vec![g.clone()],
            refused: g.clone(),
            code: Code::ContractExists, field: "contract_id" },
        Case { name: "expected version behind", setup: vec![g.clone(), invoice.clone()],
            refused: r#"{"contract_id":"c","type":"invoice_issued","effective_date":"2026-02-01","expected_version":1,"data":{"invoice_id":"INV-2","amount":"1.00","due_date":"2026-03-01"}}"#.into(),
            code: Code::VersionConflict, field: "expected_version" },
        Case { name: "expected version 0 for an existing contract", setup: vec![g.clone()],
            refused: g.replace(r#""effective_date":"2026-01-01","#, r#""effective_date":"2026-01-01","expected_version":0,"#),
            code: Code::VersionConflict, field: "expected_version" },
    ]
}

#[test]
fn every_rule_refuses_with_its_code_and_writes_nothing() {
    let mut failures = vec![];
    for case in cases() {
        let (_dir, ledger) = fresh();
        for line in &case.setup {
            append(&ledger, line).unwrap_or_else(|r| panic!("{}: setup {line}: {r}", case.name));
        }
        let head = ledger.head();
        let state_before = ledger.contract_state(&ContractId::parse("c").unwrap()).unwrap();
        match append(&ledger, &case.refused) {
            Ok(receipt) => failures.push(format!("{}: appended as seq {}", case.name, receipt.seq)),
            Err(r) if r.code != case.code || r.field.as_deref() != Some(case.field) => {
                failures.push(format!("{}: got {:?} at {:?} ({}), expected {:?} at {}", case.name, r.code, r.field, r.message, case.code, case.field))
            }
            Err(_) => {}
        }
        assert_eq!(ledger.head(), head, "{}: head moved", case.name);
        assert_eq!(ledger.contract_state(&ContractId::parse("c").unwrap()).unwrap(), state_before, "{}", case.name);
        assert_eq!(ledger.verify(|_| {}).unwrap(), head, "{}", case.name);
        // The refusal left the writer healthy: a valid event still appends.
        let healthy = small_grant("healthy").replace(r#""effective_date":"2026-01-01""#, r#""effective_date":"2026-12-01""#);
        append(&ledger, &healthy).unwrap_or_else(|r| panic!("{}: {r}", case.name));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_capacity_decrease_up_to_the_unrecognized_firm_value_is_accepted() {
    let (_dir, ledger) = fresh();
    append(&ledger, &small_grant("c")).unwrap();
    let decrease = event("c", "capacity_changed", "2026-12-31", r#"{"gpus_delta":0,"amount_delta":"-8.22"}"#);
    assert_eq!(append(&ledger, &decrease).unwrap().seq, 2);
}

#[test]
fn version_conflicts_carry_the_current_version() {
    let (_dir, ledger) = fresh();
    append(&ledger, &small_grant("c")).unwrap();
    let stale = r#"{"contract_id":"c","type":"sla_credit_issued","effective_date":"2026-02-01","expected_version":0,"data":{"amount":"1.00","reason":"r"}}"#;
    let r = append(&ledger, stale).unwrap_err();
    assert_eq!((r.code, r.current_version), (Code::VersionConflict, Some(1)));
    let fresh = stale.replace(r#""expected_version":0"#, r#""expected_version":1"#);
    assert_eq!(append(&ledger, &fresh).unwrap().version, 2);
}

#[test]
fn billing_and_reversals_follow_a_termination_and_do_not_hold_it_back() {
    let (_dir, ledger) = fresh();
    let e = |kind: &str, date: &str, data: &str| event("c", kind, date, data);
    append(&ledger, &small_grant("c")).unwrap();
    // An invoice dated after the termination does not hold the termination back.
    append(&ledger, &e("invoice_issued", "2026-12-01", r#"{"invoice_id":"I","amount":"100.00","due_date":"2026-12-31"}"#)).unwrap();
    append(&ledger, &e("contract_terminated", "2026-09-01", r#"{"fee":"10.00"}"#)).unwrap();
    append(&ledger, &e("payment_received", "2026-12-15", r#"{"payment_id":"P","amount":"100.00","invoice_id":"I"}"#)).unwrap();
    append(&ledger, &e("invoice_issued", "2026-12-20", r#"{"invoice_id":"J","amount":"5.00","due_date":"2026-12-31"}"#)).unwrap();
    // Reversing the termination reopens the contract.
    let reversal = append(&ledger, &e("event_reversed", "2026-09-02", r#"{"target_seq":3,"reason":"terminated in error"}"#)).unwrap();
    assert_eq!(reversal.seq, 6);
    append(&ledger, &e("sla_credit_issued", "2026-09-03", r#"{"amount":"1.00","reason":"r"}"#)).unwrap();
}
