//! The workload of the storage fault sweep (issue 9): single, batch, idempotent-retry,
//! prefix (import) and concurrent appends, and a checkpoint, against a ledger whose Nth
//! durable-path operation fails. It records what was acknowledged; [`check`] then verifies
//! a recovered ledger against it.
//!
//! Used in-process (error and panic faults) and by the `fault-writer` binary (crash faults,
//! which end the process), so both sweeps run the same requests and the same checks.

use events::checkpoint::NoteSigner;
use events::{Digest, Proposal};
use ledger::{AppendRequest, Ledger, Mode};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// What the ledger acknowledged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acks {
    /// Request name → (seq, hash) of each event it appended or replayed, in order.
    pub requests: BTreeMap<String, Vec<(u64, Digest)>>,
    /// Size of the largest checkpoint whose issue succeeded.
    pub checkpoint: Option<u64>,
}

impl Acks {
    /// One line per acknowledgement, as the `fault-writer` prints it (a line is written
    /// whole, so a killed process leaves whole lines).
    pub fn line(name: &str, receipts: &[(u64, Digest)]) -> String {
        let receipts: Vec<String> = receipts.iter().map(|(s, h)| format!("{s}:{h}")).collect();
        format!("ack {name} {}", receipts.join(","))
    }

    pub fn parse(text: &str) -> Acks {
        let mut acks = Acks::default();
        for line in text.lines() {
            let mut words = line.split(' ');
            match (words.next(), words.next(), words.next()) {
                (Some("ack"), Some(name), Some(list)) => {
                    let receipts = list
                        .split(',')
                        .map(|r| {
                            let (seq, hash) = r.split_once(':').expect("seq:hash");
                            (seq.parse().expect("seq"), Digest::from_hex(hash).expect("hash"))
                        })
                        .collect();
                    acks.requests.insert(name.to_string(), receipts);
                }
                (Some("checkpoint"), Some(size), None) => acks.checkpoint = Some(size.parse().expect("size")),
                _ => {}
            }
        }
        acks
    }
}

fn proposal(json: String) -> Proposal {
    Proposal::parse_json(json.as_bytes()).expect("the workload's events parse")
}

fn grant(contract: &str) -> Proposal {
    proposal(format!(
        r#"{{"contract_id":"{contract}","type":"lease_granted","effective_date":"2026-01-01","data":{{"provider":"P","customer":"C","currency":"USD","term":{{"start":"2026-01-01","end":"2027-01-01"}},"cluster":{{"site":"s","gpu_model":"g","gpus":8}},"headline":"1000.00","tranches":[{{"id":"t","amount":"1000.00","window":{{"start":"2026-01-01","end":"2027-01-01"}},"firm":true}}]}}}}"#
    ))
}

