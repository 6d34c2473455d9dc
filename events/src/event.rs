//! The envelope, its canonical bytes (postcard) and the event hash (BLAKE3, derive-key mode).
//!
//! Layout, byte by byte, in docs/FORMAT.md. In short: `prev_hash` (32 raw bytes), `seq`
//! (LEB128), `format` (LEB128, 1), then format 1's fields. Decoding accepts only bytes that
//! re-encode to themselves, so every event has exactly one byte string and one hash.

use crate::body::{EventBody, Stream};
use crate::text::ContractId;
use crate::time::{Date, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The BLAKE3 derive-key context of event hashes.
pub const EVENT_HASH_CONTEXT: &str = "compute-ledger 2026-11 event v1";

/// The envelope format this build writes. Older formats are decoded and upcast to this one.
pub const FORMAT_VERSION: u16 = 1;

/// The largest canonical event accepted (bytes). Writers are refused beyond it, so every
/// stored event fits one sled value far below sled's blob threshold.
pub const CANONICAL_LEN_MAX: usize = 64 * 1024;

/// A BLAKE3 hash of 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub const ZERO: Digest = Digest([0; 32]);

    /// The event hash of canonical bytes.
    pub fn of_event(canonical: &[u8]) -> Digest {
        // The context's key is hashed once, not once per event (BLAKE3's own way to do it:
        // the same hash as `new_derive_key`, one compression fewer for each event).
        use blake3::hazmat::HasherExt;
        static CONTEXT_KEY: std::sync::LazyLock<blake3::hazmat::ContextKey> =
            std::sync::LazyLock::new(|| blake3::hazmat::hash_derive_key_context(EVENT_HASH_CONTEXT));
        let mut hasher = blake3::Hasher::new_from_context_key(&CONTEXT_KEY);
        hasher.update(canonical);
        Digest(*hasher.finalize().as_bytes())
    }

    pub fn to_hex(&self) -> String {
        let mut out = [0u8; 64];
        String::from(self.hex(&mut out))
    }

    /// The 64 lowercase hex digits of the hash, written into `out` (no allocation: the
    /// bulk paths write and compare millions of them).
    pub fn hex<'a>(&self, out: &'a mut [u8; 64]) -> &'a str {
        hex::encode_to_slice(self.0, out).expect("64 digits for 32 bytes");
        std::str::from_utf8(out).expect("hex digits are ASCII")
    }

    pub fn from_hex(text: &str) -> Option<Digest> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Digest(out))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An event: envelope and body. Its identity is its canonical bytes (see [`RecordedEvent`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub prev_hash: Digest,
    /// Global position, 1-based, gapless.
    pub seq: u64,
    pub stream: Stream,
    /// Position in its stream (contract or ledger-wide), 1-based, gapless.
    pub version: u64,
    pub effective_date: Date,
    pub recorded_at: Timestamp,
    pub actor: String,
    pub idempotency_key: Option<String>,
    pub body: EventBody,
}

/// Format 1's fields after the common prefix, in canonical order, borrowed for encoding
/// (postcard writes a `&T` exactly as a `T`, so the bytes are [`FormatV1`]'s).
#[derive(Serialize)]
struct FormatV1Ref<'a> {
    contract_id: Option<&'a ContractId>,
    version: u64,
    effective_date: Date,
    recorded_at: Timestamp,
    actor: &'a str,
    idempotency_key: Option<&'a str>,
    body: &'a EventBody,
}

/// Format 1's fields after the common prefix, in canonical order.
#[derive(Serialize, Deserialize)]
struct FormatV1 {
    contract_id: Option<ContractId>,
    version: u64,
    effective_date: Date,
    recorded_at: Timestamp,
    actor: String,
    idempotency_key: Option<String>,
    body: EventBody,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("canonical bytes do not decode: {0}")]
    Malformed(String),
    #[error("unknown envelope format {0}")]
    UnknownFormat(u16),
    #[error("{0} bytes follow the end of the event")]
    TrailingBytes(usize),
    #[error("bytes decode but are not canonical (they re-encode differently)")]
    NotCanonical,
    #[error("event is inconsistent: {0}")]
    Inconsistent(&'static str),
    #[error("event is {0} bytes, more than the {CANONICAL_LEN_MAX} allowed")]
    TooLarge(usize),
}

