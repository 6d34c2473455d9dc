//! Every finance report, one code path for HTTP and the command line: a report is named by
//! its [`Kind`] (and a contract, for per-contract reports) and asked for with the query
//! parameters of its HTTP route. `cledger report --data` parses its flags into those same
//! parameters and calls [`render`] on the ledger; `cledger report --url` sends them to the
//! server, whose handler calls [`render`] too. So there is one JSON and one CSV shape per
//! report, built by `projections::report`.

use crate::server::params::Params;
use crate::server::ApiError;
use axum::http::StatusCode;
use events::{ContractId, Date, EventBody, Stream, Timestamp};
use ledger::Ledger;
use projections::report::{
    revenue_json, revenue_table, ContractRollforward, ContractRpo, CorrectionsReport, PortfolioReport, PortfolioRevenue,
    PortfolioRollforward, PortfolioRpo, Table, WaterfallBuilder,
};
use projections::{AsOf, ContractState, Granularity, Overflow};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Most open months a close preview walks month by month (the whole window is always walked).
pub const PREVIEW_MONTHS_MAX: usize = 120;
/// Period closes read per page.
const CLOSES_PAGE: usize = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Revenue figures and periods of a contract; of the portfolio, totals and periods per
    /// currency and every contract's figures.
    Revenue,
    /// Opening balances at --from, movements, closing balances at --to.
    Rollforward,
    /// RPO split into the next 12 months, thereafter, and yearly buckets.
    Rpo,
    /// Scheduled recognition per future period, per contract (portfolio only).
    Waterfall,
    /// Periods whose revenue differs between --from-known-at and --to-known-at.
    Corrections,
    /// Every period close (period end, seq, actor, time).
    Closes,
    /// What closing --period-end would freeze, and what blocks it.
    ClosePreview,
}

/// Query parameters every report takes besides its own.
const OUTPUT_PARAMS: [&str; 2] = ["format", "section"];

impl Kind {
    /// The HTTP path of this report.
    pub fn path(self, contract: Option<&ContractId>) -> Result<String, String> {
        Ok(match (self, contract) {
            (Kind::Revenue, Some(id)) => format!("/v1/contracts/{id}/revenue"),
            (Kind::Revenue, None) => "/v1/portfolio".into(),
            (Kind::Rollforward, Some(id)) => format!("/v1/contracts/{id}/rollforward"),
            (Kind::Rollforward, None) => "/v1/portfolio/rollforward".into(),
            (Kind::Rpo, Some(id)) => format!("/v1/contracts/{id}/rpo"),
            (Kind::Rpo, None) => "/v1/portfolio/rpo".into(),
            (Kind::Waterfall, None) => "/v1/portfolio/waterfall".into(),
            (Kind::Corrections, None) => "/v1/corrections".into(),
            (Kind::Closes, None) => "/v1/periods".into(),
            (Kind::ClosePreview, None) => "/v1/periods/preview".into(),
            (kind, Some(_)) => return Err(format!("the {} report covers the whole portfolio; it takes no contract", kind.name())),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Revenue => "revenue",
            Kind::Rollforward => "rollforward",
            Kind::Rpo => "rpo",
            Kind::Waterfall => "waterfall",
            Kind::Corrections => "corrections",
            Kind::Closes => "closes",
            Kind::ClosePreview => "close-preview",
        }
    }

    /// The report's own query parameters.
    pub fn params(self) -> &'static [&'static str] {
        match self {
            Kind::Revenue | Kind::Waterfall => &["as_of", "known_at", "granularity"],
            Kind::Rollforward => &["from", "to", "known_at"],
            Kind::Rpo => &["as_of", "known_at"],
            Kind::Corrections => &["as_of", "from_known_at", "to_known_at", "granularity"],
            Kind::Closes => &[],
            Kind::ClosePreview => &["period_end"],
        }
    }

    /// Every parameter the route takes: its own and the output ones.
    pub fn allowed(self) -> Vec<&'static str> {
        self.params().iter().copied().chain(OUTPUT_PARAMS).collect()
    }

    /// The CSV sections of this report; the first is the default.
    pub fn sections(self, contract: bool) -> &'static [&'static str] {
        match (self, contract) {
            (Kind::Revenue, true) => &["rows", "figures"],
            (Kind::Revenue, false) => &["rows", "totals", "periods"],
            (Kind::Rollforward | Kind::Rpo, true) => &["rows"],
            (Kind::Rollforward | Kind::Rpo | Kind::Corrections, false) => &["rows", "totals"],
            (Kind::Waterfall, _) => &["rows", "totals", "contracts"],
            (Kind::Closes, _) => &["rows"],
            (Kind::ClosePreview, _) => &["rows", "totals", "blockers"],
            (Kind::Corrections, true) => &["rows", "totals"],
        }
    }
}

