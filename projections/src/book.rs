//! [`Book`]: every contract's state and the ledger-wide facts, folded from a chain of events
//! in memory. Pure. Used to compute views from an export offline, by followers, and by
//! tests that need a whole ledger without storage.

use crate::rules::admit;
use crate::state::{ContractState, FoldError, LedgerFacts};
use events::{ContractId, Digest, Event, Proposal, RecordedEvent, Rejection, Stream, Timestamp};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Book {
    pub contracts: BTreeMap<ContractId, ContractState>,
    pub ledger: LedgerFacts,
    pub head_seq: u64,
    pub head_hash: Digest,
    pub head_recorded_at: Option<Timestamp>,
}

impl Book {
    pub fn new() -> Book {
        Book::default()
    }

    /// Folds a recorded event (the next one of the chain) into the book.
    pub fn apply(&mut self, recorded: &RecordedEvent) -> Result<(), FoldError> {
        let event = &recorded.event;
        match &event.stream {
            Stream::Ledger => self.ledger.apply(event)?,
            Stream::Contract(id) => match self.contracts.get_mut(id) {
                Some(state) => state.apply(event)?,
                None => {
                    self.contracts.insert(id.clone(), ContractState::from_grant(event)?);
                }
            },
        }
        self.head_seq = event.seq;
        self.head_hash = recorded.hash;
        self.head_recorded_at = Some(event.recorded_at);
        Ok(())
    }

    /// Decides on a proposal as the ledger would and, if admitted, records it as the next
    /// event (recorded at `now`, or the previous event's time if that is later).
    pub fn propose(&mut self, proposal: &Proposal, default_actor: &str, now: Timestamp) -> Result<RecordedEvent, Rejection> {
        let next_seq = self.head_seq + 1;
        let contract = proposal.stream.contract_id().and_then(|id| self.contracts.get(id));
        let body = admit(proposal, contract, &self.ledger, next_seq)?;
        let version = match (&proposal.stream, contract) {
            (Stream::Ledger, _) => self.ledger.version + 1,
            (Stream::Contract(_), Some(state)) => state.version + 1,
            (Stream::Contract(_), None) => 1,
        };
        let recorded = RecordedEvent::seal(Event {
            prev_hash: self.head_hash,
            seq: next_seq,
            stream: proposal.stream.clone(),
            version,
            effective_date: proposal.effective_date,
            recorded_at: self.head_recorded_at.map_or(now, |last| now.max(last)),
            actor: proposal.actor.clone().unwrap_or_else(|| default_actor.to_string()),
            idempotency_key: proposal.idempotency_key.clone(),
            body,
        });
        self.apply(&recorded).map_err(Rejection::from)?;
        Ok(recorded)
    }
}
