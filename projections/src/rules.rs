//! The rules of SPEC section 4 that decide whether a proposed event may be appended, given
//! what the ledger knows. Pure: the ledger calls [`admit`] inside its write critical section,
//! so no other write can change the state between the check and the append.

use crate::state::{AsOf, ContractState, LedgerFacts};
use events::{Code, Date, EventBody, EventKind, Proposal, Rejection, Stream, MAX_ABS_MINOR_UNITS};

fn reject(code: Code, field: &str, message: String) -> Rejection {
    Rejection::new(code, Some(field.to_string()), message)
}

/// Decides on `proposal`: the stored body if it may be appended as event `next_seq`,
/// or why not. `contract` is the state of the proposal's contract, if it exists. `today` is
/// the server's current UTC date (`None` if its clock is outside the calendar), which a
/// period close must come after.
pub fn admit(
    proposal: &Proposal,
    contract: Option<&ContractState>,
    ledger: &LedgerFacts,
    next_seq: u64,
    today: Option<Date>,
) -> Result<EventBody, Rejection> {
    let kind = proposal.kind();
    let current_version = match (&proposal.stream, contract) {
        (Stream::Ledger, _) => ledger.version,
        (Stream::Contract(id), None) if kind != EventKind::LeaseGranted => {
            return Err(Rejection::new(Code::UnknownContract, Some("contract_id".into()), format!("no contract `{id}`")));
        }
        (Stream::Contract(_), state) => state.map_or(0, |s| s.version),
    };
    if let Some(expected) = proposal.expected_version
        && expected != current_version {
            let mut r = reject(
                Code::VersionConflict,
                "expected_version",
                format!("expected version {expected} of {}, it is at {current_version}", proposal.stream),
            );
            r.current_version = Some(current_version);
            return Err(r);
        }
    if let (EventKind::LeaseGranted, Some(state)) = (kind, contract) {
        return Err(reject(Code::ContractExists, "contract_id", format!("contract `{}` was granted at seq {}", state.contract_id, state.grant.origin.seq)));
    }
    if let Some(period_end) = ledger.period_end
        && proposal.effective_date <= period_end {
            return Err(reject(
                Code::PeriodClosed,
                "effective_date",
                format!("the period ending {period_end} is closed; {} is on or before it", proposal.effective_date),
            ));
        }
    let body = proposal.resolve(contract.map(ContractState::currency))?;
    match contract {
        None => check_ledger_event(&body, ledger, today)?,
        Some(state) => check_contract_event(&body, proposal.effective_date, state, next_seq)?,
    }
    Ok(body)
}

fn check_ledger_event(body: &EventBody, ledger: &LedgerFacts, today: Option<Date>) -> Result<(), Rejection> {
    // A period is closed once it is over: its end must be before the server's date, so no
    // close can freeze days that have not happened yet (nothing can undo a close).
    if let EventBody::PeriodClosed(p) = body
        && today.is_none_or(|today| p.period_end >= today) {
            return Err(reject(
                Code::PeriodNotEnded,
                "data.period_end",
                match today {
                    Some(today) => format!("the period ending {} has not ended: today is {today} (UTC)", p.period_end),
                    None => "the server's clock is outside the calendar; no period can be closed".into(),
                },
            ));
        }
    if let (EventBody::PeriodClosed(p), Some(previous)) = (body, ledger.period_end)
        && p.period_end <= previous {
            return Err(reject(
                Code::PeriodEndNotAdvancing,
                "data.period_end",
                format!("periods end only move forward: {} is not after {previous}", p.period_end),
            ));
        }
    Ok(())
}

