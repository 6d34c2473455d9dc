//! The reports a period close is made of, for one contract, as pure functions of its
//! [`ContractState`] and points of view ([`AsOf`]): rollforward, RPO disclosure, waterfall of
//! scheduled recognition, corrections between two ledger positions, and the chart series of
//! the dashboard. Definitions: `docs/REVENUE.md`, "Finance close reports".
//!
//! There is no second model: every opening and closing balance is [`ContractState::figures`]
//! at the end's point of view, every scheduled amount is [`ratable`] over [`earned_days`] of
//! the tranches [`ContractState::tranche_figures`] returns, so the reports tie to the revenue
//! object to the minor unit.

use crate::figures::{earned_days, ratable, Figures, Overflow, TrancheFigures, TrancheStatus};
use crate::state::{AsOf, ContractState, TrancheFact};
use crate::view::{Granularity, Period};
use events::{Condition, Date, EventKind};
use std::collections::BTreeMap;

fn add(a: i128, b: i128) -> Result<i128, Overflow> {
    a.checked_add(b).ok_or(Overflow)
}

fn sub(a: i128, b: i128) -> Result<i128, Overflow> {
    a.checked_sub(b).ok_or(Overflow)
}

/// Adds `value` to `*sum`, checked.
fn bump(sum: &mut i128, value: i128) -> Result<(), Overflow> {
    *sum = add(*sum, value)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Rollforward.

/// The balances a rollforward walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Walked {
    /// Billed less recognized: positive is deferred revenue, negative a contract asset.
    NetContractPosition,
    Receivable,
    Rpo,
    RemainingConditional,
}

impl Walked {
    pub const ALL: [Walked; 4] = [Walked::NetContractPosition, Walked::Receivable, Walked::Rpo, Walked::RemainingConditional];

    pub fn as_str(self) -> &'static str {
        match self {
            Walked::NetContractPosition => "net_contract_position",
            Walked::Receivable => "receivable",
            Walked::Rpo => "rpo",
            Walked::RemainingConditional => "remaining_conditional",
        }
    }

    /// The movement lines of this balance, in report order. Every line is a signed amount:
    /// additions positive, reductions negative, so `opening + sum(lines) = closing`.
    pub fn lines(self) -> &'static [Line] {
        match self {
            Walked::NetContractPosition => &[Line::Billed, Line::Recognized],
            Walked::Receivable => &[Line::Billed, Line::Collected],
            Walked::Rpo => &[
                Line::NewContracts,
                Line::CapacityIncreases,
                Line::MilestonesAchieved,
                Line::Fees,
                Line::Credits,
                Line::CapacityDecreases,
                Line::Cancellations,
                Line::Reversals,
                Line::Recognized,
            ],
            Walked::RemainingConditional => &[Line::NewContracts, Line::Achieved, Line::Forfeited, Line::Reversals],
        }
    }

    fn of(self, f: &Figures) -> Result<i128, Overflow> {
        Ok(match self {
            Walked::NetContractPosition => sub(f.billed, f.recognized)?,
            Walked::Receivable => f.receivable,
            Walked::Rpo => f.rpo,
            Walked::RemainingConditional => f.remaining_conditional,
        })
    }
}

/// A movement line of a rollforward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Line {
    /// Invoices counting at B and not at A, net of invoices reversed in the period.
    Billed,
    /// Payments, net of payments reversed in the period (negative: reduces the receivable).
    Collected,
    /// Revenue of the period, `recognized(B) - recognized(A)` (negative in the walks).
    Recognized,
    /// Firm tranches (and conditional value) of grants that take effect in the period.
    NewContracts,
    CapacityIncreases,
    /// Conditional tranches that became counted (milestone achieved or waived).
    MilestonesAchieved,
    /// Termination fees (they add to the transaction price and are recognized at once).
    Fees,
    /// SLA credits (they reduce the transaction price and revenue at once).
    Credits,
    CapacityDecreases,
    /// What a termination took away from counted tranches.
    Cancellations,
    /// Everything undone by an `event_reversed` that takes effect in the period.
    Reversals,
    /// Conditional value that became counted (negative in the conditional walk).
    Achieved,
    /// Conditional value forfeited by a failed milestone or a termination.
    Forfeited,
}

