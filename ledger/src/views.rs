//! Materialized views: every contract's [`ContractState`], loaded on first use and persisted
//! in the sled tree `views` as a snapshot plus the events folded since (docs/FORMAT.md,
//! "Views").
//!
//! - The writer folds each event into its contract's live state as it decides on it, so a
//!   loaded state is always current (it may hold staged events; readers never look past
//!   the durable head, see [`projections::AsOf`]). Past the resident budget, a save turns
//!   the states the writer changed into [`BillingState`]s, a fifth of the size: the writer
//!   decides on invoices and payments with them and keeps those events pending until the
//!   next save; a load folds the pending events onto the tree's view ([`Views::trim`],
//!   [`Views::lock_billing`]).
//! - Every 100,000 events or 5 seconds, and on close, the writer persists what changed, with
//!   the cursor (the seq the views include), in one batch: for each changed contract, the
//!   canonical bytes of its new events as a *delta*, or, once its deltas would outweigh its
//!   snapshot, a new *snapshot* that replaces them. A save costs what changed (amortized),
//!   not the size of the states; a load folds at most about two snapshots' worth of
//!   deltas (a save writes about [`SAVE_SNAPSHOT_BYTES_MAX`] of snapshots and puts the
//!   others due off to later saves, until their deltas reach twice their snapshot).
//! - Opening reads the cursor and the contract directory only; a state is loaded (snapshot,
//!   then deltas folded with [`projections::fold`]) when the writer or a reader first needs
//!   it. Events after the cursor are folded in before the ledger serves, so the views never
//!   skip an event.
//! - Views are derived: a tree of another format, or one that does not decode, is rebuilt
//!   from the chain (the whole tree at open; one contract, refolded from the chain, when a
//!   lazy load finds it damaged), with a log line and `ledger_views_rebuilt_total`.
//!
//! Persisting needs no fsync: the events the views include were synced before them, and
//! sled applies batches in order, so after a crash the cursor is at worst behind and catches
//! up.

use crate::io::{Io, Op};
use crate::{corrupt, keys, store, ReadError, VerifyFailure};
use events::{ContractId, Event, Stream};
use parking_lot::{MappedMutexGuard, Mutex, MutexGuard};
use projections::{BillingState, ContractState, FoldError, LedgerFacts, Summary};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Layout version of the persisted views; a version other than these two is rebuilt on
/// open. Format 4 is format 3 plus a summary per contract (`U` keys); a format-3 tree is
/// used as it is (its contracts' summaries are made from their states when first asked
/// for, and saved with their next change), and its next save marks it format 4, so that
/// an older binary, which would not keep the summaries current, rebuilds it instead.
pub const VIEWS_FORMAT: u32 = 4;
const VIEWS_FORMAT_WITHOUT_SUMMARIES: u32 = 3;
/// Saves are this far apart at most (events, then milliseconds). Between saves the views are
/// ahead of the tree; an open after a crash folds the events since the last save (about
/// 0.1 s per 100,000). Fewer, larger saves matter when events interleave over many
/// contracts: each save writes a key per changed contract, and at 10,000 events a save over
/// 10,000 contracts wrote nearly a key per event.
pub const PERSIST_EVERY_EVENTS: u64 = 100_000;
pub const PERSIST_EVERY_MS: u128 = 5_000;
/// A contract's deltas are replaced by a snapshot once they would outweigh it, and never
/// before they reach this size (so a small contract is not rewritten at every save).
pub const SNAPSHOT_MIN_BYTES: usize = 16 * 1024;
/// Snapshot bytes one save writes before it puts off the other snapshots due (they save a
/// delta instead, and snapshot at a later save). Contracts that grow alike come due
/// together: 10,000 contracts of an interleaved import all did in the same save, one batch
/// of every state in the ledger (GiBs at 10M events, and that import's peak). A save may
/// pass it by one snapshot. Not put off: a contract's first save (there is nothing to add
/// a delta to), and one whose deltas reach twice its snapshot (so none grows unbounded).
/// sled holds many times a batch's bytes while it applies it: an interleaved import of 3M
/// events rose from 0.75 to 1.85 GiB resident during a save of 64 MiB of snapshots, and
/// peaked at 0.77 GiB with 8 MiB; 10M such events, at 1.85 and 1.12 GiB, in the same time.
pub const SAVE_SNAPSHOT_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Default of [`crate::Options::views_resident_events`]: a server on 10 million events over
/// 10,000 contracts stayed under 1 GiB resident with it through portfolio queries (states
/// take roughly 350-500 bytes an event in memory).
pub const RESIDENT_EVENTS_DEFAULT: u64 = 1_500_000;
/// `cledger import`'s default. An import needs a state again only when its contract comes
/// back, and the states it changed since the last save stay until that save: a file of
/// each contract's events together keeps few (10M events so: 370 MiB peak), a file that
/// goes over every contract between two saves keeps a billing state of each (10M events
/// over 10,000 contracts: 1.13 GiB peak, most of it sled's). What it costs: a file
/// returning to many contracts, each less often than a save, reloads their states.
pub const IMPORT_RESIDENT_EVENTS_DEFAULT: u64 = 100_000;

/// Events since the last save whose bytes a save reads in one pass, block by block, to
/// write the deltas; a save that follows more (saves failed for a while) reads each event
/// it needs by itself instead, so a save never holds more than this many events' bytes.
const SAVE_READ_AHEAD_MAX: u64 = 100_000;

/// Keys of the `views` tree.
const KEY_FORMAT: &[u8] = b"Mformat";
const KEY_CURSOR: &[u8] = b"Mcursor";
const KEY_LEDGER: &[u8] = b"Mledger";
/// `S` + contract id → postcard of its `ContractState` (as of its `last_seq`).
const SNAPSHOT: u8 = b'S';
/// `U` + contract id → postcard of its [`Summary`], made from the state the same batch saves.
const SUMMARY: u8 = b'U';
/// `D` + contract id + 0x00 + first version (u64 BE) → the canonical bytes of the
/// contract's events from that version on: u32 BE count, then per event u32 BE length and
/// the bytes. (Contract ids hold no 0x00, so a contract's deltas sort together, in order.)
const DELTA: u8 = b'D';

