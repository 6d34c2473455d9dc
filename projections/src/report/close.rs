//! The finance close reports as JSON and CSV tables, per contract and per currency for the
//! portfolio (never summed across currencies). Each report is built by feeding it every
//! contract (`add`), then read as JSON (`json`) or as CSV sections (`tables`): the HTTP API
//! and `cledger report` call exactly these, so they print the same shapes.

use super::{figure_pairs, figures_fields, Table};
use crate::close::{waterfall_columns, Bucket, Cause, Correction, Line, Rollforward, RpoDisclosure, Schedule, Walk, Walked};
use crate::figures::{Figures, Overflow};
use crate::state::{AsOf, ContractState};
use crate::summary::Contract;
use crate::view::{PeriodRun, Granularity, Period, PeriodTotals, Portfolio};
use events::{format_minor_units, ContractId, Currency, Date, DecimalText, Timestamp};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

// The large reports serialize straight to bytes (a `Serialize` impl each) rather than
// through a `serde_json::Value` tree: for 10,000 contracts that tree is ~100 MB of small
// allocations. `json()` gives the same object as a `Value` for whoever wants one.

/// An amount in JSON: a decimal string with exactly its currency's decimals.
struct Amount(i128, Currency);

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(DecimalText::of(self.0, self.1).as_str())
    }
}

/// `{"opening", "closing"}`.
struct Ends(i128, i128, Currency);

impl Serialize for Ends {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("opening", &Amount(self.0, self.2))?;
        m.serialize_entry("closing", &Amount(self.1, self.2))?;
        m.end()
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("report JSON serializes")
}

/// The figures of SPEC section 4 as entries of an object being written.
fn figure_entries<M: SerializeMap>(m: &mut M, f: &Figures, c: Currency) -> Result<(), M::Error> {
    for (key, value) in figure_pairs(f) {
        m.serialize_entry(key, &Amount(value, c))?;
    }
    Ok(())
}

fn amount(minor_units: i128, currency: Currency) -> String {
    format_minor_units(minor_units, currency)
}

fn add(a: i128, b: i128) -> Result<i128, Overflow> {
    a.checked_add(b).ok_or(Overflow)
}

pub fn granularity_str(g: Granularity) -> &'static str {
    match g {
        Granularity::Month => "month",
        Granularity::Quarter => "quarter",
    }
}

/// Does a contract take part in a report seen at `at`: known at K, granted by D?
fn takes_part(contract: &Contract<'_>, at: &AsOf) -> bool {
    contract.known_at(at.known_at) && contract.granted() <= at.date
}

/// A portfolio report, made of every contract: what one contract adds (`part`, a pure
/// function of the contract, so contracts can be read in parallel) and adding that, in
/// contract order (`absorb`). A contract is read from its summary or its state.
pub trait PortfolioReport {
    type Part: Send;

    /// What `contract` adds (`None` if it takes no part).
    fn part(&self, contract: Contract<'_>) -> Result<Option<Self::Part>, Overflow>;

    /// Adds a contract's part (in contract order).
    ///
    /// # Panics
    /// If the part is another report's, of another point of view: a bug.
    fn absorb(&mut self, part: Self::Part) -> Result<(), Overflow>;

    /// Room for up to `parts` more parts (one per contract), made before they are absorbed.
    fn reserve(&mut self, _parts: usize) {}

    /// Adds a contract (skipped if it takes no part).
    fn add<'c>(&mut self, contract: impl Into<Contract<'c>>) -> Result<(), Overflow>
    where
        Self: Sized,
    {
        match self.part(contract.into())? {
            Some(part) => self.absorb(part),
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rollforward.

struct Movements<'a>(&'a Walk, Currency);

impl Serialize for Movements<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.movements.len()))?;
        for (line, value) in self.0.balance.lines().iter().zip(&self.0.movements) {
            m.serialize_entry(line.as_str(), &Amount(*value, self.1))?;
        }
        m.end()
    }
}

/// One balance: opening, movements by line, closing; the net contract position with its
/// split into deferred revenue and contract asset at each end.
struct WalkOut<'a> {
    walk: &'a Walk,
    rollforward: &'a Rollforward,
    currency: Currency,
}

impl Serialize for WalkOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (w, r, c) = (self.walk, self.rollforward, self.currency);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("opening", &Amount(w.opening, c))?;
        m.serialize_entry("movements", &Movements(w, c))?;
        m.serialize_entry("closing", &Amount(w.closing, c))?;
        if w.balance == Walked::NetContractPosition {
            m.serialize_entry("deferred_revenue", &Ends(r.opening.deferred_revenue, r.closing.deferred_revenue, c))?;
            m.serialize_entry("contract_asset", &Ends(r.opening.contract_asset, r.closing.contract_asset, c))?;
        }
        m.end()
    }
}

/// The four walks as entries keyed by balance.
fn rollforward_entries<M: SerializeMap>(m: &mut M, r: &Rollforward, c: Currency) -> Result<(), M::Error> {
    for walk in &r.walks {
        m.serialize_entry(walk.balance.as_str(), &WalkOut { walk, rollforward: r, currency: c })?;
    }
    Ok(())
}