impl Event {
    /// The canonical bytes of this event.
    pub fn encode(&self) -> Vec<u8> {
        let prefix = (self.prev_hash.0, self.seq, FORMAT_VERSION);
        let fields = FormatV1Ref {
            contract_id: self.stream.contract_id(),
            version: self.version,
            effective_date: self.effective_date,
            recorded_at: self.recorded_at,
            actor: &self.actor,
            idempotency_key: self.idempotency_key.as_deref(),
            body: &self.body,
        };
        // Serializing plain data into a Vec cannot fail.
        let bytes = postcard::to_extend(&prefix, Vec::with_capacity(128)).expect("prefix encodes");
        postcard::to_extend(&fields, bytes).expect("event encodes")
    }

    /// Decodes canonical bytes, refusing anything that is not the one canonical encoding.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        if bytes.len() > CANONICAL_LEN_MAX {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let malformed = |e: postcard::Error| DecodeError::Malformed(e.to_string());
        let ((prev_hash, seq, format), rest): (([u8; 32], u64, u16), &[u8]) =
            postcard::take_from_bytes(bytes).map_err(malformed)?;
        let event = match format {
            1 => {
                let (v1, rest): (FormatV1, &[u8]) = postcard::take_from_bytes(rest).map_err(malformed)?;
                if !rest.is_empty() {
                    return Err(DecodeError::TrailingBytes(rest.len()));
                }
                Event {
                    prev_hash: Digest(prev_hash),
                    seq,
                    stream: match v1.contract_id {
                        None => Stream::Ledger,
                        Some(id) => Stream::Contract(id),
                    },
                    version: v1.version,
                    effective_date: v1.effective_date,
                    recorded_at: v1.recorded_at,
                    actor: v1.actor,
                    idempotency_key: v1.idempotency_key,
                    body: v1.body,
                }
            }
            // A later format is decoded here and upcast into the current `Event`.
            other => return Err(DecodeError::UnknownFormat(other)),
        };
        event.check_consistency()?;
        if event.encode() != bytes {
            return Err(DecodeError::NotCanonical);
        }
        Ok(event)
    }

    fn check_consistency(&self) -> Result<(), DecodeError> {
        if self.seq == 0 {
            return Err(DecodeError::Inconsistent("seq 0"));
        }
        if self.version == 0 {
            return Err(DecodeError::Inconsistent("version 0"));
        }
        if self.body.kind().is_ledger_wide() != matches!(self.stream, Stream::Ledger) {
            return Err(DecodeError::Inconsistent("ledger-wide type with a contract, or contract type without one"));
        }
        Ok(())
    }
}

/// An event together with its canonical bytes and their hash: what the ledger stores,
/// exports and publishes. The hash is always of these bytes, never of a re-encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    pub event: Event,
    pub canonical: Vec<u8>,
    pub hash: Digest,
}

impl RecordedEvent {
    /// Encodes and hashes a new event.
    pub fn seal(event: Event) -> RecordedEvent {
        let canonical = event.encode();
        let hash = Digest::of_event(&canonical);
        RecordedEvent { event, canonical, hash }
    }

    /// Decodes stored bytes (strictly) and hashes them.
    pub fn from_canonical(canonical: Vec<u8>) -> Result<RecordedEvent, DecodeError> {
        let event = Event::decode(&canonical)?;
        let hash = Digest::of_event(&canonical);
        Ok(RecordedEvent { event, canonical, hash })
    }

    pub fn seq(&self) -> u64 {
        self.event.seq
    }
}