fn snapshot_key(id: &ContractId) -> Vec<u8> {
    let mut key = vec![SNAPSHOT];
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

fn summary_key(id: &ContractId) -> Vec<u8> {
    let mut key = vec![SUMMARY];
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

/// A state's summary: made from `saved`, the summary of the state as last saved, when there
/// is one (at the cost of what changed since: [`ContractState::summary_from`]), else whole.
fn summary_of(state: &ContractState, saved: Option<&Summary>) -> Result<Summary, ReadError> {
    let summary = match saved {
        Some(saved) => state.summary_from(saved),
        None => state.summary(),
    };
    summary.map_err(|_| corrupt(state.last_seq, &format!("the amounts of {} overflow", state.contract_id)))
}

/// Adds a contract's summary to a save's `batch`.
fn stage_summary(batch: &mut sled::Batch, summary: &Summary) -> Result<(), ReadError> {
    batch.insert(summary_key(summary.contract_id()), encode_summary(summary)?);
    Ok(())
}

fn encode_snapshot(state: &ContractState) -> Result<Vec<u8>, ReadError> {
    postcard::to_stdvec(state).map_err(|e| corrupt(state.last_seq, &format!("the state of {} does not encode: {e}", state.contract_id)))
}

fn encode_summary(summary: &Summary) -> Result<Vec<u8>, ReadError> {
    postcard::to_stdvec(summary).map_err(|e| corrupt(summary.last_seq(), &format!("the summary of {} does not encode: {e}", summary.contract_id())))
}

/// A contract's summary from the tree: `None` if it has none (views saved by format 3).
fn read_summary(tree: &sled::Tree, id: &ContractId) -> Result<Option<Summary>, LoadError> {
    let Some(bytes) = tree.get(summary_key(id))? else { return Ok(None) };
    let summary: Summary = postcard::from_bytes(&bytes).map_err(|e| LoadError::Views(format!("the summary does not decode: {e}")))?;
    if summary.contract_id() != id {
        return Err(LoadError::Views(format!("the summary holds contract {}", summary.contract_id())));
    }
    Ok(Some(summary))
}

fn delta_prefix(id: &ContractId) -> Vec<u8> {
    let mut key = vec![DELTA];
    key.extend_from_slice(id.as_str().as_bytes());
    key.push(0);
    key
}

fn delta_key(id: &ContractId, first_version: u64) -> Vec<u8> {
    let mut key = delta_prefix(id);
    key.extend_from_slice(&first_version.to_be_bytes());
    key
}

/// Why persisted views cannot be used.
#[derive(Debug)]
pub enum LoadError {
    /// They do not decode or do not fit the chain: rebuild them (they are derived data).
    Views(String),
    /// Reading the chain failed: that is the store's problem, not the views'.
    Chain(ReadError),
}

impl From<ReadError> for LoadError {
    fn from(e: ReadError) -> LoadError {
        LoadError::Chain(e)
    }
}

impl From<sled::Error> for LoadError {
    fn from(e: sled::Error) -> LoadError {
        LoadError::Chain(e.into())
    }
}

/// What the views tree holds of a loaded contract.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Persisted {
    /// The contract's version the tree includes (0: nothing, the next save writes a snapshot).
    version: u64,
    snapshot_bytes: usize,
    delta_bytes: usize,
}

/// A contract's state in memory, and what of it is persisted.
pub struct Loaded {
    pub state: ContractState,
    persisted: Persisted,
    /// Its events when it was loaded: what it adds to [`Views`]' resident count.
    resident_events: u64,
}

impl Loaded {
    /// Everything it holds is in the views tree: unloading it loses nothing.
    fn is_clean(&self) -> bool {
        self.persisted.version > 0 && self.persisted.version == self.state.version
    }
}

/// Where a contract's [`Summary`] is: it stays in memory once read (it is small), and is
/// made again from the state after the writer changes the state.
#[derive(Default)]
enum SummaryAt {
    /// Not read yet: the tree's `U` entry, if any, is the current state's.
    #[default]
    InTree,
    Current(Arc<Summary>),
    /// The writer has changed the state since: make it again from the state.
    Stale,
}

/// A contract the writer holds only the [`BillingState`] of (see [`Views::lock_billing`]):
/// what the tree holds of it, and the events since, every one an invoice or a payment,
/// which a load folds onto the tree's view.
struct Billing {
    state: BillingState,
    persisted: Persisted,
    /// In seq order; at most the events since the last save.
    pending: Vec<Event>,
}

/// What a slot's lock guards: the state once loaded (or the writer's billing state of it),
/// and its summary. One lock for all, so a summary is always that of the state as it is
/// (the writer marks it stale under the lock it changes the state under).
#[derive(Default)]
struct Contents {
    /// At most one of `loaded` and `billing` is held: a load folds the billing state's
    /// pending events and drops it.
    loaded: Option<Loaded>,
    billing: Option<Billing>,
    summary: SummaryAt,
    /// The summary of the state as last saved (the tree's): the next save, or a reader after
    /// the writer's changes, makes the new one from it at the cost of what changed
    /// ([`ContractState::summary_from`]). Saved states are durable, so no rollback can take
    /// back events it includes (a reader's summary may include staged events: never a base).
    saved_summary: Option<Arc<Summary>>,
}

/// One contract's place in the views: its state once loaded, and its summary.
#[derive(Default)]
pub struct Slot {
    contents: Mutex<Contents>,
}

/// A locked, loaded contract state.
pub type StateGuard<'a> = MappedMutexGuard<'a, ContractState>;

/// A locked contract the writer holds the billing state of ([`Views::lock_billing`]).
pub struct BillingGuard<'a> {
    contents: MutexGuard<'a, Contents>,
}

impl BillingGuard<'_> {
    fn billing(&self) -> &Billing {
        self.contents.billing.as_ref().expect("a billing guard is made of a slot holding a billing state")
    }

    pub fn state(&self) -> &BillingState {
        &self.billing().state
    }

    /// Folds an event the billing state admitted (or a leader decided on); it is pending
    /// until the next save, and the summary is stale from now on. On error (an event the
    /// billing state cannot take) nothing changed.
    pub fn apply(&mut self, event: &Event) -> Result<(), FoldError> {
        let billing = self.contents.billing.as_mut().expect("a billing guard is made of a slot holding a billing state");
        billing.state.apply(event)?;
        billing.pending.push(event.clone());
        self.contents.summary = SummaryAt::Stale;
        Ok(())
    }
}

/// The live states, shared by the writer (which folds into them) and readers.
pub struct Views {
    tree: sled::Tree,
    chain: sled::Tree,
    contracts: RwLock<BTreeMap<ContractId, Arc<Slot>>>,
    /// The cursor of the last save that succeeded (what the tree's `Mcursor` says).
    saved_cursor: Mutex<u64>,
    /// Held while a save's batch is applied. A load reads a contract's snapshot and deltas
    /// with several reads, so one that overlaps a batch saving that contract (one the
    /// writer holds only the billing state of: no other is saved while it may be loaded)
    /// can see parts of two views; it reads again once the batch is in.
    applying_save: Mutex<()>,
    /// Events of the states loaded from the tree that are still in memory (as counted when
    /// each was loaded).
    resident_events: std::sync::atomic::AtomicU64,
    /// Above this many resident events, a state a reader loaded is unloaded again after the
    /// read if it is clean ([`Views::relieve`]).
    resident_budget: u64,
    /// [`SAVE_SNAPSHOT_BYTES_MAX`], or another bound (tests).
    save_snapshot_bytes_max: usize,
}

/// The canonical bytes of the events a save writes as deltas: the events since the last
/// save, read once in seq order when first needed, else one at a time from the chain.
struct SaveReader<'a> {
    chain: &'a sled::Tree,
    since: u64,
    cursor: u64,
    recent: Option<Vec<store::Record>>,
}

impl SaveReader<'_> {
    fn canonical(&mut self, seq: u64) -> Result<std::borrow::Cow<'_, [u8]>, ReadError> {
        let in_window = seq > self.since && seq <= self.cursor && self.cursor - self.since <= SAVE_READ_AHEAD_MAX;
        if !in_window {
            return Ok(std::borrow::Cow::Owned(store::record(self.chain, seq)?.canonical));
        }
        if self.recent.is_none() {
            self.recent = Some(store::records(self.chain, self.since + 1, self.cursor).collect::<Result<_, _>>()?);
        }
        let recent = self.recent.as_deref().unwrap_or_default();
        let record = recent.get((seq - self.since - 1) as usize).ok_or_else(|| corrupt(seq, "event missing"))?;
        assert_eq!(record.seq, seq, "records are read in seq order without gaps");
        Ok(std::borrow::Cow::Borrowed(&record.canonical))
    }
}

