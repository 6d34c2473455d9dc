//! Signed checkpoints: a C2SP tlog-checkpoint (origin, tree size, base64 root), signed as a
//! C2SP signed note with Ed25519; verifier keys in C2SP vkey form `name+keyid+base64`.
//!
//! ```text
//! compute-ledger.example/ledger      <- origin (also the key name)
//! 9                                  <- tree size, decimal
//! 3nG…=                              <- root hash, standard base64
//!                                    <- blank line: end of the signed text
//! — compute-ledger.example/ledger AbCd…=   <- "— " name, base64(key id (4) || signature (64))
//! ```
//!
//! Key id = the first 4 bytes of SHA-256(name || "\n" || 0x01 || public key), 0x01 being
//! the Ed25519 signature type. The signature covers the text, through its final newline.

use crate::Digest;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::Digest as _;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// C2SP signature type of Ed25519.
const ED25519: u8 = 0x01;
/// The prefix of a signature line: an em dash and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Digest,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    #[error("no signature by key {0} (key id {1})")]
    NotSigned(String, String),
    #[error("the signature by {0} does not verify")]
    BadSignature(String),
    #[error("malformed verifier key: {0}")]
    BadKey(String),
}

fn malformed(why: &str) -> CheckpointError {
    CheckpointError::Malformed(why.to_string())
}

/// A key name (and origin) is a non-empty line without spaces or `+`.
fn check_name(name: &str) -> Result<(), CheckpointError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control()) {
        return Err(CheckpointError::BadKey(format!("`{name}` is not a key name (no spaces, no +)")));
    }
    Ok(())
}

fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = sha2::Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public.to_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

impl Checkpoint {
    /// The checkpoint's text: three lines, each ending in a newline.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root.0))
    }

    /// Parses the text of a checkpoint (extension lines after the third are refused: this
    /// ledger writes none).
    pub fn parse(body: &str) -> Result<Checkpoint, CheckpointError> {
        let lines = body.strip_suffix('\n').ok_or_else(|| malformed("the text must end with a newline"))?;
        let parts: Vec<&str> = lines.split('\n').collect();
        let [origin, size, root] = parts.as_slice() else {
            return Err(malformed("a checkpoint is exactly three lines: origin, size, root"));
        };
        if origin.is_empty() {
            return Err(malformed("empty origin"));
        }
        // Decimal without sign or leading zeros, so the text has one spelling.
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) || (size.len() > 1 && size.starts_with('0')) {
            return Err(malformed("the size is not a decimal number"));
        }
        let size = size.parse::<u64>().map_err(|_| malformed("the size is too large"))?;
        let bytes = B64.decode(root).map_err(|_| malformed("the root is not base64"))?;
        let root = Digest(bytes.try_into().map_err(|_| malformed("the root is not 32 bytes"))?);
        let checkpoint = Checkpoint { origin: origin.to_string(), size, root };
        if checkpoint.body() != body {
            return Err(malformed("not in canonical form"));
        }
        Ok(checkpoint)
    }
}

/// A signer: an Ed25519 key and the name it signs under.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl NoteSigner {
    pub fn new(name: &str, seed: [u8; 32]) -> Result<NoteSigner, CheckpointError> {
        check_name(name)?;
        Ok(NoteSigner { name: name.to_string(), key: SigningKey::from_bytes(&seed) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn verifier(&self) -> VerifierKey {
        VerifierKey { name: self.name.clone(), public: self.key.verifying_key() }
    }

    /// The signed note of a checkpoint.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let text = checkpoint.body();
        let signature = self.key.sign(text.as_bytes());
        let mut blob = key_id(&self.name, &self.key.verifying_key()).to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!("{text}\n{SIGNATURE_PREFIX}{} {}\n", self.name, B64.encode(blob))
    }
}

/// A public key to verify notes with, `name+keyid+base64(0x01 || key)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub public: VerifyingKey,
}

