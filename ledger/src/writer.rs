//! The writer thread: group commit, and the one place where events are decided and written.
//!
//! Failure handling (ARCHITECTURE.md, "When the writer fails"):
//! - A request the rules refuse, or whose decision needed a read that failed, is answered
//!   with that refusal and leaves nothing staged; the writer goes on.
//! - A commit that fails (batch, flush or fsync) stops the writer for good: after a failed
//!   fsync the file's state is unknown, and retrying could acknowledge lost data.
//! - A panic anywhere in deciding or committing a group is caught here; it stops the writer
//!   for good too, since the staged state may be half-changed.
//! A stop is recorded (reason, time) in [`crate::WriterFailure`], logged, exported as the
//! `ledger_writer_failed` gauge, and shown by `/readyz`; every request of the group and every
//! later one is answered `Stopped`. Reads go on: they never see past the durable head.
//!
//! One rule decides what is acknowledged: a receipt is sent only when its seq is at or below
//! the durable head after the group's commit (asserted before every reply). A replay of a
//! request staged earlier in the same failed group therefore fails with it.

use crate::durable::DiskSync;
use crate::idempotency::{fingerprint, KeyRecord};
use crate::io::Op;
use crate::block::BlockBuilder;
use crate::views::{Dirty, Slot, PERSIST_EVERY_EVENTS};
use crate::{
    keys, lock, store, AppendError, AppendRequest, Appended, ChainHead, FailureKind, Job, Mode, Options, ReadError,
    Receipt, Replicated, ReplicationError, ReplicationGroup, Replicator, Shared, VerifyFailure, WriterFailure,
    GROUP_EVENTS_MAX, REQUEST_EVENTS_MAX,
};
use events::merkle::Frontier;
use events::{Code, ContractId, Digest, Event, EventKind, Proposal, RecordedEvent, Rejection, Stream, Timestamp};
use projections::{fold, seal, seal_billing, ContractState, LedgerFacts, Mark, Sealing};
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

enum Outcome {
    Append(Result<Appended, AppendError>),
    Replicate(Result<Replicated, AppendError>),
}

/// Writes of one commit, and what the group's requests need to see of each other.
#[derive(Default)]
struct Group {
    writes: Vec<(Vec<u8>, Vec<u8>)>,
    /// Idempotency keys recorded by earlier requests of this group (not yet in sled).
    keys: HashMap<String, KeyRecord>,
    /// Events appended by earlier requests of this group, by seq: written as blocks at the
    /// commit, and answered from here when a later request of the group replays one.
    events: BTreeMap<u64, RecordedEvent>,
    event_count: usize,
    /// Each contract the group changed and where to roll it back to (`None`: created by
    /// it), for a group the replicated log refuses. A map: a group may touch thousands of
    /// contracts, and each event asks whether its contract is here.
    marks: HashMap<ContractId, Option<Mark>>,
}

/// How a group ended.
enum GroupEnd {
    /// Committed (or nothing to commit).
    Committed,
    /// The writer stopped for good.
    Stopped(WriterFailure),
    /// The replicated log refused the group; it was rolled back.
    NotReplicated(ReplicationError),
}

/// What a request changed, to undo it when it is refused part way.
struct Undo {
    head: ChainHead,
    frontier: Frontier,
    ledger: LedgerFacts,
    /// Each contract the request changed and where to roll it back to (`None`: created by
    /// it). A mark costs nothing to take; rolling back costs what the request folded.
    /// Contracts are independent, so the order they are rolled back in does not matter.
    contracts: HashMap<ContractId, Option<Mark>>,
    writes_len: usize,
    keys: Vec<String>,
    seqs: Vec<u64>,
}

/// Why one request was not appended (internal to the writer; mapped to [`AppendError`]).
enum Refused {
    /// A rule of the domain refused the event.
    Rule(Rejection),
    /// A read the decision needed failed; nothing of the request is staged.
    Read(ReadError),
    /// The rules admitted an event its state then refused to fold: a bug, never the
    /// client's fault. Nothing of the request is staged.
    Internal(String),
}

impl From<ReadError> for Refused {
    fn from(e: ReadError) -> Refused {
        Refused::Read(e)
    }
}

pub(crate) struct Writer {
    db: sled::Db,
    shared: Arc<Shared>,
    disk: DiskSync,
    head: ChainHead,
    /// The Merkle tree's right edge; its size is always the head's seq.
    frontier: Frontier,
    ledger: LedgerFacts,
    /// Contracts changed since the views were last persisted, and when that was.
    dirty: Dirty,
    events_since_persist: u64,
    last_persist: Instant,
    /// [`Options::views_persist_every_ms`].
    persist_every_ms: u128,
    clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    replicator: Option<Arc<dyn Replicator>>,
    /// Most events in one group: [`GROUP_EVENTS_MAX`], or less if the replicated log takes
    /// fewer in one atomic append.
    group_events_max: usize,
    /// A job taken from the queue that did not fit in the last group: it starts the next.
    carried: Option<Job>,
    jobs: Receiver<Job>,
}

