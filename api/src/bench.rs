//! `cledger bench`: durable append throughput by batch size, verification speed, and raw
//! BLAKE3 over the same canonical bytes as the ceiling. Numbers are printed, never asserted.

use events::{Digest, Proposal};
use ledger::{AppendRequest, Ledger, Mode, Options};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

const CONCURRENT_WRITERS: usize = 16;

/// Latency samples summarised by nearest rank: the one percentile every suite uses.
pub struct Latencies {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub count: usize,
}

impl Latencies {
    pub fn of(mut samples: Vec<std::time::Duration>) -> Latencies {
        samples.sort();
        let at = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            // Nearest rank: the sample at position round((n - 1) * q), q in [0, 1].
            samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3
        };
        Latencies { p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1.0), count: samples.len() }
    }
}

fn grant(contract: &str) -> Proposal {
    let json = format!(
        r#"{{"contract_id":"{contract}","type":"lease_granted","effective_date":"2026-05-01","data":{{"provider":"Neocloud Provider","customer":"Frontier Lab","currency":"USD","term":{{"start":"2026-06-01","end":"2029-06-01"}},"cluster":{{"site":"memphis-1","gpu_model":"H100","gpus":230000}},"headline":"45000000000.00","tranches":[{{"id":"base","amount":"40500000000.00","window":{{"start":"2026-06-01","end":"2029-06-01"}},"firm":true}},{{"id":"expansion","amount":"4500000000.00","window":{{"start":"2027-06-01","end":"2029-06-01"}},"milestone":"phase-2-delivery"}}]}}}}"#
    );
    Proposal::parse_json(json.as_bytes()).expect("bench grant parses")
}

fn invoice(contract: &str, n: usize) -> Proposal {
    let json = format!(
        r#"{{"contract_id":"{contract}","type":"invoice_issued","effective_date":"2026-06-01","data":{{"invoice_id":"INV-{n:08}","amount":"1125000.00","due_date":"2026-07-01"}}}}"#
    );
    Proposal::parse_json(json.as_bytes()).expect("bench invoice parses")
}

fn append(ledger: &Ledger, events: Vec<Proposal>) -> Result<(), String> {
    let request = AppendRequest { events, mode: Mode::Atomic, idempotency_key: None, actor: "bench".into() };
    ledger.append(request).map(|_| ()).map_err(|e| e.to_string())
}

/// Time to BLAKE3-hash each event's canonical bytes, one core: the ceiling every hashing
/// path is compared with.
pub fn hash_events(canonical: &[Vec<u8>]) -> std::time::Duration {
    let started = Instant::now();
    let mut acc = 0u8;
    for c in canonical {
        acc ^= Digest::of_event(c).0[0];
    }
    std::hint::black_box(acc);
    started.elapsed()
}

struct Row {
    what: String,
    events: usize,
    seconds: f64,
    note: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// Durable appends by batch size, verify, raw BLAKE3.
    Append,
    /// Rebuild of views on a large ledger, revenue and portfolio query latency.
    Projections,
    /// Appends over HTTP from 1, 16 and 64 clients; revenue queries under load.
    Http,
    /// Proof latency, export and bundle verification on a large ledger.
    Audit,
    /// Outbox throughput to JetStream and append-to-follower latency (needs --nats).
    Nats,
    /// Finance close reports (rollforward, waterfall, RPO) over 10,000 contracts.
    Reports,
    /// The ledger at scale (`--events`, e.g. 10,000,000, over `--contracts`): import of
    /// interleaved events, verify, rebuild, export, bundle verification and a server on the
    /// result, each as a child process with its peak memory; disk per event; query latency.
    /// Not part of `all`: at 10M events it takes a while and about 3 GB of scratch disk.
    Scale,
    /// Appends over HTTP from 1, 16 and 64 clients to a running replicated cluster's
    /// leader (needs --url of any node; `scripts/cluster.sh up`).
    Replicated,
    All,
}

fn scratch_dir(dir: Option<&Path>) -> Result<tempfile::TempDir, String> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
            tempfile::tempdir_in(d)
        }
        None => tempfile::tempdir_in("."),
    }
    .map_err(|e| format!("cannot create a scratch directory: {e}"))
}