impl Line {
    pub fn as_str(self) -> &'static str {
        match self {
            Line::Billed => "billed",
            Line::Collected => "collected",
            Line::Recognized => "recognized",
            Line::NewContracts => "new_contracts",
            Line::CapacityIncreases => "capacity_increases",
            Line::MilestonesAchieved => "milestones_achieved",
            Line::Fees => "fees",
            Line::Credits => "credits",
            Line::CapacityDecreases => "capacity_decreases",
            Line::Cancellations => "cancellations",
            Line::Reversals => "reversals",
            Line::Achieved => "achieved",
            Line::Forfeited => "forfeited",
        }
    }
}

/// One balance walked from A to B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walk {
    pub balance: Walked,
    pub opening: i128,
    /// One amount per line of `balance.lines()`, in that order.
    pub movements: Vec<i128>,
    pub closing: i128,
}

impl Walk {
    fn new(balance: Walked) -> Walk {
        Walk { balance, opening: 0, movements: vec![0; balance.lines().len()], closing: 0 }
    }

    fn line_mut(&mut self, line: Line) -> &mut i128 {
        let i = self.balance.lines().iter().position(|l| *l == line).expect("a line of this balance");
        &mut self.movements[i]
    }

    pub fn line(&self, line: Line) -> i128 {
        self.balance.lines().iter().position(|l| *l == line).map_or(0, |i| self.movements[i])
    }

    /// `opening + movements - closing`: zero for every walk this module makes.
    pub fn imbalance(&self) -> Result<i128, Overflow> {
        let mut total = self.opening;
        for m in &self.movements {
            total = add(total, *m)?;
        }
        sub(total, self.closing)
    }

    /// Adds another walk of the same balance (portfolio totals).
    pub fn absorb(&mut self, other: &Walk) -> Result<(), Overflow> {
        assert_eq!(self.balance, other.balance, "walks of one balance");
        bump(&mut self.opening, other.opening)?;
        bump(&mut self.closing, other.closing)?;
        for (sum, m) in self.movements.iter_mut().zip(&other.movements) {
            bump(sum, *m)?;
        }
        Ok(())
    }
}

/// The rollforward of one contract (or, summed, of a currency) for the period (A, B].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollforward {
    /// The figures at A and at B: the revenue object at each end.
    pub opening: Figures,
    pub closing: Figures,
    /// In the order of [`Walked::ALL`].
    pub walks: Vec<Walk>,
}

impl Rollforward {
    pub fn empty() -> Rollforward {
        Rollforward { opening: Figures::default(), closing: Figures::default(), walks: Walked::ALL.iter().map(|b| Walk::new(*b)).collect() }
    }

    pub fn walk(&self, balance: Walked) -> &Walk {
        &self.walks[Walked::ALL.iter().position(|b| *b == balance).expect("every balance is walked")]
    }

    fn walk_mut(&mut self, balance: Walked) -> &mut Walk {
        &mut self.walks[Walked::ALL.iter().position(|b| *b == balance).expect("every balance is walked")]
    }

    /// Adds another rollforward (portfolio totals of one currency). Deferred revenue and
    /// contract assets add per contract, never netted across contracts.
    pub fn absorb(&mut self, other: &Rollforward) -> Result<(), Overflow> {
        self.opening = sum_figures(&self.opening, &other.opening)?;
        self.closing = sum_figures(&self.closing, &other.closing)?;
        for (mine, theirs) in self.walks.iter_mut().zip(&other.walks) {
            mine.absorb(theirs)?;
        }
        Ok(())
    }
}

/// Field-by-field sum of two figures (portfolio totals).
pub fn sum_figures(a: &Figures, b: &Figures) -> Result<Figures, Overflow> {
    Ok(Figures {
        headline: add(a.headline, b.headline)?,
        transaction_price: add(a.transaction_price, b.transaction_price)?,
        recognized: add(a.recognized, b.recognized)?,
        rpo: add(a.rpo, b.rpo)?,
        remaining_conditional: add(a.remaining_conditional, b.remaining_conditional)?,
        forfeited: add(a.forfeited, b.forfeited)?,
        cancelled: add(a.cancelled, b.cancelled)?,
        fees: add(a.fees, b.fees)?,
        credits: add(a.credits, b.credits)?,
        billed: add(a.billed, b.billed)?,
        collected: add(a.collected, b.collected)?,
        receivable: add(a.receivable, b.receivable)?,
        deferred_revenue: add(a.deferred_revenue, b.deferred_revenue)?,
        contract_asset: add(a.contract_asset, b.contract_asset)?,
    })
}