fn invoice(contract: &str, id: &str, key: Option<&str>) -> Proposal {
    let key = key.map(|k| format!(r#","idempotency_key":"{k}""#)).unwrap_or_default();
    proposal(format!(
        r#"{{"contract_id":"{contract}","type":"invoice_issued","effective_date":"2026-02-01"{key},"data":{{"invoice_id":"{id}","amount":"1.00","due_date":"2026-03-01"}}}}"#
    ))
}

/// The requests of the workload, by name: each is sent once, and the keyed ones again as
/// retries. Threads of the concurrent part send theirs at the same time.
fn request(events: Vec<Proposal>, mode: Mode, key: Option<&str>) -> AppendRequest {
    AppendRequest { events, mode, idempotency_key: key.map(str::to_string), actor: "sweep@example".into() }
}

pub fn sequential_requests() -> Vec<(&'static str, AppendRequest)> {
    vec![
        ("grant-a", request(vec![grant("w-a")], Mode::Atomic, Some("k-grant-a"))),
        ("grant-a-retry", request(vec![grant("w-a")], Mode::Atomic, Some("k-grant-a"))),
        ("batch", request(vec![grant("w-b"), invoice("w-a", "I1", None), invoice("w-b", "I1", None)], Mode::Atomic, Some("k-batch"))),
        ("batch-retry", request(vec![grant("w-b"), invoice("w-a", "I1", None), invoice("w-b", "I1", None)], Mode::Atomic, Some("k-batch"))),
        ("event-keys", request(vec![invoice("w-a", "I2", Some("k-i2")), invoice("w-a", "I3", Some("k-i3"))], Mode::Atomic, None)),
        ("unkeyed", request(vec![invoice("w-b", "I2", None)], Mode::Atomic, None)),
        // An import: each event on its own, keyed; a re-run replays the ones already in.
        ("import", request(vec![invoice("w-b", "I3", Some("k-import-1")), invoice("w-b", "I4", Some("k-import-2"))], Mode::Prefix, None)),
        ("import-rerun", request(vec![invoice("w-b", "I3", Some("k-import-1")), invoice("w-b", "I4", Some("k-import-2")), invoice("w-b", "I5", Some("k-import-3"))], Mode::Prefix, None)),
    ]
}

fn thread_requests(thread: usize) -> Vec<(String, AppendRequest)> {
    let contract = format!("w-t{thread}");
    let mut out = vec![(format!("t{thread}-grant"), request(vec![grant(&contract)], Mode::Atomic, Some(&format!("k-t{thread}-grant"))))];
    for i in 0..3 {
        let key = format!("k-t{thread}-{i}");
        out.push((format!("t{thread}-{i}"), request(vec![invoice(&contract, &format!("I{i}"), None)], Mode::Atomic, Some(&key))));
    }
    out
}

pub const THREADS: usize = 3;

/// Every request the workload may send, by name (for re-sending acknowledged ones).
pub fn all_requests() -> HashMap<String, AppendRequest> {
    let mut all: HashMap<String, AppendRequest> = sequential_requests().into_iter().map(|(n, r)| (n.to_string(), r)).collect();
    for t in 0..THREADS {
        all.extend(thread_requests(t));
    }
    all
}

/// The signer of the workload's checkpoints.
pub fn signer() -> NoteSigner {
    NoteSigner::new("sweep.example/ledger", [3u8; 32]).expect("a valid name")
}

/// Runs the workload; `report` gets each acknowledgement as it happens (the binary prints
/// it at once). Failures are expected (that is the point) and only recorded by absence.
pub fn run(ledger: &Ledger, report: &(dyn Fn(&str) + Sync)) -> Acks {
    let acks = Mutex::new(Acks::default());
    let send = |name: &str, request: AppendRequest| {
        if let Ok(appended) = ledger.append(request) {
            let receipts: Vec<(u64, Digest)> = appended.receipts.iter().map(|r| (r.seq, r.hash)).collect();
            if appended.refused.is_none() {
                report(&Acks::line(name, &receipts));
                acks.lock().expect("acks").requests.insert(name.to_string(), receipts);
            }
        }
    };
    for (name, request) in sequential_requests() {
        send(name, request);
    }
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let send = &send;
            scope.spawn(move || {
                for (name, request) in thread_requests(t) {
                    send(&name, request);
                }
            });
        }
    });
    // The server issues checkpoints on a task of their own: a panic there ends the task,
    // as it ends this call here.
    let issued = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ledger.issue_checkpoint(&signer())));
    if let Ok(Ok(issued)) = issued {
        report(&format!("checkpoint {}", issued.checkpoint.size));
        acks.lock().expect("acks").checkpoint = Some(issued.checkpoint.size);
    }
    acks.into_inner().expect("acks")
}

/// Checks a ledger reopened after a faulty run against what that run acknowledged:
/// - every acknowledged event is there with its hash;
/// - every acknowledged request, sent again, replays exactly its receipts (its key is
///   durable with it, and a retry makes no second copy);
/// - no idempotency key names two events; the chain and Merkle tree verify;
/// - an acknowledged checkpoint (or a larger one) is the latest.
///
/// Returns the problems found (empty when sound).
pub fn check(ledger: &Ledger, acks: &Acks) -> Vec<String> {
    let mut problems = vec![];
    for (name, receipts) in &acks.requests {
        for (seq, hash) in receipts {
            match ledger.event(*seq) {
                Ok(Some(e)) if e.hash == *hash => {}
                other => problems.push(format!("{name}: acknowledged seq {seq} ({hash}) is {other:?}")),
            }
        }
    }
    let all = all_requests();
    for (name, receipts) in &acks.requests {
        let request = all[name].clone();
        let keyed = request.idempotency_key.is_some() || request.events.iter().all(|e| e.idempotency_key.is_some());
        if !keyed {
            continue;
        }
        match ledger.append(request) {
            Ok(a) if a.receipts.iter().all(|r| r.replayed) && a.receipts.iter().map(|r| (r.seq, r.hash)).collect::<Vec<_>>() == *receipts => {}
            other => problems.push(format!("{name}: a retry after recovery gave {other:?}, not a replay of {receipts:?}")),
        }
    }
    let mut keys: HashMap<String, u64> = HashMap::new();
    match ledger.events_after(0, 100_000) {
        Ok(events) => {
            for e in events {
                if let Some(k) = &e.event.idempotency_key
                    && let Some(first) = keys.insert(k.clone(), e.seq()) {
                        problems.push(format!("key {k} names seq {first} and seq {}", e.seq()));
                    }
            }
        }
        Err(e) => problems.push(format!("read: {e}")),
    }
    if let Err(e) = ledger.verify(|_| {}) {
        problems.push(format!("verify: {e}"));
    }
    if let Some(size) = acks.checkpoint {
        match ledger.latest_checkpoint() {
            Ok(Some(latest)) if latest.checkpoint.size >= size => {}
            other => problems.push(format!("checkpoint {size} was acknowledged; the latest is {other:?}")),
        }
    }
    problems
}