pub fn run(dir: Option<&Path>, events: usize, contracts: usize, suite: Suite, nats: Option<&str>, url: Option<&str>) -> Result<ExitCode, String> {
    if suite == Suite::Replicated {
        let url = url.ok_or("--suite replicated needs --url URL (a node of a replicated cluster: scripts/cluster.sh up)")?;
        crate::bench_http::run_replicated(url)?;
        return Ok(ExitCode::SUCCESS);
    }
    if suite == Suite::Nats {
        let url = nats.ok_or("--suite nats needs --nats URL (a scratch nats-server with sync_interval: always)")?;
        crate::bench_nats::run(&scratch_dir(dir)?, url)?;
        return Ok(ExitCode::SUCCESS);
    }
    if suite == Suite::Scale {
        crate::bench_scale::run(&scratch_dir(dir)?, events, contracts)?;
        return Ok(ExitCode::SUCCESS);
    }
    if matches!(suite, Suite::Append | Suite::All) {
        append_suite(dir, events)?;
    }
    if matches!(suite, Suite::Http | Suite::All) {
        crate::bench_http::run(&scratch_dir(dir)?)?;
    }
    if matches!(suite, Suite::Projections | Suite::All) {
        crate::bench_projections::run(&scratch_dir(dir)?, events, contracts)?;
    }
    if matches!(suite, Suite::Reports | Suite::All) {
        crate::bench_reports::run(&scratch_dir(dir)?, events, contracts)?;
    }
    if matches!(suite, Suite::Audit | Suite::All) {
        crate::bench_audit::run(&scratch_dir(dir)?, events, contracts)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn append_suite(dir: Option<&Path>, events: usize) -> Result<(), String> {
    let events = events.max(1_000);
    let scratch = scratch_dir(dir)?;
    println!("cledger bench: {events} events per measurement, scratch ledger in {}", scratch.path().display());
    let ledger = Arc::new(Ledger::open(scratch.path(), Options::default()).map_err(|e| e.to_string())?);
    let mut rows = vec![];

    // Batch size 1, one writer: every append waits for its own fsync.
    let single = (events / 10).clamp(500, 5_000);
    append(&ledger, vec![grant("single")])?;
    let started = Instant::now();
    for n in 0..single {
        append(&ledger, vec![invoice("single", n)])?;
    }
    rows.push(Row { what: "batch 1, 1 writer".into(), events: single, seconds: started.elapsed().as_secs_f64(), note: "one fsync per event".into() });

    // Batch size 1, many writers: group commit lets them share fsyncs.
    let commits_before = ledger.counters().commits.load(std::sync::atomic::Ordering::Relaxed);
    let per_writer = events / CONCURRENT_WRITERS;
    for w in 0..CONCURRENT_WRITERS {
        append(&ledger, vec![grant(&format!("writer-{w}"))])?;
    }
    let started = Instant::now();
    let threads: Vec<_> = (0..CONCURRENT_WRITERS)
        .map(|w| {
            let ledger = ledger.clone();
            std::thread::spawn(move || -> Result<(), String> {
                for n in 0..per_writer {
                    append(&ledger, vec![invoice(&format!("writer-{w}"), n)])?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a writer thread panicked".to_string())??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let commits = ledger.counters().commits.load(std::sync::atomic::Ordering::Relaxed) - commits_before - CONCURRENT_WRITERS as u64;
    let total = per_writer * CONCURRENT_WRITERS;
    rows.push(Row {
        what: format!("batch 1, {CONCURRENT_WRITERS} writers"),
        events: total,
        seconds,
        note: format!("{commits} commits, {:.1} events per fsync", total as f64 / commits.max(1) as f64),
    });

    for batch in [100usize, 1_000] {
        let contract = format!("batch-{batch}");
        append(&ledger, vec![grant(&contract)])?;
        let requests = events / batch;
        let started = Instant::now();
        for r in 0..requests {
            append(&ledger, (0..batch).map(|i| invoice(&contract, r * batch + i)).collect())?;
        }
        rows.push(Row { what: format!("batch {batch}, 1 writer"), events: requests * batch, seconds: started.elapsed().as_secs_f64(), note: "atomic batches".into() });
    }

    let head = ledger.head();
    let started = Instant::now();
    ledger.verify(|_| {}).map_err(|e| e.to_string())?;
    rows.push(Row { what: "verify".into(), events: head.seq as usize, seconds: started.elapsed().as_secs_f64(), note: "hash, decode, links, versions, index".into() });

    let canonical: Vec<Vec<u8>> = ledger
        .records_after(0)
        .map(|r| r.map(|record| record.canonical).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let bytes: usize = canonical.iter().map(Vec::len).sum();
    let seconds = hash_events(&canonical).as_secs_f64();
    rows.push(Row {
        what: "raw BLAKE3 (ceiling)".into(),
        events: canonical.len(),
        seconds,
        note: format!("{:.0} MiB/s over {} bytes, mean {} bytes/event", bytes as f64 / seconds / 1048576.0, bytes, bytes / canonical.len().max(1)),
    });

    println!("{:<24} {:>10} {:>10} {:>14}  ", "measurement", "events", "seconds", "events/s");
    for r in &rows {
        println!("{:<24} {:>10} {:>10.3} {:>14.0}  {}", r.what, r.events, r.seconds, r.events as f64 / r.seconds, r.note);
    }
    let c = ledger.counters();
    let commits = c.commits.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "sync (flush + fsync) per commit: mean {:.0} us, max {} us over {commits} commits; store {} MiB on disk",
        c.sync_micros_total.load(std::sync::atomic::Ordering::Relaxed) as f64 / commits.max(1) as f64,
        c.sync_micros_max.load(std::sync::atomic::Ordering::Relaxed),
        ledger.size_on_disk() / 1048576
    );
    Ok(())
}