/// `balance,line,amount` rows of a rollforward, after `prefix`.
fn rollforward_rows(table: &mut Table, prefix: &[String], r: &Rollforward, c: Currency) {
    let mut row = |balance: &str, line: &str, value: i128| {
        let mut cells = prefix.to_vec();
        cells.extend([balance.to_string(), line.to_string(), amount(value, c)]);
        table.push(cells);
    };
    for walk in &r.walks {
        row(walk.balance.as_str(), "opening", walk.opening);
        for (line, value) in walk.balance.lines().iter().zip(&walk.movements) {
            row(walk.balance.as_str(), line.as_str(), *value);
        }
        row(walk.balance.as_str(), "closing", walk.closing);
    }
    row("deferred_revenue", "opening", r.opening.deferred_revenue);
    row("deferred_revenue", "closing", r.closing.deferred_revenue);
    row("contract_asset", "opening", r.opening.contract_asset);
    row("contract_asset", "closing", r.closing.contract_asset);
}

const ROLLFORWARD_ROW_COLUMNS: [&str; 8] = ["contract_id", "currency", "from", "to", "known_at", "balance", "line", "amount"];
const ROLLFORWARD_TOTAL_COLUMNS: [&str; 8] = ["currency", "contracts", "from", "to", "known_at", "balance", "line", "amount"];

/// One contract's rollforward for (A, B].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractRollforward {
    pub contract_id: ContractId,
    pub currency: Currency,
    pub from: AsOf,
    pub to: AsOf,
    pub rollforward: Rollforward,
}

impl Serialize for ContractRollforward {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("contract_id", self.contract_id.as_str())?;
        m.serialize_entry("currency", self.currency.code())?;
        m.serialize_entry("from", &self.from.date.to_string())?;
        m.serialize_entry("to", &self.to.date.to_string())?;
        m.serialize_entry("known_at", &self.to.known_at)?;
        rollforward_entries(&mut m, &self.rollforward, self.currency)?;
        m.end()
    }
}

/// One currency's totals of a portfolio rollforward.
struct RollforwardTotal<'a> {
    currency: Currency,
    contracts: u64,
    rollforward: &'a Rollforward,
}

impl Serialize for RollforwardTotal<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("currency", self.currency.code())?;
        m.serialize_entry("contracts", &self.contracts)?;
        rollforward_entries(&mut m, self.rollforward, self.currency)?;
        m.end()
    }
}

impl Serialize for PortfolioRollforward {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("from", &self.from.date.to_string())?;
        m.serialize_entry("to", &self.to.date.to_string())?;
        m.serialize_entry("known_at", &self.to.known_at)?;
        m.serialize_entry("totals", &self.totals_out())?;
        m.serialize_entry("contracts", &self.contracts)?;
        m.end()
    }
}

impl ContractRollforward {
    /// From the contract's summary or its state.
    pub fn of<'c>(contract: impl Into<Contract<'c>>, from: &AsOf, to: &AsOf) -> Result<ContractRollforward, Overflow> {
        let contract = contract.into();
        Ok(ContractRollforward { contract_id: contract.contract_id().clone(), currency: contract.currency(), from: *from, to: *to, rollforward: contract.rollforward(from, to)? })
    }

    /// `GET /v1/contracts/{id}/rollforward`.
    pub fn json(&self) -> Value {
        to_value(self)
    }

    fn prefix(&self) -> Vec<String> {
        vec![self.contract_id.to_string(), self.currency.to_string(), self.from.date.to_string(), self.to.date.to_string(), self.to.known_at.to_string()]
    }

    /// CSV section `rows`.
    pub fn table(&self, section: &str) -> Option<Table> {
        (section == "rows").then(|| {
            let mut rows = Table::new("rows", &ROLLFORWARD_ROW_COLUMNS);
            rollforward_rows(&mut rows, &self.prefix(), &self.rollforward, self.currency);
            rows
        })
    }
}

/// The portfolio rollforward for (A, B]: every contract granted by B, and totals per currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortfolioRollforward {
    pub from: AsOf,
    pub to: AsOf,
    pub totals: BTreeMap<Currency, (u64, Rollforward)>,
    pub contracts: Vec<ContractRollforward>,
}

impl PortfolioReport for PortfolioRollforward {
    type Part = ContractRollforward;

    fn part(&self, contract: Contract<'_>) -> Result<Option<ContractRollforward>, Overflow> {
        if !takes_part(&contract, &self.to) {
            return Ok(None);
        }
        ContractRollforward::of(contract, &self.from, &self.to).map(Some)
    }

    fn absorb(&mut self, r: ContractRollforward) -> Result<(), Overflow> {
        assert_eq!((r.from, r.to), (self.from, self.to), "a part of this rollforward");
        let (count, total) = self.totals.entry(r.currency).or_insert_with(|| (0, Rollforward::empty()));
        *count += 1;
        total.absorb(&r.rollforward)?;
        self.contracts.push(r);
        Ok(())
    }
}

impl PortfolioRollforward {
    pub fn new(from: AsOf, to: AsOf) -> PortfolioRollforward {
        PortfolioRollforward { from, to, totals: BTreeMap::new(), contracts: vec![] }
    }

