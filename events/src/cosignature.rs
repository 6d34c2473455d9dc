//! Witness cosignatures: C2SP tlog-cosignature `cosignature/v1` with Ed25519 (signature
//! type 0x04), and the policy a verifier applies to them (which witnesses, how many).
//!
//! A cosignature is one more signature line on the log's signed checkpoint:
//!
//! ```text
//! — <witness name> base64(key id (4) || timestamp (u64 big-endian) || Ed25519 signature (64))
//! ```
//!
//! The key id is SHA-256(name || "\n" || 0x04 || public key)[:4]. The signature covers
//!
//! ```text
//! cosignature/v1\n
//! time <timestamp, decimal>\n
//! <the checkpoint text, through its final newline>
//! ```
//!
//! so a witness states that, at that POSIX time (seconds), this was the largest tree of the
//! log it had verified as consistent with everything it saw before.

use crate::checkpoint::{format_vkey, key_id, parse_vkey, Checkpoint, CheckpointError, Note, NoteSignature, COSIGNATURE_V1};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// The domain-separating first line of the signed message.
pub const HEADER: &str = "cosignature/v1";
/// Timestamps are at most 2^63 - 1 (tlog-cosignature).
pub const TIMESTAMP_MAX: u64 = i64::MAX as u64;

/// The message a cosignature signs.
pub fn signed_message(checkpoint_text: &str, timestamp: u64) -> String {
    format!("{HEADER}\ntime {timestamp}\n{checkpoint_text}")
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CosignatureError {
    #[error("malformed cosignature by {witness}: {why}")]
    Malformed { witness: String, why: String },
    #[error("the cosignature by {0} does not verify")]
    BadSignature(String),
    #[error("{valid} valid cosignature(s) ({names}), {required} required")]
    BelowQuorum { valid: usize, required: usize, names: String },
    #[error("witness policy: {0}")]
    BadPolicy(String),
    #[error(transparent)]
    Note(#[from] CheckpointError),
}

/// A witness's signing key and name.
pub struct Cosigner {
    name: String,
    key: SigningKey,
}

impl Cosigner {
    pub fn new(name: &str, seed: [u8; 32]) -> Result<Cosigner, CheckpointError> {
        // The same rules as every key name: checked by a round trip through the vkey form.
        let key = SigningKey::from_bytes(&seed);
        parse_vkey(&format_vkey(name, COSIGNATURE_V1, &key.verifying_key()), COSIGNATURE_V1)?;
        Ok(Cosigner { name: name.to_string(), key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn verifier(&self) -> WitnessKey {
        WitnessKey { name: self.name.clone(), public: self.key.verifying_key() }
    }

    /// The cosignature of `checkpoint` at `timestamp` (POSIX seconds, at most 2^63 - 1).
    pub fn cosign(&self, checkpoint: &Checkpoint, timestamp: u64) -> NoteSignature {
        debug_assert!(timestamp <= TIMESTAMP_MAX);
        let signature = self.key.sign(signed_message(&checkpoint.body(), timestamp).as_bytes());
        let mut blob = timestamp.to_be_bytes().to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        NoteSignature { name: self.name.clone(), key_id: self.verifier().key_id(), signature: blob }
    }
}

/// A witness's public key, `name+keyid+base64(0x04 || key)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessKey {
    pub name: String,
    pub public: VerifyingKey,
}

/// A verified cosignature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosignature {
    pub witness: String,
    pub timestamp: u64,
}

impl WitnessKey {
    pub fn parse(text: &str) -> Result<WitnessKey, CheckpointError> {
        let (name, public) = parse_vkey(text, COSIGNATURE_V1)?;
        Ok(WitnessKey { name, public })
    }

    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, COSIGNATURE_V1, self.public.as_bytes())
    }

    /// Is this line by this key (name and key id both match)?
    pub fn signed(&self, line: &NoteSignature) -> bool {
        line.name == self.name && line.key_id == self.key_id()
    }

    /// Verifies one line of this key over a note's text; returns its timestamp.
    pub fn verify_line(&self, text: &str, line: &NoteSignature) -> Result<u64, CosignatureError> {
        let malformed = |why: &str| CosignatureError::Malformed { witness: self.name.clone(), why: why.to_string() };
        let [t0, t1, t2, t3, t4, t5, t6, t7, signature @ ..] = line.signature.as_slice() else {
            return Err(malformed("shorter than a timestamp"));
        };
        let timestamp = u64::from_be_bytes([*t0, *t1, *t2, *t3, *t4, *t5, *t6, *t7]);
        if timestamp > TIMESTAMP_MAX {
            return Err(malformed("the timestamp is beyond 2^63 - 1"));
        }
        let signature: [u8; 64] = signature.try_into().map_err(|_| malformed("an Ed25519 signature is 64 bytes"))?;
        self.public
            .verify_strict(signed_message(text, timestamp).as_bytes(), &ed25519_dalek::Signature::from_bytes(&signature))
            .map_err(|_| CosignatureError::BadSignature(self.name.clone()))?;
        Ok(timestamp)
    }

    /// This witness's cosignature on a note: `None` if it has no line there; an error if
    /// one of its lines does not verify (a bad line from a known key spoils the note).
    /// With several lines, the latest timestamp.
    pub fn check(&self, note: &Note) -> Result<Option<Cosignature>, CosignatureError> {
        let mut latest = None;
        for line in note.signatures.iter().filter(|s| self.signed(s)) {
            let timestamp = self.verify_line(&note.text, line)?;
            latest = Some(latest.map_or(timestamp, |t: u64| t.max(timestamp)));
        }
        Ok(latest.map(|timestamp| Cosignature { witness: self.name.clone(), timestamp }))
    }
}

impl std::fmt::Display for WitnessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_vkey(&self.name, COSIGNATURE_V1, &self.public))
    }
}

