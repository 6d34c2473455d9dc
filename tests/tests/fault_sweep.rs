//! The storage fault sweep (issue 9): for every durable-path operation N of a workload of
//! single, batch, idempotent-retry, import and concurrent appends and a checkpoint, run the
//! workload with operation N failing, in each of four ways, then reopen the data directory
//! and check it against what was acknowledged (`e2e::workload::check`):
//! - as an I/O error, and as a panic of the thread doing it: in this process;
//! - as a SIGKILL just before, and just after, it: in a `fault-writer` child process.
//!
//! A failed group acknowledges none of its requests; after reopening, every acknowledged
//! event is there with its hash, every acknowledged request replays exactly its receipts,
//! no key names two events, the chain and tree verify, and the views equal a rebuild.

use e2e::workload::{self, Acks};
use ledger::io::{FaultAction, FaultPlan};
use ledger::{Ledger, Options};
use std::path::Path;
use std::process::Command;

/// How many durable-path operations a fault-free run of the workload makes (it varies a
/// little with how the concurrent appends group).
fn operations_of_a_clean_run() -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), Options { record_io: true, ..Options::default() }).unwrap();
    let acks = workload::run(&ledger, &|_| {});
    assert_eq!(acks.requests.len(), workload::all_requests().len(), "a clean run acknowledges everything");
    ledger.close();
    let count = ledger.io_trace().len() as u64;
    assert!(count >= 20, "the workload makes {count} durable-path operations");
    count
}

/// Reopens `dir` cleanly and checks it against `acks`; then checks that its views, saved
/// on close, equal views rebuilt from the chain.
fn recover_and_check(dir: &Path, acks: &Acks, what: &str) {
    let ledger = Ledger::open(dir, Options::default()).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    let problems = workload::check(&ledger, acks);
    assert!(problems.is_empty(), "{what}:\n{}", problems.join("\n"));
    ledger.close();
    let incremental = ledger.persisted_views().unwrap();
    drop(ledger);
    Ledger::rebuild_views(dir, |_, _| {}).unwrap_or_else(|e| panic!("{what}: rebuild: {e}"));
    let ledger = Ledger::open(dir, Options::default()).unwrap();
    assert_eq!(ledger.persisted_views().unwrap(), incremental, "{what}: views differ from a rebuild");
}

fn sweep_in_process(action: FaultAction) -> u64 {
    let total = operations_of_a_clean_run();
    let mut hit = 0;
    // A few past the clean count: a fault can shift later operations.
    for nth in 1..=total + 3 {
        let dir = tempfile::tempdir().unwrap();
        let options = Options { faults: Some(FaultPlan { nth, action }), ..Options::default() };
        // The fault may hit the open itself (catching the views up): then it fails (or
        // panics, in this thread), nothing is acknowledged, and the next open must work.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Ledger::open(dir.path(), options)));
        let acks = match opened {
            Ok(Ok(ledger)) => {
                let acks = workload::run(&ledger, &|_| {});
                if ledger.failure().is_some() {
                    hit += 1;
                }
                acks
            }
            Ok(Err(_)) | Err(_) => {
                hit += 1;
                Acks::default()
            }
        };
        recover_and_check(dir.path(), &acks, &format!("{action:?} at operation {nth} of {total}"));
    }
    assert!(hit > total / 2, "the faults stopped the writer in {hit} of {total} runs");
    total
}

#[test]
fn every_durable_operation_failing_with_an_io_error() {
    let total = sweep_in_process(FaultAction::Error);
    eprintln!("swept I/O errors over {total} operations");
}

#[test]
fn every_durable_operation_panicking() {
    let total = sweep_in_process(FaultAction::Panic);
    eprintln!("swept panics over {total} operations");
}

fn sweep_crashes(action: &str) {
    let total = operations_of_a_clean_run();
    let mut killed = 0;
    for nth in 1..=total + 3 {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_fault-writer"))
            .arg(dir.path())
            .arg(format!("{nth}:{action}"))
            .output()
            .expect("run fault-writer");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let finished = stdout.lines().any(|l| l == "done");
        if !finished {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(output.status.signal(), Some(9), "operation {nth}: the writer ended otherwise: {output:?}");
            killed += 1;
        }
        recover_and_check(dir.path(), &Acks::parse(&stdout), &format!("{action} at operation {nth} of {total}"));
    }
    // The count varies a little with how the concurrent appends group, so not every N kills.
    assert!(killed > total / 2, "killed at {killed} of {total} operations");
    eprintln!("swept {action} over {total} operations ({killed} kills)");
}

#[test]
fn every_durable_operation_with_a_crash_before_it() {
    sweep_crashes("crash-before");
}

#[test]
fn every_durable_operation_with_a_crash_after_it() {
    sweep_crashes("crash-after");
}
