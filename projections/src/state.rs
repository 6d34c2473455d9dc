//! The fold: what the ledger knows of one contract, every fact kept with the position
//! (`seq`) and business date it came with, so that any view "as of D, known at K" can be
//! computed from the state alone (see `figures`).

use events::{
    Cluster, Code, Condition, ContractId, Currency, Date, Event, EventBody, EventKind, Outcome, Rejection, Window,
};
use crate::idindex::IdIndex;
use crate::eventfacts::EventFacts;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a fact came from: the event's position and its effective date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub seq: u64,
    pub date: Date,
}

/// A point of view: business date D (inclusive) and ledger position K (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsOf {
    pub date: Date,
    pub known_at: u64,
}

impl AsOf {
    /// Everything known now, as of `date`.
    pub fn date(date: Date) -> AsOf {
        AsOf { date, known_at: u64::MAX }
    }

    /// Everything known now, at the last date the product can express: every fact that
    /// counts at any date.
    pub fn everything() -> AsOf {
        AsOf::date(Date::new(9999, 12, 31).expect("a valid date"))
    }

    pub fn with_date(self, date: Date) -> AsOf {
        AsOf { date, known_at: self.known_at }
    }

    fn sees(&self, origin: &Origin) -> bool {
        origin.seq <= self.known_at && origin.date <= self.date
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub origin: Origin,
    pub provider: String,
    pub customer: String,
    pub currency: Currency,
    pub term: Window,
    pub cluster: Cluster,
    pub actor: String,
}

/// A tranche of the contract: from the grant, or added by a capacity change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrancheFact {
    pub id: String,
    pub amount: i128,
    pub window: Window,
    pub condition: Condition,
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityFact {
    pub gpus_delta: i64,
    pub amount_delta: i128,
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolutionFact {
    pub milestone: String,
    pub outcome: Outcome,
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceFact {
    pub invoice_id: String,
    pub amount: i128,
    pub due_date: Date,
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFact {
    pub payment_id: String,
    pub amount: i128,
    pub invoice_id: Option<String>,
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditFact {
    pub amount: i128,
    pub reason: String,
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminationFact {
    pub fee: i128,
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReversalFact {
    pub target_seq: u64,
    pub reason: String,
    pub origin: Origin,
}

/// One event of the contract, as reversals and the termination rule need to see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFact {
    pub kind: EventKind,
    pub version: u64,
    pub origin: Origin,
    /// The reversal that targets this event, if any (at most one: an event is reversed once).
    pub reversed_by: Option<Origin>,
}

/// Everything known of one contract, folded from its events in ledger order.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "StoredState")]
pub struct ContractState {
    pub contract_id: ContractId,
    /// Version of the last event applied (the contract's event count).
    pub version: u64,
    pub last_seq: u64,
    pub grant: Grant,
    pub tranches: Vec<TrancheFact>,
    pub capacity_changes: Vec<CapacityFact>,
    pub resolutions: Vec<ResolutionFact>,
    pub invoices: Vec<InvoiceFact>,
    pub payments: Vec<PaymentFact>,
    pub credits: Vec<CreditFact>,
    pub terminations: Vec<TerminationFact>,
    pub reversals: Vec<ReversalFact>,
    pub events: EventFacts,
    /// Indexes, so that deciding on the next event does not scan the contract's history:
    /// the position in `invoices` (`payments`) of each id's first fact. Only `apply` and
    /// `rollback` change the facts and these together; a fact list changed otherwise
    /// leaves an index that points past it, and saving the state then panics.
    pub invoice_index: IdIndex,
    pub payment_index: IdIndex,
    /// Per invoice, by its position in `invoices`: the sum of the payments not reversed
    /// that name its id, kept at the id's first invoice (the one [`ContractState::invoice`]
    /// finds), 0 at any later one. 16 bytes an invoice; a map keyed by a copy of each id
    /// took about 80 (a fifth of a state on the bench's histories).
    pub(crate) paid: Vec<i128>,
    /// The same sums for ids no invoice has: only a chain the rules did not make holds a
    /// payment naming an invoice not issued before it. No entry is zero. With `paid`, the
    /// map [`ContractState::paid_by_invoice`], which is what is stored.
    pub(crate) paid_unknown: BTreeMap<String, i128>,
    /// Latest effective date among events other than invoices and payments.
    pub latest_non_billing_date: Date,
    /// Sum of the magnitudes of every amount of the contract, in minor units. Kept at or
    /// below `MAX_ABS_MINOR_UNITS` by the rules, which bounds every figure and every
    /// intermediate product of the revenue arithmetic.
    pub magnitude_total: i128,
}

/// [`ContractState`] as stored (postcard, views snapshots and summaries): its fields in
/// order, the id indexes as maps of id to position, as when they were `BTreeMap`s, so the
/// stored bytes did not change with [`IdIndex`] (pinned by `ledger/tests/views.rs` and the
/// test below).
#[derive(Serialize)]
#[serde(rename = "ContractState")]
struct StateOut<'a> {
    contract_id: &'a ContractId,
    version: u64,
    last_seq: u64,
    grant: &'a Grant,
    tranches: &'a [TrancheFact],
    capacity_changes: &'a [CapacityFact],
    resolutions: &'a [ResolutionFact],
    invoices: &'a [InvoiceFact],
    payments: &'a [PaymentFact],
    credits: &'a [CreditFact],
    terminations: &'a [TerminationFact],
    reversals: &'a [ReversalFact],
    events: &'a EventFacts,
    invoice_index: BTreeMap<&'a str, usize>,
    payment_index: BTreeMap<&'a str, usize>,
    paid_by_invoice: BTreeMap<&'a str, i128>,
    latest_non_billing_date: Date,
    magnitude_total: i128,
}

/// What [`StateOut`] wrote, read back: checked into a [`ContractState`].
#[derive(Deserialize)]
#[serde(rename = "ContractState")]
struct StoredState {
    contract_id: ContractId,
    version: u64,
    last_seq: u64,
    grant: Grant,
    tranches: Vec<TrancheFact>,
    capacity_changes: Vec<CapacityFact>,
    resolutions: Vec<ResolutionFact>,
    invoices: Vec<InvoiceFact>,
    payments: Vec<PaymentFact>,
    credits: Vec<CreditFact>,
    terminations: Vec<TerminationFact>,
    reversals: Vec<ReversalFact>,
    events: EventFacts,
    invoice_index: BTreeMap<String, usize>,
    payment_index: BTreeMap<String, usize>,
    paid_by_invoice: BTreeMap<String, i128>,
    latest_non_billing_date: Date,
    magnitude_total: i128,
}

impl Serialize for ContractState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StateOut {
            contract_id: &self.contract_id,
            version: self.version,
            last_seq: self.last_seq,
            grant: &self.grant,
            tranches: &self.tranches,
            capacity_changes: &self.capacity_changes,
            resolutions: &self.resolutions,
            invoices: &self.invoices,
            payments: &self.payments,
            credits: &self.credits,
            terminations: &self.terminations,
            reversals: &self.reversals,
            events: &self.events,
            invoice_index: self.invoice_index.to_map(|i| self.invoices[i].invoice_id.as_str()),
            payment_index: self.payment_index.to_map(|i| self.payments[i].payment_id.as_str()),
            paid_by_invoice: self.paid_by_invoice(),
            latest_non_billing_date: self.latest_non_billing_date,
            magnitude_total: self.magnitude_total,
        }
        .serialize(s)
    }
}

impl TryFrom<StoredState> for ContractState {
    type Error = &'static str;

    fn try_from(stored: StoredState) -> Result<ContractState, &'static str> {
        let invoice_index = IdIndex::from_map(stored.invoice_index, stored.invoices.len(), |i| stored.invoices[i].invoice_id.as_str())?;
        let payment_index = IdIndex::from_map(stored.payment_index, stored.payments.len(), |i| stored.payments[i].payment_id.as_str())?;
        let mut paid = vec![0; stored.invoices.len()];
        let mut paid_unknown = BTreeMap::new();
        for (id, sum) in stored.paid_by_invoice {
            if sum == 0 {
                return Err("a paid sum of zero is stored");
            }
            // What a state's amounts can add up to: the sums then never overflow.
            if sum.unsigned_abs() > events::MAX_ABS_MINOR_UNITS.unsigned_abs() {
                return Err("a paid sum beyond the bound on amounts is stored");
            }
            match invoice_index.get(&id, |i| stored.invoices[i].invoice_id.as_str()) {
                Some(position) => paid[position] = sum,
                None => {
                    paid_unknown.insert(id, sum);
                }
            }
        }
        Ok(ContractState {
            contract_id: stored.contract_id,
            version: stored.version,
            last_seq: stored.last_seq,
            grant: stored.grant,
            tranches: stored.tranches,
            capacity_changes: stored.capacity_changes,
            resolutions: stored.resolutions,
            invoices: stored.invoices,
            payments: stored.payments,
            credits: stored.credits,
            terminations: stored.terminations,
            reversals: stored.reversals,
            events: stored.events,
            invoice_index,
            payment_index,
            paid,
            paid_unknown,
            latest_non_billing_date: stored.latest_non_billing_date,
            magnitude_total: stored.magnitude_total,
        })
    }
}

/// A point a state can be rolled back to ([`ContractState::rollback`]): what it had folded,
/// and the aggregates that are not the sum of their facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub last_seq: u64,
    pub(crate) version: u64,
    pub(crate) latest_non_billing_date: Date,
    pub(crate) magnitude_total: i128,
}

/// Why an event cannot be folded into a state. Events that passed the rules always fold;
/// this is for events read from elsewhere (a follower's stream, a corrupted store).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    #[error("seq {seq}: event is for contract {found}, not {expected}")]
    WrongContract { seq: u64, expected: String, found: String },
    #[error("seq {seq}: version {found} does not follow {expected}")]
    VersionGap { seq: u64, expected: u64, found: u64 },
    #[error("seq {seq}: the first event of a contract must be its grant, not {kind}")]
    NotAGrant { seq: u64, kind: EventKind },
    #[error("seq {seq}: a contract is granted once")]
    SecondGrant { seq: u64 },
    #[error("seq {seq}: amount in {found}, the contract is in {expected}")]
    CurrencyMismatch { seq: u64, expected: Currency, found: Currency },
    #[error("seq {seq}: reversal target {target} is not an event of this contract")]
    UnknownTarget { seq: u64, target: u64 },
    #[error("seq {seq}: amounts of the contract exceed 10^30 minor units in total")]
    Overflow { seq: u64 },
    /// Only a [`crate::BillingState`] refuses so: it takes the invoices and payments it
    /// admitted, and nothing else.
    #[error("seq {seq}: a {kind} event that the billing state did not admit")]
    NotBilling { seq: u64, kind: EventKind },
}

