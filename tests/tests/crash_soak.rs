//! The crash soak (tests/src/soak.rs): `CLEDGER_SOAK_CYCLES` cycles (default 3, as CI runs
//! it) of concurrent HTTP writers against `cledger serve`, SIGKILL at a random moment,
//! restart and checks. `scripts/crash-soak.sh N` runs it with N cycles on a release build.

use e2e::soak::Soak;
use std::time::Instant;

#[test]
fn sigkill_cycles_under_http_writers_lose_and_duplicate_nothing() {
    let cycles: usize = std::env::var("CLEDGER_SOAK_CYCLES").ok().map_or(3, |n| n.parse().expect("CLEDGER_SOAK_CYCLES is a number"));
    let seed = std::env::var("CLEDGER_SOAK_SEED").ok().map_or_else(
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
        |s| s.parse().expect("CLEDGER_SOAK_SEED is a number"),
    );
    eprintln!("crash soak: {cycles} cycles, seed {seed} (CLEDGER_SOAK_SEED={seed} repeats the choices)");
    let started = Instant::now();
    let mut soak = Soak::start(seed);
    for cycle in 0..cycles {
        soak.cycle(cycle, cycle + 1 == cycles);
        if cycle % 50 == 49 || cycle + 1 == cycles {
            eprintln!("cycle {}: {}, {:.0} s", cycle + 1, soak.progress(), started.elapsed().as_secs_f64());
        }
    }
    let summary = soak.finish(cycles, started);
    eprintln!("crash soak summary: {summary:?}");
    println!(
        "crash soak: {} kill cycles, {} acknowledged events checked ({} stored), {} keys, {} requests acknowledged ({} replays, {} retried after a kill), {} views checks, {} duplicates, {:.0} s",
        summary.cycles,
        summary.acknowledged_events,
        summary.stored_events,
        summary.keys,
        summary.requests,
        summary.replays,
        summary.unanswered_retried,
        summary.views_checks,
        summary.duplicates,
        summary.elapsed.as_secs_f64()
    );
    assert_eq!(summary.duplicates, 0);
    assert!(summary.acknowledged_events >= cycles, "too few acknowledged events to mean anything: {summary:?}");
}
