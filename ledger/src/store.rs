//! Reading the chain out of its blocks: one event, a range of records, the last event.
//!
//! Every read goes through here, so the block layout ([`crate::block`]) is known in one
//! place. Reads check structure (a damaged block is `Corrupt` at the seqs it holds) and,
//! where they decode, that each event's bytes hash to the stored hash and carry its seq.

use crate::block::Block;
use crate::{corrupt, keys, ReadError, VerifyFailure};
use events::{Digest, Event, RecordedEvent};

/// One stored event, not decoded: its seq, stored hash and canonical bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub hash: Digest,
    pub canonical: Vec<u8>,
}

impl Record {
    /// Decodes the bytes, checking they hash to the stored hash and carry the seq.
    pub fn decode(self) -> Result<RecordedEvent, ReadError> {
        let seq = self.seq;
        let recorded = RecordedEvent::from_canonical(self.canonical).map_err(|e| ReadError::Corrupt(VerifyFailure { seq, reason: e.to_string() }))?;
        if recorded.hash != self.hash {
            return Err(corrupt(seq, "stored hash does not match the stored bytes"));
        }
        if recorded.event.seq != seq {
            return Err(corrupt(seq, "event stored under another seq"));
        }
        Ok(recorded)
    }
}

/// A stored block and the seq of its first event.
pub struct StoredBlock {
    pub first: u64,
    pub bytes: sled::IVec,
}

impl StoredBlock {
    pub fn parse(&self) -> Result<Block<'_>, ReadError> {
        Block::parse(&self.bytes).map_err(|e| corrupt(self.first, &format!("block: {e}")))
    }

    /// Seq of the last event of the block.
    pub fn last(&self) -> Result<u64, ReadError> {
        Ok(self.first + self.parse()?.len() as u64 - 1)
    }

    /// The records of the block, from `from` (a seq inside it or before it) on.
    pub fn records(&self, from: u64) -> Result<Vec<Record>, ReadError> {
        let block = self.parse()?;
        let skip = from.saturating_sub(self.first) as usize;
        Ok((skip..block.len())
            .map(|i| Record { seq: self.first + i as u64, hash: block.hash(i), canonical: block.canonical(i).to_vec() })
            .collect())
    }
}

fn stored(item: sled::Result<(sled::IVec, sled::IVec)>) -> Result<StoredBlock, ReadError> {
    let (key, bytes) = item?;
    let first = keys::seq_of_block_key(&key).ok_or_else(|| corrupt(0, "malformed block key"))?;
    Ok(StoredBlock { first, bytes })
}

/// The block holding `seq`, if one is stored.
pub fn block_of(tree: &sled::Tree, seq: u64) -> Result<Option<StoredBlock>, ReadError> {
    let Some(item) = tree.range(keys::block(0)..=keys::block(seq)).next_back() else { return Ok(None) };
    let block = stored(item)?;
    if block.last()? < seq {
        return Ok(None);
    }
    Ok(Some(block))
}

/// The stored record of `seq`.
pub fn record(tree: &sled::Tree, seq: u64) -> Result<Record, ReadError> {
    let block = block_of(tree, seq)?.ok_or_else(|| corrupt(seq, "event missing"))?;
    let parsed = block.parse()?;
    let i = (seq - block.first) as usize;
    Ok(Record { seq, hash: parsed.hash(i), canonical: parsed.canonical(i).to_vec() })
}

/// The stored hash of `seq` (without copying its bytes).
pub fn hash_of(tree: &sled::Tree, seq: u64) -> Result<Digest, ReadError> {
    let block = block_of(tree, seq)?.ok_or_else(|| corrupt(seq, "event missing"))?;
    Ok(block.parse()?.hash((seq - block.first) as usize))
}

/// The event at `seq`, decoded and checked.
pub fn event(tree: &sled::Tree, seq: u64) -> Result<RecordedEvent, ReadError> {
    record(tree, seq)?.decode()
}

/// Blocks in seq order, from the one holding `from` on, up to the one holding `to`; each
/// checked to follow the previous without a gap.
pub fn blocks(tree: &sled::Tree, from: u64, to: u64) -> impl Iterator<Item = Result<StoredBlock, ReadError>> + '_ {
    let start = match block_of(tree, from) {
        Ok(Some(b)) => b.first,
        _ => from,
    };
    let mut expected = start;
    let mut done = from > to;
    tree.range(keys::block(start)..=keys::block(to)).map_while(move |item| {
        if done {
            return None;
        }
        let result = stored(item).and_then(|block| {
            if block.first != expected {
                return Err(corrupt(expected, &format!("missing: the next stored block starts at seq {}", block.first)));
            }
            expected = block.last()? + 1;
            Ok(block)
        });
        done = result.is_err();
        Some(result)
    })
}

/// Records `from..=to` in seq order. A gap is an error, never a shorter answer.
pub fn records(tree: &sled::Tree, from: u64, to: u64) -> impl Iterator<Item = Result<Record, ReadError>> + '_ {
    let mut next = from;
    blocks(tree, from, to)
        .flat_map(move |block| match block.and_then(|b| b.records(from)) {
            Ok(records) => records.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        })
        .take_while(move |r| r.as_ref().map_or(true, |r| r.seq <= to))
        .map(move |r| {
            let r = r?;
            if r.seq != next {
                return Err(corrupt(next, "event missing"));
            }
            next += 1;
            Ok(r)
        })
}

/// Seq and hash of the last stored event (0 and zeros if none).
pub fn last(tree: &sled::Tree) -> Result<(u64, Digest), ReadError> {
    let Some(item) = tree.scan_prefix([keys::BLOCK]).next_back() else { return Ok((0, Digest::ZERO)) };
    let block = stored(item)?;
    let parsed = block.parse()?;
    Ok((block.first + parsed.len() as u64 - 1, parsed.hash(parsed.len() - 1)))
}

