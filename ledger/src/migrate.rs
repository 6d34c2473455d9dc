//! `cledger migrate`: converts a store of format 1 (one key per event, a stream index, every
//! Merkle node) into format 2 (blocks; docs/FORMAT.md, "Store").
//!
//! The old store is read in seq order and every event checked as `verify` checks it (its
//! bytes hash to its stored hash and decode strictly, seqs, links, versions and times
//! follow); the new one is written beside it (`DIR.migrating`), synced, and swapped in by
//! renames: the old directory is kept as `DIR.format-1` until the operator removes it. The
//! files that are not sled's (the checkpoint signing key) are copied over. Idempotency
//! records, the contract index, the latest checkpoint and the outbox cursor are carried;
//! the Merkle nodes are recomputed from the event hashes (and the new store's root checked
//! against them); views are rebuilt by the first open.

use crate::block::BlockBuilder;
use crate::durable::{sync_dir, DiskSync};
use crate::{keys, ChainVerifier, VerifyFailure};
use events::merkle::Frontier;
use std::path::{Path, PathBuf};

/// Keys of format 1 that differ from format 2.
mod v1 {
    /// `E` + seq (u64 BE) → event hash (32 bytes) ++ canonical bytes. (Format 1 also had
    /// `S` + stream + version → seq, which format 2 keeps in the views, and every Merkle
    /// node from level 1: neither is carried.)
    pub const EVENT: u8 = b'E';
}