type TrancheKey<'a> = (u64, &'a str);

fn by_key<'a>(figures: Vec<(&'a TrancheFact, TrancheFigures)>) -> BTreeMap<TrancheKey<'a>, (&'a TrancheFact, TrancheFigures)> {
    figures.into_iter().map(|(fact, f)| ((fact.origin.seq, fact.id.as_str()), (fact, f))).collect()
}

impl ContractState {
    /// The rollforward for (A, B]: `from` and `to` share `known_at`, `from.date < to.date`.
    /// Openings are [`ContractState::figures`] at A, closings at B; each movement is
    /// attributed to the event that caused it (`docs/REVENUE.md`), and
    /// `opening + movements = closing` holds for every balance (asserted).
    pub fn rollforward(&self, from: &AsOf, to: &AsOf) -> Result<Rollforward, Overflow> {
        self.rollforward_with(from, to, |at| self.figures(at))
    }

    /// [`ContractState::rollforward`] with the figures at A and at B given by `figures`:
    /// this state's own, or a summary's, whose core (this state without its billing) walks
    /// the revenue facts.
    pub(crate) fn rollforward_with(&self, from: &AsOf, to: &AsOf, figures: impl Fn(&AsOf) -> Result<Figures, Overflow>) -> Result<Rollforward, Overflow> {
        assert_eq!(from.known_at, to.known_at, "a rollforward is seen from one ledger position");
        assert!(from.date < to.date, "a rollforward runs forward");
        let mut r = Rollforward::empty();
        r.opening = figures(from)?;
        r.closing = figures(to)?;
        let (o, c) = (r.opening, r.closing);
        for balance in Walked::ALL {
            let walk = r.walk_mut(balance);
            walk.opening = balance.of(&o)?;
            walk.closing = balance.of(&c)?;
        }
        let billed = sub(c.billed, o.billed)?;
        let collected = sub(c.collected, o.collected)?;
        let recognized = sub(c.recognized, o.recognized)?;
        *r.walk_mut(Walked::NetContractPosition).line_mut(Line::Billed) = billed;
        *r.walk_mut(Walked::NetContractPosition).line_mut(Line::Recognized) = sub(0, recognized)?;
        *r.walk_mut(Walked::Receivable).line_mut(Line::Billed) = billed;
        *r.walk_mut(Walked::Receivable).line_mut(Line::Collected) = sub(0, collected)?;
        *r.walk_mut(Walked::Rpo).line_mut(Line::Recognized) = sub(0, recognized)?;
        self.walk_value(from, to, &mut r)?;
        for walk in &r.walks {
            assert_eq!(walk.imbalance()?, 0, "{}: {} does not roll forward: {walk:?}", self.contract_id, walk.balance.as_str());
        }
        Ok(r)
    }

