//! The JSON wire form: SPEC's examples parse, bad input is refused naming the field.

use events::*;

const SPEC_EXAMPLES: &str = include_str!("../../examples/colossus.ndjson");

fn parse(json: &str) -> Result<Proposal, Rejection> {
    Proposal::parse_json(json.as_bytes())
}

fn refused(json: &str) -> (Code, Option<String>) {
    let r = parse(json).expect_err("must be refused");
    (r.code, r.field)
}

fn resolved(json: &str) -> Result<EventBody, Rejection> {
    parse(json).unwrap().resolve(Some(Currency::USD))
}

#[test]
fn every_spec_example_parses_and_resolves() {
    let kinds: Vec<_> = SPEC_EXAMPLES
        .lines()
        .map(|line| {
            let p = parse(line).unwrap_or_else(|r| panic!("{line}: {r}"));
            p.resolve(Some(Currency::USD)).unwrap_or_else(|r| panic!("{line}: {r}"));
            p.kind().as_str()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "lease_granted", "invoice_issued", "payment_received", "period_closed", "sla_credit_issued",
            "event_reversed", "capacity_changed", "milestone_reached", "contract_terminated"
        ]
    );
}

#[test]
fn the_grant_reads_exactly() {
    let p = parse(SPEC_EXAMPLES.lines().next().unwrap()).unwrap();
    assert_eq!(p.stream, Stream::Contract(ContractId::parse("colossus-1").unwrap()));
    assert_eq!(p.expected_version, Some(0));
    assert_eq!(p.actor.as_deref(), Some("deals@provider.example"));
    let EventBody::LeaseGranted(g) = p.resolve(None).unwrap() else { panic!("not a grant") };
    assert_eq!(g.headline.minor_units(), 4_500_000_000_000);
    assert_eq!(g.currency, Currency::USD);
    assert_eq!(g.cluster.gpus, 230_000);
    assert_eq!(g.tranches[0].condition, Condition::Firm);
    assert_eq!(g.tranches[1].condition, Condition::Milestone("phase-2-delivery".into()));
    assert_eq!(g.tranches[1].amount.to_decimal_string(), "4500000000.00");
    assert_eq!(g.term.days(), 1096);
}