impl From<FoldError> for Rejection {
    fn from(e: FoldError) -> Rejection {
        Rejection::new(Code::InvalidValue, None, e.to_string())
    }
}

impl ContractState {
    /// The state after the contract's grant.
    pub fn from_grant(event: &Event) -> Result<ContractState, FoldError> {
        let origin = Origin { seq: event.seq, date: event.effective_date };
        let contract_id = event.stream.contract_id().cloned();
        let (EventBody::LeaseGranted(g), Some(contract_id)) = (&event.body, contract_id) else {
            return Err(FoldError::NotAGrant { seq: event.seq, kind: event.body.kind() });
        };
        if event.version != 1 {
            return Err(FoldError::VersionGap { seq: event.seq, expected: 1, found: event.version });
        }
        let mut state = ContractState {
            contract_id,
            version: 1,
            last_seq: event.seq,
            grant: Grant {
                origin,
                provider: g.provider.clone(),
                customer: g.customer.clone(),
                currency: g.currency,
                term: g.term,
                cluster: g.cluster.clone(),
                actor: event.actor.clone(),
            },
            tranches: vec![],
            capacity_changes: vec![],
            resolutions: vec![],
            invoices: vec![],
            payments: vec![],
            credits: vec![],
            terminations: vec![],
            reversals: vec![],
            events: EventFacts::default(),
            invoice_index: IdIndex::default(),
            payment_index: IdIndex::default(),
            paid: Vec::new(),
            paid_unknown: BTreeMap::new(),
            latest_non_billing_date: origin.date,
            magnitude_total: 0,
        };
        for t in &g.tranches {
            state.check_currency(event.seq, t.amount.currency())?;
            state.add_magnitude(event.seq, t.amount.minor_units())?;
            state.tranches.push(TrancheFact {
                id: t.id.clone(),
                amount: t.amount.minor_units(),
                window: t.window,
                condition: t.condition.clone(),
                origin,
            });
        }
        state.events.insert(EventFact { kind: EventKind::LeaseGranted, version: 1, origin, reversed_by: None });
        Ok(state)
    }