    /// The RPO and conditional lines other than `recognized`: tranche by tranche, what
    /// changed between A and B and which event caused it.
    fn walk_value(&self, from: &AsOf, to: &AsOf, r: &mut Rollforward) -> Result<(), Overflow> {
        let at_a = by_key(self.tranche_figures(from)?);
        let at_b = by_key(self.tranche_figures(to)?);
        let (term_a, term_b) = (self.termination_at(from), self.termination_at(to));
        let termination_new = term_b.is_some_and(|b| term_a.is_none_or(|a| a.origin.seq != b.origin.seq));
        let mut rpo = Walk::new(Walked::Rpo);
        let mut cond = Walk::new(Walked::RemainingConditional);
        let mut keys: Vec<&TrancheKey> = at_a.keys().chain(at_b.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            match (at_a.get(key), at_b.get(key)) {
                (None, Some((fact, b))) => self.tranche_enters(fact, b, &mut rpo, &mut cond)?,
                (Some((_, a)), None) => {
                    // Its grant or capacity change counts at A but not at B: reversed.
                    let value = if a.status == TrancheStatus::Counted { a.amount } else { 0 };
                    bump(rpo.line_mut(Line::Reversals), sub(a.cancelled, value)?)?;
                    if a.status == TrancheStatus::Pending {
                        bump(cond.line_mut(Line::Reversals), sub(0, a.amount)?)?;
                    }
                }
                (Some((_, a)), Some((_, b))) => {
                    status_moves(a.status, b.status, a.amount, &mut rpo, &mut cond)?;
                    // What a termination cancels moves with the termination, or with the
                    // tranche: a termination counting at B cancels what was newly counted
                    // under it; anything else un-cancelled was undone by a reversal.
                    use TrancheStatus::Counted;
                    let line = match (term_b.is_some(), a.status, b.status) {
                        (true, Counted, Counted) if termination_new => Line::Cancellations,
                        (true, _, Counted) if a.status != Counted => Line::Cancellations,
                        _ => Line::Reversals,
                    };
                    bump(rpo.line_mut(line), -sub(b.cancelled, a.cancelled)?)?;
                }
                (None, None) => unreachable!("a key comes from one of the two maps"),
            }
        }
        match (term_a, term_b) {
            (Some(a), Some(b)) if a.origin.seq == b.origin.seq => {}
            (a, b) => {
                if let Some(b) = b {
                    bump(rpo.line_mut(Line::Fees), b.fee)?;
                }
                if let Some(a) = a {
                    bump(rpo.line_mut(Line::Reversals), -a.fee)?;
                }
            }
        }
        for credit in &self.credits {
            match (self.counts(&credit.origin, from), self.counts(&credit.origin, to)) {
                (false, true) => bump(rpo.line_mut(Line::Credits), -credit.amount)?,
                (true, false) => bump(rpo.line_mut(Line::Reversals), credit.amount)?,
                _ => {}
            }
        }
        let walk = r.walk_mut(Walked::Rpo);
        for line in Walked::Rpo.lines().iter().filter(|l| **l != Line::Recognized) {
            *walk.line_mut(*line) = rpo.line(*line);
        }
        let walk = r.walk_mut(Walked::RemainingConditional);
        walk.movements = cond.movements;
        Ok(())
    }

    /// A tranche counting at B but not at A: its grant or capacity change took effect.
    fn tranche_enters(&self, fact: &TrancheFact, b: &TrancheFigures, rpo: &mut Walk, cond: &mut Walk) -> Result<(), Overflow> {
        let from_grant = fact.origin.seq == self.grant.origin.seq;
        match &fact.condition {
            Condition::Firm => {
                let line = match (from_grant, fact.amount >= 0) {
                    (true, _) => Line::NewContracts,
                    (false, true) => Line::CapacityIncreases,
                    (false, false) => Line::CapacityDecreases,
                };
                bump(rpo.line_mut(line), fact.amount)?;
            }
            Condition::Milestone(_) => {
                // It enters pending, then moves to where it stands at B.
                bump(cond.line_mut(Line::NewContracts), fact.amount)?;
                status_moves(TrancheStatus::Pending, b.status, fact.amount, rpo, cond)?;
            }
        }
        // A termination counting at B cancels what it had not earned, whenever it came.
        bump(rpo.line_mut(Line::Cancellations), -b.cancelled)
    }
}

