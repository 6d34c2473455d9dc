//! The JSON wire form of events (SPEC section 3, "Wire examples"): parsing with errors that
//! name the field, the checks one event can pass alone, and the way back from a stored event.
//!
//! A wire event carries amounts as decimal strings that mean nothing without the contract's
//! currency, which only the ledger knows (from the grant). So parsing yields a [`Proposal`],
//! and [`Proposal::resolve`] turns it into a stored [`EventBody`] given that currency.

use crate::body::*;
use crate::money::{Decimal, Money};
use crate::rejection::{Code, Rejection};
use crate::text::{check_identifier, check_idempotency_key, check_text, ContractId};
use crate::time::Date;
use crate::{Currency, Event};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Most tranches one grant may carry.
pub const TRANCHES_MAX: usize = 1_000;
/// Most GPUs a cluster may have, and the largest GPU change one event may make: far above
/// any real cluster (the largest in 2026 are a few hundred thousand), and small enough that
/// no sum of counts and changes the ledger can hold overflows or leaves the range every JSON
/// reader handles exactly (2^53).
pub const GPUS_MAX: u64 = 1_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireTranche {
    pub id: String,
    pub amount: Decimal,
    pub window: Window,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firm: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub milestone: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireLeaseGranted {
    pub provider: String,
    pub customer: String,
    pub currency: String,
    pub term: Window,
    pub cluster: Cluster,
    pub headline: Decimal,
    pub tranches: Vec<WireTranche>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireCapacityChanged {
    pub gpus_delta: i64,
    pub amount_delta: Decimal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireInvoiceIssued {
    pub invoice_id: String,
    pub amount: Decimal,
    pub due_date: Date,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WirePaymentReceived {
    pub payment_id: String,
    pub amount: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireSlaCreditIssued {
    pub amount: Decimal,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireContractTerminated {
    pub fee: Decimal,
}

/// The `data` of a wire event, typed by its `type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireBody {
    LeaseGranted(WireLeaseGranted),
    CapacityChanged(WireCapacityChanged),
    MilestoneReached(MilestoneReached),
    InvoiceIssued(WireInvoiceIssued),
    PaymentReceived(WirePaymentReceived),
    SlaCreditIssued(WireSlaCreditIssued),
    ContractTerminated(WireContractTerminated),
    PeriodClosed(PeriodClosed),
    EventReversed(EventReversed),
}

impl WireBody {
    pub fn kind(&self) -> EventKind {
        match self {
            WireBody::LeaseGranted(_) => EventKind::LeaseGranted,
            WireBody::CapacityChanged(_) => EventKind::CapacityChanged,
            WireBody::MilestoneReached(_) => EventKind::MilestoneReached,
            WireBody::InvoiceIssued(_) => EventKind::InvoiceIssued,
            WireBody::PaymentReceived(_) => EventKind::PaymentReceived,
            WireBody::SlaCreditIssued(_) => EventKind::SlaCreditIssued,
            WireBody::ContractTerminated(_) => EventKind::ContractTerminated,
            WireBody::PeriodClosed(_) => EventKind::PeriodClosed,
            WireBody::EventReversed(_) => EventKind::EventReversed,
        }
    }

    fn parse(kind: EventKind, data: serde_json::Value) -> Result<WireBody, Rejection> {
        let body = match kind {
            EventKind::LeaseGranted => WireBody::LeaseGranted(from_value(data)?),
            EventKind::CapacityChanged => WireBody::CapacityChanged(from_value(data)?),
            EventKind::MilestoneReached => WireBody::MilestoneReached(from_value(data)?),
            EventKind::InvoiceIssued => WireBody::InvoiceIssued(from_value(data)?),
            EventKind::PaymentReceived => WireBody::PaymentReceived(from_value(data)?),
            EventKind::SlaCreditIssued => WireBody::SlaCreditIssued(from_value(data)?),
            EventKind::ContractTerminated => WireBody::ContractTerminated(from_value(data)?),
            EventKind::PeriodClosed => WireBody::PeriodClosed(from_value(data)?),
            EventKind::EventReversed => WireBody::EventReversed(from_value(data)?),
        };
        Ok(body)
    }

    /// The `data` object of this body.
    pub fn to_json(&self) -> serde_json::Value {
        // Plain structs of strings and integers always serialize.
        serde_json::to_value(self).expect("wire bodies serialize to JSON")
    }
}

/// A body serializes as its `data` object (the `type` beside it says which).
impl Serialize for WireBody {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            WireBody::LeaseGranted(b) => b.serialize(serializer),
            WireBody::CapacityChanged(b) => b.serialize(serializer),
            WireBody::MilestoneReached(b) => b.serialize(serializer),
            WireBody::InvoiceIssued(b) => b.serialize(serializer),
            WireBody::PaymentReceived(b) => b.serialize(serializer),
            WireBody::SlaCreditIssued(b) => b.serialize(serializer),
            WireBody::ContractTerminated(b) => b.serialize(serializer),
            WireBody::PeriodClosed(b) => b.serialize(serializer),
            WireBody::EventReversed(b) => b.serialize(serializer),
        }
    }
}

impl From<&EventBody> for WireBody {
    fn from(body: &EventBody) -> WireBody {
        match body {
            EventBody::LeaseGranted(g) => WireBody::LeaseGranted(WireLeaseGranted {
                provider: g.provider.clone(),
                customer: g.customer.clone(),
                currency: g.currency.code().to_string(),
                term: g.term,
                cluster: g.cluster.clone(),
                headline: g.headline.into(),
                tranches: g
                    .tranches
                    .iter()
                    .map(|t| WireTranche {
                        id: t.id.clone(),
                        amount: t.amount.into(),
                        window: t.window,
                        firm: matches!(t.condition, Condition::Firm).then_some(true),
                        milestone: match &t.condition {
                            Condition::Firm => None,
                            Condition::Milestone(m) => Some(m.clone()),
                        },
                    })
                    .collect(),
            }),
            EventBody::CapacityChanged(c) => WireBody::CapacityChanged(WireCapacityChanged {
                gpus_delta: c.gpus_delta,
                amount_delta: c.amount_delta.into(),
            }),
            EventBody::MilestoneReached(m) => WireBody::MilestoneReached(m.clone()),
            EventBody::InvoiceIssued(i) => WireBody::InvoiceIssued(WireInvoiceIssued {
                invoice_id: i.invoice_id.clone(),
                amount: i.amount.into(),
                due_date: i.due_date,
            }),
            EventBody::PaymentReceived(p) => WireBody::PaymentReceived(WirePaymentReceived {
                payment_id: p.payment_id.clone(),
                amount: p.amount.into(),
                invoice_id: p.invoice_id.clone(),
            }),
            EventBody::SlaCreditIssued(s) => WireBody::SlaCreditIssued(WireSlaCreditIssued {
                amount: s.amount.into(),
                reason: s.reason.clone(),
            }),
            EventBody::ContractTerminated(t) => {
                WireBody::ContractTerminated(WireContractTerminated { fee: t.fee.into() })
            }
            EventBody::PeriodClosed(p) => WireBody::PeriodClosed(p.clone()),
            EventBody::EventReversed(r) => WireBody::EventReversed(r.clone()),
        }
    }
}

/// A parsed wire event: what a writer asks the ledger to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub stream: Stream,
    pub effective_date: Date,
    pub expected_version: Option<u64>,
    pub actor: Option<String>,
    pub idempotency_key: Option<String>,
    pub body: WireBody,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope {
    #[serde(default)]
    contract_id: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    effective_date: Date,
    #[serde(default)]
    expected_version: Option<u64>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    data: serde_json::Value,
}

/// The JSON shape of a stored event, as `log --json`, the HTTP API and exports print it. It
/// parses back as a [`Proposal`] (without `expected_version`), so output can be re-imported.
#[derive(Clone, Debug, Serialize)]
pub struct WireEventOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub effective_date: Date,
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub data: WireBody,
}

impl crate::RecordedEvent {
    /// The wire JSON of the event (what a bundle line's `event` must equal).
    pub fn wire_json(&self) -> serde_json::Value {
        // A struct of strings, dates and a JSON value always serializes.
        serde_json::to_value(self.event.to_wire()).expect("wire JSON serializes")
    }

    /// [`RecordedEvent::wire_json`] as JSON text, appended to `out`, without building the
    /// value: the same text `serde_json` prints for the value (a test holds them equal).
    pub fn write_wire_json(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, &self.event.to_wire()).expect("wire JSON serializes")
    }

    /// The one JSON shape of a stored event: `cledger log --json`, `GET /v1/events`, the
    /// NATS JSON mirror (FORMAT.md section 8).
    pub fn to_json(&self) -> serde_json::Value {
        use base64::Engine;
        let e = &self.event;
        serde_json::json!({
            "seq": e.seq,
            "contract_id": e.stream.contract_id().map(ContractId::as_str),
            "version": e.version,
            "type": e.body.kind().as_str(),
            "effective_date": e.effective_date.to_string(),
            "recorded_at": e.recorded_at.to_rfc3339(),
            "hash": self.hash.to_hex(),
            "prev_hash": e.prev_hash.to_hex(),
            "canonical": base64::engine::general_purpose::STANDARD.encode(&self.canonical),
            "event": self.wire_json(),
        })
    }
}

impl Event {
    /// The wire JSON of this event.
    pub fn to_wire(&self) -> WireEventOut {
        WireEventOut {
            contract_id: self.stream.contract_id().map(|c| c.as_str().to_string()),
            kind: self.body.kind().as_str(),
            effective_date: self.effective_date,
            actor: self.actor.clone(),
            idempotency_key: self.idempotency_key.clone(),
            data: WireBody::from(&self.body),
        }
    }
}

impl Proposal {
    /// Parses one wire event from JSON text.
    pub fn parse_json(bytes: &[u8]) -> Result<Proposal, Rejection> {
        // An event is a JSON object (see `ObjectsOnly`); its fields other than `data` are
        // scalars, and `data` is read through `ObjectsOnly`.
        if let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace())
            && *first != b'{'
        {
            return Err(Rejection::new(Code::InvalidJson, None, "an event is a JSON object with named fields (`{\"contract_id\": ...}`)"));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let envelope: WireEnvelope = serde_path_to_error::deserialize(&mut de).map_err(|e| rejection_of(e, None))?;
        de.end().map_err(|e| Rejection::new(Code::InvalidJson, None, e.to_string()))?;
        Proposal::from_envelope(envelope)
    }

    /// Parses one wire event from a JSON value (an element of a batch).
    pub fn parse_value(value: serde_json::Value) -> Result<Proposal, Rejection> {
        let envelope: WireEnvelope = serde_path_to_error::deserialize(ObjectsOnly(value)).map_err(|e| rejection_of(e, None))?;
        Proposal::from_envelope(envelope)
    }

    fn from_envelope(e: WireEnvelope) -> Result<Proposal, Rejection> {
        let kind = EventKind::parse(&e.kind).ok_or_else(|| {
            Rejection::new(Code::UnknownType, Some("type".into()), format!("unknown event type `{}`", e.kind))
        })?;
        let stream = match (kind.is_ledger_wide(), e.contract_id) {
            (true, None) => Stream::Ledger,
            (true, Some(_)) => {
                return Err(Rejection::new(
                    Code::ContractIdNotAllowed,
                    Some("contract_id".into()),
                    format!("`{kind}` is ledger-wide and takes no contract_id"),
                ))
            }
            (false, Some(id)) => Stream::Contract(ContractId::parse(&id)?),
            (false, None) => {
                return Err(Rejection::new(
                    Code::ContractIdRequired,
                    Some("contract_id".into()),
                    format!("`{kind}` needs a contract_id"),
                ))
            }
        };
        if let Some(actor) = &e.actor {
            check_text("actor", actor)?;
        }
        if let Some(key) = &e.idempotency_key {
            check_idempotency_key("idempotency_key", key)?;
        }
        let body = WireBody::parse(kind, e.data).map_err(|r| r.under("data"))?;
        Ok(Proposal {
            stream,
            effective_date: e.effective_date,
            expected_version: e.expected_version,
            actor: e.actor,
            idempotency_key: e.idempotency_key,
            body,
        })
    }

    pub fn kind(&self) -> EventKind {
        self.body.kind()
    }

    /// The stored body, with amounts read in `currency` (the contract's, from its grant; a
    /// grant brings its own), after every check that needs nothing but this one event.
    pub fn resolve(&self, currency: Option<Currency>) -> Result<EventBody, Rejection> {
        resolve_body(&self.body, self.effective_date, currency).map_err(|r| r.under("data"))
    }
}

fn amount(field: &str, decimal: &Decimal, currency: Currency) -> Result<Money, Rejection> {
    decimal.to_money(currency).map_err(|e| e.rejection(field))
}

fn positive(field: &str, decimal: &Decimal, currency: Currency) -> Result<Money, Rejection> {
    let money = amount(field, decimal, currency)?;
    if money.is_positive() {
        Ok(money)
    } else {
        Err(Rejection::new(Code::NonPositiveAmount, Some(field.into()), format!("must be more than zero, not {}", decimal.as_str())))
    }
}

fn currency_of_contract(currency: Option<Currency>) -> Result<Currency, Rejection> {
    // The ledger passes the contract's currency for every contract event; its absence is a
    // caller's bug, reported as a refusal rather than a panic.
    currency.ok_or_else(|| Rejection::new(Code::UnknownContract, None, "no currency known for this contract"))
}

fn resolve_body(body: &WireBody, effective_date: Date, currency: Option<Currency>) -> Result<EventBody, Rejection> {
    Ok(match body {
        WireBody::LeaseGranted(g) => EventBody::LeaseGranted(resolve_grant(g)?),
        WireBody::CapacityChanged(c) => {
            let amount_delta = amount("amount_delta", &c.amount_delta, currency_of_contract(currency)?)?;
            if c.gpus_delta.unsigned_abs() > GPUS_MAX {
                return Err(Rejection::new(Code::GpuCountTooLarge, Some("gpus_delta".into()), format!("a change of at most {GPUS_MAX} GPUs either way")));
            }
            if c.gpus_delta == 0 && amount_delta.minor_units() == 0 {
                return Err(Rejection::new(Code::ZeroAmount, Some("amount_delta".into()), "a capacity change must change the GPU count or the amount"));
            }
            EventBody::CapacityChanged(CapacityChanged { gpus_delta: c.gpus_delta, amount_delta })
        }
        WireBody::MilestoneReached(m) => {
            check_identifier("milestone", &m.milestone)?;
            EventBody::MilestoneReached(m.clone())
        }
        WireBody::InvoiceIssued(i) => {
            check_identifier("invoice_id", &i.invoice_id)?;
            EventBody::InvoiceIssued(InvoiceIssued {
                invoice_id: i.invoice_id.clone(),
                amount: positive("amount", &i.amount, currency_of_contract(currency)?)?,
                due_date: i.due_date,
            })
        }
        WireBody::PaymentReceived(p) => {
            check_identifier("payment_id", &p.payment_id)?;
            if let Some(invoice) = &p.invoice_id {
                check_identifier("invoice_id", invoice)?;
            }
            EventBody::PaymentReceived(PaymentReceived {
                payment_id: p.payment_id.clone(),
                amount: positive("amount", &p.amount, currency_of_contract(currency)?)?,
                invoice_id: p.invoice_id.clone(),
            })
        }
        WireBody::SlaCreditIssued(s) => {
            check_text("reason", &s.reason)?;
            EventBody::SlaCreditIssued(SlaCreditIssued {
                amount: positive("amount", &s.amount, currency_of_contract(currency)?)?,
                reason: s.reason.clone(),
            })
        }
        WireBody::ContractTerminated(t) => {
            let fee = amount("fee", &t.fee, currency_of_contract(currency)?)?;
            if fee.minor_units() < 0 {
                return Err(Rejection::new(Code::NonPositiveAmount, Some("fee".into()), "a termination fee cannot be negative"));
            }
            EventBody::ContractTerminated(ContractTerminated { fee })
        }
        WireBody::PeriodClosed(p) => {
            if p.period_end > effective_date {
                return Err(Rejection::new(
                    Code::PeriodCloseBeforeEnd,
                    Some("period_end".into()),
                    format!("a period ending {} cannot be closed on {effective_date}", p.period_end),
                ));
            }
            EventBody::PeriodClosed(p.clone())
        }
        WireBody::EventReversed(r) => {
            check_text("reason", &r.reason)?;
            if r.target_seq == 0 {
                return Err(Rejection::new(Code::InvalidValue, Some("target_seq".into()), "sequence numbers start at 1"));
            }
            EventBody::EventReversed(r.clone())
        }
    })
}

fn resolve_grant(g: &WireLeaseGranted) -> Result<LeaseGranted, Rejection> {
    check_text("provider", &g.provider)?;
    check_text("customer", &g.customer)?;
    check_text("cluster.site", &g.cluster.site)?;
    check_text("cluster.gpu_model", &g.cluster.gpu_model)?;
    let currency = Currency::from_code(&g.currency)
        .map_err(|e| Rejection::new(Code::UnknownCurrency, Some("currency".into()), e.to_string()))?;
    if g.term.days() <= 0 {
        return Err(Rejection::new(Code::InvalidTerm, Some("term".into()), format!("the term must end after it starts ({} to {})", g.term.start, g.term.end)));
    }
    if g.cluster.gpus == 0 {
        return Err(Rejection::new(Code::InvalidGpuCount, Some("cluster.gpus".into()), "a cluster has at least one GPU"));
    }
    if g.cluster.gpus > GPUS_MAX {
        return Err(Rejection::new(Code::GpuCountTooLarge, Some("cluster.gpus".into()), format!("at most {GPUS_MAX} GPUs")));
    }
    let headline = positive("headline", &g.headline, currency)?;
    if g.tranches.is_empty() {
        return Err(Rejection::new(Code::NoTranches, Some("tranches".into()), "a grant has at least one tranche"));
    }
    if g.tranches.len() > TRANCHES_MAX {
        return Err(Rejection::new(Code::InvalidValue, Some("tranches".into()), format!("at most {TRANCHES_MAX} tranches")));
    }
    let mut tranches: Vec<Tranche> = Vec::with_capacity(g.tranches.len());
    let mut sum = Money::zero(currency);
    for (i, t) in g.tranches.iter().enumerate() {
        let field = |name: &str| format!("tranches[{i}].{name}");
        check_identifier(&field("id"), &t.id)?;
        if tranches.iter().any(|earlier| earlier.id == t.id) {
            return Err(Rejection::new(Code::DuplicateTranche, Some(field("id")), format!("tranche id `{}` is used twice", t.id)));
        }
        let amount = positive(&field("amount"), &t.amount, currency)?;
        if t.window.days() <= 0 {
            return Err(Rejection::new(Code::EmptyWindow, Some(field("window")), format!("the window must end after it starts ({} to {})", t.window.start, t.window.end)));
        }
        if !g.term.contains_window(&t.window) {
            return Err(Rejection::new(
                Code::WindowOutsideTerm,
                Some(field("window")),
                format!("window {} to {} is not inside the term {} to {}", t.window.start, t.window.end, g.term.start, g.term.end),
            ));
        }
        let condition = match (t.firm, &t.milestone) {
            (Some(true), None) => Condition::Firm,
            (None | Some(false), Some(m)) => {
                check_identifier(&field("milestone"), m)?;
                Condition::Milestone(m.clone())
            }
            (Some(true), Some(_)) => {
                return Err(Rejection::new(Code::InvalidValue, Some(field("milestone")), "a tranche is firm or waits on a milestone, not both"))
            }
            (None | Some(false), None) => {
                return Err(Rejection::new(Code::MissingField, Some(field("milestone")), "a tranche needs \"firm\": true or a \"milestone\""))
            }
        };
        sum = sum.checked_add(amount).map_err(|e| e.rejection(&field("amount")))?;
        tranches.push(Tranche { id: t.id.clone(), amount, window: t.window, condition });
    }
    if sum != headline {
        return Err(Rejection::new(
            Code::TrancheSumMismatch,
            Some("tranches".into()),
            format!("tranches sum to {} but the headline is {}", sum.to_decimal_string(), headline.to_decimal_string()),
        ));
    }
    Ok(LeaseGranted {
        provider: g.provider.clone(),
        customer: g.customer.clone(),
        currency,
        term: g.term,
        cluster: g.cluster.clone(),
        headline,
        tranches,
    })
}

fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Rejection> {
    serde_path_to_error::deserialize(ObjectsOnly(value)).map_err(|e| rejection_of(e, None))
}

/// The one spelling of a record: a JSON object. serde's derive also accepts a struct as a
/// JSON array of its fields in order (`["P", "C", "USD", ...]`), a second spelling of
/// every event that no writer means and no reader expects. [`ObjectsOnly`] deserializes a
/// value as `serde_json::Value` does, except that a struct must be an object, at any depth.
struct ObjectsOnly(serde_json::Value);

fn not_an_object(value: &serde_json::Value) -> serde_json::Error {
    let what = match value {
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Object(_) => "an object",
    };
    serde::de::Error::custom(format!("expected a JSON object, not {what} (records are objects with named fields)"))
}

impl<'de> serde::Deserializer<'de> for ObjectsOnly {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        use serde::de::value::{MapDeserializer, SeqDeserializer};
        match self.0 {
            serde_json::Value::Array(items) => {
                let mut seq = SeqDeserializer::new(items.into_iter().map(ObjectsOnly));
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            serde_json::Value::Object(map) => {
                let mut entries = MapDeserializer::new(map.into_iter().map(|(k, v)| (k, ObjectsOnly(v))));
                let value = visitor.visit_map(&mut entries)?;
                entries.end()?;
                Ok(value)
            }
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            serde_json::Value::Null => visitor.visit_none(),
            other => visitor.visit_some(ObjectsOnly(other)),
        }
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(self, _name: &'static str, _fields: &'static [&'static str], visitor: V) -> Result<V::Value, Self::Error> {
        match &self.0 {
            serde_json::Value::Object(_) => self.deserialize_any(visitor),
            other => Err(not_an_object(other)),
        }
    }

    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(self, name: &'static str, variants: &'static [&'static str], visitor: V) -> Result<V::Value, Self::Error> {
        // The wire's enums are strings (unit variants).
        self.0.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

impl<'de> serde::de::IntoDeserializer<'de, serde_json::Error> for ObjectsOnly {
    type Deserializer = ObjectsOnly;

    fn into_deserializer(self) -> ObjectsOnly {
        self
    }
}

/// Turns a serde error into a refusal naming the field. serde reports unknown and missing
/// fields only as text, so the text is read here; the wire tests pin every case.
fn rejection_of(error: serde_path_to_error::Error<serde_json::Error>, prefix: Option<&str>) -> Rejection {
    let path = error.path().to_string();
    let inner = error.into_inner();
    let message = inner.to_string();
    let detail = message.split(" at line ").next().unwrap_or(&message).to_string();
    let quoted = || detail.split('`').nth(1).map(str::to_string);
    let join = |base: &str, name: Option<String>| -> Option<String> {
        let base = if base == "." { "" } else { base };
        match (base.is_empty(), name) {
            (true, None) => None,
            (true, Some(n)) => Some(n),
            (false, None) => Some(base.to_string()),
            (false, Some(n)) => Some(format!("{base}.{n}")),
        }
    };
    let (code, field) = if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        (Code::InvalidJson, None)
    } else if detail.starts_with("unknown field") {
        // The path points at the object that holds the unknown key, or at the key itself.
        let name = quoted();
        let base = path.strip_suffix(&format!(".{}", name.clone().unwrap_or_default())).unwrap_or(&path).to_string();
        let base = if Some(base.as_str()) == name.as_deref() { String::new() } else { base };
        (Code::UnknownField, join(&base, name))
    } else if detail.starts_with("missing field") {
        (Code::MissingField, join(&path, quoted()))
    } else if detail.contains("is not a calendar date") || detail.contains("expected a date") {
        (Code::InvalidDate, join(&path, None))
    } else if detail.contains("is not a decimal amount") || detail.contains("expected a decimal amount") {
        (Code::InvalidAmount, join(&path, None))
    } else {
        (Code::InvalidValue, join(&path, None))
    };
    let field = match (prefix, field) {
        (Some(p), Some(f)) => Some(format!("{p}.{f}")),
        (Some(p), None) => Some(p.to_string()),
        (None, f) => f,
    };
    Rejection::new(code, field, detail)
}