    /// Folds the next event of this contract into the state.
    pub fn apply(&mut self, event: &Event) -> Result<(), FoldError> {
        let seq = event.seq;
        match event.stream.contract_id() {
            Some(id) if *id == self.contract_id => {}
            other => {
                return Err(FoldError::WrongContract {
                    seq,
                    expected: self.contract_id.to_string(),
                    found: other.map_or("(ledger)".to_string(), |c| c.to_string()),
                })
            }
        }
        if event.version != self.version + 1 {
            return Err(FoldError::VersionGap { seq, expected: self.version + 1, found: event.version });
        }
        if let Some(c) = event.body.currency() {
            self.check_currency(seq, c)?;
        }
        let origin = Origin { seq, date: event.effective_date };
        match &event.body {
            EventBody::LeaseGranted(_) => return Err(FoldError::SecondGrant { seq }),
            EventBody::PeriodClosed(_) => {
                return Err(FoldError::WrongContract { seq, expected: self.contract_id.to_string(), found: "(ledger)".into() })
            }
            EventBody::CapacityChanged(c) => {
                let amount = c.amount_delta.minor_units();
                self.add_magnitude(seq, amount)?;
                self.capacity_changes.push(CapacityFact { gpus_delta: c.gpus_delta, amount_delta: amount, origin });
                if amount != 0 {
                    self.tranches.push(TrancheFact {
                        id: format!("capacity-{seq}"),
                        amount,
                        window: self.capacity_window(event.effective_date),
                        condition: Condition::Firm,
                        origin,
                    });
                }
            }
            EventBody::MilestoneReached(m) => {
                self.resolutions.push(ResolutionFact { milestone: m.milestone.clone(), outcome: m.outcome, origin })
            }
            EventBody::InvoiceIssued(i) => {
                self.add_magnitude(seq, i.amount.minor_units())?;
                let invoices = &self.invoices;
                let first = self.invoice_index.insert_first(&i.invoice_id, invoices.len(), |p| if p == invoices.len() { i.invoice_id.as_str() } else { invoices[p].invoice_id.as_str() });
                self.invoices.push(InvoiceFact {
                    invoice_id: i.invoice_id.clone(),
                    amount: i.amount.minor_units(),
                    due_date: i.due_date,
                    origin,
                });
                // Payments that named the id before it had an invoice now count at it.
                let sum = if first { self.paid_unknown.remove(&i.invoice_id).unwrap_or(0) } else { 0 };
                self.paid.push(sum);
            }
            EventBody::PaymentReceived(p) => {
                self.add_magnitude(seq, p.amount.minor_units())?;
                let payments = &self.payments;
                self.payment_index.insert_first(&p.payment_id, payments.len(), |q| if q == payments.len() { p.payment_id.as_str() } else { payments[q].payment_id.as_str() });
                if let Some(invoice) = &p.invoice_id {
                    self.add_paid(invoice, p.amount.minor_units());
                }
                self.payments.push(PaymentFact {
                    payment_id: p.payment_id.clone(),
                    amount: p.amount.minor_units(),
                    invoice_id: p.invoice_id.clone(),
                    origin,
                });
            }
            EventBody::SlaCreditIssued(s) => {
                self.add_magnitude(seq, s.amount.minor_units())?;
                self.credits.push(CreditFact { amount: s.amount.minor_units(), reason: s.reason.clone(), origin });
            }
            EventBody::ContractTerminated(t) => {
                self.add_magnitude(seq, t.fee.minor_units())?;
                self.terminations.push(TerminationFact { fee: t.fee.minor_units(), origin });
            }
            EventBody::EventReversed(r) => {
                let target = self.events.get(&r.target_seq).ok_or(FoldError::UnknownTarget { seq, target: r.target_seq })?;
                self.events.set_reversed_by(r.target_seq, Some(origin));
                if target.kind == EventKind::PaymentReceived
                    && let Some(p) = self.payments.iter().rev().find(|p| p.origin.seq == r.target_seq)
                        && let Some(invoice) = p.invoice_id.clone() {
                            self.add_paid(&invoice, -p.amount);
                        }
                self.reversals.push(ReversalFact { target_seq: r.target_seq, reason: r.reason.clone(), origin });
            }
        }
        self.events.insert(EventFact { kind: event.body.kind(), version: event.version, origin, reversed_by: None });
        if !event.body.kind().is_billing() {
            self.latest_non_billing_date = self.latest_non_billing_date.max(event.effective_date);
        }
        self.version = event.version;
        self.last_seq = seq;
        Ok(())
    }

