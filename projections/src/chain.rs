//! The one seal and the one fold.
//!
//! [`seal`] (or [`seal_billing`], when a contract's billing state is enough to decide)
//! turns a proposal into the next event of the chain: SPEC section 4's rules
//! ([`admit`]), then the envelope (seq, version, prev_hash, recorded_at, actor), the
//! canonical bytes and their hash, and the size bound. [`fold`] folds any event (one just
//! sealed, one replicated from a leader, one read back from storage) into the state of its
//! stream. The ledger's writer, its follower path, its views and rebuild, and [`crate::Book`]
//! (which the worked examples and property tests drive) all call these two functions and
//! nothing else, so a test of one is a test of all.

use crate::billing::BillingState;
use crate::rules::admit;
use crate::state::{ContractState, FoldError, LedgerFacts};
use events::{Code, ContractId, Digest, Event, Proposal, RecordedEvent, Rejection, Stream, Timestamp, CANONICAL_LEN_MAX};
use std::collections::BTreeMap;

/// The end of the chain a new event links to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tip {
    pub seq: u64,
    pub hash: Digest,
    /// When the last event was recorded; `recorded_at` never goes back along the chain.
    pub recorded_at: Option<Timestamp>,
}

impl Tip {
    pub fn of(recorded: &RecordedEvent) -> Tip {
        Tip { seq: recorded.event.seq, hash: recorded.hash, recorded_at: Some(recorded.event.recorded_at) }
    }
}

/// Who and when, for sealing: the writer's clock and the request's principal.
#[derive(Clone, Copy, Debug)]
pub struct Sealing<'a> {
    /// The server's clock now. Its UTC date is "today" for rules that need one (a period may
    /// be closed only after it ended).
    pub now: Timestamp,
    /// The actor of an event that does not name one.
    pub default_actor: &'a str,
    /// The key recorded in the envelope (the request's, for a single event).
    pub idempotency_key: Option<&'a str>,
}

/// Decides on `proposal` as the event after `tip` and, if the rules admit it, seals it.
/// `contract` is the state of the proposal's contract, if it exists. Nothing is changed:
/// the caller folds the result with [`fold`].
pub fn seal(
    proposal: &Proposal,
    contract: Option<&ContractState>,
    ledger: &LedgerFacts,
    tip: &Tip,
    sealing: &Sealing<'_>,
) -> Result<RecordedEvent, Rejection> {
    let next_seq = next_seq(tip)?;
    let today = sealing.now.date();
    let body = admit(proposal, contract, ledger, next_seq, today)?;
    let version = match (&proposal.stream, contract) {
        (Stream::Ledger, _) => ledger.version + 1,
        (Stream::Contract(_), Some(state)) => state.version + 1,
        (Stream::Contract(_), None) => 1,
    };
    envelope(proposal, body, version, tip, sealing)
}

/// [`seal`] with a contract's [`BillingState`] in place of its state: `None` when that is
/// not enough to be sure of the decision ([`BillingState::admit`]), and the caller then
/// seals with the full state. When it is sure, the event is the one [`seal`] would make.
pub fn seal_billing(
    proposal: &Proposal,
    billing: &BillingState,
    ledger: &LedgerFacts,
    tip: &Tip,
    sealing: &Sealing<'_>,
) -> Option<Result<RecordedEvent, Rejection>> {
    let body = billing.admit(proposal, ledger)?;
    Some(envelope(proposal, body, billing.version() + 1, tip, sealing))
}

fn next_seq(tip: &Tip) -> Result<u64, Rejection> {
    tip.seq.checked_add(1).ok_or_else(|| Rejection::new(Code::InvalidValue, None, "the ledger is full"))
}

/// The event after `tip` that an admitted proposal makes: its envelope, canonical bytes and
/// hash, within the size bound.
fn envelope(proposal: &Proposal, body: events::EventBody, version: u64, tip: &Tip, sealing: &Sealing<'_>) -> Result<RecordedEvent, Rejection> {
    let next_seq = next_seq(tip)?;
    let recorded = RecordedEvent::seal(Event {
        prev_hash: tip.hash,
        seq: next_seq,
        stream: proposal.stream.clone(),
        version,
        effective_date: proposal.effective_date,
        recorded_at: tip.recorded_at.map_or(sealing.now, |last| sealing.now.max(last)),
        actor: proposal.actor.clone().unwrap_or_else(|| sealing.default_actor.to_string()),
        idempotency_key: sealing.idempotency_key.map(str::to_string),
        body,
    });
    if recorded.canonical.len() > CANONICAL_LEN_MAX {
        return Err(Rejection::new(
            Code::InvalidValue,
            None,
            format!("the event is {} bytes; at most {CANONICAL_LEN_MAX}", recorded.canonical.len()),
        ));
    }
    debug_assert_eq!(Event::decode(&recorded.canonical).as_ref(), Ok(&recorded.event), "sealed bytes decode to the event");
    Ok(recorded)
}

/// [`fold`] of `event` into `states`, every contract's state by id (a grant adds its
/// contract's), or into `ledger`. On error nothing was changed.
pub fn fold_into(states: &mut BTreeMap<ContractId, ContractState>, event: &Event, ledger: &mut LedgerFacts) -> Result<(), FoldError> {
    let contract = event.stream.contract_id().and_then(|id| states.get_mut(id));
    if let Some(new) = fold(event, contract, ledger)? {
        states.insert(new.contract_id.clone(), new);
    }
    Ok(())
}

/// Folds `event` into the state of its stream. `contract` must be the current state of the
/// event's contract, or `None` when it has none yet (the event must then be its grant, and
/// the new state is returned for the caller to keep). A ledger-wide event folds into `ledger`.
/// On error nothing was changed.
pub fn fold(event: &Event, contract: Option<&mut ContractState>, ledger: &mut LedgerFacts) -> Result<Option<ContractState>, FoldError> {
    match (&event.stream, contract) {
        (Stream::Ledger, _) => ledger.apply(event).map(|()| None),
        (Stream::Contract(_), Some(state)) => state.apply(event).map(|()| None),
        (Stream::Contract(_), None) => ContractState::from_grant(event).map(Some),
    }
}