/// Why a commit could not be made durable.
#[derive(Debug, thiserror::Error)]
enum CommitError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("fsync: {0}")]
    Sync(#[from] std::io::Error),
}

impl Writer {
    #[allow(clippy::too_many_arguments)] // Each is a distinct part of the writer's state.
    pub(crate) fn new(
        db: sled::Db,
        shared: Arc<Shared>,
        disk: DiskSync,
        head: ChainHead,
        frontier: Frontier,
        ledger: LedgerFacts,
        options: Options,
        jobs: Receiver<Job>,
    ) -> Writer {
        assert_eq!(frontier.size(), head.seq, "the Merkle tree covers exactly the chain");
        Writer {
            db,
            shared,
            disk,
            head,
            frontier,
            ledger,
            dirty: Dirty::new(),
            events_since_persist: 0,
            last_persist: Instant::now(),
            persist_every_ms: u128::from(options.views_persist_every_ms),
            clock: options.clock,
            group_events_max: options.replicator.as_ref().map_or(GROUP_EVENTS_MAX, |r| r.group_events_max().clamp(1, GROUP_EVENTS_MAX)),
            replicator: options.replicator,
            carried: None,
            jobs,
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            let first = match self.carried.take() {
                Some(job) => job,
                None => match self.jobs.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            let mut jobs = vec![first];
            let mut events = jobs[0].events();
            // Take whatever else is already waiting, up to the group bound; a job that would
            // cross it starts the next group.
            while events < self.group_events_max {
                match self.jobs.try_recv() {
                    Ok(job) if events + job.events() > self.group_events_max => {
                        self.carried = Some(job);
                        break;
                    }
                    Ok(job) => {
                        events += job.events();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            // Deciding and committing may panic (a bug): catch it, so the writer's end is
            // recorded and every caller answered, never a silent death.
            let processed = catch_unwind(AssertUnwindSafe(|| self.process(&jobs)));
            let (outcomes, end) = match processed {
                Ok(result) => result,
                Err(payload) => {
                    let failure = WriterFailure::new(FailureKind::Panic, panic_message(payload.as_ref()));
                    let outcomes = jobs
                        .iter()
                        .map(|job| match job {
                            Job::Append { .. } => Outcome::Append(Err(AppendError::Stopped(Some(failure.clone())))),
                            Job::Replicate { .. } => Outcome::Replicate(Err(AppendError::Stopped(Some(failure.clone())))),
                        })
                        .collect();
                    (outcomes, GroupEnd::Stopped(failure))
                }
            };
            // The failure is recorded before anyone is answered, so a caller that sees its
            // request fail also sees why in `failure()` and `/readyz`.
            if let GroupEnd::Stopped(failure) = &end {
                self.shared.record_failure(failure.clone());
            }
            self.reply(jobs, outcomes, &end);
            if matches!(end, GroupEnd::Stopped(_)) {
                return;
            }
            if self.events_since_persist >= PERSIST_EVERY_EVENTS || self.last_persist.elapsed().as_millis() >= self.persist_every_ms {
                self.persist_views(Trim::IdleOnly);
            }
        }
        // All senders are gone: the ledger is closing. Everything acknowledged is synced;
        // the views are saved so the next open need not fold anything.
        self.persist_views(Trim::DownToBudget);
        if let Err(e) = self.db.flush() {
            tracing::warn!("flushing the views on close failed (they will catch up on open): {e}");
        }
    }

    /// Decides on every job of a group and commits what they staged. Returns one outcome
    /// per job, and why the writer must stop, if it must.
    fn process(&mut self, jobs: &[Job]) -> (Vec<Outcome>, GroupEnd) {
        let mut group = Group::default();
        let start = (self.head, self.frontier.clone(), self.ledger.clone());
        // Events staged by copying from the replicated log (already stored there).
        let mut copied = 0;
        let outcomes = jobs
            .iter()
            .map(|job| match job {
                Job::Append { request, .. } => Outcome::Append(self.decide(request, &mut group)),
                Job::Replicate { events, keys, .. } => {
                    let before = group.events.len();
                    let outcome = Outcome::Replicate(Ok(self.replicate(events, keys, &mut group)));
                    copied += group.events.len() - before;
                    outcome
                }
            })
            .collect();
        if group.writes.is_empty() && group.events.is_empty() {
            return (outcomes, GroupEnd::Committed);
        }
        // Replicated mode: the group is stored by a quorum before it is committed here;
        // events copied from the replicated log are already there. A node copies only while
        // it does not lead, and appends only while it leads, so a group holds one kind; one
        // that held both would be refused whole rather than half published.
        let appended = group.events.len() > copied;
        if self.replicator.is_some() && appended && copied > 0 {
            metrics::counter!("ledger_groups_not_replicated_total").increment(1);
            self.rollback_group(group, start);
            let mixed = ReplicationError::Unavailable("the node was copying the replicated log while appending; retry".into());
            return (outcomes, GroupEnd::NotReplicated(mixed));
        }
        if let (Some(replicator), true) = (&self.replicator, appended) {
            let durable = start.0.seq;
            let replication = ReplicationGroup {
                after: durable,
                events: group.events.values().collect(),
                keys: group.keys.iter().map(|(k, r)| (k.as_str(), *r)).collect(),
            };
            if let Err(e) = replicator.replicate(&replication) {
                match &e {
                    ReplicationError::Fenced(reason) => {
                        tracing::warn!("fenced by the replicated log ({reason}): this node stops writing and follows");
                        self.shared.leading.store(false, std::sync::atomic::Ordering::SeqCst);
                    }
                    // The log may hold the group this node is about to roll back: writing on
                    // from the old head would be fenced anyway; stop now so the lease loop
                    // catches up (and takes in the group, if it was stored) at once.
                    ReplicationError::Unknown(reason) => {
                        tracing::warn!("the replicated log's outcome is unknown ({reason}): this node stops writing and catches up");
                        self.shared.leading.store(false, std::sync::atomic::Ordering::SeqCst);
                    }
                    ReplicationError::Unavailable(_) => {}
                }
                metrics::counter!("ledger_groups_not_replicated_total").increment(1);
                self.rollback_group(group, start);
                return (outcomes, GroupEnd::NotReplicated(e));
            }
        }
        match self.commit(&mut group) {
            Ok(()) => (outcomes, GroupEnd::Committed),
            Err(e) => (
                outcomes,
                GroupEnd::Stopped(WriterFailure::new(FailureKind::Commit, format!("a commit failed and the ledger stopped taking writes: {e}"))),
            ),
        }
    }

    /// Undoes a whole group that was never committed: the head, the tree, the ledger's
    /// facts and every contract it changed go back to where they were before it.
    fn rollback_group(&mut self, group: Group, start: (ChainHead, Frontier, LedgerFacts)) {
        (self.head, self.frontier, self.ledger) = start;
        for (id, mark) in group.marks {
            match (mark, self.shared.views.get(&id)) {
                (Some(mark), Some(slot)) => {
                    // It was loaded to be changed; it cannot fail to be there now.
                    if let Err(e) = self.shared.views.rollback(&slot, &id, self.head.seq, &mark) {
                        tracing::error!("cannot roll back contract {id}: {e}");
                    }
                }
                (None, _) => self.shared.views.remove(&id),
                (Some(_), None) => debug_assert!(false, "contract {id} vanished while staged"),
            }
        }
    }

    /// Answers every job. A receipt beyond the durable head is never sent: such an outcome
    /// becomes `Stopped` (its group did not commit).
    fn reply(&self, jobs: Vec<Job>, outcomes: Vec<Outcome>, end: &GroupEnd) {
        let durable = self.shared.durable.borrow().seq;
        let stopped = || match end {
            GroupEnd::Stopped(failure) => AppendError::Stopped(Some(failure.clone())),
            GroupEnd::NotReplicated(ReplicationError::Fenced(_)) => AppendError::NotLeader,
            GroupEnd::NotReplicated(ReplicationError::Unavailable(reason)) => AppendError::NotReplicated(reason.clone()),
            GroupEnd::NotReplicated(ReplicationError::Unknown(reason)) => AppendError::ReplicationOutcomeUnknown(reason.clone()),
            GroupEnd::Committed => AppendError::Stopped(None),
        };
        let counters = &self.shared.counters;
        counters.requests.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        debug_assert_eq!(jobs.len(), outcomes.len(), "one outcome per job");
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            // The caller may have gone away; its events are durable all the same.
            match (job, outcome) {
                (Job::Append { reply, .. }, Outcome::Append(outcome)) => {
                    let outcome = match outcome {
                        Ok(appended) if appended.receipts.iter().any(|r| r.seq > durable) => Err(stopped()),
                        other => other,
                    };
                    assert!(
                        outcome.as_ref().map_or(true, |a| a.receipts.iter().all(|r| r.seq <= durable)),
                        "only durable events are acknowledged"
                    );
                    if outcome.is_err() {
                        counters.requests_refused.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = reply.send(outcome);
                }
                (Job::Replicate { reply, .. }, Outcome::Replicate(outcome)) => {
                    let outcome = match outcome {
                        Ok(r) if r.head.seq > durable => Err(stopped()),
                        other => other,
                    };
                    assert!(outcome.as_ref().map_or(true, |r| r.head.seq <= durable), "only durable events are acknowledged");
                    let _ = reply.send(outcome);
                }
                (Job::Append { reply, .. }, Outcome::Replicate(_)) => {
                    let _ = reply.send(Err(AppendError::Internal("outcome of another job".into())));
                }
                (Job::Replicate { reply, .. }, Outcome::Append(_)) => {
                    let _ = reply.send(Err(AppendError::Internal("outcome of another job".into())));
                }
            }
        }
    }

    /// Persists the states changed since the last time, with the cursor at the head, then
    /// trims the states in memory to the budget. Runs between groups, so every state holds
    /// exactly the events up to the head.
    fn persist_views(&mut self, trim: Trim) {
        self.last_persist = Instant::now();
        if self.dirty.is_empty() && self.events_since_persist == 0 {
            return;
        }
        match self.shared.views.persist(&self.dirty, &self.ledger, self.head.seq, &self.shared.io, Op::PersistViews) {
            Ok(()) => {
                let saved = std::mem::take(&mut self.dirty);
                self.events_since_persist = 0;
                // Everything is saved now: the moment to drop states beyond the budget.
                match trim {
                    Trim::IdleOnly => self.shared.views.trim(&saved),
                    Trim::DownToBudget => self.shared.views.trim(&Dirty::new()),
                };
            }
            // The views are derived: failing to save them loses nothing, the next open folds
            // the events after the old cursor.
            Err(e) => {
                metrics::counter!("ledger_views_persist_failures_total").increment(1);
                tracing::warn!("persisting views failed (the next open folds the events after the old cursor): {e}");
            }
        }
    }

    fn commit(&mut self, group: &mut Group) -> Result<(), CommitError> {
        // The group's events, cut into blocks in seq order.
        let mut block: Option<(u64, BlockBuilder)> = None;
        for (seq, recorded) in &group.events {
            if block.as_ref().is_some_and(|(_, b)| b.is_full()) {
                let (first, full) = block.take().expect("checked above");
                group.writes.push((keys::block(first).to_vec(), full.finish()));
            }
            block.get_or_insert_with(|| (*seq, BlockBuilder::new())).1.push(&recorded.hash, &recorded.canonical);
        }
        if let Some((first, last)) = block {
            group.writes.push((keys::block(first).to_vec(), last.finish()));
        }
        let mut head_value = self.head.seq.to_be_bytes().to_vec();
        head_value.extend_from_slice(&self.head.hash.0);
        group.writes.push((keys::META_HEAD.to_vec(), head_value));
        group.writes.push((keys::META_TREE.to_vec(), self.frontier.size().to_be_bytes().to_vec()));
        let mut batch = sled::Batch::default();
        for (key, value) in group.writes.drain(..) {
            batch.insert(key, value);
        }
        let io = &self.shared.io;
        io.run(Op::CommitBatch, || self.shared.tree.apply_batch(batch))?;
        let started = Instant::now();
        io.run(Op::Flush, || self.db.flush())?;
        io.run(Op::SyncLog, || self.disk.sync())?;
        let elapsed = started.elapsed();
        let micros = elapsed.as_micros() as u64;
        // No-ops unless the program installed a metrics recorder (the HTTP server does).
        metrics::histogram!("ledger_sync_seconds").record(elapsed.as_secs_f64());
        metrics::histogram!("ledger_commit_events").record(group.event_count as f64);
        metrics::counter!("ledger_events_appended_total").increment(group.event_count as u64);
        metrics::counter!("ledger_commits_total").increment(1);
        let counters = &self.shared.counters;
        counters.commits.fetch_add(1, Ordering::Relaxed);
        counters.events_appended.fetch_add(group.event_count as u64, Ordering::Relaxed);
        counters.sync_micros_total.fetch_add(micros, Ordering::Relaxed);
        counters.sync_micros_max.fetch_max(micros, Ordering::Relaxed);
        *lock(&self.shared.ledger_facts) = self.ledger.clone();
        self.events_since_persist += group.event_count as u64;
        self.shared.durable.send_replace(self.head);
        Ok(())
    }

    /// Decides on one request, staging its writes into `group`.
    fn decide(&mut self, request: &AppendRequest, group: &mut Group) -> Result<Appended, AppendError> {
        if !self.shared.leading.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(AppendError::NotLeader);
        }
        if request.events.is_empty() {
            return whole(Rejection::new(Code::EmptyBatch, None, "a request needs at least one event"));
        }
        if request.events.len() > REQUEST_EVENTS_MAX {
            return whole(Rejection::new(Code::BatchTooLarge, None, format!("at most {REQUEST_EVENTS_MAX} events a request")));
        }
        // Replicated mode: a request is published in one atomic append of the log.
        if request.events.len() > self.group_events_max {
            return whole(Rejection::new(Code::BatchTooLarge, None, format!("at most {} events a request in replicated mode", self.group_events_max)));
        }
        if let Err(rejection) = events::check_text("actor", &request.actor) {
            return whole(rejection);
        }
        match request.mode {
            Mode::Atomic => self.decide_atomic(request, group),
            Mode::Prefix => self.decide_prefix(request, group),
        }
    }

    fn decide_atomic(&mut self, request: &AppendRequest, group: &mut Group) -> Result<Appended, AppendError> {
        // A single event may carry its key in the body or the header; they must agree.
        let key = match (&request.idempotency_key, request.events.as_slice()) {
            (Some(header), [only]) if only.idempotency_key.as_ref().is_some_and(|k| k != header) => {
                return whole(Rejection::new(Code::InvalidValue, Some("idempotency_key".into()), "the Idempotency-Key header and the event's idempotency_key differ"));
            }
            (Some(header), _) => Some(header.clone()),
            (None, [only]) => only.idempotency_key.clone(),
            (None, _) => None,
        };
        if let Some(k) = &key
            && let Err(rejection) = events::check_idempotency_key("idempotency_key", k) {
                return Err(AppendError::Rejected { index: 0, rejection });
            }
        // A fingerprint hashes every event's JSON: only keyed requests need one.
        let print = key.as_ref().map(|_| fingerprint(&request.actor, &request.events));
        if let (Some(k), Some(print)) = (&key, print) {
            match self.replay(k, print, group) {
                Ok(Some(receipts)) => return Ok(Appended { receipts, refused: None }),
                Ok(None) => {}
                Err(Refused::Rule(rejection)) => return whole(rejection),
                Err(other) => return Err(refused_whole(other)),
            }
        } else {
            match self.replay_each(request, group) {
                Ok(Some(receipts)) => return Ok(Appended { receipts, refused: None }),
                Ok(None) => {}
                Err(Refused::Rule(rejection)) => return whole(rejection),
                Err(other) => return Err(refused_whole(other)),
            }
        }
        let mut undo = self.undo_point(group);
        let mut receipts = Vec::with_capacity(request.events.len());
        for (index, proposal) in request.events.iter().enumerate() {
            let outcome = self.append_keyed(request, proposal, key.as_deref(), group, &mut undo);
            match outcome {
                Ok(receipt) => receipts.push(receipt),
                Err(refused) => {
                    self.rollback(undo, group);
                    return Err(refused_at(index, refused));
                }
            }
        }
        if let (Some(k), Some(print)) = (key, print) {
            let record = KeyRecord { fingerprint: print, first_seq: receipts[0].seq, count: receipts.len() as u32 };
            self.record_key(&k, record, group, &mut undo);
        }
        Ok(Appended { receipts, refused: None })
    }

    /// One event of an atomic request, with its own key (if it has one besides the request's).
    fn append_keyed(
        &mut self,
        request: &AppendRequest,
        proposal: &Proposal,
        request_key: Option<&str>,
        group: &mut Group,
        undo: &mut Undo,
    ) -> Result<Receipt, Refused> {
        // In a batch, an event's own key must be new: a batch is replayed only as a whole.
        let own_key = proposal.idempotency_key.as_deref().filter(|k| Some(*k) != request_key);
        if let Some(k) = own_key
            && (self.key_record(k, group)?.is_some() || undo.keys.iter().any(|used| used == k)) {
                return Err(Refused::Rule(Rejection::new(Code::IdempotencyKeyReused, Some("idempotency_key".into()), format!("key `{k}` is already used; in a batch every event key must be new"))));
            }
        let envelope_key = if request.events.len() == 1 { request_key } else { proposal.idempotency_key.as_deref() };
        let receipt = self.append_one(proposal, envelope_key, &request.actor, group, undo)?;
        if let Some(k) = own_key {
            let record = KeyRecord { fingerprint: fingerprint(&request.actor, std::slice::from_ref(proposal)), first_seq: receipt.seq, count: 1 };
            self.record_key(k, record, group, undo);
        }
        Ok(receipt)
    }

    fn decide_prefix(&mut self, request: &AppendRequest, group: &mut Group) -> Result<Appended, AppendError> {
        let mut receipts = Vec::with_capacity(request.events.len());
        for (index, proposal) in request.events.iter().enumerate() {
            let mut undo = self.undo_point(group);
            let outcome = match &proposal.idempotency_key {
                Some(k) => match self.replay(k, fingerprint(&request.actor, std::slice::from_ref(proposal)), group) {
                    Ok(Some(mut replayed)) => {
                        receipts.append(&mut replayed);
                        continue;
                    }
                    Ok(None) => self.append_one(proposal, Some(k), &request.actor, group, &mut undo).map(|receipt| {
                        let print = fingerprint(&request.actor, std::slice::from_ref(proposal));
                        self.record_key(k, KeyRecord { fingerprint: print, first_seq: receipt.seq, count: 1 }, group, &mut undo);
                        receipt
                    }),
                    Err(refused) => Err(refused),
                },
                None => self.append_one(proposal, None, &request.actor, group, &mut undo),
            };
            match outcome {
                Ok(receipt) => receipts.push(receipt),
                Err(Refused::Rule(rejection)) => {
                    self.rollback(undo, group);
                    return Ok(Appended { receipts, refused: Some((index, rejection)) });
                }
                // Not the event's fault: the events before it stand, and the caller is told
                // the ledger could not decide (it retries the rest, keyed, later).
                Err(other) => {
                    self.rollback(undo, group);
                    if receipts.is_empty() {
                        return Err(refused_whole(other));
                    }
                    let rejection = Rejection::new(Code::InvalidValue, None, format!("not decided: {}", refused_whole(other)));
                    return Ok(Appended { receipts, refused: Some((index, rejection)) });
                }
            }
        }
        Ok(Appended { receipts, refused: None })
    }

    /// If `key` was used before: the original receipts when `print` matches, a refusal when
    /// it does not; `None` when the key is new.
    fn replay(&self, key: &str, print: Digest, group: &Group) -> Result<Option<Vec<Receipt>>, Refused> {
        let Some(record) = self.key_record(key, group)? else {
            return Ok(None);
        };
        if record.fingerprint != print {
            return Err(Refused::Rule(Rejection::new(
                Code::IdempotencyKeyReused,
                Some("idempotency_key".into()),
                format!("key `{key}` was used for a different request (seq {})", record.first_seq),
            )));
        }
        let mut receipts = Vec::with_capacity(record.count as usize);
        for seq in record.first_seq..record.first_seq.saturating_add(u64::from(record.count)) {
            let recorded = match group.events.get(&seq) {
                Some(r) => r.clone(),
                None => store::event(&self.shared.tree, seq)?,
            };
            receipts.push(Receipt::of(&recorded, true));
        }
        Ok(Some(receipts))
    }

    /// A batch without a request key whose events all carry their own keys is a retry when
    /// every key is known for the same event: the original receipts, in order. `None` when
    /// none is known (a new batch); when only some are, the batch goes on to be refused
    /// event by event (a batch is replayed whole or not at all).
    fn replay_each(&self, request: &AppendRequest, group: &Group) -> Result<Option<Vec<Receipt>>, Refused> {
        if request.events.len() < 2 || request.events.iter().any(|p| p.idempotency_key.is_none()) {
            return Ok(None);
        }
        let mut receipts = Vec::with_capacity(request.events.len());
        for proposal in &request.events {
            let Some(k) = proposal.idempotency_key.as_deref() else { return Ok(None) };
            let print = fingerprint(&request.actor, std::slice::from_ref(proposal));
            match self.replay(k, print, group)? {
                Some(mut replayed) => receipts.append(&mut replayed),
                None => return Ok(None),
            }
        }
        Ok(Some(receipts))
    }

    fn key_record(&self, key: &str, group: &Group) -> Result<Option<KeyRecord>, ReadError> {
        if let Some(record) = group.keys.get(key) {
            return Ok(Some(*record));
        }
        match self.shared.tree.get(keys::idempotency(key))? {
            None => Ok(None),
            Some(bytes) => KeyRecord::from_bytes(&bytes)
                .map(Some)
                .ok_or_else(|| ReadError::Corrupt(VerifyFailure { seq: 0, reason: format!("malformed idempotency record for `{key}`") })),
        }
    }

    fn record_key(&mut self, key: &str, record: KeyRecord, group: &mut Group, undo: &mut Undo) {
        group.writes.push((keys::idempotency(key), record.to_bytes().to_vec()));
        group.keys.insert(key.to_string(), record);
        undo.keys.push(key.to_string());
    }

    fn undo_point(&self, group: &Group) -> Undo {
        Undo {
            head: self.head,
            frontier: self.frontier.clone(),
            ledger: self.ledger.clone(),
            contracts: HashMap::new(),
            writes_len: group.writes.len(),
            keys: vec![],
            seqs: vec![],
        }
    }

    fn rollback(&mut self, undo: Undo, group: &mut Group) {
        self.head = undo.head;
        self.frontier = undo.frontier;
        self.ledger = undo.ledger;
        for (id, mark) in undo.contracts {
            match (mark, self.shared.views.get(&id)) {
                (Some(mark), Some(slot)) => {
                    // It was loaded to be changed; it cannot fail to be there now.
                    if let Err(e) = self.shared.views.rollback(&slot, &id, self.head.seq, &mark) {
                        tracing::error!("cannot roll back contract {id}: {e}");
                    }
                }
                (None, _) => self.shared.views.remove(&id),
                // A contract the request did not create stays live: nothing to undo.
                (Some(_), None) => debug_assert!(false, "contract {id} vanished while staged"),
            }
        }
        group.writes.truncate(undo.writes_len);
        for k in undo.keys {
            group.keys.remove(&k);
        }
        for seq in undo.seqs {
            group.events.remove(&seq);
            group.event_count -= 1;
        }
    }

    /// Decides on one event and, if admitted, stages it: sealed ([`seal`]), folded into its
    /// state ([`fold`]), its writes queued.
    fn append_one(
        &mut self,
        proposal: &Proposal,
        idempotency_key: Option<&str>,
        default_actor: &str,
        group: &mut Group,
        undo: &mut Undo,
    ) -> Result<Receipt, Refused> {
        let slot = proposal.stream.contract_id().and_then(|id| Some((id, self.shared.views.get(id)?)));
        let sealing = Sealing { now: (self.clock)(), default_actor, idempotency_key };
        if let Some((id, slot)) = &slot
            && matches!(proposal.kind(), EventKind::InvoiceIssued | EventKind::PaymentReceived)
            && let Some(receipt) = self.append_billing(proposal, id, slot, &sealing, group, undo)?
        {
            return Ok(receipt);
        }
        let mut contract = match &slot {
            Some((id, slot)) => Some(self.shared.views.lock(slot, id, self.head.seq)?),
            None => None,
        };
        let recorded = seal(proposal, contract.as_deref(), &self.ledger, &self.head, &sealing).map_err(Refused::Rule)?;
        let event = &recorded.event;
        // Where to roll the contract back to, once per contract per request (and per group).
        if let Stream::Contract(id) = &event.stream {
            let mark = contract.as_deref().map(ContractState::mark);
            undo.contracts.entry(id.clone()).or_insert(mark);
            group.marks.entry(id.clone()).or_insert(mark);
        }
        self.fold_staged(event, contract.as_deref_mut(), group).map_err(|e| {
            metrics::counter!("ledger_invariant_violations_total").increment(1);
            tracing::error!("seq {}: an admitted event does not fold (a bug; the request is refused): {e}", event.seq);
            Refused::Internal(format!("an admitted event does not fold: {e}"))
        })?;
        let receipt = Receipt::of(&recorded, false);
        self.stage(recorded, group);
        undo.seqs.push(receipt.seq);
        Ok(receipt)
    }

    /// [`Writer::append_one`] of an invoice or a payment, decided with the contract's billing
    /// state when that is what the writer holds of it ([`Views::lock_billing`]); `None`
    /// when it does not, or the billing state is not enough to be sure (the caller then
    /// decides with the state).
    fn append_billing(
        &mut self,
        proposal: &Proposal,
        id: &ContractId,
        slot: &Slot,
        sealing: &Sealing<'_>,
        group: &mut Group,
        undo: &mut Undo,
    ) -> Result<Option<Receipt>, Refused> {
        let Some(mut billing) = self.shared.views.lock_billing(slot) else { return Ok(None) };
        let Some(sealed) = seal_billing(proposal, billing.state(), &self.ledger, &self.head, sealing) else { return Ok(None) };
        let recorded = sealed.map_err(Refused::Rule)?;
        let mark = billing.state().mark();
        billing.apply(&recorded.event).map_err(|e| {
            metrics::counter!("ledger_invariant_violations_total").increment(1);
            tracing::error!("seq {}: an admitted event does not fold into the billing state (a bug; the request is refused): {e}", recorded.event.seq);
            Refused::Internal(format!("an admitted event does not fold: {e}"))
        })?;
        drop(billing);
        undo.contracts.entry(id.clone()).or_insert(Some(mark));
        group.marks.entry(id.clone()).or_insert(Some(mark));
        self.dirty.insert(id.clone());
        let receipt = Receipt::of(&recorded, false);
        self.stage(recorded, group);
        undo.seqs.push(receipt.seq);
        Ok(Some(receipt))
    }

    /// Folds `event` ([`fold`]) into its contract's live state (`contract`, locked by the
    /// caller) or the ledger's facts; a grant's new state goes live with its index entry.
    fn fold_staged(&mut self, event: &Event, contract: Option<&mut ContractState>, group: &mut Group) -> Result<(), projections::FoldError> {
        if let Some(new) = fold(event, contract, &mut self.ledger)? {
            group.writes.push((keys::contract(&new.contract_id), event.seq.to_be_bytes().to_vec()));
            self.shared.views.insert_new(new);
        }
        if let Stream::Contract(id) = &event.stream {
            self.dirty.insert(id.clone());
        }
        Ok(())
    }
}

impl Writer {
    /// Stores events recorded elsewhere, in order, while each continues the chain and folds.
    fn replicate(&mut self, events: &[RecordedEvent], keys: &[(String, KeyRecord)], group: &mut Group) -> Replicated {
        let mut stored = 0;
        let mut refused = None;
        for recorded in events {
            if let Err(reason) = self.replicate_one(recorded, group) {
                refused = Some(VerifyFailure { seq: recorded.event.seq, reason });
                break;
            }
            stored += 1;
        }
        // The leader's idempotency records, for the events now stored.
        for (key, record) in keys {
            let last = record.first_seq.saturating_add(u64::from(record.count)).saturating_sub(1);
            if record.count > 0 && last <= self.head.seq {
                group.writes.push((keys::idempotency(key), record.to_bytes().to_vec()));
                group.keys.insert(key.clone(), *record);
            }
        }
        Replicated { stored, refused, head: self.head }
    }

    fn replicate_one(&mut self, recorded: &RecordedEvent, group: &mut Group) -> Result<(), String> {
        let event = &recorded.event;
        let expected = self.head.seq + 1;
        if event.seq != expected {
            return Err(format!("expected seq {expected}, got {}", event.seq));
        }
        if Digest::of_event(&recorded.canonical) != recorded.hash {
            return Err("the hash is not the hash of the event's bytes".into());
        }
        if Event::decode(&recorded.canonical).as_ref() != Ok(event) {
            return Err("the event is not the decoding of its bytes".into());
        }
        if event.prev_hash != self.head.hash {
            return Err(format!("prev_hash {} does not link to seq {}'s hash {}", event.prev_hash, self.head.seq, self.head.hash));
        }
        if self.head.recorded_at.is_some_and(|t| event.recorded_at < t) {
            return Err("recorded_at goes back in time".into());
        }
        let slot = event.stream.contract_id().and_then(|id| Some((id, self.shared.views.get(id)?)));
        // An invoice or a payment folds into the billing state, if that is what the writer
        // holds of the contract and it takes the event (the leader decided on it).
        if let Some((id, slot)) = &slot
            && let Some(mut billing) = self.shared.views.lock_billing(slot)
        {
            let mark = billing.state().mark();
            if billing.apply(event).is_ok() {
                drop(billing);
                group.marks.entry((*id).clone()).or_insert(Some(mark));
                self.dirty.insert((*id).clone());
                self.stage(recorded.clone(), group);
                return Ok(());
            }
        }
        let mut contract = match &slot {
            Some((id, slot)) => Some(self.shared.views.lock(slot, id, self.head.seq).map_err(|e| e.to_string())?),
            None => None,
        };
        if let Some(id) = event.stream.contract_id() {
            group.marks.entry(id.clone()).or_insert_with(|| contract.as_deref().map(ContractState::mark));
        }
        self.fold_staged(event, contract.as_deref_mut(), group).map_err(|e| e.to_string())?;
        drop(contract);
        self.stage(recorded.clone(), group);
        Ok(())
    }
}

impl Writer {
    /// Queues the writes of an event that was decided on and folded: the record, its
    /// stream index entry, the Merkle nodes it completes; and moves the head.
    fn stage(&mut self, recorded: RecordedEvent, group: &mut Group) {
        let event = &recorded.event;
        assert_eq!(event.seq, self.head.seq + 1, "events are staged in seq order");
        // Low levels are not stored: they are recomputed from the blocks' event hashes.
        self.frontier.push(&recorded.hash, |level, index, hash| {
            if level >= keys::TREE_STORED_LEVEL_MIN {
                group.writes.push((keys::tree_node(level, index).to_vec(), hash.0.to_vec()));
            }
        });
        self.head = ChainHead { seq: event.seq, hash: recorded.hash, recorded_at: Some(event.recorded_at) };
        assert_eq!(self.frontier.size(), self.head.seq, "the Merkle tree covers exactly the chain");
        group.events.insert(event.seq, recorded);
        group.event_count += 1;
    }
}

/// A refusal of the request as a whole (its key, its size, its actor), not of one event.
fn whole(rejection: Rejection) -> Result<Appended, AppendError> {
    Err(AppendError::RequestRefused(rejection))
}

/// The error of a request refused at event `index`.
fn refused_at(index: usize, refused: Refused) -> AppendError {
    match refused {
        Refused::Rule(rejection) => AppendError::Rejected { index, rejection },
        other => refused_whole(other),
    }
}

fn refused_whole(refused: Refused) -> AppendError {
    match refused {
        Refused::Rule(rejection) => AppendError::RequestRefused(rejection),
        Refused::Read(ReadError::Storage(e)) => AppendError::Storage(e.to_string()),
        Refused::Read(ReadError::Corrupt(f)) => AppendError::Corrupt(f),
        Refused::Internal(message) => AppendError::Internal(message),
    }
}

/// The text of a panic's payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    format!("the writer panicked and stopped taking writes: {text}")
}

/// Which saved states a save may unload past the resident budget.
#[derive(Clone, Copy)]
enum Trim {
    /// Only states the writer did not change since the last save: the ones it did are its
    /// working set, and unloading them would only load them all again by the next save (an
    /// import interleaved over more contracts than the budget holds went from 25k to 3k
    /// events/s at 10 million events that way).
    IdleOnly,
    /// Any clean state (closing: the writer needs none of them again).
    DownToBudget,
}