impl VerifierKey {
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, &self.public)
    }

    pub fn parse(text: &str) -> Result<VerifierKey, CheckpointError> {
        let bad = |why: &str| CheckpointError::BadKey(why.to_string());
        // The key is base64, which may itself contain '+': split off the first two fields.
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected name+keyid+key"));
        };
        check_name(name)?;
        let key = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
        let [ED25519, rest @ ..] = key.as_slice() else { return Err(bad("not an Ed25519 key (type byte 0x01)")) };
        let bytes: [u8; 32] = rest.try_into().map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
        let public = VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not a valid Ed25519 point"))?;
        let vkey = VerifierKey { name: name.to_string(), public };
        if hex::encode(vkey.key_id()) != id {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(vkey)
    }

    /// Verifies a signed note and returns the checkpoint it carries.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        let (text, signatures) = note.split_once("\n\n").ok_or_else(|| malformed("no blank line between text and signatures"))?;
        let text = format!("{text}\n");
        let signatures = signatures.strip_suffix('\n').ok_or_else(|| malformed("the note must end with a newline"))?;
        let id = self.key_id();
        let mut found = false;
        for line in signatures.split('\n') {
            let rest = line.strip_prefix(SIGNATURE_PREFIX).ok_or_else(|| malformed("a signature line starts with an em dash"))?;
            let (name, blob) = rest.split_once(' ').ok_or_else(|| malformed("a signature line is `— name signature`"))?;
            let blob = B64.decode(blob).map_err(|_| malformed("a signature is not base64"))?;
            if name != self.name || blob.len() < 4 || blob[..4] != id {
                continue; // Another signer's line: allowed, not ours.
            }
            let signature: [u8; 64] = blob[4..].try_into().map_err(|_| malformed("an Ed25519 signature is 64 bytes"))?;
            self.public
                .verify_strict(text.as_bytes(), &ed25519_dalek::Signature::from_bytes(&signature))
                .map_err(|_| CheckpointError::BadSignature(self.name.clone()))?;
            found = true;
        }
        if !found {
            return Err(CheckpointError::NotSigned(self.name.clone(), hex::encode(id)));
        }
        let checkpoint = Checkpoint::parse(&text)?;
        if checkpoint.origin != self.name {
            return Err(malformed("the origin is not the key's name"));
        }
        Ok(checkpoint)
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut key = vec![ED25519];
        key.extend_from_slice(&self.public.to_bytes());
        write!(f, "{}+{}+{}", self.name, hex::encode(self.key_id()), B64.encode(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::new("test.example/ledger", [7u8; 32]).unwrap()
    }

    #[test]
    fn sign_and_verify_round_trip() {
        // Seeds whose public keys' base64 holds a '+' parse too.
        for seed in 0..64u8 {
            let s = NoteSigner::new("n", [seed; 32]).unwrap();
            assert_eq!(VerifierKey::parse(&s.verifier().to_string()).unwrap(), s.verifier());
        }
        let s = signer();
        let cp = Checkpoint { origin: "test.example/ledger".into(), size: 9, root: Digest([3; 32]) };
        let note = s.sign(&cp);
        assert!(note.starts_with("test.example/ledger\n9\n"));
        let vkey = VerifierKey::parse(&s.verifier().to_string()).unwrap();
        assert_eq!(vkey.verify(&note).unwrap(), cp);
    }

    #[test]
    fn every_single_byte_change_of_a_note_is_refused() {
        let s = signer();
        let cp = Checkpoint { origin: "test.example/ledger".into(), size: 1234, root: Digest([9; 32]) };
        let note = s.sign(&cp).into_bytes();
        let vkey = s.verifier();
        for i in 0..note.len() {
            for xor in [0x01u8, 0x20, 0x80] {
                let mut bad = note.clone();
                bad[i] ^= xor;
                let Ok(text) = String::from_utf8(bad) else { continue };
                assert!(vkey.verify(&text).is_err(), "byte {i} ^ {xor:#x} accepted");
            }
        }
    }

    #[test]
    fn another_key_or_name_is_refused() {
        let cp = Checkpoint { origin: "test.example/ledger".into(), size: 1, root: Digest([1; 32]) };
        let note = signer().sign(&cp);
        let other = NoteSigner::new("test.example/ledger", [8u8; 32]).unwrap();
        assert!(matches!(other.verifier().verify(&note), Err(CheckpointError::NotSigned(..))));
        let renamed = NoteSigner::new("other.example/ledger", [7u8; 32]).unwrap();
        assert!(renamed.verifier().verify(&note).is_err());
        assert!(VerifierKey::parse("a+00000000+AQ==").is_err());
        assert!(VerifierKey::parse(&signer().verifier().to_string().replace("test.example", "test.exampl")).is_err());
    }
}
