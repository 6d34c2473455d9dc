//! `cledger bench --suite audit`: on a large ledger, the latency of inclusion and consistency
//! proofs, and the throughput of export and of verifying the exported bundle.

use crate::audit::verify_bundle;
use crate::bench::Latencies;
use ledger::checkpoints::load_or_create_signer;
use ledger::{Ledger, Options};
use std::time::Instant;

/// A deterministic spread of numbers in 1..=n (xorshift), so the proofs touch the whole tree.
fn spread(n: u64, count: usize) -> Vec<u64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n + 1
        })
        .collect()
}

pub fn run(scratch: &tempfile::TempDir, events: usize, contracts: usize) -> Result<(), String> {
    println!("cledger bench --suite audit");
    let dir = scratch.path().join("ledger");
    let size = crate::bench_projections::load(&dir, events, contracts)?;
    let ledger = Ledger::open(&dir, Options::default()).map_err(|e| e.to_string())?;
    let seqs = spread(size, 2_000);
    let samples = seqs
        .iter()
        .map(|&seq| {
            let started = Instant::now();
            std::hint::black_box(ledger.inclusion_proof(seq, size).map_err(|e| e.to_string())?);
            Ok(started.elapsed())
        })
        .collect::<Result<Vec<_>, String>>()?;
    let Latencies { p50_ms, p99_ms, .. } = Latencies::of(samples);
    let (p50, p99) = (p50_ms * 1e3, p99_ms * 1e3);
    println!("  inclusion proof in a tree of {size}: p50 {p50:.0} us, p99 {p99:.0} us (2,000 random leaves)");
    let samples = seqs
        .iter()
        .map(|&from| {
            let started = Instant::now();
            std::hint::black_box(ledger.consistency_proof(from, size).map_err(|e| e.to_string())?);
            Ok(started.elapsed())
        })
        .collect::<Result<Vec<_>, String>>()?;
    let Latencies { p50_ms, p99_ms, .. } = Latencies::of(samples);
    let (p50, p99) = (p50_ms * 1e3, p99_ms * 1e3);
    println!("  consistency proof to a tree of {size}: p50 {p50:.0} us, p99 {p99:.0} us (2,000 random sizes)");
    let started = Instant::now();
    std::hint::black_box(ledger.merkle_root(size).map_err(|e| e.to_string())?);
    println!("  Merkle root of {size} events from stored nodes: {:.0} us", started.elapsed().as_secs_f64() * 1e6);

    let signer = load_or_create_signer(&dir, None, None).map_err(|e| e.to_string())?;
    let bundle = scratch.path().join("bundle.ndjson");
    let started = Instant::now();
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&bundle).map_err(|e| e.to_string())?);
        ledger.export(&signer, None, None, &mut out).map_err(|e| e.to_string())?;
        std::io::Write::flush(&mut out).map_err(|e| e.to_string())?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&bundle).map_err(|e| e.to_string())?.len();
    println!("  export: {size} events, {} MiB in {seconds:.2}s = {:.0} events/s", bytes / 1_048_576, size as f64 / seconds);
    drop(ledger);
    let started = Instant::now();
    let file = std::fs::File::open(&bundle).map_err(|e| e.to_string())?;
    let verified = verify_bundle(file, Some(signer.verifier()), None)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "  verify the bundle (decode, rehash, JSON check, Merkle root, signature): {} events in {seconds:.2}s = {:.0} events/s",
        verified.to,
        verified.to as f64 / seconds
    );
    let started = Instant::now();
    let ledger = Ledger::open(&dir, Options::default()).map_err(|e| e.to_string())?;
    ledger.verify_with_roots(&[size], |_| {}).map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    println!("  verify --data (chain, indexes, Merkle tree): {size} events in {seconds:.2}s = {:.0} events/s", size as f64 / seconds);
    Ok(())
}