    fn totals_out(&self) -> Vec<RollforwardTotal<'_>> {
        self.totals.iter().map(|(c, (count, r))| RollforwardTotal { currency: *c, contracts: *count, rollforward: r }).collect()
    }

    /// Totals per currency, as JSON (also the close preview's).
    pub fn totals_json(&self) -> Value {
        to_value(&self.totals_out())
    }

    /// `GET /v1/portfolio/rollforward`.
    pub fn json(&self) -> Value {
        to_value(self)
    }

    pub fn totals_table(&self) -> Table {
        let mut totals = Table::new("totals", &ROLLFORWARD_TOTAL_COLUMNS);
        for (c, (count, r)) in &self.totals {
            let prefix = [c.to_string(), count.to_string(), self.from.date.to_string(), self.to.date.to_string(), self.to.known_at.to_string()];
            rollforward_rows(&mut totals, &prefix, r, *c);
        }
        totals
    }

    /// CSV sections `rows` (every contract's walks) and `totals` (per currency).
    pub fn table(&self, section: &str) -> Option<Table> {
        match section {
            "rows" => {
                let mut rows = Table::new("rows", &ROLLFORWARD_ROW_COLUMNS);
                for r in &self.contracts {
                    rollforward_rows(&mut rows, &r.prefix(), &r.rollforward, r.currency);
                }
                Some(rows)
            }
            "totals" => Some(self.totals_table()),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// RPO disclosure.

struct YearOut<'a>(&'a Bucket, Currency);

impl Serialize for YearOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("bucket", &self.0.label)?;
        m.serialize_entry("after", &self.0.after.to_string())?;
        m.serialize_entry("through", &self.0.through.to_string())?;
        m.serialize_entry("amount", &Amount(self.0.amount, self.1))?;
        m.end()
    }
}

fn rpo_entries<M: SerializeMap>(m: &mut M, d: &RpoDisclosure, c: Currency) -> Result<(), M::Error> {
    m.serialize_entry("rpo", &Amount(d.rpo, c))?;
    m.serialize_entry("next_12_months", &Amount(d.next_12_months, c))?;
    m.serialize_entry("thereafter", &Amount(d.thereafter, c))?;
    m.serialize_entry("years", &d.years.iter().map(|b| YearOut(b, c)).collect::<Vec<_>>())
}

impl Serialize for ContractRpo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("contract_id", self.contract_id.as_str())?;
        m.serialize_entry("as_of", &self.at.date.to_string())?;
        m.serialize_entry("known_at", &self.at.known_at)?;
        m.serialize_entry("currency", self.currency.code())?;
        rpo_entries(&mut m, &self.disclosure, self.currency)?;
        m.end()
    }
}

struct RpoTotal<'a>(Currency, u64, &'a RpoDisclosure);

impl Serialize for RpoTotal<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("currency", self.0.code())?;
        m.serialize_entry("contracts", &self.1)?;
        rpo_entries(&mut m, self.2, self.0)?;
        m.end()
    }
}

impl Serialize for PortfolioRpo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("as_of", &self.at.date.to_string())?;
        m.serialize_entry("known_at", &self.at.known_at)?;
        m.serialize_entry("totals", &self.totals.iter().map(|(c, (n, d))| RpoTotal(*c, *n, d)).collect::<Vec<_>>())?;
        m.serialize_entry("contracts", &self.contracts)?;
        m.end()
    }
}

fn rpo_rows(table: &mut Table, prefix: &[String], d: &RpoDisclosure, c: Currency) {
    for (i, b) in d.years.iter().enumerate() {
        let mut cells = prefix.to_vec();
        let horizon = if i == 0 { "next_12_months" } else { "thereafter" };
        cells.extend([b.label.clone(), b.after.to_string(), b.through.to_string(), horizon.to_string(), amount(b.amount, c)]);
        table.push(cells);
    }
}

const RPO_ROW_COLUMNS: [&str; 9] = ["contract_id", "currency", "as_of", "known_at", "bucket", "after", "through", "horizon", "amount"];
const RPO_TOTAL_COLUMNS: [&str; 9] = ["currency", "contracts", "as_of", "known_at", "bucket", "after", "through", "horizon", "amount"];

/// The RPO disclosure of one contract at D.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractRpo {
    pub contract_id: ContractId,
    pub currency: Currency,
    pub at: AsOf,
    pub disclosure: RpoDisclosure,
}

impl ContractRpo {
    /// From the contract's summary or its state.
    pub fn of<'c>(contract: impl Into<Contract<'c>>, at: &AsOf) -> Result<ContractRpo, Overflow> {
        let contract = contract.into();
        Ok(ContractRpo { contract_id: contract.contract_id().clone(), currency: contract.currency(), at: *at, disclosure: contract.rpo_disclosure(at)? })
    }

    /// `GET /v1/contracts/{id}/rpo`.
    pub fn json(&self) -> Value {
        to_value(self)
    }

    fn prefix(&self) -> Vec<String> {
        vec![self.contract_id.to_string(), self.currency.to_string(), self.at.date.to_string(), self.at.known_at.to_string()]
    }

    /// CSV section `rows`.
    pub fn table(&self, section: &str) -> Option<Table> {
        (section == "rows").then(|| {
            let mut rows = Table::new("rows", &RPO_ROW_COLUMNS);
            rpo_rows(&mut rows, &self.prefix(), &self.disclosure, self.currency);
            rows
        })
    }
}

/// The portfolio's RPO disclosure at D: every contract granted by D, totals per currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortfolioRpo {
    pub at: AsOf,
    pub totals: BTreeMap<Currency, (u64, RpoDisclosure)>,
    pub contracts: Vec<ContractRpo>,
}

impl PortfolioReport for PortfolioRpo {
    type Part = ContractRpo;

    fn part(&self, contract: Contract<'_>) -> Result<Option<ContractRpo>, Overflow> {
        if !takes_part(&contract, &self.at) {
            return Ok(None);
        }
        ContractRpo::of(contract, &self.at).map(Some)
    }