/// Keys copied as they are.
const CARRIED_PREFIXES: [u8; 2] = [keys::CONTRACT, keys::IDEMPOTENCY];
const CARRIED_META: [&[u8]; 2] = [keys::META_CHECKPOINT, keys::META_PUBLISHED];

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("the store in {0} is already format {1}; nothing to do")]
    AlreadyCurrent(PathBuf, u32),
    #[error("the store in {0} has format {1}; this build migrates format 1 only")]
    UnknownFormat(PathBuf, String),
    #[error("{0} already exists (a migration stopped part way?); remove it and run again")]
    LeftOver(PathBuf),
    #[error("sled: {0}")]
    Storage(#[from] sled::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the old store fails verification at seq {}: {}", .0.seq, .0.reason)]
    Verify(VerifyFailure),
    #[error("the old store's head record says seq {recorded}, its events end at seq {found}")]
    Head { recorded: u64, found: u64 },
    #[error(transparent)]
    Open(#[from] crate::OpenError),
}

/// What a migration did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrateReport {
    pub events: u64,
    pub blocks: u64,
    pub keys_carried: u64,
    /// Where the old store is kept.
    pub backup: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MigrateError + '_ {
    move |source| MigrateError::Io { path: path.to_path_buf(), source }
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Migrates the store in `dir` from format 1 to format 2. `progress` gets each seq copied.
pub fn migrate(dir: &Path, mut progress: impl FnMut(u64)) -> Result<MigrateReport, MigrateError> {
    let staging = sibling(dir, ".migrating");
    let backup = sibling(dir, ".format-1");
    for leftover in [&staging, &backup] {
        if leftover.exists() {
            return Err(MigrateError::LeftOver(leftover.clone()));
        }
    }
    let old_db = crate::open_db(dir)?;
    let old = old_db.open_tree("ledger")?;
    match old.get(keys::META_FORMAT)?.as_deref().map(|v| <[u8; 4]>::try_from(v).map(u32::from_be_bytes)) {
        Some(Ok(1)) => {}
        Some(Ok(keys::STORE_FORMAT)) => return Err(MigrateError::AlreadyCurrent(dir.into(), keys::STORE_FORMAT)),
        Some(Ok(other)) => return Err(MigrateError::UnknownFormat(dir.into(), other.to_string())),
        Some(Err(_)) | None => return Err(MigrateError::UnknownFormat(dir.into(), "unknown".into())),
    }
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    match copy(&old_db, dir, &staging, &mut progress) {
        Ok(copied) => {
            drop(old);
            drop(old_db);
            swap(dir, &staging, &backup, copied)
        }
        Err(e) => {
            // Nothing of the old store was touched; the half-made copy goes.
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// What [`copy`] made.
struct Copied {
    events: u64,
    blocks: u64,
    keys_carried: u64,
    root: events::Digest,
}

/// Writes the format-2 store in `staging` from the format-1 store `old_db`, verifying every
/// event, and syncs it.
fn copy(old_db: &sled::Db, dir: &Path, staging: &Path, progress: &mut impl FnMut(u64)) -> Result<Copied, MigrateError> {
    let old = old_db.open_tree("ledger")?;
    let new_db = crate::open_db(staging)?;
    let new = new_db.open_tree("ledger")?;

    let mut verifier = ChainVerifier::new();
    let mut frontier = Frontier::new();
    let mut block: Option<(u64, BlockBuilder)> = None;
    let mut batch = sled::Batch::default();
    let mut pending = 0usize;
    let mut blocks = 0u64;
    let mut flush_block = |block: &mut Option<(u64, BlockBuilder)>, batch: &mut sled::Batch, pending: &mut usize| {
        if let Some((first, full)) = block.take() {
            batch.insert(&keys::block(first)[..], full.finish());
            *pending += 1;
            blocks += 1;
        }
    };
    for item in old.scan_prefix([v1::EVENT]) {
        let (key, value) = item?;
        let seq = match key.as_ref() {
            [v1::EVENT, rest @ ..] if rest.len() == 8 => u64::from_be_bytes(rest.try_into().expect("8 bytes")),
            _ => return Err(MigrateError::Verify(VerifyFailure { seq: 0, reason: "malformed event key".into() })),
        };
        if value.len() < 32 {
            return Err(MigrateError::Verify(VerifyFailure { seq, reason: "record shorter than a hash".into() }));
        }
        let (hash, canonical) = value.split_at(32);
        let hash = events::Digest(hash.try_into().expect("32 bytes"));
        verifier.check(seq, &hash, canonical).map_err(MigrateError::Verify)?;
        frontier.push(&hash, |level, index, node| {
            if level >= keys::TREE_STORED_LEVEL_MIN {
                batch.insert(&keys::tree_node(level, index)[..], &node.0[..]);
            }
        });
        if block.as_ref().is_some_and(|(_, b)| b.is_full()) {
            flush_block(&mut block, &mut batch, &mut pending);
        }
        block.get_or_insert_with(|| (seq, BlockBuilder::new())).1.push(&hash, canonical);
        if pending >= 16 {
            new.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
        progress(seq);
    }
    flush_block(&mut block, &mut batch, &mut pending);
    let (head_seq, head_hash) = verifier.head();
    let recorded_head = old.get(keys::META_HEAD)?.as_deref().and_then(|v| v.get(..8)).and_then(keys::u64_value).unwrap_or(0);
    if recorded_head != head_seq {
        return Err(MigrateError::Head { recorded: recorded_head, found: head_seq });
    }
    let mut carried = 0u64;
    for prefix in CARRIED_PREFIXES {
        for item in old.scan_prefix([prefix]) {
            let (key, value) = item?;
            batch.insert(key, value);
            carried += 1;
        }
    }
    for key in CARRIED_META {
        if let Some(value) = old.get(key)? {
            batch.insert(key, value);
            carried += 1;
        }
    }
    let mut head_value = head_seq.to_be_bytes().to_vec();
    head_value.extend_from_slice(&head_hash.0);
    batch.insert(keys::META_HEAD, head_value);
    batch.insert(keys::META_TREE, &head_seq.to_be_bytes());
    batch.insert(keys::META_FORMAT, &keys::STORE_FORMAT.to_be_bytes());
    new.apply_batch(batch)?;
    new_db.flush()?;
    DiskSync::open(staging).and_then(|mut d| d.sync()).map_err(io(staging))?;

    // The files that are not sled's go along (the signing key above all).
    copy_other_files(dir, staging)?;
    Ok(Copied { events: head_seq, blocks, keys_carried: carried, root: frontier.root() })
}

fn copy_other_files(dir: &Path, staging: &Path) -> Result<(), MigrateError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let sleds = matches!(name.to_str(), Some("db" | "conf" | "blobs")) || name.to_string_lossy().starts_with("snap.");
        if !sleds && entry.file_type().map_err(io(dir))?.is_file() {
            let to = staging.join(&name);
            std::fs::copy(entry.path(), &to).map_err(io(&to))?;
            std::fs::File::open(&to).and_then(|f| f.sync_all()).map_err(io(&to))?;
        }
    }
    sync_dir(staging).map_err(io(staging))
}

/// Swaps the new store in: the old directory becomes the backup, the staging one takes its
/// name; then the first open rebuilds the views and the root is checked once more.
fn swap(dir: &Path, staging: &Path, backup: &Path, copied: Copied) -> Result<MigrateReport, MigrateError> {
    std::fs::rename(dir, backup).map_err(io(dir))?;
    std::fs::rename(staging, dir).map_err(io(staging))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent).map_err(io(parent))?;
    }
    // The first open rebuilds the views and checks the new head against the chain.
    let ledger = crate::Ledger::open(dir, crate::Options::default())?;
    let head = copied.events;
    let root = ledger.merkle_root(head).map_err(|e| MigrateError::Verify(VerifyFailure { seq: head, reason: e.to_string() }))?;
    if root != copied.root {
        return Err(MigrateError::Verify(VerifyFailure { seq: head, reason: "the migrated tree's root differs from the events'".into() }));
    }
    Ok(MigrateReport { events: head, blocks: copied.blocks, keys_carried: copied.keys_carried, backup: backup.to_path_buf() })
}
