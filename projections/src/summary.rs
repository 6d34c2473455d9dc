//! [`Summary`]: what a portfolio needs of one contract, small enough to keep every
//! contract's in memory however long its history.
//!
//! A contract's history is mostly invoices and payments; its revenue comes from a handful of
//! facts (the grant's tranches, capacity changes, milestones, credits, a termination). Seen
//! with everything known now (K at or after the contract's last event), what was billed and
//! collected by date D is a step function of D: an invoice adds its amount on its effective
//! date, and a reversal takes it away again from the later of the two dates (a reversal
//! itself is never reversed). So a summary keeps:
//!
//! - `core`: the state without its invoices and payments (and their per-event facts), on
//!   which the one figures code ([`ContractState::figures_with`]) and the one periods code
//!   ([`ContractState::periods`]) run;
//! - `billed` and `collected`: those step functions, one entry per distinct date.
//!
//! It answers only for points of view that see every event of the contract
//! ([`Summary::answers`]); for an earlier K, the state is the only source.

use crate::close::{Rollforward, RpoDisclosure, Schedule};
use crate::figures::{Billing, Figures, Overflow};
use crate::state::{AsOf, ContractState, Origin};
use crate::view::{PeriodRun, Granularity, PeriodRevenue};
use events::{ContractId, Currency, Date, Event, EventBody};
use serde::{Deserialize, Serialize};

/// A sum that changes on dates: `at(D)` is the sum of every step dated on or before D.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StepsStored")]
pub struct Steps {
    /// Strictly increasing.
    dates: Vec<Date>,
    /// `totals[i]`: the sum of every step dated on or before `dates[i]`.
    totals: Vec<i128>,
}

/// [`Steps`] as stored, checked before use (a stored summary is read, not trusted: one
/// whose lists disagree is made again from the state).
#[derive(Deserialize)]
struct StepsStored {
    dates: Vec<Date>,
    totals: Vec<i128>,
}

impl TryFrom<StepsStored> for Steps {
    type Error = &'static str;

    fn try_from(stored: StepsStored) -> Result<Steps, &'static str> {
        if stored.dates.len() != stored.totals.len() {
            return Err("steps: as many totals as dates");
        }
        if stored.dates.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err("steps: dates strictly increasing");
        }
        Ok(Steps { dates: stored.dates, totals: stored.totals })
    }
}

impl Steps {
    /// From steps in any order (several on one date are added together).
    fn of(steps: Vec<(Date, i128)>) -> Result<Steps, Overflow> {
        Steps::default().with(steps)
    }

    /// These steps and `more`: appended when they come in date order (the usual case),
    /// else the totals from the first of them on are redone.
    fn with(&self, mut more: Vec<(Date, i128)>) -> Result<Steps, Overflow> {
        let mut out = self.clone();
        // Stable and adaptive: steps arrive mostly in date order.
        more.sort_by_key(|(date, _)| *date);
        for (date, amount) in more {
            let at = out.dates.partition_point(|d| *d < date);
            if out.dates.get(at) != Some(&date) {
                let before = if at == 0 { 0 } else { out.totals[at - 1] };
                out.dates.insert(at, date);
                out.totals.insert(at, before);
            }
            for total in &mut out.totals[at..] {
                *total = total.checked_add(amount).ok_or(Overflow)?;
            }
        }
        // Kept for the life of the process: no slack.
        out.dates.shrink_to_fit();
        out.totals.shrink_to_fit();
        Ok(out)
    }

    /// The sum of every step dated on or before `date`.
    pub fn at(&self, date: Date) -> i128 {
        match self.dates.partition_point(|d| *d <= date) {
            0 => 0,
            n => self.totals[n - 1],
        }
    }

    /// Distinct dates (what the steps cost in memory, about 20 bytes each).
    pub fn len(&self) -> usize {
        self.dates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dates.is_empty()
    }
}

/// One contract's portfolio figures as a function of the date, as known after its last
/// event (see the module's documentation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    core: ContractState,
    billed: Steps,
    collected: Steps,
    /// Revenue recognized by the end of each month, from the grant's month to the first
    /// month after the last change (every period of a report ends on a month end, but for
    /// the last, cut at its date). Empty for a contract longer than [`MONTH_ENDS_MAX`].
    month_ends: Vec<i128>,
}

