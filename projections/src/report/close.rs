//! The finance close reports as JSON and CSV tables, per contract and per currency for the
//! portfolio (never summed across currencies). Each report is built by feeding it every
//! contract (`add`), then read as JSON (`json`) or as CSV sections (`tables`): the HTTP API
//! and `cledger report` call exactly these, so they print the same shapes.

use super::{figures_fields, money, Table};
use crate::close::{waterfall_columns, Bucket, Correction, Line, Rollforward, RpoDisclosure, Schedule, Walk, Walked};
use crate::figures::{Figures, Overflow};
use crate::state::{AsOf, ContractState};
use crate::view::{Granularity, Portfolio};
use events::{format_minor_units, ContractId, Currency, Date, Timestamp};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

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
fn takes_part(state: &ContractState, at: &AsOf) -> bool {
    state.known_at(at.known_at) && state.grant.origin.date <= at.date
}

// ---------------------------------------------------------------------------------------
// Rollforward.

fn walk_json(w: &Walk, c: Currency) -> Map<String, Value> {
    let mut movements = Map::new();
    for (line, value) in w.balance.lines().iter().zip(&w.movements) {
        movements.insert(line.as_str().into(), money(*value, c));
    }
    let mut m = Map::new();
    m.insert("opening".into(), money(w.opening, c));
    m.insert("movements".into(), Value::Object(movements));
    m.insert("closing".into(), money(w.closing, c));
    m
}

