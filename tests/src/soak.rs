//! The crash soak: cycles of a real `cledger serve` under concurrent HTTP writers, killed with
//! SIGKILL at a random moment and started again. After every restart:
//! - `cledger verify --data` passes (checked while the server is down);
//! - every event acknowledged (a 201's `seq` and `hash`) is stored with that hash;
//! - an idempotency key maps to exactly one set of seqs, however often its request is retried
//!   (acknowledged or not before the kill), and no event's content is stored twice;
//! - every few cycles, the persisted views equal views rebuilt from the chain (on a copy).
//!
//! Writers send single events, atomic batches, and retries of keyed requests with the same
//! `Idempotency-Key` and body. Each event is an SLA credit whose `reason` is unique: the rules
//! accept two equal credits, so only the idempotency layer keeps a retry from counting twice.
//!
//! Used by tests/tests/crash_soak.rs (a few cycles in CI) and scripts/crash-soak.sh N.

use crate::server::{event, small_grant, Api, Server};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Writer threads per cycle.
const WRITERS: usize = 3;
/// The kill comes this many milliseconds after the writers start (uniformly).
const KILL_AFTER_MS: std::ops::Range<u64> = 5..300;
/// Persisted views are compared with rebuilt ones every this many cycles (and after the last).
const VIEWS_EVERY: usize = 10;
/// A writer's pause between requests, in milliseconds (uniformly).
const PAUSE_MS: std::ops::Range<u64> = 5..20;
/// Most events one batch carries here.
const BATCH_MAX: u64 = 4;

/// xorshift64*: reproducible choices from a seed that failures print.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One write request, kept so that it can be sent again exactly.
#[derive(Clone, Debug)]
struct Request {
    key: Option<String>,
    batch: bool,
    body: Value,
    /// The `reason` of each event, in request order.
    reasons: Vec<String>,
}

/// What the server acknowledged, and what was written to it without an answer.
#[derive(Default)]
struct Acks {
    /// seq -> hash of every acknowledged event.
    events: BTreeMap<u64, String>,
    /// Idempotency key -> the (seq, hash) list of its first acknowledgement.
    keys: HashMap<String, Vec<(u64, String)>>,
    /// Event reason -> acknowledged seq.
    reasons: HashMap<String, u64>,
    /// Keyed requests acknowledged: retried now and then, they must be replayed.
    keyed: Vec<Request>,
    /// Keyed requests sent without an answer (the server died): retried after the restart.
    unanswered: Vec<Request>,
    /// Acknowledged events not yet checked against the store.
    unchecked: Vec<(u64, String)>,
    replays: u64,
    requests: u64,
}

impl Acks {
    /// Records a 201 for `request`: its receipts must agree with everything acknowledged before.
    fn record(&mut self, request: &Request, reply: &Value, replayed: bool, seed: u64) {
        let receipts: Vec<(u64, String)> = if request.batch {
            reply["receipts"].as_array().expect("receipts").iter().map(receipt).collect()
        } else {
            vec![receipt(reply)]
        };
        assert_eq!(receipts.len(), request.reasons.len(), "one receipt per event (seed {seed})");
        self.requests += 1;
        if replayed {
            self.replays += 1;
        }
        if let Some(key) = &request.key {
            match self.keys.get(key) {
                Some(first) => assert_eq!(first, &receipts, "key {key} answered with other events than before (seed {seed})"),
                None => {
                    self.keys.insert(key.clone(), receipts.clone());
                    self.keyed.push(request.clone());
                }
            }
        }
        for ((seq, hash), reason) in receipts.iter().zip(&request.reasons) {
            if let Some(before) = self.events.insert(*seq, hash.clone()) {
                assert_eq!(&before, hash, "seq {seq} acknowledged with two hashes (seed {seed})");
            }
            if let Some(before) = self.reasons.insert(reason.clone(), *seq) {
                assert_eq!(before, *seq, "`{reason}` acknowledged as seq {before} and as seq {seq}: a duplicate (seed {seed})");
            }
            self.unchecked.push((*seq, hash.clone()));
        }
    }
}

fn receipt(r: &Value) -> (u64, String) {
    (r["seq"].as_u64().expect("receipt seq"), r["hash"].as_str().expect("receipt hash").to_string())
}

/// What the store holds, read back after each restart.
#[derive(Default)]
struct Stored {
    /// seq -> hash of every stored event.
    events: BTreeMap<u64, String>,
    /// Credit reason -> its seq; a reason stored twice is a duplicate.
    reasons: HashMap<String, u64>,
}

/// The figures of a finished soak.
#[derive(Debug)]
pub struct Summary {
    pub cycles: usize,
    pub acknowledged_events: usize,
    pub stored_events: usize,
    pub keys: usize,
    pub requests: u64,
    pub replays: u64,
    pub unanswered_retried: u64,
    pub views_checks: usize,
    pub duplicates: u64,
    pub elapsed: Duration,
}

pub struct Soak {
    server: Server,
    seed: u64,
    rng: Rng,
    acks: Arc<Mutex<Acks>>,
    stored: Stored,
    unanswered_retried: u64,
    views_checks: usize,
}

