//! The writer thread: group commit, and the one place where events are decided and written.

use crate::durable::DiskSync;
use crate::idempotency::{fingerprint, KeyRecord};
use crate::verify::join_record;
use crate::views::{self, Dirty, PERSIST_EVERY_EVENTS, PERSIST_EVERY_MS};
use crate::{
    keys, read_event, AppendError, AppendRequest, Appended, ChainHead, Job, Mode, Options, ReadError,
    Receipt, Replicated, Shared, VerifyFailure, GROUP_EVENTS_MAX, REQUEST_EVENTS_MAX,
};
use events::{
    Code, ContractId, Digest, Event, Proposal, RecordedEvent, Rejection, Stream, Timestamp, CANONICAL_LEN_MAX,
};
use events::merkle::Frontier;
use projections::{admit, ContractState, LedgerFacts};
use std::collections::HashMap;
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
    /// Events appended by earlier requests of this group, by seq.
    events: HashMap<u64, RecordedEvent>,
    event_count: usize,
}

/// What a request changed, to undo it when an atomic request is refused part way.
struct Undo {
    /// Whether contract states must be kept to undo (atomic requests of several events).
    snapshots: bool,
    head: ChainHead,
    frontier: Frontier,
    ledger: LedgerFacts,
    contracts: Vec<(ContractId, Option<ContractState>)>,
    writes_len: usize,
    keys: Vec<String>,
    seqs: Vec<u64>,
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
    clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    jobs: Receiver<Job>,
}

