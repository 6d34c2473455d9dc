//! The C2SP tlog-witness protocol, without I/O: the `add-checkpoint` request body, the
//! witness's decision on it, and its answers.
//!
//! ```text
//! POST <prefix>/add-checkpoint
//!
//! old <size the client believes the witness last cosigned>\n
//! <consistency proof from that size to the checkpoint's, one base64 hash a line (at most 63)>\n…
//! \n
//! <the log's signed checkpoint note>
//! ```
//!
//! The witness answers 200 with its cosignature line(s); 400 for a malformed request or an
//! old size beyond the checkpoint's; 403 when no trusted key of the log signed it; 404 for
//! a log it does not witness; 409 (`Content-Type: text/x.tlog.size`, body = its size and a
//! newline) when the old size is not the size it last cosigned, or the same size comes with
//! another root; 422 when the consistency proof does not verify.
//!
//! The consistency proof is RFC 9162's, over this ledger's tree hash (BLAKE3, FORMAT.md
//! section 5), not SHA-256: a generic C2SP witness cannot check it.

use crate::checkpoint::{Checkpoint, CheckpointError, Note, NoteSignature, VerifierKey, B64};
use crate::{merkle, Digest};
use base64::Engine;

/// Most consistency proof lines in a request (C2SP: a client MUST NOT send more than 63).
pub const PROOF_LINES_MAX: usize = 63;
/// Largest request body: the old size line, 63 proof lines and the largest note.
pub const REQUEST_BYTES_MAX: usize = 32 + PROOF_LINES_MAX * 46 + 1 + crate::checkpoint::NOTE_BYTES_MAX;
/// Content type of a 409's body.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// An `add-checkpoint` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old_size: u64,
    pub proof: Vec<Digest>,
    /// The signed note, as sent.
    pub note: Note,
    /// Its checkpoint (parsed from the note's text, signatures not yet checked).
    pub checkpoint: Checkpoint,
}

/// Why a witness does not cosign: each maps to the status the protocol names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("this witness does not witness the log `{0}`")]
    UnknownLog(String),
    #[error("no trusted key of the log `{0}` signed this checkpoint")]
    NotSigned(String),
    #[error("old size {old} is larger than the checkpoint's size {size}")]
    OldBeyondCheckpoint { old: u64, size: u64 },
    #[error("old size {old} is not the size last cosigned, {latest}")]
    SizeMismatch { old: u64, latest: u64 },
    #[error("a checkpoint of size {size} with another root than the one cosigned")]
    RootMismatch { size: u64 },
    #[error("the consistency proof from size {old} to {size} does not verify: {why}")]
    Inconsistent { old: u64, size: u64, why: String },
}

impl Refusal {
    /// The HTTP status of this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) | Refusal::OldBeyondCheckpoint { .. } => 400,
            Refusal::NotSigned(_) => 403,
            Refusal::UnknownLog(_) => 404,
            Refusal::SizeMismatch { .. } | Refusal::RootMismatch { .. } => 409,
            Refusal::Inconsistent { .. } => 422,
        }
    }

    /// The witness's size, sent as the body of a 409.
    pub fn latest_size(&self) -> Option<u64> {
        match self {
            Refusal::SizeMismatch { latest, .. } => Some(*latest),
            Refusal::RootMismatch { size } => Some(*size),
            _ => None,
        }
    }
}

fn malformed(why: impl Into<String>) -> Refusal {
    Refusal::Malformed(why.into())
}

