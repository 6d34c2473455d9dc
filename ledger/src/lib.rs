//! The append-only ledger on sled.
//!
//! One writer thread owns every write. Appenders hand it requests through a bounded queue;
//! it takes as many as are waiting (up to a bound), decides on each against the contracts'
//! states ([`projections::admit`]), writes every accepted event of the group with one sled
//! batch, flushes, fsyncs ([`durable`]), and only then answers. So concurrent appends share
//! one sync (group commit), no check can race a write, and an acknowledged event is on disk.
//!
//! Readers read sled directly but never past the durable head: nothing is visible before it
//! is acknowledged.

pub mod block;
pub mod checkpoints;
mod durable;
mod idempotency;
pub mod io;
pub mod keys;
pub mod migrate;
pub mod store;
mod verify;
pub mod views;
mod writer;

pub use idempotency::{fingerprint, KeyRecord};
pub use store::Record;
pub use verify::{check_record, ChainVerifier, VerifyFailure};

use events::merkle;
use events::{ContractId, Digest, Proposal, RecordedEvent, Rejection, Stream, Timestamp};
use projections::{ContractState, LedgerFacts};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Most events in one atomic batch or one prefix request.
pub const REQUEST_EVENTS_MAX: usize = 10_000;
/// Most events the writer puts in one commit (one sled batch, one fsync).
pub const GROUP_EVENTS_MAX: usize = 20_000;
/// Requests waiting for the writer; appenders block (back-pressure) when it is full.
pub const QUEUE_REQUESTS_MAX: usize = 4_096;

/// The position and hash of the last durable event (the tip new events are sealed onto).
pub type ChainHead = projections::Tip;

/// Locks a mutex whether or not a panicking holder poisoned it. Readers never change the
/// states they lock, so a reader's panic leaves nothing half-changed; the writer's own panic
/// stops the writer (and readers never look past the durable head).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why the writer stopped taking writes for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// A commit's batch, flush or fsync failed.
    Commit,
    /// The writer thread panicked (a bug).
    Panic,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Commit => "commit",
            FailureKind::Panic => "panic",
        }
    }
}

/// The writer's end: what happened, and when.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct WriterFailure {
    pub kind: FailureKind,
    pub reason: String,
    pub at: Timestamp,
}

impl WriterFailure {
    pub fn new(kind: FailureKind, reason: String) -> WriterFailure {
        WriterFailure { kind, reason, at: system_clock() }
    }
}

/// What an appended event got from the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    pub stream: Stream,
    pub version: u64,
    pub hash: Digest,
    pub prev_hash: Digest,
    pub recorded_at: Timestamp,
    /// True when an idempotency key matched and this is the original answer, not a new event.
    pub replayed: bool,
}

impl Receipt {
    pub fn of(recorded: &RecordedEvent, replayed: bool) -> Receipt {
        let e = &recorded.event;
        Receipt {
            seq: e.seq,
            stream: e.stream.clone(),
            version: e.version,
            hash: recorded.hash,
            prev_hash: e.prev_hash,
            recorded_at: e.recorded_at,
            replayed,
        }
    }
}

/// How the events of one request are decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// All events or none (`POST /v1/events` and `/v1/events/batch`).
    Atomic,
    /// In order, each on its own, stopping at the first refused one; the ones before it are
    /// appended (`cledger import`). Each event's own idempotency key makes it replayable.
    Prefix,
}

#[derive(Clone, Debug)]
pub struct AppendRequest {
    pub events: Vec<Proposal>,
    pub mode: Mode,
    /// A key for the request as a whole (the `Idempotency-Key` header). Events may also
    /// carry their own keys.
    pub idempotency_key: Option<String>,
    /// The actor of events that do not name one.
    pub actor: String,
}