impl Views {
    fn new(chain: sled::Tree, tree: sled::Tree, saved_cursor: u64) -> Views {
        Views {
            tree,
            chain,
            contracts: RwLock::new(BTreeMap::new()),
            saved_cursor: Mutex::new(saved_cursor),
            applying_save: Mutex::new(()),
            resident_events: std::sync::atomic::AtomicU64::new(0),
            resident_budget: RESIDENT_EVENTS_DEFAULT,
            save_snapshot_bytes_max: SAVE_SNAPSHOT_BYTES_MAX,
        }
    }

    /// Snapshot bytes a save writes before it puts off other snapshots due (default
    /// [`SAVE_SNAPSHOT_BYTES_MAX`]; tests lower it).
    pub fn set_save_snapshot_bytes_max(&mut self, bytes: usize) {
        self.save_snapshot_bytes_max = bytes;
    }

    /// Sets the resident budget ([`crate::Options::views_resident_events`]).
    pub fn set_resident_budget(&mut self, events: u64) {
        self.resident_budget = events;
    }

    /// Events of the loaded states, as counted when each was loaded.
    pub fn resident_events(&self) -> u64 {
        self.resident_events.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `f` of a contract's state, for a reader: loaded first if it is not in memory, and,
    /// if this call loaded it, relieved after ([`Views::relieve`]).
    pub fn read_state<R>(&self, slot: &Slot, id: &ContractId, known_at: u64, f: impl FnOnce(&ContractState) -> R) -> Result<R, ReadError> {
        let mut contents = slot.contents.lock();
        let loaded_now = self.ensure_loaded(&mut contents, id, known_at)?;
        let state = &contents.loaded.as_ref().ok_or_else(|| corrupt(0, &format!("the state of {id} did not load")))?.state;
        let out = f(state);
        drop(contents);
        if loaded_now {
            self.relieve(slot);
        }
        Ok(out)
    }

    /// Loads the state into `contents` if it is not in memory (from the tree, then the
    /// pending events of the writer's billing state, which it replaces); says whether it did.
    fn ensure_loaded(&self, contents: &mut Contents, id: &ContractId, known_at: u64) -> Result<bool, ReadError> {
        if contents.loaded.is_some() {
            return Ok(false);
        }
        let loaded = self.load_current(contents, id, known_at)?;
        self.resident_events.fetch_add(loaded.resident_events, std::sync::atomic::Ordering::Relaxed);
        contents.billing = None;
        contents.loaded = Some(loaded);
        Ok(true)
    }

    /// The contract's state as it is now, from the tree and, if the writer holds only its
    /// billing state, the events since (which a view refolded from the chain may include
    /// already). Changes nothing in `contents`.
    fn load_current(&self, contents: &Contents, id: &ContractId, known_at: u64) -> Result<Loaded, ReadError> {
        let mut loaded = self.load(id, known_at)?;
        let Some(billing) = &contents.billing else { return Ok(loaded) };
        // The pending events a view (or a refold, which may hold some already) does not.
        let fold_pending = |state: &mut ContractState| -> Result<(), ReadError> {
            let folded_to = state.last_seq;
            for event in billing.pending.iter().filter(|e| e.seq > folded_to) {
                projections::fold(event, Some(state), &mut LedgerFacts::default())
                    .map_err(|e| corrupt(event.seq, &format!("does not fold onto the view of {id}: {e}")))?;
            }
            Ok(())
        };
        fold_pending(&mut loaded.state)?;
        if loaded.state.version != billing.state.version() {
            // The tree's view is behind what was saved of it: damaged, like a view that does
            // not decode, and refolded from the chain the same way.
            let reason = format!("with its pending events it is at version {}, its billing state at {}", loaded.state.version, billing.state.version());
            loaded = self.refold(id, known_at, &reason)?;
            fold_pending(&mut loaded.state)?;
            if loaded.state.version != billing.state.version() {
                return Err(corrupt(loaded.state.last_seq, &format!("contract {id} refolded from the chain is at version {}, its billing state at {}", loaded.state.version, billing.state.version())));
            }
        }
        Ok(loaded)
    }

    /// A contract's summary, for a reader: the one in memory, else the tree's, else made
    /// from the state (loaded for it if need be, and relieved after). A summary may include
    /// events after the durable head (staged ones): it answers only for points of view that
    /// see all of them ([`Summary::answers`]), and the writer marks it stale before it
    /// changes or rolls back the state.
    pub fn summary(&self, slot: &Slot, id: &ContractId, known_at: u64) -> Result<Arc<Summary>, ReadError> {
        let mut contents = slot.contents.lock();
        match &contents.summary {
            SummaryAt::Current(summary) => return Ok(summary.clone()),
            SummaryAt::InTree => match self.take_saved_summary(&mut contents, id) {
                Ok(Some(summary)) => return Ok(summary),
                Ok(None) => {}
                Err(LoadError::Views(reason)) => {
                    tracing::warn!("the summary of contract {id} cannot be used ({reason}); making it from its state");
                    metrics::counter!("ledger_views_rebuilt_total").increment(1);
                }
                Err(LoadError::Chain(e)) => return Err(e),
            },
            SummaryAt::Stale => {}
        }
        if let Some(summary) = self.billing_summary(&mut contents, id) {
            let summary = Arc::new(summary);
            contents.summary = SummaryAt::Current(summary.clone());
            return Ok(summary);
        }
        let loaded_now = self.ensure_loaded(&mut contents, id, known_at)?;
        let state = &contents.loaded.as_ref().expect("just loaded").state;
        let summary = Arc::new(summary_of(state, contents.saved_summary.as_deref())?);
        contents.summary = SummaryAt::Current(summary.clone());
        drop(contents);
        if loaded_now {
            self.relieve(slot);
        }
        Ok(summary)
    }

    /// `f` of the slot's summary if it is in memory, or saved and readable (then read into
    /// memory now); `None` otherwise. Reads nothing else and never waits: it never loads or
    /// refolds a state, and it skips a slot whose lock is held, so it may run on a rayon
    /// worker. (A holder of a slot lock may be refolding a damaged view, which waits on
    /// rayon work: a worker waiting for that lock could leave no worker to do it.) `f` runs
    /// under the slot's lock, so it must not wait either. A summary skipped or not readable
    /// is left as it is, for [`Views::summary`] to read, or to report and make from the
    /// state.
    pub fn with_ready_summary<R>(&self, slot: &Slot, id: &ContractId, f: impl FnOnce(&Summary) -> R) -> Option<R> {
        let mut contents = slot.contents.try_lock()?;
        if matches!(contents.summary, SummaryAt::InTree) {
            let _ = self.take_saved_summary(&mut contents, id);
        }
        match &contents.summary {
            SummaryAt::Current(summary) => Some(f(summary)),
            SummaryAt::InTree | SummaryAt::Stale => None,
        }
    }

    /// The tree's summary of a slot whose summary is [`SummaryAt::InTree`], now current.
    fn take_saved_summary(&self, contents: &mut Contents, id: &ContractId) -> Result<Option<Arc<Summary>>, LoadError> {
        let Some(summary) = read_summary(&self.tree, id)? else { return Ok(None) };
        let summary = Arc::new(summary);
        contents.summary = SummaryAt::Current(summary.clone());
        contents.saved_summary = Some(summary.clone());
        Ok(Some(summary))
    }

    /// After a save (the writer, between groups, when every state is saved): counts the
    /// events the loaded states hold and, above the budget, makes room until they hold at
    /// most three quarters of it (so the next saves do not trim again at once): first it
    /// unloads clean states other than those in `keep` (the contracts the writer changed
    /// since the save before), then it turns clean states in `keep` into billing states
    /// (this is where they are made; [`Views::lock_billing`] uses them), which are about a
    /// fifth of their size and all the writer needs for the invoices and payments that make
    /// most of a history. A state that has no billing state stays whole. Billing states
    /// not in `keep` are dropped whatever the budget: the writer has left them alone since
    /// the save before.
    /// This bounds the writer's memory too; a state it needs again is loaded again.
    /// Returns how many states were unloaded or turned into billing states.
    pub fn trim(&self, keep: &BTreeSet<ContractId>) -> usize {
        use std::sync::atomic::Ordering;
        let mut loaded: Vec<(bool, Arc<Slot>, u64)> = Vec::new();
        let mut billing_entries = 0;
        for (id, slot) in self.all() {
            let kept = keep.contains(&id);
            let mut contents = slot.contents.lock();
            if let Some(l) = contents.loaded.as_ref() {
                let events = l.state.events.len() as u64;
                drop(contents);
                loaded.push((kept, slot, events));
            } else if let Some(billing) = contents.billing.as_ref() {
                if !kept && billing.pending.is_empty() {
                    contents.billing = None;
                } else {
                    billing_entries += billing.state.len();
                }
            }
        }
        let mut total: u64 = loaded.iter().map(|(_, _, n)| n).sum();
        let (mut trimmed, mut made_billing) = (0, 0);
        if total > self.resident_budget {
            let low_water = self.resident_budget / 4 * 3;
            // Idle states first (unloaded), then the writer's (turned into billing states).
            for turn in [false, true] {
                for (_, slot, _) in loaded.iter().filter(|(kept, _, _)| *kept == turn) {
                    if total <= low_water {
                        break;
                    }
                    let mut guard = slot.contents.lock();
                    let Some(l) = guard.loaded.as_ref().filter(|l| l.is_clean()) else { continue };
                    // The writer's: kept as a billing state, or whole if it has none.
                    let billing = if turn {
                        let Some(state) = BillingState::of(&l.state) else { continue };
                        billing_entries += state.len();
                        Some(Billing { state, persisted: l.persisted, pending: Vec::new() })
                    } else {
                        None
                    };
                    total = total.saturating_sub(l.state.events.len() as u64);
                    trimmed += 1;
                    made_billing += usize::from(billing.is_some());
                    guard.loaded = None;
                    guard.billing = billing;
                }
            }
            metrics::counter!("ledger_views_unloaded_total").increment((trimmed - made_billing) as u64);
            metrics::counter!("ledger_views_billing_states_made_total").increment(made_billing as u64);
        }
        metrics::gauge!("ledger_views_billing_entries").set(billing_entries as f64);
        self.resident_events.store(total, Ordering::Relaxed);
        trimmed
    }

    /// After a reader is done with a state it loaded: if the views hold more than their
    /// budget and the state is clean (all of it in the tree), unload it again. The writer
    /// never calls this, and a state with changes not yet saved is never unloaded, so no
    /// work is lost; the next use loads it again.
    pub fn relieve(&self, slot: &Slot) {
        use std::sync::atomic::Ordering;
        if self.resident_events.load(Ordering::Relaxed) <= self.resident_budget {
            return;
        }
        let mut guard = slot.contents.lock();
        if guard.loaded.as_ref().is_some_and(Loaded::is_clean)
            && let Some(loaded) = guard.loaded.take() {
                let _ = self.resident_events.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(loaded.resident_events)));
                metrics::counter!("ledger_views_unloaded_total").increment(1);
            }
    }

    // The map is only changed whole-entry by the writer; a reader's panic cannot leave it
    // half-changed, so a poisoned lock is used as is.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<ContractId, Arc<Slot>>> {
        self.contracts.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<ContractId, Arc<Slot>>> {
        self.contracts.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, id: &ContractId) -> Option<Arc<Slot>> {
        self.read().get(id).cloned()
    }

    /// Locks a contract's state for the writer, to change it (or roll it back), loading it
    /// first if it is not in memory (`known_at`: the durable head, up to which a damaged view
    /// is refolded from the chain). Its summary is stale from now on.
    pub fn lock<'a>(&self, slot: &'a Slot, id: &ContractId, known_at: u64) -> Result<StateGuard<'a>, ReadError> {
        let mut guard = slot.contents.lock();
        self.ensure_loaded(&mut guard, id, known_at)?;
        guard.summary = SummaryAt::Stale;
        MutexGuard::try_map(guard, |c| c.loaded.as_mut().map(|l| &mut l.state)).map_err(|_| corrupt(0, &format!("the state of {id} did not load")))
    }

    /// The writer's [`BillingState`] of a contract, if that is what it holds of it, to
    /// decide on an invoice or a payment with ([`projections::seal_billing`]); `None` when
    /// the slot holds the state or nothing (the writer then decides with the state, loaded
    /// if need be: deciding may need it, and loading it twice would cost twice).
    /// [`Views::trim`] turns the states of contracts the writer changes into billing
    /// states past the budget, which is what bounds the memory of an import interleaved
    /// over many contracts.
    pub fn lock_billing<'a>(&self, slot: &'a Slot) -> Option<BillingGuard<'a>> {
        let contents = slot.contents.lock();
        contents.billing.is_some().then_some(BillingGuard { contents })
    }

    /// Rolls a contract the writer changed back to `mark`, whether it holds the state or the
    /// billing state (the undone events are then the last pending ones). Its summary is
    /// stale from now on.
    pub fn rollback(&self, slot: &Slot, id: &ContractId, known_at: u64, mark: &projections::Mark) -> Result<(), ReadError> {
        let mut contents = slot.contents.lock();
        contents.summary = SummaryAt::Stale;
        if let Some(billing) = contents.billing.as_mut() {
            let kept = billing.pending.partition_point(|e| e.seq <= mark.last_seq);
            let undone = billing.pending.split_off(kept);
            billing.state.rollback(mark, undone.iter().rev());
            return Ok(());
        }
        self.ensure_loaded(&mut contents, id, known_at)?;
        contents.loaded.as_mut().ok_or_else(|| corrupt(0, &format!("the state of {id} did not load")))?.state.rollback(mark);
        Ok(())
    }

    /// The summary of a contract the writer holds the billing state of, made from the
    /// saved summary and the pending events without loading the state; `None` if there is
    /// no such billing state or saved summary.
    fn billing_summary(&self, contents: &mut Contents, id: &ContractId) -> Option<Summary> {
        let billing = contents.billing.as_ref()?;
        let saved = match &contents.saved_summary {
            Some(saved) => saved.clone(),
            None => Arc::new(read_summary(&self.tree, id).ok()??),
        };
        if saved.version() != billing.persisted.version {
            return None;
        }
        let summary = saved.with_billing_events(&billing.pending)?.ok()?;
        contents.saved_summary = Some(saved);
        Some(summary)
    }

    /// A contract created now (its grant staged): in memory, nothing of it persisted.
    pub fn insert_new(&self, state: ContractState) {
        let id = state.contract_id.clone();
        // Not counted as resident: a reader never loaded it, so no reader unloads it.
        let loaded = Loaded { state, persisted: Persisted::default(), resident_events: 0 };
        let slot = Slot { contents: Mutex::new(Contents { loaded: Some(loaded), billing: None, summary: SummaryAt::Stale, saved_summary: None }) };
        self.write().insert(id, Arc::new(slot));
    }

    pub fn remove(&self, id: &ContractId) {
        self.write().remove(id);
    }

    /// Every contract's slot, in id order (a snapshot of the map, not of the states).
    pub fn all(&self) -> Vec<(ContractId, Arc<Slot>)> {
        self.read().iter().map(|(id, s)| (id.clone(), s.clone())).collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many states are in memory.
    pub fn loaded(&self) -> usize {
        self.all().iter().filter(|(_, s)| s.contents.lock().loaded.is_some()).count()
    }

    /// How many contracts the writer holds only the billing state of.
    pub fn billing_held(&self) -> usize {
        self.all().iter().filter(|(_, s)| s.contents.lock().billing.is_some()).count()
    }

    /// Loads a contract from the tree; one that is missing or does not decode is refolded
    /// from the chain (and saved whole at the next persist).
    fn load(&self, id: &ContractId, known_at: u64) -> Result<Loaded, ReadError> {
        let first = match load_persisted(&self.tree, id) {
            Err(LoadError::Views(_)) => {
                // Perhaps read across a save's batch: again, once it is in (see `applying_save`).
                let _applied = self.applying_save.lock();
                load_persisted(&self.tree, id)
            }
            other => other,
        };
        let reason = match first {
            Ok(Some(loaded)) => return Ok(loaded),
            Ok(None) => "missing".to_string(),
            Err(LoadError::Views(reason)) => reason,
            Err(LoadError::Chain(e)) => return Err(e),
        };
        self.refold(id, known_at, &reason)
    }

    /// A contract whose view cannot be used (`reason`), folded from the chain, with a log
    /// line and `ledger_views_rebuilt_total`; saved whole at the next persist.
    fn refold(&self, id: &ContractId, known_at: u64, reason: &str) -> Result<Loaded, ReadError> {
        tracing::warn!("the view of contract {id} cannot be used ({reason}); refolding it from the chain");
        metrics::counter!("ledger_views_rebuilt_total").increment(1);
        // It must hold every event the tree's view did, or the pending events of a billing
        // state (those after the last save) would not follow it: up to the saved cursor at
        // least (its events are durable).
        let head = known_at.max(*self.saved_cursor.lock());
        let state = fold_from_chain(&self.chain, id, head)?.ok_or_else(|| corrupt(0, &format!("contract {id} has no events in the chain")))?;
        let resident_events = state.events.len() as u64;
        Ok(Loaded { state, persisted: Persisted::default(), resident_events })
    }

    /// Persists what changed in `dirty` since the last save, with the ledger's facts and the
    /// cursor, in one batch (through `io`). Every dirty state must hold exactly the events up
    /// to `cursor` (the writer persists between groups). On error nothing of it is recorded
    /// as saved, so the next save writes it again.
    pub fn persist(&self, dirty: &BTreeSet<ContractId>, ledger: &LedgerFacts, cursor: u64, io: &Io, op: Op) -> Result<(), ReadError> {
        let mut batch = sled::Batch::default();
        let mut saved: Vec<(Arc<Slot>, Persisted, Arc<Summary>)> = Vec::with_capacity(dirty.len());
        let since = *self.saved_cursor.lock();
        let mut reader = SaveReader { chain: &self.chain, since, cursor, recent: None };
        let mut snapshot_bytes = 0;
        for id in dirty {
            let Some(slot) = self.get(id) else { continue };
            let mut guard = slot.contents.lock();
            let (persisted, summary) = if let Some(loaded) = guard.loaded.as_ref() {
                let state = &loaded.state;
                let seqs = || state.seqs_after(loaded.persisted.version, cursor, usize::MAX);
                let snapshot = || encode_snapshot(state);
                let Some(persisted) = self.stage_save(id, loaded.persisted, state.version, seqs, snapshot, &mut reader, &mut batch, &mut snapshot_bytes)? else { continue };
                // The summary goes with the state it is made from, in the same batch.
                (persisted, summary_of(state, guard.saved_summary.as_deref())?)
            } else if guard.billing.as_ref().is_some_and(|b| !b.pending.is_empty()) {
                // The summary from the saved one and the pending events; else from the state.
                let summary = match self.billing_summary(&mut guard, id) {
                    Some(summary) => summary,
                    None => summary_of(&self.load_current(&guard, id, cursor)?.state, None)?,
                };
                let billing = guard.billing.as_ref().expect("checked above");
                let seqs = || billing.pending.iter().map(|e| e.seq).collect();
                let snapshot = || encode_snapshot(&self.load_current(&guard, id, cursor)?.state);
                let Some(persisted) = self.stage_save(id, billing.persisted, billing.state.version(), seqs, snapshot, &mut reader, &mut batch, &mut snapshot_bytes)? else { continue };
                (persisted, summary)
            } else {
                continue;
            };
            stage_summary(&mut batch, &summary)?;
            drop(guard);
            saved.push((slot, persisted, Arc::new(summary)));
        }
        batch.insert(KEY_LEDGER, postcard::to_stdvec(ledger).map_err(|e| corrupt(cursor, &format!("ledger facts do not encode: {e}")))?);
        batch.insert(KEY_CURSOR, &cursor.to_be_bytes());
        batch.insert(KEY_FORMAT, &VIEWS_FORMAT.to_be_bytes());
        {
            let _applying = self.applying_save.lock();
            io.run(op, || self.tree.apply_batch(batch))?;
        }
        *self.saved_cursor.lock() = cursor;
        for (slot, persisted, summary) in saved {
            let mut contents = slot.contents.lock();
            contents.saved_summary = Some(summary.clone());
            // The writer saves between groups: the state is still the one saved.
            let version = if let Some(loaded) = contents.loaded.as_mut() {
                loaded.persisted = persisted;
                loaded.state.version
            } else if let Some(billing) = contents.billing.as_mut() {
                billing.persisted = persisted;
                billing.pending.retain(|e| e.version > persisted.version);
                billing.state.version()
            } else {
                continue;
            };
            if version == persisted.version {
                contents.summary = SummaryAt::Current(summary);
            }
        }
        Ok(())
    }

    /// Adds one contract's save to `batch`: a delta of its events since the last save, or a
    /// snapshot (replacing its deltas) once the deltas would outweigh it, unless this save
    /// has written [`SAVE_SNAPSHOT_BYTES_MAX`] of snapshots already (`snapshot_bytes`, which
    /// it adds to). What the tree will hold of it afterwards; `None` if nothing changed.
    /// `version` is the contract's now, `seqs` gives the seqs of its events after
    /// `persisted`, and `snapshot` its state's bytes.
    #[allow(clippy::too_many_arguments)]
    fn stage_save(
        &self,
        id: &ContractId,
        persisted: Persisted,
        version: u64,
        seqs: impl FnOnce() -> Vec<u64>,
        snapshot: impl FnOnce() -> Result<Vec<u8>, ReadError>,
        reader: &mut SaveReader<'_>,
        batch: &mut sled::Batch,
        snapshot_bytes: &mut usize,
    ) -> Result<Option<Persisted>, ReadError> {
        if version <= persisted.version && persisted.version > 0 {
            return Ok(None);
        }
        if persisted.version > 0 {
            let seqs = seqs();
            let mut delta = Vec::with_capacity(4 + seqs.len() * 128);
            delta.extend_from_slice(&(seqs.len() as u32).to_be_bytes());
            for seq in &seqs {
                let canonical = reader.canonical(*seq)?;
                delta.extend_from_slice(&(canonical.len() as u32).to_be_bytes());
                delta.extend_from_slice(&canonical);
            }
            let threshold = persisted.snapshot_bytes.max(SNAPSHOT_MIN_BYTES);
            let deltas = persisted.delta_bytes + delta.len();
            // Put off only while the deltas are below twice the snapshot: a contract the
            // bound keeps missing (ids come in order) or that stops changing while put off
            // still folds at most about two snapshots' worth on load.
            let put_off = deltas > threshold && deltas <= threshold.saturating_mul(2) && *snapshot_bytes >= self.save_snapshot_bytes_max;
            if put_off {
                metrics::counter!("ledger_views_snapshots_put_off_total").increment(1);
            }
            if deltas <= threshold || put_off {
                batch.insert(delta_key(id, persisted.version + 1), delta.as_slice());
                return Ok(Some(Persisted { version, snapshot_bytes: persisted.snapshot_bytes, delta_bytes: persisted.delta_bytes + delta.len() }));
            }
        }
        let snapshot = snapshot()?;
        for key in self.tree.scan_prefix(delta_prefix(id)).keys() {
            batch.remove(key?);
        }
        let saved = Persisted { version, snapshot_bytes: snapshot.len(), delta_bytes: 0 };
        *snapshot_bytes += snapshot.len();
        batch.insert(snapshot_key(id), snapshot);
        Ok(Some(saved))
    }
}

