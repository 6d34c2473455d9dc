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
//! Witnesses add their cosignatures (type 0x04, `cosignature`) as more signature lines.

use crate::Digest;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::Digest as _;

pub(crate) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// C2SP signature type of plain Ed25519 note signatures (the log's key).
pub const ED25519: u8 = 0x01;
/// C2SP signature type of timestamped Ed25519 witness cosignatures (tlog-cosignature).
pub const COSIGNATURE_V1: u8 = 0x04;
/// The prefix of a signature line: an em dash and a space.
pub const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Largest note accepted, in bytes: a checkpoint with far more signatures than anyone sends.
pub const NOTE_BYTES_MAX: usize = 64 * 1024;
/// Most signature lines accepted on one note (C2SP signed-note: at least 16 must be).
pub const NOTE_SIGNATURES_MAX: usize = 64;

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

/// C2SP key id: the first 4 bytes of SHA-256(name || "\n" || signature type || public key).
pub fn key_id(name: &str, signature_type: u8, public: &[u8; 32]) -> [u8; 4] {
    let mut h = sha2::Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([signature_type]);
    h.update(public);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// A C2SP vkey, `name+keyid+base64(type || key)`, as (name, Ed25519 public key), checking
/// that its type byte is `signature_type` and its key id matches.
pub(crate) fn parse_vkey(text: &str, signature_type: u8) -> Result<(String, VerifyingKey), CheckpointError> {
    let bad = |why: &str| CheckpointError::BadKey(why.to_string());
    // The key is base64, which may itself contain '+': split off the first two fields.
    let mut parts = text.trim().splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected name+keyid+key"));
    };
    check_name(name)?;
    let key = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
    let Some((&kind, rest)) = key.split_first() else { return Err(bad("the key is empty")) };
    if kind != signature_type {
        return Err(bad(&format!("signature type {kind:#04x}, expected {signature_type:#04x}")));
    }
    let bytes: [u8; 32] = rest.try_into().map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
    let public = VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not a valid Ed25519 point"))?;
    if hex::encode(key_id(name, signature_type, &bytes)) != id {
        return Err(bad("the key id does not match the name and key"));
    }
    Ok((name.to_string(), public))
}

pub(crate) fn format_vkey(name: &str, signature_type: u8, public: &VerifyingKey) -> String {
    let mut key = vec![signature_type];
    key.extend_from_slice(public.as_bytes());
    format!("{name}+{}+{}", hex::encode(key_id(name, signature_type, public.as_bytes())), B64.encode(key))
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

/// One signature line of a note: `— <name> base64(key id (4) || signature)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: [u8; 4],
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// Parses one line (without its newline).
    pub fn parse_line(line: &str) -> Result<NoteSignature, CheckpointError> {
        let rest = line.strip_prefix(SIGNATURE_PREFIX).ok_or_else(|| malformed("a signature line starts with an em dash and a space"))?;
        let (name, blob) = rest.split_once(' ').ok_or_else(|| malformed("a signature line is `— name signature`"))?;
        check_name(name).map_err(|_| malformed("a signature line's key name is empty or has a space or +"))?;
        let blob = B64.decode(blob).map_err(|_| malformed("a signature is not base64"))?;
        if B64.encode(&blob) != rest[name.len() + 1..] {
            return Err(malformed("a signature is not in canonical base64"));
        }
        if blob.len() < 4 {
            return Err(malformed("a signature is shorter than its key id"));
        }
        Ok(NoteSignature { name: name.to_string(), key_id: [blob[0], blob[1], blob[2], blob[3]], signature: blob[4..].to_vec() })
    }

    /// The line, with its newline.
    pub fn line(&self) -> String {
        let mut blob = self.key_id.to_vec();
        blob.extend_from_slice(&self.signature);
        format!("{SIGNATURE_PREFIX}{} {}\n", self.name, B64.encode(blob))
    }
}

/// A C2SP signed note: a text (ending in a newline), a blank line, signature lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

impl Note {
    /// Parses a note, within [`NOTE_BYTES_MAX`] and [`NOTE_SIGNATURES_MAX`]. The text is
    /// separated from the signatures by the last blank line.
    pub fn parse(note: &str) -> Result<Note, CheckpointError> {
        if note.len() > NOTE_BYTES_MAX {
            return Err(malformed(&format!("the note is larger than {NOTE_BYTES_MAX} bytes")));
        }
        if note.chars().any(|c| c.is_ascii_control() && c != '\n') {
            return Err(malformed("a note holds no control characters but newlines"));
        }
        let split = note.rfind("\n\n").ok_or_else(|| malformed("no blank line between text and signatures"))?;
        let text = &note[..=split];
        let signatures = note[split + 2..].strip_suffix('\n').ok_or_else(|| malformed("the note must end with a newline"))?;
        let lines: Vec<&str> = signatures.split('\n').collect();
        if lines.len() > NOTE_SIGNATURES_MAX {
            return Err(malformed(&format!("more than {NOTE_SIGNATURES_MAX} signatures")));
        }
        let signatures = lines.into_iter().map(NoteSignature::parse_line).collect::<Result<Vec<_>, _>>()?;
        Ok(Note { text: text.to_string(), signatures })
    }
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.text)?;
        for s in &self.signatures {
            f.write_str(&s.line())?;
        }
        Ok(())
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
        let line = NoteSignature { name: self.name.clone(), key_id: self.verifier().key_id(), signature: signature.to_bytes().to_vec() };
        Note { text, signatures: vec![line] }.to_string()
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
        key_id(&self.name, ED25519, self.public.as_bytes())
    }

    pub fn parse(text: &str) -> Result<VerifierKey, CheckpointError> {
        let (name, public) = parse_vkey(text, ED25519)?;
        Ok(VerifierKey { name, public })
    }

    /// Verifies a signed note and returns the checkpoint it carries. Lines of other keys
    /// (witnesses' cosignatures) are skipped; every line of this key must verify.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        self.verify_note(&Note::parse(note)?)
    }

    /// [`VerifierKey::verify`] of a parsed note.
    pub fn verify_note(&self, note: &Note) -> Result<Checkpoint, CheckpointError> {
        let id = self.key_id();
        let mut found = false;
        for line in note.signatures.iter().filter(|s| s.name == self.name && s.key_id == id) {
            let signature: [u8; 64] = line.signature.as_slice().try_into().map_err(|_| malformed("an Ed25519 signature is 64 bytes"))?;
            self.public
                .verify_strict(note.text.as_bytes(), &ed25519_dalek::Signature::from_bytes(&signature))
                .map_err(|_| CheckpointError::BadSignature(self.name.clone()))?;
            found = true;
        }
        if !found {
            return Err(CheckpointError::NotSigned(self.name.clone(), hex::encode(id)));
        }
        let checkpoint = Checkpoint::parse(&note.text)?;
        if checkpoint.origin != self.name {
            return Err(malformed("the origin is not the key's name"));
        }
        Ok(checkpoint)
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_vkey(&self.name, ED25519, &self.public))
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
