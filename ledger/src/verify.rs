//! Verification of a chain of stored records, one at a time, in seq order. Pure: the caller
//! reads the records (from sled, an export, a stream) and feeds them here.

use events::{Digest, RecordedEvent, Stream, Timestamp};
use std::collections::HashMap;

/// The first thing wrong with a chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("seq {seq}: {reason}")]
pub struct VerifyFailure {
    pub seq: u64,
    pub reason: String,
}

/// A stored record: the event hash (32 bytes) followed by the canonical bytes.
pub fn split_record(record: &[u8]) -> Option<(Digest, &[u8])> {
    if record.len() < 32 {
        return None;
    }
    let (hash, canonical) = record.split_at(32);
    Some((Digest(hash.try_into().ok()?), canonical))
}

pub fn join_record(hash: &Digest, canonical: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(32 + canonical.len());
    record.extend_from_slice(&hash.0);
    record.extend_from_slice(canonical);
    record
}

/// Checks each record against the ones before it: hash recomputed from the canonical bytes,
/// strict decoding, seq continuity, the link to the previous hash, per-stream version
/// continuity and non-decreasing `recorded_at`.
#[derive(Default)]
pub struct ChainVerifier {
    last_seq: u64,
    last_hash: Digest,
    last_recorded_at: Option<Timestamp>,
    versions: HashMap<Stream, u64>,
}

impl ChainVerifier {
    pub fn new() -> ChainVerifier {
        ChainVerifier::default()
    }

    /// Verifies the record stored under key `seq`.
    pub fn check(&mut self, seq: u64, record: &[u8]) -> Result<RecordedEvent, VerifyFailure> {
        let fail = |reason: String| VerifyFailure { seq, reason };
        let expected_seq = self.last_seq + 1;
        if seq != expected_seq {
            return Err(VerifyFailure { seq: expected_seq, reason: format!("missing: the next stored event is seq {seq}") });
        }
        let (stored_hash, canonical) = split_record(record).ok_or_else(|| fail("record shorter than a hash".into()))?;
        let hash = Digest::of_event(canonical);
        if hash != stored_hash {
            return Err(fail(format!("hash of the stored bytes is {hash}, the record says {stored_hash}")));
        }
        let recorded = RecordedEvent::from_canonical(canonical.to_vec()).map_err(|e| fail(e.to_string()))?;
        let event = &recorded.event;
        if event.seq != seq {
            return Err(fail(format!("the event inside says seq {}", event.seq)));
        }
        if event.prev_hash != self.last_hash {
            return Err(fail(format!("prev_hash {} does not link to seq {}'s hash {}", event.prev_hash, self.last_seq, self.last_hash)));
        }
        let version = self.versions.entry(event.stream.clone()).or_default();
        if event.version != *version + 1 {
            return Err(fail(format!("{} version {} does not follow {}", event.stream, event.version, version)));
        }
        if self.last_recorded_at.is_some_and(|t| event.recorded_at < t) {
            return Err(fail(format!("recorded_at {} goes back before the previous event's", event.recorded_at)));
        }
        *version += 1;
        self.last_seq = seq;
        self.last_hash = hash;
        self.last_recorded_at = Some(event.recorded_at);
        Ok(recorded)
    }

    /// Seq and hash of the last verified event (0 and zeros before any).
    pub fn head(&self) -> (u64, Digest) {
        (self.last_seq, self.last_hash)
    }
}
