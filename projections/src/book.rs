//! [`Book`]: every contract's state and the ledger-wide facts, folded from a chain of events
//! in memory. Pure. Used to compute views from an export offline, by followers, and by
//! tests that need a whole ledger without storage.

use crate::chain::{fold_into, seal, Sealing, Tip};
use crate::state::{ContractState, FoldError, LedgerFacts};
use events::{ContractId, Digest, Proposal, RecordedEvent, Rejection, Timestamp};
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

    /// The end of the chain folded so far.
    pub fn tip(&self) -> Tip {
        Tip { seq: self.head_seq, hash: self.head_hash, recorded_at: self.head_recorded_at }
    }

    /// Folds a recorded event (the next one of the chain) into the book.
    pub fn apply(&mut self, recorded: &RecordedEvent) -> Result<(), FoldError> {
        let event = &recorded.event;
        fold_into(&mut self.contracts, event, &mut self.ledger)?;
        self.head_seq = event.seq;
        self.head_hash = recorded.hash;
        self.head_recorded_at = Some(event.recorded_at);
        Ok(())
    }

    /// Decides on a proposal as the ledger would ([`seal`]) and, if admitted, records it as
    /// the next event, recorded at `now` (or the previous event's time if that is later).
    pub fn propose(&mut self, proposal: &Proposal, default_actor: &str, now: Timestamp) -> Result<RecordedEvent, Rejection> {
        let contract = proposal.stream.contract_id().and_then(|id| self.contracts.get(id));
        let sealing = Sealing { now, default_actor, idempotency_key: proposal.idempotency_key.as_deref() };
        let recorded = seal(proposal, contract, &self.ledger, &self.tip(), &sealing)?;
        self.apply(&recorded).map_err(Rejection::from)?;
        Ok(recorded)
    }
}