/// A contract's persisted view: its snapshot, then its deltas folded in order. `None` when
/// the tree has nothing of it.
fn load_persisted(tree: &sled::Tree, id: &ContractId) -> Result<Option<Loaded>, LoadError> {
    let views = |reason: String| LoadError::Views(format!("view of {id}: {reason}"));
    // Deltas first, then the snapshot: a save's batch landing between the two reads then
    // either leaves a consistent view (a delta added: it follows the old snapshot's
    // deltas) or one that fails the version check below, which `Views::load` reads again
    // once the batch is in (a new snapshot read with old deltas would not follow them).
    let deltas: Vec<(sled::IVec, sled::IVec)> = tree.scan_prefix(delta_prefix(id)).collect::<Result<_, _>>()?;
    let Some(snapshot) = tree.get(snapshot_key(id))? else {
        return if deltas.is_empty() { Ok(None) } else { Err(views("deltas without a snapshot".into())) };
    };
    let mut state: ContractState = postcard::from_bytes(&snapshot).map_err(|e| views(format!("the snapshot does not decode: {e}")))?;
    if state.contract_id != *id {
        return Err(views(format!("the snapshot holds contract {}", state.contract_id)));
    }
    let mut ledger = LedgerFacts::default();
    let mut delta_bytes = 0;
    let prefix_len = delta_prefix(id).len();
    for (key, value) in deltas {
        let first = key.get(prefix_len..).and_then(keys::u64_value).ok_or_else(|| views("malformed delta key".into()))?;
        if first != state.version + 1 {
            return Err(views(format!("a delta from version {first} follows version {}", state.version)));
        }
        for canonical in delta_events(&value).ok_or_else(|| views("malformed delta".into()))? {
            let event = Event::decode(canonical).map_err(|e| views(format!("a delta's event does not decode: {e}")))?;
            projections::fold(&event, Some(&mut state), &mut ledger).map_err(|e| views(format!("a delta's event does not fold: {e}")))?;
        }
        delta_bytes += value.len();
    }
    let persisted = Persisted { version: state.version, snapshot_bytes: snapshot.len(), delta_bytes };
    let resident_events = state.events.len() as u64;
    Ok(Some(Loaded { state, persisted, resident_events }))
}

