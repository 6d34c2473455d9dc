//! Signed checkpoints and export bundles of a ledger.
//!
//! The Ed25519 key lives in the data directory (`checkpoint-signing.key`, the 32-byte seed
//! in hex, file mode 0600), created on first use unless a key file is given. The origin
//! (which is also the key's name in notes) defaults to `cledger-` and 8 hex digits of the
//! public key's BLAKE3 hash, so two ledgers never share an origin by accident.

use crate::io::Op;
use crate::{keys, Ledger, ProofError, ReadError};
use events::bundle::{self, CheckpointLine, ConsistencyProof, Header, InclusionProof, Proofs};
use events::checkpoint::{Checkpoint, NoteSigner};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const KEY_FILE: &str = "checkpoint-signing.key";

/// Why the signing key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: expected 64 hex digits (an Ed25519 seed)")]
    Malformed(PathBuf),
    #[error("cannot read the signing key {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot create the signing key {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("no randomness for a signing key: {0}")]
    Randomness(getrandom::Error),
    #[error("--origin: {0}")]
    Origin(String),
}

/// Loads the signing key (`key_file`, or the data directory's, created if missing).
pub fn load_or_create_signer(data: &Path, key_file: Option<&Path>, origin: Option<&str>) -> Result<NoteSigner, KeyError> {
    let default_path = data.join(KEY_FILE);
    let path = key_file.unwrap_or(&default_path);
    let seed = match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut seed = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| KeyError::Malformed(path.into()))?;
            seed
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && key_file.is_none() => create_key(data, path)?,
        Err(source) => return Err(KeyError::Read { path: path.into(), source }),
    };
    let origin = match origin {
        Some(origin) => origin.to_string(),
        None => {
            let probe = NoteSigner::new("probe", seed).map_err(|e| KeyError::Origin(e.to_string()))?;
            format!("cledger-{}", &hex::encode(blake3::hash(probe.verifier().public.as_bytes()).as_bytes())[..8])
        }
    };
    NoteSigner::new(&origin, seed).map_err(|e| KeyError::Origin(e.to_string()))
}

fn create_key(data: &Path, path: &Path) -> Result<[u8; 32], KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(KeyError::Randomness)?;
    let create = |source| KeyError::Create { path: path.into(), source };
    std::fs::create_dir_all(data).map_err(create)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(create)?;
    file.write_all(format!("{}\n", hex::encode(seed)).as_bytes()).map_err(create)?;
    // The key must survive a crash as surely as the checkpoints it signs.
    file.sync_all().map_err(create)?;
    crate::durable::sync_dir(data).map_err(create)?;
    tracing::info!("created checkpoint signing key {}", path.display());
    Ok(seed)
}

/// Why a checkpoint could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Proof(#[from] ProofError),
    #[error("storage: {0}")]
    Storage(#[from] ReadError),
    /// Other issuers kept replacing the latest checkpoint: none was stored.
    #[error("the latest checkpoint changed {0} times while this one was being stored; it was not stored")]
    Contended(usize),
    #[error("cannot sync the checkpoint to disk: {0}")]
    Sync(std::io::Error),
}

/// Why an export could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("storage: {0}")]
    Storage(#[from] ReadError),
    #[error("event {0} is missing")]
    Missing(u64),
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
}

/// The checkpoint and note of a stored `Mcheckpoint` value.
fn stored_checkpoint(bytes: &[u8]) -> Result<(Checkpoint, String), ReadError> {
    let note = String::from_utf8(bytes.to_vec()).map_err(|_| crate::corrupt(0, "stored checkpoint is not UTF-8"))?;
    let text = note.split("\n\n").next().unwrap_or_default();
    let checkpoint = Checkpoint::parse(&format!("{text}\n")).map_err(|e| crate::corrupt(0, &e.to_string()))?;
    Ok((checkpoint, note))
}

fn stored_size(bytes: &[u8]) -> Result<u64, ReadError> {
    stored_checkpoint(bytes).map(|(c, _)| c.size)
}

/// Attempts to store a checkpoint before giving up: each lost attempt means another issuer
/// stored one in between, and there are few issuers; the bound turns a livelock into an
/// error instead of an unstored "success".
const CHECKPOINT_ATTEMPTS_MAX: usize = 64;

/// How one attempt to store a checkpoint as the latest ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempt {
    Stored,
    /// A checkpoint at least as large is already the latest: nothing to store.
    Superseded,
    /// Another issuer replaced the latest between the read and the swap.
    Lost,
}

/// Runs `attempt` until it stores or is superseded, at most `attempts_max` times.
fn store_forward(attempts_max: usize, mut attempt: impl FnMut() -> Result<Attempt, CheckpointError>) -> Result<(), CheckpointError> {
    for _ in 0..attempts_max {
        match attempt()? {
            Attempt::Stored | Attempt::Superseded => return Ok(()),
            Attempt::Lost => {}
        }
    }
    Err(CheckpointError::Contended(attempts_max))
}

/// A checkpoint the ledger signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub checkpoint: Checkpoint,
    pub note: String,
}

/// The lines of an export that are not events, computed up front: the events between
/// them are streamed by the caller (`Ledger::events_after`, `bundle::event_line`).
#[derive(Clone, Debug)]
pub struct ExportPlan {
    pub header: String,
    pub from: u64,
    pub to: u64,
    pub last_line: String,
}

impl Ledger {
    /// Signs a checkpoint of the durable head and remembers it as the latest. Returned only
    /// once the latest stored checkpoint is this one or a larger one, synced to disk.
    pub fn issue_checkpoint(&self, signer: &NoteSigner) -> Result<Issued, CheckpointError> {
        let size = self.head().seq;
        self.issue_checkpoint_at(signer, size)
    }

