//! The figures of SPEC section 4 for one contract, as of a date and known at a position.
//!
//! All arithmetic is on i128 minor units and checked. The per-contract magnitude bound kept
//! by the rules (`ContractState::magnitude_total <= 10^30`) makes overflow impossible for
//! events that passed them; the checks stay for state folded from elsewhere.

use crate::state::{AsOf, ContractState, TrancheFact};
use events::{Condition, Date, Window};

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the figures cannot be computed: an amount overflows, or a tranche's window is empty")]
pub struct Overflow;

fn add(a: i128, b: i128) -> Result<i128, Overflow> {
    a.checked_add(b).ok_or(Overflow)
}

fn sub(a: i128, b: i128) -> Result<i128, Overflow> {
    a.checked_sub(b).ok_or(Overflow)
}

/// Where a tranche stands at a point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrancheStatus {
    /// Firm, or its milestone achieved or waived: it is part of the transaction price.
    Counted,
    /// Its milestone is not resolved yet.
    Pending,
    /// Its milestone failed, or the contract ended while it was pending.
    Forfeited,
}

impl TrancheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TrancheStatus::Counted => "counted",
            TrancheStatus::Pending => "pending",
            TrancheStatus::Forfeited => "forfeited",
        }
    }
}

/// One tranche's figures at a point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrancheFigures {
    pub status: TrancheStatus,
    pub amount: i128,
    pub recognized: i128,
    /// The part a termination took away (counted tranches only).
    pub cancelled: i128,
}

/// The figures of one contract (minor units of its currency).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    pub headline: i128,
    pub transaction_price: i128,
    pub recognized: i128,
    pub rpo: i128,
    pub remaining_conditional: i128,
    pub forfeited: i128,
    pub cancelled: i128,
    pub fees: i128,
    pub credits: i128,
    pub billed: i128,
    pub collected: i128,
    pub receivable: i128,
    pub deferred_revenue: i128,
    pub contract_asset: i128,
}

/// What was billed and collected at a point of view (minor units).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Billing {
    pub billed: i128,
    pub collected: i128,
}

/// Days of `window` earned by the end of `date`: E = days of the window on or before `date`,
/// and, with a termination at T, before T. Always `0 <= E <= N`.
pub fn earned_days(window: &Window, date: Date, termination: Option<Date>) -> i64 {
    let mut elapsed = window.start.days_until(date) + 1;
    if let Some(t) = termination {
        elapsed = elapsed.min(window.start.days_until(t));
    }
    // `max` before `min`: an empty window (which no admitted event has) earns nothing
    // instead of panicking in `clamp`.
    elapsed.min(window.days()).max(0)
}

/// Ratable revenue: `floor(amount * E / N)` for E earned days of N. An empty window or E
/// outside `0..=N` (which no admitted event can give) is an error, not a panic: the chain
/// of a follower is whatever its stream held.
pub fn ratable(amount: i128, earned_days: i64, window_days: i64) -> Result<i128, Overflow> {
    if window_days <= 0 || !(0..=window_days).contains(&earned_days) {
        return Err(Overflow);
    }
    let product = amount.checked_mul(i128::from(earned_days)).ok_or(Overflow)?;
    // div_euclid by a positive divisor is floor division, also for negative amounts.
    Ok(product.div_euclid(i128::from(window_days)))
}

impl ContractState {
    /// The status of a counting tranche at `at`.
    pub fn tranche_status(&self, tranche: &TrancheFact, at: &AsOf, terminated: bool) -> TrancheStatus {
        match &tranche.condition {
            Condition::Firm => TrancheStatus::Counted,
            Condition::Milestone(m) => match self.resolution_at(m, at) {
                Some(r) if r.outcome.counts_tranche() => TrancheStatus::Counted,
                Some(_) => TrancheStatus::Forfeited,
                None if terminated => TrancheStatus::Forfeited,
                None => TrancheStatus::Pending,
            },
        }
    }