/// The events of a delta value, or `None` if it is malformed.
fn delta_events(value: &[u8]) -> Option<Vec<&[u8]>> {
    let count = u32::from_be_bytes(value.get(..4)?.try_into().ok()?) as usize;
    let mut rest = &value[4..];
    let mut out = Vec::with_capacity(count.min(rest.len()));
    for _ in 0..count {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        out.push(rest.get(4..4 + len)?);
        rest = &rest[4 + len..];
    }
    rest.is_empty().then_some(out)
}

/// Folds one contract from the whole chain, up to `head` (the slow way: every event is read).
fn fold_from_chain(chain: &sled::Tree, id: &ContractId, head: u64) -> Result<Option<ContractState>, ReadError> {
    let mut state: Option<ContractState> = None;
    let mut ledger = LedgerFacts::default();
    store::decode_in_order(chain, 1, head, |recorded| {
        if recorded.event.stream.contract_id() != Some(id) {
            return Ok(());
        }
        let seq = recorded.event.seq;
        if let Some(new) = projections::fold(&recorded.event, state.as_mut(), &mut ledger).map_err(|e| corrupt(seq, &e.to_string()))? {
            state = Some(new);
        }
        Ok(())
    })?;
    Ok(state)
}

/// The views of a store as they are on open: the directory of contracts (not loaded), the
/// ledger's facts, and the contracts changed after the persisted cursor (loaded, caught up).
pub struct Opened {
    pub views: Views,
    pub ledger: LedgerFacts,
    /// Contracts changed by the events after the cursor: to be persisted.
    pub dirty: BTreeSet<ContractId>,
    pub cursor: u64,
}