/// The four walks, keyed by balance; the net contract position with its split into
/// deferred revenue and contract asset at each end.
fn rollforward_fields(r: &Rollforward, c: Currency) -> Map<String, Value> {
    let mut m = Map::new();
    for walk in &r.walks {
        let mut w = walk_json(walk, c);
        if walk.balance == Walked::NetContractPosition {
            w.insert("deferred_revenue".into(), json!({"opening": money(r.opening.deferred_revenue, c), "closing": money(r.closing.deferred_revenue, c)}));
            w.insert("contract_asset".into(), json!({"opening": money(r.opening.contract_asset, c), "closing": money(r.closing.contract_asset, c)}));
        }
        m.insert(walk.balance.as_str().into(), Value::Object(w));
    }
    m
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

impl ContractRollforward {
    pub fn of(state: &ContractState, from: &AsOf, to: &AsOf) -> Result<ContractRollforward, Overflow> {
        Ok(ContractRollforward { contract_id: state.contract_id.clone(), currency: state.currency(), from: *from, to: *to, rollforward: state.rollforward(from, to)? })
    }

    /// `GET /v1/contracts/{id}/rollforward`.
    pub fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert("contract_id".into(), json!(self.contract_id.as_str()));
        m.insert("currency".into(), json!(self.currency.code()));
        m.insert("from".into(), json!(self.from.date.to_string()));
        m.insert("to".into(), json!(self.to.date.to_string()));
        m.insert("known_at".into(), json!(self.to.known_at));
        m.extend(rollforward_fields(&self.rollforward, self.currency));
        Value::Object(m)
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

impl PortfolioRollforward {
    pub fn new(from: AsOf, to: AsOf) -> PortfolioRollforward {
        PortfolioRollforward { from, to, totals: BTreeMap::new(), contracts: vec![] }
    }

    pub fn add(&mut self, state: &ContractState) -> Result<(), Overflow> {
        if !takes_part(state, &self.to) {
            return Ok(());
        }
        let r = ContractRollforward::of(state, &self.from, &self.to)?;
        let (count, total) = self.totals.entry(r.currency).or_insert_with(|| (0, Rollforward::empty()));
        *count += 1;
        total.absorb(&r.rollforward)?;
        self.contracts.push(r);
        Ok(())
    }

    /// Totals per currency, as JSON objects (also the close preview's).
    pub fn totals_json(&self) -> Vec<Value> {
        self.totals
            .iter()
            .map(|(c, (count, r))| {
                let mut m = Map::new();
                m.insert("currency".into(), json!(c.code()));
                m.insert("contracts".into(), json!(count));
                m.extend(rollforward_fields(r, *c));
                Value::Object(m)
            })
            .collect()
    }

    /// `GET /v1/portfolio/rollforward`.
    pub fn json(&self) -> Value {
        json!({
            "from": self.from.date.to_string(),
            "to": self.to.date.to_string(),
            "known_at": self.to.known_at,
            "totals": self.totals_json(),
            "contracts": self.contracts.iter().map(ContractRollforward::json).collect::<Vec<_>>(),
        })
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

fn years_json(years: &[Bucket], c: Currency) -> Vec<Value> {
    years
        .iter()
        .map(|b| json!({"bucket": b.label, "after": b.after.to_string(), "through": b.through.to_string(), "amount": money(b.amount, c)}))
        .collect()
}

fn rpo_fields(d: &RpoDisclosure, c: Currency) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("rpo".into(), money(d.rpo, c));
    m.insert("next_12_months".into(), money(d.next_12_months, c));
    m.insert("thereafter".into(), money(d.thereafter, c));
    m.insert("years".into(), Value::Array(years_json(&d.years, c)));
    m
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
    pub fn of(state: &ContractState, at: &AsOf) -> Result<ContractRpo, Overflow> {
        Ok(ContractRpo { contract_id: state.contract_id.clone(), currency: state.currency(), at: *at, disclosure: state.rpo_disclosure(at)? })
    }

    /// `GET /v1/contracts/{id}/rpo`.
    pub fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert("contract_id".into(), json!(self.contract_id.as_str()));
        m.insert("as_of".into(), json!(self.at.date.to_string()));
        m.insert("known_at".into(), json!(self.at.known_at));
        m.insert("currency".into(), json!(self.currency.code()));
        m.extend(rpo_fields(&self.disclosure, self.currency));
        Value::Object(m)
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

impl PortfolioRpo {
    pub fn new(at: AsOf) -> PortfolioRpo {
        PortfolioRpo { at, totals: BTreeMap::new(), contracts: vec![] }
    }

    pub fn add(&mut self, state: &ContractState) -> Result<(), Overflow> {
        if !takes_part(state, &self.at) {
            return Ok(());
        }
        let r = ContractRpo::of(state, &self.at)?;
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

    /// `GET /v1/portfolio/rpo`.
    pub fn json(&self) -> Value {
        let totals: Vec<Value> = self
            .totals
            .iter()
            .map(|(c, (count, d))| {
                let mut m = Map::new();
                m.insert("currency".into(), json!(c.code()));
                m.insert("contracts".into(), json!(count));
                m.extend(rpo_fields(d, *c));
                Value::Object(m)
            })
            .collect();
        json!({
            "as_of": self.at.date.to_string(),
            "known_at": self.at.known_at,
            "totals": totals,
            "contracts": self.contracts.iter().map(ContractRpo::json).collect::<Vec<_>>(),
        })
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

struct WaterfallInput {
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

impl WaterfallBuilder {
    pub fn new(at: AsOf, granularity: Granularity) -> WaterfallBuilder {
        WaterfallBuilder { at, granularity, inputs: vec![] }
    }

    pub fn add(&mut self, state: &ContractState) -> Result<(), Overflow> {
        if !takes_part(state, &self.at) {
            return Ok(());
        }
        let f = state.figures(&self.at)?;
        self.inputs.push(WaterfallInput {
            contract_id: state.contract_id.clone(),
            currency: state.currency(),
            rpo: f.rpo,
            remaining_conditional: f.remaining_conditional,
            schedule: state.schedule(&self.at)?,
        });
        Ok(())
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

impl Waterfall {
    /// `GET /v1/portfolio/waterfall`: a column list and, per contract and per currency, one
    /// amount per column.
    pub fn json(&self) -> Value {
        let scheduled = |v: &[i128], c: Currency| v.iter().map(|a| money(*a, c)).collect::<Vec<_>>();
        json!({
            "as_of": self.at.date.to_string(),
            "known_at": self.at.known_at,
            "granularity": granularity_str(self.granularity),
            "columns": self.columns.iter().map(|b| json!({"period": b.label, "after": b.after.to_string(), "through": b.through.to_string()})).collect::<Vec<_>>(),
            "totals": self.totals.iter().map(|(c, (count, t))| json!({
                "currency": c.code(), "contracts": count, "rpo": money(t.rpo, *c),
                "remaining_conditional": money(t.remaining_conditional, *c), "scheduled": scheduled(&t.scheduled, *c),
            })).collect::<Vec<_>>(),
            "rows": self.rows.iter().map(|r| json!({
                "contract_id": r.contract_id.as_str(), "currency": r.currency.code(), "rpo": money(r.rpo, r.currency),
                "remaining_conditional": money(r.remaining_conditional, r.currency), "scheduled": scheduled(&r.scheduled, r.currency),
            })).collect::<Vec<_>>(),
        })
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
    pub rows: Vec<(ContractId, Currency, Correction)>,
}

/// The UTC calendar date of a server timestamp.
pub fn utc_date(t: Timestamp) -> Option<Date> {
    Date::parse(t.to_rfc3339().get(..10)?).ok()
}

impl CorrectionsReport {
    pub fn new(as_of: Date, from_known_at: u64, to_known_at: u64, granularity: Granularity) -> CorrectionsReport {
        CorrectionsReport { as_of, from_known_at, to_known_at, granularity, rows: vec![] }
    }

    pub fn add(&mut self, state: &ContractState) -> Result<(), Overflow> {
        if !state.known_at(self.to_known_at) {
            return Ok(());
        }
        for c in state.corrections(self.as_of, self.from_known_at, self.to_known_at, self.granularity)? {
            self.rows.push((state.contract_id.clone(), state.currency(), c));
        }
        Ok(())
    }

    /// The seqs that caused corrections: the caller looks up when each was recorded.
    pub fn seqs(&self) -> Vec<u64> {
        let mut seqs: Vec<u64> = self.rows.iter().flat_map(|(_, _, c)| c.causes.iter().map(|x| x.seq)).collect();
        seqs.sort_unstable();
        seqs.dedup();
        seqs
    }

    /// The period a correction was posted in: the one holding the UTC date its last cause
    /// was recorded.
    fn posted_in(&self, seq: u64, recorded: &BTreeMap<u64, Timestamp>) -> Option<String> {
        recorded.get(&seq).copied().and_then(utc_date).map(|d| self.granularity.period_of(d).0)
    }

    /// `GET /v1/corrections`; `recorded` maps each of [`CorrectionsReport::seqs`] to its
    /// `recorded_at`.
    pub fn json(&self, recorded: &BTreeMap<u64, Timestamp>) -> Value {
        let mut totals: BTreeMap<Currency, (u64, i128)> = BTreeMap::new();
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|(id, c, x)| {
                let delta = x.after - x.before;
                let t = totals.entry(*c).or_default();
                t.0 += 1;
                t.1 = t.1.saturating_add(delta);
                json!({
                    "contract_id": id.as_str(),
                    "currency": c.code(),
                    "period": x.period,
                    "period_end": x.period_end.to_string(),
                    "before": money(x.before, *c),
                    "after": money(x.after, *c),
                    "delta": money(delta, *c),
                    "posted_in": x.causes.last().and_then(|l| self.posted_in(l.seq, recorded)),
                    "caused_by": x.causes.iter().map(|cause| json!({
                        "seq": cause.seq,
                        "type": cause.kind.as_str(),
                        "effective_date": cause.effective_date.to_string(),
                        "recorded_at": recorded.get(&cause.seq).map(|t| t.to_rfc3339()),
                        "posted_in": self.posted_in(cause.seq, recorded),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "as_of": self.as_of.to_string(),
            "from_known_at": self.from_known_at,
            "to_known_at": self.to_known_at,
            "granularity": granularity_str(self.granularity),
            "totals": totals.iter().map(|(c, (n, delta))| json!({"currency": c.code(), "corrections": n, "delta": money(*delta, *c)})).collect::<Vec<_>>(),
            "corrections": rows,
        })
    }

    /// CSV sections `rows` and `totals`.
    pub fn table(&self, section: &str, recorded: &BTreeMap<u64, Timestamp>) -> Option<Table> {
        let pov = [self.as_of.to_string(), self.from_known_at.to_string(), self.to_known_at.to_string()];
        let mut rows = Table::new(
            "rows",
            &["contract_id", "currency", "as_of", "from_known_at", "to_known_at", "period", "period_end", "posted_in", "before", "after", "delta", "seqs"],
        );
        let mut totals: BTreeMap<Currency, (u64, i128)> = BTreeMap::new();
        for (id, c, x) in &self.rows {
            let delta = x.after - x.before;
            let t = totals.entry(*c).or_default();
            t.0 += 1;
            t.1 = t.1.saturating_add(delta);
            let seqs: Vec<String> = x.causes.iter().map(|c| c.seq.to_string()).collect();
            let mut cells = vec![id.to_string(), c.to_string()];
            cells.extend(pov.iter().cloned());
            cells.extend([
                x.period.clone(),
                x.period_end.to_string(),
                x.causes.last().and_then(|l| self.posted_in(l.seq, recorded)).unwrap_or_default(),
                amount(x.before, *c),
                amount(x.after, *c),
                amount(delta, *c),
                seqs.join(" "),
            ]);
            rows.push(cells);
        }
        let mut total_table = Table::new("totals", &["currency", "as_of", "from_known_at", "to_known_at", "corrections", "delta"]);
        for (c, (n, delta)) in totals {
            let mut cells = vec![c.to_string()];
            cells.extend(pov.iter().cloned());
            cells.extend([n.to_string(), amount(delta, c)]);
            total_table.push(cells);
        }
        match section {
            "rows" => Some(rows),
            "totals" => Some(total_table),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Contract revenue and portfolio totals with periods.

const FIGURE_COLUMNS: [&str; 12] = [
    "headline",
    "transaction_price",
    "recognized",
    "rpo",
    "remaining_conditional",
    "forfeited",
    "cancelled",
    "billed",
    "collected",
    "receivable",
    "deferred_revenue",
    "contract_asset",
];

fn figure_cells(f: &Figures, c: Currency) -> Vec<String> {
    figures_fields(f, c).into_iter().map(|(_, v)| v.as_str().unwrap_or_default().to_string()).collect()
}

fn columns_with_figures(first: &[&'static str]) -> Vec<&'static str> {
    first.iter().copied().chain(FIGURE_COLUMNS).collect()
}

/// CSV of `GET /v1/contracts/{id}/revenue`: section `rows` = periods, `figures` = the totals.
pub fn revenue_table(state: &ContractState, at: &AsOf, granularity: Granularity, section: &str) -> Result<Option<Table>, Overflow> {
    let c = state.currency();
    let pov = [state.contract_id.to_string(), c.to_string(), at.date.to_string(), at.known_at.to_string()];
    Ok(match section {
        "rows" => {
            let mut rows = Table::new("rows", &["contract_id", "currency", "as_of", "known_at", "period", "period_end", "recognized"]);
            for p in state.periods(at, granularity)? {
                let mut cells = pov.to_vec();
                cells.extend([p.period, p.end.to_string(), amount(p.recognized, c)]);
                rows.push(cells);
            }
            Some(rows)
        }
        "figures" => {
            let mut figures = Table::new("figures", &columns_with_figures(&["contract_id", "currency", "as_of", "known_at"]));
            let mut cells = pov.to_vec();
            cells.extend(figure_cells(&state.figures(at)?, c));
            figures.push(cells);
            Some(figures)
        }
        _ => None,
    })
}

/// `GET /v1/portfolio`: totals per currency with revenue per period, and every contract's
/// figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortfolioRevenue {
    pub at: AsOf,
    pub granularity: Granularity,
    pub portfolio: Portfolio,
    pub contracts: Vec<(ContractId, Currency, Figures)>,
    /// Per currency, per period label: (period end, recognized).
    pub periods: BTreeMap<Currency, BTreeMap<String, (Date, i128)>>,
}

impl PortfolioRevenue {
    pub fn new(at: AsOf, granularity: Granularity) -> PortfolioRevenue {
        PortfolioRevenue { at, granularity, portfolio: Portfolio::default(), contracts: vec![], periods: BTreeMap::new() }
    }

    pub fn add(&mut self, state: &ContractState) -> Result<(), Overflow> {
        let Some(f) = self.portfolio.add(state, &self.at)? else { return Ok(()) };
        self.contracts.push((state.contract_id.clone(), state.currency(), f));
        let periods = self.periods.entry(state.currency()).or_default();
        for p in state.periods(&self.at, self.granularity)? {
            let entry = periods.entry(p.period).or_insert((p.end, 0));
            entry.0 = entry.0.max(p.end);
            entry.1 = add(entry.1, p.recognized)?;
        }
        Ok(())
    }

    pub fn json(&self) -> Value {
        let totals: Vec<Value> = self
            .portfolio
            .totals
            .iter()
            .map(|(c, t)| {
                let mut m = Map::new();
                m.insert("currency".into(), json!(c.code()));
                m.insert("contracts".into(), json!(t.contracts));
                m.extend(figures_fields(&t.figures, *c));
                let periods: Vec<Value> = self
                    .periods
                    .get(c)
                    .into_iter()
                    .flatten()
                    .map(|(label, (end, r))| json!({"period": label, "period_end": end.to_string(), "recognized": money(*r, *c)}))
                    .collect();
                m.insert("periods".into(), Value::Array(periods));
                Value::Object(m)
            })
            .collect();
        let contracts: Vec<Value> = self
            .contracts
            .iter()
            .map(|(id, c, f)| {
                let mut m = Map::new();
                m.insert("contract_id".into(), json!(id.as_str()));
                m.insert("currency".into(), json!(c.code()));
                m.extend(figures_fields(f, *c));
                Value::Object(m)
            })
            .collect();
        json!({
            "as_of": self.at.date.to_string(),
            "known_at": self.at.known_at,
            "granularity": granularity_str(self.granularity),
            "totals": totals,
            "contracts": contracts,
        })
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
                    for (label, (end, r)) in by_period {
                        periods.push(vec![c.to_string(), d.clone(), k.clone(), label.clone(), end.to_string(), amount(*r, *c)]);
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
