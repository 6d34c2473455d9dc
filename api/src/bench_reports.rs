//! `cledger bench --suite reports`: latency of the finance close reports over a ledger of
//! 10,000 contracts (by default), built exactly as the HTTP API builds them
//! ([`crate::reports::render`]: every contract read as the handler reads it, from its
//! summary where that answers for the report's point of view, else its state; the report's
//! JSON or CSV rendered). Numbers are printed, never asserted.

use crate::bench::Latencies;
use crate::bench_projections::load;
use crate::reports::{render, Kind, Output};
use crate::server::params::Params;
use ledger::{Ledger, Options};
use std::time::{Duration, Instant};

/// Events per contract besides the big one: grant, capacity change, milestone, invoices and
/// payments, so every report has movements to attribute.
const EVENTS_PER_CONTRACT: usize = 10;
const RUNS: usize = 20;

pub fn run(scratch: &tempfile::TempDir, events: usize, contracts: usize) -> Result<(), String> {
    println!("cledger bench --suite reports");
    let events = events.max(contracts * EVENTS_PER_CONTRACT + 10_000);
    load(scratch.path(), events, contracts)?;
    let ledger = Ledger::open(scratch.path(), Options::default()).map_err(|e| e.to_string())?;
    let count = ledger.contract_count();
    let cases: [(&str, Kind, &str, Output); 7] = [
        ("portfolio rollforward, JSON", Kind::Rollforward, "from=2027-06-30&to=2027-09-30", Output::Json),
        ("portfolio rollforward, CSV totals", Kind::Rollforward, "from=2027-06-30&to=2027-09-30", Output::Csv("totals".into())),
        ("waterfall by month, JSON", Kind::Waterfall, "as_of=2026-12-31&granularity=month", Output::Json),
        ("waterfall by quarter, JSON", Kind::Waterfall, "as_of=2026-12-31&granularity=quarter", Output::Json),
        ("RPO disclosure, JSON", Kind::Rpo, "as_of=2026-12-31", Output::Json),
        ("portfolio with quarters, JSON", Kind::Revenue, "as_of=2027-12-31&granularity=quarter", Output::Json),
        // Two past points of view: only the states can answer.
        ("corrections since seq 1, JSON", Kind::Corrections, "as_of=2027-12-31&from_known_at=1", Output::Json),
    ];
    println!("  {count} contracts, {} events; {RUNS} runs each", ledger.head().seq);
    // What the reports cost beyond the figures themselves: the fold at both ends alone.
    let from = ledger.as_of(events::Date::parse("2027-06-30").expect("a date"), None).map_err(|e| e.to_string())?;
    let to = from.with_date(events::Date::parse("2027-09-30").expect("a date"));
    let compute: [(&str, &dyn Fn(&projections::ContractState)); 2] = [
        ("figures at both ends (baseline)", &|s| {
            std::hint::black_box((s.figures(&from).expect("figures"), s.figures(&to).expect("figures")));
        }),
        ("rollforward, computed only", &|s| {
            std::hint::black_box(s.rollforward(&from, &to).expect("rollforward"));
        }),
    ];
    for (what, f) in compute {
        let samples: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                ledger.for_each_contract(&to, f).expect("the views load");
                started.elapsed()
            })
            .collect();
        let Latencies { p50_ms: p50, p99_ms: p99, max_ms: max, .. } = Latencies::of(samples);
        println!("  {what:<34} p50 {p50:>7.1} ms  p99 {p99:>7.1} ms  max {max:>7.1} ms");
    }
    for (what, kind, query, output) in cases {
        let params = Params::parse(Some(query), &kind.allowed()).map_err(|e| e.message)?;
        let mut bytes = 0;
        let samples: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                let rendered = render(&ledger, kind, None, &params, output.clone()).map_err(|e| e.message)?;
                // The bytes a client receives: the serialization is part of the latency.
                bytes = match rendered {
                    crate::reports::Rendered::Json(bytes) => bytes.len(),
                    crate::reports::Rendered::Csv(text) => text.len(),
                    crate::reports::Rendered::Tables(t) => t.len(),
                };
                Ok(started.elapsed())
            })
            .collect::<Result<_, String>>()?;
        let Latencies { p50_ms: p50, p99_ms: p99, max_ms: max, .. } = Latencies::of(samples);
        println!("  {what:<34} p50 {p50:>7.1} ms  p99 {p99:>7.1} ms  max {max:>7.1} ms  ({} KiB)", bytes / 1024);
    }
    Ok(())
}