    fn absorb(&mut self, r: ContractRpo) -> Result<(), Overflow> {
        assert_eq!(r.at, self.at, "a part of this RPO report");
        let empty = || RpoDisclosure { rpo: 0, next_12_months: 0, thereafter: 0, years: vec![] };
        let (count, total) = self.totals.entry(r.currency).or_insert_with(|| (0, empty()));
        *count += 1;
        let d = &r.disclosure;
        total.rpo = add(total.rpo, d.rpo)?;
        total.next_12_months = add(total.next_12_months, d.next_12_months)?;
        total.thereafter = add(total.thereafter, d.thereafter)?;
        // Buckets are anchored on D, so bucket n is the same period for every contract.
        for (i, b) in d.years.iter().enumerate() {
            match total.years.get_mut(i) {
                Some(t) => {
                    t.amount = add(t.amount, b.amount)?;
                    t.through = t.through.max(b.through);
                }
                None => total.years.push(b.clone()),
            }
        }
        self.contracts.push(r);
        Ok(())
    }
}

impl PortfolioRpo {
    pub fn new(at: AsOf) -> PortfolioRpo {
        PortfolioRpo { at, totals: BTreeMap::new(), contracts: vec![] }
    }

    /// `GET /v1/portfolio/rpo`.
    pub fn json(&self) -> Value {
        to_value(self)
    }

    /// CSV sections `rows` and `totals`.
    pub fn table(&self, section: &str) -> Option<Table> {
        match section {
            "rows" => {
                let mut rows = Table::new("rows", &RPO_ROW_COLUMNS);
                for r in &self.contracts {
                    rpo_rows(&mut rows, &r.prefix(), &r.disclosure, r.currency);
                }
                Some(rows)
            }
            "totals" => {
                let mut totals = Table::new("totals", &RPO_TOTAL_COLUMNS);
                for (c, (count, d)) in &self.totals {
                    let prefix = [c.to_string(), count.to_string(), self.at.date.to_string(), self.at.known_at.to_string()];
                    rpo_rows(&mut totals, &prefix, d, *c);
                }
                Some(totals)
            }
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Waterfall.

/// What one contract adds to a waterfall ([`WaterfallBuilder::part`]).
pub struct WaterfallInput {
    contract_id: ContractId,
    currency: Currency,
    rpo: i128,
    remaining_conditional: i128,
    schedule: Schedule,
}

/// One contract's row of the waterfall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaterfallRow {
    pub contract_id: ContractId,
    pub currency: Currency,
    pub rpo: i128,
    pub remaining_conditional: i128,
    /// One amount per column; they add up to `rpo`.
    pub scheduled: Vec<i128>,
}

/// Scheduled recognition per future period as each contract stands at D: feed every
/// contract with `add`, then `finish`.
pub struct WaterfallBuilder {
    at: AsOf,
    granularity: Granularity,
    inputs: Vec<WaterfallInput>,
}

/// The finished waterfall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waterfall {
    pub at: AsOf,
    pub granularity: Granularity,
    pub columns: Vec<Bucket>,
    pub rows: Vec<WaterfallRow>,
    /// Per currency: (contracts, the sum of its rows).
    pub totals: BTreeMap<Currency, (u64, WaterfallRow)>,
}

impl PortfolioReport for WaterfallBuilder {
    type Part = WaterfallInput;

    fn part(&self, contract: Contract<'_>) -> Result<Option<WaterfallInput>, Overflow> {
        if !takes_part(&contract, &self.at) {
            return Ok(None);
        }
        let f = contract.figures(&self.at)?;
        Ok(Some(WaterfallInput {
            contract_id: contract.contract_id().clone(),
            currency: contract.currency(),
            rpo: f.rpo,
            remaining_conditional: f.remaining_conditional,
            schedule: contract.schedule(&self.at)?,
        }))
    }

    fn absorb(&mut self, part: WaterfallInput) -> Result<(), Overflow> {
        self.inputs.push(part);
        Ok(())
    }
}

impl WaterfallBuilder {
    pub fn new(at: AsOf, granularity: Granularity) -> WaterfallBuilder {
        WaterfallBuilder { at, granularity, inputs: vec![] }
    }

    pub fn finish(self) -> Result<Waterfall, Overflow> {
        let last_day = self.inputs.iter().filter_map(|i| i.schedule.last_earning_day()).max();
        let columns = waterfall_columns(self.at.date, last_day, self.granularity);
        let mut rows = Vec::with_capacity(self.inputs.len());
        let mut totals: BTreeMap<Currency, (u64, WaterfallRow)> = BTreeMap::new();
        for input in self.inputs {
            let scheduled = input.schedule.spread(&columns)?;
            let sum = scheduled.iter().try_fold(0i128, |s, v| add(s, *v))?;
            assert_eq!(sum, input.rpo, "{}: the waterfall row adds up to rpo", input.contract_id);
            let row = WaterfallRow { contract_id: input.contract_id, currency: input.currency, rpo: input.rpo, remaining_conditional: input.remaining_conditional, scheduled };
            let (count, total) = totals.entry(row.currency).or_insert_with(|| {
                (0, WaterfallRow { contract_id: row.contract_id.clone(), currency: row.currency, rpo: 0, remaining_conditional: 0, scheduled: vec![0; columns.len()] })
            });
            *count += 1;
            total.rpo = add(total.rpo, row.rpo)?;
            total.remaining_conditional = add(total.remaining_conditional, row.remaining_conditional)?;
            for (t, v) in total.scheduled.iter_mut().zip(&row.scheduled) {
                *t = add(*t, *v)?;
            }
            rows.push(row);
        }
        Ok(Waterfall { at: self.at, granularity: self.granularity, columns, rows, totals })
    }
}

struct Scheduled<'a>(&'a [i128], Currency);

