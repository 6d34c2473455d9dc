//! [`BillingState`]: what deciding on an invoice or a payment needs of one contract, and
//! nothing else, so that a writer can keep it for every contract a long import touches.
//!
//! A contract's history is mostly invoices and payments, and its [`ContractState`] keeps
//! every one of them with its date and position (about 130 bytes an event), because views
//! at any past point need them. Deciding whether the next invoice or payment may be
//! appended needs far less: the version, the grant's date and currency, the running
//! magnitude total, which invoice and payment ids exist, and for each invoice what is still
//! owed on it and from when. That is about 30 bytes an event here (counted: tests/billing_memory.rs).
//!
//! It is sound, not complete: [`BillingState::admit`] answers `Some(body)` only when
//! [`crate::admit`] on the full state would admit the proposal with that very body, and
//! `None` ("not sure") otherwise: for every other kind of event, for every refusal (whose
//! code and message the full rules give), and wherever this state keeps too little to be
//! sure (a payment id whose hash it has seen, an invoice reversed or owed more than 64 bits
//! hold). On `None` the caller decides with the full state. Nothing here can admit what the
//! rules refuse, so the rules stay the one place events are decided on.
//!
//! Invoice ids are kept whole (a payment's invoice must be found exactly); payment ids only
//! as keyed hashes (a payment id is only ever checked for being new, and a hash seen before
//! means "not sure", never "new").

use crate::idindex::IdIndex;
use crate::state::{ContractState, FoldError, LedgerFacts, Mark};
use events::{ContractId, Currency, Date, Event, EventBody, EventKind, Proposal, Stream, MAX_ABS_MINOR_UNITS};
use hashbrown::HashTable;
use std::hash::{BuildHasher, RandomState};
use std::sync::LazyLock;

/// One key for every payment-id hash of the process, so that states can be compared. Keyed
/// (std's SipHash): ids are chosen by clients, and hashes they could make collide would turn
/// every payment of a contract into a decision on the full state.
static PAYMENT_HASHER: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// `owed` of an invoice this state cannot decide a payment against: reversed, or owed an
/// amount outside 64 bits.
const OWED_NOT_SURE: i64 = i64::MIN;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InvoiceEntry {
    /// What its payments not reversed leave owed, or [`OWED_NOT_SURE`].
    owed: i64,
    /// The end of its id in `invoice_ids` (it starts where the previous entry's ends).
    id_end: u32,
    date: Date,
}

/// What deciding on a contract's next invoice or payment needs (see the module's
/// documentation).
#[derive(Clone, Debug)]
pub struct BillingState {
    contract_id: ContractId,
    version: u64,
    last_seq: u64,
    magnitude_total: i128,
    latest_non_billing_date: Date,
    grant_date: Date,
    currency: Currency,
    /// The ids of `invoices`, one after the other.
    invoice_ids: String,
    /// Each invoice id's first invoice, in the order they were issued.
    invoices: Vec<InvoiceEntry>,
    invoice_index: IdIndex,
    /// Keyed hashes of the payment ids.
    payments: HashTable<u64>,
}

impl PartialEq for BillingState {
    fn eq(&self, other: &BillingState) -> bool {
        let mut payments: Vec<u64> = self.payments.iter().copied().collect();
        let mut others: Vec<u64> = other.payments.iter().copied().collect();
        payments.sort_unstable();
        others.sort_unstable();
        (self.contract_id == other.contract_id)
            && (self.version, self.last_seq, self.magnitude_total) == (other.version, other.last_seq, other.magnitude_total)
            && (self.latest_non_billing_date, self.grant_date, self.currency) == (other.latest_non_billing_date, other.grant_date, other.currency)
            && self.invoice_ids == other.invoice_ids
            && self.invoices == other.invoices
            && payments == others
    }
}

/// The id of the invoice at `position`: it ends at its entry's `id_end`, and starts where
/// the previous entry's ends.
fn id_at<'a>(ids: &'a str, invoices: &[InvoiceEntry], position: usize) -> &'a str {
    let start = match position {
        0 => 0,
        p => invoices[p - 1].id_end as usize,
    };
    &ids[start..invoices[position].id_end as usize]
}

fn payment_hash(id: &str) -> u64 {
    PAYMENT_HASHER.hash_one(id)
}

/// An amount as kept for an invoice: `OWED_NOT_SURE` if it does not fit.
fn owed_kept(owed: i128) -> i64 {
    i64::try_from(owed).ok().filter(|o| *o != OWED_NOT_SURE).unwrap_or(OWED_NOT_SURE)
}