impl AppendRequest {
    pub fn one(proposal: Proposal, actor: &str) -> AppendRequest {
        AppendRequest { events: vec![proposal], mode: Mode::Atomic, idempotency_key: None, actor: actor.to_string() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// One receipt per event appended or replayed, in request order.
    pub receipts: Vec<Receipt>,
    /// In [`Mode::Prefix`]: the first refused event's index and why. Nothing after it was tried.
    pub refused: Option<(usize, Rejection)>,
}

/// Why a request was not appended. Only `Rejected` and `RequestRefused` are the caller's
/// doing; the rest are the ledger's (HTTP 5xx), and none of them wrote anything.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// Event `index` of the request was refused (nothing of the request is written).
    #[error("event {index}: {rejection}")]
    Rejected { index: usize, rejection: Rejection },
    /// The request as a whole was refused: empty, too large, its idempotency key reused
    /// for another request, or its key or actor malformed.
    #[error("{0}")]
    RequestRefused(Rejection),
    /// The writer is not taking writes: the ledger was closed (`None`), or the writer
    /// failed and stopped for good (why). Nothing of the request was acknowledged.
    #[error("the ledger is not taking writes: {}", .0.as_ref().map_or("it is closed".to_string(), |f| f.to_string()))]
    Stopped(Option<WriterFailure>),
    /// Deciding needed a read of the store, and the read failed; retry later.
    #[error("the store could not be read: {0}")]
    Storage(String),
    /// Deciding read stored data that fails its checks.
    #[error("stored data is damaged: {0}")]
    Corrupt(VerifyFailure),
    /// A bug: the rules admitted an event its state refused to fold.
    #[error("internal error: {0}")]
    Internal(String),
    /// This node does not take writes now (replicated mode: another node leads, or none
    /// does yet). Nothing was written; send the request to the leader.
    #[error("this node is not the leader")]
    NotLeader,
    /// The group could not be replicated (replicated mode): nothing was written or
    /// acknowledged anywhere; the request may be retried (with its idempotency key).
    #[error("not replicated: {0}")]
    NotReplicated(String),
    /// The group was sent to the replicated log, but whether the log stored it is unknown
    /// (no acknowledgement in time, the connection failed after the commit was sent). It
    /// may have been written: retry only with the same idempotency key, which replays it if
    /// it was. The node stops writing until it has caught up with the log.
    #[error("replication outcome unknown: {0}")]
    ReplicationOutcomeUnknown(String),
}

/// A group of events about to be committed, handed to the [`Replicator`] first.
pub struct ReplicationGroup<'a> {
    /// The durable head the group follows: the stream must end there.
    pub after: u64,
    /// The group's events, in seq order (`after + 1` on).
    pub events: Vec<&'a RecordedEvent>,
    /// The idempotency records the group writes, each with its key.
    pub keys: Vec<(&'a str, KeyRecord)>,
}

/// Why a group was not replicated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplicationError {
    /// The replicated log does not end at the writer's head: another writer appended. This
    /// node must stop writing and follow.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The replicated log definitely stored nothing of the group (it refused it, or the
    /// group was never sent whole). The writer rolls the group back and goes on.
    #[error("{0}")]
    Unavailable(String),
    /// The group was sent, but whether the log stored it is unknown (a timeout, a transport
    /// error after the commit was sent). The writer rolls it back and stops writing, like
    /// [`ReplicationError::Fenced`], so the node catches up with the log (which may hold the
    /// group) before it writes again.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// Makes a group durable elsewhere before the writer commits it locally (replicated mode):
/// called on the writer thread with each group; `Ok` only once every event is stored by a
/// quorum. A group it refuses is rolled back and never acknowledged.
pub trait Replicator: Send + Sync {
    fn replicate(&self, group: &ReplicationGroup<'_>) -> Result<(), ReplicationError>;

    /// Most events the log takes in one atomic append. The writer never hands it a larger
    /// group (it closes a group early, and refuses a request larger than this), so a
    /// request's events are never split between two appends of the log.
    fn group_events_max(&self) -> usize {
        GROUP_EVENTS_MAX
    }
}

/// The answer to a submitted request, to wait for (`recv`, or `.await`).
pub type AppendAnswer = oneshot::Receiver<Result<Appended, AppendError>>;

#[derive(Debug)]
pub enum TrySubmitError {
    /// The queue is full; here is the request back.
    Full(AppendRequest),
    Unavailable(AppendError),
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data directory {0} is in use by another process (sled holds a lock on it)")]
    Locked(PathBuf),
    #[error("cannot open the store in {dir}: {source}")]
    Storage { dir: PathBuf, source: sled::Error },
    #[error("cannot sync {dir} to disk: {source}")]
    Io { dir: PathBuf, source: std::io::Error },
    #[error("the store in {dir} has layout {found}; this build reads layout {expected}{}", if *.found == "1" { " (convert it with `cledger migrate --data DIR`)" } else { "" })]
    Format { dir: PathBuf, found: String, expected: u32 },
    #[error("the store is damaged at its head: {0}")]
    Corrupt(VerifyFailure),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("stored data is damaged: {0}")]
    Corrupt(VerifyFailure),
}

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    Storage(ReadError),
}

impl From<merkle::ProofError<ReadError>> for ProofError {
    fn from(e: merkle::ProofError<ReadError>) -> ProofError {
        match e {
            merkle::ProofError::OutOfRange(m) => ProofError::OutOfRange(m),
            merkle::ProofError::Storage(s) => ProofError::Storage(s),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("known_at {known_at} is beyond the ledger's head ({head})")]
pub struct BeyondHead {
    pub known_at: u64,
    pub head: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("{0}")]
    Failed(VerifyFailure),
}

/// Counters for `/metrics` and the benchmark.
#[derive(Debug, Default)]
pub struct Counters {
    pub commits: AtomicU64,
    pub events_appended: AtomicU64,
    pub requests: AtomicU64,
    pub requests_refused: AtomicU64,
    pub sync_micros_total: AtomicU64,
    pub sync_micros_max: AtomicU64,
}

pub struct Options {
    /// Source of `recorded_at`. The writer never lets it go backwards along the chain.
    pub clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    /// Fail one durable-path operation as planned (tests; see [`io`]).
    pub faults: Option<io::FaultPlan>,
    /// Record every durable-path operation (tests sweep faults over them; see [`Ledger::io_trace`]).
    pub record_io: bool,
    /// Replicated mode: every group goes through it before the local commit, and the
    /// ledger starts not taking writes until [`Ledger::set_leading`] says it leads.
    pub replicator: Option<Arc<dyn Replicator>>,
    /// Contract states stay in memory until the loaded ones hold this many events; beyond
    /// it, a state a reader loaded is unloaded after the read if all of it is saved, and
    /// after each save the writer unloads saved states down to three quarters of it. What
    /// is needed again is loaded again (a portfolio query past the budget reloads states
    /// each time). It cannot bound the states one save interval touches: an import that
    /// interleaves every contract changes them all between two saves (past the budget,
    /// each save turns them into billing states, about a fifth of their size).
    pub views_resident_events: u64,
    /// Snapshot bytes one save of the views writes before it puts the other snapshots due
    /// off to later saves ([`views::SAVE_SNAPSHOT_BYTES_MAX`]; lower in tests).
    pub views_save_snapshot_bytes: usize,
    /// Most milliseconds between two saves of the views while the writer goes on
    /// ([`views::PERSIST_EVERY_MS`]; lower in the crash test, so that kills land in saves).
    pub views_persist_every_ms: u64,
}

/// The system clock, in microseconds since the Unix epoch.
pub fn system_clock() -> Timestamp {
    let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    Timestamp(i64::try_from(micros).unwrap_or(i64::MAX))
}

impl Default for Options {
    fn default() -> Options {
        Options { clock: Arc::new(system_clock), faults: None, record_io: false, replicator: None, views_resident_events: views::RESIDENT_EVENTS_DEFAULT, views_save_snapshot_bytes: views::SAVE_SNAPSHOT_BYTES_MAX, views_persist_every_ms: views::PERSIST_EVERY_MS as u64 }
    }
}

struct Shared {
    tree: sled::Tree,
    views_tree: sled::Tree,
    views: views::Views,
    /// Ledger-wide facts as of the durable head.
    ledger_facts: Mutex<LedgerFacts>,
    durable: tokio::sync::watch::Sender<ChainHead>,
    failure: Mutex<Option<WriterFailure>>,
    counters: Counters,
    io: io::Io,
    /// Whether appends are taken (always, unless replicated mode says this node does not
    /// lead). The writer clears it itself when it is fenced.
    leading: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Records the writer's end: kept for `failure()`, logged, and exported as a metric.
    fn record_failure(&self, failure: WriterFailure) {
        tracing::error!(kind = failure.kind.as_str(), "the ledger writer stopped: {}", failure.reason);
        metrics::gauge!("ledger_writer_failed").set(1.0);
        metrics::counter!("ledger_writer_failures_total", "kind" => failure.kind.as_str()).increment(1);
        *lock(&self.failure) = Some(failure);
    }
}

enum Job {
    Append { request: AppendRequest, reply: oneshot::Sender<Result<Appended, AppendError>> },
    /// Events recorded elsewhere (a follower copying its leader's stream), with the
    /// idempotency records the leader wrote with them.
    Replicate { events: Vec<RecordedEvent>, keys: Vec<(String, KeyRecord)>, reply: oneshot::Sender<Result<Replicated, AppendError>> },
}

impl Job {
    fn events(&self) -> usize {
        match self {
            Job::Append { request, .. } => request.events.len(),
            Job::Replicate { events, .. } => events.len(),
        }
    }
}

/// What [`Ledger::replicate`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replicated {
    /// Events stored (a prefix of those given).
    pub stored: usize,
    /// The first event refused, and why: it does not continue the chain, or does not fold.
    pub refused: Option<VerifyFailure>,
    pub head: ChainHead,
}