/// What the caller wants back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    /// One CSV section.
    Csv(String),
    /// Every section (tables for people).
    Tables,
}

pub enum Rendered {
    /// The JSON document, serialized (compact).
    Json(Vec<u8>),
    Csv(String),
    Tables(Vec<Table>),
}

/// `format=json|csv` (or `Accept: text/csv`) and `section=`.
pub fn output(params: &Params, accepts_csv: bool, kind: Kind, contract: bool) -> Result<Output, ApiError> {
    let csv = match params.str("format") {
        None => accepts_csv,
        Some("csv") => true,
        Some("json") => false,
        Some(other) => return Err(ApiError::bad_parameter("format", format!("`{other}`: json or csv"))),
    };
    let sections = kind.sections(contract);
    match (csv, params.str("section")) {
        (false, None) => Ok(Output::Json),
        (false, Some(_)) => Err(ApiError::bad_parameter("section", "section applies to CSV (format=csv)")),
        (true, None) => Ok(Output::Csv(sections[0].to_string())),
        (true, Some(s)) if sections.contains(&s) => Ok(Output::Csv(s.to_string())),
        (true, Some(s)) => Err(ApiError::bad_parameter("section", format!("`{s}`: this report's sections are {}", sections.join(", ")))),
    }
}

fn overflow(e: Overflow) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "overflow", e.to_string())
}

fn unknown_contract(id: &ContractId, known_at: u64) -> ApiError {
    ApiError::not_found("unknown_contract", format!("no contract `{id}` known at seq {known_at}"))
}

/// The business date of "now" in UTC, for reports without a date.
pub fn today() -> Date {
    let now = jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    Date::new(now.year(), now.month(), now.day()).expect("today is within years 1 to 9999")
}

fn granularity(params: &Params) -> Result<Granularity, ApiError> {
    match params.str("granularity") {
        None => Ok(Granularity::Month),
        Some(g) => Granularity::parse(g).ok_or_else(|| ApiError::bad_parameter("granularity", format!("`{g}`: month or quarter"))),
    }
}

fn required_date(params: &Params, name: &str) -> Result<Date, ApiError> {
    params.date(name)?.ok_or_else(|| ApiError::bad_parameter(name, format!("{name} is required (YYYY-MM-DD)")))
}

/// A point of view no later than the durable head.
pub fn point_of_view(ledger: &Ledger, date: Date, params: &Params, name: &str) -> Result<AsOf, ApiError> {
    ledger.as_of(date, params.u64(name)?).map_err(|e| ApiError::bad_parameter(name, e.to_string()))
}

/// Runs `f` on every contract, stopping at the first overflow.
fn each(ledger: &Ledger, at: &AsOf, mut f: impl FnMut(&ContractState) -> Result<(), Overflow>) -> Result<(), ApiError> {
    let mut failed = None;
    ledger.for_each_contract(at, |s| {
        if failed.is_none()
            && let Err(e) = f(s) {
                failed = Some(e);
            }
    })?;
    failed.map_or(Ok(()), |e| Err(overflow(e)))
}

