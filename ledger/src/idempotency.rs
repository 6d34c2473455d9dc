//! Idempotency keys: a key seen before answers with the original result if the request is the
//! same, and is refused if it differs. Records live in the ledger's tree, written in the same
//! batch as the events they name, so they survive restarts exactly as the events do.

use events::{Digest, Proposal, Stream};

/// Context of request fingerprints (BLAKE3 derive-key).
const FINGERPRINT_CONTEXT: &str = "compute-ledger 2026-11 request v1";

/// What a key names: the request's fingerprint and the events it appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub fingerprint: Digest,
    pub first_seq: u64,
    pub count: u32,
}

impl KeyRecord {
    const LEN: usize = 32 + 8 + 4;

    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..32].copy_from_slice(&self.fingerprint.0);
        out[32..40].copy_from_slice(&self.first_seq.to_be_bytes());
        out[40..].copy_from_slice(&self.count.to_be_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<KeyRecord> {
        if bytes.len() != Self::LEN {
            return None;
        }
        Some(KeyRecord {
            fingerprint: Digest(bytes[..32].try_into().ok()?),
            first_seq: u64::from_be_bytes(bytes[32..40].try_into().ok()?),
            count: u32::from_be_bytes(bytes[40..].try_into().ok()?),
        })
    }
}

/// The fingerprint of a request: its events as parsed (amount strings as sent) and the actor
/// they default to. Two requests are "the same" when their fingerprints are equal.
pub fn fingerprint(default_actor: &str, proposals: &[Proposal]) -> Digest {
    let mut hasher = blake3::Hasher::new_derive_key(FINGERPRINT_CONTEXT);
    let mut field = |bytes: &[u8]| {
        // Length-prefixed, so no two different field sequences hash the same bytes.
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(default_actor.as_bytes());
    for p in proposals {
        field(match &p.stream {
            Stream::Ledger => b"",
            Stream::Contract(id) => id.as_str().as_bytes(),
        });
        field(p.effective_date.to_string().as_bytes());
        field(p.expected_version.map(|v| v.to_string()).unwrap_or_default().as_bytes());
        field(p.actor.as_deref().unwrap_or("").as_bytes());
        field(p.idempotency_key.as_deref().unwrap_or("").as_bytes());
        field(p.kind().as_str().as_bytes());
        field(p.body.to_json().to_string().as_bytes());
    }
    Digest(*hasher.finalize().as_bytes())
}
