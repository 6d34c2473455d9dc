//! `cledger report` and `cledger rebuild`: finance's views from a data directory.

use crate::cli::{open_ledger, progress};
use events::{format_minor_units, ContractId, Currency, Date};
use projections::report::{figures_fields, portfolio_json, revenue_json};
use projections::{AsOf, Figures, Granularity, Portfolio};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

const FIGURE_NAMES: [&str; 12] = [
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

fn figure_values(f: &Figures, currency: Currency) -> Vec<String> {
    figures_fields(f, currency).into_iter().map(|(_, v)| v.as_str().unwrap_or_default().to_string()).collect()
}

pub struct ReportArgs<'a> {
    pub data: &'a Path,
    pub contract: Option<&'a str>,
    pub as_of: &'a str,
    pub known_at: Option<u64>,
    pub granularity: &'a str,
    pub format: Format,
}

pub fn report(args: ReportArgs<'_>) -> Result<ExitCode, String> {
    let date = Date::parse(args.as_of).map_err(|e| format!("--as-of: {e}"))?;
    let granularity = Granularity::parse(args.granularity).ok_or("--granularity: month or quarter")?;
    let ledger = open_ledger(args.data)?;
    let at = ledger.as_of(date, args.known_at).map_err(|e| format!("--known-at: {e}"))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = match args.contract {
        Some(id) => {
            let id = ContractId::parse(id).map_err(|r| format!("--contract: {}", r.message))?;
            let text = ledger
                .with_contract(&id, &at, |state| contract_report(state, &at, granularity, args.format))
                .ok_or_else(|| format!("no contract `{id}` known at seq {}", at.known_at))??;
            out.write_all(text.as_bytes())
        }
        None => {
            let mut portfolio = Portfolio::default();
            let mut rows: Vec<(ContractId, Currency, Figures)> = vec![];
            let mut failed = None;
            ledger.for_each_contract(&at, |state| match portfolio.add(state, &at) {
                Ok(Some(f)) => rows.push((state.contract_id.clone(), state.currency(), f)),
                Ok(None) => {}
                Err(e) => failed = Some(format!("{}: {e}", state.contract_id)),
            });
            if let Some(e) = failed {
                return Err(e);
            }
            out.write_all(portfolio_report(&portfolio, &rows, &at, args.format).as_bytes())
        }
    };
    if written.and_then(|_| out.flush()).is_err() {
        // The reader went away (`| head`); nothing more to say.
        return Ok(ExitCode::SUCCESS);
    }
    Ok(ExitCode::SUCCESS)
}

fn contract_report(state: &projections::ContractState, at: &AsOf, granularity: Granularity, format: Format) -> Result<String, String> {
    let currency = state.currency();
    match format {
        Format::Json => {
            let value = revenue_json(state, at, granularity).map_err(|e| e.to_string())?;
            Ok(format!("{}\n", serde_json::to_string_pretty(&value).expect("JSON values serialize")))
        }
        Format::Table => {
            let figures = state.figures(at).map_err(|e| e.to_string())?;
            let periods = state.periods(at, granularity).map_err(|e| e.to_string())?;
            let mut s = format!("{} ({currency}) as of {}, known at seq {}\n\n", state.contract_id, at.date, at.known_at);
            let values = figure_values(&figures, currency);
            let width = values.iter().map(String::len).max().unwrap_or(0);
            for (name, value) in FIGURE_NAMES.iter().zip(&values) {
                s += &format!("  {name:<22} {value:>width$}\n");
            }
            let amounts: Vec<String> = periods.iter().map(|p| format_minor_units(p.recognized, currency)).collect();
            let width = amounts.iter().map(String::len).max().unwrap_or(0).max("recognized".len());
            s += &format!("\n  {:<8} {:>width$}\n", "period", "recognized");
            for (p, amount) in periods.iter().zip(&amounts) {
                s += &format!("  {:<8} {amount:>width$}\n", p.period);
            }
            Ok(s)
        }
        Format::Csv => {
            let periods = state.periods(at, granularity).map_err(|e| e.to_string())?;
            let mut s = String::from("contract_id,currency,as_of,known_at,period,period_end,recognized\n");
            for p in periods {
                s += &format!(
                    "{},{currency},{},{},{},{},{}\n",
                    state.contract_id,
                    at.date,
                    at.known_at,
                    p.period,
                    p.end,
                    format_minor_units(p.recognized, currency)
                );
            }
            Ok(s)
        }
    }
}