/// One contract's report as [`Ledger::with_contract_as_reported`] reads it (its summary
/// where that answers).
fn reported<R>(ledger: &Ledger, id: &ContractId, at: &AsOf, f: impl FnOnce(projections::Contract<'_>) -> Result<R, Overflow>) -> Result<R, ApiError> {
    ledger.with_contract_as_reported(id, at, f)?.ok_or_else(|| unknown_contract(id, at.known_at))?.map_err(overflow)
}


/// Makes `report` of every contract seen at `at`: each contract's part on every core, from
/// its summary where that answers for `at` (else its state, [`Ledger::map_contracts`]),
/// then the parts absorbed in contract order.
fn portfolio<R: PortfolioReport + Sync>(ledger: &Ledger, at: &AsOf, mut report: R) -> Result<R, ApiError> {
    let mapped = ledger.map_contracts(at, |c| report.part(c))?;
    // Absorbed as they come: collecting the parts first copied every part once more.
    report.reserve(mapped.len());
    for part in mapped {
        if let Some(part) = part.map_err(overflow)? {
            report.absorb(part).map_err(overflow)?;
        }
    }
    Ok(report)
}

/// The portfolio rollforward for (`from`, `to`] (they share `known_at`).
fn rollforward(ledger: &Ledger, from: AsOf, to: AsOf) -> Result<PortfolioRollforward, ApiError> {
    portfolio(ledger, &to, PortfolioRollforward::new(from, to))
}

/// A report's JSON, serialized straight from its `Serialize` impl (no `Value` tree).
fn bytes<T: serde::Serialize + ?Sized>(report: &T) -> Vec<u8> {
    serde_json::to_vec(report).expect("report JSON serializes")
}

/// Rows of the portfolio's JSON written per task: enough tasks for both cores to share the
/// work evenly, few enough that joining them costs nothing.
const PORTFOLIO_ROWS_PER_TASK: usize = 1_024;

/// The portfolio's JSON, its rows (about 340 bytes per contract, nearly all of the
/// document) written on every core in ranges and joined in order: byte for byte its
/// `Serialize` (`PortfolioRevenue::json_head`).
fn portfolio_bytes(report: &PortfolioRevenue) -> Vec<u8> {
    use rayon::prelude::*;
    let n = report.contracts.len();
    let ranges: Vec<std::ops::Range<usize>> = (0..n).step_by(PORTFOLIO_ROWS_PER_TASK).map(|start| start..(start + PORTFOLIO_ROWS_PER_TASK).min(n)).collect();
    let pieces: Vec<Vec<u8>> = ranges
        .into_par_iter()
        .map(|range| {
            let mut piece = Vec::with_capacity(range.len() * 400);
            report.write_rows(range, &mut piece);
            piece
        })
        .collect();
    let mut out = report.json_head();
    out.reserve(pieces.iter().map(|p| p.len() + 1).sum::<usize>() + PortfolioRevenue::JSON_TAIL.len());
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(piece);
    }
    out.extend_from_slice(PortfolioRevenue::JSON_TAIL);
    out
}

/// The report as asked: its JSON, one CSV section, or every section; only what is asked
/// for is built.
fn finish(output: &Output, sections: &[&str], json: impl FnOnce() -> Vec<u8>, table: impl Fn(&str) -> Option<Table>) -> Result<Rendered, ApiError> {
    let missing = |s: &str| ApiError::bad_parameter("section", format!("this report has no section `{s}`"));
    Ok(match output {
        Output::Json => Rendered::Json(json()),
        Output::Csv(section) => Rendered::Csv(table(section).ok_or_else(|| missing(section))?.to_csv()),
        Output::Tables => Rendered::Tables(sections.iter().map(|s| table(s).ok_or_else(|| missing(s))).collect::<Result<_, _>>()?),
    })
}

/// Builds report `kind` from the ledger. Blocking (it reads every contract for portfolio
/// reports): call it off the async executor.
pub fn render(ledger: &Ledger, kind: Kind, contract: Option<&ContractId>, params: &Params, output: Output) -> Result<Rendered, ApiError> {
    kind.path(contract).map_err(|m| ApiError::bad_parameter("contract", m))?;
    let sections = kind.sections(contract.is_some());
    let out = &output;
    match kind {
        Kind::Revenue => {
            let at = point_of_view(ledger, params.date("as_of")?.unwrap_or_else(today), params, "known_at")?;
            let g = granularity(params)?;
            match contract {
                Some(id) => {
                    // Figures and periods only: the contract's summary answers at the head.
                    let (json, tables) = reported(ledger, id, &at, |c| {
                        let json = if *out == Output::Json { Some(revenue_json(c, &at, g)?) } else { None };
                        let mut tables = vec![];
                        for section in sections {
                            tables.push(revenue_table(c, &at, g, section)?);
                        }
                        Ok((json, tables))
                    })?;
                    finish(out, sections, || bytes(&json.unwrap_or_default()), |section| {
                        sections.iter().position(|s| *s == section).and_then(|i| tables[i].clone())
                    })
                }
                None => {
                    let report = portfolio(ledger, &at, PortfolioRevenue::new(at, g))?;
                    finish(out, sections, || portfolio_bytes(&report), |s| report.table(s))
                }
            }
        }
        Kind::Rollforward => {
            let from = required_date(params, "from")?;
            let to = required_date(params, "to")?;
            if from >= to {
                return Err(ApiError::bad_parameter("to", format!("the period (from, to] must not be empty: {to} is not after {from}")));
            }
            let end = point_of_view(ledger, to, params, "known_at")?;
            let start = end.with_date(from);
            match contract {
                Some(id) => {
                    let r = reported(ledger, id, &end, |c| ContractRollforward::of(c, &start, &end))?;
                    finish(out, sections, || bytes(&r), |s| r.table(s))
                }
                None => {
                    let report = rollforward(ledger, start, end)?;
                    finish(out, sections, || bytes(&report), |s| report.table(s))
                }
            }
        }
        Kind::Rpo => {
            let at = point_of_view(ledger, params.date("as_of")?.unwrap_or_else(today), params, "known_at")?;
            match contract {
                Some(id) => {
                    let r = reported(ledger, id, &at, |c| ContractRpo::of(c, &at))?;
                    finish(out, sections, || bytes(&r), |s| r.table(s))
                }
                None => {
                    let report = portfolio(ledger, &at, PortfolioRpo::new(at))?;
                    finish(out, sections, || bytes(&report), |s| report.table(s))
                }
            }
        }
        Kind::Waterfall => {
            let at = point_of_view(ledger, params.date("as_of")?.unwrap_or_else(today), params, "known_at")?;
            let waterfall = portfolio(ledger, &at, WaterfallBuilder::new(at, granularity(params)?))?.finish().map_err(overflow)?;
            finish(out, sections, || bytes(&waterfall), |s| waterfall.table(s))
        }
        Kind::Corrections => corrections(ledger, params, out, sections),
        Kind::Closes => {
            let closes = read_closes(ledger)?;
            finish(out, sections, || bytes(&closes_json(&closes, ledger.ledger_facts().period_end)), |s| (s == "rows").then(|| closes_table(&closes)))
        }
        Kind::ClosePreview => preview(ledger, params, out, sections),
    }
}