impl BillingState {
    /// The billing state of `state`; `None` for a state holding payments that name an id no
    /// invoice has (only a chain the rules did not make holds one: an invoice issued later
    /// with that id would take them, which this state does not follow).
    pub fn of(state: &ContractState) -> Option<BillingState> {
        if !state.paid_unknown.is_empty() {
            return None;
        }
        let mut billing = BillingState {
            contract_id: state.contract_id.clone(),
            version: state.version,
            last_seq: state.last_seq,
            magnitude_total: state.magnitude_total,
            latest_non_billing_date: state.latest_non_billing_date,
            grant_date: state.grant.origin.date,
            currency: state.grant.currency,
            invoice_ids: String::new(),
            invoices: Vec::new(),
            invoice_index: IdIndex::default(),
            payments: HashTable::new(),
        };
        for invoice in &state.invoices {
            if billing.invoice_at(&invoice.invoice_id).is_some() {
                continue; // a later invoice of an id: the first is the one found
            }
            let owed = if state.is_reversed(invoice.origin.seq) { OWED_NOT_SURE } else { owed_kept(state.invoice_owed(invoice)) };
            billing.push_invoice(&invoice.invoice_id, owed, invoice.origin.date)?;
        }
        for payment in &state.payments {
            billing.insert_payment(&payment.payment_id);
        }
        billing.shrink();
        Some(billing)
    }

