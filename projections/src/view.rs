//! What finance reads: a contract as of a date and known at a position, its revenue per
//! period, and portfolio totals per currency. Built from [`ContractState`] alone.
//!
//! Everything here looks only at facts that count at the point of view ([`AsOf`]): facts of
//! events after `known_at` are invisible, so a state that already holds newer (even not yet
//! durable) events gives exactly the answer of the ledger truncated at `known_at`.

use crate::figures::{Figures, Overflow, TrancheStatus};
use crate::state::{AsOf, ContractState, Origin};
use events::{Condition, ContractId, Currency, Date, Outcome, Window};
use std::collections::BTreeMap;

/// Monthly (`2026-06`) or quarterly (`2026-Q2`) periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Granularity {
    Month,
    Quarter,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Month => "month",
            Granularity::Quarter => "quarter",
        }
    }

    pub fn parse(text: &str) -> Option<Granularity> {
        match text {
            "month" => Some(Granularity::Month),
            "quarter" => Some(Granularity::Quarter),
            _ => None,
        }
    }

    /// The period holding `date` (its last day: [`Period::last_day`]).
    pub fn period_of(self, date: Date) -> Period {
        let number = match self {
            Granularity::Month => date.month(),
            Granularity::Quarter => (date.month() - 1) / 3 + 1,
        };
        Period { year: date.year(), number, granularity: self }
    }

    fn periods_per_year(self) -> i8 {
        match self {
            Granularity::Month => 12,
            Granularity::Quarter => 4,
        }
    }
}

/// A month or a quarter, labelled `2026-05` or `2026-Q2`. Periods of one granularity order
/// as time does. A label is written only when shown (a portfolio handles millions of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i16,
    /// The month (1-12) or the quarter (1-4).
    number: i8,
    granularity: Granularity,
}

impl Period {
    /// The period after this one (`None` after the last of year 9999). A walk over periods
    /// steps with this and [`Period::last_day`]: integer steps, no date arithmetic (the
    /// portfolio walks about a million periods per query).
    pub fn next(self) -> Option<Period> {
        match (self.number < self.granularity.periods_per_year(), self.year < 9999) {
            (true, _) => Some(Period { number: self.number + 1, ..self }),
            (false, true) => Some(Period { year: self.year + 1, number: 1, ..self }),
            (false, false) => None,
        }
    }

    /// The period's last day.
    pub fn last_day(self) -> Date {
        let month = match self.granularity {
            Granularity::Month => self.number,
            Granularity::Quarter => self.number * 3,
        };
        // A Period is made from a valid date (period_of) or by next(), which keeps the year
        // in 1..=9999 and the month in 1..=12.
        Date::last_of(self.year, month).expect("a period's month is a month of a supported year")
    }

    /// Periods of one granularity counted from year 0: consecutive periods, consecutive
    /// numbers.
    pub(crate) fn index(self) -> i64 {
        i64::from(self.year) * i64::from(self.granularity.periods_per_year()) + i64::from(self.number) - 1
    }

    /// The period of [`Period::index`] `index`, which must be one of years 1 to 9999.
    fn of_index(granularity: Granularity, index: i64) -> Period {
        let per_year = i64::from(granularity.periods_per_year());
        let (year, number) = (index.div_euclid(per_year), index.rem_euclid(per_year) + 1);
        assert!((1..=9999).contains(&year), "period {index} is of a year from 1 to 9999");
        Period { year: year as i16, number: number as i8, granularity }
    }

    /// The [`Period::index`] of the month the period ends with.
    pub(crate) fn last_month_index(self) -> i64 {
        match self.granularity {
            Granularity::Month => self.index(),
            Granularity::Quarter => i64::from(self.year) * 12 + i64::from(self.number) * 3 - 1,
        }
    }
}

/// Revenue per period summed over contracts (of one currency), at one point of view: every
/// contract's periods run from its grant's to the one holding the as-of date, so together
/// they run, without gaps, from the earliest grant's period to that one. Kept dense: adding
/// a contract is a walk over two slices (a portfolio adds about a million periods per
/// report). At most one slot per period from year 1 to 9999.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeriodTotals {
    /// The first period and, from it on, the revenue of each period summed; empty before
    /// any contract with periods.
    first: Option<Period>,
    recognized: Vec<i128>,
}