fn corrections(ledger: &Ledger, params: &Params, out: &Output, sections: &[&str]) -> Result<Rendered, ApiError> {
    let as_of = params.date("as_of")?.unwrap_or_else(today);
    let to = point_of_view(ledger, as_of, params, "to_known_at")?;
    let from_known_at = params.u64("from_known_at")?.ok_or_else(|| ApiError::bad_parameter("from_known_at", "from_known_at is required (a ledger position)"))?;
    if from_known_at >= to.known_at {
        return Err(ApiError::bad_parameter("from_known_at", format!("from_known_at {from_known_at} must be before to_known_at {}", to.known_at)));
    }
    let mut report = CorrectionsReport::new(as_of, from_known_at, to.known_at, granularity(params)?);
    each(ledger, &to, |s| report.add(s))?;
    // When each correcting event was recorded: the period it was posted in.
    let mut recorded: BTreeMap<u64, Timestamp> = BTreeMap::new();
    for seq in report.seqs() {
        let event = ledger.event(seq)?;
        if let Some(e) = event {
            recorded.insert(seq, e.event.recorded_at);
        }
    }
    report.recorded(recorded);
    finish(out, sections, || bytes(&report), |s| report.table(s))
}

/// One `period_closed` event.
pub struct Close {
    pub period_end: Date,
    pub seq: u64,
    pub effective_date: Date,
    pub actor: String,
    pub recorded_at: Timestamp,
}