    /// Where the state is now, to roll back to.
    pub fn mark(&self) -> Mark {
        Mark {
            last_seq: self.last_seq,
            version: self.version,
            latest_non_billing_date: self.latest_non_billing_date,
            magnitude_total: self.magnitude_total,
        }
    }

    /// Undoes every event folded after `mark`, newest first, each exactly as `apply` did it:
    /// the state equals the one `mark` was taken of. Costs what the undone events added, not
    /// the state's size (an atomic batch refused part way is undone this way).
    pub fn rollback(&mut self, mark: &Mark) {
        let undone: Vec<(u64, EventKind)> = self.events.range(mark.last_seq + 1..).rev().map(|(seq, e)| (seq, e.kind)).collect();
        for (seq, kind) in undone {
            match kind {
                EventKind::CapacityChanged => {
                    self.capacity_changes.pop();
                    if self.tranches.last().is_some_and(|t| t.origin.seq == seq) {
                        self.tranches.pop();
                    }
                }
                EventKind::MilestoneReached => {
                    self.resolutions.pop();
                }
                EventKind::InvoiceIssued => {
                    if let Some(i) = self.invoices.pop() {
                        let was_first = self.invoice_index.remove_at(&i.invoice_id, self.invoices.len());
                        // What was paid at it goes back to an id without an invoice.
                        if let Some(sum) = self.paid.pop().filter(|sum| was_first && *sum != 0) {
                            self.paid_unknown.insert(i.invoice_id, sum);
                        }
                    }
                }
                EventKind::PaymentReceived => {
                    if let Some(p) = self.payments.pop() {
                        self.payment_index.remove_at(&p.payment_id, self.payments.len());
                        if let Some(invoice) = p.invoice_id {
                            self.add_paid(&invoice, -p.amount);
                        }
                    }
                }
                EventKind::SlaCreditIssued => {
                    self.credits.pop();
                }
                EventKind::ContractTerminated => {
                    self.terminations.pop();
                }
                EventKind::EventReversed => {
                    if let Some(r) = self.reversals.pop()
                        && let Some(target) = self.events.get(&r.target_seq) {
                            self.events.set_reversed_by(r.target_seq, None);
                            if target.kind == EventKind::PaymentReceived
                                && let Some(p) = self.payments.iter().rev().find(|p| p.origin.seq == r.target_seq)
                                && let Some(invoice) = p.invoice_id.clone() {
                                    self.add_paid(&invoice, p.amount);
                                }
                        }
                }
                // The grant is never undone this way (a state is dropped instead), and a
                // ledger-wide event is not in a contract's state.
                EventKind::LeaseGranted | EventKind::PeriodClosed => {}
            }
            self.events.remove(&seq);
        }
        self.last_seq = mark.last_seq;
        self.version = mark.version;
        self.latest_non_billing_date = mark.latest_non_billing_date;
        self.magnitude_total = mark.magnitude_total;
    }