impl Soak {
    /// A server on a new data directory, its contracts granted (one per writer).
    pub fn start(seed: u64) -> Soak {
        let server = Server::start();
        for w in 0..WRITERS {
            let reply = server.append_keyed(&small_grant(&format!("soak-{w}")), &format!("grant-{w}"));
            assert_eq!(reply.status, 201, "{}", reply.text);
        }
        Soak {
            server,
            seed,
            rng: Rng::new(seed),
            acks: Arc::default(),
            stored: Stored::default(),
            unanswered_retried: 0,
            views_checks: 0,
        }
    }

    /// Counts so far, for progress lines of a long run.
    pub fn progress(&self) -> String {
        let acks = self.acks.lock().unwrap();
        format!(
            "{} acknowledged events checked, {} stored, {} keys, {} replays, {} retried after a kill, 0 duplicates",
            acks.events.len(),
            self.stored.events.len(),
            acks.keys.len(),
            acks.replays,
            self.unanswered_retried
        )
    }

    pub fn data(&self) -> &Path {
        &self.server.data
    }

    /// One cycle: writers, a SIGKILL, the offline checks, a restart and the online checks.
    pub fn cycle(&mut self, cycle: usize, last: bool) {
        let seed = self.seed;
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let api: Api = (*self.server).clone();
                let acks = self.acks.clone();
                let stop = stop.clone();
                let rng = Rng::new(self.rng.next());
                std::thread::spawn(move || write_until_stopped(&api, w, cycle, rng, &acks, &stop, seed))
            })
            .collect();
        let kill_after = KILL_AFTER_MS.start + self.rng.below(KILL_AFTER_MS.end - KILL_AFTER_MS.start);
        std::thread::sleep(Duration::from_millis(kill_after));
        self.server.kill();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.join().expect("a writer panicked");
        }

        crate::server::verify_ok(self.data());
        if last || cycle % VIEWS_EVERY == VIEWS_EVERY - 1 {
            check_views(self.data());
            self.views_checks += 1;
        }
        self.server.start_again();
        self.read_back(cycle);
        self.retry_unanswered();
    }

    /// Reads every event stored since the last look, and checks the acknowledged ones.
    fn read_back(&mut self, cycle: usize) {
        let seed = self.seed;
        let mut after = self.stored.events.keys().next_back().copied().unwrap_or(0);
        loop {
            let page = self.server.get_json(&format!("/v1/events?after={after}&limit=1000"));
            let events = page["events"].as_array().expect("events");
            for e in events {
                let seq = e["seq"].as_u64().expect("seq");
                let hash = e["hash"].as_str().expect("hash").to_string();
                let prev = self.stored.events.get(&(seq - 1)).map_or(Value::Null, |h| json!(h));
                assert!(seq == 1 || e["prev_hash"] == prev, "cycle {cycle}: seq {seq} does not link to seq {} (seed {seed})", seq - 1);
                if let Some(reason) = e["event"]["data"]["reason"].as_str()
                    && let Some(before) = self.stored.reasons.insert(reason.to_string(), seq)
                {
                    panic!("cycle {cycle}: `{reason}` is stored twice, as seq {before} and seq {seq}: a duplicate (seed {seed})");
                }
                self.stored.events.insert(seq, hash);
                after = seq;
            }
            if page["next_after"].is_null() {
                break;
            }
        }
        let mut acks = self.acks.lock().unwrap();
        for (seq, hash) in std::mem::take(&mut acks.unchecked) {
            assert_eq!(self.stored.events.get(&seq), Some(&hash), "cycle {cycle}: acknowledged seq {seq} is lost or changed (seed {seed})");
        }
        for (reason, seq) in &acks.reasons {
            assert_eq!(self.stored.reasons.get(reason), Some(seq), "cycle {cycle}: `{reason}` acknowledged as seq {seq} (seed {seed})");
        }
    }

    /// Sends again every keyed request the kill left without an answer: each is stored at most
    /// once, whether it was committed before the kill (a replay) or not (appended now).
    fn retry_unanswered(&mut self) {
        let unanswered = std::mem::take(&mut self.acks.lock().unwrap().unanswered);
        for request in unanswered {
            let reply = send(&self.server, &request).unwrap_or_else(|e| panic!("retry after restart: {e}"));
            assert_eq!(reply.status, 201, "retry of {:?}: {}", request.key, reply.text);
            let replayed = reply.header("idempotent-replayed").is_some();
            self.acks.lock().unwrap().record(&request, &reply.json(), replayed, self.seed);
            self.unanswered_retried += 1;
        }
    }

    /// Stops the server cleanly and checks everything once more, from the stored log.
    pub fn finish(mut self, cycles: usize, started: Instant) -> Summary {
        self.read_back(cycles);
        self.server.stop_ok();
        crate::server::verify_ok(self.data());
        check_views(self.data());
        let log = crate::server::log_json(self.data());
        let stored: BTreeMap<u64, String> =
            log.iter().map(|v| (v["seq"].as_u64().expect("seq"), v["hash"].as_str().expect("hash").to_string())).collect();
        let acks = self.acks.lock().unwrap();
        for (seq, hash) in &acks.events {
            assert_eq!(stored.get(seq), Some(hash), "acknowledged seq {seq} lost or changed (seed {})", self.seed);
        }
        for (key, receipts) in &acks.keys {
            for (seq, hash) in receipts {
                assert_eq!(stored.get(seq), Some(hash), "key {key}: seq {seq} (seed {})", self.seed);
            }
        }
        let mut reasons: HashMap<&str, u64> = HashMap::new();
        let mut duplicates = 0;
        for v in &log {
            if let Some(reason) = v["event"]["data"]["reason"].as_str() {
                *reasons.entry(reason).or_default() += 1;
                if reasons[reason] > 1 {
                    duplicates += 1;
                }
            }
        }
        Summary {
            cycles,
            acknowledged_events: acks.events.len(),
            stored_events: stored.len(),
            keys: acks.keys.len(),
            requests: acks.requests,
            replays: acks.replays,
            unanswered_retried: self.unanswered_retried,
            views_checks: self.views_checks + 1,
            duplicates,
            elapsed: started.elapsed(),
        }
    }
}

