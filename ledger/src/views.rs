//! Materialized views: every contract's [`ContractState`], live in memory and persisted in
//! the sled tree `views` behind a cursor.
//!
//! The writer folds each event into its contract's state as it decides on it, so the live
//! states are always current (they may hold staged events; readers never look past the
//! durable head, see [`projections::AsOf`]). After commits, the writer persists the states
//! it changed, with the cursor (the seq they include), in one batch of the `views` tree:
//! - every 10,000 events or 2 seconds, and on close;
//! - on open, states are loaded from the tree and every event after the cursor is folded in
//!   (read with its hash checked), so the views never skip an event;
//! - `rebuild` drops the tree and folds the whole chain, verifying it on the way.
//!
//! Persisting needs no fsync: the views are derived, and the events they include were
//! synced before them, so after a crash the cursor is at worst behind and catches up.

use crate::verify::ChainVerifier;
use crate::{keys, store, ReadError, VerifyFailure};
use events::ContractId;
use projections::{ContractState, LedgerFacts};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Layout version of the persisted views; another version is rebuilt on open.
pub const VIEWS_FORMAT: u32 = 2;
pub const PERSIST_EVERY_EVENTS: u64 = 10_000;
pub const PERSIST_EVERY_MS: u128 = 2_000;

/// Keys of the `views` tree: `C` + contract id → postcard of its `ContractState`; `M…` meta.
const KEY_FORMAT: &[u8] = b"Mformat";
const KEY_CURSOR: &[u8] = b"Mcursor";
const KEY_LEDGER: &[u8] = b"Mledger";
const CONTRACT_PREFIX: u8 = b'C';

/// The live states, shared by the writer (which folds into them) and readers.
#[derive(Default)]
pub struct Views {
    contracts: RwLock<BTreeMap<ContractId, Arc<Mutex<ContractState>>>>,
}

impl Views {
    // The map is only changed whole-entry by the writer; a reader's panic cannot leave it
    // half-changed, so a poisoned lock is used as is.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<ContractId, Arc<Mutex<ContractState>>>> {
        self.contracts.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<ContractId, Arc<Mutex<ContractState>>>> {
        self.contracts.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, id: &ContractId) -> Option<Arc<Mutex<ContractState>>> {
        self.read().get(id).cloned()
    }

    pub fn insert(&self, state: ContractState) {
        let id = state.contract_id.clone();
        self.write().insert(id, Arc::new(Mutex::new(state)));
    }

    pub fn remove(&self, id: &ContractId) {
        self.write().remove(id);
    }