/// Opens the views of a store whose chain ends at `head`: the cursor and facts from the
/// tree, every contract of the chain's directory on disk, then the events after the cursor
/// folded in. Views of another format, or that do not fit the chain, are rebuilt whole as
/// `cledger rebuild` does ([`rebuild_to`]: every state folded, then saved in batches of
/// [`REBUILD_BATCH_CONTRACTS`] through `io` and dropped), and opened as saved: the server
/// does not keep the states the rebuild held, nor save them all in one batch.
pub fn open(chain: &sled::Tree, tree: &sled::Tree, head: u64, io: &Io) -> Result<Opened, ReadError> {
    match open_persisted(chain, tree, head) {
        Ok(opened) => Ok(opened),
        Err(LoadError::Views(reason)) => {
            tracing::warn!("the persisted views cannot be used ({reason}); rebuilding them from the chain");
            metrics::counter!("ledger_views_rebuilt_total").increment(1);
            rebuild_to(chain, tree, head, io, Op::OpenBatch, |_, _| {})?;
            match open_persisted(chain, tree, head) {
                Ok(opened) => Ok(opened),
                Err(LoadError::Views(reason)) => Err(corrupt(0, &format!("the views just rebuilt from the chain cannot be used: {reason}"))),
                Err(LoadError::Chain(e)) => Err(e),
            }
        }
        Err(LoadError::Chain(e)) => Err(e),
    }
}