impl PeriodTotals {
    /// Adds a contract's revenue per period. Crate-private: runs of one report end on one
    /// period, which only the report's own parts guarantee.
    pub(crate) fn add(&mut self, run: &PeriodRun) -> Result<(), Overflow> {
        let Some(first) = self.first else {
            *self = PeriodTotals::of(run);
            return Ok(());
        };
        let span = run.last.index() - run.first.index() + 1;
        // Anything else is a bug, not a report to sum wrongly.
        assert_eq!(run.last, Period::of_index(first.granularity, first.index() + self.recognized.len() as i64 - 1), "a report's periods end on the as-of date's");
        if run.first < first {
            let missing = (first.index() - run.first.index()) as usize;
            self.recognized.splice(0..0, std::iter::repeat_n(0, missing));
            self.first = Some(run.first);
        }
        let offset = self.recognized.len() - span as usize;
        for (slot, recognized) in self.recognized[offset..].iter_mut().zip(&run.recognized) {
            *slot = slot.checked_add(*recognized).ok_or(Overflow)?;
        }
        Ok(())
    }

    /// The totals of one contract's run: its revenue in every period from its first to the
    /// as-of date's (none after the run's entries end).
    fn of(run: &PeriodRun) -> PeriodTotals {
        let mut recognized = run.recognized.clone();
        recognized.resize((run.last.index() - run.first.index() + 1) as usize, 0);
        PeriodTotals { first: Some(run.first), recognized }
    }

    /// Each period, in order: (period, its last day counted, the sum), the last cut at
    /// `as_of` (the report's date).
    pub fn iter(&self, as_of: Date) -> impl Iterator<Item = (Period, Date, i128)> + '_ {
        let mut period = self.first;
        let last = self.recognized.len().saturating_sub(1);
        self.recognized.iter().enumerate().map(move |(i, recognized)| {
            let p = period.expect("a period for every sum");
            period = p.next();
            (p, if i == last { as_of } else { p.last_day() }, *recognized)
        })
    }
}

/// A contract's revenue in each period, from the period of its grant to the one holding the
/// as-of date (its end cut at that date): what a portfolio adds up, without dates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeriodRun {
    pub(crate) first: Period,
    /// The as-of date's period.
    pub(crate) last: Period,
    /// `recognized[i]`: the revenue of the period `i` after `first`. Ends once revenue no
    /// longer moves (the contract's last change): the periods after, up to `last`, have
    /// none. So a run's length is the contract's, whatever the as-of date (a report as of
    /// 9999-12-31 would otherwise hold 96,000 months per contract).
    pub(crate) recognized: Vec<i128>,
}

impl PeriodRun {
    /// The periods with their ends.
    pub fn periods(&self, as_of: Date) -> Vec<PeriodRevenue> {
        PeriodTotals::of(self).iter(as_of).map(|(period, end, recognized)| PeriodRevenue { period, end, recognized }).collect()
    }
}

/// Where a walk over periods asks for the revenue recognized by: a period's last day, or
/// the as-of date in the last period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeriodEnd {
    /// The whole period, which ends before the as-of date.
    Whole(Period),
    /// The as-of date in `period`, the last; `whole` when it is the period's last day.
    Cut { period: Period, date: Date, whole: bool },
}

impl PeriodEnd {
    /// The last day counted.
    pub(crate) fn date(self) -> Date {
        match self {
            PeriodEnd::Whole(period) => period.last_day(),
            PeriodEnd::Cut { date, .. } => date,
        }
    }