    fn issue_checkpoint_at(&self, signer: &NoteSigner, size: u64) -> Result<Issued, CheckpointError> {
        let root = self.merkle_root(size)?;
        let checkpoint = Checkpoint { origin: signer.name().to_string(), size, root };
        let note = signer.sign(&checkpoint);
        let storage = |e: sled::Error| CheckpointError::Storage(e.into());
        // Only ever move the latest forward: compare-and-swap, so two issuers racing keep
        // the larger.
        store_forward(CHECKPOINT_ATTEMPTS_MAX, || {
            let current = self.shared.tree.get(keys::META_CHECKPOINT).map_err(storage)?;
            if let Some(bytes) = &current
                && stored_size(bytes)? >= size {
                    return Ok(Attempt::Superseded);
                }
            let swapped = self
                .shared
                .io
                .run(Op::StoreCheckpoint, || self.shared.tree.compare_and_swap(keys::META_CHECKPOINT, current, Some(note.as_bytes())))
                .map_err(storage)?;
            Ok(if swapped.is_ok() { Attempt::Stored } else { Attempt::Lost })
        })?;
        // A checkpoint is answered and published only once it (or a larger one) would
        // survive a crash.
        self.shared.io.run(Op::SyncCheckpoint, || self.sync_to_disk()).map_err(CheckpointError::Sync)?;
        Ok(Issued { checkpoint, note })
    }

    /// The latest checkpoint issued, if any (as the ledger stored it; not re-verified).
    pub fn latest_checkpoint(&self) -> Result<Option<Issued>, ReadError> {
        let Some(bytes) = self.shared.tree.get(keys::META_CHECKPOINT)? else { return Ok(None) };
        let (checkpoint, note) = stored_checkpoint(&bytes)?;
        Ok(Some(Issued { checkpoint, note }))
    }

    /// Plans an export of events `from..=to` (default: all) with a fresh checkpoint of the
    /// durable head and, unless the bundle is the whole ledger, the proofs that tie it to it.
    pub fn plan_export(&self, signer: &NoteSigner, from: Option<u64>, to: Option<u64>) -> Result<ExportPlan, CheckpointError> {
        let issued = self.issue_checkpoint(signer)?;
        let size = issued.checkpoint.size;
        let from = from.unwrap_or(1).max(1);
        let to = to.unwrap_or(size);
        if to > size || from > to + 1 {
            return Err(ProofError::OutOfRange(format!("cannot export {from} to {to} of a ledger of {size} events")).into());
        }
        let whole = from == 1 && to == size;
        let proofs = (!whole).then(|| -> Result<Proofs, ProofError> {
            let inclusion = (to >= from)
                .then(|| -> Result<InclusionProof, ProofError> {
                    Ok(InclusionProof { seq: to, tree_size: size, hashes: bundle::hexes(&self.inclusion_proof(to, size)?) })
                })
                .transpose()?;
            let consistency = (from > 1)
                .then(|| -> Result<ConsistencyProof, ProofError> {
                    Ok(ConsistencyProof {
                        from: from - 1,
                        to: size,
                        from_root: self.merkle_root(from - 1)?.to_hex(),
                        hashes: bundle::hexes(&self.consistency_proof(from - 1, size)?),
                    })
                })
                .transpose()?;
            Ok(Proofs { inclusion, consistency })
        });
        let header = Header {
            format: bundle::FORMAT.into(),
            version: bundle::VERSION,
            origin: signer.name().to_string(),
            verifier_key: signer.verifier().to_string(),
            from,
            to,
        };
        Ok(ExportPlan {
            header: bundle::header_line(&header),
            from,
            to,
            last_line: bundle::checkpoint_line(&CheckpointLine { checkpoint: issued.note, proofs: proofs.transpose()? }),
        })
    }

    /// Plans and writes a whole export bundle.
    pub fn export(&self, signer: &NoteSigner, from: Option<u64>, to: Option<u64>, out: &mut impl Write) -> Result<ExportPlan, ExportError> {
        let plan = self.plan_export(signer, from, to)?;
        self.write_export(&plan, out)?;
        Ok(plan)
    }

    /// Writes the bundle of a plan: its header, its events a page at a time, its last line.
    /// A missing event is an error, never a silently shorter bundle.
    pub fn write_export(&self, plan: &ExportPlan, out: &mut impl Write) -> Result<(), ExportError> {
        writeln!(out, "{}", plan.header)?;
        let mut next = plan.from;
        while next <= plan.to {
            let page = self.events_after(next - 1, 1_000.min((plan.to - next + 1) as usize))?;
            if page.is_empty() {
                return Err(ExportError::Missing(next));
            }
            for event in page {
                writeln!(out, "{}", bundle::event_line(&event))?;
                next = event.seq() + 1;
            }
        }
        writeln!(out, "{}", plan.last_line)?;
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_races_end_in_an_error_not_an_unstored_success() {
        let mut attempts = 0;
        let result = store_forward(CHECKPOINT_ATTEMPTS_MAX, || {
            attempts += 1;
            Ok(Attempt::Lost)
        });
        assert!(matches!(result, Err(CheckpointError::Contended(CHECKPOINT_ATTEMPTS_MAX))), "{result:?}");
        assert_eq!(attempts, CHECKPOINT_ATTEMPTS_MAX);
    }

    #[test]
    fn a_won_or_superseded_attempt_ends_the_loop() {
        for outcome in [Attempt::Stored, Attempt::Superseded] {
            let mut attempts = 0;
            let result = store_forward(CHECKPOINT_ATTEMPTS_MAX, || {
                attempts += 1;
                Ok(if attempts < 3 { Attempt::Lost } else { outcome })
            });
            assert!(result.is_ok());
            assert_eq!(attempts, 3);
        }
    }
}