    /// The window of the firm tranche a capacity change adds: from its effective date (or the
    /// term's start, for a change agreed before service begins) to the end of the term.
    pub fn capacity_window(&self, effective_date: Date) -> Window {
        Window { start: effective_date.max(self.grant.term.start), end: self.grant.term.end }
    }

    pub fn currency(&self) -> Currency {
        self.grant.currency
    }

    /// Does the fact from `origin` count at `at`: known by K, effective by D, and not
    /// reversed by a reversal that itself counts at `at`?
    pub fn counts(&self, origin: &Origin, at: &AsOf) -> bool {
        at.sees(origin) && !self.reversed_at(origin.seq, at)
    }

    fn reversed_at(&self, seq: u64, at: &AsOf) -> bool {
        self.events.get(&seq).and_then(|e| e.reversed_by).is_some_and(|r| at.sees(&r))
    }

    /// A termination that no reversal targets (known now, whatever its date).
    pub fn standing_termination(&self) -> Option<&TerminationFact> {
        self.terminations.iter().find(|t| self.events.get(&t.origin.seq).is_some_and(|e| e.reversed_by.is_none()))
    }

    /// The termination that counts at `at`, if any. The rules let at most one count.
    pub fn termination_at(&self, at: &AsOf) -> Option<&TerminationFact> {
        let mut counting = self.terminations.iter().filter(|t| self.counts(&t.origin, at));
        let first = counting.next();
        debug_assert!(counting.next().is_none(), "two terminations count at once");
        first
    }

