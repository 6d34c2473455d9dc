//! Admission: random histories proposed to a [`Book`] (the one seal and fold the ledger
//! uses), then every figure at many points of view.
//!
//! Input is either NDJSON wire events (when it starts with `{`: the seeds from examples/ and
//! testdata/ are such) or bytes that [`arbitrary`] turns into a history of well-formed
//! events of every kind, with values at the edges (amounts near 10^30, GPU counts near
//! u64::MAX, dates near years 1 and 9999) as often as ordinary ones.

use arbitrary::Unstructured;
use events::{format_minor_units, Currency, Date, Proposal, RecordedEvent, Timestamp};
use projections::report::{contract_json, portfolio_json, revenue_json};
use projections::{AsOf, Book, ContractState, Granularity, Portfolio};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Most events one input proposes; histories longer than this find nothing new, slowly.
const EVENTS_MAX: usize = 24;
/// Most points of view (date, position) checked per contract, and of those, how many also
/// compute revenue periods (one `recognized` per period: the costly part).
const VIEWS_MAX: usize = 24;
const PERIOD_VIEWS_MAX: usize = 3;
/// Revenue periods are computed only this many days past the grant: one step per month from
/// year 1 to 9999 would be 120,000 steps, a cost (bounded) rather than a finding.
const PERIOD_SPAN_DAYS_MAX: i64 = 366 * 6;
/// Dates checked per contract: the latest ones of the interesting dates around its events.
const DATES_MAX: usize = 12;
/// The server's clock for every proposal: after the seeds' periods, before most edge dates.
const NOW: Timestamp = Timestamp(1_830_297_600_000_000); // 2028-01-01T00:00:00Z

pub fn admission(data: &[u8]) {
    let proposals = if data.first() == Some(&b'{') { from_ndjson(data) } else { from_bytes(data) };
    let mut book = Book::new();
    let mut recorded = vec![];
    for proposal in proposals.iter().take(EVENTS_MAX) {
        if let Ok(r) = book.propose(proposal, "fuzz", NOW) {
            recorded.push(r);
        }
    }
    check_book(&book, &recorded);
}

fn from_ndjson(data: &[u8]) -> Vec<Proposal> {
    data.split(|&b| b == b'\n').filter_map(|line| Proposal::parse_json(line).ok()).collect()
}

/// Every property of a book and the events it was folded from.
pub fn check_book(book: &Book, recorded: &[RecordedEvent]) {
    // The one fold: the recorded events, folded again, give the same book.
    let mut again = Book::new();
    for r in recorded {
        assert_eq!(RecordedEvent::from_canonical(r.canonical.clone()).as_ref(), Ok(r), "a sealed event decodes to itself");
        again.apply(r).unwrap_or_else(|e| panic!("a sealed event does not fold again: {e}"));
    }
    assert_eq!(&again, book, "folding the recorded events again gives another book");

    let mut dates: BTreeSet<Date> = [Date::new(1, 1, 1), Date::new(9999, 12, 31)].into_iter().flatten().collect();
    for r in recorded {
        near(&mut dates, r.event.effective_date);
    }
    for state in book.contracts.values() {
        near(&mut dates, state.grant.term.start);
        near(&mut dates, state.grant.term.end);
        for t in &state.tranches {
            near(&mut dates, t.window.start);
            near(&mut dates, t.window.end);
        }
    }
    let positions: Vec<u64> = std::iter::once(u64::MAX).chain(recorded.iter().map(|r| r.event.seq).rev()).collect();
    for state in book.contracts.values() {
        check_contract(state, &dates, &positions);
    }
    for date in dates.iter().step_by(dates.len().div_ceil(4)) {
        let at = AsOf::date(*date);
        let mut portfolio = Portfolio::default();
        for state in book.contracts.values() {
            portfolio.add(state, &at).expect("portfolio totals of admitted events do not overflow");
        }
        let _ = portfolio_json(&portfolio, &at);
    }
    // Known at K: a book of the first K events has the figures the whole book has known at K.
    if let Some(k) = recorded.len().checked_div(2).filter(|k| *k > 0) {
        let mut prefix = Book::new();
        for r in &recorded[..k] {
            prefix.apply(r).expect("a prefix folds");
        }
        let known_at = recorded[k - 1].event.seq;
        for (id, state) in &prefix.contracts {
            let whole = &book.contracts[id];
            for date in dates.iter().step_by(dates.len().div_ceil(6)) {
                let at = AsOf { date: *date, known_at };
                assert_eq!(
                    whole.figures(&at),
                    state.figures(&AsOf::date(*date)),
                    "{id} at {date} known at {known_at}: the whole book and the prefix disagree"
                );
            }
        }
    }
}

