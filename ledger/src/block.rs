//! Event blocks: consecutive events stored under one key (docs/FORMAT.md, "Store").
//!
//! A commit group's events are cut into blocks of at most [`BLOCK_EVENTS_MAX`] events and
//! about [`BLOCK_BYTES_TARGET`] bytes, each stored under `B` + the seq of its first event. One
//! key per block instead of two per event is most of what makes large batches, verification,
//! export and rebuild fast: sled's cost is per key, and a block reads as one value.
//!
//! Layout of a block of n events (all integers big-endian):
//!
//! ```text
//! u16            n, 1 ..= 1024
//! n × [u8; 32]   the events' hashes, in seq order
//! n × u32        the end offset of each event's canonical bytes in the data that follows
//! data           the canonical bytes, back to back
//! ```
//!
//! The hashes come first so Merkle leaves can be read without touching the events. Parsing
//! checks the structure (count, offsets rising, the last offset = the data's length); the
//! hash of each event's bytes is checked by whoever decodes it.

use events::Digest;

/// Most events in one block.
pub const BLOCK_EVENTS_MAX: usize = 1_024;
/// A block is closed once its data reaches this size. sled stores a value larger than a
/// quarter of its 512 KiB segments as a separate file; a block stays well below that (an
/// event is at most 64 KiB).
pub const BLOCK_BYTES_TARGET: usize = 64 * 1024;

const HEADER_LEN: usize = 2;
const HASH_LEN: usize = 32;
const OFFSET_LEN: usize = 4;

/// Why a stored block cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block shorter than its header")]
    Short,
    #[error("block of {0} events (1 to {BLOCK_EVENTS_MAX})")]
    Count(usize),
    #[error("block offsets do not rise to the end of its data")]
    Offsets,
}

/// Builds one block.
#[derive(Default)]
pub struct BlockBuilder {
    hashes: Vec<u8>,
    ends: Vec<u8>,
    data: Vec<u8>,
    count: usize,
}

impl BlockBuilder {
    pub fn new() -> BlockBuilder {
        BlockBuilder::default()
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the next event should start a new block.
    pub fn is_full(&self) -> bool {
        self.count >= BLOCK_EVENTS_MAX || self.data.len() >= BLOCK_BYTES_TARGET
    }

    pub fn push(&mut self, hash: &Digest, canonical: &[u8]) {
        assert!(!self.is_full(), "a full block takes no more events");
        self.hashes.extend_from_slice(&hash.0);
        self.data.extend_from_slice(canonical);
        let end = u32::try_from(self.data.len()).expect("a block's data is far below 4 GiB");
        self.ends.extend_from_slice(&end.to_be_bytes());
        self.count += 1;
    }

    /// The block's bytes.
    pub fn finish(self) -> Vec<u8> {
        assert!((1..=BLOCK_EVENTS_MAX).contains(&self.count), "a block has 1 to {BLOCK_EVENTS_MAX} events");
        let mut out = Vec::with_capacity(HEADER_LEN + self.hashes.len() + self.ends.len() + self.data.len());
        out.extend_from_slice(&(self.count as u16).to_be_bytes());
        out.extend_from_slice(&self.hashes);
        out.extend_from_slice(&self.ends);
        out.extend_from_slice(&self.data);
        out
    }
}

/// A stored block, parsed (structure checked) but not decoded.
#[derive(Clone, Copy, Debug)]
pub struct Block<'a> {
    count: usize,
    hashes: &'a [u8],
    ends: &'a [u8],
    data: &'a [u8],
}

impl<'a> Block<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Block<'a>, BlockError> {
        let count = usize::from(u16::from_be_bytes(bytes.get(..HEADER_LEN).ok_or(BlockError::Short)?.try_into().map_err(|_| BlockError::Short)?));
        if !(1..=BLOCK_EVENTS_MAX).contains(&count) {
            return Err(BlockError::Count(count));
        }
        let hashes_end = HEADER_LEN + count * HASH_LEN;
        let ends_end = hashes_end + count * OFFSET_LEN;
        if bytes.len() < ends_end {
            return Err(BlockError::Short);
        }
        let block = Block { count, hashes: &bytes[HEADER_LEN..hashes_end], ends: &bytes[hashes_end..ends_end], data: &bytes[ends_end..] };
        let mut previous = 0;
        for i in 0..count {
            let end = block.end(i);
            if end < previous {
                return Err(BlockError::Offsets);
            }
            previous = end;
        }
        if previous != block.data.len() {
            return Err(BlockError::Offsets);
        }
        Ok(block)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn end(&self, i: usize) -> usize {
        let at = i * OFFSET_LEN;
        u32::from_be_bytes([self.ends[at], self.ends[at + 1], self.ends[at + 2], self.ends[at + 3]]) as usize
    }

    /// The stored hash of event `i` (0-based in the block).
    pub fn hash(&self, i: usize) -> Digest {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.hashes[i * HASH_LEN..(i + 1) * HASH_LEN]);
        Digest(out)
    }

    /// The canonical bytes of event `i`.
    pub fn canonical(&self, i: usize) -> &'a [u8] {
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        &self.data[start..self.end(i)]
    }
}

/// Byte offset, inside a block, of event `i`'s canonical bytes (for tests that damage one
/// stored byte of one event).
pub fn canonical_offset(bytes: &[u8], i: usize) -> Result<usize, BlockError> {
    let block = Block::parse(bytes)?;
    let start = if i == 0 { 0 } else { block.end(i - 1) };
    Ok(HEADER_LEN + block.count * (HASH_LEN + OFFSET_LEN) + start)
}

/// Byte offset, inside a block, of event `i`'s stored hash.
pub fn hash_offset(i: usize) -> usize {
    HEADER_LEN + i * HASH_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_refuse_bad_structure() {
        let mut b = BlockBuilder::new();
        let events: Vec<(Digest, Vec<u8>)> = (0..5u8).map(|i| (Digest([i; 32]), vec![i; usize::from(i) * 3])).collect();
        for (h, c) in &events {
            b.push(h, c);
        }
        let bytes = b.finish();
        let block = Block::parse(&bytes).unwrap();
        assert_eq!(block.len(), 5);
        for (i, (h, c)) in events.iter().enumerate() {
            assert_eq!((block.hash(i), block.canonical(i)), (*h, c.as_slice()));
            assert_eq!(&bytes[canonical_offset(&bytes, i).unwrap()..][..c.len()], c.as_slice());
            assert_eq!(&bytes[hash_offset(i)..][..32], &h.0);
        }
        assert_eq!(Block::parse(&bytes[..1]).unwrap_err(), BlockError::Short);
        assert_eq!(Block::parse(&[0, 0]).unwrap_err(), BlockError::Count(0));
        assert_eq!(Block::parse(&bytes[..bytes.len() - 1]).unwrap_err(), BlockError::Offsets);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Block::parse(&longer).unwrap_err(), BlockError::Offsets);
        // Any truncation or single-byte change to the header or offsets is refused or reads
        // other bytes (which the event hash then refuses); it never panics.
        for cut in 0..bytes.len() {
            let _ = Block::parse(&bytes[..cut]).map(|b| (0..b.len()).map(|i| b.canonical(i).len()).sum::<usize>());
        }
        for at in 0..2 + 5 * 36 {
            for x in [1u8, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] ^= x;
                let _ = Block::parse(&damaged).map(|b| (0..b.len()).map(|i| b.canonical(i).len()).sum::<usize>());
            }
        }
    }
}