    /// The resolution of `milestone` that counts at `at`, if any. The rules let at most one
    /// count at any point of view.
    pub fn resolution_at(&self, milestone: &str, at: &AsOf) -> Option<&ResolutionFact> {
        self.resolutions.iter().rev().find(|r| r.milestone == milestone && self.counts(&r.origin, at))
    }

    /// Does any tranche wait on `milestone`?
    pub fn has_milestone(&self, milestone: &str) -> bool {
        self.tranches.iter().any(|t| matches!(&t.condition, Condition::Milestone(m) if m == milestone))
    }

    /// GPUs of the cluster at `at`: the grant's plus every counting change.
    pub fn gpus_at(&self, at: &AsOf) -> i128 {
        let changes: i128 =
            self.capacity_changes.iter().filter(|c| self.counts(&c.origin, at)).map(|c| i128::from(c.gpus_delta)).sum();
        i128::from(self.grant.cluster.gpus) + changes
    }

    /// What an invoice still owes, counting every payment not reversed.
    pub fn invoice_owed(&self, invoice: &InvoiceFact) -> i128 {
        invoice.amount - self.paid_of(&invoice.invoice_id)
    }

    /// Per invoice id, the sum of its payments that are not reversed; no entry when that
    /// sum is zero (so a state has one form, whatever was added and taken away).
    pub fn paid_by_invoice(&self) -> BTreeMap<&str, i128> {
        let known = self.paid.iter().zip(&self.invoices).filter(|(sum, _)| **sum != 0).map(|(sum, i)| (i.invoice_id.as_str(), *sum));
        known.chain(self.paid_unknown.iter().map(|(id, sum)| (id.as_str(), *sum))).collect()
    }