/// The RPO and conditional lines of a tranche whose status went from `a` to `b`.
fn status_moves(a: TrancheStatus, b: TrancheStatus, amount: i128, rpo: &mut Walk, cond: &mut Walk) -> Result<(), Overflow> {
    use TrancheStatus::{Counted, Forfeited, Pending};
    match (a, b) {
        (Pending, Counted) => {
            bump(rpo.line_mut(Line::MilestonesAchieved), amount)?;
            bump(cond.line_mut(Line::Achieved), -amount)?;
        }
        // A failure (or termination) reversed and the milestone achieved, in one period.
        (Forfeited, Counted) => bump(rpo.line_mut(Line::MilestonesAchieved), amount)?,
        (Pending, Forfeited) => bump(cond.line_mut(Line::Forfeited), -amount)?,
        // An achievement reversed: the tranche leaves the transaction price.
        (Counted, Pending) => {
            bump(rpo.line_mut(Line::Reversals), -amount)?;
            bump(cond.line_mut(Line::Reversals), amount)?;
        }
        (Counted, Forfeited) => bump(rpo.line_mut(Line::Reversals), -amount)?,
        (Forfeited, Pending) => bump(cond.line_mut(Line::Reversals), amount)?,
        (Counted, Counted) | (Pending, Pending) | (Forfeited, Forfeited) => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Schedules: what the contract as it stands at D recognizes later if nothing else happens.

/// The date `years` years after `date`, same month and day; 29 February becomes 28 February
/// in a year without it. Capped at 9999-12-31.
pub fn add_years(date: Date, years: i64) -> Date {
    let last = Date::new(9999, 12, 31).expect("a valid date");
    let Some(year) = i64::from(date.year()).checked_add(years).filter(|y| *y <= 9999) else {
        return last;
    };
    let year = year as i16;
    Date::new(year, date.month(), date.day())
        .or_else(|_| Date::new(year, date.month(), date.day() - 1))
        .unwrap_or(last)
}

/// The counted, uncancelled tranches of a contract as they stand at D, with what each has
/// recognized by D: the input of every schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub as_of: Date,
    /// (window, amount, recognized by D) of each counted tranche still earning.
    tranches: Vec<(events::Window, i128, i128)>,
    /// Pending conditional tranches: (window, amount). Shown apart, never in the schedule.
    pending: Vec<(events::Window, i128)>,
}

impl Schedule {
    /// What the tranches recognize in (D, `through`], if nothing else happens.
    pub fn scheduled_through(&self, through: Date) -> Result<i128, Overflow> {
        let mut total = 0i128;
        for (window, amount, by_as_of) in &self.tranches {
            let earned = ratable(*amount, earned_days(window, through.max(self.as_of), None), window.days())?;
            total = add(total, sub(earned, *by_as_of)?)?;
        }
        Ok(total)
    }

    /// What the pending tranches would have recognized by `through` had they been counted
    /// from the start (the dashboard's conditional band).
    pub fn conditional_through(&self, through: Date) -> Result<i128, Overflow> {
        let mut total = 0i128;
        for (window, amount) in &self.pending {
            total = add(total, ratable(*amount, earned_days(window, through, None), window.days())?)?;
        }
        Ok(total)
    }

    /// Scheduled recognition per column (from [`waterfall_columns`]); the last column takes
    /// everything left, so the amounts add up to everything still to be recognized.
    pub fn spread(&self, columns: &[Bucket]) -> Result<Vec<i128>, Overflow> {
        let end_of_time = Date::new(9999, 12, 31).expect("a valid date");
        let mut out = Vec::with_capacity(columns.len());
        let mut done = 0i128;
        for (i, column) in columns.iter().enumerate() {
            let through = if i + 1 == columns.len() { end_of_time } else { column.through };
            let cumulative = self.scheduled_through(through)?;
            out.push(sub(cumulative, done)?);
            done = cumulative;
        }
        Ok(out)
    }

    /// The last day on which any counted tranche still earns (None if none does).
    pub fn last_earning_day(&self) -> Option<Date> {
        self.tranches.iter().filter_map(|(w, _, _)| w.end.add_days(-1)).filter(|d| *d > self.as_of).max()
    }
}

/// One bucket of a schedule: what is recognized in (after, through].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub label: String,
    /// Exclusive start.
    pub after: Date,
    /// Inclusive end.
    pub through: Date,
    pub amount: i128,
}

/// The RPO disclosure of one contract at D.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpoDisclosure {
    pub rpo: i128,
    pub next_12_months: i128,
    pub thereafter: i128,
    /// Successive 12-month buckets from D (year 1 = next 12 months), to the last one in
    /// which the contract still recognizes; at least one. They add up to `rpo`.
    pub years: Vec<Bucket>,
}

/// Most yearly buckets of an RPO disclosure; the last takes everything after it.
pub const RPO_YEARS_MAX: usize = 100;
/// Most periods of a waterfall; the last column (`later`) takes everything after them.
pub const WATERFALL_PERIODS_MAX: usize = 600;

impl ContractState {
    /// The counted, uncancelled tranches as they stand at `at`.
    pub fn schedule(&self, at: &AsOf) -> Result<Schedule, Overflow> {
        let terminated = self.termination_at(at).is_some();
        let mut tranches = vec![];
        let mut pending = vec![];
        for (fact, f) in self.tranche_figures(at)? {
            match f.status {
                // A termination cancels what was not earned: nothing is scheduled.
                TrancheStatus::Counted if !terminated => tranches.push((fact.window, fact.amount, f.recognized)),
                TrancheStatus::Pending => pending.push((fact.window, fact.amount)),
                _ => {}
            }
        }
        Ok(Schedule { as_of: at.date, tranches, pending })
    }