fn credit(w: usize, reason: &str) -> Value {
    event(&format!("soak-{w}"), "sla_credit_issued", "2026-02-01", json!({"amount": "0.01", "reason": reason}))
}

fn send(api: &Api, r: &Request) -> Result<crate::server::Reply, reqwest::Error> {
    let path = if r.batch { "/v1/events/batch" } else { "/v1/events" };
    let headers: Vec<(&str, &str)> = r.key.iter().map(|k| ("Idempotency-Key", k.as_str())).collect();
    api.try_call("POST", path, &headers, Some(r.body.to_string().into_bytes()))
}

/// One writer: requests until stopped or the server is gone.
fn write_until_stopped(api: &Api, w: usize, cycle: usize, mut rng: Rng, acks: &Mutex<Acks>, stop: &AtomicBool, seed: u64) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let tag = format!("c{cycle}-w{w}-n{n}");
        let choice = rng.below(20);
        let retry = choice <= 2;
        let request = match choice {
            // A retry of an acknowledged keyed request: must be replayed, never appended.
            0..=2 => {
                let acks = acks.lock().unwrap();
                if acks.keyed.is_empty() {
                    continue;
                }
                acks.keyed[rng.below(acks.keyed.len() as u64) as usize].clone()
            }
            3..=7 => {
                let count = 2 + rng.below(BATCH_MAX - 1);
                let reasons: Vec<String> = (0..count).map(|i| format!("{tag}-{i}")).collect();
                let events: Vec<Value> = reasons.iter().map(|r| credit(w, r)).collect();
                Request { key: Some(format!("k-{tag}")), batch: true, body: json!({ "events": events }), reasons }
            }
            8..=10 => Request { key: None, batch: false, body: credit(w, &tag), reasons: vec![tag] },
            _ => Request { key: Some(format!("k-{tag}")), batch: false, body: credit(w, &tag), reasons: vec![tag] },
        };
        match send(api, &request) {
            Ok(reply) if reply.status == 201 => {
                let replayed = reply.header("idempotent-replayed").is_some();
                assert!(replayed || !retry, "writer {w}: a retry of {:?} was not a replay (seed {seed})", request.key);
                acks.lock().unwrap().record(&request, &reply.json(), replayed, seed);
            }
            Ok(reply) => panic!("writer {w}: {} {} (seed {seed})", reply.status, reply.text),
            Err(_) => {
                // The server died with the request in flight: its outcome is unknown until a
                // retry with the same key tells (a request without a key stays unknown).
                if request.key.is_some() {
                    acks.lock().unwrap().unanswered.push(request);
                }
                return;
            }
        }
        // A pause between requests keeps the ledger growing by tens of events a cycle, so a
        // thousand cycles' per-cycle checks (`verify` reads the whole chain) stay quick.
        std::thread::sleep(Duration::from_millis(PAUSE_MS.start + rng.below(PAUSE_MS.end - PAUSE_MS.start)));
    }
}

/// The persisted views of the ledger in `data` (the server stopped) equal views rebuilt
/// from its chain on a copy.
pub fn check_views(data: &Path) {
    let copy = tempfile::tempdir().expect("tempdir");
    let rebuilt_dir = copy.path().join("data");
    crate::audit::copy_dir(data, &rebuilt_dir);
    let incremental = {
        let ledger = ledger::Ledger::open(data, ledger::Options::default()).expect("open the ledger");
        ledger.persisted_views().expect("read the views")
    };
    ledger::Ledger::rebuild_views(&rebuilt_dir, |_, _| {}).expect("rebuild the views");
    let rebuilt = {
        let ledger = ledger::Ledger::open(&rebuilt_dir, ledger::Options::default()).expect("open the copy");
        ledger.persisted_views().expect("read the rebuilt views")
    };
    assert_eq!(incremental.states.len(), rebuilt.states.len(), "as many views as a rebuild makes");
    assert!(incremental == rebuilt, "the persisted views differ from views rebuilt from the chain");
}