    /// The sum of the payments not reversed that name `invoice_id`.
    fn paid_of(&self, invoice_id: &str) -> i128 {
        match self.invoice_position(invoice_id) {
            Some(position) => self.paid[position],
            None => self.paid_unknown.get(invoice_id).copied().unwrap_or(0),
        }
    }

    fn invoice_position(&self, invoice_id: &str) -> Option<usize> {
        self.invoice_index.get(invoice_id, |i| self.invoices[i].invoice_id.as_str())
    }

    /// Adds `amount` to the paid sum of `invoice_id`, keeping no zero entries of ids
    /// without an invoice. Amounts are bounded by the contract's magnitude total (10^30):
    /// no overflow.
    fn add_paid(&mut self, invoice_id: &str, amount: i128) {
        match self.invoice_position(invoice_id) {
            Some(position) => self.paid[position] += amount,
            None => {
                let total = self.paid_unknown.get(invoice_id).copied().unwrap_or(0) + amount;
                if total == 0 {
                    self.paid_unknown.remove(invoice_id);
                } else {
                    self.paid_unknown.insert(invoice_id.to_string(), total);
                }
            }
        }
    }

    pub fn invoice(&self, invoice_id: &str) -> Option<&InvoiceFact> {
        self.invoice_position(invoice_id).map(|i| &self.invoices[i])
    }

    pub fn payment(&self, payment_id: &str) -> Option<&PaymentFact> {
        self.payment_index.get(payment_id, |i| self.payments[i].payment_id.as_str()).map(|i| &self.payments[i])
    }

    /// Seqs of up to `limit` of the contract's events with a version above `after_version`,
    /// known at `known_at`, in version order.
    pub fn seqs_after(&self, after_version: u64, known_at: u64, limit: usize) -> Vec<u64> {
        self.events
            .iter()
            .filter(|(_, e)| e.version > after_version)
            .take_while(|(seq, _)| *seq <= known_at)
            .take(limit)
            .map(|(seq, _)| seq)
            .collect()
    }

    pub fn is_reversed(&self, seq: u64) -> bool {
        self.events.get(&seq).is_some_and(|e| e.reversed_by.is_some())
    }

    fn check_currency(&self, seq: u64, found: Currency) -> Result<(), FoldError> {
        if found == self.grant.currency {
            Ok(())
        } else {
            Err(FoldError::CurrencyMismatch { seq, expected: self.grant.currency, found })
        }
    }

    fn add_magnitude(&mut self, seq: u64, minor_units: i128) -> Result<(), FoldError> {
        let total = self
            .magnitude_total
            .checked_add(minor_units.abs())
            .filter(|t| *t <= events::MAX_ABS_MINOR_UNITS)
            .ok_or(FoldError::Overflow { seq })?;
        self.magnitude_total = total;
        Ok(())
    }
}

/// What the ledger knows of itself, apart from contracts: the closed period and the
/// version of the ledger-wide stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerFacts {
    pub version: u64,
    pub period_end: Option<Date>,
    /// Seq of each ledger-wide event, in version order (version = index + 1).
    pub seqs: Vec<u64>,
}

impl LedgerFacts {
    pub fn apply(&mut self, event: &Event) -> Result<(), FoldError> {
        if event.version != self.version + 1 {
            return Err(FoldError::VersionGap { seq: event.seq, expected: self.version + 1, found: event.version });
        }
        if let EventBody::PeriodClosed(p) = &event.body {
            self.period_end = Some(self.period_end.map_or(p.period_end, |old| old.max(p.period_end)));
        }
        self.version = event.version;
        self.seqs.push(event.seq);
        Ok(())
    }

    /// Seqs of up to `limit` ledger-wide events with a version above `after_version`, known
    /// at `known_at`.
    pub fn seqs_after(&self, after_version: u64, known_at: u64, limit: usize) -> Vec<u64> {
        let skip = usize::try_from(after_version).unwrap_or(usize::MAX);
        self.seqs.iter().skip(skip).take_while(|s| **s <= known_at).take(limit).copied().collect()
    }
}