    /// Every tranche that counts at `at`, with its figures.
    pub fn tranche_figures(&self, at: &AsOf) -> Result<Vec<(&TrancheFact, TrancheFigures)>, Overflow> {
        let mut out = Vec::with_capacity(self.tranches.len());
        self.each_tranche(at, |tranche, figures| {
            out.push((tranche, figures));
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with every tranche that counts at `at` and its figures, in order (without
    /// collecting them: a portfolio asks this for every period of every contract).
    pub(crate) fn each_tranche<'a>(&'a self, at: &AsOf, mut f: impl FnMut(&'a TrancheFact, TrancheFigures) -> Result<(), Overflow>) -> Result<(), Overflow> {
        let termination = self.termination_at(at);
        let termination_date = termination.map(|t| t.origin.date);
        for tranche in self.tranches.iter().filter(|t| self.counts(&t.origin, at)) {
            let status = self.tranche_status(tranche, at, termination.is_some());
            let (recognized, cancelled) = match status {
                TrancheStatus::Counted => {
                    let days = earned_days(&tranche.window, at.date, termination_date);
                    let earned = ratable(tranche.amount, days, tranche.window.days())?;
                    let cancelled = if termination.is_some() { sub(tranche.amount, earned)? } else { 0 };
                    (earned, cancelled)
                }
                TrancheStatus::Pending | TrancheStatus::Forfeited => (0, 0),
            };
            f(tranche, TrancheFigures { status, amount: tranche.amount, recognized, cancelled })?;
        }
        Ok(())
    }

    /// The figures of SPEC section 4 at `at`.
    pub fn figures(&self, at: &AsOf) -> Result<Figures, Overflow> {
        let mut billing = Billing::default();
        for invoice in self.invoices.iter().filter(|i| self.counts(&i.origin, at)) {
            billing.billed = add(billing.billed, invoice.amount)?;
        }
        for payment in self.payments.iter().filter(|p| self.counts(&p.origin, at)) {
            billing.collected = add(billing.collected, payment.amount)?;
        }
        self.figures_with(at, billing)
    }

    /// The figures at `at`, given what was billed and collected at `at`: the one place the
    /// figures are derived, for a state ([`ContractState::figures`]) and for a summary,
    /// which keeps billing as sums by date ([`crate::Summary`]).
    pub(crate) fn figures_with(&self, at: &AsOf, billing: Billing) -> Result<Figures, Overflow> {
        let mut f = Figures { billed: billing.billed, collected: billing.collected, ..Figures::default() };
        let mut counted = 0i128;
        let mut earned = 0i128;
        for (_, t) in self.tranche_figures(at)? {
            f.headline = add(f.headline, t.amount)?;
            match t.status {
                TrancheStatus::Counted => {
                    counted = add(counted, t.amount)?;
                    earned = add(earned, t.recognized)?;
                    f.cancelled = add(f.cancelled, t.cancelled)?;
                }
                TrancheStatus::Pending => f.remaining_conditional = add(f.remaining_conditional, t.amount)?,
                TrancheStatus::Forfeited => f.forfeited = add(f.forfeited, t.amount)?,
            }
        }
        if let Some(t) = self.termination_at(at) {
            f.fees = t.fee;
        }
        for credit in self.credits.iter().filter(|c| self.counts(&c.origin, at)) {
            f.credits = add(f.credits, credit.amount)?;
        }
        f.transaction_price = sub(add(sub(counted, f.cancelled)?, f.fees)?, f.credits)?;
        f.recognized = sub(add(earned, f.fees)?, f.credits)?;
        f.rpo = sub(f.transaction_price, f.recognized)?;
        f.receivable = sub(f.billed, f.collected)?;
        f.deferred_revenue = sub(f.billed, f.recognized)?.max(0);
        f.contract_asset = sub(f.recognized, f.billed)?.max(0);

        // SPEC section 4's identity; it follows from the sums above for every history.
        let left = sub(add(f.headline, f.fees)?, f.credits)?;
        let right = add(add(add(f.transaction_price, f.remaining_conditional)?, f.forfeited)?, f.cancelled)?;
        assert_eq!(left, right, "headline + fees - credits = price + conditional + forfeited + cancelled");
        Ok(f)
    }

    /// Revenue recognized by the end of `date`, known at `at.known_at`.
    pub fn recognized_at(&self, at: &AsOf) -> Result<i128, Overflow> {
        Ok(self.figures(at)?.recognized)
    }

    /// How much a capacity decrease taking effect the day after `day_before` may take away:
    /// the firm value not yet recognized at the end of `day_before` (tranches counted then,
    /// less what each has earned), less every decrease already known that takes effect
    /// later (they will take their share of the same value). Counting later decreases keeps
    /// back-dated decreases from adding up to more than the contract has.
    pub fn decrease_headroom(&self, day_before: Date) -> Result<i128, Overflow> {
        let then = AsOf::date(day_before);
        let mut headroom = self.unrecognized_firm(&then)?;
        let everything = AsOf::everything();
        for tranche in self.tranches.iter().filter(|t| t.amount < 0 && self.counts(&t.origin, &everything) && !self.counts(&t.origin, &then)) {
            headroom = add(headroom, tranche.amount)?;
        }
        Ok(headroom)
    }

    /// The contract's firm value as everything known now would have it at the end of time,
    /// without the effects of event `excluded_seq` (a capacity change's tranche, or a
    /// milestone resolution): what would be left if that event were reversed.
    pub fn firm_value_without(&self, excluded_seq: u64) -> Result<i128, Overflow> {
        let everything = AsOf::everything();
        let mut total = 0i128;
        for tranche in self.tranches.iter().filter(|t| t.origin.seq != excluded_seq && self.counts(&t.origin, &everything)) {
            let counted = match &tranche.condition {
                Condition::Firm => true,
                Condition::Milestone(m) => self
                    .resolution_at(m, &everything)
                    .is_some_and(|r| r.origin.seq != excluded_seq && r.outcome.counts_tranche()),
            };
            if counted {
                total = add(total, tranche.amount)?;
            }
        }
        Ok(total)
    }

    /// Firm value not yet recognized at the end of `at.date`: the sum over counted tranches
    /// of what each has still to earn. A capacity decrease may not exceed it (SPEC 4).
    pub fn unrecognized_firm(&self, at: &AsOf) -> Result<i128, Overflow> {
        let mut total = 0i128;
        for (_, t) in self.tranche_figures(at)? {
            if t.status == TrancheStatus::Counted {
                total = add(total, sub(sub(t.amount, t.recognized)?, t.cancelled)?)?;
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    #[test]
    fn ratable_floors_and_finishes_exact() {
        // 1000 over 3 days: 333, 666, 1000.
        let w = Window { start: d("2026-01-01"), end: d("2026-01-04") };
        let r = |date: &str, t: Option<&str>| ratable(1000, earned_days(&w, d(date), t.map(d)), 3).unwrap();
        assert_eq!(r("2025-12-31", None), 0);
        assert_eq!(r("2026-01-01", None), 333);
        assert_eq!(r("2026-01-02", None), 666);
        assert_eq!(r("2026-01-03", None), 1000);
        assert_eq!(r("2030-01-01", None), 1000);
        // Terminated on the 2nd: only the 1st is earned, whatever the date.
        assert_eq!(r("2026-01-02", Some("2026-01-02")), 333);
        assert_eq!(r("2030-01-01", Some("2026-01-02")), 333);
        assert_eq!(r("2030-01-01", Some("2025-06-01")), 0);
        // Negative amounts round toward minus infinity: -1000 * 1 / 3 = -333.33 -> -334.
        assert_eq!(ratable(-1000, 1, 3), Ok(-334));
        assert_eq!(ratable(-1000, 3, 3), Ok(-1000));
    }
}
