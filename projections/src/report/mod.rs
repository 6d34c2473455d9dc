//! JSON of the finance views, shared by `cledger report` and the HTTP API, so both print
//! the same bytes. Money is a decimal string in the contract's currency with the currency
//! beside it (SPEC section 4's revenue example).

use crate::figures::Figures;
use crate::state::AsOf;
use crate::summary::Contract;
use crate::view::{ContractView, Granularity, Portfolio};
use crate::Overflow;
use events::{format_minor_units, Currency};
use serde_json::{json, Map, Value};

pub(crate) fn money(minor_units: i128, currency: Currency) -> Value {
    Value::String(format_minor_units(minor_units, currency))
}

/// A count (GPUs) as a JSON number. The rules bound counts far inside the range every JSON
/// reader handles exactly; a chain written before they did may hold larger ones, which are
/// given as a decimal string rather than a number that would be wrong, or no answer at all
/// (`json!` panics on an i128 outside 64 bits).
fn count(n: i128) -> Value {
    match (i64::try_from(n), u64::try_from(n)) {
        (Ok(n), _) => Value::from(n),
        (_, Ok(n)) => Value::from(n),
        _ => Value::String(n.to_string()),
    }
}

/// The figures of SPEC section 4 with their JSON names, in the SPEC's key order: the one
/// list both [`figures_fields`] and the serializers of the reports use.
pub fn figure_pairs(f: &Figures) -> [(&'static str, i128); 12] {
    [
        ("headline", f.headline),
        ("transaction_price", f.transaction_price),
        ("recognized", f.recognized),
        ("rpo", f.rpo),
        ("remaining_conditional", f.remaining_conditional),
        ("forfeited", f.forfeited),
        ("cancelled", f.cancelled),
        ("billed", f.billed),
        ("collected", f.collected),
        ("receivable", f.receivable),
        ("deferred_revenue", f.deferred_revenue),
        ("contract_asset", f.contract_asset),
    ]
}

/// The figures of SPEC section 4, in the SPEC's key order.
pub fn figures_fields(f: &Figures, currency: Currency) -> Map<String, Value> {
    let mut m = Map::new();
    for (key, value) in figure_pairs(f) {
        m.insert(key.to_string(), money(value, currency));
    }
    m
}

/// `GET /v1/contracts/{id}/revenue` and `cledger report --contract ID --format json`:
/// exactly the object of SPEC section 4.
pub fn revenue_json<'a>(contract: impl Into<Contract<'a>>, at: &AsOf, granularity: Granularity) -> Result<Value, Overflow> {
    let contract = contract.into();
    let currency = contract.currency();
    let figures = contract.figures(at)?;
    let periods: Vec<Value> = contract
        .periods(at, granularity)?
        .into_iter()
        .map(|p| json!({"period": p.period, "recognized": money(p.recognized, currency)}))
        .collect();
    let mut m = Map::new();
    m.insert("contract_id".into(), json!(contract.contract_id().as_str()));
    m.insert("as_of".into(), json!(at.date.to_string()));
    m.insert("known_at".into(), json!(at.known_at));
    m.insert("currency".into(), json!(currency.code()));
    m.extend(figures_fields(&figures, currency));
    m.insert("periods".into(), Value::Array(periods));
    Ok(Value::Object(m))
}

/// `GET /v1/contracts/{id}`: the contract's state at a point of view.
pub fn contract_json(v: &ContractView) -> Value {
    let c = v.currency;
    let mut figures = figures_fields(&v.figures, c);
    figures.insert("fees".into(), money(v.figures.fees, c));
    figures.insert("credits".into(), money(v.figures.credits, c));
    json!({
        "contract_id": v.contract_id.as_str(),
        "as_of": v.at.date.to_string(),
        "known_at": v.at.known_at,
        "version": v.version,
        "provider": v.provider,
        "customer": v.customer,
        "currency": c.code(),
        "term": {"start": v.term.start.to_string(), "end": v.term.end.to_string()},
        "cluster": {"site": v.site, "gpu_model": v.gpu_model, "gpus": count(v.gpus)},
        "gpus_over_time": v.gpus_over_time.iter().map(|(d, g)| json!({"from": d.to_string(), "gpus": count(*g)})).collect::<Vec<_>>(),
        "tranches": v.tranches.iter().map(|t| json!({
            "id": t.id,
            "amount": money(t.amount, c),
            "window": {"start": t.window.start.to_string(), "end": t.window.end.to_string()},
            "milestone": t.milestone,
            "status": t.status.as_str(),
            "recognized": money(t.recognized, c),
            "cancelled": money(t.cancelled, c),
            "seq": t.seq,
        })).collect::<Vec<_>>(),
        "milestones": v.milestones.iter().map(|m| json!({
            "milestone": m.milestone,
            "outcome": m.outcome.map(|o| o.as_str()),
            "resolved_on": m.resolved_on.map(|d| d.to_string()),
            "seq": m.seq,
        })).collect::<Vec<_>>(),
        "invoices": v.invoices.iter().map(|i| json!({
            "invoice_id": i.invoice_id,
            "amount": money(i.amount, c),
            "issued_on": i.issued_on.to_string(),
            "due_date": i.due_date.to_string(),
            "paid": money(i.paid, c),
            "owed": money(i.owed, c),
            "seq": i.seq,
        })).collect::<Vec<_>>(),
        "payments": v.payments.iter().map(|p| json!({
            "payment_id": p.payment_id,
            "amount": money(p.amount, c),
            "received_on": p.received_on.to_string(),
            "invoice_id": p.invoice_id,
            "seq": p.seq,
        })).collect::<Vec<_>>(),
        "credits": v.credits.iter().map(|cr| json!({
            "amount": money(cr.amount, c),
            "reason": cr.reason,
            "issued_on": cr.issued_on.to_string(),
            "seq": cr.seq,
        })).collect::<Vec<_>>(),
        "termination": v.termination.as_ref().map(|t| json!({"date": t.date.to_string(), "fee": money(t.fee, c), "seq": t.seq})),
        "reversals": v.reversals.iter().map(|r| json!({
            "seq": r.seq,
            "target_seq": r.target_seq,
            "effective_date": r.effective.to_string(),
            "reason": r.reason,
            "in_effect": r.in_effect,
        })).collect::<Vec<_>>(),
        "figures": figures,
    })
}

/// `GET /v1/portfolio` and `cledger report --format json` without a contract: totals per
/// currency, never summed across currencies.
pub fn portfolio_json(p: &Portfolio, at: &AsOf) -> Value {
    let totals: Vec<Value> = p
        .totals
        .iter()
        .map(|(currency, t)| {
            let mut m = Map::new();
            m.insert("currency".into(), json!(currency.code()));
            m.insert("contracts".into(), json!(t.contracts));
            m.extend(figures_fields(&t.figures, *currency));
            Value::Object(m)
        })
        .collect();
    json!({"as_of": at.date.to_string(), "known_at": at.known_at, "totals": totals})
}

mod close;
mod table;

pub use close::*;
pub use table::*;