impl Serialize for Scheduled<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|a| Amount(*a, self.1)))
    }
}

/// A row of the waterfall; with `contracts`, a currency's totals.
struct RowOut<'a>(&'a WaterfallRow, Option<u64>);

impl Serialize for RowOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (r, c) = (self.0, self.0.currency);
        let mut m = s.serialize_map(None)?;
        match self.1 {
            None => m.serialize_entry("contract_id", r.contract_id.as_str())?,
            Some(_) => {}
        }
        m.serialize_entry("currency", c.code())?;
        if let Some(n) = self.1 {
            m.serialize_entry("contracts", &n)?;
        }
        m.serialize_entry("rpo", &Amount(r.rpo, c))?;
        m.serialize_entry("remaining_conditional", &Amount(r.remaining_conditional, c))?;
        m.serialize_entry("scheduled", &Scheduled(&r.scheduled, c))?;
        m.end()
    }
}

impl Serialize for Waterfall {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let columns: Vec<Value> =
            self.columns.iter().map(|b| json!({"period": b.label, "after": b.after.to_string(), "through": b.through.to_string()})).collect();
        let mut m = s.serialize_map(Some(6))?;
        m.serialize_entry("as_of", &self.at.date.to_string())?;
        m.serialize_entry("known_at", &self.at.known_at)?;
        m.serialize_entry("granularity", granularity_str(self.granularity))?;
        m.serialize_entry("columns", &columns)?;
        m.serialize_entry("totals", &self.totals.values().map(|(n, t)| RowOut(t, Some(*n))).collect::<Vec<_>>())?;
        m.serialize_entry("rows", &self.rows.iter().map(|r| RowOut(r, None)).collect::<Vec<_>>())?;
        m.end()
    }
}

impl Waterfall {
    /// `GET /v1/portfolio/waterfall`: a column list and, per contract and per currency, one
    /// amount per column.
    pub fn json(&self) -> Value {
        to_value(self)
    }

    /// Sections `rows` (scheduled per contract and period, long form so the columns are
    /// fixed), `totals` (per currency and period) and `contracts` (rpo and remaining
    /// conditional, shown apart).
    pub fn table(&self, section: &str) -> Option<Table> {
        let (d, k) = (self.at.date.to_string(), self.at.known_at.to_string());
        let cells = |first: [String; 2], row: &WaterfallRow, column: &Bucket, value: i128| {
            let [a, b] = first;
            vec![a, b, d.clone(), k.clone(), column.label.clone(), column.after.to_string(), column.through.to_string(), amount(value, row.currency)]
        };
        match section {
            "rows" => {
                let mut rows = Table::new("rows", &["contract_id", "currency", "as_of", "known_at", "period", "after", "through", "scheduled"]);
                for r in &self.rows {
                    for (column, value) in self.columns.iter().zip(&r.scheduled) {
                        rows.push(cells([r.contract_id.to_string(), r.currency.to_string()], r, column, *value));
                    }
                }
                Some(rows)
            }
            "totals" => {
                let mut totals = Table::new("totals", &["currency", "contracts", "as_of", "known_at", "period", "after", "through", "scheduled"]);
                for (c, (count, t)) in &self.totals {
                    for (column, value) in self.columns.iter().zip(&t.scheduled) {
                        totals.push(cells([c.to_string(), count.to_string()], t, column, *value));
                    }
                }
                Some(totals)
            }
            "contracts" => {
                let mut contracts = Table::new("contracts", &["contract_id", "currency", "as_of", "known_at", "rpo", "remaining_conditional"]);
                for r in &self.rows {
                    contracts.push(vec![r.contract_id.to_string(), r.currency.to_string(), d.clone(), k.clone(), amount(r.rpo, r.currency), amount(r.remaining_conditional, r.currency)]);
                }
                Some(contracts)
            }
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Corrections.

/// Every (contract, period) whose recognized revenue differs as known at A and at B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorrectionsReport {
    pub as_of: Date,
    pub from_known_at: u64,
    pub to_known_at: u64,
    pub granularity: Granularity,
    /// Added only by `add`, which keeps `totals` with them.
    rows: Vec<CorrectionRow>,
    /// Per currency: the rows and the sum of their deltas (checked as rows are added).
    totals: BTreeMap<Currency, (u64, i128)>,
    /// When each cause was recorded ([`CorrectionsReport::recorded`]).
    recorded: BTreeMap<u64, Timestamp>,
}

/// One contract's correction of one period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorrectionRow {
    pub contract_id: ContractId,
    pub currency: Currency,
    pub correction: Correction,
    /// `after - before`.
    pub delta: i128,
}

/// The UTC calendar date of a server timestamp.
pub fn utc_date(t: Timestamp) -> Option<Date> {
    Date::parse(t.to_rfc3339().get(..10)?).ok()
}

impl CorrectionsReport {
    pub fn new(as_of: Date, from_known_at: u64, to_known_at: u64, granularity: Granularity) -> CorrectionsReport {
        CorrectionsReport { as_of, from_known_at, to_known_at, granularity, rows: vec![], totals: BTreeMap::new(), recorded: BTreeMap::new() }
    }

