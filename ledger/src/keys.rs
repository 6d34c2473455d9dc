//! The key layout of the one sled tree that holds the ledger (docs/FORMAT.md, "Store").
//!
//! Everything lives in one tree so that one `apply_batch` writes an event, its index entries,
//! its idempotency record and the new head atomically.

use events::ContractId;

/// `B` + seq (u64 big-endian) of its first event → an event block ([`crate::block`]).
pub const BLOCK: u8 = b'B';
/// `C` + contract id → seq of its grant (u64 BE). One entry per contract, in id order.
pub const CONTRACT: u8 = b'C';
/// `I` + idempotency key → [`crate::idempotency::KeyRecord`].
pub const IDEMPOTENCY: u8 = b'I';
/// `Mhead` → seq (u64 BE) ++ hash of the last event: checked against the chain on open.
pub const META_HEAD: &[u8] = b"Mhead";
/// `Mcheckpoint` → the latest signed checkpoint note (UTF-8).
pub const META_CHECKPOINT: &[u8] = b"Mcheckpoint";
/// `Mtree` → size (u64 BE) of the Merkle tree whose nodes are stored; equals the head.
pub const META_TREE: &[u8] = b"Mtree";
/// `Mpublished` → seq (u64 BE): the last event JetStream acknowledged (the outbox cursor).
pub const META_PUBLISHED: &[u8] = b"Mpublished";
/// `Mformat` → [`STORE_FORMAT`] (u32 BE).
pub const META_FORMAT: &[u8] = b"Mformat";

/// Version of this key layout. Opening a store of another layout is refused; `cledger
/// migrate` converts a store of format 1 (one key per event, a stream index).
pub const STORE_FORMAT: u32 = 2;

/// Merkle nodes are stored from this level up (one key per 256 events); a node below it is
/// recomputed from at most 128 leaf hashes, which sit together at the head of a block.
pub const TREE_STORED_LEVEL_MIN: u32 = 8;

/// `T` + level (u8) + index (u64 BE) → hash (32) of the perfect Merkle subtree covering
/// leaves `[index << level, (index + 1) << level)`, for levels [`TREE_STORED_LEVEL_MIN`] and
/// up; lower ones are recomputed from the leaves (the blocks' stored event hashes).
pub const TREE: u8 = b'T';

pub fn tree_node(level: u32, index: u64) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[0] = TREE;
    // Levels are below 64 (a tree of at most 2^64 leaves).
    key[1] = level as u8;
    key[2..].copy_from_slice(&index.to_be_bytes());
    key
}

pub fn block(first_seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = BLOCK;
    key[1..].copy_from_slice(&first_seq.to_be_bytes());
    key
}

pub fn seq_of_block_key(key: &[u8]) -> Option<u64> {
    match key {
        [BLOCK, rest @ ..] if rest.len() == 8 => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

pub fn contract(id: &ContractId) -> Vec<u8> {
    let mut key = vec![CONTRACT];
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

pub fn idempotency(key: &str) -> Vec<u8> {
    let mut out = vec![IDEMPOTENCY];
    out.extend_from_slice(key.as_bytes());
    out
}

pub fn u64_value(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}