fn near(dates: &mut BTreeSet<Date>, date: Date) {
    dates.insert(date);
    dates.extend(date.add_days(-1));
    dates.extend(date.add_days(1));
}

fn check_contract(state: &ContractState, dates: &BTreeSet<Date>, positions: &[u64]) {
    // The dates of this contract's grant and later, spread over the set, and the calendar's ends.
    let own: Vec<Date> = dates.range(state.grant.origin.date.add_days(-1).unwrap_or(state.grant.origin.date)..).copied().collect();
    let mut chosen: Vec<Date> = own.iter().step_by(own.len().div_ceil(DATES_MAX).max(1)).copied().collect();
    chosen.extend(dates.first().copied());
    chosen.extend(dates.last().copied());
    let (mut views, mut period_views) = (0, 0);
    for known_at in positions.iter().filter(|k| state.known_at(**k)) {
        for date in &chosen {
            if views >= VIEWS_MAX {
                return;
            }
            views += 1;
            let at = AsOf { date: *date, known_at: *known_at };
            let f = state.figures(&at).unwrap_or_else(|_| panic!("{} at {date} known at {known_at}: figures overflow", state.contract_id));
            // SPEC section 4's identity, and the definitions of the derived figures.
            assert_eq!(
                f.headline + f.fees - f.credits,
                f.transaction_price + f.remaining_conditional + f.forfeited + f.cancelled,
                "identity at {date} known at {known_at}: {f:?}"
            );
            assert_eq!(f.rpo, f.transaction_price - f.recognized);
            assert_eq!(f.receivable, f.billed - f.collected);
            assert_eq!(f.deferred_revenue, (f.billed - f.recognized).max(0));
            assert_eq!(f.contract_asset, (f.recognized - f.billed).max(0));
            assert!(f.remaining_conditional >= 0 && f.forfeited >= 0, "{f:?}");
            assert_eq!(state.recognized(&at), Ok(f.recognized), "recognized agrees with the figures");

            let view = state.view(&at).unwrap_or_else(|_| panic!("view overflows at {date}"));
            assert_eq!(view.figures, f);
            let _ = contract_json(&view);
            if period_views < PERIOD_VIEWS_MAX && state.grant.origin.date.days_until(*date) <= PERIOD_SPAN_DAYS_MAX {
                period_views += 1;
                for granularity in [Granularity::Month, Granularity::Quarter] {
                    let periods = state.periods(&at, granularity).expect("periods do not overflow");
                    let total: i128 = periods.iter().map(|p| p.recognized).sum();
                    if *date >= state.grant.origin.date {
                        assert_eq!(total, f.recognized, "periods add up to recognized at {date}");
                        assert_eq!(periods.last().map(|p| p.end), Some(*date), "the last period ends at D");
                    } else {
                        assert!(periods.is_empty());
                    }
                    let _ = revenue_json(state, &at, granularity).expect("revenue JSON");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Histories from bytes.

const CONTRACTS: [&str; 3] = ["c0", "c1", "c2"];
const MILESTONES: [&str; 3] = ["m0", "m1", "m2"]; // tranches wait on m0 or m1; m2 is unknown
const CURRENCIES: [&str; 3] = ["USD", "JPY", "KWD"]; // exponents 2, 0, 3

struct Gen<'a, 'b> {
    u: &'a mut Unstructured<'b>,
    /// Each contract's currency, as its grant said.
    currencies: [Currency; 3],
    /// Contracts a grant was proposed for (most histories start by granting).
    granted: [bool; 3],
    /// The date of each contract's grant: most events follow it.
    grant_dates: [Option<Date>; 3],
    events: u64,
}

fn from_bytes(data: &[u8]) -> Vec<Proposal> {
    let mut u = Unstructured::new(data);
    let mut g = Gen { u: &mut u, currencies: [Currency::from_code("USD").expect("a currency"); 3], granted: [false; 3], grant_dates: [None; 3], events: 0 };
    let mut out = vec![];
    while out.len() < EVENTS_MAX {
        let Ok(value) = g.event() else { break };
        // Through the wire parser, as the server takes them; a malformed one is dropped.
        if let Ok(p) = Proposal::parse_value(value) {
            out.push(p);
        }
        g.events += 1;
        if g.u.is_empty() {
            break;
        }
    }
    out
}

type R<T> = arbitrary::Result<T>;

impl Gen<'_, '_> {
    fn base() -> Date {
        Date::new(2026, 1, 1).expect("a date")
    }

    /// Mostly days around 2026; sometimes the ends of the calendar.
    fn date(&mut self) -> R<Date> {
        Ok(match self.u.int_in_range(0u8..=15)? {
            0 => Date::new(1, 1, 1).expect("a date").add_days(self.u.int_in_range(0..=400)?).expect("in range"),
            1 => Date::new(9999, 12, 31).expect("a date").add_days(-self.u.int_in_range(0..=400)?).expect("in range"),
            2 => Self::base().add_days(self.u.int_in_range(-3000..=30000)?).expect("in range"),
            _ => Self::base().add_days(self.u.int_in_range(-10..=800)?).expect("in range"),
        })
    }

    fn later(&mut self, date: Date) -> R<Date> {
        let days = self.u.int_in_range(0..=900)?;
        Ok(date.add_days(days).unwrap_or(date))
    }

    /// Minor units: small, large, at and past the 10^30 bound, or anything.
    fn minor(&mut self) -> R<i128> {
        const MAX: i128 = events::MAX_ABS_MINOR_UNITS;
        Ok(match self.u.int_in_range(0u8..=9)? {
            0 => MAX - self.u.int_in_range(0..=3)?,
            1 => MAX / i128::from(self.u.int_in_range(1u16..=1000)?),
            2 => self.u.arbitrary::<i128>()? % (MAX + 2),
            3 => i128::from(self.u.arbitrary::<u64>()?),
            _ => i128::from(self.u.int_in_range(1u32..=2_000_000)?),
        })
    }

    /// An amount in the contract's currency; now and then with a decimal too many, or signed.
    fn amount(&mut self, currency: Currency) -> R<String> {
        let minor = self.minor()?;
        Ok(match self.u.int_in_range(0u8..=31)? {
            0 if currency.exponent() == 0 => format!("{}.5", format_minor_units(minor, currency)),
            0 => format!("{}5", format_minor_units(minor, currency)),
            1 => format_minor_units(-minor, currency),
            2 => "0".into(),
            _ => format_minor_units(minor, currency),
        })
    }

    fn gpus(&mut self) -> R<u64> {
        Ok(match self.u.int_in_range(0u8..=7)? {
            0 => u64::MAX - self.u.int_in_range(0..=2)?,
            1 => self.u.arbitrary()?,
            _ => self.u.int_in_range(1..=100_000)?,
        })
    }

    fn gpus_delta(&mut self) -> R<i64> {
        Ok(match self.u.int_in_range(0u8..=7)? {
            0 => i64::MIN + self.u.int_in_range(0..=2)?,
            1 => i64::MAX - self.u.int_in_range(0..=2)?,
            2 => self.u.arbitrary()?,
            _ => self.u.int_in_range(-1000..=1000)?,
        })
    }

    fn contract(&mut self) -> R<usize> {
        self.u.choose_index(CONTRACTS.len())
    }

    fn event(&mut self) -> R<Value> {
        let c = self.contract()?;
        let id = CONTRACTS[c];
        let cur = self.currencies[c];
        let date = match self.grant_dates[c] {
            Some(granted) if self.u.int_in_range(0u8..=3)? != 0 => self.later(granted)?,
            _ => self.date()?,
        };
        if !self.granted[c] && self.u.int_in_range(0u8..=3)? != 0 {
            return self.grant(c, date);
        }
        let mut event = match self.u.int_in_range(0u8..=11)? {
            0 | 1 => return self.grant(c, date),
            2 => wire(id, "capacity_changed", date, json!({"gpus_delta": self.gpus_delta()?, "amount_delta": self.amount(cur)?})),
            3 | 4 => {
                let outcome = *self.u.choose(&["achieved", "failed", "waived"])?;
                wire(id, "milestone_reached", date, json!({"milestone": self.u.choose(&MILESTONES)?, "outcome": outcome}))
            }
            5 => {
                let due = self.later(date)?;
                let invoice = format!("i{}", self.u.int_in_range(0..=3)?);
                wire(id, "invoice_issued", date, json!({"invoice_id": invoice, "amount": self.amount(cur)?, "due_date": due.to_string()}))
            }
            6 => {
                let mut data = json!({"payment_id": format!("p{}", self.u.int_in_range(0..=5)?), "amount": self.amount(cur)?});
                if self.u.arbitrary()? {
                    data["invoice_id"] = json!(format!("i{}", self.u.int_in_range(0..=3)?));
                }
                wire(id, "payment_received", date, data)
            }
            7 => wire(id, "sla_credit_issued", date, json!({"amount": self.amount(cur)?, "reason": "r"})),
            8 => wire(id, "contract_terminated", date, json!({"fee": self.amount(cur)?})),
            9 | 10 => {
                let target = self.u.int_in_range(0..=self.events + 1)?;
                wire(id, "event_reversed", date, json!({"target_seq": target, "reason": "r"}))
            }
            _ => {
                let lag = self.u.int_in_range(0..=60)?;
                let end = date.add_days(-lag).unwrap_or(date);
                json!({"type": "period_closed", "effective_date": date.to_string(), "data": {"period_end": end.to_string()}})
            }
        };
        if self.u.int_in_range(0u8..=7)? == 0 {
            event["expected_version"] = json!(self.u.int_in_range(0..=self.events + 1)?);
        }
        Ok(event)
    }

    fn grant(&mut self, c: usize, date: Date) -> R<Value> {
        let code = *self.u.choose(&CURRENCIES)?;
        let currency = Currency::from_code(code).expect("a currency");
        self.currencies[c] = currency;
        self.granted[c] = true;
        self.grant_dates[c] = Some(date);
        let start = self.later(date)?;
        let end = start.add_days(self.u.int_in_range(1..=1500)?).unwrap_or(start);
        let term = start.days_until(end).max(1);
        let mut tranches = vec![];
        let mut headline = 0i128;
        for i in 0..self.u.int_in_range(1..=4)? {
            let s = self.u.int_in_range(0..=term - 1)?;
            let e = (s + self.u.int_in_range(1..=term)?).min(term);
            let amount = match self.u.int_in_range(0u8..=7)? {
                0 => self.minor()?,
                _ => self.minor()?.abs().max(1),
            };
            headline = headline.saturating_add(amount);
            let mut t = json!({
                "id": format!("t{i}"),
                "amount": format_minor_units(amount, currency),
                "window": {"start": start.add_days(s).unwrap_or(start).to_string(), "end": start.add_days(e).unwrap_or(end).to_string()},
            });
            match self.u.int_in_range(0u8..=2)? {
                0 => t["milestone"] = json!(MILESTONES[usize::from(self.u.int_in_range(0u8..=1)?)]),
                _ => t["firm"] = json!(true),
            }
            tranches.push(t);
        }
        if self.u.int_in_range(0u8..=15)? == 0 {
            headline += 1; // a headline that is not the sum
        }
        Ok(wire(
            CONTRACTS[c],
            "lease_granted",
            date,
            json!({"provider": "P", "customer": "C", "currency": code,
                   "term": {"start": start.to_string(), "end": end.to_string()},
                   "cluster": {"site": "s", "gpu_model": "g", "gpus": self.gpus()?},
                   "headline": format_minor_units(headline, currency), "tranches": tranches}),
        ))
    }
}

fn wire(contract: &str, kind: &str, date: Date, data: Value) -> Value {
    json!({"contract_id": contract, "type": kind, "effective_date": date.to_string(), "data": data})
}