    pub fn add(&mut self, state: &ContractState) -> Result<(), Overflow> {
        if !state.known_at(self.to_known_at) {
            return Ok(());
        }
        let currency = state.currency();
        for correction in state.corrections(self.as_of, self.from_known_at, self.to_known_at, self.granularity)? {
            let delta = correction.after.checked_sub(correction.before).ok_or(Overflow)?;
            let total = self.totals.entry(currency).or_default();
            total.0 += 1;
            total.1 = add(total.1, delta)?;
            self.rows.push(CorrectionRow { contract_id: state.contract_id.clone(), currency, correction, delta });
        }
        Ok(())
    }

    /// Every (contract, period) corrected, in contract order.
    pub fn rows(&self) -> &[CorrectionRow] {
        &self.rows
    }

    /// The seqs that caused corrections: the caller looks up when each was recorded and
    /// hands them to [`CorrectionsReport::recorded`].
    pub fn seqs(&self) -> Vec<u64> {
        let mut seqs: Vec<u64> = self.rows.iter().flat_map(|r| r.correction.causes.iter().map(|x| x.seq)).collect();
        seqs.sort_unstable();
        seqs.dedup();
        seqs
    }

    /// When each of [`CorrectionsReport::seqs`] was recorded (its `recorded_at`): the
    /// periods corrections were posted in.
    pub fn recorded(&mut self, recorded: BTreeMap<u64, Timestamp>) {
        self.recorded = recorded;
    }

    /// The period a correction was posted in: the one holding the UTC date its last cause
    /// was recorded.
    fn posted_in(&self, seq: u64) -> Option<String> {
        self.recorded.get(&seq).copied().and_then(utc_date).map(|d| self.granularity.period_of(d).to_string())
    }

    /// `GET /v1/corrections`, as a `Value` (the HTTP API serializes the report itself).
    pub fn json(&self) -> Value {
        to_value(self)
    }

    /// CSV sections `rows` and `totals`.
    pub fn table(&self, section: &str) -> Option<Table> {
        let pov = [self.as_of.to_string(), self.from_known_at.to_string(), self.to_known_at.to_string()];
        match section {
            "rows" => {
                let mut rows = Table::new(
                    "rows",
                    &["contract_id", "currency", "as_of", "from_known_at", "to_known_at", "period", "period_end", "posted_in", "before", "after", "delta", "seqs"],
                );
                for r in &self.rows {
                    let (x, c) = (&r.correction, r.currency);
                    let seqs: Vec<String> = x.causes.iter().map(|c| c.seq.to_string()).collect();
                    let mut cells = vec![r.contract_id.to_string(), c.to_string()];
                    cells.extend(pov.iter().cloned());
                    cells.extend([
                        x.period.to_string(),
                        x.period_end.to_string(),
                        x.causes.last().and_then(|l| self.posted_in(l.seq)).unwrap_or_default(),
                        amount(x.before, c),
                        amount(x.after, c),
                        amount(r.delta, c),
                        seqs.join(" "),
                    ]);
                    rows.push(cells);
                }
                Some(rows)
            }
            "totals" => {
                let mut totals = Table::new("totals", &["currency", "as_of", "from_known_at", "to_known_at", "corrections", "delta"]);
                for (c, (n, delta)) in &self.totals {
                    let mut cells = vec![c.to_string()];
                    cells.extend(pov.iter().cloned());
                    cells.extend([n.to_string(), amount(*delta, *c)]);
                    totals.push(cells);
                }
                Some(totals)
            }
            _ => None,
        }
    }
}

/// One row of the corrections' JSON.
struct CorrectionOut<'a>(&'a CorrectionsReport, &'a CorrectionRow);

impl Serialize for CorrectionOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (report, r) = (self.0, self.1);
        let (x, c) = (&r.correction, r.currency);
        let mut m = s.serialize_map(Some(9))?;
        m.serialize_entry("contract_id", r.contract_id.as_str())?;
        m.serialize_entry("currency", c.code())?;
        m.serialize_entry("period", &x.period)?;
        m.serialize_entry("period_end", &x.period_end.to_string())?;
        m.serialize_entry("before", &Amount(x.before, c))?;
        m.serialize_entry("after", &Amount(x.after, c))?;
        m.serialize_entry("delta", &Amount(r.delta, c))?;
        m.serialize_entry("posted_in", &x.causes.last().and_then(|l| report.posted_in(l.seq)))?;
        m.serialize_entry("caused_by", &x.causes.iter().map(|cause| CauseOut(report, cause)).collect::<Vec<_>>())?;
        m.end()
    }
}

struct CauseOut<'a>(&'a CorrectionsReport, &'a Cause);

impl Serialize for CauseOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (report, cause) = (self.0, self.1);
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("seq", &cause.seq)?;
        m.serialize_entry("type", cause.kind.as_str())?;
        m.serialize_entry("effective_date", &cause.effective_date.to_string())?;
        m.serialize_entry("recorded_at", &report.recorded.get(&cause.seq).map(|t| t.to_rfc3339()))?;
        m.serialize_entry("posted_in", &report.posted_in(cause.seq))?;
        m.end()
    }
}

struct CorrectionTotal(Currency, u64, i128);

impl Serialize for CorrectionTotal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("currency", self.0.code())?;
        m.serialize_entry("corrections", &self.1)?;
        m.serialize_entry("delta", &Amount(self.2, self.0))?;
        m.end()
    }
}

impl Serialize for CorrectionsReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(6))?;
        m.serialize_entry("as_of", &self.as_of.to_string())?;
        m.serialize_entry("from_known_at", &self.from_known_at)?;
        m.serialize_entry("to_known_at", &self.to_known_at)?;
        m.serialize_entry("granularity", granularity_str(self.granularity))?;
        m.serialize_entry("totals", &self.totals.iter().map(|(c, (n, delta))| CorrectionTotal(*c, *n, *delta)).collect::<Vec<_>>())?;
        m.serialize_entry("corrections", &self.rows.iter().map(|r| CorrectionOut(self, r)).collect::<Vec<_>>())?;
        m.end()
    }
}