fn portfolio_report(portfolio: &Portfolio, rows: &[(ContractId, Currency, Figures)], at: &AsOf, format: Format) -> String {
    match format {
        Format::Json => {
            let mut value = portfolio_json(portfolio, at);
            let contracts: Vec<serde_json::Value> = rows
                .iter()
                .map(|(id, currency, f)| {
                    let mut m = serde_json::Map::new();
                    m.insert("contract_id".into(), id.as_str().into());
                    m.insert("currency".into(), currency.code().into());
                    m.extend(figures_fields(f, *currency));
                    serde_json::Value::Object(m)
                })
                .collect();
            value["contracts"] = serde_json::Value::Array(contracts);
            format!("{}\n", serde_json::to_string_pretty(&value).expect("JSON values serialize"))
        }
        Format::Csv => {
            let mut s = format!("contract_id,currency,{}\n", FIGURE_NAMES.join(","));
            for (id, currency, f) in rows {
                s += &format!("{id},{currency},{}\n", figure_values(f, *currency).join(","));
            }
            for (currency, t) in &portfolio.totals {
                s += &format!("TOTAL ({}),{currency},{}\n", t.contracts, figure_values(&t.figures, *currency).join(","));
            }
            s
        }
        Format::Table => {
            let columns = ["headline", "transaction_price", "recognized", "rpo", "remaining_conditional", "deferred_revenue"];
            let pick = |f: &Figures, c: Currency| -> Vec<String> {
                let all = figure_values(f, c);
                columns.iter().map(|name| all[FIGURE_NAMES.iter().position(|n| n == name).expect("a figure")].clone()).collect()
            };
            let mut table: Vec<Vec<String>> = vec![];
            let mut header = vec!["contract".to_string(), "ccy".to_string()];
            header.extend(columns.iter().map(|c| c.to_string()));
            table.push(header);
            for (id, currency, f) in rows {
                let mut row = vec![id.to_string(), currency.to_string()];
                row.extend(pick(f, *currency));
                table.push(row);
            }
            for (currency, t) in &portfolio.totals {
                let mut row = vec![format!("TOTAL ({})", t.contracts), currency.to_string()];
                row.extend(pick(&t.figures, *currency));
                table.push(row);
            }
            let widths: Vec<usize> = (0..table[0].len()).map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
            let mut s = format!("portfolio as of {}, known at seq {}\n\n", at.date, at.known_at);
            for row in &table {
                let cells: Vec<String> = row
                    .iter()
                    .enumerate()
                    .map(|(i, cell)| if i < 2 { format!("{cell:<w$}", w = widths[i]) } else { format!("{cell:>w$}", w = widths[i]) })
                    .collect();
                s += &format!("  {}\n", cells.join("  "));
            }
            s
        }
    }
}

/// `cledger migrate`: format 1 to format 2, every event verified on the way.
pub fn migrate(data: &Path) -> Result<ExitCode, String> {
    let bar = progress(0, "migrating");
    let started = std::time::Instant::now();
    let result = ledger::migrate::migrate(data, |seq| {
        if seq % 1024 == 0 {
            bar.set_position(seq);
        }
    });
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            println!(
                "migrated {} events into {} blocks ({} index and meta entries carried), every hash verified, in {:.2}s; the old store is kept in {} until you remove it",
                report.events,
                report.blocks,
                report.keys_carried,
                started.elapsed().as_secs_f64(),
                report.backup.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ledger::migrate::MigrateError::Verify(f)) => {
            println!("FAILED at seq {}: {}", f.seq, f.reason);
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.to_string()),
    }
}

pub fn rebuild(data: &Path) -> Result<ExitCode, String> {
    let bar = progress(0, "rebuilding");
    let started = std::time::Instant::now();
    let result = ledger::Ledger::rebuild_views(data, |seq, head| {
        if seq % 1024 == 0 || seq == head {
            bar.set_length(head);
            bar.set_position(seq);
        }
    });
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "rebuilt the views of {} contracts from {} events, every hash verified, in {seconds:.2}s ({:.0} events/s)",
                report.contracts,
                report.events,
                report.events as f64 / seconds.max(1e-9)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ledger::OpenError::Corrupt(f)) => {
            println!("FAILED at seq {}: {}", f.seq, f.reason);
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.to_string()),
    }
}
