//! The typed bodies of events as they are stored (amounts as [`Money`]).
//!
//! The declaration order of [`EventBody`]'s variants, and of every struct's fields, is the
//! canonical byte layout (docs/FORMAT.md): never reorder, only append new variants.

use crate::money::Money;
use crate::text::ContractId;
use crate::time::Date;
use crate::Currency;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A half-open range of days `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub start: Date,
    pub end: Date,
}

impl Window {
    /// Number of days N = end - start.
    pub fn days(&self) -> i64 {
        self.start.days_until(self.end)
    }

    pub fn contains_window(&self, inner: &Window) -> bool {
        self.start <= inner.start && inner.end <= self.end
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub site: String,
    pub gpu_model: String,
    pub gpus: u64,
}

/// Whether a tranche counts from the start or waits on a milestone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Condition {
    Firm,
    Milestone(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tranche {
    pub id: String,
    pub amount: Money,
    pub window: Window,
    pub condition: Condition,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseGranted {
    pub provider: String,
    pub customer: String,
    pub currency: Currency,
    pub term: Window,
    pub cluster: Cluster,
    pub headline: Money,
    pub tranches: Vec<Tranche>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CapacityChanged {
    pub gpus_delta: i64,
    pub amount_delta: Money,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Achieved,
    Failed,
    Waived,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Achieved => "achieved",
            Outcome::Failed => "failed",
            Outcome::Waived => "waived",
        }
    }

    /// Waived counts as achieved (SPEC section 3).
    pub fn counts_tranche(self) -> bool {
        matches!(self, Outcome::Achieved | Outcome::Waived)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MilestoneReached {
    pub milestone: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InvoiceIssued {
    pub invoice_id: String,
    pub amount: Money,
    pub due_date: Date,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PaymentReceived {
    pub payment_id: String,
    pub amount: Money,
    pub invoice_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlaCreditIssued {
    pub amount: Money,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContractTerminated {
    pub fee: Money,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodClosed {
    pub period_end: Date,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventReversed {
    pub target_seq: u64,
    pub reason: String,
}

/// The body of an event. Variant indices 0..=8 are part of the canonical format.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventBody {
    LeaseGranted(LeaseGranted),
    CapacityChanged(CapacityChanged),
    MilestoneReached(MilestoneReached),
    InvoiceIssued(InvoiceIssued),
    PaymentReceived(PaymentReceived),
    SlaCreditIssued(SlaCreditIssued),
    ContractTerminated(ContractTerminated),
    PeriodClosed(PeriodClosed),
    EventReversed(EventReversed),
}

/// The type of an event, without its data: the JSON `type` and the NATS subject token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    LeaseGranted,
    CapacityChanged,
    MilestoneReached,
    InvoiceIssued,
    PaymentReceived,
    SlaCreditIssued,
    ContractTerminated,
    PeriodClosed,
    EventReversed,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::LeaseGranted,
        EventKind::CapacityChanged,
        EventKind::MilestoneReached,
        EventKind::InvoiceIssued,
        EventKind::PaymentReceived,
        EventKind::SlaCreditIssued,
        EventKind::ContractTerminated,
        EventKind::PeriodClosed,
        EventKind::EventReversed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LeaseGranted => "lease_granted",
            EventKind::CapacityChanged => "capacity_changed",
            EventKind::MilestoneReached => "milestone_reached",
            EventKind::InvoiceIssued => "invoice_issued",
            EventKind::PaymentReceived => "payment_received",
            EventKind::SlaCreditIssued => "sla_credit_issued",
            EventKind::ContractTerminated => "contract_terminated",
            EventKind::PeriodClosed => "period_closed",
            EventKind::EventReversed => "event_reversed",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Ledger-wide events belong to no contract.
    pub fn is_ledger_wide(self) -> bool {
        self == EventKind::PeriodClosed
    }

    /// Billing events are still accepted on a terminated contract and do not hold back a
    /// termination date (SPEC section 4).
    pub fn is_billing(self) -> bool {
        matches!(self, EventKind::InvoiceIssued | EventKind::PaymentReceived)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EventBody {
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::LeaseGranted(_) => EventKind::LeaseGranted,
            EventBody::CapacityChanged(_) => EventKind::CapacityChanged,
            EventBody::MilestoneReached(_) => EventKind::MilestoneReached,
            EventBody::InvoiceIssued(_) => EventKind::InvoiceIssued,
            EventBody::PaymentReceived(_) => EventKind::PaymentReceived,
            EventBody::SlaCreditIssued(_) => EventKind::SlaCreditIssued,
            EventBody::ContractTerminated(_) => EventKind::ContractTerminated,
            EventBody::PeriodClosed(_) => EventKind::PeriodClosed,
            EventBody::EventReversed(_) => EventKind::EventReversed,
        }
    }

    /// The currency of the amounts in this body, if it has any.
    pub fn currency(&self) -> Option<Currency> {
        match self {
            EventBody::LeaseGranted(g) => Some(g.currency),
            EventBody::CapacityChanged(c) => Some(c.amount_delta.currency()),
            EventBody::InvoiceIssued(i) => Some(i.amount.currency()),
            EventBody::PaymentReceived(p) => Some(p.amount.currency()),
            EventBody::SlaCreditIssued(s) => Some(s.amount.currency()),
            EventBody::ContractTerminated(t) => Some(t.fee.currency()),
            EventBody::MilestoneReached(_) | EventBody::PeriodClosed(_) | EventBody::EventReversed(_) => None,
        }
    }
}

/// Which stream of versions an event belongs to: a contract, or the ledger itself
/// (`period_closed`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    Ledger,
    Contract(ContractId),
}

impl Stream {
    pub fn contract_id(&self) -> Option<&ContractId> {
        match self {
            Stream::Ledger => None,
            Stream::Contract(id) => Some(id),
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stream::Ledger => f.write_str("(ledger)"),
            Stream::Contract(id) => f.write_str(id.as_str()),
        }
    }
}