// ---------------------------------------------------------------------------------------
// Contract revenue and portfolio totals with periods.

fn figure_cells(f: &Figures, c: Currency) -> Vec<String> {
    figures_fields(f, c).into_iter().map(|(_, v)| v.as_str().unwrap_or_default().to_string()).collect()
}

fn columns_with_figures(first: &[&'static str]) -> Vec<&'static str> {
    first.iter().copied().chain(figure_pairs(&Figures::default()).map(|(name, _)| name)).collect()
}

/// CSV of `GET /v1/contracts/{id}/revenue`: section `rows` = periods, `figures` = the totals.
pub fn revenue_table<'a>(contract: impl Into<Contract<'a>>, at: &AsOf, granularity: Granularity, section: &str) -> Result<Option<Table>, Overflow> {
    let contract = contract.into();
    let c = contract.currency();
    let pov = [contract.contract_id().to_string(), c.to_string(), at.date.to_string(), at.known_at.to_string()];
    Ok(match section {
        "rows" => {
            let mut rows = Table::new("rows", &["contract_id", "currency", "as_of", "known_at", "period", "period_end", "recognized"]);
            for p in contract.periods(at, granularity)? {
                let mut cells = pov.to_vec();
                cells.extend([p.period.to_string(), p.end.to_string(), amount(p.recognized, c)]);
                rows.push(cells);
            }
            Some(rows)
        }
        "figures" => {
            let mut figures = Table::new("figures", &columns_with_figures(&["contract_id", "currency", "as_of", "known_at"]));
            let mut cells = pov.to_vec();
            cells.extend(figure_cells(&contract.figures(at)?, c));
            figures.push(cells);
            Some(figures)
        }
        _ => None,
    })
}

/// One contract's share of a [`PortfolioRevenue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractPart {
    pub contract_id: ContractId,
    pub currency: Currency,
    pub figures: Figures,
    /// Revenue per period (`None`: the contract has no periods yet). Private: a part is
    /// made by [`PortfolioRevenue::part`] only, so its periods end on its report's as-of
    /// date's.
    pub(crate) periods: Option<PeriodRun>,
}

/// `GET /v1/portfolio`: totals per currency with revenue per period, and every contract's
/// figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortfolioRevenue {
    pub at: AsOf,
    pub granularity: Granularity,
    pub portfolio: Portfolio,
    pub contracts: Vec<(ContractId, Currency, Figures)>,
    /// Per currency, the revenue of each period (their ends follow from `at`).
    pub periods: BTreeMap<Currency, PeriodTotals>,
}

struct PeriodOut(Period, Date, i128, Currency);

impl Serialize for PeriodOut {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("period", &self.0)?;
        m.serialize_entry("period_end", &self.1.to_string())?;
        m.serialize_entry("recognized", &Amount(self.2, self.3))?;
        m.end()
    }
}

/// A currency's totals with its periods, or (no periods) one contract's figures.
struct FiguresOut<'a> {
    contract_id: Option<&'a ContractId>,
    currency: Currency,
    contracts: Option<u64>,
    figures: &'a Figures,
    periods: Option<(&'a PeriodTotals, Date)>,
}

impl Serialize for FiguresOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.currency;
        let mut m = s.serialize_map(None)?;
        if let Some(id) = self.contract_id {
            m.serialize_entry("contract_id", id.as_str())?;
        }
        m.serialize_entry("currency", c.code())?;
        if let Some(n) = self.contracts {
            m.serialize_entry("contracts", &n)?;
        }
        figure_entries(&mut m, self.figures, c)?;
        if let Some((periods, as_of)) = self.periods {
            m.serialize_entry("periods", &periods.iter(as_of).map(|(label, end, r)| PeriodOut(label, end, r, c)).collect::<Vec<_>>())?;
        }
        m.end()
    }
}

impl Serialize for PortfolioRevenue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PortfolioDocument { report: self, contracts: &self.contracts }.serialize(s)
    }
}

/// The JSON of a [`PortfolioRevenue`] with the given contracts' rows (all of them, or none
/// for [`PortfolioRevenue::json_head`]).
struct PortfolioDocument<'a> {
    report: &'a PortfolioRevenue,
    contracts: &'a [(ContractId, Currency, Figures)],
}

impl Serialize for PortfolioDocument<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let report = self.report;
        let empty = PeriodTotals::default();
        let totals: Vec<FiguresOut> = report
            .portfolio
            .totals
            .iter()
            .map(|(c, t)| FiguresOut { contract_id: None, currency: *c, contracts: Some(t.contracts), figures: &t.figures, periods: Some((report.periods.get(c).unwrap_or(&empty), report.at.date)) })
            .collect();
        let contracts: Vec<FiguresOut> = self.contracts.iter().map(row).collect();
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("as_of", &report.at.date.to_string())?;
        m.serialize_entry("known_at", &report.at.known_at)?;
        m.serialize_entry("granularity", granularity_str(report.granularity))?;
        m.serialize_entry("totals", &totals)?;
        // Last, so that the rows can be written apart (`json_head`, `write_rows`).
        m.serialize_entry("contracts", &contracts)?;
        m.end()
    }
}

