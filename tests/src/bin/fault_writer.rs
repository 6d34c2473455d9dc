//! Runs the fault sweep's workload (`e2e::workload`) against a ledger whose Nth durable-path
//! operation fails as planned (`N:crash-before`, `N:crash-after`, ...), printing each
//! acknowledgement as it happens. A crash plan ends the process with SIGKILL part way; the
//! sweep then reopens the data directory and checks it against what was printed.
//!
//! Usage: fault-writer DATA_DIR PLAN

use std::io::Write;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(plan)) = (args.next(), args.next()) else {
        eprintln!("usage: fault-writer DATA_DIR N:ACTION");
        std::process::exit(2);
    };
    let plan: ledger::io::FaultPlan = plan.parse().unwrap_or_else(|e| {
        eprintln!("plan: {e}");
        std::process::exit(2)
    });
    let options = ledger::Options { faults: Some(plan), ..ledger::Options::default() };
    let ledger = ledger::Ledger::open(std::path::Path::new(&dir), options).unwrap_or_else(|e| {
        eprintln!("open: {e}");
        std::process::exit(3)
    });
    let print = |line: &str| {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(format!("{line}\n").as_bytes());
        let _ = out.flush();
    };
    e2e::workload::run(&ledger, &print);
    drop(ledger);
    print("done");
}