/// Months of revenue a summary keeps at most (100 years, 19 KB): a contract whose windows
/// reach further computes each month end when asked.
pub const MONTH_ENDS_MAX: usize = 1_200;


impl ContractState {
    /// This state's [`Summary`], made from `earlier`, the summary of an earlier version of
    /// this very history (one saved: its events can no longer be rolled back), at the cost
    /// of what was added since when that is only invoices and payments, the bulk of a
    /// history (their steps are added in; revenue facts are unchanged). Anything else since
    /// (a revenue fact, a reversal), or an `earlier` that is not of this history: made whole.
    /// Equal to [`ContractState::summary`] either way.
    pub fn summary_from(&self, earlier: &Summary) -> Result<Summary, Overflow> {
        let base = &earlier.core;
        let extends = base.contract_id == self.contract_id
            && base.last_seq <= self.last_seq
            && self.events.get(&base.last_seq).is_some_and(|e| e.version == base.version);
        let added = || self.events.range(base.last_seq.saturating_add(1)..);
        if !extends || added().any(|(_, e)| !e.kind.is_billing() || e.reversed_by.is_some()) {
            return self.summary();
        }
        let mut billed = Vec::new();
        let mut collected = Vec::new();
        // Invoices and payments are kept in seq order, so the added ones are their tails.
        let first_added = |seq: u64| seq > base.last_seq;
        for invoice in &self.invoices[self.invoices.partition_point(|i| !first_added(i.origin.seq))..] {
            billed.push((invoice.origin.date, invoice.amount));
        }
        for payment in &self.payments[self.payments.partition_point(|p| !first_added(p.origin.seq))..] {
            collected.push((payment.origin.date, payment.amount));
        }
        debug_assert_eq!(billed.len() + collected.len(), added().count(), "every added event is an invoice or a payment");
        earlier.extended(self.version, self.last_seq, self.magnitude_total, billed, collected)
    }

    /// This state's [`Summary`]. Costs one pass over its invoices and payments.
    pub fn summary(&self) -> Result<Summary, Overflow> {
        let steps = |origins: &mut dyn Iterator<Item = (Origin, i128)>| -> Result<Steps, Overflow> {
            let mut steps = Vec::new();
            for (origin, amount) in origins {
                steps.push((origin.date, amount));
                // A reversal takes the amount away from the day both have happened.
                if let Some(reversal) = self.events.get(&origin.seq).and_then(|e| e.reversed_by) {
                    steps.push((origin.date.max(reversal.date), amount.checked_neg().ok_or(Overflow)?));
                }
            }
            Steps::of(steps)
        };
        let billed = steps(&mut self.invoices.iter().map(|i| (i.origin, i.amount)))?;
        let collected = steps(&mut self.payments.iter().map(|p| (p.origin, p.amount)))?;
        let billing_seqs = |seq: u64| self.events.get(&seq).is_some_and(|e| e.kind.is_billing());
        let mut events = crate::EventFacts::default();
        for fact in self.events.values().filter(|e| !e.kind.is_billing()) {
            events.insert(fact);
        }
        let core = ContractState {
            contract_id: self.contract_id.clone(),
            version: self.version,
            last_seq: self.last_seq,
            grant: self.grant.clone(),
            tranches: self.tranches.clone(),
            capacity_changes: self.capacity_changes.clone(),
            resolutions: self.resolutions.clone(),
            invoices: Vec::new(),
            payments: Vec::new(),
            credits: self.credits.clone(),
            terminations: self.terminations.clone(),
            reversals: self.reversals.iter().filter(|r| !billing_seqs(r.target_seq)).cloned().collect(),
            events,
            invoice_index: Default::default(),
            payment_index: Default::default(),
            paid: Vec::new(),
            paid_unknown: Default::default(),
            latest_non_billing_date: self.latest_non_billing_date,
            magnitude_total: self.magnitude_total,
        };
        let mut month_ends = Vec::new();
        let first = core.grant.origin.date;
        // From the grant's month to the first month after the last change.
        let months = Granularity::Month.period_of(core.last_change()).index() - Granularity::Month.period_of(first).index() + 2;
        if months <= MONTH_ENDS_MAX as i64 {
            let mut month = Granularity::Month.period_of(first);
            for _ in 0..months {
                month_ends.push(core.recognized(&AsOf::date(month.last_day()))?);
                let Some(next) = month.next() else { break };
                month = next;
            }
        }
        month_ends.shrink_to_fit();
        Ok(Summary { core, billed, collected, month_ends })
    }
}

