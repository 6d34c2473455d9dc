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
    println!("compute-ledger demo: data in {}", data.display());
    let base = format!("http://{listen}");
    let config = ServeConfig { signing_key: None, origin: None, checkpoint_every: std::time::Duration::from_secs(60), witnesses: Default::default(), nats: None, data, listen, tokens: None, sse_stall: std::time::Duration::from_secs(30), log_json: false };
    serve(config, |ledger| {
        load(ledger)?;
        println!(
            "\nTry:\n  curl -s {base}/v1/contracts\n  curl -s '{base}/v1/contracts/colossus-1/revenue?as_of=2026-12-31'\n  curl -s '{base}/v1/contracts/colossus-1/revenue?as_of=2027-12-31&granularity=quarter'\n  curl -s '{base}/v1/portfolio?as_of=2027-06-30'\n  curl -s {base}/v1/chain/head\n  curl -sN {base}/v1/stream            # live events (Server-Sent Events)\n  curl -s {base}/openapi.json\n\nAppend an event (durable when answered):\n  curl -s -X POST {base}/v1/events -H 'Idempotency-Key: demo-1' -d '{{\"contract_id\":\"colossus-1\",\"type\":\"milestone_reached\",\"effective_date\":\"2027-07-15\",\"data\":{{\"milestone\":\"phase-2-delivery\",\"outcome\":\"achieved\"}}}}'\n"
        );
        Ok(())
    })
}