    /// `rpo` at D split into what the contract as it stands at D recognizes in the next 12
    /// months (D, D + 1 year] and thereafter, and in yearly buckets.
    pub fn rpo_disclosure(&self, at: &AsOf) -> Result<RpoDisclosure, Overflow> {
        let rpo = self.figures(at)?.rpo;
        let schedule = self.schedule(at)?;
        let last = schedule.last_earning_day();
        let mut years = vec![];
        let mut after = at.date;
        let mut done = 0i128;
        for n in 1..=RPO_YEARS_MAX as i64 {
            let mut through = add_years(at.date, n);
            let final_bucket = n == RPO_YEARS_MAX as i64 || last.is_none_or(|l| through >= l) || through == after;
            if final_bucket {
                through = through.max(last.unwrap_or(through));
            }
            let cumulative = schedule.scheduled_through(through)?;
            years.push(Bucket { label: format!("year_{n}"), after, through, amount: sub(cumulative, done)? });
            done = cumulative;
            after = through;
            if final_bucket {
                break;
            }
        }
        let next_12_months = years[0].amount;
        let disclosure = RpoDisclosure { rpo, next_12_months, thereafter: sub(rpo, next_12_months)?, years };
        let total = disclosure.years.iter().try_fold(0i128, |sum, b| add(sum, b.amount))?;
        assert_eq!(total, rpo, "{}: the RPO buckets add up to rpo at {}", self.contract_id, at.date);
        Ok(disclosure)
    }
}

/// The future periods of a waterfall at D: from the period holding D + 1 day to the one
/// holding `last_day`, at most [`WATERFALL_PERIODS_MAX`] of them plus a final `later`
/// column when there are more. Amounts are left at zero.
pub fn waterfall_columns(as_of: Date, last_day: Option<Date>, granularity: Granularity) -> Vec<Bucket> {
    let mut columns = vec![];
    let (Some(last_day), Some(first)) = (last_day, as_of.add_days(1)) else {
        return columns;
    };
    if first > last_day {
        return columns;
    }
    let mut after = as_of;
    let mut period = granularity.period_of(first);
    loop {
        let end = period.last_day();
        if columns.len() == WATERFALL_PERIODS_MAX {
            columns.push(Bucket { label: "later".into(), after, through: last_day, amount: 0 });
            break;
        }
        columns.push(Bucket { label: period.to_string(), after, through: end, amount: 0 });
        after = end;
        match period.next() {
            Some(next) if end < last_day => period = next,
            _ => break,
        }
    }
    columns
}

// ---------------------------------------------------------------------------------------
// Corrections.

/// A period whose recognized revenue differs as known at A and as known at B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Correction {
    pub period: Period,
    pub period_end: Date,
    pub before: i128,
    pub after: i128,
    /// The events in (A, B] that changed this period's revenue, in seq order.
    pub causes: Vec<Cause>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cause {
    pub seq: u64,
    pub kind: EventKind,
    pub effective_date: Date,
}