fn check_contract_event(body: &EventBody, date: Date, state: &ContractState, next_seq: u64) -> Result<(), Rejection> {
    let kind = body.kind();
    if date < state.grant.origin.date {
        return Err(reject(
            Code::BeforeGrant,
            "effective_date",
            format!("{date} is before the contract's grant ({})", state.grant.origin.date),
        ));
    }
    if let Some(t) = state.standing_termination()
        && !kind.is_billing() && kind != EventKind::EventReversed {
            return Err(reject(
                Code::ContractTerminated,
                "type",
                format!("the contract was terminated at seq {} ({}); only invoices, payments and reversals follow", t.origin.seq, t.origin.date),
            ));
        }
    let added = amount_magnitude(body);
    if state.magnitude_total.checked_add(added).is_none_or(|t| t > MAX_ABS_MINOR_UNITS) {
        return Err(reject(Code::AmountOverflow, "data", "the contract's amounts would exceed 10^30 minor units in total".into()));
    }
    match body {
        EventBody::LeaseGranted(_) | EventBody::PeriodClosed(_) => {
            unreachable!("grants and period closes are decided before contract rules")
        }
        EventBody::CapacityChanged(c) => {
            if date >= state.grant.term.end {
                return Err(reject(Code::CapacityOutsideTerm, "effective_date", format!("{date} is not before the term's end ({})", state.grant.term.end)));
            }
            let everything = AsOf::everything();
            let gpus = state.gpus_at(&everything);
            let after = gpus + i128::from(c.gpus_delta);
            if after < 0 {
                return Err(reject(
                    Code::GpuCountNegative,
                    "data.gpus_delta",
                    format!("the cluster has {gpus} GPUs; it cannot lose {}", c.gpus_delta.unsigned_abs()),
                ));
            }
            if after > i128::from(events::GPUS_MAX) {
                return Err(reject(
                    Code::GpuCountTooLarge,
                    "data.gpus_delta",
                    format!("the cluster has {gpus} GPUs; with {} more it would exceed {}", c.gpus_delta, events::GPUS_MAX),
                ));
            }
            let delta = c.amount_delta.minor_units();
            if delta < 0 {
                let day_before = date.add_days(-1).unwrap_or(date);
                let headroom = state.decrease_headroom(day_before).map_err(|_| overflow())?;
                if -delta > headroom {
                    return Err(reject(
                        Code::CapacityDecreaseTooLarge,
                        "data.amount_delta",
                        format!("a decrease of {} exceeds the firm value not yet recognized on {day_before}, less later decreases ({})",
                            c.amount_delta.to_decimal_string().trim_start_matches('-'),
                            events::format_minor_units(headroom, state.currency())),
                    ));
                }
            }
        }
        EventBody::MilestoneReached(m) => {
            if !state.has_milestone(&m.milestone) {
                return Err(reject(Code::UnknownMilestone, "data.milestone", format!("no tranche of the contract waits on `{}`", m.milestone)));
            }
            for earlier in state.resolutions.iter().filter(|r| r.milestone == m.milestone) {
                match state.events.get(&earlier.origin.seq).and_then(|e| e.reversed_by) {
                    None => {
                        return Err(reject(
                            Code::MilestoneAlreadyResolved,
                            "data.milestone",
                            format!("`{}` was resolved at seq {} ({}); reverse that first", m.milestone, earlier.origin.seq, earlier.outcome.as_str()),
                        ))
                    }
                    Some(reversal) if reversal.date > date => {
                        return Err(reject(
                            Code::MilestoneResolvedBeforeReversal,
                            "effective_date",
                            format!("`{}`'s earlier resolution counts until its reversal on {}; {date} is before that", m.milestone, reversal.date),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        EventBody::InvoiceIssued(i) => {
            if let Some(existing) = state.invoice(&i.invoice_id) {
                return Err(reject(Code::DuplicateInvoice, "data.invoice_id", format!("invoice `{}` was issued at seq {}", i.invoice_id, existing.origin.seq)));
            }
        }
        EventBody::PaymentReceived(p) => {
            if let Some(existing) = state.payment(&p.payment_id) {
                return Err(reject(Code::DuplicatePayment, "data.payment_id", format!("payment `{}` was received at seq {}", p.payment_id, existing.origin.seq)));
            }
            if let Some(invoice_id) = &p.invoice_id {
                let invoice = state
                    .invoice(invoice_id)
                    .filter(|x| !state.is_reversed(x.origin.seq))
                    .ok_or_else(|| reject(Code::UnknownInvoice, "data.invoice_id", format!("no standing invoice `{invoice_id}`")))?;
                if date < invoice.origin.date {
                    return Err(reject(
                        Code::PaymentBeforeInvoice,
                        "effective_date",
                        format!("invoice `{invoice_id}` is issued {}; a payment against it cannot take effect before", invoice.origin.date),
                    ));
                }
                let owed = state.invoice_owed(invoice);
                if p.amount.minor_units() > owed {
                    return Err(reject(
                        Code::PaymentExceedsInvoice,
                        "data.amount",
                        format!("invoice `{invoice_id}` still owes {}; the payment is {}",
                            events::Money::new(owed, state.currency()).map(|m| m.to_decimal_string()).unwrap_or_default(),
                            p.amount.to_decimal_string()),
                    ));
                }
            }
        }
        EventBody::SlaCreditIssued(_) => {}
        EventBody::ContractTerminated(_) => {
            let latest = state.latest_non_billing_date;
            if date < latest {
                return Err(reject(
                    Code::TerminationBeforeEvent,
                    "effective_date",
                    format!("the contract has an event effective {latest}; a termination cannot take effect before it"),
                ));
            }
        }
        EventBody::EventReversed(r) => {
            let Some(target) = state.events.get(&r.target_seq) else {
                let code = if r.target_seq >= next_seq { Code::UnknownReversalTarget } else { Code::ReversalOfOtherContract };
                return Err(reject(code, "data.target_seq", format!("seq {} is not an event of contract `{}`", r.target_seq, state.contract_id)));
            };
            let refuse = |code, message: String| Err(reject(code, "data.target_seq", message));
            match target.kind {
                EventKind::LeaseGranted => return refuse(Code::ReversalOfGrant, "a grant cannot be reversed; terminate the contract instead".into()),
                EventKind::EventReversed => return refuse(Code::ReversalOfReversal, "a reversal cannot be reversed".into()),
                _ => {}
            }
            if let Some(by) = target.reversed_by {
                return refuse(Code::AlreadyReversed, format!("seq {} was already reversed at seq {}", r.target_seq, by.seq));
            }
            if matches!(target.kind, EventKind::CapacityChanged | EventKind::MilestoneReached) {
                let left = state.firm_value_without(r.target_seq).map_err(|_| overflow())?;
                if left < 0 {
                    return refuse(
                        Code::FirmValueNegative,
                        format!("without seq {} the contract's firm value would be {}; reverse the decreases first",
                            r.target_seq, events::format_minor_units(left, state.currency())),
                    );
                }
            }
            if date < target.origin.date {
                return Err(reject(
                    Code::ReversalBeforeTarget,
                    "effective_date",
                    format!("seq {} takes effect {}; its reversal cannot take effect before that", r.target_seq, target.origin.date),
                ));
            }
        }
    }
    Ok(())
}

fn overflow() -> Rejection {
    reject(Code::AmountOverflow, "data", "arithmetic overflow".into())
}

/// The magnitude the event adds to the contract's running total (see `magnitude_total`).
fn amount_magnitude(body: &EventBody) -> i128 {
    match body {
        EventBody::CapacityChanged(c) => c.amount_delta.minor_units().abs(),
        EventBody::InvoiceIssued(i) => i.amount.minor_units(),
        EventBody::PaymentReceived(p) => p.amount.minor_units(),
        EventBody::SlaCreditIssued(s) => s.amount.minor_units(),
        EventBody::ContractTerminated(t) => t.fee.minor_units(),
        _ => 0,
    }
}