    /// Every contract's state handle, in id order (a snapshot of the map, not of the states).
    pub fn all(&self) -> Vec<Arc<Mutex<ContractState>>> {
        self.read().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn contract_key(id: &ContractId) -> Vec<u8> {
    let mut key = vec![CONTRACT_PREFIX];
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

fn corrupt(seq: u64, reason: String) -> ReadError {
    ReadError::Corrupt(VerifyFailure { seq, reason })
}

/// Writes the given states and the cursor in one batch.
pub fn persist(tree: &sled::Tree, states: &[ContractState], ledger: &LedgerFacts, cursor: u64) -> Result<(), sled::Error> {
    let mut batch = sled::Batch::default();
    for state in states {
        // Plain data always serializes.
        batch.insert(contract_key(&state.contract_id), postcard::to_stdvec(state).expect("state encodes"));
    }
    batch.insert(KEY_LEDGER, postcard::to_stdvec(ledger).expect("ledger facts encode"));
    batch.insert(KEY_CURSOR, &cursor.to_be_bytes());
    batch.insert(KEY_FORMAT, &VIEWS_FORMAT.to_be_bytes());
    tree.apply_batch(batch)
}

/// Folds one event ([`projections::fold`]) into the states it concerns.
fn fold(
    states: &mut BTreeMap<ContractId, ContractState>,
    ledger: &mut LedgerFacts,
    event: &events::Event,
) -> Result<(), ReadError> {
    let contract = event.stream.contract_id().and_then(|id| states.get_mut(id));
    if let Some(new) = projections::fold(event, contract, ledger).map_err(|e| corrupt(event.seq, e.to_string()))? {
        states.insert(new.contract_id.clone(), new);
    }
    Ok(())
}

/// Why the views could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The persisted views do not decode: rebuild them (they are derived data).
    Views(String),
    /// Reading or folding the chain failed: that is the store's problem, not the views'.
    Chain(ReadError),
}

impl LoadError {
    pub fn into_read(self) -> ReadError {
        match self {
            LoadError::Views(reason) => corrupt(0, reason),
            LoadError::Chain(e) => e,
        }
    }
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

/// The persisted states, the ledger facts and the cursor; nothing (cursor 0) when there
/// are no views, they have another layout, or their cursor is past the chain.
fn load_persisted(views: &sled::Tree, head: u64) -> Result<(BTreeMap<ContractId, ContractState>, LedgerFacts, u64), LoadError> {
    let format = views.get(KEY_FORMAT)?.and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok()).map(u32::from_be_bytes);
    let cursor = views.get(KEY_CURSOR)?.and_then(|v| keys::u64_value(&v));
    let (Some(VIEWS_FORMAT), Some(cursor)) = (format, cursor) else {
        return Ok((BTreeMap::new(), LedgerFacts::default(), 0));
    };
    if cursor > head {
        return Ok((BTreeMap::new(), LedgerFacts::default(), 0));
    }
    let mut states = BTreeMap::new();
    for item in views.scan_prefix([CONTRACT_PREFIX]) {
        let (key, value) = item?;
        let state: ContractState = postcard::from_bytes(&value)
            .map_err(|e| LoadError::Views(format!("view {:?} does not decode: {e}", String::from_utf8_lossy(&key[1..]))))?;
        if contract_key(&state.contract_id) != key.as_ref() {
            return Err(LoadError::Views(format!("view {:?} holds contract {}", String::from_utf8_lossy(&key[1..]), state.contract_id)));
        }
        states.insert(state.contract_id.clone(), state);
    }
    let ledger = match views.get(KEY_LEDGER)? {
        Some(v) => postcard::from_bytes(&v).map_err(|e| LoadError::Views(format!("ledger view does not decode: {e}")))?,
        None => LedgerFacts::default(),
    };
    Ok((states, ledger, cursor))
}

/// Loads the persisted views and folds in every event after their cursor up to `head`.
/// Returns the states, the ledger facts, and the cursor the persisted views had.
pub fn load(
    events: &sled::Tree,
    views: &sled::Tree,
    head: u64,
) -> Result<(BTreeMap<ContractId, ContractState>, LedgerFacts, u64), LoadError> {
    let (mut states, mut ledger, cursor) = load_persisted(views, head)?;
    let start = cursor + 1;
    if start <= head {
        for record in store::records(events, start, head) {
            let recorded = record?.decode()?;
            let seq = recorded.event.seq;
            match fold(&mut states, &mut ledger, &recorded.event) {
                Ok(()) => {}
                // An event that does not fold onto the loaded states, when the chain itself
                // is sound, means the states are wrong: they are rebuilt.
                Err(e) if cursor > 0 => return Err(LoadError::Views(format!("event {seq} does not fold onto the persisted views: {e}"))),
                Err(e) => return Err(LoadError::Chain(e)),
            }
        }
    }
    Ok((states, ledger, cursor))
}

/// What a rebuild did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildReport {
    pub events: u64,
    pub contracts: usize,
}

/// Drops the persisted views and rebuilds them from the whole chain, verifying every
/// hash and link on the way. `progress` gets each folded seq and the last seq.
pub fn rebuild(events: &sled::Tree, views: &sled::Tree, mut progress: impl FnMut(u64, u64)) -> Result<RebuildReport, ReadError> {
    views.clear()?;
    let (head, _) = store::last(events)?;
    let mut verifier = ChainVerifier::new();
    let mut states = BTreeMap::new();
    let mut ledger = LedgerFacts::default();
    let mut count = 0u64;
    for record in store::records(events, 1, head) {
        let record = record?;
        let seq = record.seq;
        let recorded = verifier.check(seq, &record.hash, &record.canonical).map_err(ReadError::Corrupt)?;
        fold(&mut states, &mut ledger, &recorded.event)?;
        count += 1;
        progress(seq, head);
    }
    let all: Vec<ContractState> = states.into_values().collect();
    persist(views, &all, &ledger, count)?;
    Ok(RebuildReport { events: count, contracts: all.len() })
}

/// Key and value bytes of a tree's entries.
pub type RawEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// The persisted views as raw bytes, for comparing incremental and rebuilt views.
pub fn dump(views: &sled::Tree) -> Result<RawEntries, sled::Error> {
    views.iter().map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect()
}

/// Ids of contracts changed since the last persist.
pub type Dirty = BTreeSet<ContractId>;
