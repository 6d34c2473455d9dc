//! Crash consistency: a writer process is killed with SIGKILL at random moments; after each
//! restart `cledger verify` passes and every event it acknowledged is present, unchanged.
//! Every other cycle the writer saves its views every 20 ms with a budget of one event, so
//! kills land in saves of billing states too.

use e2e::{cledger_path, run};
use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

const CYCLES: usize = 25;

/// xorshift64*: reproducible "random" kill moments; the seed is printed on failure.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[test]
fn sigkill_never_loses_an_acknowledged_event() {
    let _ = cledger_path();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut rng = seed;
    let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
    for cycle in 0..CYCLES {
        let mode = if cycle % 2 == 1 { "billing" } else { "states" };
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .args([data_arg, "4", mode])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Drain the pipe while the child runs, so it never blocks on a full pipe: the kill
        // must land while it is appending, not while it waits for us.
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            stdout.read_to_string(&mut out).unwrap();
            out
        });
        let wait_ms = 30 + next(&mut rng) % 250;
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let out = reader.join().unwrap();
        let mut this_cycle = 0;
        for line in out.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let (seq, hash) = line.trim_end().split_once(' ').unwrap();
            let seq: u64 = seq.parse().unwrap();
            assert!(acknowledged.insert(seq, hash.to_string()).is_none(), "seq {seq} acknowledged twice (seed {seed})");
            this_cycle += 1;
        }

        let (code, stdout, stderr) = run(&["verify", "--data", data_arg]);
        assert_eq!(code, 0, "cycle {cycle} (seed {seed}, killed after {wait_ms} ms): {stdout}{stderr}");
        let (code, log, stderr) = run(&["log", "--data", data_arg, "--json"]);
        assert_eq!(code, 0, "{stderr}");
        let stored: BTreeMap<u64, String> = log
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["seq"].as_u64().unwrap(), v["hash"].as_str().unwrap().to_string())
            })
            .collect();
        for (seq, hash) in &acknowledged {
            assert_eq!(stored.get(seq), Some(hash), "cycle {cycle}: acknowledged seq {seq} lost or changed (seed {seed})");
        }
        if cycle % 5 == 4 {
            // The views, caught up after the kill, equal views rebuilt from the chain.
            let report = |args: &[&str]| {
                let (code, out, err) = run(args);
                assert_eq!(code, 0, "{err}");
                out
            };
            let portfolio = ["report", "--data", data_arg, "--as-of", "2026-12-31", "--format", "json"];
            let incremental = report(&portfolio);
            report(&["rebuild", "--data", data_arg]);
            assert_eq!(report(&portfolio), incremental, "cycle {cycle}: incremental views differ from rebuilt ones");
        }
        eprintln!("cycle {cycle}: killed after {wait_ms} ms, {this_cycle} acknowledged, {} stored", stored.len());
    }
    assert!(acknowledged.len() > 200, "too few acknowledged events to mean anything: {}", acknowledged.len());
}