/// Where byte `at` of event `seq`'s record (its stored hash, bytes 0..32, then its canonical
/// bytes) lives: its block's key and the offset in the block's value. For tools and tests
/// that examine or damage the store byte by byte.
pub fn locate(tree: &sled::Tree, seq: u64, at: usize) -> Result<(Vec<u8>, usize), ReadError> {
    let block = block_of(tree, seq)?.ok_or_else(|| corrupt(seq, "event missing"))?;
    let i = (seq - block.first) as usize;
    let offset = if at < 32 {
        crate::block::hash_offset(i) + at
    } else {
        crate::block::canonical_offset(&block.bytes, i).map_err(|e| corrupt(seq, &e.to_string()))? + at - 32
    };
    Ok((keys::block(block.first).to_vec(), offset))
}

/// Events decoded per job (a run of whole blocks, so a little more): small enough that a
/// job's vector is reused memory, not fresh pages from the system each time.
const DECODE_CHUNK_EVENTS: usize = 1_024;
/// Decode jobs started and not yet consumed: a bound on memory (about 8 × 2,048 events)
/// and enough work ahead to keep every core busy while the consumer folds.
const DECODE_CHUNKS_IN_FLIGHT: usize = 8;

/// Checks every event of `blocks` within `from..=to` ([`crate::check_record`]), in seq order,
/// and keeps `map` of each (the event, its hash, its bytes) with its seq.
fn decode_chunk<T>(blocks: &[StoredBlock], from: u64, to: u64, map: &impl Fn(Event, Digest, &[u8]) -> T) -> Result<Vec<(u64, T)>, ReadError> {
    let mut out = Vec::with_capacity(DECODE_CHUNK_EVENTS * 2);
    for stored in blocks {
        let block = stored.parse()?;
        for i in 0..block.len() {
            let seq = stored.first + i as u64;
            if (from..=to).contains(&seq) {
                let (hash, canonical) = (block.hash(i), block.canonical(i));
                let event = crate::verify::check_event(seq, &hash, canonical).map_err(ReadError::Corrupt)?;
                out.push((seq, map(event, hash, canonical)));
            }
        }
    }
    Ok(out)
}

/// Reads `from..=to`, checks every event on its own (its bytes hash to the stored hash,
/// decode strictly, carry its seq: [`crate::check_record`]) on every core, and hands the
/// decoded events to `each` in seq order on the calling thread, which does what must be in
/// order (links, versions, folds). Reading runs on its own thread and starts a decode job
/// per run of blocks on the rayon pool, at most [`DECODE_CHUNKS_IN_FLIGHT`] ahead of `each`.
/// Stops at the first failure, of either.
pub fn decode_in_order(tree: &sled::Tree, from: u64, to: u64, each: impl FnMut(RecordedEvent) -> Result<(), ReadError>) -> Result<(), ReadError> {
    decode_in_order_map(tree, from, to, |event, hash, canonical: &[u8]| RecordedEvent { event, canonical: canonical.to_vec(), hash }, each)
}

/// [`decode_in_order`], handing `each` what `map` keeps of each event (given the decoded
/// event, its hash and its bytes); `map` runs where the event was decoded, on the pool, so
/// a consumer that needs little of each event (links, for `verify`) neither copies, touches
/// nor frees the rest.
pub fn decode_in_order_map<T: Send + 'static>(
    tree: &sled::Tree,
    from: u64,
    to: u64,
    map: impl Fn(Event, Digest, &[u8]) -> T + Send + Sync + Copy + 'static,
    mut each: impl FnMut(T) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    type Decoded<T> = std::sync::mpsc::Receiver<Result<Vec<(u64, T)>, ReadError>>;
    // The jobs' answers, in seq order; each arrives when its job is done.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Decoded<T>>(DECODE_CHUNKS_IN_FLIGHT);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            // False once nobody takes answers any more (the consumer stopped).
            let start = |blocks: Vec<StoredBlock>| -> bool {
                let (answer, decoded) = std::sync::mpsc::sync_channel(1);
                if tx.send(decoded).is_err() {
                    return false;
                }
                rayon::spawn(move || {
                    let _ = answer.send(decode_chunk(&blocks, from, to, &map));
                });
                true
            };
            let fail = |e: ReadError| {
                let (answer, decoded) = std::sync::mpsc::sync_channel(1);
                let _ = answer.send(Err(e));
                let _ = tx.send(decoded);
            };
            let mut pending: Vec<StoredBlock> = vec![];
            let mut pending_events = 0;
            for block in blocks(tree, from, to) {
                let block = match block {
                    Ok(b) => b,
                    Err(e) => return fail(e),
                };
                pending_events += block.parse().map_or(0, |b| b.len());
                pending.push(block);
                if pending_events >= DECODE_CHUNK_EVENTS {
                    pending_events = 0;
                    if !start(std::mem::take(&mut pending)) {
                        return;
                    }
                }
            }
            if !pending.is_empty() {
                start(pending);
            }
        });
        let mut next = from;
        for decoded in rx {
            // A job answers unless it panicked, and a panic on the pool aborts the process.
            let chunk = decoded.recv().expect("every decode job answers");
            for (seq, kept) in chunk? {
                if seq != next {
                    return Err(corrupt(next, "event missing"));
                }
                next += 1;
                each(kept)?;
            }
        }
        if next <= to {
            return Err(corrupt(next, "event missing"));
        }
        Ok(())
    })
}
