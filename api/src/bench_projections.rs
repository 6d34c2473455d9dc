//! `cledger bench --suite projections`: views rebuild speed on a large ledger, and the
//! latency of a revenue query (one contract with 10,000 events) and of the portfolio.

use crate::bench::Latencies;
use events::{ContractId, Date, Proposal};
use ledger::{AppendRequest, Ledger, Mode, Options};
use projections::report::revenue_json;
use projections::{Granularity, Portfolio};
use std::time::{Duration, Instant};

const BATCH_EVENTS: usize = 1_000;
const BIG_CONTRACT_EVENTS: usize = 10_000;

fn parse(json: String) -> Proposal {
    Proposal::parse_json(json.as_bytes()).expect("bench event parses")
}

/// The events of one contract: grant, capacity increase, milestone, then invoices each
/// followed by its payment, `n` events in all.
fn contract_events(id: &str, n: usize) -> Vec<Proposal> {
    let mut out = vec![parse(format!(
        r#"{{"contract_id":"{id}","type":"lease_granted","effective_date":"2026-05-01","data":{{"provider":"Neocloud","customer":"Lab","currency":"USD","term":{{"start":"2026-06-01","end":"2029-06-01"}},"cluster":{{"site":"s","gpu_model":"H100","gpus":1024}},"headline":"45000000.00","tranches":[{{"id":"base","amount":"40500000.00","window":{{"start":"2026-06-01","end":"2029-06-01"}},"firm":true}},{{"id":"expansion","amount":"4500000.00","window":{{"start":"2027-06-01","end":"2029-06-01"}},"milestone":"phase-2"}}]}}}}"#
    ))];
    if n > 1 {
        out.push(parse(format!(r#"{{"contract_id":"{id}","type":"capacity_changed","effective_date":"2027-01-01","data":{{"gpus_delta":128,"amount_delta":"750000.00"}}}}"#)));
    }
    if n > 2 {
        out.push(parse(format!(r#"{{"contract_id":"{id}","type":"milestone_reached","effective_date":"2027-07-15","data":{{"milestone":"phase-2","outcome":"achieved"}}}}"#)));
    }
    let mut i = 0;
    while out.len() < n {
        if i % 2 == 0 {
            out.push(parse(format!(r#"{{"contract_id":"{id}","type":"invoice_issued","effective_date":"2026-06-01","data":{{"invoice_id":"I{i}","amount":"1000.00","due_date":"2026-07-01"}}}}"#)));
        } else {
            out.push(parse(format!(r#"{{"contract_id":"{id}","type":"payment_received","effective_date":"2026-06-15","data":{{"payment_id":"P{i}","amount":"1000.00","invoice_id":"I{}"}}}}"#, i - 1)));
        }
        i += 1;
    }
    out
}

/// Loads a ledger of about `events` events: `contracts` contracts of equal length and one
/// of 10,000 events, appended in atomic batches of 1,000. Returns the number of events.
pub fn load(dir: &std::path::Path, events: usize, contracts: usize) -> Result<u64, String> {
    let contracts = contracts.max(1);
    let per_contract = ((events.saturating_sub(BIG_CONTRACT_EVENTS)) / contracts).max(1);
    println!("  loading {contracts} contracts of {per_contract} events and one of {BIG_CONTRACT_EVENTS} into {}", dir.display());
    let ledger = Ledger::open(dir, Options::default()).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(BATCH_EVENTS);
    let flush = |pending: &mut Vec<Proposal>| -> Result<(), String> {
        if pending.is_empty() {
            return Ok(());
        }
        let request = AppendRequest { events: std::mem::take(pending), mode: Mode::Atomic, idempotency_key: None, actor: "bench".into() };
        ledger.append(request).map(|_| ()).map_err(|e| e.to_string())
    };
    let ids = std::iter::once(("big".to_string(), BIG_CONTRACT_EVENTS)).chain((0..contracts).map(|c| (format!("c{c:06}"), per_contract)));
    for (id, n) in ids {
        for proposal in contract_events(&id, n) {
            pending.push(proposal);
            if pending.len() == BATCH_EVENTS {
                flush(&mut pending)?;
            }
        }
    }
    flush(&mut pending)?;
    let total = ledger.head().seq;
    let load_seconds = started.elapsed().as_secs_f64();
    println!("  loaded {total} events in {load_seconds:.1}s ({:.0} events/s, batches of {BATCH_EVENTS})", total as f64 / load_seconds);
    Ok(total)
}

pub fn run(scratch: &tempfile::TempDir, events: usize, contracts: usize) -> Result<(), String> {
    println!("cledger bench --suite projections");
    load(scratch.path(), events, contracts)?;
    let per_contract = ((events.saturating_sub(BIG_CONTRACT_EVENTS)) / contracts.max(1)).max(1);

    let started = Instant::now();
    let ledger = Ledger::open(scratch.path(), Options::default()).map_err(|e| e.to_string())?;
    println!("  open with persisted views: {:.2}s ({} contracts)", started.elapsed().as_secs_f64(), ledger.contract_count());
    drop(ledger);

    let started = Instant::now();
    let report = Ledger::rebuild_views(scratch.path(), |_, _| {}).map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "  rebuild (verify every hash and link, fold, persist): {} events, {} contracts in {seconds:.2}s = {:.0} events/s",
        report.events,
        report.contracts,
        report.events as f64 / seconds
    );

    let ledger = Ledger::open(scratch.path(), Options::default()).map_err(|e| e.to_string())?;
    let at = ledger.as_of(Date::parse("2028-12-31").expect("a date"), None).map_err(|e| e.to_string())?;
    let big = ContractId::parse("big").expect("an id");
    let samples: Vec<Duration> = (0..200)
        .map(|_| {
            let started = Instant::now();
            let json = ledger.with_contract(&big, &at, |s| revenue_json(s, &at, Granularity::Month)).expect("the view loads").expect("big exists");
            std::hint::black_box(json.expect("figures"));
            started.elapsed()
        })
        .collect();
    let Latencies { p50_ms: p50, p99_ms: p99, max_ms: max, .. } = Latencies::of(samples);
    println!("  revenue query, 1 contract of {BIG_CONTRACT_EVENTS} events (figures + 31 monthly periods): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
    let small = ContractId::parse("c000000").expect("an id");
    let samples: Vec<Duration> = (0..200)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(ledger.with_contract(&small, &at, |s| revenue_json(s, &at, Granularity::Month)).expect("the view loads"));
            started.elapsed()
        })
        .collect();
    let Latencies { p50_ms: p50, p99_ms: p99, max_ms: _, .. } = Latencies::of(samples);
    println!("  revenue query, 1 contract of {per_contract} events: p50 {p50:.3} ms, p99 {p99:.3} ms");
    let samples: Vec<Duration> = (0..20)
        .map(|_| {
            let started = Instant::now();
            let mut portfolio = Portfolio::default();
            ledger
                .for_each_contract(&at, |s| {
                    portfolio.add(s, &at).expect("figures");
                })
                .expect("the views load");
            std::hint::black_box(portfolio);
            started.elapsed()
        })
        .collect();
    let Latencies { p50_ms: p50, p99_ms: p99, max_ms: max, .. } = Latencies::of(samples);
    println!("  portfolio query, {} contracts: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms", ledger.contract_count());
    Ok(())
}