/// The witnesses a verifier trusts and how many of them must have cosigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessPolicy {
    witnesses: Vec<WitnessKey>,
    quorum: usize,
}

impl WitnessPolicy {
    /// `quorum` of `witnesses` (distinct keys), 1 <= quorum <= their number.
    pub fn new(witnesses: Vec<WitnessKey>, quorum: usize) -> Result<WitnessPolicy, CosignatureError> {
        for (i, w) in witnesses.iter().enumerate() {
            if witnesses[..i].iter().any(|earlier| earlier.public == w.public || (earlier.name == w.name && earlier.key_id() == w.key_id())) {
                return Err(CosignatureError::BadPolicy(format!("witness {w} is given twice")));
            }
        }
        if quorum == 0 || quorum > witnesses.len() {
            return Err(CosignatureError::BadPolicy(format!("a quorum of {quorum} out of {} witnesses", witnesses.len())));
        }
        Ok(WitnessPolicy { witnesses, quorum })
    }

    pub fn witnesses(&self) -> &[WitnessKey] {
        &self.witnesses
    }

    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// The valid cosignatures of the policy's witnesses on a note (at most one each),
    /// whether or not they make a quorum. Lines of unknown keys are ignored.
    pub fn cosignatures(&self, note: &Note) -> Result<Vec<Cosignature>, CosignatureError> {
        let mut found = vec![];
        for w in &self.witnesses {
            if let Some(c) = w.check(note)? {
                found.push(c);
            }
        }
        Ok(found)
    }

    /// The note's cosignatures, if they make a quorum.
    pub fn check(&self, note: &Note) -> Result<Vec<Cosignature>, CosignatureError> {
        let found = self.cosignatures(note)?;
        if found.len() < self.quorum {
            let names = if found.is_empty() { "none".to_string() } else { found.iter().map(|c| c.witness.as_str()).collect::<Vec<_>>().join(", ") };
            return Err(CosignatureError::BelowQuorum { valid: found.len(), required: self.quorum, names });
        }
        Ok(found)
    }
}

