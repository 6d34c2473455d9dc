//! `cledger demo`: the server with a sample portfolio, for a first look.

use crate::server::{serve, ServeConfig};
use events::Proposal;
use ledger::{AppendRequest, Ledger, Mode};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// The reference deal ($45B headline, $40.5B firm, the rest on a capacity-delivery
/// milestone) and smaller contracts in EUR, JPY, KWD and GBP exercising a capacity change, an
/// SLA credit, a failed milestone, a termination and a reversal.
pub const PORTFOLIO: &str = include_str!("../../examples/demo-portfolio.ndjson");

fn load(ledger: &Ledger) -> Result<(), String> {
    if ledger.head().seq > 0 {
        println!("using the existing data ({} events); nothing loaded", ledger.head().seq);
        return Ok(());
    }
    let events = PORTFOLIO
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Proposal::parse_json(l.as_bytes()).map_err(|r| format!("demo portfolio: {r}")))
        .collect::<Result<Vec<_>, _>>()?;
    let request = AppendRequest { events, mode: Mode::Prefix, idempotency_key: None, actor: "demo".into() };
    let appended = ledger.append(request).map_err(|e| e.to_string())?;
    if let Some((index, rejection)) = appended.refused {
        return Err(format!("demo portfolio line {}: {rejection}", index + 1));
    }
    println!("loaded the sample portfolio: {} events", appended.receipts.len());
    Ok(())
}

pub fn run(data: PathBuf, listen: SocketAddr) -> Result<ExitCode, String> {
    // The first thing a new user needs: where to look. (With port 0 the address is known
    // only once bound; the server prints it then.)
    if listen.port() != 0 {
        println!("dashboard: http://{listen}/");
    }
    println!("compute-ledger demo: data in {}", data.display());
    let base = format!("http://{listen}");
    let config = ServeConfig::local(data, listen);
    serve(config, |ledger| {
        load(ledger)?;
        println!(
            "\nOpen the dashboard at {base}/ or try:\n  curl -s {base}/v1/contracts\n  curl -s '{base}/v1/contracts/colossus-1/revenue?as_of=2026-12-31'\n  curl -s '{base}/v1/contracts/colossus-1/revenue?as_of=2027-12-31&granularity=quarter'\n  curl -s '{base}/v1/portfolio?as_of=2027-06-30'\n  curl -s '{base}/v1/portfolio/rollforward?from=2026-09-30&to=2026-12-31&format=csv'\n  curl -s '{base}/v1/portfolio/waterfall?as_of=2026-12-31&granularity=quarter'\n  curl -s {base}/v1/chain/head\n  curl -sN {base}/v1/stream            # live events (Server-Sent Events)\n  curl -s {base}/openapi.json\n\nAppend an event (durable when answered):\n  curl -s -X POST {base}/v1/events -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' -d '{{\"contract_id\":\"colossus-1\",\"type\":\"milestone_reached\",\"effective_date\":\"2027-07-15\",\"data\":{{\"milestone\":\"phase-2-delivery\",\"outcome\":\"achieved\"}}}}'\n"
        );
        Ok(())
    })
}