#[test]
fn unknown_fields_and_types_are_named() {
    let cases = [
        (r#"{"contract_id":"c","type":"invoice_issued","effective_date":"2026-06-01","colour":1,"data":{}}"#, Code::UnknownField, "colour"),
        (r#"{"contract_id":"c","type":"invoice_issued","effective_date":"2026-06-01","data":{"invoice_id":"I","amount":"1","due_date":"2026-07-01","note":"x"}}"#, Code::UnknownField, "data.note"),
        (r#"{"contract_id":"c","type":"lease_granted","effective_date":"2026-06-01","data":{"provider":"p","customer":"c","currency":"USD","term":{"start":"2026-06-01","end":"2027-06-01","x":1},"cluster":{"site":"s","gpu_model":"g","gpus":1},"headline":"1","tranches":[]}}"#, Code::UnknownField, "data.term.x"),
        (r#"{"contract_id":"c","type":"lease_granted","effective_date":"2026-06-01","data":{"provider":"p","customer":"c","currency":"USD","term":{"start":"2026-06-01","end":"2027-06-01"},"cluster":{"site":"s","gpu_model":"g","gpus":1},"headline":"1","tranches":[{"id":"a","amount":"1","window":{"start":"2026-06-01","end":"2027-06-01"},"firm":true,"bonus":2}]}}"#, Code::UnknownField, "data.tranches[0].bonus"),
        (r#"{"contract_id":"c","type":"lease_expanded","effective_date":"2026-06-01","data":{}}"#, Code::UnknownType, "type"),
        (r#"{"contract_id":"c","type":"invoice_issued","effective_date":"2026-06-01","data":{"invoice_id":"I","due_date":"2026-07-01"}}"#, Code::MissingField, "data.amount"),
        (r#"{"contract_id":"c","type":"invoice_issued","effective_date":"2026-06-01"}"#, Code::MissingField, "data"),
        (r#"{"contract_id":"c","type":"invoice_issued","effective_date":"2026-02-30","data":{}}"#, Code::InvalidDate, "effective_date"),
        (r#"{"contract_id":"c","type":"invoice_issued","effective_date":"2026-06-01","data":{"invoice_id":"I","amount":"1e6","due_date":"2026-07-01"}}"#, Code::InvalidAmount, "data.amount"),
        (r#"{"contract_id":"c","type":"invoice_issued","effective_date":"2026-06-01","data":{"invoice_id":"I","amount":100,"due_date":"2026-07-01"}}"#, Code::InvalidAmount, "data.amount"),
        (r#"{"contract_id":"c","type":"invoice_issued","effective_date":"2026-06-01","data":{"invoice_id":"I","amount":"1","due_date":"07/01/2026"}}"#, Code::InvalidDate, "data.due_date"),
        (r#"{"contract_id":"c","type":"milestone_reached","effective_date":"2026-06-01","data":{"milestone":"m","outcome":"maybe"}}"#, Code::InvalidValue, "data.outcome"),
        (r#"{"contract_id":"c","type":"capacity_changed","effective_date":"2026-06-01","data":{"gpus_delta":"ten","amount_delta":"1"}}"#, Code::InvalidValue, "data.gpus_delta"),
        (r#"{"contract_id":"c.d","type":"invoice_issued","effective_date":"2026-06-01","data":{"invoice_id":"I","amount":"1","due_date":"2026-07-01"}}"#, Code::InvalidId, "contract_id"),
        (r#"{"type":"invoice_issued","effective_date":"2026-06-01","data":{"invoice_id":"I","amount":"1","due_date":"2026-07-01"}}"#, Code::ContractIdRequired, "contract_id"),
        (r#"{"contract_id":"c","type":"period_closed","effective_date":"2026-06-30","data":{"period_end":"2026-06-30"}}"#, Code::ContractIdNotAllowed, "contract_id"),
        (r#"{"contract_id":"c","type":"invoice_issued","effective_date":"2026-06-01","actor":"","data":{"invoice_id":"I","amount":"1","due_date":"2026-07-01"}}"#, Code::InvalidText, "actor"),
        (r#"{"contract_id":"c","type":"invoice_issued","effective_date":"2026-06-01","expected_version":-1,"data":{}}"#, Code::InvalidValue, "expected_version"),
    ];
    for (json, code, field) in cases {
        assert_eq!(refused(json), (code, Some(field.to_string())), "{json}");
    }
}

#[test]
fn malformed_json_is_invalid_json() {
    for json in ["", "{", "[]", "{\"type\":", "null"] {
        let (code, _) = refused(json);
        assert!(matches!(code, Code::InvalidJson | Code::InvalidValue), "{json}: {code}");
    }
    let trailing = format!("{} x", SPEC_EXAMPLES.lines().nth(1).unwrap());
    assert_eq!(refused(&trailing).0, Code::InvalidJson);
}

fn grant_with(tranches: &str, headline: &str) -> String {
    format!(
        r#"{{"contract_id":"c","type":"lease_granted","effective_date":"2026-05-01","data":{{"provider":"p","customer":"c","currency":"USD","term":{{"start":"2026-06-01","end":"2027-06-01"}},"cluster":{{"site":"s","gpu_model":"g","gpus":8}},"headline":"{headline}","tranches":[{tranches}]}}}}"#
    )
}

const FULL_WINDOW: &str = r#"{"start":"2026-06-01","end":"2027-06-01"}"#;

#[test]
fn single_event_rules_refuse_with_their_codes() {
    let t = |id: &str, amount: &str, window: &str, cond: &str| format!(r#"{{"id":"{id}","amount":"{amount}","window":{window},{cond}}}"#);
    let firm = r#""firm":true"#;
    let cases: Vec<(String, Code, &str)> = vec![
        (grant_with(&t("a", "10.00", FULL_WINDOW, firm), "11.00"), Code::TrancheSumMismatch, "data.tranches"),
        (grant_with(&t("a", "0", FULL_WINDOW, firm), "0"), Code::NonPositiveAmount, "data.headline"),
        (grant_with(&format!("{},{}", t("a", "-1", FULL_WINDOW, firm), t("b", "2", FULL_WINDOW, firm)), "1"), Code::NonPositiveAmount, "data.tranches[0].amount"),
        (grant_with(&t("a", "10.001", FULL_WINDOW, firm), "10.00"), Code::TooManyDecimals, "data.tranches[0].amount"),
        (grant_with(&t("a", "10", r#"{"start":"2026-05-01","end":"2027-06-01"}"#, firm), "10"), Code::WindowOutsideTerm, "data.tranches[0].window"),
        (grant_with(&t("a", "10", r#"{"start":"2026-06-01","end":"2027-06-02"}"#, firm), "10"), Code::WindowOutsideTerm, "data.tranches[0].window"),
        (grant_with(&t("a", "10", r#"{"start":"2026-07-01","end":"2026-07-01"}"#, firm), "10"), Code::EmptyWindow, "data.tranches[0].window"),
        (grant_with(&format!("{},{}", t("a", "1", FULL_WINDOW, firm), t("a", "1", FULL_WINDOW, firm)), "2"), Code::DuplicateTranche, "data.tranches[1].id"),
        (grant_with(&t("a", "10", FULL_WINDOW, r#""firm":false"#), "10"), Code::MissingField, "data.tranches[0].milestone"),
        (grant_with(&t("a", "10", FULL_WINDOW, r#""firm":true,"milestone":"m""#), "10"), Code::InvalidValue, "data.tranches[0].milestone"),
        (grant_with("", "10"), Code::NoTranches, "data.tranches"),
        (grant_with(&t("a", "10000000000000000000000000000.01", FULL_WINDOW, firm), "10000000000000000000000000000.01"), Code::AmountOverflow, "data.headline"),
        (grant_with(&t("a", "10", FULL_WINDOW, firm), "10").replace("\"USD\"", "\"XYZ\""), Code::UnknownCurrency, "data.currency"),
        (grant_with(&t("a", "10", FULL_WINDOW, firm), "10").replace("\"end\":\"2027-06-01\"},\"cluster", "\"end\":\"2026-06-01\"},\"cluster"), Code::InvalidTerm, "data.term"),
        (grant_with(&t("a", "10", FULL_WINDOW, firm), "10").replace("\"gpus\":8", "\"gpus\":0"), Code::InvalidGpuCount, "data.cluster.gpus"),
        (grant_with(&t("a b", "10", FULL_WINDOW, firm), "10"), Code::InvalidId, "data.tranches[0].id"),
    ];
    for (json, code, field) in cases {
        let r = parse(&json).and_then(|p| p.resolve(None)).expect_err(&json);
        assert_eq!((r.code, r.field.as_deref()), (code, Some(field)), "{json}\n{r}");
    }

    let body = |kind: &str, data: &str| format!(r#"{{"contract_id":"c","type":"{kind}","effective_date":"2026-06-01","data":{data}}}"#);
    let cases = [
        (body("invoice_issued", r#"{"invoice_id":"I","amount":"0","due_date":"2026-07-01"}"#), Code::NonPositiveAmount, "data.amount"),
        (body("invoice_issued", r#"{"invoice_id":"I","amount":"1.005","due_date":"2026-07-01"}"#), Code::TooManyDecimals, "data.amount"),
        (body("payment_received", r#"{"payment_id":"P","amount":"-5"}"#), Code::NonPositiveAmount, "data.amount"),
        (body("sla_credit_issued", r#"{"amount":"5","reason":" "}"#), Code::InvalidText, "data.reason"),
        (body("contract_terminated", r#"{"fee":"-1"}"#), Code::NonPositiveAmount, "data.fee"),
        (body("capacity_changed", r#"{"gpus_delta":0,"amount_delta":"0.00"}"#), Code::ZeroAmount, "data.amount_delta"),
        (body("event_reversed", r#"{"target_seq":0,"reason":"r"}"#), Code::InvalidValue, "data.target_seq"),
    ];
    for (json, code, field) in cases {
        let r = resolved(&json).expect_err(&json);
        assert_eq!((r.code, r.field.as_deref()), (code, Some(field)), "{json}\n{r}");
    }
    let close = r#"{"type":"period_closed","effective_date":"2026-06-29","data":{"period_end":"2026-06-30"}}"#;
    assert_eq!(resolved(close).unwrap_err().code, Code::PeriodCloseBeforeEnd);
}

#[test]
fn amounts_read_in_the_contracts_currency() {
    let invoice = r#"{"contract_id":"c","type":"invoice_issued","effective_date":"2026-06-01","data":{"invoice_id":"I","amount":"1.5","due_date":"2026-07-01"}}"#;
    let p = parse(invoice).unwrap();
    let EventBody::InvoiceIssued(i) = p.resolve(Some(Currency::KWD)).unwrap() else { panic!() };
    assert_eq!(i.amount.minor_units(), 1500);
    assert_eq!(p.resolve(Some(Currency::JPY)).unwrap_err().code, Code::TooManyDecimals);
}

#[test]
fn stored_events_print_back_as_wire_json_that_parses_to_the_same_body() {
    let mut currency = None;
    for line in SPEC_EXAMPLES.lines() {
        let p = parse(line).unwrap();
        let body = p.resolve(currency).unwrap();
        currency = currency.or(body.currency());
        let event = Event {
            prev_hash: Digest::ZERO,
            seq: 1,
            stream: p.stream.clone(),
            version: 1,
            effective_date: p.effective_date,
            recorded_at: Timestamp(0),
            actor: "a".into(),
            idempotency_key: None,
            body: body.clone(),
        };
        let out = serde_json::to_string(&event.to_wire()).unwrap();
        let again = parse(&out).unwrap();
        assert_eq!(again.resolve(currency).unwrap(), body, "{out}");
        assert_eq!(again.body, p.body, "amounts print with the currency's decimals: {out}");
    }
}
