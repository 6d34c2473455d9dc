//! Verification of a chain of stored records, one at a time, in seq order. Pure: the caller
//! reads the records (from sled, an export, a stream) and feeds them here.

use events::{Digest, RecordedEvent, Stream, Timestamp};
/// Versions are looked up once per event on the one thread that links events in order:
/// foldhash instead of SipHash took that lookup from a tenth of `verify` to noise. The keys
/// may come from an untrusted export, but each map has its own random seed, so colliding
/// names cannot be made in advance.
type Versions = std::collections::HashMap<Stream, u64, foldhash::fast::RandomState>;

/// The first thing wrong with a chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("seq {seq}: {reason}")]
pub struct VerifyFailure {
    pub seq: u64,
    pub reason: String,
}

/// Checks each record against the ones before it: hash recomputed from the canonical bytes,
/// strict decoding, seq continuity, the link to the previous hash, per-stream version
/// continuity and non-decreasing `recorded_at`.
#[derive(Default)]
pub struct ChainVerifier {
    last_seq: u64,
    last_hash: Digest,
    last_recorded_at: Option<Timestamp>,
    versions: Versions,
}

impl ChainVerifier {
    pub fn new() -> ChainVerifier {
        ChainVerifier::default()
    }

    /// Verifies the event stored as `seq` with hash `stored_hash`.
    pub fn check(&mut self, seq: u64, stored_hash: &Digest, canonical: &[u8]) -> Result<RecordedEvent, VerifyFailure> {
        let recorded = check_record(seq, stored_hash, canonical)?;
        self.link(&recorded)?;
        Ok(recorded)
    }

    /// The checks of one event against the ones before it (its own bytes checked by
    /// [`check_record`], possibly on another thread).
    pub fn link(&mut self, recorded: &RecordedEvent) -> Result<(), VerifyFailure> {
        let seq = recorded.event.seq;
        let fail = |reason: String| VerifyFailure { seq, reason };
        let expected_seq = self.last_seq + 1;
        if seq != expected_seq {
            return Err(VerifyFailure { seq: expected_seq, reason: format!("missing: the next stored event is seq {seq}") });
        }
        let hash = recorded.hash;
        let event = &recorded.event;
        if event.prev_hash != self.last_hash {
            return Err(fail(format!("prev_hash {} does not link to seq {}'s hash {}", event.prev_hash, self.last_seq, self.last_hash)));
        }
        let version = match self.versions.get_mut(&event.stream) {
            Some(v) => v,
            None => self.versions.entry(event.stream.clone()).or_default(),
        };
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
        Ok(())
    }

    /// Seq and hash of the last verified event (0 and zeros before any).
    pub fn head(&self) -> (u64, Digest) {
        (self.last_seq, self.last_hash)
    }
}

/// The checks of one stored event on its own: its bytes hash to the stored hash, decode
/// strictly, and carry its seq. Independent of every other event, so verification runs
/// them in parallel and links the results in order ([`ChainVerifier::link`]).
pub fn check_record(seq: u64, stored_hash: &Digest, canonical: &[u8]) -> Result<RecordedEvent, VerifyFailure> {
    let fail = |reason: String| VerifyFailure { seq, reason };
    let hash = Digest::of_event(canonical);
    if hash != *stored_hash {
        return Err(fail(format!("hash of the stored bytes is {hash}, the record says {stored_hash}")));
    }
    let event = events::Event::decode(canonical).map_err(|e| fail(e.to_string()))?;
    if event.seq != seq {
        return Err(fail(format!("the event inside says seq {}", event.seq)));
    }
    Ok(RecordedEvent { event, canonical: canonical.to_vec(), hash })
}
