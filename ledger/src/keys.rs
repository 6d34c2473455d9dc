//! The key layout of the one sled tree that holds the ledger (docs/FORMAT.md, "Store").
//!
//! Everything lives in one tree so that one `apply_batch` writes an event, its index entries,
//! its idempotency record and the new head atomically.

use events::{ContractId, Stream};

/// `E` + seq (u64 big-endian) → event hash (32 bytes) ++ canonical bytes.
pub const EVENT: u8 = b'E';
/// `S` + stream + version (u64 BE) → seq (u64 BE). Stream = length (1 byte) ++ contract id;
/// the ledger-wide stream has length 0.
pub const STREAM: u8 = b'S';
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

/// Version of this key layout. Opening a store of another layout is refused.
pub const STORE_FORMAT: u32 = 1;

/// `T` + level (u8) + index (u64 BE) → hash (32) of the perfect Merkle subtree covering
/// leaves `[index << level, (index + 1) << level)`, for levels 1 and up; leaves (level 0)
/// are derived from the event records' stored hashes.
pub const TREE: u8 = b'T';

pub fn tree_node(level: u32, index: u64) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[0] = TREE;
    key[1] = u8::try_from(level).expect("levels are below 64");
    key[2..].copy_from_slice(&index.to_be_bytes());
    key
}

pub fn event(seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = EVENT;
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub fn seq_of_event_key(key: &[u8]) -> Option<u64> {
    match key {
        [EVENT, rest @ ..] if rest.len() == 8 => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

/// `S` + stream: the prefix of all index entries of one stream.
pub fn stream_prefix(stream: &Stream) -> Vec<u8> {
    let id = stream.contract_id().map_or(&b""[..], |c| c.as_str().as_bytes());
    // Contract ids are at most 64 bytes, so the length fits one byte.
    let mut key = Vec::with_capacity(2 + id.len() + 8);
    key.push(STREAM);
    key.push(u8::try_from(id.len()).expect("contract ids are at most 64 bytes"));
    key.extend_from_slice(id);
    key
}

pub fn stream_version(stream: &Stream, version: u64) -> Vec<u8> {
    let mut key = stream_prefix(stream);
    key.extend_from_slice(&version.to_be_bytes());
    key
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