/// Why a commit could not be made durable. The writer stops for good: after a failed
/// fsync the state of the file is unknown, and retrying could acknowledge lost data.
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
            clock: options.clock,
            jobs,
        }
    }

    pub(crate) fn run(mut self) {
        while let Ok(first) = self.jobs.recv() {
            let mut jobs = vec![first];
            let mut events = jobs[0].events();
            // Take whatever else is already waiting, up to the group bound.
            while events < GROUP_EVENTS_MAX {
                match self.jobs.try_recv() {
                    Ok(job) => {
                        events += job.events();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            let mut group = Group::default();
            let outcomes: Vec<Outcome> = jobs
                .iter()
                .map(|job| match job {
                    Job::Append { request, .. } => Outcome::Append(self.decide(request, &mut group)),
                    Job::Replicate { events, .. } => Outcome::Replicate(self.replicate(events, &mut group)),
                })
                .collect();
            let mut failure = None;
            if !group.writes.is_empty()
                && let Err(e) = self.commit(&mut group) {
                    failure = Some(format!("a commit failed and the ledger stopped taking writes: {e}"));
                }
            let counters = &self.shared.counters;
            counters.requests.fetch_add(jobs.len() as u64, Ordering::Relaxed);
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                // The caller may have gone away; its events are durable all the same.
                match (job, outcome) {
                    (Job::Append { reply, .. }, Outcome::Append(outcome)) => {
                        let outcome = match (&failure, outcome) {
                            (Some(f), Ok(appended)) if appended.receipts.iter().any(|r| !r.replayed) => {
                                Err(AppendError::Unavailable(f.clone()))
                            }
                            (_, outcome) => outcome,
                        };
                        if outcome.is_err() {
                            counters.requests_refused.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = reply.send(outcome);
                    }
                    (Job::Replicate { reply, .. }, Outcome::Replicate(outcome)) => {
                        let outcome = match (&failure, outcome) {
                            (Some(f), Ok(r)) if r.stored > 0 => Err(AppendError::Unavailable(f.clone())),
                            (_, outcome) => outcome,
                        };
                        let _ = reply.send(outcome);
                    }
                    _ => unreachable!("outcomes are made in job order, one per job"),
                }
            }
            if let Some(f) = failure {
                tracing::error!("{f}");
                *self.shared.failure.lock().expect("failure lock") = Some(f);
                return;
            }
            if self.events_since_persist >= PERSIST_EVERY_EVENTS || self.last_persist.elapsed().as_millis() >= PERSIST_EVERY_MS {
                self.persist_views();
            }
        }
        // All senders are gone: the ledger is closing. Everything acknowledged is synced;
        // the views are saved so the next open need not fold anything.
        self.persist_views();
        if let Err(e) = self.db.flush() {
            tracing::warn!("flushing the views on close failed (they will catch up on open): {e}");
        }
    }

    /// Persists the states changed since the last time, with the cursor at the head. Runs
    /// between groups, so every state holds exactly the events up to the head.
    fn persist_views(&mut self) {
        self.last_persist = Instant::now();
        if self.dirty.is_empty() && self.events_since_persist == 0 {
            return;
        }
        let states: Vec<ContractState> = std::mem::take(&mut self.dirty)
            .iter()
            .filter_map(|id| self.shared.views.get(id))
            .map(|s| s.lock().expect("contract lock").clone())
            .collect();
        match views::persist(&self.shared.views_tree, &states, &self.ledger, self.head.seq) {
            Ok(()) => self.events_since_persist = 0,
            // The views are derived: failing to save them loses nothing, the next open folds
            // the events after the old cursor.
            Err(e) => tracing::warn!("persisting views failed: {e}"),
        }
    }

    fn commit(&mut self, group: &mut Group) -> Result<(), CommitError> {
        let mut head_value = self.head.seq.to_be_bytes().to_vec();
        head_value.extend_from_slice(&self.head.hash.0);
        group.writes.push((keys::META_HEAD.to_vec(), head_value));
        group.writes.push((keys::META_TREE.to_vec(), self.frontier.size().to_be_bytes().to_vec()));
        let mut batch = sled::Batch::default();
        for (key, value) in group.writes.drain(..) {
            batch.insert(key, value);
        }
        self.shared.tree.apply_batch(batch)?;
        let started = Instant::now();
        self.db.flush()?;
        self.disk.sync()?;
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
        *self.shared.ledger_facts.lock().expect("ledger facts lock") = self.ledger.clone();
        self.events_since_persist += group.event_count as u64;
        self.shared.durable.send_replace(self.head);
        Ok(())
    }

    /// Decides on one request, staging its writes into `group`.
    fn decide(&mut self, request: &AppendRequest, group: &mut Group) -> Result<Appended, AppendError> {
        if let Some(failure) = self.shared.failure.lock().expect("failure lock").clone() {
            return Err(AppendError::Unavailable(failure));
        }
        if request.events.is_empty() {
            return whole(Rejection::new(Code::EmptyBatch, None, "a request needs at least one event"));
        }
        if request.events.len() > REQUEST_EVENTS_MAX {
            return whole(Rejection::new(Code::BatchTooLarge, None, format!("at most {REQUEST_EVENTS_MAX} events a request")));
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
        let refuse = |index, rejection| Err(AppendError::Rejected { index, rejection });
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
                return refuse(0, rejection);
            }
        let print = fingerprint(&request.actor, &request.events);
        if let Some(k) = &key {
            match self.replay(k, print, group) {
                Ok(Some(receipts)) => return Ok(Appended { receipts, refused: None }),
                Ok(None) => {}
                Err(rejection) => return whole(rejection),
            }
        }
        let mut undo = self.undo_point(group, request.events.len() > 1);
        let mut receipts = Vec::with_capacity(request.events.len());
        for (index, proposal) in request.events.iter().enumerate() {
            // In a batch, an event's own key must be new: a batch is replayed only as a whole.
            let own_key = proposal.idempotency_key.as_ref().filter(|k| Some(*k) != key.as_ref());
            if let Some(k) = own_key
                && (self.key_record(k, group).map_err(storage)?.is_some() || undo.keys.contains(k)) {
                    self.rollback(undo, group);
                    return refuse(index, Rejection::new(Code::IdempotencyKeyReused, Some("idempotency_key".into()), format!("key `{k}` is already used; in a batch every event key must be new")));
                }
            let envelope_key = if request.events.len() == 1 { key.clone() } else { proposal.idempotency_key.clone() };
            match self.append_one(proposal, envelope_key, &request.actor, group, &mut undo) {
                Ok(receipt) => {
                    if let Some(k) = own_key {
                        let record = KeyRecord { fingerprint: fingerprint(&request.actor, std::slice::from_ref(proposal)), first_seq: receipt.seq, count: 1 };
                        self.record_key(k, record, group, &mut undo);
                    }
                    receipts.push(receipt);
                }
                Err(rejection) => {
                    self.rollback(undo, group);
                    return refuse(index, rejection);
                }
            }
        }
        if let Some(k) = key {
            let record = KeyRecord { fingerprint: print, first_seq: receipts[0].seq, count: receipts.len() as u32 };
            self.record_key(&k, record, group, &mut undo);
        }
        Ok(Appended { receipts, refused: None })
    }

    fn decide_prefix(&mut self, request: &AppendRequest, group: &mut Group) -> Result<Appended, AppendError> {
        let mut receipts = Vec::with_capacity(request.events.len());
        for (index, proposal) in request.events.iter().enumerate() {
            let print = fingerprint(&request.actor, std::slice::from_ref(proposal));
            if let Some(k) = &proposal.idempotency_key {
                match self.replay(k, print, group) {
                    Ok(Some(mut replayed)) => {
                        receipts.append(&mut replayed);
                        continue;
                    }
                    Ok(None) => {}
                    Err(rejection) => return Ok(Appended { receipts, refused: Some((index, rejection)) }),
                }
            }
            let mut undo = self.undo_point(group, false);
            match self.append_one(proposal, proposal.idempotency_key.clone(), &request.actor, group, &mut undo) {
                Ok(receipt) => {
                    if let Some(k) = &proposal.idempotency_key {
                        self.record_key(k, KeyRecord { fingerprint: print, first_seq: receipt.seq, count: 1 }, group, &mut undo);
                    }
                    receipts.push(receipt);
                }
                Err(rejection) => return Ok(Appended { receipts, refused: Some((index, rejection)) }),
            }
        }
        Ok(Appended { receipts, refused: None })
    }

    /// If `key` was used before: the original receipts when `print` matches, a refusal when
    /// it does not; `None` when the key is new.
    fn replay(&self, key: &str, print: events::Digest, group: &Group) -> Result<Option<Vec<Receipt>>, Rejection> {
        let Some(record) = self.key_record(key, group).map_err(|e| Rejection::new(Code::InvalidValue, None, e.to_string()))? else {
            return Ok(None);
        };
        if record.fingerprint != print {
            return Err(Rejection::new(
                Code::IdempotencyKeyReused,
                Some("idempotency_key".into()),
                format!("key `{key}` was used for a different request (seq {})", record.first_seq),
            ));
        }
        let mut receipts = Vec::with_capacity(record.count as usize);
        for seq in record.first_seq..record.first_seq + u64::from(record.count) {
            let recorded = match group.events.get(&seq) {
                Some(r) => r.clone(),
                None => read_event(&self.shared.tree, seq).map_err(|e| Rejection::new(Code::InvalidValue, None, e.to_string()))?,
            };
            receipts.push(Receipt::of(&recorded, true));
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
                .ok_or_else(|| ReadError::Corrupt(crate::VerifyFailure { seq: 0, reason: format!("malformed idempotency record for `{key}`") })),
        }
    }

    fn record_key(&mut self, key: &str, record: KeyRecord, group: &mut Group, undo: &mut Undo) {
        group.writes.push((keys::idempotency(key), record.to_bytes().to_vec()));
        group.keys.insert(key.to_string(), record);
        undo.keys.push(key.to_string());
    }

    fn undo_point(&self, group: &Group, snapshots: bool) -> Undo {
        Undo {
            snapshots,
            head: self.head,
            frontier: self.frontier.clone(),
            ledger: self.ledger.clone(),
            contracts: vec![],
            writes_len: group.writes.len(),
            keys: vec![],
            seqs: vec![],
        }
    }

    fn rollback(&mut self, undo: Undo, group: &mut Group) {
        self.head = undo.head;
        self.frontier = undo.frontier;
        self.ledger = undo.ledger;
        for (id, state) in undo.contracts {
            match (state, self.shared.views.get(&id)) {
                (Some(before), Some(live)) => *live.lock().expect("contract lock") = before,
                (Some(before), None) => self.shared.views.insert(before),
                (None, _) => self.shared.views.remove(&id),
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

    /// Decides on one event and, if admitted, stages it: seq, version, prev_hash,
    /// recorded_at assigned, state folded, writes queued.
    fn append_one(
        &mut self,
        proposal: &Proposal,
        idempotency_key: Option<String>,
        default_actor: &str,
        group: &mut Group,
        undo: &mut Undo,
    ) -> Result<Receipt, Rejection> {
        let next_seq = self.head.seq + 1;
        let live = proposal.stream.contract_id().and_then(|id| self.shared.views.get(id));
        let mut contract = live.as_ref().map(|l| l.lock().expect("contract lock"));
        let body = admit(proposal, contract.as_deref(), &self.ledger, next_seq)?;
        let version = match (&proposal.stream, contract.as_deref()) {
            (Stream::Ledger, _) => self.ledger.version + 1,
            (Stream::Contract(_), Some(state)) => state.version + 1,
            (Stream::Contract(_), None) => 1,
        };
        let now = (self.clock)();
        let recorded_at = self.head.recorded_at.map_or(now, |last| now.max(last));
        let recorded = RecordedEvent::seal(Event {
            prev_hash: self.head.hash,
            seq: next_seq,
            stream: proposal.stream.clone(),
            version,
            effective_date: proposal.effective_date,
            recorded_at,
            actor: proposal.actor.clone().unwrap_or_else(|| default_actor.to_string()),
            idempotency_key,
            body,
        });
        if recorded.canonical.len() > CANONICAL_LEN_MAX {
            return Err(Rejection::new(Code::InvalidValue, None, format!("the event is {} bytes; at most {CANONICAL_LEN_MAX}", recorded.canonical.len())));
        }
        let event = &recorded.event;
        // Fold into the state; the rules admitted it, so folding cannot fail.
        let fold_failed = |e: projections::FoldError| Rejection::new(Code::InvalidValue, None, format!("internal: admitted event does not fold: {e}"));
        match &event.stream {
            Stream::Ledger => self.ledger.apply(event).map_err(fold_failed)?,
            Stream::Contract(id) => {
                // Atomic batches of several events may need to undo this one: keep the
                // contract's state from before the request, once per contract.
                if undo.snapshots && !undo.contracts.iter().any(|(c, _)| c == id) {
                    undo.contracts.push((id.clone(), contract.as_deref().cloned()));
                }
                match contract.as_deref_mut() {
                    Some(state) => state.apply(event).map_err(fold_failed)?,
                    None => {
                        if !undo.snapshots {
                            undo.contracts.push((id.clone(), None));
                        }
                        self.shared.views.insert(ContractState::from_grant(event).map_err(fold_failed)?);
                        group.writes.push((keys::contract(id), next_seq.to_be_bytes().to_vec()));
                    }
                }
                self.dirty.insert(id.clone());
            }
        }
        let receipt = Receipt::of(&recorded, false);
        self.stage(recorded, group);
        undo.seqs.push(next_seq);
        Ok(receipt)
    }
}

impl Writer {
    /// Stores events recorded elsewhere, in order, while each continues the chain and folds.
    fn replicate(&mut self, events: &[RecordedEvent], group: &mut Group) -> Result<Replicated, AppendError> {
        if let Some(failure) = self.shared.failure.lock().expect("failure lock").clone() {
            return Err(AppendError::Unavailable(failure));
        }
        let mut stored = 0;
        for recorded in events {
            if let Err(reason) = self.replicate_one(recorded, group) {
                let refused = VerifyFailure { seq: recorded.event.seq, reason };
                return Ok(Replicated { stored, refused: Some(refused), head: self.head });
            }
            stored += 1;
        }
        Ok(Replicated { stored, refused: None, head: self.head })
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
        match &event.stream {
            Stream::Ledger => self.ledger.apply(event).map_err(|e| e.to_string())?,
            Stream::Contract(id) => match self.shared.views.get(id) {
                Some(live) => live.lock().expect("contract lock").apply(event).map_err(|e| e.to_string())?,
                None => {
                    self.shared.views.insert(ContractState::from_grant(event).map_err(|e| e.to_string())?);
                    group.writes.push((keys::contract(id), event.seq.to_be_bytes().to_vec()));
                }
            },
        }
        if let Stream::Contract(id) = &event.stream {
            self.dirty.insert(id.clone());
        }
        self.stage(recorded.clone(), group);
        Ok(())
    }
}

impl Writer {
    /// Queues the writes of an event that was decided on and folded: the record, its
    /// stream index entry, the Merkle nodes it completes; and moves the head.
    fn stage(&mut self, recorded: RecordedEvent, group: &mut Group) {
        let event = &recorded.event;
        debug_assert_eq!(event.seq, self.head.seq + 1);
        group.writes.push((keys::event(event.seq).to_vec(), join_record(&recorded.hash, &recorded.canonical)));
        group.writes.push((keys::stream_version(&event.stream, event.version), event.seq.to_be_bytes().to_vec()));
        // Leaves (level 0) are not stored: the event record holds the hash they derive from.
        for (level, index, hash) in self.frontier.push(&recorded.hash).into_iter().filter(|(level, _, _)| *level > 0) {
            group.writes.push((keys::tree_node(level, index).to_vec(), hash.0.to_vec()));
        }
        self.head = ChainHead { seq: event.seq, hash: recorded.hash, recorded_at: Some(event.recorded_at) };
        assert_eq!(self.frontier.size(), self.head.seq);
        group.events.insert(event.seq, recorded);
        group.event_count += 1;
    }
}

/// A refusal of the request as a whole (its key, its size, its actor), not of one event.
fn whole(rejection: Rejection) -> Result<Appended, AppendError> {
    Err(AppendError::RequestRefused(rejection))
}

fn storage(e: ReadError) -> AppendError {
    AppendError::Unavailable(format!("cannot read the store: {e}"))
}