fn open_persisted(chain: &sled::Tree, tree: &sled::Tree, head: u64) -> Result<Opened, LoadError> {
    let format = tree.get(KEY_FORMAT)?.and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok()).map(u32::from_be_bytes);
    let cursor = tree.get(KEY_CURSOR)?.and_then(|v| keys::u64_value(&v));
    let (cursor, ledger) = match (format, cursor) {
        (Some(VIEWS_FORMAT | VIEWS_FORMAT_WITHOUT_SUMMARIES), Some(c)) if c <= head => {
            let ledger = match tree.get(KEY_LEDGER)? {
                Some(v) => postcard::from_bytes(&v).map_err(|e| LoadError::Views(format!("the ledger's facts do not decode: {e}")))?,
                None => LedgerFacts::default(),
            };
            (c, ledger)
        }
        // A new store's. Empty views over events (cut short by a rebuild, say) are rebuilt,
        // not caught up from the first event: that would keep every state and save them all
        // in one batch.
        (None, None) if tree.is_empty() && head == 0 => (0, LedgerFacts::default()),
        (format, cursor) => return Err(LoadError::Views(format!("format {format:?}, cursor {cursor:?}, chain head {head}"))),
    };
    let views = Views::new(chain.clone(), tree.clone(), cursor);
    {
        let mut map = views.write();
        for item in chain.scan_prefix([keys::CONTRACT]) {
            let (key, value) = item?;
            let grant = keys::u64_value(&value).ok_or_else(|| corrupt(0, "malformed contract entry"))?;
            if grant > cursor {
                continue; // folded in below, from its grant
            }
            let id = std::str::from_utf8(&key[1..]).ok().and_then(|s| ContractId::parse(s).ok()).ok_or_else(|| corrupt(grant, "malformed contract key"))?;
            map.insert(id, Arc::new(Slot::default()));
        }
    }
    let mut ledger = ledger;
    let mut dirty = BTreeSet::new();
    if cursor < head {
        store::decode_in_order(chain, cursor + 1, head, |recorded| {
            let event = &recorded.event;
            let seq = event.seq;
            let failed = |e: projections::FoldError| corrupt(seq, &format!("does not fold onto the persisted views: {e}"));
            match &event.stream {
                Stream::Ledger => ledger.apply(event).map_err(failed)?,
                Stream::Contract(id) => match views.get(id) {
                    Some(slot) => {
                        let mut state = views.lock(&slot, id, cursor)?;
                        projections::fold(event, Some(&mut state), &mut ledger).map_err(failed)?;
                        dirty.insert(id.clone());
                    }
                    None => {
                        if let Some(new) = projections::fold(event, None, &mut ledger).map_err(failed)? {
                            dirty.insert(new.contract_id.clone());
                            views.insert_new(new);
                        }
                    }
                },
            }
            Ok(())
        })
        // An event that does not fold onto the persisted views, in a chain that is sound,
        // means the views are wrong: they are rebuilt.
        .map_err(|e| match e {
            ReadError::Corrupt(f) if f.reason.contains("onto the persisted views") => LoadError::Views(f.to_string()),
            other => LoadError::Chain(other),
        })?;
    }
    Ok(Opened { views, ledger, dirty, cursor })
}

/// Every contract's state and the ledger's facts, folded from the whole chain.
pub struct Folded {
    pub states: BTreeMap<ContractId, ContractState>,
    pub ledger: LedgerFacts,
    pub events: u64,
}

/// Threads a [`ShardedFold`] folds contracts on, each the contracts whose id hashes to it.
/// A contract's events fold onto its own state alone (ledger-wide events onto the ledger's
/// facts, on the caller's thread), so contracts fold apart. With one thread folding every
/// event, a rebuild of a million events spent two thirds of its time on that thread.
const FOLD_SHARDS: usize = 2;
/// Events handed to a folding thread at once, and batches of them on their way to it.
const FOLD_BATCH_EVENTS: usize = 1_024;
const FOLD_BATCHES_IN_FLIGHT: usize = 4;

/// Events of a whole chain, given in seq order, folded into every contract's state and the
/// ledger's facts, the contracts on [`FOLD_SHARDS`] threads. The error it ends with is the
/// one of the lowest seq, as if folded one event at a time.
pub struct ShardedFold {
    shards: Vec<FoldShard>,
    ledger: LedgerFacts,
}

struct FoldShard {
    tx: std::sync::mpsc::SyncSender<Vec<Event>>,
    batch: Vec<Event>,
    /// The states its contracts' events made, or the first (lowest seq) that did not fold.
    folded: std::thread::JoinHandle<Result<BTreeMap<ContractId, ContractState>, ReadError>>,
}

/// What [`ShardedFold::push`] says when it cannot take the event: it does not fold onto
/// the ledger's facts, or a folding thread has stopped at an error (which
/// [`ShardedFold::finish`] returns).
const SHARD_STOPPED: &str = "a folding thread stopped";

impl ShardedFold {
    pub fn new() -> Result<ShardedFold, ReadError> {
        let mut shards = Vec::with_capacity(FOLD_SHARDS);
        for _ in 0..FOLD_SHARDS {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Event>>(FOLD_BATCHES_IN_FLIGHT);
            let folded = std::thread::Builder::new()
                .name("ledger-fold".into())
                .spawn(move || fold_shard(rx))
                .map_err(|e| ReadError::Storage(sled::Error::Io(e)))?;
            shards.push(FoldShard { tx, batch: Vec::with_capacity(FOLD_BATCH_EVENTS), folded });
        }
        Ok(ShardedFold { shards, ledger: LedgerFacts::default() })
    }

    /// Folds the next event of the chain (a contract's, on its thread, later).
    pub fn push(&mut self, event: Event) -> Result<(), ReadError> {
        let seq = event.seq;
        let Some(id) = event.stream.contract_id() else {
            return projections::fold(&event, None, &mut self.ledger).map(|_| ()).map_err(|e| corrupt(seq, &e.to_string()));
        };
        let shard = &mut self.shards[fold_shard_of(id)];
        shard.batch.push(event);
        if shard.batch.len() >= FOLD_BATCH_EVENTS && shard.tx.send(std::mem::take(&mut shard.batch)).is_err() {
            return Err(corrupt(seq, SHARD_STOPPED));
        }
        Ok(())
    }

