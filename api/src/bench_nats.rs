//! `cledger bench --suite nats --nats URL`: outbox throughput to JetStream, and the latency
//! from an acknowledged append to the event being stored by a follower.
//!
//! Start the server with `sync_interval: always` (as in production) on a scratch store:
//! the benchmark creates and then deletes a stream of its own name.

use crate::bench::Latencies;
use events::Proposal;
use bus::{run_follower, run_publisher, NatsStatus, StreamSettings};
use ledger::{AppendRequest, Ledger, Mode, Options};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BACKLOG_EVENTS: usize = 20_000;
const LATENCY_SAMPLES: usize = 500;

fn invoice(n: usize) -> Proposal {
    let json = format!(r#"{{"contract_id":"bench","type":"invoice_issued","effective_date":"2026-06-01","data":{{"invoice_id":"I{n}","amount":"1.00","due_date":"2026-07-01"}}}}"#);
    Proposal::parse_json(json.as_bytes()).expect("bench event parses")
}

fn grant() -> Proposal {
    let json = r#"{"contract_id":"bench","type":"lease_granted","effective_date":"2026-05-01","data":{"provider":"P","customer":"C","currency":"USD","term":{"start":"2026-06-01","end":"2029-06-01"},"cluster":{"site":"s","gpu_model":"H100","gpus":8},"headline":"1000000.00","tranches":[{"id":"t","amount":"1000000.00","window":{"start":"2026-06-01","end":"2029-06-01"},"firm":true}]}}"#;
    Proposal::parse_json(json.as_bytes()).expect("bench grant parses")
}

fn append(ledger: &Ledger, events: Vec<Proposal>) -> Result<u64, String> {
    let appended = ledger.append(AppendRequest { events, mode: Mode::Atomic, idempotency_key: None, actor: "bench".into() }).map_err(|e| e.to_string())?;
    Ok(appended.receipts.last().map_or(0, |r| r.seq))
}

pub fn run(scratch: &tempfile::TempDir, url: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())?;
    let client = runtime.block_on(async_nats::connect(url)).map_err(|e| format!("NATS at {url}: {e}"))?;
    // async-nats contexts must be made inside the runtime.
    let _inside = runtime.enter();
    // The benchmark's own stream name would clash with a real LEDGER; the subjects are
    // the same, so a stream named LEDGER on this server must not exist.
    let js = async_nats::jetstream::new(client.clone());
    if runtime.block_on(js.get_stream("LEDGER")).is_ok() {
        return Err(format!("{url} already has a LEDGER stream: run the benchmark against a scratch nats-server"));
    }
    println!("cledger bench --suite nats: {url}");
    let leader = Arc::new(Ledger::open(&scratch.path().join("leader"), Options::default()).map_err(|e| e.to_string())?);
    append(&leader, vec![grant()])?;
    for chunk in (0..BACKLOG_EVENTS).collect::<Vec<_>>().chunks(1_000) {
        append(&leader, chunk.iter().map(|n| invoice(*n)).collect())?;
    }
    let head = leader.head().seq;
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let status = Arc::new(NatsStatus::default());
    let started = Instant::now();
    runtime.spawn(run_publisher(leader.clone(), client.clone(), StreamSettings::default(), status.clone(), shutdown.clone()));
    while status.confirmed.load(Ordering::Relaxed) < head {
        if let Some(f) = status.failure() {
            return Err(f);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("  outbox: a backlog of {head} events published and acknowledged in {seconds:.2}s = {:.0} events/s", head as f64 / seconds);

    let follower = Arc::new(Ledger::open(&scratch.path().join("follower"), Options::default()).map_err(|e| e.to_string())?);
    let follower_status = Arc::new(NatsStatus::default());
    runtime.spawn(run_follower(follower.clone(), client.clone(), "LEDGER".into(), follower_status.clone(), shutdown.clone()));
    while follower.head().seq < head {
        if let Some(f) = follower_status.failure() {
            return Err(f);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let caught_up = started.elapsed().as_secs_f64() - seconds;
    println!("  follower: caught up {head} events from the stream in {caught_up:.2}s (verifying every hash and link)");

    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    let mut watch = follower.watch_head();
    for n in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        let seq = append(&leader, vec![invoice(BACKLOG_EVENTS + n)])?;
        runtime.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|h| h.seq >= seq)).await;
        });
        samples.push(started.elapsed());
        // About 200 appends a second: a steady trickle, not a backlog.
        std::thread::sleep(Duration::from_millis(5));
    }
    let samples = Latencies::of(samples);
    println!(
        "  append to follower (append acknowledged -> published -> consumed -> verified and synced by the follower), {} samples: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.count,
        samples.p50_ms,
        samples.p99_ms,
        samples.max_ms
    );
    let _ = shutdown_tx.send(true);
    runtime.block_on(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = js.delete_stream("LEDGER").await;
    });
    Ok(())
}