/// A decimal with no sign and no leading zeros ("0" alone for zero).
pub fn parse_size(text: &str) -> Option<u64> {
    let canonical = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

impl AddCheckpoint {
    /// The request of a client: `note` is the log's signed checkpoint.
    pub fn new(old_size: u64, proof: Vec<Digest>, note: &str) -> Result<AddCheckpoint, CheckpointError> {
        let note = Note::parse(note)?;
        let checkpoint = Checkpoint::parse(&note.text)?;
        Ok(AddCheckpoint { old_size, proof, note, checkpoint })
    }

    /// The request body.
    pub fn body(&self) -> String {
        let mut body = format!("old {}\n", self.old_size);
        for hash in &self.proof {
            body.push_str(&B64.encode(hash.0));
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&self.note.to_string());
        body
    }

    /// Parses a request body (any bytes: never panics, refuses with 400).
    pub fn parse(body: &[u8]) -> Result<AddCheckpoint, Refusal> {
        if body.len() > REQUEST_BYTES_MAX {
            return Err(malformed(format!("the body is larger than {REQUEST_BYTES_MAX} bytes")));
        }
        let text = std::str::from_utf8(body).map_err(|_| malformed("the body is not UTF-8"))?;
        let (head, note) = text.split_once("\n\n").ok_or_else(|| malformed("no blank line after the old size and proof lines"))?;
        let mut lines = head.split('\n');
        let old = lines.next().and_then(|l| l.strip_prefix("old ")).ok_or_else(|| malformed("the first line is `old <size>`"))?;
        let old_size = parse_size(old).ok_or_else(|| malformed("the old size is not a decimal number without leading zeros"))?;
        let mut proof = vec![];
        for line in lines {
            if proof.len() == PROOF_LINES_MAX {
                return Err(malformed(format!("more than {PROOF_LINES_MAX} consistency proof lines")));
            }
            let bytes = B64.decode(line).map_err(|_| malformed("a proof line is not base64"))?;
            let hash: [u8; 32] = bytes.try_into().map_err(|_| malformed("a proof line is not a 32-byte hash"))?;
            proof.push(Digest(hash));
        }
        let note = Note::parse(note).map_err(|e| malformed(e.to_string()))?;
        let checkpoint = Checkpoint::parse(&note.text).map_err(|e| malformed(e.to_string()))?;
        Ok(AddCheckpoint { old_size, proof, note, checkpoint })
    }
}

/// What a witness remembers of a log: the latest checkpoint it cosigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latest {
    pub size: u64,
    pub root: Digest,
}

/// The witness's decision (C2SP tlog-witness, in the order it lists the checks). `logs`:
/// every log key the witness trusts; `latest`: what it last cosigned for the request's
/// origin. On success the checkpoint to cosign, which becomes the latest.
pub fn decide(logs: &[VerifierKey], latest: Option<Latest>, request: &AddCheckpoint) -> Result<Checkpoint, Refusal> {
    let checkpoint = &request.checkpoint;
    let keys: Vec<&VerifierKey> = logs.iter().filter(|k| k.name == checkpoint.origin).collect();
    if keys.is_empty() {
        return Err(Refusal::UnknownLog(checkpoint.origin.clone()));
    }
    // Signatures of unknown keys are ignored; one trusted key's valid signature suffices.
    if !keys.iter().any(|k| k.verify_note(&request.note).is_ok()) {
        return Err(Refusal::NotSigned(checkpoint.origin.clone()));
    }
    let (old, size) = (request.old_size, checkpoint.size);
    if old > size {
        return Err(Refusal::OldBeyondCheckpoint { old, size });
    }
    let latest_size = latest.map_or(0, |l| l.size);
    if old != latest_size {
        return Err(Refusal::SizeMismatch { old, latest: latest_size });
    }
    let old_root = latest.map_or_else(merkle::empty_root, |l| l.root);
    if old == size {
        if !request.proof.is_empty() {
            return Err(Refusal::Inconsistent { old, size, why: "a proof between equal sizes is empty".into() });
        }
        if old_root != checkpoint.root {
            return Err(Refusal::RootMismatch { size });
        }
        return Ok(checkpoint.clone());
    }
    merkle::verify_consistency(old, size, &old_root, &checkpoint.root, &request.proof)
        .map_err(|e| Refusal::Inconsistent { old, size, why: e.0 })?;
    Ok(checkpoint.clone())
}

/// The body of a 200: the cosignature lines.
pub fn response_body(cosignatures: &[NoteSignature]) -> String {
    cosignatures.iter().map(NoteSignature::line).collect()
}

/// The signature lines of a 200's body (each `— name base64\n`).
pub fn parse_response(body: &str) -> Result<Vec<NoteSignature>, CheckpointError> {
    let lines = body.strip_suffix('\n').ok_or_else(|| CheckpointError::Malformed("the response must end with a newline".into()))?;
    let lines: Vec<&str> = lines.split('\n').collect();
    if lines.len() > crate::checkpoint::NOTE_SIGNATURES_MAX {
        return Err(CheckpointError::Malformed("too many signature lines".into()));
    }
    lines.into_iter().map(NoteSignature::parse_line).collect()
}