impl ContractState {
    /// Every period (as of D, by `granularity`) whose revenue differs between `known_at`
    /// `from_known_at` and `to_known_at`, with the events of (A, B] that changed it: each
    /// event of the contract in (A, B] is made known one at a time, and an event is a cause
    /// of every period its arrival changed.
    pub fn corrections(&self, as_of: Date, from_known_at: u64, to_known_at: u64, granularity: Granularity) -> Result<Vec<Correction>, Overflow> {
        assert!(from_known_at < to_known_at, "corrections compare an earlier position with a later one");
        let before = self.periods(&AsOf { date: as_of, known_at: from_known_at }, granularity)?;
        let after = self.periods(&AsOf { date: as_of, known_at: to_known_at }, granularity)?;
        let before_of = |period: &Period| before.iter().find(|p| p.period == *period).map_or(0, |p| p.recognized);
        let mut out: Vec<Correction> = after
            .iter()
            .filter(|p| p.recognized != before_of(&p.period))
            .map(|p| Correction { period: p.period, period_end: p.end, before: before_of(&p.period), after: p.recognized, causes: vec![] })
            .collect();
        if out.is_empty() {
            return Ok(out);
        }
        // Only events that can move revenue are tried: billing and its reversals cannot.
        let moves_revenue = |kind: EventKind, target: Option<u64>| match kind {
            EventKind::InvoiceIssued | EventKind::PaymentReceived | EventKind::PeriodClosed => false,
            EventKind::EventReversed => target.and_then(|t| self.events.get(&t)).is_some_and(|e| !e.kind.is_billing()),
            _ => true,
        };
        let mut previous = before;
        for (seq, event) in self.events.range(from_known_at + 1..=to_known_at) {
            let target = self.reversals.iter().find(|r| r.origin.seq == seq).map(|r| r.target_seq);
            if event.origin.date > as_of || !moves_revenue(event.kind, target) {
                continue;
            }
            let now = self.periods(&AsOf { date: as_of, known_at: seq }, granularity)?;
            for correction in &mut out {
                let was = previous.iter().find(|p| p.period == correction.period).map_or(0, |p| p.recognized);
                let is = now.iter().find(|p| p.period == correction.period).map_or(0, |p| p.recognized);
                if was != is {
                    correction.causes.push(Cause { seq, kind: event.kind, effective_date: event.origin.date });
                }
            }
            previous = now;
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------
// The dashboard's chart.

/// One point of a contract's chart: cumulative amounts at the end of `date`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChartPoint {
    pub date: Date,
    /// Recognized revenue (as of `date`, known at K); only for dates up to D.
    pub recognized: Option<i128>,
    /// Recognized by D plus what the counted tranches as they stand at D schedule by `date`
    /// (for dates up to D: the counted tranches' own schedule).
    pub scheduled_firm: i128,
    /// `scheduled_firm` plus what the pending tranches would recognize if achieved.
    pub with_conditional: i128,
}

impl ContractState {
    /// Month-end points over the contract's life (grant date to term end), plus D itself.
    pub fn chart(&self, at: &AsOf) -> Result<Vec<ChartPoint>, Overflow> {
        let schedule = self.schedule(at)?;
        let recognized_at_d = self.figures(at)?.recognized;
        let start = self.grant.origin.date.min(self.grant.term.start);
        let end = self.grant.term.end.add_days(-1).unwrap_or(self.grant.term.end).max(start);
        let mut dates = vec![start];
        let mut d = start.last_of_month();
        while d < end && dates.len() < WATERFALL_PERIODS_MAX {
            dates.push(d);
            d = match d.add_days(1) {
                Some(next) => next.last_of_month(),
                None => break,
            };
        }
        dates.push(end);
        if (start..=end).contains(&at.date) {
            dates.push(at.date);
        }
        dates.sort();
        dates.dedup();
        let mut out = Vec::with_capacity(dates.len());
        for date in dates {
            let (recognized, firm) = if date <= at.date {
                let r = self.figures(&at.with_date(date))?.recognized;
                (Some(r), r)
            } else {
                (None, add(recognized_at_d, schedule.scheduled_through(date)?)?)
            };
            out.push(ChartPoint { date, recognized, scheduled_firm: firm, with_conditional: add(firm, schedule.conditional_through(date)?)? });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    #[test]
    fn a_year_later_is_the_same_day_and_29_february_becomes_28() {
        assert_eq!(add_years(d("2026-12-31"), 1), d("2027-12-31"));
        assert_eq!(add_years(d("2028-02-29"), 1), d("2029-02-28"));
        assert_eq!(add_years(d("2028-02-29"), 4), d("2032-02-29"));
        assert_eq!(add_years(d("9999-06-01"), 1), d("9999-12-31"));
    }

    #[test]
    fn waterfall_columns_start_with_the_rest_of_the_as_of_period() {
        let cols = waterfall_columns(d("2026-12-15"), Some(d("2027-02-10")), Granularity::Month);
        let labels: Vec<(&str, String, String)> = cols.iter().map(|c| (c.label.as_str(), c.after.to_string(), c.through.to_string())).collect();
        assert_eq!(
            labels,
            [
                ("2026-12", "2026-12-15".to_string(), "2026-12-31".to_string()),
                ("2027-01", "2026-12-31".to_string(), "2027-01-31".to_string()),
                ("2027-02", "2027-01-31".to_string(), "2027-02-28".to_string())
            ]
        );
        assert!(waterfall_columns(d("2026-12-31"), None, Granularity::Quarter).is_empty());
        let many = waterfall_columns(d("2026-12-31"), Some(d("9999-12-31")), Granularity::Month);
        assert_eq!(many.len(), WATERFALL_PERIODS_MAX + 1);
        assert_eq!(many.last().unwrap().label, "later");
    }
}
