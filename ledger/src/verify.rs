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
        self.link_event(&recorded.event, &recorded.hash)
    }

    /// [`ChainVerifier::link`] of an event whose canonical bytes hash to `hash`.
    pub fn link_event(&mut self, event: &events::Event, hash: &Digest) -> Result<(), VerifyFailure> {
        self.link_facts(event.seq, hash, &event.prev_hash, &event.stream, event.version, event.recorded_at)
    }

    /// [`ChainVerifier::link`] of what [`Link::of`] kept of an event.
    pub fn link_kept(&mut self, link: &Link) -> Result<(), VerifyFailure> {
        self.link_facts(link.seq, &link.hash, &link.prev_hash, &link.stream, link.version, link.recorded_at)
    }

    fn link_facts(&mut self, seq: u64, hash: &Digest, prev_hash: &Digest, stream: &Stream, version: u64, recorded_at: Timestamp) -> Result<(), VerifyFailure> {
        let fail = |reason: String| VerifyFailure { seq, reason };
        let expected_seq = self.last_seq + 1;
        if seq != expected_seq {
            return Err(VerifyFailure { seq: expected_seq, reason: format!("missing: the next stored event is seq {seq}") });
        }
        if *prev_hash != self.last_hash {
            return Err(fail(format!("prev_hash {prev_hash} does not link to seq {}'s hash {}", self.last_seq, self.last_hash)));
        }
        let current = match self.versions.get_mut(stream) {
            Some(v) => v,
            None => self.versions.entry(stream.clone()).or_default(),
        };
        if version != *current + 1 {
            return Err(fail(format!("{stream} version {version} does not follow {current}")));
        }
        if self.last_recorded_at.is_some_and(|t| recorded_at < t) {
            return Err(fail(format!("recorded_at {recorded_at} goes back before the previous event's")));
        }
        *current += 1;
        self.last_seq = seq;
        self.last_hash = *hash;
        self.last_recorded_at = Some(recorded_at);
        Ok(())
    }

    /// Seq and hash of the last verified event (0 and zeros before any).
    pub fn head(&self) -> (u64, Digest) {
        (self.last_seq, self.last_hash)
    }
}

/// What linking an event needs of it ([`ChainVerifier::link_kept`]). Taken where the event
/// was decoded, so that the one thread linking in order reads about a hundred bytes per
/// event, not the event, and frees none of it: at a million events that thread was the
/// slowest part of `verify`.
#[derive(Clone, Debug)]
pub struct Link {
    pub seq: u64,
    pub hash: Digest,
    /// The event's leaf in the Merkle tree ([`events::merkle::leaf_hash`]), a hash made
    /// here rather than on the linking thread.
    pub leaf: Digest,
    pub prev_hash: Digest,
    pub stream: Stream,
    pub version: u64,
    pub recorded_at: Timestamp,
}

impl Link {
    /// The link facts of `event`, whose canonical bytes hash to `hash`.
    pub fn of(event: events::Event, hash: Digest) -> Link {
        Link { seq: event.seq, hash, leaf: events::merkle::leaf_hash(&hash), prev_hash: event.prev_hash, stream: event.stream, version: event.version, recorded_at: event.recorded_at }
    }
}

/// The checks of one stored event on its own: its bytes hash to the stored hash, decode
/// strictly, and carry its seq. Independent of every other event, so verification runs
/// them in parallel and links the results in order ([`ChainVerifier::link`]).
pub fn check_record(seq: u64, stored_hash: &Digest, canonical: &[u8]) -> Result<RecordedEvent, VerifyFailure> {
    let event = check_event(seq, stored_hash, canonical)?;
    Ok(RecordedEvent { event, canonical: canonical.to_vec(), hash: *stored_hash })
}

/// [`check_record`] without keeping a copy of the bytes: the decoded event.
pub fn check_event(seq: u64, stored_hash: &Digest, canonical: &[u8]) -> Result<events::Event, VerifyFailure> {
    let fail = |reason: String| VerifyFailure { seq, reason };
    let hash = Digest::of_event(canonical);
    if hash != *stored_hash {
        return Err(fail(format!("hash of the stored bytes is {hash}, the record says {stored_hash}")));
    }
    let event = events::Event::decode(canonical).map_err(|e| fail(e.to_string()))?;
    if event.seq != seq {
        return Err(fail(format!("the event inside says seq {}", event.seq)));
    }
    Ok(event)
}