impl Summary {
    /// This summary with `added`, the contract's next events in order, when every one is an
    /// invoice or a payment: what [`ContractState::summary_from`] makes from the state they
    /// lead to, made without that state (a writer holding a [`crate::BillingState`] has
    /// none). `None` if one is another kind, or does not follow (the summary is then made
    /// from the state).
    pub fn with_billing_events(&self, added: &[Event]) -> Option<Result<Summary, Overflow>> {
        let (mut billed, mut collected) = (Vec::new(), Vec::new());
        let (mut version, mut last_seq, mut total) = (self.core.version, self.core.last_seq, self.core.magnitude_total);
        for event in added {
            if event.stream.contract_id() != Some(&self.core.contract_id) || event.version != version + 1 || event.seq <= last_seq {
                return None;
            }
            let amount = match &event.body {
                EventBody::InvoiceIssued(i) => i.amount.minor_units(),
                EventBody::PaymentReceived(p) => p.amount.minor_units(),
                _ => return None,
            };
            match &event.body {
                EventBody::InvoiceIssued(_) => billed.push((event.effective_date, amount)),
                _ => collected.push((event.effective_date, amount)),
            }
            let Some(next) = total.checked_add(amount.abs()) else { return Some(Err(Overflow)) };
            (version, last_seq, total) = (event.version, event.seq, next);
        }
        Some(self.extended(version, last_seq, total, billed, collected))
    }

    /// This summary with more billing steps and the core's counters moved on.
    fn extended(&self, version: u64, last_seq: u64, magnitude_total: i128, billed: Vec<(Date, i128)>, collected: Vec<(Date, i128)>) -> Result<Summary, Overflow> {
        let core = ContractState { version, last_seq, magnitude_total, ..self.core.clone() };
        Ok(Summary {
            core,
            billed: self.billed.with(billed)?,
            collected: self.collected.with(collected)?,
            month_ends: self.month_ends.clone(),
        })
    }

    pub fn contract_id(&self) -> &ContractId {
        &self.core.contract_id
    }

    pub fn currency(&self) -> Currency {
        self.core.currency()
    }

    /// The seq of the contract's last event when the summary was made.
    pub fn last_seq(&self) -> u64 {
        self.core.last_seq
    }

    /// The contract's version (its event count) when the summary was made.
    pub fn version(&self) -> u64 {
        self.core.version
    }

    /// Can the summary answer for `at`? Only if `at` sees every event of the contract.
    pub fn answers(&self, at: &AsOf) -> bool {
        at.known_at >= self.core.last_seq
    }

    /// Distinct dates of its billing and collection steps (its size beyond the few revenue
    /// facts).
    pub fn steps(&self) -> usize {
        self.billed.len() + self.collected.len()
    }

    /// The contract's figures at `at`, equal to its state's; `at` must be one the summary
    /// answers for (so only [`Contract`] calls it).
    fn figures(&self, at: &AsOf) -> Result<Figures, Overflow> {
        assert!(self.answers(at), "a summary answers only for points of view that see all of its contract");
        self.core.figures_with(at, Billing { billed: self.billed.at(at.date), collected: self.collected.at(at.date) })
    }

    /// Revenue per period, equal to its state's (revenue does not depend on billing).
    fn period_run(&self, at: &AsOf, granularity: Granularity) -> Result<Option<PeriodRun>, Overflow> {
        assert!(self.answers(at), "a summary answers only for points of view that see all of its contract");
        // `at` sees every event: revenue by the end of a month is the table's.
        let first = Granularity::Month.period_of(self.core.grant.origin.date).index();
        self.core.period_run_with(at, granularity, |end| {
            let month = end.whole_period().and_then(|p| usize::try_from(p.last_month_index() - first).ok());
            match month.and_then(|m| self.month_ends.get(m)) {
                Some(recognized) => Ok(*recognized),
                None => self.core.recognized(&at.with_date(end.date())),
            }
        })
    }
}