/// The ledger: cheap to share behind an `Arc`; all methods take `&self`.
pub struct Ledger {
    dir: PathBuf,
    db: sled::Db,
    shared: Arc<Shared>,
    jobs: Mutex<Option<std::sync::mpsc::SyncSender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir` and checks its head.
    pub fn open(dir: &Path, options: Options) -> Result<Ledger, OpenError> {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Io { dir: dir.into(), source })?;
        let db = open_db(dir)?;
        let storage = |source| OpenError::Storage { dir: dir.into(), source };
        let tree = db.open_tree("ledger").map_err(storage)?;
        match tree.get(keys::META_FORMAT).map_err(storage)? {
            None if tree.is_empty() => {
                tree.insert(keys::META_FORMAT, &keys::STORE_FORMAT.to_be_bytes()).map_err(storage)?;
                db.flush().map_err(storage)?;
            }
            Some(v) if v.as_ref() == keys::STORE_FORMAT.to_be_bytes() => {}
            other => {
                let found = match other.as_deref().and_then(|v| <[u8; 4]>::try_from(v).ok()) {
                    Some(v) => u32::from_be_bytes(v).to_string(),
                    None => "none (but the store is not empty)".into(),
                };
                return Err(OpenError::Format { dir: dir.into(), found, expected: keys::STORE_FORMAT });
            }
        }
        let disk = durable::DiskSync::open(dir).map_err(|source| OpenError::Io { dir: dir.into(), source })?;
        let head = check_head(&tree).map_err(|e| open_error(dir, e))?;
        let io = io::Io::new(options.faults, options.record_io);
        let views_tree = db.open_tree("views").map_err(storage)?;
        // The directory of contracts, and the events after the views' cursor folded in;
        // views that cannot be used are rebuilt from the chain, never a reason not to start.
        let mut opened = views::open(&tree, &views_tree, head.seq, &io).map_err(|e| open_error(dir, e))?;
        opened.views.set_resident_budget(options.views_resident_events);
        opened.views.set_save_snapshot_bytes_max(options.views_save_snapshot_bytes);
        let ledger_facts = opened.ledger;
        if opened.cursor < head.seq || views_tree.is_empty() {
            // Events were folded in to catch up: save the result, so the next open does not
            // fold them again. (A new store saves its empty views too, as a rebuild would.)
            opened.views.persist(&opened.dirty, &ledger_facts, head.seq, &io, io::Op::OpenBatch).map_err(|e| open_error(dir, e))?;
        }
        let (durable, _) = tokio::sync::watch::channel(head);
        let shared = Arc::new(Shared {
            tree,
            views_tree,
            views: opened.views,
            ledger_facts: Mutex::new(ledger_facts.clone()),
            durable,
            failure: Mutex::new(None),
            counters: Counters::default(),
            io,
            leading: std::sync::atomic::AtomicBool::new(options.replicator.is_none()),
        });
        let frontier = load_tree(&shared.tree, &shared.io, head.seq).map_err(|e| open_error(dir, e))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_REQUESTS_MAX);
        let writer = writer::Writer::new(db.clone(), shared.clone(), disk, head, frontier, ledger_facts, options, rx);
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run())
            .map_err(|source| OpenError::Io { dir: dir.into(), source })?;
        Ok(Ledger { dir: dir.into(), db, shared, jobs: Mutex::new(Some(tx)), writer: Mutex::new(Some(handle)) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends and waits until the events are durable (or refused).
    pub fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        match self.submit(request) {
            Ok(reply) => reply.recv().unwrap_or_else(|_| Err(self.unavailable())),
            Err(e) => Err(e),
        }
    }

    /// Queues a request; the answer arrives on the returned channel once durable. The
    /// receiver can be awaited (async) or `recv`ed (blocking).
    pub fn submit(&self, request: AppendRequest) -> Result<AppendAnswer, AppendError> {
        let (reply, answer) = oneshot::channel();
        let sender = lock(&self.jobs).clone().ok_or_else(|| self.unavailable())?;
        sender.send(Job::Append { request, reply }).map_err(|_| self.unavailable())?;
        Ok(answer)
    }

    /// Like [`Ledger::submit`], but never blocks: a full queue gives the request back, so
    /// an async caller can wait for room off its executor.
    pub fn try_submit(&self, request: AppendRequest) -> Result<oneshot::Receiver<Result<Appended, AppendError>>, TrySubmitError> {
        let (reply, answer) = oneshot::channel();
        let sender = lock(&self.jobs).clone().ok_or_else(|| TrySubmitError::Unavailable(self.unavailable()))?;
        match sender.try_send(Job::Append { request, reply }) {
            Ok(()) => Ok(answer),
            Err(std::sync::mpsc::TrySendError::Full(Job::Append { request, .. })) => Err(TrySubmitError::Full(request)),
            Err(std::sync::mpsc::TrySendError::Full(_)) => Err(TrySubmitError::Unavailable(self.unavailable())),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(TrySubmitError::Unavailable(self.unavailable())),
        }
    }

    /// Stores events recorded by another ledger (a follower copying its leader), after
    /// checking that each continues the chain (seq, prev_hash, hash of its bytes,
    /// recorded_at) and folds into its contract. Stops at the first that does not; the ones
    /// before it are stored. Returns when they are durable.
    pub async fn replicate(&self, events: Vec<RecordedEvent>) -> Result<Replicated, AppendError> {
        self.replicate_with_keys(events, vec![]).await
    }

    /// [`Ledger::replicate`], storing with the events the idempotency records their leader
    /// wrote (each with its key; a record's events must be among those stored before it or
    /// with it), so a retry sent to this node after a failover is answered as a replay.
    pub async fn replicate_with_keys(&self, events: Vec<RecordedEvent>, keys: Vec<(String, KeyRecord)>) -> Result<Replicated, AppendError> {
        let (reply, answer) = oneshot::channel();
        let sender = lock(&self.jobs).clone().ok_or_else(|| self.unavailable())?;
        let job = Job::Replicate { events, keys, reply };
        // The queue is bounded: wait for room off the async executor.
        let sent = match sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || sender.send(job).map_err(|_| ())).await.unwrap_or(Err(()))
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(()),
        };
        sent.map_err(|_| self.unavailable())?;
        answer.await.unwrap_or_else(|_| Err(self.unavailable()))
    }

    /// Records how far the events have been published (the NATS outbox cursor). Written
    /// without its own sync: the stream's last sequence is the authority on restart; this
    /// is what the ledger remembers and reports.
    pub fn record_published(&self, seq: u64) -> Result<(), ReadError> {
        self.shared.tree.insert(keys::META_PUBLISHED, &seq.to_be_bytes())?;
        Ok(())
    }

    /// The last seq recorded by [`Ledger::record_published`] (0 if never).
    pub fn published(&self) -> Result<u64, ReadError> {
        Ok(self.shared.tree.get(keys::META_PUBLISHED)?.and_then(|v| keys::u64_value(&v)).unwrap_or(0))
    }

    fn unavailable(&self) -> AppendError {
        AppendError::Stopped(self.failure())
    }

    /// Replicated mode: whether this node takes appends (it leads). Appends taken while
    /// leading are still fenced by the replicated log's position, whatever this says.
    pub fn set_leading(&self, leading: bool) {
        self.shared.leading.store(leading, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_leading(&self) -> bool {
        self.shared.leading.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Why the writer stopped taking writes, if it failed.
    pub fn failure(&self) -> Option<WriterFailure> {
        lock(&self.shared.failure).clone()
    }

    /// The durable-path operations run since open, in order (when `Options::record_io`).
    pub fn io_trace(&self) -> Vec<io::Op> {
        self.shared.io.trace()
    }

    /// Stops taking writes, finishes every queued request, and syncs. Reads keep working.
    pub fn close(&self) {
        lock(&self.jobs).take();
        if let Some(handle) = lock(&self.writer).take() {
            let _ = handle.join();
        }
    }

    /// The last durable event.
    pub fn head(&self) -> ChainHead {
        *self.shared.durable.borrow()
    }

    /// Watches the durable head: wakes on every commit.
    pub fn watch_head(&self) -> tokio::sync::watch::Receiver<ChainHead> {
        self.shared.durable.subscribe()
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// The event at `seq`, if it is durable.
    pub fn event(&self, seq: u64) -> Result<Option<RecordedEvent>, ReadError> {
        if seq == 0 || seq > self.head().seq {
            return Ok(None);
        }
        store::event(&self.shared.tree, seq).map(Some)
    }

    /// Up to `limit` durable events after `after`, in seq order.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        let head = self.head().seq;
        let start = after.saturating_add(1);
        if start > head || limit == 0 {
            return Ok(vec![]);
        }
        let to = head.min(start.saturating_add(limit as u64 - 1));
        let records: Vec<Record> = store::records(&self.shared.tree, start, to).collect::<Result<_, _>>()?;
        // Each record's hash check and decoding is its own: on every core for a long page.
        use rayon::prelude::*;
        records.into_par_iter().map(Record::decode).collect()
    }

    /// Stored records (seq, hash, canonical bytes) of durable events after `after`, for
    /// verification and export without decoding.
    pub fn records_after(&self, after: u64) -> impl Iterator<Item = Result<Record, ReadError>> + '_ {
        store::records(&self.shared.tree, after.saturating_add(1), self.head().seq)
    }

    /// Up to `limit` durable events of `stream` with a version above `after_version`. The
    /// seqs come from the live state (which knows each event's version); the events from
    /// the chain.
    pub fn stream_events(&self, stream: &Stream, after_version: u64, limit: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        let head = self.head().seq;
        let seqs = match stream {
            Stream::Ledger => lock(&self.shared.ledger_facts).seqs_after(after_version, head, limit),
            Stream::Contract(id) => match self.shared.views.get(id) {
                Some(slot) => self.shared.views.read_state(&slot, id, head, |state| state.seqs_after(after_version, head, limit))?,
                None => vec![],
            },
        };
        seqs.into_iter().map(|seq| store::event(&self.shared.tree, seq)).collect()
    }

    /// Contract ids in id order, after `after`, with the seq of each grant.
    pub fn contracts(&self, after: Option<&ContractId>, limit: usize) -> Result<Vec<(ContractId, u64)>, ReadError> {
        let head = self.head().seq;
        let start = match after {
            Some(id) => {
                let mut k = keys::contract(id);
                k.push(0);
                k
            }
            None => vec![keys::CONTRACT],
        };
        let mut out = vec![];
        for item in self.shared.tree.range(start..vec![keys::CONTRACT + 1]) {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item?;
            let seq = keys::u64_value(&value).ok_or_else(|| corrupt(0, "malformed contract entry"))?;
            if seq > head {
                continue;
            }
            let id = std::str::from_utf8(&key[1..]).ok().and_then(|s| ContractId::parse(s).ok());
            out.push((id.ok_or_else(|| corrupt(seq, "malformed contract key"))?, seq));
        }
        Ok(out)
    }

    /// The state of a contract, folded anew from its durable events in the chain (a check
    /// of the live state: it reads the whole chain).
    pub fn contract_state(&self, id: &ContractId) -> Result<Option<ContractState>, ReadError> {
        let head = self.head().seq;
        fold_contract(&self.shared.tree, id, head)
    }

    /// Ledger-wide facts (closed period) as of the durable head.
    pub fn ledger_facts(&self) -> LedgerFacts {
        lock(&self.shared.ledger_facts).clone()
    }

    /// A point of view no later than the durable head: `known_at` defaults to the head, and
    /// one beyond it is refused (it would name events nobody can see yet).
    pub fn as_of(&self, date: events::Date, known_at: Option<u64>) -> Result<projections::AsOf, BeyondHead> {
        let head = self.head().seq;
        match known_at {
            Some(k) if k > head => Err(BeyondHead { known_at: k, head }),
            k => Ok(projections::AsOf { date, known_at: k.unwrap_or(head) }),
        }
    }

    /// Runs `f` on the live state of a contract known at `at` (which must come from
    /// [`Ledger::as_of`]); `None` if no such contract. The state is loaded first if it is not
    /// in memory. It may hold events after the durable head: `f` must look at it only
    /// through `at`.
    pub fn with_contract<R>(&self, id: &ContractId, at: &projections::AsOf, f: impl FnOnce(&ContractState) -> R) -> Result<Option<R>, ReadError> {
        let Some(slot) = self.shared.views.get(id) else { return Ok(None) };
        self.shared.views.read_state(&slot, id, self.head().seq, |state| state.known_at(at.known_at).then(|| f(state)))
    }

    /// Runs `f` on a contract known at `at` (which must come from [`Ledger::as_of`]) as a
    /// report reads it: its summary when that answers for `at` (at the head: no state is
    /// loaded), else its state (loaded if need be). `None` if no such contract.
    pub fn with_contract_as_reported<R>(&self, id: &ContractId, at: &projections::AsOf, f: impl FnOnce(projections::Contract<'_>) -> R) -> Result<Option<R>, ReadError> {
        let Some(slot) = self.shared.views.get(id) else { return Ok(None) };
        let head = self.head().seq;
        let summary = self.shared.views.summary(&slot, id, head)?;
        if let Some(contract) = summary_answering(&summary, at, head) {
            return Ok(contract.known_at(at.known_at).then(|| f(contract)));
        }
        self.shared.views.read_state(&slot, id, head, |state| state.known_at(at.known_at).then(|| f(projections::Contract::state(state))))
    }

    /// Runs `f` on every contract known at `at`, in id order, one contract locked (and, if
    /// need be, loaded) at a time.
    pub fn for_each_contract(&self, at: &projections::AsOf, mut f: impl FnMut(&ContractState)) -> Result<(), ReadError> {
        let head = self.head().seq;
        for (id, slot) in self.shared.views.all() {
            self.shared.views.read_state(&slot, &id, head, |state| {
                if state.known_at(at.known_at) {
                    f(state);
                }
            })?;
        }
        Ok(())
    }

    /// `f` of every contract (known at `at` or not: `f` asks [`projections::Contract::known_at`]),
    /// in id order, as a portfolio report reads a contract: its summary (kept in memory for
    /// every contract) when that answers for `at`, else its state (loaded if need be, as
    /// [`Ledger::for_each_contract`] does). At the head this reads no state at all.
    ///
    /// `f` runs on every core over the summaries in memory or saved
    /// ([`views::Views::with_ready_summary`], which neither loads nor waits for a slot's lock);
    /// everything that may load a state (a state, a summary that must be made from one) is
    /// done after, on the calling thread, never on a rayon worker: a load that refolds a
    /// damaged view from the chain itself waits on rayon work, which a pool whose workers
    /// all wait on loads would never run.
    pub fn map_contracts<R: Send>(&self, at: &projections::AsOf, f: impl Fn(projections::Contract<'_>) -> R + Sync) -> Result<Vec<R>, ReadError> {
        use rayon::prelude::*;
        let head = self.head().seq;
        let views = &self.shared.views;
        let slots = views.all();
        // One pass on every core over what answers from a summary; the first portfolio
        // after open reads the saved summaries in it.
        let mut out: Vec<Option<R>> =
            slots.par_iter().map(|(id, slot)| views.with_ready_summary(slot, id, |s| summary_answering(s, at, head).map(&f)).flatten()).collect();
        // The rest (a busy slot, a stale or unreadable summary, a point of view before a
        // contract's last event) on this thread, from its summary made now or its state.
        for ((id, slot), each) in slots.iter().zip(out.iter_mut()).filter(|(_, each)| each.is_none()) {
            let summary = views.summary(slot, id, head)?;
            *each = Some(match summary_answering(&summary, at, head) {
                Some(contract) => f(contract),
                None => views.read_state(slot, id, head, |state| f(projections::Contract::state(state)))?,
            });
        }
        Ok(out.into_iter().map(|each| each.expect("every contract was read from its summary or its state")).collect())
    }

    /// Reads every saved summary not read yet into memory, so that the first portfolio
    /// report after open does not wait for them (a server calls it once after open, on a
    /// thread of its own). One at a time on the calling thread (about 0.1 s at 10,000
    /// contracts), so that requests arriving meanwhile keep the other core. Not at a lower
    /// priority: it holds a slot's lock while it reads that slot's summary, and a request
    /// waiting for the lock would wait for it. Loads no state; what cannot be read is left
    /// for the reader that needs it.
    pub fn read_summaries_ahead(&self) {
        let views = &self.shared.views;
        for (id, slot) in views.all() {
            views.with_ready_summary(&slot, &id, |_| ());
        }
    }

    /// Number of contracts with a live view (including any staged, not yet durable).
    pub fn contract_count(&self) -> usize {
        self.shared.views.len()
    }

    /// The persisted views, folded (snapshots and deltas): for checking that incremental
    /// and rebuilt views agree.
    pub fn persisted_views(&self) -> Result<views::PersistedViews, ReadError> {
        views::persisted(&self.shared.views_tree).map_err(|e| match e {
            views::LoadError::Views(reason) => corrupt(0, &reason),
            views::LoadError::Chain(e) => e,
        })
    }

    /// The persisted views as raw bytes (their encoding is pinned by a test).
    pub fn persisted_views_raw(&self) -> Result<views::RawEntries, sled::Error> {
        views::dump(&self.shared.views_tree)
    }

    /// States in memory (the others are loaded on first use).
    pub fn loaded_contracts(&self) -> usize {
        self.shared.views.loaded()
    }

    /// Contracts the writer holds only the billing state of ([`views::Views::lock_billing`]).
    pub fn billing_contracts(&self) -> usize {
        self.shared.views.billing_held()
    }

    /// Drops and rebuilds the persisted views of the ledger in `dir` from its chain,
    /// verifying every hash and link. The ledger must not be open.
    pub fn rebuild_views(dir: &Path, progress: impl FnMut(u64, u64)) -> Result<views::RebuildReport, OpenError> {
        let db = open_db(dir)?;
        let storage = |source| OpenError::Storage { dir: dir.into(), source };
        let tree = db.open_tree("ledger").map_err(storage)?;
        let views_tree = db.open_tree("views").map_err(storage)?;
        let report = views::rebuild(&tree, &views_tree, progress).map_err(|e| open_error(dir, e))?;
        db.flush().map_err(storage)?;
        Ok(report)
    }

    /// Verifies the whole durable chain and its indexes. `progress` is called with each
    /// verified seq.
    pub fn verify(&self, progress: impl FnMut(u64)) -> Result<ChainHead, VerifyError> {
        self.verify_with_roots(&[], progress).map(|(head, _)| head)
    }

    /// [`Ledger::verify`], which also recomputes the Merkle tree from the event hashes: its
    /// root at the head must equal the stored tree's, and the roots at `sizes` are returned
    /// (to check checkpoints against).
    pub fn verify_with_roots(&self, sizes: &[u64], mut progress: impl FnMut(u64)) -> Result<(ChainHead, Vec<Digest>), VerifyError> {
        let head = self.head();
        let mut verifier = ChainVerifier::new();
        let mut frontier = merkle::Frontier::new();
        let mut roots = vec![None; sizes.len()];
        // Sizes may be many (every kept checkpoint): in size order, so that each event
        // compares its seq with the next one wanted.
        let mut wanted: Vec<(u64, usize)> = sizes.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        wanted.sort_unstable();
        let mut next_wanted = 0;
        let mut note_root = |size: u64, frontier: &merkle::Frontier| {
            while let Some((_, i)) = wanted.get(next_wanted).filter(|(s, _)| *s == size) {
                roots[*i] = Some(frontier.root());
                next_wanted += 1;
            }
        };
        note_root(0, &frontier);
        let mut grants: BTreeMap<ContractId, u64> = BTreeMap::new();
        // Each event's own checks run on every core; links, versions and the tree in order.
        let mut linked = Ok(());
        let decoded = store::decode_in_order_map(&self.shared.tree, 1, head.seq, |event, hash, _| verify::Link::of(event, hash), |link| {
            if let Err(f) = verifier.link_kept(&link) {
                linked = Err(f);
                return Err(corrupt(link.seq, "stop"));
            }
            let seq = link.seq;
            if let (Stream::Contract(id), 1) = (&link.stream, link.version) {
                grants.insert(id.clone(), seq);
            }
            frontier.push_leaf(link.leaf, |_, _, _| {});
            note_root(seq, &frontier);
            progress(seq);
            Ok(())
        });
        linked.map_err(VerifyError::Failed)?;
        decoded.map_err(|e| match e {
            ReadError::Storage(s) => VerifyError::Storage(s),
            ReadError::Corrupt(f) => VerifyError::Failed(f),
        })?;
        // The contract index names exactly the contracts granted, each at its grant.
        let indexed: BTreeMap<ContractId, u64> = self.contracts(None, usize::MAX).map_err(|e| match e {
            ReadError::Storage(s) => VerifyError::Storage(s),
            ReadError::Corrupt(f) => VerifyError::Failed(f),
        })?.into_iter().collect();
        if indexed != grants {
            let wrong = grants.iter().find(|(id, seq)| indexed.get(*id) != Some(seq)).map(|(_, seq)| *seq)
                .or_else(|| indexed.iter().find(|(id, _)| !grants.contains_key(*id)).map(|(_, seq)| *seq))
                .unwrap_or(0);
            return Err(VerifyError::Failed(VerifyFailure { seq: wrong, reason: "the contract index does not match the grants in the chain".into() }));
        }
        let (seq, hash) = verifier.head();
        if seq != head.seq || hash != head.hash {
            return Err(VerifyError::Failed(VerifyFailure {
                seq: seq + 1,
                reason: format!("the recorded head is seq {} ({}), the chain ends at seq {seq}", head.seq, head.hash),
            }));
        }
        let stored = self.merkle_root(head.seq).map_err(|e| VerifyError::Failed(VerifyFailure { seq: head.seq, reason: e.to_string() }))?;
        if stored != frontier.root() {
            return Err(VerifyError::Failed(VerifyFailure {
                seq: head.seq,
                reason: format!("the stored Merkle tree's root {stored} differs from the root of the event hashes {}", frontier.root()),
            }));
        }
        let roots = roots
            .into_iter()
            .zip(sizes)
            .map(|(r, s)| r.ok_or_else(|| VerifyError::Failed(VerifyFailure { seq: *s, reason: format!("no tree of size {s}: the ledger ends at {}", head.seq) })))
            .collect::<Result<_, _>>()?;
        Ok((head, roots))
    }

    /// The Merkle root of the first `size` events (`size` at most the durable head).
    pub fn merkle_root(&self, size: u64) -> Result<Digest, ProofError> {
        self.check_size(size)?;
        merkle::root(&StoredNodes(&self.shared.tree), size).map_err(ProofError::Storage)
    }

    /// RFC 9162 inclusion proof of event `seq` in the tree of `size` events.
    pub fn inclusion_proof(&self, seq: u64, size: u64) -> Result<Vec<Digest>, ProofError> {
        self.check_size(size)?;
        if seq == 0 || seq > size {
            return Err(ProofError::OutOfRange(format!("seq {seq} is not in a tree of {size} events")));
        }
        merkle::inclusion_proof(&StoredNodes(&self.shared.tree), seq - 1, size).map_err(ProofError::from)
    }

    /// RFC 9162 consistency proof from the tree of `first` events to the tree of `second`.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Digest>, ProofError> {
        self.check_size(second)?;
        merkle::consistency_proof(&StoredNodes(&self.shared.tree), first, second).map_err(ProofError::from)
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        let head = self.head().seq;
        if size > head {
            return Err(ProofError::OutOfRange(format!("tree size {size} is beyond the ledger's head ({head})")));
        }
        Ok(())
    }

    /// Flushes sled and fsyncs its log, for writes made outside the writer's commits (the
    /// latest checkpoint). Safe alongside the writer: both only add syncs.
    pub(crate) fn sync_to_disk(&self) -> std::io::Result<()> {
        self.db.flush().map_err(std::io::Error::other)?;
        std::fs::File::open(self.dir.join("db"))?.sync_all()
    }

    /// Bytes sled occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// The contract as its summary gives it, if the summary answers for `at` and `at` is within
/// the durable `head`: a summary may hold staged events, so a point of view past the head
/// (one not made by [`Ledger::as_of`]) is read from the state, which looks through `at`.
fn summary_answering<'s>(summary: &'s projections::Summary, at: &projections::AsOf, head: u64) -> Option<projections::Contract<'s>> {
    if at.known_at > head {
        return None;
    }
    projections::Contract::of_summary(summary, at)
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.close();
    }
}

/// A read failure while opening `dir`: damaged data names its seq.
fn open_error(dir: &Path, e: ReadError) -> OpenError {
    match e {
        ReadError::Storage(source) => OpenError::Storage { dir: dir.into(), source },
        ReadError::Corrupt(f) => OpenError::Corrupt(f),
    }
}

/// Most bytes sled keeps in its page cache.
pub const SLED_CACHE_BYTES: u64 = 128 * 1024 * 1024;

/// Opens sled in `dir`. Background flushing is off: the writer flushes (and fsyncs) at
/// each commit, and nothing else needs to reach the disk on a timer.
///
/// sled releases its file lock only when its last internal handle goes, which its I/O
/// threads may hold for a moment after the `Db` is dropped; a reopen right after a close in
/// the same process waits for that (a bounded retry) instead of failing as "in use".
///
/// sled's page cache is bounded at [`SLED_CACHE_BYTES`] instead of its default 1 GiB: the
/// ledger's hot data (live contract states) is held by the views, the blocks are read in
/// order and the kernel's page cache keeps them anyway, so a large sled cache mostly made
/// every process on a big store hold a gigabyte it did not need.
fn open_db(dir: &Path) -> Result<sled::Db, OpenError> {
    const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
    const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(10);
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new().path(dir).flush_every_ms(None).cache_capacity(SLED_CACHE_BYTES).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock") => {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(OpenError::Locked(dir.into()));
                }
                std::thread::sleep(LOCK_RETRY);
            }
            Err(source) => return Err(OpenError::Storage { dir: dir.into(), source }),
        }
    }
}

pub(crate) fn corrupt(seq: u64, reason: &str) -> ReadError {
    ReadError::Corrupt(VerifyFailure { seq, reason: reason.to_string() })
}

/// Folds a contract from the chain, up to seq `head`: every event is read (there is no
/// per-contract index in the chain; the live state holds one).
fn fold_contract(tree: &sled::Tree, id: &ContractId, head: u64) -> Result<Option<ContractState>, ReadError> {
    let mut state: Option<ContractState> = None;
    // Contract events never touch the ledger-wide facts; this only satisfies `fold`.
    let mut ledger = LedgerFacts::default();
    for record in store::records(tree, 1, head) {
        let recorded = record?.decode()?;
        if recorded.event.stream.contract_id() != Some(id) {
            continue;
        }
        let seq = recorded.event.seq;
        if let Some(new) = projections::fold(&recorded.event, state.as_mut(), &mut ledger).map_err(|e| corrupt(seq, &e.to_string()))? {
            state = Some(new);
        }
    }
    Ok(state)
}

/// The Merkle tree's nodes as stored: levels from [`keys::TREE_STORED_LEVEL_MIN`] up read
/// from sled, lower ones recomputed from the leaves (the blocks' stored event hashes).
struct StoredNodes<'a>(&'a sled::Tree);

impl merkle::Nodes for StoredNodes<'_> {
    type Error = ReadError;
    fn node(&self, level: u32, index: u64) -> Result<Digest, ReadError> {
        if level >= keys::TREE_STORED_LEVEL_MIN {
            let value = self.0.get(keys::tree_node(level, index))?.ok_or_else(|| corrupt(0, &format!("Merkle node ({level}, {index}) missing")))?;
            return Ok(Digest(value.as_ref().try_into().map_err(|_| corrupt(0, "malformed Merkle node"))?));
        }
        let first = (index << level) + 1;
        let last = (index + 1) << level;
        let mut hashes = Vec::with_capacity(1 << level);
        for block in store::blocks(self.0, first, last) {
            let block = block?;
            let parsed = block.parse()?;
            for i in 0..parsed.len() {
                let seq = block.first + i as u64;
                if (first..=last).contains(&seq) {
                    hashes.push(merkle::leaf_hash(&parsed.hash(i)));
                }
            }
        }
        if hashes.len() as u64 != last - first + 1 {
            return Err(corrupt(first, "event missing"));
        }
        while hashes.len() > 1 {
            hashes = hashes.chunks(2).map(|pair| merkle::node_hash(&pair[0], &pair[1])).collect();
        }
        Ok(hashes[0])
    }
}

/// The frontier of the stored tree, which must cover the chain. A store from before the
/// tree existed (or one whose tree is behind, which a crash cannot cause: nodes are written
/// with their events) gets its missing nodes built from the stored event hashes.
fn load_tree(tree: &sled::Tree, io: &io::Io, head: u64) -> Result<merkle::Frontier, ReadError> {
    let size = tree.get(keys::META_TREE)?.and_then(|v| keys::u64_value(&v)).unwrap_or(0).min(head);
    let mut frontier = merkle::Frontier::load(&StoredNodes(tree), size)?;
    if size < head {
        let mut batch = sled::Batch::default();
        for record in store::records(tree, size + 1, head) {
            let record = record?;
            frontier.push(&record.hash, |level, index, node| {
                if level >= keys::TREE_STORED_LEVEL_MIN {
                    batch.insert(&keys::tree_node(level, index)[..], &node.0[..]);
                }
            });
        }
        batch.insert(keys::META_TREE, &head.to_be_bytes());
        io.run(io::Op::OpenBatch, || tree.apply_batch(batch))?;
    }
    Ok(frontier)
}

/// Checks the head record against the last stored event and its link to the one before.
fn check_head(tree: &sled::Tree) -> Result<ChainHead, ReadError> {
    let recorded_head = tree.get(keys::META_HEAD)?;
    let (record_seq, record_hash) = match &recorded_head {
        None => (0, Digest::ZERO),
        Some(v) if v.len() == 40 => {
            let (seq, hash) = v.split_at(8);
            (keys::u64_value(seq).unwrap_or(0), Digest(<[u8; 32]>::try_from(hash).map_err(|_| corrupt(0, "malformed head record"))?))
        }
        Some(_) => return Err(corrupt(0, "malformed head record")),
    };
    let (seq, hash) = store::last(tree)?;
    if seq != record_seq {
        return Err(corrupt(seq.min(record_seq) + 1, &format!("the last stored event is seq {seq}, the head record says {record_seq}")));
    }
    if seq == 0 {
        return Ok(ChainHead::default());
    }
    let last = store::event(tree, seq)?;
    if last.hash != record_hash || hash != record_hash {
        return Err(corrupt(seq, "the head record's hash differs from the last event's"));
    }
    if seq > 1 && last.event.prev_hash != store::hash_of(tree, seq - 1)? {
        return Err(corrupt(seq, "prev_hash does not link to the previous event"));
    }
    Ok(ChainHead { seq, hash: last.hash, recorded_at: Some(last.event.recorded_at) })
}
