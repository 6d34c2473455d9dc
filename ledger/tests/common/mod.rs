#![allow(dead_code)]

use events::{Proposal, Rejection, Timestamp};
use ledger::{AppendError, AppendRequest, Ledger, Mode, Options, Receipt};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tempfile::TempDir;

pub const SPEC_EXAMPLES: &str = include_str!("../../../examples/colossus.ndjson");

/// A clock that ticks one second per call, from 2026-11-28T00:00:00Z, so tests are
/// deterministic.
pub fn ticking_clock() -> Arc<dyn Fn() -> Timestamp + Send + Sync> {
    let next = Arc::new(AtomicI64::new(1_795_824_000_000_000));
    Arc::new(move || Timestamp(next.fetch_add(1_000_000, Ordering::SeqCst)))
}

pub fn open(dir: &std::path::Path) -> Ledger {
    Ledger::open(dir, Options { clock: ticking_clock(), ..Options::default() }).expect("open ledger")
}

pub fn fresh() -> (TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    (dir, ledger)
}

pub fn proposal(json: &str) -> Proposal {
    Proposal::parse_json(json.as_bytes()).unwrap_or_else(|r| panic!("{json}: {r}"))
}

/// Appends one event; the refusal if it is refused.
pub fn append(ledger: &Ledger, json: &str) -> Result<Receipt, Rejection> {
    append_keyed(ledger, json, None)
}

pub fn append_keyed(ledger: &Ledger, json: &str, key: Option<&str>) -> Result<Receipt, Rejection> {
    let request = AppendRequest {
        events: vec![proposal(json)],
        mode: Mode::Atomic,
        idempotency_key: key.map(str::to_string),
        actor: "test@example".into(),
    };
    match ledger.append(request) {
        Ok(mut appended) => Ok(appended.receipts.remove(0)),
        Err(AppendError::Rejected { rejection, .. } | AppendError::RequestRefused(rejection)) => Err(rejection),
        Err(e) => panic!("{e}"),
    }
}

/// Appends with `append` until a save of the views holds it. A save is due 5 s after the
/// last; the writer runs it after the next group, once it has answered (the machine may be
/// slow: up to 4 tries).
pub fn until_saved(ledger: &Ledger, mut append: impl FnMut()) {
    for _ in 0..4 {
        std::thread::sleep(std::time::Duration::from_millis(ledger::views::PERSIST_EVERY_MS as u64 + 300));
        append();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if ledger.persisted_views().unwrap().cursor == ledger.head().seq {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    panic!("no save in 4 tries");
}

pub fn append_all(ledger: &Ledger, ndjson: &str) -> Vec<Receipt> {
    ndjson.lines().filter(|l| !l.trim().is_empty()).map(|l| append(ledger, l).unwrap_or_else(|r| panic!("{l}: {r}"))).collect()
}

/// A grant of 3,650.00 USD over 2026 (365 days), firm 3,000.00 and 650.00 on milestone "m1".
pub fn small_grant(contract: &str) -> String {
    format!(
        r#"{{"contract_id":"{contract}","type":"lease_granted","effective_date":"2026-01-01","data":{{"provider":"P","customer":"C","currency":"USD","term":{{"start":"2026-01-01","end":"2027-01-01"}},"cluster":{{"site":"s","gpu_model":"H100","gpus":100}},"headline":"3650.00","tranches":[{{"id":"firm","amount":"3000.00","window":{{"start":"2026-01-01","end":"2027-01-01"}},"firm":true}},{{"id":"cond","amount":"650.00","window":{{"start":"2026-07-01","end":"2027-01-01"}},"milestone":"m1"}}]}}}}"#
    )
}

pub fn event(contract: &str, kind: &str, date: &str, data: &str) -> String {
    format!(r#"{{"contract_id":"{contract}","type":"{kind}","effective_date":"{date}","data":{data}}}"#)
}

/// Opens the store's sled directly (to damage or rewind it), waiting for the lock a just
/// closed ledger's sled threads may still hold for a moment.
pub fn raw_sled(dir: &std::path::Path) -> sled::Db {
    let started = std::time::Instant::now();
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(e) if started.elapsed() < std::time::Duration::from_secs(2) && e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => panic!("open sled in {}: {e}", dir.display()),
        }
    }
}

/// Changes one byte of the record of `seq` directly in sled, with the ledger closed.
pub fn tamper_on_disk(dir: &std::path::Path, seq: u64, at: usize) {
    let db = raw_sled(dir);
    let tree = db.open_tree("ledger").unwrap();
    let (key, offset) = ledger::store::locate(&tree, seq, at).unwrap();
    let mut block = tree.get(&key).unwrap().unwrap().to_vec();
    block[offset] ^= 0x01;
    tree.insert(key, block).unwrap();
    db.flush().unwrap();
}

/// Marks the persisted views of the closed store in `dir` as of views format `format`.
pub fn set_views_format(dir: &std::path::Path, format: u32) {
    let db = raw_sled(dir);
    db.open_tree("views").unwrap().insert(b"Mformat", &format.to_be_bytes()).unwrap();
    db.flush().unwrap();
}