/// A contract's row of the portfolio.
fn row((id, currency, figures): &(ContractId, Currency, Figures)) -> FiguresOut<'_> {
    FiguresOut { contract_id: Some(id), currency: *currency, contracts: None, figures, periods: None }
}

impl PortfolioReport for PortfolioRevenue {
    type Part = ContractPart;

    fn reserve(&mut self, parts: usize) {
        self.contracts.reserve_exact(parts);
    }

    fn part(&self, contract: Contract<'_>) -> Result<Option<ContractPart>, Overflow> {
        let (at, granularity) = (&self.at, self.granularity);
        if !contract.known_at(at.known_at) {
            return Ok(None);
        }
        Ok(Some(ContractPart {
            contract_id: contract.contract_id().clone(),
            currency: contract.currency(),
            figures: contract.figures(at)?,
            periods: contract.period_run(at, granularity)?,
        }))
    }

    fn absorb(&mut self, part: ContractPart) -> Result<(), Overflow> {
        let ContractPart { contract_id, currency, figures: f, periods: contract_periods } = part;
        self.portfolio.add_figures(currency, &f)?;
        self.contracts.push((contract_id, currency, f));
        match contract_periods {
            Some(run) => self.periods.entry(currency).or_default().add(&run),
            None => Ok(()),
        }
    }
}

impl PortfolioRevenue {
    pub fn new(at: AsOf, granularity: Granularity) -> PortfolioRevenue {
        PortfolioRevenue { at, granularity, portfolio: Portfolio::default(), contracts: vec![], periods: BTreeMap::new() }
    }

    /// `GET /v1/portfolio`.
    pub fn json(&self) -> Value {
        to_value(self)
    }

    /// The report's JSON in pieces, so that the contracts' rows (nearly all of its bytes)
    /// can be written on several threads: this head (up to the opening of the `contracts`
    /// array), then the rows of consecutive ranges ([`PortfolioRevenue::write_rows`])
    /// joined by commas, then [`PortfolioRevenue::JSON_TAIL`]. Together, byte for byte, the
    /// report's `Serialize` (tested).
    pub fn json_head(&self) -> Vec<u8> {
        let mut head = serde_json::to_vec(&PortfolioDocument { report: self, contracts: &[] }).expect("report JSON serializes");
        assert!(head.ends_with(b"[]}"), "the contracts' array closes the document");
        head.truncate(head.len() - Self::JSON_TAIL.len());
        head
    }

    /// What closes the JSON after the rows ([`PortfolioRevenue::json_head`]).
    pub const JSON_TAIL: &'static [u8] = b"]}";

    /// The JSON rows of the contracts in `range` (of those in the report), separated by
    /// commas, appended to `out`.
    ///
    /// Written directly, byte for byte as [`row`]'s `Serialize` (tested), without serde's
    /// scan for characters to escape: there are none. A contract id is `A-Z a-z 0-9 _ -`, a
    /// currency code three letters, an amount digits, a point and a sign, and the keys are
    /// [`figure_pairs`]'. The portfolio's JSON is nearly all rows, about 3.4 MB at 10,000
    /// contracts, and the scan took a third of the time to write them.
    pub fn write_rows(&self, range: std::ops::Range<usize>, out: &mut Vec<u8>) {
        for (i, (id, currency, figures)) in self.contracts[range].iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"contract_id\":\"");
            out.extend_from_slice(id.as_str().as_bytes());
            out.extend_from_slice(b"\",\"currency\":\"");
            out.extend_from_slice(currency.code().as_bytes());
            out.push(b'"');
            for (key, value) in figure_pairs(figures) {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"\":\"");
                out.extend_from_slice(DecimalText::of(value, *currency).as_bytes());
                out.push(b'"');
            }
            out.push(b'}');
        }
    }

    /// Sections `rows` (contracts' figures), `totals` (per currency) and `periods` (revenue
    /// per currency and period).
    pub fn table(&self, section: &str) -> Option<Table> {
        let (d, k) = (self.at.date.to_string(), self.at.known_at.to_string());
        match section {
            "rows" => {
                let mut rows = Table::new("rows", &columns_with_figures(&["contract_id", "currency", "as_of", "known_at"]));
                for (id, c, f) in &self.contracts {
                    let mut cells = vec![id.to_string(), c.to_string(), d.clone(), k.clone()];
                    cells.extend(figure_cells(f, *c));
                    rows.push(cells);
                }
                Some(rows)
            }
            "totals" => {
                let mut totals = Table::new("totals", &columns_with_figures(&["currency", "contracts", "as_of", "known_at"]));
                for (c, t) in &self.portfolio.totals {
                    let mut cells = vec![c.to_string(), t.contracts.to_string(), d.clone(), k.clone()];
                    cells.extend(figure_cells(&t.figures, *c));
                    totals.push(cells);
                }
                Some(totals)
            }
            "periods" => {
                let mut periods = Table::new("periods", &["currency", "as_of", "known_at", "period", "period_end", "recognized"]);
                for (c, by_period) in &self.periods {
                    for (label, end, r) in by_period.iter(self.at.date) {
                        periods.push(vec![c.to_string(), d.clone(), k.clone(), label.to_string(), end.to_string(), amount(r, *c)]);
                    }
                }
                Some(periods)
            }
            _ => None,
        }
    }
}

/// The line names of every balance, for documentation and clients.
pub fn rollforward_lines() -> Vec<(&'static str, Vec<&'static str>)> {
    Walked::ALL.iter().map(|b| (b.as_str(), b.lines().iter().map(|l: &Line| l.as_str()).collect())).collect()
}
