//! Appends to a ledger until killed, printing `seq hash` for every acknowledged event.
//!
//! Used by the crash test: the test kills this process with SIGKILL at random moments and
//! checks that every event it reported is still there after a restart.
//!
//! Usage: crash-writer DATA_DIR WRITERS [billing]
//!
//! With `billing`, the views' resident budget is one event and they are saved every 20 ms,
//! so every save turns the writer's states into billing states and kills land in saves.

use events::Proposal;
use ledger::{AppendRequest, Ledger, Mode, Options};
use std::io::Write;
use std::sync::Arc;

fn proposal(json: &str) -> Proposal {
    Proposal::parse_json(json.as_bytes()).expect("valid event")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: crash-writer DATA_DIR WRITERS");
    let writers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(4);
    let options = match args.next().as_deref() {
        Some("billing") => Options { views_resident_events: 1, views_persist_every_ms: 20, ..Options::default() },
        _ => Options::default(),
    };
    let billing = options.views_resident_events == 1;
    let ledger = Arc::new(Ledger::open(std::path::Path::new(&dir), options).expect("open ledger"));
    if billing {
        // On stderr, for a person checking that the billing states are in use.
        let ledger = ledger.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_millis(50));
            eprintln!("billing states: {}", ledger.billing_contracts());
        });
    }
    let pid = std::process::id();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                let contract = format!("crash-{pid}-{w}");
                let grant = format!(
                    r#"{{"contract_id":"{contract}","type":"lease_granted","effective_date":"2026-01-01","data":{{"provider":"P","customer":"C","currency":"USD","term":{{"start":"2026-01-01","end":"2027-01-01"}},"cluster":{{"site":"s","gpu_model":"g","gpus":8}},"headline":"1000.00","tranches":[{{"id":"t","amount":"1000.00","window":{{"start":"2026-01-01","end":"2027-01-01"}},"firm":true}}]}}}}"#
                );
                let mut pending = vec![proposal(&grant)];
                let mut n = 0u64;
                loop {
                    let request = AppendRequest { events: std::mem::take(&mut pending), mode: Mode::Atomic, idempotency_key: None, actor: "crash".into() };
                    let appended = ledger.append(request).expect("append");
                    let mut out = std::io::stdout().lock();
                    for r in appended.receipts {
                        // One line, one write: a line is either whole or absent in the pipe.
                        let _ = out.write_all(format!("{} {}\n", r.seq, r.hash).as_bytes());
                    }
                    let _ = out.flush();
                    drop(out);
                    // Alternate single events and small atomic batches.
                    let size = if n.is_multiple_of(3) { 5 } else { 1 };
                    for _ in 0..size {
                        n += 1;
                        pending.push(proposal(&format!(
                            r#"{{"contract_id":"{contract}","type":"invoice_issued","effective_date":"2026-02-01","data":{{"invoice_id":"I{n}","amount":"1.00","due_date":"2026-03-01"}}}}"#
                        )));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}