    /// Waits for the folding threads. `fed` is how feeding it ended: an error there is after
    /// every event pushed, so a folding thread's error, at a lower seq, comes first. It
    /// waits for every event pushed to be folded even when feeding failed, which is what
    /// finding the lowest seq's error takes.
    pub fn finish(self, fed: Result<(), ReadError>) -> Result<(BTreeMap<ContractId, ContractState>, LedgerFacts), ReadError> {
        let mut states = BTreeMap::new();
        let mut first_failure: Option<VerifyFailure> = None;
        for shard in self.shards {
            // Sending fails only if the thread stopped, which its answer says.
            let _ = shard.tx.send(shard.batch);
            drop(shard.tx);
            match shard.folded.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)) {
                Ok(mut folded) => states.append(&mut folded),
                Err(ReadError::Corrupt(f)) => {
                    if first_failure.as_ref().is_none_or(|kept| f.seq < kept.seq) {
                        first_failure = Some(f);
                    }
                }
                Err(other) => return Err(other),
            }
        }
        match (first_failure, fed) {
            (Some(f), _) => Err(ReadError::Corrupt(f)),
            (None, Err(e)) => Err(e),
            (None, Ok(())) => Ok((states, self.ledger)),
        }
    }
}

fn fold_shard(batches: std::sync::mpsc::Receiver<Vec<Event>>) -> Result<BTreeMap<ContractId, ContractState>, ReadError> {
    let mut states: BTreeMap<ContractId, ContractState> = BTreeMap::new();
    let mut no_ledger = LedgerFacts::default();
    for batch in batches {
        for event in batch {
            projections::fold_into(&mut states, &event, &mut no_ledger).map_err(|e| corrupt(event.seq, &e.to_string()))?;
        }
    }
    Ok(states)
}

/// The folding thread of a contract: a fixed hash of its id (any split of the contracts
/// gives the same states).
fn fold_shard_of(id: &ContractId) -> usize {
    let hash = id.as_str().bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    hash as usize % FOLD_SHARDS
}

/// Folds the whole chain up to `head`, checking every event on every core and its links in
/// order ([`crate::ChainVerifier`]), folding contracts apart ([`ShardedFold`]). The error
/// returned is the one of the lowest seq. `progress` gets each linked seq and `head`.
pub fn fold_chain(chain: &sled::Tree, head: u64, mut progress: impl FnMut(u64, u64)) -> Result<Folded, ReadError> {
    let mut verifier = crate::ChainVerifier::new();
    let mut fold = ShardedFold::new()?;
    let mut events = 0;
    let fed = store::decode_in_order_map(chain, 1, head, |event, hash, _| (event, hash), |(event, hash)| {
        let seq = event.seq;
        verifier.link_event(&event, &hash).map_err(ReadError::Corrupt)?;
        fold.push(event)?;
        events += 1;
        progress(seq, head);
        Ok(())
    });
    let (states, ledger) = fold.finish(fed)?;
    Ok(Folded { states, ledger, events })
}

/// What a rebuild did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildReport {
    pub events: u64,
    pub contracts: usize,
}

/// Contracts written per batch by a rebuild: bounds the batch, not the states (all folded).
const REBUILD_BATCH_CONTRACTS: usize = 1_000;

/// Drops the persisted views and rebuilds them from the whole chain (verifying every hash
/// and link on the way): a snapshot of every contract, the ledger's facts, the cursor.
pub fn rebuild(chain: &sled::Tree, tree: &sled::Tree, progress: impl FnMut(u64, u64)) -> Result<RebuildReport, ReadError> {
    let (head, _) = store::last(chain)?;
    rebuild_to(chain, tree, head, &Io::new(None, false), Op::PersistViews, progress)
}

/// [`rebuild`] of the chain up to `head`, its batches written through `io` as `op`.
fn rebuild_to(chain: &sled::Tree, tree: &sled::Tree, head: u64, io: &Io, op: Op, progress: impl FnMut(u64, u64)) -> Result<RebuildReport, ReadError> {
    // Folded first: a chain that does not fold leaves the views as they were.
    let folded = fold_chain(chain, head, progress)?;
    // Then the format, made durable: sled's `clear` removes key by key (deltas before the
    // format and cursor), so views cut short with their old format and cursor would be
    // taken as saved, without their deltas. Without a format, the next open rebuilds them
    // again. (Neither goes through `io`: no fault is injected between them.)
    tree.remove(KEY_FORMAT)?;
    tree.flush()?;
    tree.clear()?;
    let contracts = folded.states.len();
    let mut states = folded.states.into_values();
    loop {
        let chunk: Vec<ContractState> = states.by_ref().take(REBUILD_BATCH_CONTRACTS).collect();
        if chunk.is_empty() {
            break;
        }
        // Encoded on every core: on a million events, encoding the states one after the
        // other took 40% of a rebuild.
        let encoded = chunk
            .par_iter()
            .map(|state| {
                Ok((encode_snapshot(state)?, encode_summary(&summary_of(state, None)?)?))
            })
            .collect::<Result<Vec<_>, ReadError>>()?;
        let mut batch = sled::Batch::default();
        for (state, (snapshot, summary)) in chunk.iter().zip(encoded) {
            batch.insert(snapshot_key(&state.contract_id), snapshot);
            batch.insert(summary_key(&state.contract_id), summary);
        }
        drop(chunk);
        io.run(op, || tree.apply_batch(batch))?;
    }
    let mut batch = sled::Batch::default();
    batch.insert(KEY_LEDGER, postcard::to_stdvec(&folded.ledger).map_err(|e| corrupt(0, &format!("ledger facts do not encode: {e}")))?);
    batch.insert(KEY_CURSOR, &folded.events.to_be_bytes());
    batch.insert(KEY_FORMAT, &VIEWS_FORMAT.to_be_bytes());
    io.run(op, || tree.apply_batch(batch))?;
    Ok(RebuildReport { events: folded.events, contracts })
}

/// What the views tree holds, folded: every contract's state, the ledger's facts, the
/// cursor. For comparing incremental views with rebuilt ones, whatever mix of snapshots and
/// deltas each holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistedViews {
    pub states: BTreeMap<ContractId, ContractState>,
    /// The summaries the tree holds (every saved contract's, from format 4 on).
    pub summaries: BTreeMap<ContractId, Summary>,
    pub ledger: LedgerFacts,
    pub cursor: u64,
}

pub fn persisted(tree: &sled::Tree) -> Result<PersistedViews, LoadError> {
    let cursor = tree.get(KEY_CURSOR)?.and_then(|v| keys::u64_value(&v)).unwrap_or(0);
    let ledger = match tree.get(KEY_LEDGER)? {
        Some(v) => postcard::from_bytes(&v).map_err(|e| LoadError::Views(format!("the ledger's facts do not decode: {e}")))?,
        None => LedgerFacts::default(),
    };
    let mut states = BTreeMap::new();
    let mut summaries = BTreeMap::new();
    for key in tree.scan_prefix([SNAPSHOT]).keys() {
        let key = key?;
        let id = std::str::from_utf8(&key[1..]).ok().and_then(|s| ContractId::parse(s).ok()).ok_or_else(|| LoadError::Views("malformed snapshot key".into()))?;
        if let Some(loaded) = load_persisted(tree, &id)? {
            states.insert(id.clone(), loaded.state);
        }
        if let Some(summary) = read_summary(tree, &id)? {
            summaries.insert(id, summary);
        }
    }
    Ok(PersistedViews { states, summaries, ledger, cursor })
}

/// Key and value bytes of a tree's entries.
pub type RawEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// The persisted views as raw bytes (the encoding test pins them).
pub fn dump(views: &sled::Tree) -> Result<RawEntries, sled::Error> {
    views.iter().map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect()
}

/// Ids of contracts changed since the last persist.
pub type Dirty = BTreeSet<ContractId>;