/// Adds `cosignatures` to a note, one line per key. Every line already there stays as it
/// is, and a later line of a key already there is dropped: a kept note only ever gains
/// lines (a witness asked again cosigns with a newer timestamp, and replacing its kept
/// line would edit what was stored). The caller has verified them.
pub fn attach(note: &Note, cosignatures: &[NoteSignature]) -> Note {
    let mut out = note.clone();
    for c in cosignatures {
        if !out.signatures.iter().any(|s| s.name == c.name && s.key_id == c.key_id) {
            out.signatures.push(c.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::NoteSigner;
    use crate::Digest;

    fn log() -> (NoteSigner, Checkpoint) {
        let signer = NoteSigner::new("log.example/ledger", [1; 32]).unwrap();
        let checkpoint = Checkpoint { origin: "log.example/ledger".into(), size: 12, root: Digest([5; 32]) };
        (signer, checkpoint)
    }

    fn cosigned(witnesses: &[&Cosigner], checkpoint: &Checkpoint, signer: &NoteSigner) -> Note {
        let note = Note::parse(&signer.sign(checkpoint)).unwrap();
        let lines: Vec<NoteSignature> = witnesses.iter().map(|w| w.cosign(checkpoint, 1_700_000_000)).collect();
        attach(&note, &lines)
    }

    #[test]
    fn a_quorum_of_distinct_witnesses_is_counted() {
        let (signer, checkpoint) = log();
        let (a, b, c) = (Cosigner::new("w.example/a", [2; 32]).unwrap(), Cosigner::new("w.example/b", [3; 32]).unwrap(), Cosigner::new("w.example/c", [4; 32]).unwrap());
        let note = cosigned(&[&a, &b], &checkpoint, &signer);
        // The log's own key still verifies the note: other lines are skipped.
        assert_eq!(signer.verifier().verify(&note.to_string()).unwrap(), checkpoint);
        let keys = vec![a.verifier(), b.verifier(), c.verifier()];
        assert_eq!(WitnessPolicy::new(keys.clone(), 2).unwrap().check(&note).unwrap().len(), 2);
        let err = WitnessPolicy::new(keys.clone(), 3).unwrap().check(&note).unwrap_err();
        assert!(matches!(err, CosignatureError::BelowQuorum { valid: 2, required: 3, .. }), "{err}");
        // The same cosignature twice counts once.
        let first = a.cosign(&checkpoint, 1);
        let twice = attach(&Note::parse(&signer.sign(&checkpoint)).unwrap(), &[first.clone(), a.cosign(&checkpoint, 2)]);
        assert_eq!(twice.signatures.len(), 2, "one line per key: {twice}");
        assert_eq!(twice.signatures[1], first, "the line already there stays: {twice}");
        assert!(WitnessPolicy::new(keys.clone(), 2).unwrap().check(&twice).is_err());
        // Attaching a newer line of a key already on a note keeps the note as it was.
        assert_eq!(attach(&twice, &[a.cosign(&checkpoint, 3)]), twice);
        // Policies: no duplicates, a reachable quorum.
        assert!(WitnessPolicy::new(vec![a.verifier(), a.verifier()], 1).is_err());
        assert!(WitnessPolicy::new(keys.clone(), 0).is_err());
        assert!(WitnessPolicy::new(keys, 4).is_err());
    }

    #[test]
    fn a_cosignature_covers_the_checkpoint_and_the_timestamp() {
        let (signer, checkpoint) = log();
        let w = Cosigner::new("w.example/a", [2; 32]).unwrap();
        let key = w.verifier();
        let good = cosigned(&[&w], &checkpoint, &signer);
        assert_eq!(key.check(&good).unwrap(), Some(Cosignature { witness: "w.example/a".into(), timestamp: 1_700_000_000 }));
        // Any single bit of the cosignature blob (timestamp, signature) changed: refused.
        let index = good.signatures.len() - 1;
        for byte in 0..good.signatures[index].signature.len() {
            let mut bad = good.clone();
            bad.signatures[index].signature[byte] ^= 0x01;
            assert!(key.check(&bad).is_err(), "byte {byte} changed");
        }
        // Over another checkpoint: refused.
        let other = Checkpoint { size: 13, ..checkpoint.clone() };
        let mut moved = good.clone();
        moved.text = other.body();
        assert!(matches!(key.check(&moved), Err(CosignatureError::BadSignature(_))));
        // A plain Ed25519 note signature by the same key is not a cosignature (type 0x04 vs 0x01).
        let plain = NoteSigner::new("w.example/a", [2; 32]).unwrap();
        let note = Note::parse(&plain.sign(&checkpoint)).unwrap();
        assert_eq!(key.check(&note).unwrap(), None, "a type 0x01 line has another key id");
        // Keys parse back; a log key is not a witness key.
        assert_eq!(WitnessKey::parse(&key.to_string()).unwrap(), key);
        assert!(WitnessKey::parse(&signer.verifier().to_string()).is_err());
        assert!(crate::checkpoint::VerifierKey::parse(&key.to_string()).is_err());
    }
}