/// Every period close, oldest first (the ledger-wide stream holds only these).
pub fn read_closes(ledger: &Ledger) -> Result<Vec<Close>, ApiError> {
    let mut out = vec![];
    let mut after = 0;
    // Bounded: one page per CLOSES_PAGE closes, and the stream ends.
    loop {
        let page = ledger.stream_events(&Stream::Ledger, after, CLOSES_PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.event.version;
        for r in &page {
            if let EventBody::PeriodClosed(p) = &r.event.body {
                out.push(Close { period_end: p.period_end, seq: r.seq(), effective_date: r.event.effective_date, actor: r.event.actor.clone(), recorded_at: r.event.recorded_at });
            }
        }
        if page.len() < CLOSES_PAGE {
            break;
        }
    }
    Ok(out)
}

fn closes_json(closes: &[Close], current: Option<Date>) -> Value {
    json!({
        "period_end": current.map(|d| d.to_string()),
        "closes": closes.iter().map(|c| json!({
            "period_end": c.period_end.to_string(),
            "seq": c.seq,
            "effective_date": c.effective_date.to_string(),
            "actor": c.actor,
            "recorded_at": c.recorded_at.to_rfc3339(),
        })).collect::<Vec<_>>(),
    })
}

fn closes_table(closes: &[Close]) -> Table {
    let mut t = Table::new("rows", &["period_end", "seq", "effective_date", "actor", "recorded_at"]);
    for c in closes {
        t.push(vec![c.period_end.to_string(), c.seq.to_string(), c.effective_date.to_string(), c.actor.clone(), c.recorded_at.to_rfc3339()]);
    }
    t
}

/// `GET /v1/periods/preview?period_end=P`: the portfolio rollforward of the open window
/// (last close, P] and of each open month in it, and what would refuse the close.
fn preview(ledger: &Ledger, params: &Params, out: &Output, sections: &[&str]) -> Result<Rendered, ApiError> {
    let period_end = required_date(params, "period_end")?;
    let last_closed = ledger.ledger_facts().period_end;
    let at = point_of_view(ledger, period_end, params, "known_at")?;
    let mut blockers: Vec<(&str, String)> = vec![];
    if let Some(last) = last_closed
        && period_end <= last {
            blockers.push(("period_end_not_advancing", format!("the period ending {last} is already closed; period ends only move forward")));
        }
    let today = today();
    if period_end >= today {
        blockers.push(("period_not_ended", format!("the period ending {period_end} has not ended: today is {today} (UTC)")));
    }
    // The window opens after the last close, or on the first grant's date.
    let first_grant = ledger.map_contracts(&at, |c| c.known_at(at.known_at).then(|| c.granted()))?.into_iter().flatten().min();
    let start = match (last_closed, first_grant) {
        (Some(last), _) => Some(last),
        (None, Some(first)) => first.add_days(-1),
        (None, None) => None,
    };
    let mut window = None;
    let mut months = vec![];
    if let Some(start) = start.filter(|s| *s < period_end) {
        window = Some(rollforward(ledger, at.with_date(start), at)?);
        let mut after = start;
        while after < period_end && months.len() < PREVIEW_MONTHS_MAX {
            let first_day = after.add_days(1).expect("before period_end, so not the last date");
            let through = first_day.last_of_month().min(period_end);
            months.push((Granularity::Month.period_of(first_day), rollforward(ledger, at.with_date(after), at.with_date(through))?));
            after = through;
        }
    }
    let json = || {
        json!({
            "period_end": period_end.to_string(),
            "known_at": at.known_at,
            "last_closed": last_closed.map(|d| d.to_string()),
            "can_close": blockers.is_empty(),
            "blockers": blockers.iter().map(|(code, message)| json!({"code": code, "message": message})).collect::<Vec<_>>(),
            "rollforward": window.as_ref().map(|w| json!({"from": w.from.date.to_string(), "to": w.to.date.to_string(), "totals": w.totals_json()})),
            "months": months.iter().map(|(label, m)| json!({"period": label, "from": m.from.date.to_string(), "to": m.to.date.to_string(), "totals": m.totals_json()})).collect::<Vec<_>>(),
        })
    };
    let table = |section: &str| {
        let empty = || PortfolioRollforward::new(at, at).totals_table();
        match section {
            // Each open month's totals, one after the other.
            "rows" => {
                let mut rows = Table { section: "rows".into(), ..empty() };
                for (_, m) in &months {
                    rows.rows.extend(m.totals_table().rows);
                }
                Some(rows)
            }
            "totals" => Some(window.as_ref().map_or_else(empty, |w| w.totals_table())),
            "blockers" => {
                let mut b = Table::new("blockers", &["period_end", "code", "message"]);
                for (code, message) in &blockers {
                    b.push(vec![period_end.to_string(), code.to_string(), message.clone()]);
                }
                Some(b)
            }
            _ => None,
        }
    };
    finish(out, sections, || bytes(&json()), table)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portfolio's JSON written in ranges on the pool is its `Serialize`, byte for byte,
    /// with no contract, with one, and with several ranges (the last one short), in several
    /// currencies with amounts of every sign and size.
    #[test]
    fn portfolio_json_in_ranges_is_its_serialization() {
        let at = AsOf::date(Date::parse("2027-03-31").unwrap());
        for n in [0, 1, PORTFOLIO_ROWS_PER_TASK, 2 * PORTFOLIO_ROWS_PER_TASK + 7] {
            let mut report = PortfolioRevenue::new(at, Granularity::Month);
            for i in 0..n {
                let currency = events::Currency::from_code(["USD", "JPY", "KWD"][i % 3]).unwrap();
                let amount = (i as i128 - 500) * 1_000_003_i128.pow((i % 5) as u32);
                let figures = projections::Figures { headline: amount, recognized: -amount, billed: i as i128, ..Default::default() };
                report.contracts.push((ContractId::parse(&format!("c-{i:05}_Z")).unwrap(), currency, figures));
            }
            let whole = serde_json::to_vec(&report).unwrap();
            assert_eq!(String::from_utf8(portfolio_bytes(&report)).unwrap(), String::from_utf8(whole).unwrap(), "{n} contracts");
        }
    }
}