    /// The period whose last day this is, if it is one (its month is then a month end).
    pub(crate) fn whole_period(self) -> Option<Period> {
        match self {
            PeriodEnd::Whole(period) | PeriodEnd::Cut { period, whole: true, .. } => Some(period),
            PeriodEnd::Cut { whole: false, .. } => None,
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.granularity {
            Granularity::Month => write!(f, "{:04}-{:02}", self.year, self.number),
            Granularity::Quarter => write!(f, "{:04}-Q{}", self.year, self.number),
        }
    }
}

impl serde::Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Revenue recognized in one period `(previous end, end]`, cut at the as-of date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeriodRevenue {
    pub period: Period,
    /// Last day counted: the period's end, or the as-of date for the last period.
    pub end: Date,
    pub recognized: i128,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrancheView {
    pub id: String,
    pub amount: i128,
    pub window: Window,
    pub milestone: Option<String>,
    pub status: TrancheStatus,
    pub recognized: i128,
    pub cancelled: i128,
    /// The event that added it (the grant, or a capacity change).
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MilestoneView {
    pub milestone: String,
    /// The counting resolution, if any.
    pub outcome: Option<Outcome>,
    pub resolved_on: Option<Date>,
    pub seq: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceView {
    pub invoice_id: String,
    pub amount: i128,
    pub issued_on: Date,
    pub due_date: Date,
    pub paid: i128,
    pub owed: i128,
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentView {
    pub payment_id: String,
    pub amount: i128,
    pub received_on: Date,
    pub invoice_id: Option<String>,
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditView {
    pub amount: i128,
    pub reason: String,
    pub issued_on: Date,
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminationView {
    pub date: Date,
    pub fee: i128,
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReversalView {
    pub seq: u64,
    pub target_seq: u64,
    pub effective: Date,
    pub reason: String,
    /// Whether it takes effect at the point of view (its date is on or before D).
    pub in_effect: bool,
}

/// A contract as of D, known at K.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractView {
    pub contract_id: ContractId,
    pub at: AsOf,
    /// Number of the contract's events with seq <= K.
    pub version: u64,
    pub provider: String,
    pub customer: String,
    pub currency: Currency,
    pub term: Window,
    pub site: String,
    pub gpu_model: String,
    /// GPU count at D.
    pub gpus: i128,
    /// GPU count from each change on: (effective date, count after it).
    pub gpus_over_time: Vec<(Date, i128)>,
    pub tranches: Vec<TrancheView>,
    pub milestones: Vec<MilestoneView>,
    pub invoices: Vec<InvoiceView>,
    pub payments: Vec<PaymentView>,
    pub credits: Vec<CreditView>,
    pub termination: Option<TerminationView>,
    pub reversals: Vec<ReversalView>,
    pub figures: Figures,
}

impl ContractState {
    /// Is the contract known at K (its grant's seq is at or before K)?
    pub fn known_at(&self, known_at: u64) -> bool {
        self.grant.origin.seq <= known_at
    }

    /// The contract's version as known at K.
    pub fn version_at(&self, known_at: u64) -> u64 {
        self.events.range(..=known_at).next_back().map_or(0, |(_, e)| e.version)
    }

    /// Revenue recognized by the end of `at.date`: tranches, fees and credits only.
    pub fn recognized(&self, at: &AsOf) -> Result<i128, Overflow> {
        let mut total = 0i128;
        self.each_tranche(at, |_, t| {
            total = total.checked_add(t.recognized).ok_or(Overflow)?;
            Ok(())
        })?;
        if let Some(t) = self.termination_at(at) {
            total = total.checked_add(t.fee).ok_or(Overflow)?;
        }
        for credit in self.credits.iter().filter(|c| self.counts(&c.origin, at)) {
            total = total.checked_sub(credit.amount).ok_or(Overflow)?;
        }
        Ok(total)
    }

    /// Revenue per period from the period of the grant's effective date to the one holding
    /// D, the last cut at D. `recognized(B) - recognized(A)` for each `(A, B]`, so the
    /// periods always add up to the recognized total at D.
    pub fn periods(&self, at: &AsOf, granularity: Granularity) -> Result<Vec<PeriodRevenue>, Overflow> {
        crate::Contract::state(self).periods(at, granularity)
    }

    /// Revenue per period without the periods' ends (`None` where there are none): what a
    /// portfolio adds up.
    pub fn period_run(&self, at: &AsOf, granularity: Granularity) -> Result<Option<PeriodRun>, Overflow> {
        self.period_run_with(at, granularity, |end| self.recognized(&at.with_date(end.date())))
    }

    /// After this day nothing of the contract happens (no event takes effect, no tranche
    /// window earns): revenue no longer moves.
    pub(crate) fn last_change(&self) -> Date {
        self.tranches
            .iter()
            .map(|t| t.window.end)
            .chain(self.events.values().map(|e| e.origin.date))
            .chain(self.reversals.iter().map(|r| r.origin.date))
            .max()
            .unwrap_or(self.grant.origin.date)
    }

    /// The revenue per period behind [`ContractState::periods`] (`None` where it has no
    /// periods): `recognized_by(B) - recognized_by(A)` for each `(A, B]`, with
    /// `recognized_by(end)` the revenue recognized by `end` at `at` (a summary reads whole
    /// months from a table).
    pub(crate) fn period_run_with(&self, at: &AsOf, granularity: Granularity, mut recognized_by: impl FnMut(PeriodEnd) -> Result<i128, Overflow>) -> Result<Option<PeriodRun>, Overflow> {
        let start = self.grant.origin.date;
        if at.date < start || !self.known_at(at.known_at) {
            return Ok(None);
        }
        let first = granularity.period_of(start);
        let last = granularity.period_of(at.date);
        // After the period of the last change, revenue no longer moves: the first period
        // past it is the run's last entry (the periods after it have none).
        let moving_until = granularity.period_of(self.last_change());
        let stop = last.min(moving_until.next().unwrap_or(moving_until));
        // One allocation: the number of periods is known (a portfolio makes this list for
        // every contract).
        let mut recognized = Vec::with_capacity(usize::try_from(stop.index() - first.index() + 1).unwrap_or(0));
        let mut previous = 0i128;
        let mut period = first;
        // One step per period up to the contract's last change (and one past it), or the
        // as-of date's if earlier; periods end at year 9999, so this loop does too.
        loop {
            let end = if period < last { PeriodEnd::Whole(period) } else { PeriodEnd::Cut { period, date: at.date, whole: at.date == last.last_day() } };
            let by_end = recognized_by(end)?;
            recognized.push(by_end.checked_sub(previous).ok_or(Overflow)?);
            previous = by_end;
            if period >= stop {
                break;
            }
            period = period.next().expect("a period before another has a next");
        }
        Ok(Some(PeriodRun { first, last, recognized }))
    }

    /// The whole contract at a point of view.
    pub fn view(&self, at: &AsOf) -> Result<ContractView, Overflow> {
        let counts = |o: &Origin| self.counts(o, at);
        let termination = self.termination_at(at);
        let tranches = self
            .tranche_figures(at)?
            .into_iter()
            .map(|(fact, f)| TrancheView {
                id: fact.id.clone(),
                amount: fact.amount,
                window: fact.window,
                milestone: match &fact.condition {
                    Condition::Firm => None,
                    Condition::Milestone(m) => Some(m.clone()),
                },
                status: f.status,
                recognized: f.recognized,
                cancelled: f.cancelled,
                seq: fact.origin.seq,
            })
            .collect::<Vec<_>>();
        let mut milestone_names: Vec<&str> = vec![];
        for m in tranches.iter().filter_map(|t| t.milestone.as_deref()) {
            if !milestone_names.contains(&m) {
                milestone_names.push(m);
            }
        }
        let milestones = milestone_names
            .into_iter()
            .map(|m| {
                let r = self.resolution_at(m, at);
                MilestoneView {
                    milestone: m.to_string(),
                    outcome: r.map(|r| r.outcome),
                    resolved_on: r.map(|r| r.origin.date),
                    seq: r.map(|r| r.origin.seq),
                }
            })
            .collect();
        let payments: Vec<PaymentView> = self
            .payments
            .iter()
            .filter(|p| counts(&p.origin))
            .map(|p| PaymentView {
                payment_id: p.payment_id.clone(),
                amount: p.amount,
                received_on: p.origin.date,
                invoice_id: p.invoice_id.clone(),
                seq: p.origin.seq,
            })
            .collect();
        let invoices = self
            .invoices
            .iter()
            .filter(|i| counts(&i.origin))
            .map(|i| {
                let paid: i128 =
                    payments.iter().filter(|p| p.invoice_id.as_deref() == Some(i.invoice_id.as_str())).map(|p| p.amount).sum();
                InvoiceView {
                    invoice_id: i.invoice_id.clone(),
                    amount: i.amount,
                    issued_on: i.origin.date,
                    due_date: i.due_date,
                    paid,
                    owed: i.amount - paid,
                    seq: i.origin.seq,
                }
            })
            .collect();
        // Changes may be recorded out of date order: the running count goes in date order.
        let mut running = i128::from(self.grant.cluster.gpus);
        let mut by_date = self.capacity_changes.iter().filter(|c| counts(&c.origin)).collect::<Vec<_>>();
        by_date.sort_by_key(|c| (c.origin.date, c.origin.seq));
        let gpus_over_time = by_date
            .into_iter()
            .map(|c| {
                running += i128::from(c.gpus_delta);
                (c.origin.date, running)
            })
            .collect::<Vec<_>>();
        let gpus = self.gpus_at(at);
        Ok(ContractView {
            contract_id: self.contract_id.clone(),
            at: *at,
            version: self.version_at(at.known_at),
            provider: self.grant.provider.clone(),
            customer: self.grant.customer.clone(),
            currency: self.grant.currency,
            term: self.grant.term,
            site: self.grant.cluster.site.clone(),
            gpu_model: self.grant.cluster.gpu_model.clone(),
            gpus,
            gpus_over_time,
            tranches,
            milestones,
            invoices,
            payments,
            credits: self
                .credits
                .iter()
                .filter(|c| counts(&c.origin))
                .map(|c| CreditView { amount: c.amount, reason: c.reason.clone(), issued_on: c.origin.date, seq: c.origin.seq })
                .collect(),
            termination: termination.map(|t| TerminationView { date: t.origin.date, fee: t.fee, seq: t.origin.seq }),
            reversals: self
                .reversals
                .iter()
                .filter(|r| r.origin.seq <= at.known_at)
                .map(|r| ReversalView {
                    seq: r.origin.seq,
                    target_seq: r.target_seq,
                    effective: r.origin.date,
                    reason: r.reason.clone(),
                    in_effect: r.origin.date <= at.date,
                })
                .collect(),
            figures: self.figures(at)?,
        })
    }
}

/// Totals of one currency across contracts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrencyTotals {
    pub contracts: u64,
    pub figures: Figures,
}

/// Portfolio totals per currency (never summed across currencies).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Portfolio {
    pub totals: BTreeMap<Currency, CurrencyTotals>,
}

impl Portfolio {
    /// Adds a contract's figures at `at` (contracts not yet known at K are skipped).
    pub fn add(&mut self, state: &ContractState, at: &AsOf) -> Result<Option<Figures>, Overflow> {
        if !state.known_at(at.known_at) {
            return Ok(None);
        }
        let f = state.figures(at)?;
        self.add_figures(state.currency(), &f)?;
        Ok(Some(f))
    }

    /// Adds one contract's figures to the totals of `currency`.
    pub fn add_figures(&mut self, currency: Currency, f: &Figures) -> Result<(), Overflow> {
        let totals = self.totals.entry(currency).or_default();
        totals.contracts += 1;
        let t = &mut totals.figures;
        for (sum, value) in [
            (&mut t.headline, f.headline),
            (&mut t.transaction_price, f.transaction_price),
            (&mut t.recognized, f.recognized),
            (&mut t.rpo, f.rpo),
            (&mut t.remaining_conditional, f.remaining_conditional),
            (&mut t.forfeited, f.forfeited),
            (&mut t.cancelled, f.cancelled),
            (&mut t.fees, f.fees),
            (&mut t.credits, f.credits),
            (&mut t.billed, f.billed),
            (&mut t.collected, f.collected),
            (&mut t.receivable, f.receivable),
            (&mut t.deferred_revenue, f.deferred_revenue),
            (&mut t.contract_asset, f.contract_asset),
        ] {
            *sum = sum.checked_add(value).ok_or(Overflow)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stepping periods with `next` and `last_day` gives, for every day of the supported
    /// range, the period `period_of` gives, ending on the last day `period_of` puts in it;
    /// and the walk stops after 9999.
    #[test]
    fn period_steps_agree_with_period_of() {
        for granularity in [Granularity::Month, Granularity::Quarter] {
            let mut day = Date::new(1, 1, 1).unwrap();
            let mut period = granularity.period_of(day);
            loop {
                let expected = granularity.period_of(day);
                if expected != period {
                    assert_eq!(Some(expected), period.next().filter(|_| period.last_day() < day), "{day}");
                    period = expected;
                }
                let end = period.last_day();
                assert!(day <= end && granularity.period_of(end) == period, "{day}");
                assert_ne!(end.add_days(1).map(|after| granularity.period_of(after)), Some(period), "{day}");
                match day.add_days(1) {
                    Some(next) => day = next,
                    None => break,
                }
            }
            assert_eq!((period.last_day(), period.next()), (Date::new(9999, 12, 31).unwrap(), None));
        }
    }

    /// Totals hold every period from the earliest contract's to the as-of date's, whichever
    /// contract comes first (a later start, an earlier start), each the sum of the
    /// contracts'; the last period ends on the as-of date.
    #[test]
    fn period_totals_sum_runs_that_end_together_in_any_order() {
        let as_of_period = Granularity::Month.period_of(Date::parse("2026-05-10").unwrap());
        let run = |from: &str, recognized: &[i128]| PeriodRun { first: Granularity::Month.period_of(Date::parse(from).unwrap()), last: as_of_period, recognized: recognized.to_vec() };
        let as_of = Date::parse("2026-05-10").unwrap();
        let mut totals = PeriodTotals::default();
        totals.add(&run("2026-03-01", &[1, 2, 3])).unwrap();
        totals.add(&run("2025-12-01", &[10, 20, 0, 0, 10])).unwrap();
        totals.add(&run("2026-04-01", &[100, 200])).unwrap();
        totals.add(&run("2026-05-01", &[-5])).unwrap();
        let got: Vec<String> = totals.iter(as_of).map(|(p, end, r)| format!("{p} {end} {r}")).collect();
        assert_eq!(got, ["2025-12 2025-12-31 10", "2026-01 2026-01-31 20", "2026-02 2026-02-28 0", "2026-03 2026-03-31 1", "2026-04 2026-04-30 112", "2026-05 2026-05-10 198"]);
        // A contract's periods are the same walk.
        let one: Vec<String> = run("2026-03-01", &[1, 2, 3]).periods(as_of).iter().map(|p| format!("{} {} {}", p.period, p.end, p.recognized)).collect();
        assert_eq!(one, ["2026-03 2026-03-31 1", "2026-04 2026-04-30 2", "2026-05 2026-05-10 3"]);
        // A run that stopped (nothing moves after its first entry) has none in later periods.
        let stopped: Vec<String> = run("2026-02-01", &[7]).periods(as_of).iter().map(|p| format!("{} {} {}", p.period, p.end, p.recognized)).collect();
        assert_eq!(stopped, ["2026-02 2026-02-28 7", "2026-03 2026-03-31 0", "2026-04 2026-04-30 0", "2026-05 2026-05-10 0"]);

        let mut full = PeriodTotals::default();
        full.add(&run("2026-05-01", &[i128::MAX])).unwrap();
        assert_eq!(full.add(&run("2026-05-01", &[1])), Err(Overflow));
    }

    /// Runs of one report end on one period: a run that does not is a bug, stopped.
    #[test]
    #[should_panic(expected = "a report's periods end on the as-of date's")]
    fn period_totals_refuse_runs_that_end_apart() {
        let mut totals = PeriodTotals::default();
        let month = Granularity::Month.period_of(Date::parse("2026-01-01").unwrap());
        totals.add(&PeriodRun { first: month, last: month.next().unwrap(), recognized: vec![1, 2] }).unwrap();
        let _ = totals.add(&PeriodRun { first: month, last: month, recognized: vec![1] });
    }
}