/// A contract as a portfolio report reads it: its summary when the summary answers for the
/// report's point of view, else its whole state. Opaque, so that a summary is only ever
/// read through [`Contract::of_summary`], which checks that it answers.
#[derive(Clone, Copy, Debug)]
pub struct Contract<'a>(Source<'a>);

#[derive(Clone, Copy, Debug)]
enum Source<'a> {
    Summary(&'a Summary),
    State(&'a ContractState),
}

/// A state is a contract that answers for any point of view.
impl<'a> From<&'a ContractState> for Contract<'a> {
    fn from(state: &'a ContractState) -> Contract<'a> {
        Contract::state(state)
    }
}

impl<'a> Contract<'a> {
    /// The summary if it answers for `at` (the only points of view it is then asked about),
    /// else `None` (read the state instead).
    pub fn of_summary(summary: &'a Summary, at: &AsOf) -> Option<Contract<'a>> {
        summary.answers(at).then_some(Contract(Source::Summary(summary)))
    }

    /// The whole state, which answers for any point of view.
    pub fn state(state: &'a ContractState) -> Contract<'a> {
        Contract(Source::State(state))
    }

    pub fn is_summary(&self) -> bool {
        matches!(self.0, Source::Summary(_))
    }

    pub fn contract_id(&self) -> &'a ContractId {
        match self.0 {
            Source::Summary(s) => s.contract_id(),
            Source::State(s) => &s.contract_id,
        }
    }

    pub fn currency(&self) -> Currency {
        match self.0 {
            Source::Summary(s) => s.currency(),
            Source::State(s) => s.currency(),
        }
    }

    pub fn known_at(&self, known_at: u64) -> bool {
        match self.0 {
            Source::Summary(s) => s.core.known_at(known_at),
            Source::State(s) => s.known_at(known_at),
        }
    }

    pub fn figures(&self, at: &AsOf) -> Result<Figures, Overflow> {
        match self.0 {
            Source::Summary(s) => s.figures(at),
            Source::State(s) => s.figures(at),
        }
    }

    pub fn periods(&self, at: &AsOf, granularity: Granularity) -> Result<Vec<PeriodRevenue>, Overflow> {
        Ok(self.period_run(at, granularity)?.map(|run| run.periods(at.date)).unwrap_or_default())
    }

    /// The grant's effective date.
    pub fn granted(&self) -> Date {
        self.revenue_facts().grant.origin.date
    }

    /// A state with every revenue fact of the contract: the state itself, or a summary's
    /// core (which lacks only invoices, payments and their reversals). Only for points of
    /// view the contract answers for, which a `Contract` made by
    /// [`Contract::of_summary`] does for the report that made it.
    fn revenue_facts(&self) -> &'a ContractState {
        match self.0 {
            Source::Summary(s) => &s.core,
            Source::State(s) => s,
        }
    }

    /// The counted, uncancelled tranches as they stand at `at` ([`ContractState::schedule`]);
    /// revenue facts only.
    pub fn schedule(&self, at: &AsOf) -> Result<Schedule, Overflow> {
        self.check_answers(at);
        self.revenue_facts().schedule(at)
    }

    /// [`ContractState::rpo_disclosure`]; RPO does not depend on billing.
    pub fn rpo_disclosure(&self, at: &AsOf) -> Result<RpoDisclosure, Overflow> {
        self.check_answers(at);
        self.revenue_facts().rpo_disclosure(at)
    }

    /// [`ContractState::rollforward`]: the figures at A and B are the contract's (a
    /// summary's billing steps included), the movements walk its revenue facts.
    pub fn rollforward(&self, from: &AsOf, to: &AsOf) -> Result<Rollforward, Overflow> {
        match self.0 {
            Source::Summary(s) => {
                self.check_answers(from);
                s.core.rollforward_with(from, to, |at| s.figures(at))
            }
            Source::State(s) => s.rollforward(from, to),
        }
    }

    fn check_answers(&self, at: &AsOf) {
        if let Source::Summary(s) = self.0 {
            assert!(s.answers(at), "a summary answers only for points of view that see all of its contract");
        }
    }

    /// Revenue per period without the periods' ends (`None` where there are none): what a
    /// portfolio adds up.
    pub fn period_run(&self, at: &AsOf, granularity: Granularity) -> Result<Option<PeriodRun>, Overflow> {
        match self.0 {
            Source::Summary(s) => s.period_run(at, granularity),
            Source::State(s) => s.period_run(at, granularity),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    #[test]
    fn steps_add_up_by_date_and_stored_ones_are_checked() {
        let steps = Steps::of(vec![(d("2026-03-01"), 5), (d("2026-01-01"), 10), (d("2026-03-01"), -2)]).unwrap();
        let at = |s| steps.at(d(s));
        assert_eq!((at("2025-12-31"), at("2026-01-01"), at("2026-02-28"), at("2026-03-01"), at("9999-12-31")), (0, 10, 10, 13, 13));
        assert_eq!(steps.len(), 2);
        let stored = |json: &str| serde_json::from_str::<Steps>(json).map_err(|e| e.to_string());
        assert_eq!(stored(&serde_json::to_string(&steps).unwrap()), Ok(steps));
        assert!(stored(r#"{"dates":["2026-01-01"],"totals":[]}"#).unwrap_err().contains("as many totals as dates"));
        assert!(stored(r#"{"dates":["2026-01-02","2026-01-02"],"totals":[1,2]}"#).unwrap_err().contains("strictly increasing"));
        assert_eq!(Steps::of(vec![(d("2026-01-01"), i128::MAX), (d("2026-01-02"), 1)]), Err(Overflow));
    }

    /// A contract longer than the month-end table (here 150 years) keeps no table: its
    /// summary computes every period end, and still gives its state's revenue per period,
    /// at month ends, mid-month, mid-quarter and long after its end.
    #[test]
    fn a_contract_past_the_month_end_table_computes_its_periods() {
        let mut book = crate::Book::new();
        let grant = r#"{"contract_id": "long", "type": "lease_granted", "effective_date": "2026-01-15", "data": {"provider": "P", "customer": "C", "currency": "USD", "term": {"start": "2026-02-01", "end": "2176-02-01"}, "cluster": {"site": "s", "gpu_model": "H100", "gpus": 8}, "headline": "1000000.00", "tranches": [{"id": "a", "amount": "900000.00", "window": {"start": "2026-02-01", "end": "2176-02-01"}, "firm": true}, {"id": "b", "amount": "100000.00", "window": {"start": "2030-01-01", "end": "2031-01-01"}, "milestone": "m"}]}}"#;
        let proposal = events::Proposal::parse_json(grant.as_bytes()).unwrap();
        let now = events::Timestamp::parse_rfc3339("2026-01-15T00:00:00Z").unwrap();
        book.propose(&proposal, "test", now).unwrap();
        let state = &book.contracts[&ContractId::parse("long").unwrap()];
        let summary = state.summary().unwrap();
        assert!(summary.month_ends.is_empty(), "150 years is past MONTH_ENDS_MAX months");
        for date in ["2026-01-15", "2027-03-31", "2030-05-17", "2100-12-31", "2176-02-01", "2300-06-30"] {
            let at = AsOf::date(d(date));
            let from_summary = Contract::of_summary(&summary, &at).unwrap();
            for granularity in [Granularity::Month, Granularity::Quarter] {
                assert_eq!(from_summary.periods(&at, granularity).unwrap(), state.periods(&at, granularity).unwrap(), "{date} {granularity:?}");
            }
        }
        // As of the last day of the calendar, the run holds the contract's months (and one
        // past its last change), not the 96,000 months to year 9999.
        let at = AsOf::date(d("9999-12-31"));
        let run = Contract::of_summary(&summary, &at).unwrap().period_run(&at, Granularity::Month).unwrap().unwrap();
        assert_eq!((run.first.to_string(), run.last.to_string(), run.recognized.len()), ("2026-01".into(), "9999-12".into(), 1 + 12 * 150 + 2));
        // The firm tranche, all of it; the conditional one waits on a milestone never reached.
        assert_eq!(run.recognized.iter().sum::<i128>(), 90_000_000);
    }
}