    pub fn contract_id(&self) -> &ContractId {
        &self.contract_id
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Invoices and payments it holds (what it costs in memory: about 30 bytes each).
    pub fn len(&self) -> usize {
        self.invoices.len() + self.payments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the state is now, as [`ContractState::mark`] of the full state would say.
    pub fn mark(&self) -> Mark {
        Mark {
            last_seq: self.last_seq,
            version: self.version,
            latest_non_billing_date: self.latest_non_billing_date,
            magnitude_total: self.magnitude_total,
        }
    }

    fn id_of(&self, position: usize) -> &str {
        id_at(&self.invoice_ids, &self.invoices, position)
    }

    fn invoice_at(&self, id: &str) -> Option<usize> {
        self.invoice_index.get(id, |p| self.id_of(p))
    }

    /// Adds an invoice id not held yet; `None` if the ids would pass 4 GiB.
    fn push_invoice(&mut self, id: &str, owed: i64, date: Date) -> Option<()> {
        let id_end = u32::try_from(self.invoice_ids.len() + id.len()).ok()?;
        let position = self.invoices.len();
        self.invoice_ids.push_str(id);
        self.invoices.push(InvoiceEntry { owed, id_end, date });
        let (ids, invoices) = (&self.invoice_ids, &self.invoices);
        let new = self.invoice_index.insert_first(id, position, |p| id_at(ids, invoices, p));
        debug_assert!(new, "an invoice id is pushed once");
        Some(())
    }

    /// Whether `id` was new.
    fn insert_payment(&mut self, id: &str) -> bool {
        let hash = payment_hash(id);
        if self.payments.find(hash, |h| *h == hash).is_some() {
            return false;
        }
        self.payments.insert_unique(hash, hash, |h| *h);
        true
    }

    /// Kept for long: no slack beyond the hash tables'.
    fn shrink(&mut self) {
        self.invoice_ids.shrink_to_fit();
        self.invoices.shrink_to_fit();
    }

    /// The body [`crate::admit`] would admit `proposal` with, on the full state of this
    /// contract, when this state is enough to be sure of it; `None` otherwise (the caller
    /// decides with the full state). Only invoices and payments are ever admitted here.
    pub fn admit(&self, proposal: &Proposal, ledger: &LedgerFacts) -> Option<EventBody> {
        if !matches!(&proposal.stream, Stream::Contract(id) if *id == self.contract_id) {
            return None;
        }
        if !matches!(proposal.kind(), EventKind::InvoiceIssued | EventKind::PaymentReceived) {
            return None;
        }
        if proposal.expected_version.is_some_and(|v| v != self.version) {
            return None;
        }
        let date = proposal.effective_date;
        if ledger.period_end.is_some_and(|end| date <= end) || date < self.grant_date {
            return None;
        }
        let body = proposal.resolve(Some(self.currency)).ok()?;
        let added = match &body {
            EventBody::InvoiceIssued(i) => {
                if self.invoice_at(&i.invoice_id).is_some() {
                    return None;
                }
                i.amount.minor_units()
            }
            EventBody::PaymentReceived(p) => {
                let hash = payment_hash(&p.payment_id);
                if self.payments.find(hash, |h| *h == hash).is_some() {
                    return None;
                }
                if let Some(invoice_id) = &p.invoice_id {
                    let invoice = self.invoices[self.invoice_at(invoice_id)?];
                    if invoice.owed == OWED_NOT_SURE || date < invoice.date || p.amount.minor_units() > i128::from(invoice.owed) {
                        return None;
                    }
                }
                p.amount.minor_units()
            }
            _ => return None,
        };
        if self.magnitude_total.checked_add(added).is_none_or(|t| t > MAX_ABS_MINOR_UNITS) {
            return None;
        }
        Some(body)
    }

    /// Folds the next event of the contract, an invoice or a payment this state admitted
    /// ([`BillingState::admit`]) or a leader decided on, as [`ContractState::apply`] folds
    /// it into the full state. Any other event, and one it could not roll back exactly, is
    /// an error, and leaves the state unchanged (the caller folds it into the full state).
    pub fn apply(&mut self, event: &Event) -> Result<(), FoldError> {
        let seq = event.seq;
        if event.stream.contract_id() != Some(&self.contract_id) {
            let found = event.stream.contract_id().map_or("(ledger)".to_string(), ContractId::to_string);
            return Err(FoldError::WrongContract { seq, expected: self.contract_id.to_string(), found });
        }
        if event.version != self.version + 1 {
            return Err(FoldError::VersionGap { seq, expected: self.version + 1, found: event.version });
        }
        if let Some(found) = event.body.currency().filter(|c| *c != self.currency) {
            return Err(FoldError::CurrencyMismatch { seq, expected: self.currency, found });
        }
        let not_billing = || FoldError::NotBilling { seq, kind: event.body.kind() };
        let added = match &event.body {
            EventBody::InvoiceIssued(i) => i.amount.minor_units().abs(),
            EventBody::PaymentReceived(p) => p.amount.minor_units().abs(),
            _ => return Err(not_billing()),
        };
        let total = self.magnitude_total.checked_add(added).filter(|t| *t <= MAX_ABS_MINOR_UNITS).ok_or(FoldError::Overflow { seq })?;
        match &event.body {
            EventBody::InvoiceIssued(i) => {
                if self.invoice_at(&i.invoice_id).is_some() {
                    return Err(not_billing());
                }
                self.push_invoice(&i.invoice_id, owed_kept(i.amount.minor_units()), event.effective_date).ok_or_else(not_billing)?;
            }
            EventBody::PaymentReceived(p) => {
                let invoice = match &p.invoice_id {
                    Some(id) => Some(self.invoice_at(id).filter(|at| self.invoices[*at].owed != OWED_NOT_SURE).ok_or_else(not_billing)?),
                    None => None,
                };
                // What it leaves owed must be kept exactly, or a rollback could not give
                // back what was owed before (a leader's rules never let a payment pass
                // what is owed; a copied event is not decided again).
                let owed = match invoice {
                    Some(at) => {
                        let owed = owed_kept(i128::from(self.invoices[at].owed) - p.amount.minor_units());
                        if owed == OWED_NOT_SURE {
                            return Err(not_billing());
                        }
                        Some((at, owed))
                    }
                    None => None,
                };
                if !self.insert_payment(&p.payment_id) {
                    return Err(not_billing());
                }
                if let Some((at, owed)) = owed {
                    self.invoices[at].owed = owed;
                }
            }
            _ => return Err(not_billing()),
        }
        self.magnitude_total = total;
        self.version = event.version;
        self.last_seq = seq;
        Ok(())
    }

    /// Undoes the events folded after `mark`, given newest first (each one this state
    /// applied): the state equals the one `mark` was taken of.
    pub fn rollback<'a>(&mut self, mark: &Mark, undone: impl IntoIterator<Item = &'a Event>) {
        for event in undone {
            debug_assert!(event.seq > mark.last_seq, "only events after the mark are undone");
            match &event.body {
                EventBody::InvoiceIssued(i) => {
                    let Some(position) = self.invoices.len().checked_sub(1) else {
                        debug_assert!(false, "an invoice undone that was never applied");
                        continue;
                    };
                    debug_assert_eq!(self.id_of(position), i.invoice_id, "invoices are undone newest first");
                    self.invoice_index.remove_at(&i.invoice_id, position);
                    self.invoices.pop();
                    self.invoice_ids.truncate(self.invoices.last().map_or(0, |e| e.id_end as usize));
                }
                EventBody::PaymentReceived(p) => {
                    let hash = payment_hash(&p.payment_id);
                    if let Ok(entry) = self.payments.find_entry(hash, |h| *h == hash) {
                        entry.remove();
                    }
                    if let Some(at) = p.invoice_id.as_deref().and_then(|id| self.invoice_at(id)) {
                        let entry = &mut self.invoices[at];
                        entry.owed = owed_kept(i128::from(entry.owed) + p.amount.minor_units());
                    }
                }
                _ => debug_assert!(false, "a billing state holds only invoices and payments"),
            }
        }
        self.last_seq = mark.last_seq;
        self.version = mark.version;
        self.magnitude_total = mark.magnitude_total;
        self.latest_non_billing_date = mark.latest_non_billing_date;
    }
}