/// The size in a 409's body (`<decimal>\n`).
pub fn parse_size_body(body: &str) -> Option<u64> {
    body.strip_suffix('\n').and_then(parse_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::NoteSigner;
    use crate::merkle::MemoryTree;

    fn tree(n: u64, salt: u8) -> MemoryTree {
        let mut t = MemoryTree::new();
        for i in 0..n {
            t.push(&Digest(*blake3::hash(&[salt, i as u8]).as_bytes()));
        }
        t
    }

    fn request(signer: &NoteSigner, t: &MemoryTree, old: u64, size: u64) -> AddCheckpoint {
        let cp = Checkpoint { origin: signer.name().into(), size, root: merkle::root(t, size).unwrap() };
        let proof = merkle::consistency_proof(t, old, size).unwrap();
        AddCheckpoint::new(old, proof, &signer.sign(&cp)).unwrap()
    }

    #[test]
    fn the_witness_follows_a_log_and_refuses_what_does_not_extend_it() {
        let signer = NoteSigner::new("log.example/a", [1; 32]).unwrap();
        let logs = [signer.verifier()];
        let t = tree(20, 0);
        let first = request(&signer, &t, 0, 7);
        assert_eq!(AddCheckpoint::parse(first.body().as_bytes()).unwrap(), first, "the body round-trips");
        let cp = decide(&logs, None, &first).unwrap();
        let latest = Some(Latest { size: cp.size, root: cp.root });
        // Extending: 7 -> 20 with a proof.
        assert_eq!(decide(&logs, latest, &request(&signer, &t, 7, 20)).unwrap().size, 20);
        // The same checkpoint again: cosigned again.
        assert_eq!(decide(&logs, latest, &request(&signer, &t, 7, 7)).unwrap().size, 7);
        // Stale old size: 409 with the witness's size.
        let r = decide(&logs, latest, &request(&signer, &t, 0, 20)).unwrap_err();
        assert_eq!((r.status(), r.latest_size()), (409, Some(7)));
        // A fork: same key, another history from leaf 3 on.
        let mut fork = tree(3, 0);
        for i in 3..20u8 {
            fork.push(&Digest(*blake3::hash(&[9, i]).as_bytes()));
        }
        let r = decide(&logs, latest, &request(&signer, &fork, 7, 20)).unwrap_err();
        assert_eq!(r.status(), 422, "{r}");
        let r = decide(&logs, latest, &request(&signer, &fork, 7, 7)).unwrap_err();
        assert_eq!((r.status(), r.latest_size()), (409, Some(7)), "{r}");
        // A rollback: old beyond the checkpoint.
        let mut back = request(&signer, &t, 0, 5);
        back.old_size = 7;
        assert_eq!(decide(&logs, latest, &back).unwrap_err().status(), 400);
        // Unknown log; known origin signed by another key.
        let other = NoteSigner::new("log.example/b", [2; 32]).unwrap();
        assert_eq!(decide(&logs, latest, &request(&other, &t, 7, 20)).unwrap_err().status(), 404);
        let impostor = NoteSigner::new("log.example/a", [3; 32]).unwrap();
        assert_eq!(decide(&logs, latest, &request(&impostor, &t, 7, 20)).unwrap_err().status(), 403);
    }

    #[test]
    fn malformed_bodies_are_400_never_a_panic() {
        let signer = NoteSigner::new("log.example/a", [1; 32]).unwrap();
        let good = request(&signer, &tree(9, 0), 4, 9).body();
        assert!(AddCheckpoint::parse(good.as_bytes()).is_ok());
        let cases = [
            good.replacen("old 4", "old 04", 1),
            good.replacen("old 4", "old -4", 1),
            good.replacen("old 4", "old4", 1),
            good.replacen("old 4\n", "", 1),
            good.replacen("\n\n", "\n", 1),
            good.replacen("=\n", "\n", 1),
            String::new(),
            "old 0\n\n".into(),
        ];
        for case in cases {
            let r = AddCheckpoint::parse(case.as_bytes()).unwrap_err();
            assert_eq!(r.status(), 400, "{case:?}: {r}");
        }
        // Every prefix of a good body, and every byte changed: no panic.
        let bytes = good.as_bytes();
        for cut in 0..bytes.len() {
            let _ = AddCheckpoint::parse(&bytes[..cut]);
            let mut changed = bytes.to_vec();
            changed[cut] ^= 0x41;
            let _ = AddCheckpoint::parse(&changed);
        }
        let many = format!("old 1\n{}\n{}", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n".repeat(64), signer.sign(&Checkpoint { origin: "log.example/a".into(), size: 1, root: Digest::ZERO }));
        assert_eq!(AddCheckpoint::parse(many.as_bytes()).unwrap_err().status(), 400);
        assert_eq!(parse_size_body("12\n"), Some(12));
        assert_eq!(parse_size_body("012\n"), None);
        assert_eq!(parse_size_body("12"), None);
    }
}
